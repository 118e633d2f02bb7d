//! One executor for every SQL engine: [`SqlEngine`] implements [`Engine`] once over a
//! [`SqlBackend`], which supplies only what differs between databases — its
//! connections (autocommit runs, transactions, preparing statements once per
//! connection, pipelining), dialect, value codec, error mapping and change-capture
//! triggers.
//!
//! What lives here, once: the [`Registry`] (op → rendered, prepared statement), the
//! catalog (tables created with their catalog entry on first sight, a stored schema
//! compared with the declared one, and after the DDL one catalog query per table that
//! checks each declared index exists with its uniqueness), the autocommit retry policy
//! ([`retry_autocommit`]), read-only enforcement, user savepoints and identifier
//! checks. Ops arrive checked and coerced by core ([`Op::checked`]); isolation levels
//! are checked against the capability by core before [`Engine::begin`].
//!
//! # Atomicity (the contract every backend keeps)
//! - [`SqlBackend::run`]: one work, autocommit; a work of several statements
//!   ([`Work::is_multi`]) inside one transaction (read-only if it only reads).
//! - [`SqlBackend::run_batch`]: every work in one transaction, on one connection
//!   (a batch of reads only: one read-only snapshot).
//! - [`SqlConn::run`], inside an explicit transaction: the works inside the per-op
//!   savepoint [`OP_SAVEPOINT`], released on success and rolled back to on error, so
//!   that a failed op leaves no trace and the transaction stays usable.

use crate::registry::{Registry, StmtDef, StmtKey, TableInfo};
use crate::work::{Fetched, Work};
use crate::{Dialect, verify_indexes};
use async_trait::async_trait;
use datalayer_core::{
    Capability, Change, ColumnType, Engine, EngineTx, Error, Op, Output, QueryDef, Result, Row,
    TablePlan, TableSchema, TxOptions, Value, retry_autocommit, validate_identifier,
    validate_table_name,
};
use std::any::{Any, TypeId};
use std::sync::Arc;

/// The per-op savepoint of explicit transactions: opened before an op's statements.
pub const OP_SAVEPOINT: &str = "SAVEPOINT _dl_op";
/// Releases the per-op savepoint after the op succeeded.
pub const OP_RELEASE: &str = "RELEASE SAVEPOINT _dl_op";
/// Undoes a failed op: rolls back to the per-op savepoint (then [`OP_RELEASE`]).
pub const OP_ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT _dl_op";

/// A SQL database as the executor needs it. Implemented by `datalayer-sqlite` and
/// `datalayer-pg`.
#[async_trait]
pub trait SqlBackend: Send + Sync + Sized + 'static {
    /// The options the engine opens with.
    type Options: std::fmt::Debug + Send + Sync + 'static;
    /// Engine name (`sqlite`, `postgres`).
    const NAME: &'static str;

    /// The dialect SQL is rendered in.
    fn dialect() -> &'static dyn Dialect;

    /// Parses an engine URL into options.
    ///
    /// # Errors
    /// `InvalidInput` for a malformed URL or an unknown parameter.
    fn parse_url(url: &str) -> Result<Self::Options>;

    /// Opens the connections and creates the catalog table ([`catalog_ddl`]).
    ///
    /// # Errors
    /// `ConnectionLost`, `Timeout`, `Io` or `Engine` when the database cannot be
    /// reached or opened.
    async fn open(options: Self::Options) -> Result<Self>;

    /// The options the backend was opened with.
    fn options(&self) -> &Self::Options;

    /// What the engine supports.
    fn capability(&self) -> Capability;

    /// Makes sure every connection has `defs` prepared (now or before its next use).
    ///
    /// # Errors
    /// `Engine` (with the database's code) when a statement does not prepare.
    async fn prepare(&self, defs: Vec<StmtDef>) -> Result<()>;

    /// Runs one work, autocommit (see the module docs).
    ///
    /// # Errors
    /// The mapped database error; `Conflict` when it may be re-run;
    /// `CommitUnknown` when a connection was lost after `COMMIT` was sent.
    async fn run(&self, work: Arc<Work>) -> Result<Output>;

    /// Runs works in order in one transaction; outputs in order.
    ///
    /// # Errors
    /// As [`SqlBackend::run`]; nothing of the batch is kept on error.
    async fn run_batch(&self, works: Arc<Vec<Work>>) -> Result<Vec<Output>>;

    /// Starts an explicit transaction (isolation already checked by core).
    ///
    /// # Errors
    /// `Timeout` when no connection is free in time; `ConnectionLost`.
    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn SqlConn>>;

    /// Starts a transaction that may run DDL and write the catalog, serialised with
    /// every other DDL on the database (PostgreSQL: an advisory lock; SQLite: the
    /// writer).
    ///
    /// # Errors
    /// As [`SqlBackend::begin`].
    async fn begin_ddl(&self) -> Result<Box<dyn SqlConn>>;

    /// Closes the connections; later calls fail.
    ///
    /// # Errors
    /// `Engine` when a connection fails to close cleanly.
    async fn close(&self) -> Result<()>;

    /// Installs change capture on `table` (a validated identifier).
    ///
    /// # Errors
    /// `NotFound` for a missing table; the mapped database error.
    async fn enable_changes(&self, table: &str) -> Result<()>;

    /// Up to `limit` changes of `table` after position `after`, in position order.
    ///
    /// # Errors
    /// `NotFound` for a missing table; `Corrupted` for an undecodable change record.
    async fn read_changes(&self, table: &str, after: u64, limit: usize) -> Result<Vec<Change>>;

    /// Deletes the changes of `table` up to and including `upto`; returns how many.
    ///
    /// # Errors
    /// The mapped database error.
    async fn trim_changes(&self, table: &str, upto: u64) -> Result<u64>;

    /// Whether change capture is installed on `table`.
    ///
    /// # Errors
    /// The mapped database error.
    async fn changes_enabled(&self, table: &str) -> Result<bool>;

    /// Runs `sql` (DDL that may not run inside a transaction, such as PostgreSQL's
    /// `CREATE INDEX CONCURRENTLY`) serialised with other DDL where the database
    /// allows. Default: inside [`SqlBackend::begin_ddl`].
    ///
    /// # Errors
    /// The mapped database error.
    async fn execute_online(&self, sql: String) -> Result<()> {
        let mut c = self.begin_ddl().await?;
        match c.batch_execute(sql).await {
            Ok(()) => c.commit().await,
            Err(e) => {
                let _ = c.rollback().await;
                Err(e)
            }
        }
    }

    /// An engine extension (see [`Engine::extension`]). Default: none.
    fn extension(engine: &SqlEngine<Self>, ty: TypeId) -> Option<Box<dyn Any + Send>> {
        let _ = (engine, ty);
        None
    }
}

/// An open transaction on one connection of a [`SqlBackend`]. Dropping it without
/// `commit` rolls it back.
#[async_trait]
pub trait SqlConn: Send {
    /// Runs works in order inside the per-op savepoint (module docs); outputs in order.
    ///
    /// # Errors
    /// The mapped database error; the transaction stays usable unless the error says
    /// otherwise (`ConnectionLost`, or `Conflict` when the database aborted it).
    async fn run(&mut self, works: Vec<Work>) -> Result<Vec<Output>>;

    /// Runs one statement with `values`; reads back rows decoded by `rows`, or the
    /// number of rows changed when `rows` is `None`.
    ///
    /// # Errors
    /// The mapped database error.
    async fn call(
        &mut self,
        def: StmtDef,
        values: Row,
        rows: Option<Arc<[ColumnType]>>,
    ) -> Result<Fetched>;

    /// Runs SQL without parameters or results (DDL, savepoints).
    ///
    /// # Errors
    /// The mapped database error.
    async fn batch_execute(&mut self, sql: String) -> Result<()>;

    /// Commits.
    ///
    /// # Errors
    /// `Conflict` for a serialization failure; `CommitUnknown` when the connection was
    /// lost after `COMMIT` was sent.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Rolls back.
    ///
    /// # Errors
    /// `ConnectionLost` when the connection is gone (the server rolls back by itself).
    async fn rollback(self: Box<Self>) -> Result<()>;
}

/// The catalog statements, rendered for a dialect.
struct CatalogSql {
    get: StmtDef,
    put: StmtDef,
    /// Deletes one table's entry (before its altered schema is put).
    del: StmtDef,
    all: StmtDef,
    /// The indexes of one table ([`Dialect::index_list_sql`]).
    indexes: StmtDef,
}

impl CatalogSql {
    fn new(d: &dyn Dialect) -> CatalogSql {
        let def = |key, sql: String, params: &[ColumnType]| StmtDef {
            key: StmtKey::Fixed(key),
            sql: Arc::from(sql),
            params: Arc::from(params),
        };
        let (p1, p2) = (d.placeholder(1), d.placeholder(2));
        CatalogSql {
            get: def(
                "catalog get",
                format!("SELECT schema FROM _dl_catalog WHERE name = {p1}"),
                &[ColumnType::String],
            ),
            put: def(
                "catalog put",
                format!("INSERT INTO _dl_catalog (name, schema) VALUES ({p1}, {p2})"),
                &[ColumnType::String, ColumnType::Bytes],
            ),
            del: def(
                "catalog delete",
                format!("DELETE FROM _dl_catalog WHERE name = {p1}"),
                &[ColumnType::String],
            ),
            all: def(
                "catalog all",
                "SELECT schema FROM _dl_catalog ORDER BY name".to_owned(),
                &[],
            ),
            indexes: def("catalog indexes", d.index_list_sql(), &[ColumnType::String]),
        }
    }
}

fn bytes_column() -> Option<Arc<[ColumnType]>> {
    Some(Arc::from([ColumnType::Bytes].as_slice()))
}

struct Shared<B: SqlBackend> {
    backend: B,
    reg: Registry,
    catalog: CatalogSql,
}

/// A SQL engine: the executor over backend `B`. Cheap to clone (clones share the
/// connections and the registry).
pub struct SqlEngine<B: SqlBackend> {
    shared: Arc<Shared<B>>,
}

impl<B: SqlBackend> Clone for SqlEngine<B> {
    fn clone(&self) -> Self {
        SqlEngine {
            shared: self.shared.clone(),
        }
    }
}

impl<B: SqlBackend> std::fmt::Debug for SqlEngine<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(B::NAME)
            .field("options", self.options())
            .finish()
    }
}

impl<B: SqlBackend> SqlEngine<B> {
    /// Opens the database named by `url` (see the backend's options for parameters).
    ///
    /// # Errors
    /// `InvalidInput` for a malformed URL; otherwise as [`SqlEngine::open_with`].
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(B::parse_url(url)?).await
    }

    /// Opens the database with `options`.
    ///
    /// # Errors
    /// As [`SqlBackend::open`]: `ConnectionLost`, `Timeout`, `Io`, `Corrupted` or
    /// `Engine` when the database cannot be reached or opened.
    pub async fn open_with(options: B::Options) -> Result<Self> {
        let backend = B::open(options).await?;
        Ok(SqlEngine {
            shared: Arc::new(Shared {
                backend,
                reg: Registry::new(B::dialect()),
                catalog: CatalogSql::new(B::dialect()),
            }),
        })
    }

    /// The options the engine was opened with (secrets stay hidden in `Debug`).
    pub fn options(&self) -> &B::Options {
        self.backend().options()
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.shared.backend
    }

    /// Replaces `old`'s catalog entry with `new`'s, inside `c`.
    pub(crate) async fn put_catalog(
        &self,
        c: &mut dyn SqlConn,
        old: &str,
        new: &TableSchema,
    ) -> Result<()> {
        let cat = &self.shared.catalog;
        c.call(cat.del.clone(), vec![Value::String(old.to_owned())], None)
            .await?;
        let values = vec![
            Value::String(new.name.clone()),
            Value::Bytes(new.catalog_bytes()?),
        ];
        c.call(cat.put.clone(), values, None).await?;
        Ok(())
    }

    /// Forgets the registered table `name` ([`Registry::forget`]).
    pub(crate) fn forget(&self, name: &str) {
        self.shared.reg.forget(name);
    }

    /// Creates the tables not yet known to exist (with their catalog entries, or checks
    /// the stored schemas) in one DDL transaction, then prepares their statements.
    async fn create(&self, tables: Vec<Arc<TableInfo>>) -> Result<()> {
        let mut missing: Vec<Arc<TableInfo>> = Vec::new();
        for t in tables {
            if !t.created() && !missing.iter().any(|m| Arc::ptr_eq(m, &t)) {
                missing.push(t);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut c = self.backend().begin_ddl().await?;
        match self.ensure(c.as_mut(), &missing).await {
            Ok(()) => c.commit().await?,
            Err(e) => {
                let _ = c.rollback().await;
                for t in &missing {
                    self.shared.reg.forget_failed(t);
                }
                return Err(e);
            }
        }
        for t in &missing {
            t.set_created();
            self.shared.reg.adopt(t);
        }
        let defs = missing.iter().flat_map(|t| t.ops().iter().cloned());
        self.backend().prepare(defs.collect()).await
    }

    /// Creates `tables` inside the open transaction `c` (with their catalog entries), or
    /// checks their stored schema ([`TableSchema::check_stored`]) and runs no DDL, then
    /// checks that their declared indexes exist
    /// ([`verify_indexes`]; `Engine` error `index_mismatch` otherwise).
    async fn ensure(&self, c: &mut dyn SqlConn, tables: &[Arc<TableInfo>]) -> Result<()> {
        let cat = &self.shared.catalog;
        for t in tables {
            let name = Value::String(t.schema.name.clone());
            let stored = c
                .call(cat.get.clone(), vec![name.clone()], bytes_column())
                .await?;
            let stored = match stored {
                Fetched::Rows(rows) => rows.into_iter().next(),
                Fetched::Count(_) => None,
            };
            match stored.as_deref() {
                Some([Value::Bytes(b)]) => t.schema.check_stored(b)?,
                Some(_) => return Err(Error::corrupted("catalog entry: not bytes")),
                None => {}
            }
            // A stored entry was written with the table and its indexes: the DDL
            // would only take locks (PostgreSQL's `CREATE INDEX IF NOT EXISTS` takes a
            // SHARE lock, which waits behind a schema change's `CREATE INDEX
            // CONCURRENTLY` that waits for this transaction: a deadlock).
            if stored.is_none() {
                for s in &t.ddl {
                    c.batch_execute(s.clone()).await?;
                }
            }
            if !t.schema.indexes.is_empty() {
                self.check_indexes(c, &t.schema).await?;
            }
            if stored.is_none() {
                let values = vec![name, Value::Bytes(t.catalog.clone())];
                c.call(cat.put.clone(), values, None).await?;
            }
        }
        Ok(())
    }

    /// Checks, with one catalog query, that every index `t` declares exists on it
    /// under its [`index_name`](crate::index_name) with the declared uniqueness
    /// ([`verify_indexes`]).
    async fn check_indexes(&self, c: &mut dyn SqlConn, t: &TableSchema) -> Result<()> {
        let types: Arc<[ColumnType]> = Arc::from([ColumnType::String, ColumnType::Bool]);
        let def = self.shared.catalog.indexes.clone();
        let rows = match c
            .call(def, vec![Value::String(t.name.clone())], Some(types))
            .await?
        {
            Fetched::Rows(rows) => rows,
            Fetched::Count(_) => Vec::new(),
        };
        let listed = rows
            .into_iter()
            .map(|r| match r.as_slice() {
                [Value::String(n), Value::Bool(u)] => Ok((n.clone(), *u)),
                other => Err(Error::corrupted(format!(
                    "index list of table {}: unexpected row {other:?}",
                    t.name
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        verify_indexes(t, B::dialect(), &listed)
    }

    async fn ready(&self, w: &Work) -> Result<()> {
        if w.table().created() {
            return Ok(());
        }
        self.create(vec![w.table().clone()]).await
    }

    fn works(&self, ops: Vec<Op<'_>>) -> Result<Vec<Work>> {
        ops.into_iter()
            .map(|op| Work::new(&self.shared.reg, op))
            .collect()
    }
}

#[async_trait]
impl<B: SqlBackend> Engine for SqlEngine<B> {
    fn name(&self) -> &'static str {
        B::NAME
    }

    fn capability(&self) -> Capability {
        self.backend().capability()
    }

    async fn register(&self, tables: &[&TableSchema], queries: &[&QueryDef]) -> Result<()> {
        let reg = &self.shared.reg;
        let mut infos = tables
            .iter()
            .map(|t| reg.table(t))
            .collect::<Result<Vec<_>>>()?;
        let qs = queries
            .iter()
            .map(|q| reg.query(q))
            .collect::<Result<Vec<_>>>()?;
        infos.extend(qs.iter().map(|q| q.table.clone()));
        self.create(infos).await?;
        // Prepared now, so that a query the database rejects fails at registration.
        let defs = qs.iter().map(|q| q.def.clone()).collect();
        self.backend().prepare(defs).await
    }

    async fn run(&self, op: Op<'_>) -> Result<Output> {
        let w = Arc::new(Work::new(&self.shared.reg, op)?);
        self.ready(&w).await?;
        retry_autocommit(|| self.backend().run(w.clone())).await
    }

    async fn run_batch(&self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let ws = self.works(ops)?;
        self.create(ws.iter().map(|w| w.table().clone()).collect())
            .await?;
        let ws = Arc::new(ws);
        retry_autocommit(|| self.backend().run_batch(ws.clone())).await
    }

    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn EngineTx>> {
        let conn = self.backend().begin(opts).await?;
        Ok(Box::new(SqlTx {
            conn,
            engine: self.clone(),
            read_only: opts.read_only,
            savepoints: Vec::new(),
        }))
    }

    async fn catalog(&self) -> Result<Vec<TableSchema>> {
        let read = TxOptions {
            isolation: None,
            read_only: true,
        };
        let mut c = self.backend().begin(read).await?;
        let all = self.shared.catalog.all.clone();
        let rows = c.call(all, Vec::new(), bytes_column()).await;
        c.rollback().await?;
        let Fetched::Rows(rows) = rows? else {
            return Ok(Vec::new());
        };
        rows.iter()
            .map(|r| match r.as_slice() {
                [Value::Bytes(b)] => TableSchema::from_catalog_bytes(b),
                _ => Err(Error::corrupted("catalog entry: not bytes")),
            })
            .collect()
    }

    async fn close(&self) -> Result<()> {
        self.backend().close().await
    }

    /// Re-run on `Conflict` ([`retry_autocommit`]): installing the triggers takes a
    /// table lock that can deadlock with the application's transactions (PostgreSQL
    /// `40P01`, seen while a migration starts on a busy database); the install is
    /// idempotent and one transaction, so a re-run is safe.
    async fn enable_changes(&self, table: &str) -> Result<()> {
        validate_table_name(table)?;
        retry_autocommit(|| self.backend().enable_changes(table)).await
    }

    async fn read_changes(&self, table: &str, after: u64, limit: usize) -> Result<Vec<Change>> {
        validate_table_name(table)?;
        self.backend().read_changes(table, after, limit).await
    }

    async fn trim_changes(&self, table: &str, upto: u64) -> Result<u64> {
        validate_table_name(table)?;
        self.backend().trim_changes(table, upto).await
    }

    fn extension(&self, ty: TypeId) -> Option<Box<dyn Any + Send>> {
        B::extension(self, ty)
    }

    /// `ALTER TABLE` for renames and added columns, and `DROP INDEX`, in one DDL
    /// transaction with the catalog entry; then each added index built online
    /// ([`Dialect::online_index`]), the catalog entry updated after each. A unique
    /// index that stored rows violate is dropped again and fails with `AlreadyExists`
    /// naming up to five duplicated values; the steps before it stay applied (the
    /// catalog says so: planning again lists the index alone). A renamed table's
    /// indexes are rebuilt under their new names; renaming a table with change
    /// capture on is `Unsupported`. Change capture on the table is re-installed with
    /// the new columns.
    async fn alter_table(&self, plan: &TablePlan) -> Result<()> {
        crate::alter::alter(self, plan).await
    }

    /// `DROP TABLE IF EXISTS` (its indexes and capture triggers go with it) and the
    /// catalog entry, in one DDL transaction.
    async fn drop_table(&self, name: &str) -> Result<()> {
        validate_table_name(name)?;
        let mut c = self.backend().begin_ddl().await?;
        let r = async {
            let sql = format!("DROP TABLE IF EXISTS {}", B::dialect().quote_ident(name));
            c.batch_execute(sql).await?;
            let del = self.shared.catalog.del.clone();
            c.call(del, vec![Value::String(name.to_owned())], None)
                .await
                .map(|_| ())
        }
        .await;
        match r {
            Ok(()) => c.commit().await?,
            Err(e) => {
                let _ = c.rollback().await;
                return Err(e);
            }
        }
        self.forget(name);
        Ok(())
    }
}

/// An explicit transaction of a [`SqlEngine`]: the backend's open transaction plus
/// what every SQL engine checks the same way (read-only, tables first seen, savepoint
/// names).
struct SqlTx<B: SqlBackend> {
    conn: Box<dyn SqlConn>,
    engine: SqlEngine<B>,
    read_only: bool,
    /// User savepoints, oldest first.
    savepoints: Vec<String>,
}

impl<B: SqlBackend> SqlTx<B> {
    /// Runs works after checking them against the transaction.
    ///
    /// A table first seen inside the transaction is created first: by another
    /// connection where the database has concurrent writers (or this transaction only
    /// reads), else (one writer, held by this transaction) inside this transaction
    /// under its own savepoint, so that a failure leaves the transaction usable.
    async fn run_works(&mut self, ws: Vec<Work>) -> Result<Vec<Output>> {
        if self.read_only && ws.iter().any(|w| !w.is_read()) {
            return Err(Error::invalid_input("write in a read-only transaction"));
        }
        let mut missing: Vec<Arc<TableInfo>> = Vec::new();
        for w in &ws {
            let t = w.table();
            if !t.created() && !missing.iter().any(|m| Arc::ptr_eq(m, t)) {
                missing.push(t.clone());
            }
        }
        if !missing.is_empty() {
            if self.read_only || self.engine.capability().concurrent_writers {
                self.engine.create(missing).await?;
            } else {
                self.ensure_here(&missing).await?;
            }
        }
        self.conn.run(ws).await
    }

    async fn ensure_here(&mut self, tables: &[Arc<TableInfo>]) -> Result<()> {
        self.conn.batch_execute(OP_SAVEPOINT.to_owned()).await?;
        let r = self.engine.ensure(self.conn.as_mut(), tables).await;
        let end = match &r {
            Ok(()) => OP_RELEASE.to_owned(),
            Err(_) => format!("{OP_ROLLBACK_TO}; {OP_RELEASE}"),
        };
        let ended = self.conn.batch_execute(end).await;
        if r.is_err() {
            for t in tables {
                self.engine.shared.reg.forget_failed(t);
            }
        }
        r.and(ended)
    }

    fn savepoint_pos(&self, name: &str) -> Result<usize> {
        self.savepoints
            .iter()
            .rposition(|n| n == name)
            .ok_or_else(|| Error::not_found(format!("no savepoint named {name}")))
    }

    /// Runs `<verb> "<name>"` for a validated savepoint name.
    async fn savepoint_sql(&mut self, verb: &str, name: &str) -> Result<()> {
        let sql = format!("{verb} {}", B::dialect().quote_ident(name));
        self.conn.batch_execute(sql).await
    }
}

#[async_trait]
impl<B: SqlBackend> EngineTx for SqlTx<B> {
    async fn run(&mut self, op: Op<'_>) -> Result<Output> {
        let w = Work::new(&self.engine.shared.reg, op)?;
        let mut out = self.run_works(vec![w]).await?;
        out.pop()
            .ok_or_else(|| Error::engine("internal", "no output"))
    }

    async fn run_batch(&mut self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let ws = self.engine.works(ops)?;
        self.run_works(ws).await
    }

    async fn savepoint(&mut self, name: &str) -> Result<()> {
        validate_identifier("savepoint", name)?;
        self.savepoint_sql("SAVEPOINT", name).await?;
        self.savepoints.push(name.to_owned());
        Ok(())
    }

    async fn rollback_to(&mut self, name: &str) -> Result<()> {
        validate_identifier("savepoint", name)?;
        let i = self.savepoint_pos(name)?;
        self.savepoint_sql("ROLLBACK TO SAVEPOINT", name).await?;
        self.savepoints.truncate(i + 1);
        Ok(())
    }

    async fn release(&mut self, name: &str) -> Result<()> {
        validate_identifier("savepoint", name)?;
        let i = self.savepoint_pos(name)?;
        self.savepoint_sql("RELEASE SAVEPOINT", name).await?;
        self.savepoints.truncate(i);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.conn.commit().await
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        self.conn.rollback().await
    }
}

/// `CREATE TABLE IF NOT EXISTS _dl_catalog (name TEXT PRIMARY KEY, schema <bytes>)`
/// in dialect `d`: the catalog table, one row per registered table with its
/// [`TableSchema::catalog_bytes`].
pub fn catalog_ddl(d: &dyn Dialect) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS _dl_catalog (name TEXT PRIMARY KEY, schema {} NOT NULL)",
        d.column_type(ColumnType::Bytes)
    )
}
