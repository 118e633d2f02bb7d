//! The PostgreSQL backend of the SQL executor ([`SqlEngine`]): autocommit runs,
//! batches and transactions on a pooled connection, pipelined.
//!
//! # Hot path
//! The executor resolves an op to [`Work`] (registry lookups; no SQL is built). A
//! pooled connection is checked out; the statement prepared for the work on that
//! connection is found by its key (a hash lookup); the values are encoded straight
//! from the [`Value`]s in the binary format of the statement's parameter types, and
//! result rows are decoded straight into values by the schema's column types.
//!
//! # Atomicity
//! - `run` of one statement is autocommit. A work of several rows (`insert_many`,
//!   `get_many`, ...) runs `BEGIN`, the statements pipelined (up to `pipeline_depth`
//!   in flight), `COMMIT`.
//! - `run_batch`: one transaction, every work pipelined on one connection (`BEGIN`
//!   goes out with the first statements), results in order. A batch of reads only
//!   runs `REPEATABLE READ READ ONLY`: one snapshot.
//! - Inside an explicit transaction, every op runs inside the per-op savepoint (sent
//!   in the same round trip as the op and its `RELEASE`), rolled back to on error.

use crate::cdc;
use crate::config::PgOptions;
use crate::conn::{Conn, PgConn, Pool, mark_lost, pipeline};
use crate::dialect::PgDialect;
use crate::error::map_err;
use crate::value::{PgValue, read_row};
use async_trait::async_trait;
use datalayer_core::{
    Capability, Change, ColumnType, Error, ErrorKind, Isolation, Output, Result, Row, TxOptions,
    Value,
};
use datalayer_sql::{
    Dialect, Fetch, Fetched, OP_RELEASE, OP_ROLLBACK_TO, OP_SAVEPOINT, SqlBackend, SqlConn,
    SqlEngine, StmtDef, Work, catalog_ddl,
};
use std::any::{Any, TypeId};
use std::sync::Arc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

/// Serializes DDL of one schema across engines and processes:
/// `pg_advisory_xact_lock(DDL_LOCK, hashtext(current_schema()))`.
pub(crate) const DDL_LOCK: &str =
    "SELECT pg_advisory_xact_lock(4242001, hashtext(coalesce(current_schema(), '')))";
const READ_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

// ---- execution on a connection -----------------------------------------------------------------

/// Runs `stmt` with `vals` (encoded straight from the values); returns the rows.
pub(crate) async fn query(
    client: &Client,
    stmt: &Statement,
    vals: &[Value],
) -> Result<Vec<tokio_postgres::Row>> {
    let p: Vec<PgValue<'_>> = vals.iter().map(PgValue).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = p.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    client.query(stmt, &refs).await.map_err(map_err)
}

/// Runs `stmt` with `vals`; returns the number of rows affected.
pub(crate) async fn execute(client: &Client, stmt: &Statement, vals: &[Value]) -> Result<u64> {
    let p: Vec<PgValue<'_>> = vals.iter().map(PgValue).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = p.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    client.execute(stmt, &refs).await.map_err(map_err)
}

/// One call of `stmt` with `vals`, read back as `fetch` asks.
async fn call(
    client: &Client,
    stmt: &Statement,
    vals: &[Value],
    fetch: Fetch<'_>,
) -> Result<Fetched> {
    Ok(match fetch {
        Fetch::Rows(types) => Fetched::Rows(
            query(client, stmt, vals)
                .await?
                .iter()
                .map(|r| read_row(r, types))
                .collect::<Result<_>>()?,
        ),
        Fetch::Count => {
            let rows = query(client, stmt, vals).await?;
            let n: i64 = match rows.first() {
                Some(r) => r.try_get(0).map_err(map_err)?,
                None => 0,
            };
            Fetched::Count(n.max(0) as u64)
        }
        Fetch::Affected => Fetched::Count(execute(client, stmt, vals).await?),
    })
}

/// One array per column of `rows`, as the bulk statement binds them ([`Work::bulk`];
/// `UNNEST($1::int8[], ...)`): tokio-postgres encodes a `Vec` of [`PgValue`] as a
/// one-dimensional array of the cast's element type, NULLs included.
fn bulk_params(columns: usize, rows: &[datalayer_core::Row]) -> Vec<Vec<PgValue<'_>>> {
    (0..columns)
        .map(|i| rows.iter().map(|r| PgValue(&r[i])).collect())
        .collect()
}

/// Runs one work with its prepared `stmt`: one call per parameter set, up to `depth`
/// in flight (a bulk insert: one call with an array per column). The first call is
/// sent on the first poll, so callers can pipeline other statements around it.
async fn exec(client: &Client, stmt: &Statement, w: &Work, depth: usize) -> Result<Output> {
    if let Some((_, rows)) = w.bulk() {
        let params = bulk_params(w.table().types.len(), rows);
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        client.execute(stmt, &refs).await.map_err(map_err)?;
        return Ok(Output::Count(rows.len() as u64));
    }
    let fetch = w.fetch();
    let calls = w
        .param_sets()
        .iter()
        .map(|vals| call(client, stmt, vals, fetch))
        .collect();
    w.output(pipeline(calls, depth).await?)
}

/// Runs works in order, pipelined (at most `depth` in flight); outputs in order.
async fn exec_all(
    client: &Client,
    items: &[(&Work, Statement)],
    depth: usize,
) -> Result<Vec<Output>> {
    let futs = items
        .iter()
        .map(|(w, s)| exec(client, s, w, depth))
        .collect();
    pipeline(futs, depth).await
}

/// The prepared statement of each work on `c`.
async fn statements<'w>(c: &mut PgConn, ws: &'w [Work]) -> Result<Vec<(&'w Work, Statement)>> {
    let mut items = Vec::with_capacity(ws.len());
    for w in ws {
        items.push((w, c.prepared(w.def()).await?));
    }
    Ok(items)
}

// ---- the backend ------------------------------------------------------------------------------

/// The PostgreSQL backend: a connection pool.
pub struct PgBackend {
    pub(crate) pool: Pool,
    pub(crate) options: Arc<PgOptions>,
}

impl PgBackend {
    /// Runs works in one transaction on one connection (`begin` starts it).
    async fn atomically(&self, ws: &[Work], begin: &str) -> Result<Vec<Output>> {
        let mut c = self.pool.get().await?;
        let c = &mut *c;
        let items = statements(c, ws).await.map_err(|e| c.lost(e))?;
        let depth = self.pool.depth;
        let PgConn {
            client, tainted, ..
        } = &mut *c;
        let client: &Client = client;
        let r = PgConn::atomically(client, tainted, begin, exec_all(client, &items, depth)).await;
        r.map_err(|e| c.lost(e))
    }

    async fn open_tx(&self, begin: &str) -> Result<Box<dyn SqlConn>> {
        let mut c = self.pool.get().await?;
        c.tainted = true;
        if let Err(e) = c.client.batch_execute(begin).await {
            return Err(c.lost(map_err(e)));
        }
        Ok(Box::new(PgTx {
            conn: Some(c),
            depth: self.pool.depth,
            broken: None,
        }))
    }
}

#[async_trait]
impl SqlBackend for PgBackend {
    type Options = PgOptions;
    const NAME: &'static str = "postgres";

    fn dialect() -> &'static dyn Dialect {
        &PgDialect
    }

    fn parse_url(url: &str) -> Result<PgOptions> {
        PgOptions::from_url(url)
    }

    /// Opens the pool, creates the schema (when the options name one) and the catalog
    /// table.
    async fn open(options: PgOptions) -> Result<PgBackend> {
        let options = Arc::new(options);
        let b = PgBackend {
            pool: Pool::new(options.clone())?,
            options,
        };
        let mut c = b.pool.get().await?;
        let c = &mut *c;
        if let Some(s) = &b.options.schema {
            let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", PgDialect.quote_ident(s));
            if let Err(e) = c.client.batch_execute(&sql).await {
                // A concurrent creation of the same schema is fine.
                let e = map_err(e);
                if e.code() != Some("42P06") && e.kind() != ErrorKind::AlreadyExists {
                    return Err(c.lost(e));
                }
            }
        }
        let PgConn {
            client, tainted, ..
        } = c;
        let client: &Client = client;
        let ddl = catalog_ddl(&PgDialect);
        let body = async {
            client.batch_execute(DDL_LOCK).await.map_err(map_err)?;
            client.batch_execute(&ddl).await.map_err(map_err)
        };
        PgConn::atomically(client, tainted, "BEGIN", body).await?;
        Ok(b)
    }

    fn options(&self) -> &PgOptions {
        &self.options
    }

    fn capability(&self) -> Capability {
        capability(self.pool.depth)
    }

    async fn prepare(&self, defs: Vec<StmtDef>) -> Result<()> {
        self.pool.eager.add(defs);
        // Prepare on one connection now, so that a statement that does not prepare
        // (bad SQL for this server) fails here rather than at first use.
        drop(self.pool.get().await?);
        Ok(())
    }

    async fn run(&self, w: Arc<Work>) -> Result<Output> {
        if w.is_multi() {
            let begin = if w.is_read() { READ_SNAPSHOT } else { "BEGIN" };
            let mut out = self.atomically(std::slice::from_ref(&*w), begin).await?;
            return out
                .pop()
                .ok_or_else(|| Error::engine("internal", "no output"));
        }
        let mut c = self.pool.get().await?;
        let c = &mut *c;
        let stmt = c.prepared(w.def()).await?;
        let r = exec(&c.client, &stmt, &w, self.pool.depth).await;
        r.map_err(|e| c.lost(e))
    }

    async fn run_batch(&self, ws: Arc<Vec<Work>>) -> Result<Vec<Output>> {
        let begin = if ws.iter().all(Work::is_read) {
            READ_SNAPSHOT
        } else {
            "BEGIN"
        };
        self.atomically(&ws, begin).await
    }

    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn SqlConn>> {
        self.open_tx(&begin_sql(opts)).await
    }

    async fn begin_ddl(&self) -> Result<Box<dyn SqlConn>> {
        self.open_tx(&format!("BEGIN; {DDL_LOCK}")).await
    }

    async fn close(&self) -> Result<()> {
        self.pool.close();
        Ok(())
    }

    async fn enable_changes(&self, table: &str) -> Result<()> {
        let mut c = self.pool.get().await?;
        cdc::enable(&mut c, table).await.map_err(|e| c.lost(e))
    }

    async fn changes_enabled(&self, table: &str) -> Result<bool> {
        let mut c = self.pool.get().await?;
        cdc::enabled(&mut c, table).await.map_err(|e| c.lost(e))
    }

    /// Outside a transaction (`CREATE INDEX CONCURRENTLY` cannot run in one), on a
    /// pooled connection.
    async fn execute_online(&self, sql: String) -> Result<()> {
        let mut c = self.pool.get().await?;
        c.client
            .batch_execute(&sql)
            .await
            .map_err(|e| c.lost(map_err(e)))
    }

    async fn read_changes(&self, table: &str, after: u64, limit: usize) -> Result<Vec<Change>> {
        let mut c = self.pool.get().await?;
        cdc::read(&mut c, table, after, limit)
            .await
            .map_err(|e| c.lost(e))
    }

    async fn trim_changes(&self, table: &str, upto: u64) -> Result<u64> {
        let mut c = self.pool.get().await?;
        cdc::trim(&mut c, table, upto).await.map_err(|e| c.lost(e))
    }

    fn extension(engine: &SqlEngine<Self>, ty: TypeId) -> Option<Box<dyn Any + Send>> {
        type Driver = Arc<dyn datalayer_outbox::Driver>;
        (ty == TypeId::of::<Driver>()).then(|| {
            let d: Driver = Arc::new(crate::outbox::PgDriver::new(engine));
            Box::new(d) as Box<dyn Any + Send>
        })
    }
}

/// The capability of the PostgreSQL engine.
pub(crate) fn capability(pipeline_depth: usize) -> Capability {
    Capability {
        read_committed: true,
        repeatable_read: true,
        // REPEATABLE READ in PostgreSQL is snapshot isolation: `Snapshot` runs as it.
        snapshot: true,
        serializable: true,
        read_only_tx: true,
        savepoints: true,
        concurrent_writers: true,
        pipeline_depth: Some(pipeline_depth),
        // A TEXT or BYTEA value holds at most 1 GiB.
        max_value_bytes: Some(1 << 30),
        max_key_bytes: Some(1 << 30),
        durable: true,
        change_feed: true,
        change_feed_foreign_writes: true,
        outbox: true,
    }
}

fn begin_sql(opts: TxOptions) -> String {
    let mut s = String::from("BEGIN");
    match opts.isolation {
        None => {}
        Some(Isolation::ReadCommitted) => s.push_str(" ISOLATION LEVEL READ COMMITTED"),
        Some(Isolation::RepeatableRead | Isolation::Snapshot) => {
            s.push_str(" ISOLATION LEVEL REPEATABLE READ")
        }
        Some(Isolation::Serializable) => s.push_str(" ISOLATION LEVEL SERIALIZABLE"),
    }
    if opts.read_only {
        s.push_str(" READ ONLY");
    }
    s
}

/// An explicit transaction: one pooled connection, tainted (never recycled) until
/// `COMMIT` or `ROLLBACK` succeeded.
///
/// Drop behaviour: dropping it without commit hands the connection to a background
/// task that sends `ROLLBACK` and then returns the connection to the pool; without a
/// tokio runtime (or when the rollback fails) the connection is discarded instead,
/// which ends the transaction on the server as well.
struct PgTx {
    conn: Option<Conn>,
    /// Most statements in flight.
    depth: usize,
    /// The transaction can no longer be used (its connection broke, or an internal
    /// savepoint could not be rolled back to): every later op fails with this kind.
    broken: Option<ErrorKind>,
}

fn gone() -> Error {
    Error::invalid_input("the transaction has already finished")
}

impl PgTx {
    fn conn(&mut self) -> Result<&mut PgConn> {
        if let Some(kind) = self.broken {
            return Err(Error::new(
                kind,
                "an earlier error left this postgres transaction unusable; roll back and retry",
            ));
        }
        self.conn.as_deref_mut().ok_or_else(gone)
    }

    /// A single-row insert without the per-op savepoint ([`Work::fast_insert`]):
    /// `INSERT ... ON CONFLICT DO NOTHING`, 0 rows reported is `AlreadyExists`. A
    /// subtransaction per insert was most of the cost of sequential inserts in a
    /// transaction (every `SAVEPOINT` that writes takes a subtransaction id).
    async fn fast_insert(&mut self, w: &Work, def: &StmtDef, row: &Row) -> Result<Vec<Output>> {
        let c = self.conn()?;
        let stmt = c.prepared(def).await.map_err(|e| c.lost(e))?;
        let PgConn {
            client, tainted, ..
        } = c;
        match execute(client, &stmt, row).await {
            Ok(1) => Ok(vec![w.output(vec![Fetched::Count(1)])?]),
            // The SQLSTATE the insert would have failed with (unique_violation).
            Ok(_) => Err(Error::already_exists(format!(
                "table {}: a row with the same primary key or unique index value exists",
                w.table().schema.name
            ))
            .with_code("23505")),
            Err(e) => {
                let e = mark_lost(tainted, e);
                // Without a savepoint a server error aborted the transaction; an
                // `InvalidInput` is a value that did not encode, never sent.
                if e.kind() != ErrorKind::InvalidInput {
                    self.broken = Some(match e.kind() {
                        ErrorKind::ConnectionLost => ErrorKind::ConnectionLost,
                        _ => ErrorKind::Conflict,
                    });
                }
                Err(e)
            }
        }
    }

    /// Runs works inside `SAVEPOINT _dl_op` (pipelined with them), rolled back to on
    /// error so the transaction stays usable; a lone single-row insert goes without it
    /// ([`PgTx::fast_insert`]).
    async fn run_works(&mut self, ws: &[Work]) -> Result<Vec<Output>> {
        if let [w] = ws
            && let Some((def, row)) = w.fast_insert()
        {
            return self.fast_insert(w, def, row).await;
        }
        let depth = self.depth;
        let c = self.conn()?;
        let items = statements(c, ws).await.map_err(|e| c.lost(e))?;
        let PgConn {
            client, tainted, ..
        } = c;
        let client: &Client = client;
        let single = items.len() == 1 && !items[0].0.is_multi();
        let r = if single {
            // One round trip: SAVEPOINT, the statement and RELEASE are pipelined.
            let (sp, r, rel) = futures::join!(
                client.batch_execute(OP_SAVEPOINT),
                exec(client, &items[0].1, items[0].0, depth),
                client.batch_execute(OP_RELEASE),
            );
            match (sp.map_err(map_err), r, rel.map_err(map_err)) {
                (Ok(()), Ok(out), Ok(())) => Ok(vec![out]),
                (_, Err(e), _) | (Err(e), Ok(_), _) | (Ok(()), Ok(_), Err(e)) => Err(e),
            }
        } else {
            let (sp, r) = futures::join!(
                client.batch_execute(OP_SAVEPOINT),
                exec_all(client, &items, depth),
            );
            match (sp.map_err(map_err), r) {
                (Ok(()), Ok(out)) => client
                    .batch_execute(OP_RELEASE)
                    .await
                    .map_err(map_err)
                    .map(|()| out),
                (_, Err(e)) | (Err(e), Ok(_)) => Err(e),
            }
        };
        let e = match r {
            Ok(v) => return Ok(v),
            Err(e) => mark_lost(tainted, e),
        };
        let broken = if e.kind() == ErrorKind::ConnectionLost {
            Some(ErrorKind::ConnectionLost)
        } else {
            match client
                .batch_execute(&format!("{OP_ROLLBACK_TO}; {OP_RELEASE}"))
                .await
            {
                Ok(()) => None,
                Err(e2) => match mark_lost(tainted, map_err(e2)).kind() {
                    ErrorKind::ConnectionLost => Some(ErrorKind::ConnectionLost),
                    _ => Some(ErrorKind::Conflict),
                },
            }
        };
        if broken.is_some() {
            self.broken = broken;
        }
        Err(e)
    }

    /// Ends the transaction with `sql` (`COMMIT` or `ROLLBACK`); the connection goes
    /// back to the pool only when that succeeded.
    async fn finish(&mut self, sql: &str) -> Result<()> {
        let mut c = self.conn.take().ok_or_else(gone)?;
        if let Some(kind) = self.broken
            && sql == "COMMIT"
        {
            let _ = c.client.batch_execute("ROLLBACK").await;
            return Err(Error::new(
                kind,
                "this postgres transaction was rolled back after an earlier error",
            ));
        }
        match c.client.batch_execute(sql).await {
            Ok(()) => {
                c.tainted = false;
                Ok(())
            }
            Err(e) => {
                let mut e = c.lost(map_err(e));
                if sql == "COMMIT" {
                    // The COMMIT was sent: a lost connection leaves its outcome unknown.
                    e = e.at_commit();
                }
                if c.client.batch_execute("ROLLBACK").await.is_ok() {
                    c.tainted = false;
                }
                Err(e)
            }
        }
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        let Some(mut c) = self.conn.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                match c.client.batch_execute("ROLLBACK").await {
                    Ok(()) => c.tainted = false,
                    Err(e) => {
                        tracing::debug!(error = %e, "postgres: rollback of a dropped transaction failed; discarding its connection");
                    }
                }
            });
        }
        // Without a runtime the tainted connection is dropped here and discarded.
    }
}

#[async_trait]
impl SqlConn for PgTx {
    async fn run(&mut self, works: Vec<Work>) -> Result<Vec<Output>> {
        self.run_works(&works).await
    }

    async fn call(
        &mut self,
        def: StmtDef,
        values: Row,
        rows: Option<Arc<[ColumnType]>>,
    ) -> Result<Fetched> {
        let c = self.conn()?;
        let stmt = c.prepared(&def).await?;
        let fetch = rows.as_deref().map_or(Fetch::Affected, Fetch::Rows);
        let r = call(&c.client, &stmt, &values, fetch).await;
        r.map_err(|e| c.lost(e))
    }

    async fn batch_execute(&mut self, sql: String) -> Result<()> {
        let c = self.conn()?;
        let r = c.client.batch_execute(&sql).await.map_err(map_err);
        r.map_err(|e| c.lost(e))
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.finish("COMMIT").await
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        self.finish("ROLLBACK").await
    }
}
