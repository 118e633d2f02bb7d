//! The SQLite backend of the SQL executor ([`SqlEngine`]): work sent to the connection
//! threads, run there synchronously.
//!
//! # Hot path
//! The executor resolves an op to [`Work`] on the caller's task (registry lookups, no
//! SQL built) and sends it to a connection thread, which finds the statement prepared
//! for it on that connection, binds the values and steps.
//!
//! # Atomicity
//! - Autocommit writes run on the writer; a work of several rows runs inside
//!   `BEGIN IMMEDIATE ... COMMIT`. Autocommit reads of a file database run on the
//!   caller's thread, on that thread's own read connection (`Pool::read_here`: a
//!   hop to a reader thread and back costs more than a point read), or with
//!   `caller_reads=false` on a reader thread; one statement, or `BEGIN DEFERRED ...
//!   COMMIT` around several.
//! - `run_batch`: one job on the writer inside one transaction (a batch of reads only:
//!   one job on a reader inside one read transaction: one snapshot).
//! - Inside an explicit transaction, the writes of each op (or batch) run inside the
//!   per-op savepoint, rolled back to on error, so a failed op leaves no trace and the
//!   transaction stays usable.

use crate::cdc;
use crate::config::{SqliteOptions, Synchronous};
use crate::conn::{Conn, LocalOpen, Pool, TxJob, TxState, atomically, tx_call};
use crate::dialect::SqliteDialect;
use crate::error::map_err;
use crate::value::{Sql, read_row};
use async_trait::async_trait;
use crossbeam_channel::Sender;
use datalayer_core::{
    Capability, Change, ColumnType, Error, Output, Result, Row, TxOptions, Value,
};
use datalayer_sql::{
    Dialect, Fetch, Fetched, OP_RELEASE, OP_ROLLBACK_TO, OP_SAVEPOINT, SqlBackend, SqlConn,
    StmtDef, StmtKey, Work, catalog_ddl,
};
use rusqlite::{Connection, OpenFlags, Statement};
use std::sync::Arc;

// ---- execution on a connection -----------------------------------------------------------------

fn bind_all<'v>(stmt: &mut Statement<'_>, vals: impl IntoIterator<Item = &'v Value>) -> Result<()> {
    for (i, v) in vals.into_iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, Sql(v)).map_err(map_err)?;
    }
    Ok(())
}

fn rows_of(stmt: &mut Statement<'_>, types: &[ColumnType]) -> Result<Vec<Row>> {
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push(read_row(r, types)?);
    }
    Ok(out)
}

fn count_of(stmt: &mut Statement<'_>) -> Result<u64> {
    let mut rows = stmt.raw_query();
    let n: i64 = match rows.next().map_err(map_err)? {
        Some(r) => r.get(0).map_err(map_err)?,
        None => 0,
    };
    Ok(n.max(0) as u64)
}

/// One call of `stmt` with `vals`, read back as `fetch` asks.
fn call(stmt: &mut Statement<'_>, vals: &[Value], fetch: Fetch<'_>) -> Result<Fetched> {
    bind_all(stmt, vals)?;
    Ok(match fetch {
        Fetch::Rows(types) => Fetched::Rows(rows_of(stmt, types)?),
        Fetch::Count => Fetched::Count(count_of(stmt)?),
        Fetch::Affected => Fetched::Count(stmt.raw_execute().map_err(map_err)? as u64),
    })
}

/// Runs one work on `c` (no transaction handling): one call per parameter set.
fn exec(c: &mut Conn<'_>, w: &Work) -> Result<Output> {
    let fetch = w.fetch();
    let stmt = c.prepared(w.def())?;
    let results = w
        .param_sets()
        .iter()
        .map(|vals| call(stmt, vals, fetch))
        .collect::<Result<Vec<_>>>()?;
    w.output(results)
}

/// Runs `f` inside the per-op savepoint: released on success, rolled back to on error.
fn in_savepoint<R>(c: &mut Conn<'_>, f: impl FnOnce(&mut Conn<'_>) -> Result<R>) -> Result<R> {
    c.fixed(OP_SAVEPOINT)?;
    match f(c) {
        Ok(v) => {
            c.fixed(OP_RELEASE)?;
            Ok(v)
        }
        Err(e) => {
            if c.in_tx() {
                let _ = c.fixed(OP_ROLLBACK_TO);
                let _ = c.fixed(OP_RELEASE);
            }
            Err(e)
        }
    }
}

fn aborted() -> Error {
    Error::conflict("SQLite rolled this transaction back after an error; roll back and retry")
}

/// Runs works inside an explicit transaction, in order, stopping at the first error:
/// reads as they are, each write under the per-op savepoint (so what ran before a
/// failed op stays, as the engine contract's default `run_batch` does).
fn exec_in_tx(c: &mut Conn<'_>, st: &mut TxState, ws: &[Work]) -> Result<Vec<Output>> {
    let mut out = Vec::with_capacity(ws.len());
    for w in ws {
        if st.aborted {
            return Err(aborted());
        }
        let r = if w.is_read() {
            exec(c, w)
        } else {
            in_savepoint(c, |c| exec(c, w))
        };
        if r.is_err() && !c.in_tx() {
            st.aborted = true;
        }
        out.push(r?);
    }
    Ok(out)
}

fn exec_autocommit(c: &mut Conn<'_>, w: &Work) -> Result<Output> {
    match (w.is_multi(), w.is_read()) {
        (false, _) => exec(c, w),
        (true, true) => atomically(c, "BEGIN DEFERRED", |c| exec(c, w)),
        (true, false) => atomically(c, "BEGIN IMMEDIATE", |c| exec(c, w)),
    }
}

fn exec_batch(c: &mut Conn<'_>, ws: &[Work], begin: &'static str) -> Result<Vec<Output>> {
    atomically(c, begin, |c| ws.iter().map(|w| exec(c, w)).collect())
}

// ---- the backend ------------------------------------------------------------------------------

/// The capability of a SQLite engine (`durable` for a file database).
pub(crate) fn capability(durable: bool) -> Capability {
    Capability {
        // Every level is served as serializable: one writer at a time (BEGIN IMMEDIATE)
        // and read transactions on a WAL snapshot of a serial history.
        read_committed: true,
        repeatable_read: true,
        snapshot: true,
        serializable: true,
        read_only_tx: true,
        savepoints: true,
        concurrent_writers: false,
        pipeline_depth: None,
        // SQLITE_MAX_LENGTH (default 1,000,000,000 bytes) bounds a value and a row.
        max_value_bytes: Some(1_000_000_000),
        max_key_bytes: Some(1_000_000_000),
        durable,
        change_feed: true,
        change_feed_foreign_writes: true,
        outbox: true,
    }
}

const PIN_SNAPSHOT: &str = "SELECT count(*) FROM sqlite_schema";

/// The SQLite backend: one writer thread and N reader threads (none for `:memory:`).
pub struct SqliteBackend {
    pool: Pool,
    options: SqliteOptions,
}

impl SqliteBackend {
    /// A transaction on the writer (`read_only == false`) or a reader, started by `begin`.
    async fn open_tx(
        &self,
        read_only: bool,
        begin: impl FnOnce(&mut Conn<'_>) -> Result<()> + Send + 'static,
    ) -> Result<Box<dyn SqlConn>> {
        let chan = self.pool.begin(read_only, begin).await?;
        Ok(Box::new(SqliteTx { chan }))
    }
}

#[async_trait]
impl SqlBackend for SqliteBackend {
    type Options = SqliteOptions;
    const NAME: &'static str = "sqlite";

    fn dialect() -> &'static dyn Dialect {
        &SqliteDialect
    }

    fn parse_url(url: &str) -> Result<SqliteOptions> {
        SqliteOptions::from_url(url)
    }

    /// Opens the connections on a blocking thread.
    async fn open(options: SqliteOptions) -> Result<SqliteBackend> {
        let (pool, options) =
            tokio::task::spawn_blocking(move || open_pool(&options).map(|pool| (pool, options)))
                .await
                .map_err(|e| {
                    Error::engine("join", format!("opening the sqlite database panicked: {e}"))
                })??;
        Ok(SqliteBackend { pool, options })
    }

    fn options(&self) -> &SqliteOptions {
        &self.options
    }

    fn capability(&self) -> Capability {
        capability(!self.options.is_memory())
    }

    async fn prepare(&self, defs: Vec<StmtDef>) -> Result<()> {
        self.pool
            .each(move |c| {
                for d in &defs {
                    if !c.has(&d.key) {
                        c.prepared(d)?;
                    }
                }
                Ok(())
            })
            .await
    }

    async fn run(&self, w: Arc<Work>) -> Result<Output> {
        if w.is_read() && self.pool.reads_here() {
            self.pool.read_here(|c| exec_autocommit(c, &w))
        } else if w.is_read() {
            self.pool.read(move |c| exec_autocommit(c, &w)).await
        } else {
            self.pool.write(move |c| exec_autocommit(c, &w)).await
        }
    }

    async fn run_batch(&self, ws: Arc<Vec<Work>>) -> Result<Vec<Output>> {
        if ws.iter().all(Work::is_read) {
            let job = move |c: &mut Conn<'_>| exec_batch(c, &ws, "BEGIN DEFERRED");
            if self.pool.reads_here() {
                return self.pool.read_here(job);
            }
            self.pool.read(job).await
        } else {
            let job = move |c: &mut Conn<'_>| exec_batch(c, &ws, "BEGIN IMMEDIATE");
            self.pool.write(job).await
        }
    }

    /// Every isolation level is served as serializable (one writer; readers on a WAL
    /// snapshot of a serial history). A read-only transaction takes its snapshot now.
    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn SqlConn>> {
        if !opts.read_only {
            return self.begin_ddl().await;
        }
        self.open_tx(true, |c| {
            c.fixed("BEGIN DEFERRED")?;
            count_of(c.stmt(StmtKey::Fixed(PIN_SNAPSHOT), PIN_SNAPSHOT)?)?;
            Ok(())
        })
        .await
    }

    async fn begin_ddl(&self) -> Result<Box<dyn SqlConn>> {
        self.open_tx(false, |c| c.fixed("BEGIN IMMEDIATE")).await
    }

    async fn close(&self) -> Result<()> {
        self.pool.close().await
    }

    async fn enable_changes(&self, table: &str) -> Result<()> {
        let table = table.to_owned();
        self.pool.write(move |c| cdc::enable(c, &table)).await
    }

    async fn changes_enabled(&self, table: &str) -> Result<bool> {
        let table = table.to_owned();
        self.pool.read(move |c| cdc::enabled(c, &table)).await
    }

    async fn read_changes(&self, table: &str, after: u64, limit: usize) -> Result<Vec<Change>> {
        let table = table.to_owned();
        self.pool
            .read(move |c| cdc::read(c, &table, after, limit))
            .await
    }

    async fn trim_changes(&self, table: &str, upto: u64) -> Result<u64> {
        let table = table.to_owned();
        self.pool.write(move |c| cdc::trim(c, &table, upto)).await
    }
}

fn open_pool(o: &SqliteOptions) -> Result<Pool> {
    let map = map_err;
    let catalog = catalog_ddl(&SqliteDialect);
    let Some(path) = &o.path else {
        let w = Connection::open_in_memory().map_err(map)?;
        w.pragma_update(None, "foreign_keys", true).map_err(map)?;
        w.execute_batch(&catalog).map_err(map)?;
        return Pool::start(w, Vec::new(), o.busy_timeout, None);
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let w =
        Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_CREATE).map_err(map)?;
    w.busy_timeout(o.busy_timeout).map_err(map)?;
    let mode: String = w
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(map)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::engine(
            "journal_mode",
            format!("could not switch {path:?} to WAL mode (got {mode})"),
        ));
    }
    let sync = match o.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    w.pragma_update(None, "synchronous", sync).map_err(map)?;
    w.pragma_update(None, "foreign_keys", true).map_err(map)?;
    w.execute_batch(&catalog).map_err(map)?;
    cdc::start_epoch(&w, sync)?;
    let (path, busy) = (path.clone(), o.busy_timeout);
    let open_reader = move || -> Result<Connection> {
        let r = Connection::open_with_flags(&path, flags).map_err(map)?;
        r.busy_timeout(busy).map_err(map)?;
        r.pragma_update(None, "foreign_keys", true).map_err(map)?;
        r.pragma_update(None, "query_only", true).map_err(map)?;
        Ok(r)
    };
    let readers = (0..o.readers.max(1))
        .map(|_| open_reader())
        .collect::<Result<Vec<_>>>()?;
    let local: Option<LocalOpen> = o.caller_reads.then(|| Arc::new(open_reader) as LocalOpen);
    Pool::start(w, readers, o.busy_timeout, local)
}

/// An explicit transaction: its connection (the writer, or a reader for a read-only
/// transaction) serves only this transaction until commit or rollback. Dropping it
/// drops the channel, and the connection's thread rolls back.
struct SqliteTx {
    chan: Sender<TxJob>,
}

#[async_trait]
impl SqlConn for SqliteTx {
    async fn run(&mut self, works: Vec<Work>) -> Result<Vec<Output>> {
        tx_call(&self.chan, move |c, st| (exec_in_tx(c, st, &works), false)).await
    }

    async fn call(
        &mut self,
        def: StmtDef,
        values: Row,
        rows: Option<Arc<[ColumnType]>>,
    ) -> Result<Fetched> {
        tx_call(&self.chan, move |c, st| {
            if st.aborted {
                return (Err(aborted()), false);
            }
            let fetch = rows.as_deref().map_or(Fetch::Affected, Fetch::Rows);
            (
                c.prepared(&def).and_then(|s| call(s, &values, fetch)),
                false,
            )
        })
        .await
    }

    async fn batch_execute(&mut self, sql: String) -> Result<()> {
        tx_call(&self.chan, move |c, st| {
            if st.aborted {
                return (Err(aborted()), false);
            }
            (c.db.execute_batch(&sql).map_err(map_err), false)
        })
        .await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        tx_call(&self.chan, |c, st| {
            if st.aborted {
                let _ = c.rollback();
                return (Err(aborted()), true);
            }
            let r = c.fixed("COMMIT");
            if r.is_err() {
                let _ = c.rollback();
            }
            (r, true)
        })
        .await
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        tx_call(&self.chan, |c, _| (c.rollback(), true)).await
    }
}
