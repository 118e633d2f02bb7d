//! The [`Engine`] and [`EngineTx`] implementations: the registry of rendered SQL, the
//! translation of [`Op`]s into owned work for the connection threads, and the
//! execution of that work on a connection.
//!
//! # Hot path
//! An op is looked up in the [`Registry`] (by `QueryId`, by table name, by scan shape:
//! hash lookups of SQL rendered once), checked and coerced on the caller's task, and
//! sent to a connection thread, which finds the statement prepared for it on that
//! connection ([`StmtKey`]), binds the values and steps. No SQL is built or parsed.
//!
//! # Atomicity
//! - Autocommit writes run on the writer; a write of several rows runs inside
//!   `BEGIN IMMEDIATE ... COMMIT`. Reads run on a reader (one statement, or `BEGIN
//!   DEFERRED ... COMMIT` around several).
//! - `run_batch`: one job on the writer inside one transaction (a batch of reads only:
//!   one job on a reader inside one read transaction: one snapshot).
//! - Inside an explicit transaction, every write op runs inside `SAVEPOINT _dl_op`,
//!   rolled back to on error, so a failed op leaves no trace and the transaction stays
//!   usable.

use crate::cdc;
use crate::core::{Conn, Pool, StmtKey, TableOp, TxJob, TxState, atomically, tx_call};
use crate::error::map_err;
use crate::render::SqliteDialect;
use crate::value::{Sql, read_row};
use async_trait::async_trait;
use crossbeam_channel::Sender;
use datalayer_core::{
    Capability, Change, ColumnType, Engine, EngineTx, Error, Limit, Op, Output, QueryDef, QueryId,
    Result, Row, ScanRequest, TableSchema, TxOptions, Value, WriteMode, validate_identifier,
};
use datalayer_sql::{
    Bind, Dialect, OutputShape, RenderedQuery, RenderedScan, ScanShape, TableSql, render_ddl,
    render_query, render_scan, render_table,
};
use parking_lot::RwLock;
use rusqlite::Statement;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The catalog: one row per registered table, its [`TableSchema`] as postcard bytes.
pub(crate) const CATALOG_DDL: &str =
    "CREATE TABLE IF NOT EXISTS _dl_catalog (name TEXT PRIMARY KEY, schema BLOB NOT NULL)";
const CATALOG_GET: &str = "SELECT schema FROM _dl_catalog WHERE name = ?1";
const CATALOG_PUT: &str = "INSERT INTO _dl_catalog (name, schema) VALUES (?1, ?2)";
const CATALOG_ALL: &str = "SELECT schema FROM _dl_catalog ORDER BY name";
/// Autocommit ops re-run this many times on a retryable `Conflict` (as in the KV family).
const AUTOCOMMIT_RETRIES: u32 = 3;

// ---- registry -------------------------------------------------------------------------------

/// One table: its schema and everything rendered from it.
pub(crate) struct TableInfo {
    /// Small id, used in statement keys.
    id: u32,
    pub(crate) schema: TableSchema,
    /// Address of the schema value first registered (fast identity check).
    addr: usize,
    sql: TableSql,
    ddl: Vec<String>,
    catalog: Vec<u8>,
    types: Vec<ColumnType>,
    /// The table and its catalog entry are known to exist (created or checked).
    created: AtomicBool,
    scans: RwLock<HashMap<ScanShape, Arc<RenderedScan>>>,
}

impl TableInfo {
    fn scan(&self, shape: ScanShape) -> Result<Arc<RenderedScan>> {
        if let Some(s) = self.scans.read().get(&shape) {
            return Ok(s.clone());
        }
        let s = Arc::new(render_scan(&self.schema, &shape, &SqliteDialect)?);
        Ok(self.scans.write().entry(shape).or_insert(s).clone())
    }

    /// The repository statements (key, SQL) to prepare on every connection.
    fn statements(&self) -> Vec<(StmtKey, String)> {
        let s = &self.sql;
        [
            (TableOp::Insert, &s.insert),
            (TableOp::Upsert, &s.upsert),
            (TableOp::Update, &s.update),
            (TableOp::Delete, &s.delete),
            (TableOp::Get, &s.get),
            (TableOp::Count, &s.count),
        ]
        .into_iter()
        .map(|(op, sql)| (StmtKey::Table(self.id, op), sql.clone()))
        .collect()
    }

    fn sql_of(&self, op: TableOp) -> &str {
        let s = &self.sql;
        match op {
            TableOp::Insert => &s.insert,
            TableOp::Upsert => &s.upsert,
            TableOp::Update => &s.update,
            TableOp::Delete => &s.delete,
            TableOp::Get => &s.get,
            TableOp::Count => &s.count,
        }
    }
}

/// One registered query and its SQL.
pub(crate) struct QueryInfo {
    id: QueryId,
    name: String,
    params: usize,
    limit: Option<Limit>,
    table: Arc<TableInfo>,
    rendered: RenderedQuery,
    /// Types of the result columns (for `OutputShape::Rows`).
    types: Vec<ColumnType>,
}

/// Everything rendered, shared by the async side of the engine.
#[derive(Default)]
pub(crate) struct Registry {
    tables: RwLock<HashMap<String, Arc<TableInfo>>>,
    queries: RwLock<HashMap<QueryId, Arc<QueryInfo>>>,
    next_id: AtomicU32,
}

impl Registry {
    /// The table `t`, rendering it on first sight.
    ///
    /// # Errors
    /// `InvalidInput` for a schema that fails validation or differs from the schema
    /// registered under the same name.
    fn table(&self, t: &TableSchema) -> Result<Arc<TableInfo>> {
        if let Some(info) = self.tables.read().get(t.name.as_str()) {
            if info.addr == std::ptr::from_ref(t) as usize || info.schema == *t {
                return Ok(info.clone());
            }
            return Err(Error::invalid_input(format!(
                "table {} is registered with a different schema",
                t.name
            )));
        }
        let ddl = render_ddl(t, &SqliteDialect)?;
        let info = Arc::new(TableInfo {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            schema: t.clone(),
            addr: std::ptr::from_ref(t) as usize,
            sql: render_table(t, &SqliteDialect),
            ddl,
            catalog: postcard::to_allocvec(t)
                .map_err(|e| Error::engine("postcard", e.to_string()))?,
            types: t.columns.iter().map(|c| c.ty).collect(),
            created: AtomicBool::new(false),
            scans: RwLock::default(),
        });
        let mut w = self.tables.write();
        let got = w.entry(t.name.clone()).or_insert(info).clone();
        drop(w);
        if got.schema != *t {
            return Err(Error::invalid_input(format!(
                "table {} is registered with a different schema",
                t.name
            )));
        }
        Ok(got)
    }

    /// The query `q`, rendering it on first sight.
    fn query(&self, q: &QueryDef) -> Result<Arc<QueryInfo>> {
        if let Some(i) = self.queries.read().get(&q.id) {
            return Ok(i.clone());
        }
        let table = self.table(q.table)?;
        let rendered = render_query(q, &SqliteDialect)?;
        let types = match &rendered.output {
            OutputShape::Rows(cols) => cols.iter().map(|&c| q.table.columns[c].ty).collect(),
            _ => Vec::new(),
        };
        let info = Arc::new(QueryInfo {
            id: q.id,
            name: q.name.clone(),
            params: q.params.len(),
            limit: q.limit,
            table,
            rendered,
            types,
        });
        Ok(self.queries.write().entry(q.id).or_insert(info).clone())
    }
}

// ---- work -------------------------------------------------------------------------------------

/// An [`Op`] made owned, checked and coerced, ready for a connection thread.
pub(crate) enum Work {
    Query {
        q: Arc<QueryInfo>,
        params: Vec<Value>,
    },
    Insert {
        t: Arc<TableInfo>,
        rows: Vec<Row>,
        upsert: bool,
    },
    Update {
        t: Arc<TableInfo>,
        rows: Vec<Row>,
    },
    Delete {
        t: Arc<TableInfo>,
        keys: Vec<Row>,
    },
    Get {
        t: Arc<TableInfo>,
        keys: Vec<Row>,
    },
    Scan {
        t: Arc<TableInfo>,
        shape: ScanShape,
        scan: Arc<RenderedScan>,
        values: Vec<Value>,
    },
    Count {
        t: Arc<TableInfo>,
    },
}

impl Work {
    fn table(&self) -> &Arc<TableInfo> {
        match self {
            Work::Query { q, .. } => &q.table,
            Work::Insert { t, .. }
            | Work::Update { t, .. }
            | Work::Delete { t, .. }
            | Work::Get { t, .. }
            | Work::Scan { t, .. }
            | Work::Count { t } => t,
        }
    }

    fn is_read(&self) -> bool {
        match self {
            Work::Query { q, .. } => {
                matches!(q.rendered.output, OutputShape::Rows(_) | OutputShape::Count)
            }
            Work::Get { .. } | Work::Scan { .. } | Work::Count { .. } => true,
            _ => false,
        }
    }

    /// Runs more than one statement (needs a transaction to be atomic).
    fn is_multi(&self) -> bool {
        match self {
            Work::Insert { rows, .. } | Work::Update { rows, .. } => rows.len() > 1,
            Work::Delete { keys, .. } | Work::Get { keys, .. } => keys.len() > 1,
            _ => false,
        }
    }
}

fn scan_work(reg: &Registry, req: ScanRequest<'_>) -> Result<Work> {
    let info = reg.table(req.table)?;
    let req = ScanRequest {
        table: &info.schema,
        ..req
    }
    .coerce()?;
    let shape = ScanShape::of(&req)?;
    let scan = info.scan(shape)?;
    let values = scan.bind_values(&req);
    drop(req);
    Ok(Work::Scan {
        t: info.clone(),
        shape,
        scan,
        values,
    })
}

/// Turns an op into work: registry lookups, arity checks, coercion to column types.
fn work(reg: &Registry, op: Op<'_>) -> Result<Work> {
    Ok(match op {
        Op::Query { query, params } => {
            let q = reg.query(query)?;
            if params.len() != q.params {
                return Err(Error::invalid_input(format!(
                    "query {} takes {} parameters, got {}",
                    q.name,
                    q.params,
                    params.len()
                )));
            }
            if let Some(Limit::Param(i)) = q.limit {
                let n = params.get(i).and_then(Value::as_i64).unwrap_or(-1);
                if n < 0 {
                    return Err(Error::invalid_input(format!(
                        "query {}: limit must be a non-negative integer",
                        q.name
                    )));
                }
            }
            Work::Query {
                q,
                params: params.to_vec(),
            }
        }
        Op::Insert { table, rows, mode } => {
            let t = reg.table(table)?;
            let rows = rows
                .into_iter()
                .map(|r| t.schema.check_row(r))
                .collect::<Result<_>>()?;
            Work::Insert {
                t,
                rows,
                upsert: mode == WriteMode::Upsert,
            }
        }
        Op::Update { table, rows } => {
            let t = reg.table(table)?;
            let rows = rows
                .into_iter()
                .map(|r| t.schema.check_row(r))
                .collect::<Result<_>>()?;
            Work::Update { t, rows }
        }
        Op::Delete { table, keys } => {
            let t = reg.table(table)?;
            let keys = keys
                .into_iter()
                .map(|k| t.schema.coerce_key(k))
                .collect::<Result<_>>()?;
            Work::Delete { t, keys }
        }
        Op::Get { table, keys } => {
            let t = reg.table(table)?;
            let keys = keys
                .into_iter()
                .map(|k| t.schema.coerce_key(k))
                .collect::<Result<_>>()?;
            Work::Get { t, keys }
        }
        Op::Scan(req) => scan_work(reg, req)?,
        Op::Count { table } => Work::Count {
            t: reg.table(table)?,
        },
        _ => return Err(Error::unsupported("sqlite", format!("op {}", op.name()))),
    })
}

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

fn table_stmt<'a, 'c>(
    c: &'a mut Conn<'c>,
    t: &TableInfo,
    op: TableOp,
) -> Result<&'a mut Statement<'c>> {
    c.stmt(StmtKey::Table(t.id, op), t.sql_of(op))
}

/// Runs one piece of work on `c` (no transaction handling).
fn exec(c: &mut Conn<'_>, w: &Work) -> Result<Output> {
    match w {
        Work::Query { q, params } => {
            let stmt = c.stmt(StmtKey::Query(q.id), &q.rendered.sql)?;
            for (k, b) in q.rendered.binds.iter().enumerate() {
                let i = match *b {
                    Bind::Param(i) | Bind::PrefixPattern(i) => i,
                };
                let v = params.get(i).ok_or_else(|| {
                    Error::invalid_input(format!("query {}: parameter {i} missing", q.name))
                })?;
                match (b, v) {
                    (Bind::PrefixPattern(_), Value::String(s)) => {
                        stmt.raw_bind_parameter(k + 1, SqliteDialect.prefix_pattern(s))
                    }
                    _ => stmt.raw_bind_parameter(k + 1, Sql(v)),
                }
                .map_err(map_err)?;
            }
            match &q.rendered.output {
                OutputShape::Rows(_) => Ok(Output::Rows(rows_of(stmt, &q.types)?)),
                OutputShape::Count => Ok(Output::Count(count_of(stmt)?)),
                OutputShape::Changes => {
                    Ok(Output::Count(stmt.raw_execute().map_err(map_err)? as u64))
                }
            }
        }
        Work::Insert { t, rows, upsert } => {
            let stmt = table_stmt(
                c,
                t,
                if *upsert {
                    TableOp::Upsert
                } else {
                    TableOp::Insert
                },
            )?;
            for r in rows {
                bind_all(stmt, r)?;
                stmt.raw_execute().map_err(map_err)?;
            }
            Ok(Output::Count(rows.len() as u64))
        }
        Work::Update { t, rows } => {
            let stmt = table_stmt(c, t, TableOp::Update)?;
            let mut n = 0;
            for r in rows {
                bind_all(stmt, r)?;
                n += stmt.raw_execute().map_err(map_err)? as u64;
            }
            Ok(Output::Count(n))
        }
        Work::Delete { t, keys } => {
            let stmt = table_stmt(c, t, TableOp::Delete)?;
            let mut n = 0;
            for k in keys {
                bind_all(stmt, k)?;
                n += stmt.raw_execute().map_err(map_err)? as u64;
            }
            Ok(Output::Count(n))
        }
        Work::Get { t, keys } => {
            let stmt = table_stmt(c, t, TableOp::Get)?;
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                bind_all(stmt, k)?;
                let mut rows = stmt.raw_query();
                out.push(match rows.next().map_err(map_err)? {
                    Some(r) => Some(read_row(r, &t.types)?),
                    None => None,
                });
            }
            Ok(Output::Optional(out))
        }
        Work::Scan {
            t,
            shape,
            scan,
            values,
        } => {
            let stmt = c.stmt(StmtKey::Scan(t.id, *shape), &scan.sql)?;
            bind_all(stmt, values)?;
            Ok(Output::Rows(rows_of(stmt, &t.types)?))
        }
        Work::Count { t } => Ok(Output::Count(count_of(table_stmt(c, t, TableOp::Count)?)?)),
    }
}

/// Creates `t` (if missing) and its catalog entry, or checks the stored schema.
/// Runs inside the caller's transaction.
fn ensure_table(c: &mut Conn<'_>, t: &TableInfo) -> Result<()> {
    let stored: Option<Vec<u8>> = {
        let stmt = c.stmt(StmtKey::Fixed(CATALOG_GET), CATALOG_GET)?;
        stmt.raw_bind_parameter(1, t.schema.name.as_str())
            .map_err(map_err)?;
        let mut rows = stmt.raw_query();
        match rows.next().map_err(map_err)? {
            Some(r) => Some(r.get(0).map_err(map_err)?),
            None => None,
        }
    };
    if let Some(stored) = &stored
        && *stored != t.catalog
    {
        let old: Option<TableSchema> = postcard::from_bytes(stored).ok();
        return Err(Error::invalid_input(format!(
            "table {} is stored with a different schema ({}); migrate it first",
            t.schema.name,
            match old {
                Some(o) => format!(
                    "stored columns {:?}",
                    o.columns.iter().map(|c| &c.name).collect::<Vec<_>>()
                ),
                None => "undecodable".into(),
            }
        )));
    }
    for s in &t.ddl {
        c.db.execute_batch(s).map_err(map_err)?;
    }
    if stored.is_none() {
        let stmt = c.stmt(StmtKey::Fixed(CATALOG_PUT), CATALOG_PUT)?;
        stmt.raw_bind_parameter(1, t.schema.name.as_str())
            .map_err(map_err)?;
        stmt.raw_bind_parameter(2, t.catalog.as_slice())
            .map_err(map_err)?;
        stmt.raw_execute().map_err(map_err)?;
    }
    Ok(())
}

/// Runs `f` inside `SAVEPOINT _dl_op`: released on success, rolled back to on error.
fn in_savepoint<R>(c: &mut Conn<'_>, f: impl FnOnce(&mut Conn<'_>) -> Result<R>) -> Result<R> {
    c.fixed("SAVEPOINT _dl_op")?;
    match f(c) {
        Ok(v) => {
            c.fixed("RELEASE _dl_op")?;
            Ok(v)
        }
        Err(e) => {
            if c.in_tx() {
                let _ = c.fixed("ROLLBACK TO _dl_op");
                let _ = c.fixed("RELEASE _dl_op");
            }
            Err(e)
        }
    }
}

fn aborted() -> Error {
    Error::conflict("SQLite rolled this transaction back after an error; roll back and retry")
}

/// Runs work inside an explicit transaction.
fn exec_in_tx(c: &mut Conn<'_>, st: &mut TxState, w: &Work) -> Result<Output> {
    if st.aborted {
        return Err(aborted());
    }
    let t = w.table();
    let r = if w.is_read() && (st.read_only || t.created.load(Ordering::Acquire)) {
        exec(c, w)
    } else {
        in_savepoint(c, |c| {
            if !t.created.load(Ordering::Acquire) {
                ensure_table(c, t)?;
            }
            exec(c, w)
        })
    };
    if r.is_err() && !c.in_tx() {
        st.aborted = true;
    }
    r
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

// ---- the engine -------------------------------------------------------------------------------

/// Shared state of one engine: the connection threads and the registry.
pub(crate) struct Inner {
    pub(crate) pool: Pool,
    reg: Registry,
    pub(crate) durable: bool,
}

impl Inner {
    pub(crate) fn new(pool: Pool, durable: bool) -> Self {
        Inner {
            pool,
            reg: Registry::default(),
            durable,
        }
    }

    /// Creates the tables not yet known to exist, in one write transaction.
    async fn create(&self, tables: Vec<Arc<TableInfo>>) -> Result<()> {
        let missing: Vec<Arc<TableInfo>> = tables
            .into_iter()
            .filter(|t| !t.created.load(Ordering::Acquire))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let todo = missing.clone();
        self.pool
            .write(move |c| {
                atomically(c, "BEGIN IMMEDIATE", |c| {
                    todo.iter().try_for_each(|t| ensure_table(c, t))
                })
            })
            .await?;
        for t in missing {
            t.created.store(true, Ordering::Release);
        }
        Ok(())
    }

    async fn ready(&self, w: &Work) -> Result<()> {
        if w.table().created.load(Ordering::Acquire) {
            return Ok(());
        }
        self.create(vec![w.table().clone()]).await
    }

    async fn run_once(&self, w: Arc<Work>) -> Result<Output> {
        if w.is_read() {
            self.pool.read(move |c| exec_autocommit(c, &w)).await
        } else {
            self.pool.write(move |c| exec_autocommit(c, &w)).await
        }
    }
}

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

#[async_trait]
impl Engine for crate::SqliteEngine {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn capability(&self) -> Capability {
        capability(self.inner.durable)
    }

    async fn register(&self, tables: &[&TableSchema], queries: &[&QueryDef]) -> Result<()> {
        let inner = &self.inner;
        let mut infos = tables
            .iter()
            .map(|t| inner.reg.table(t))
            .collect::<Result<Vec<_>>>()?;
        let qs = queries
            .iter()
            .map(|q| inner.reg.query(q))
            .collect::<Result<Vec<_>>>()?;
        infos.extend(qs.iter().map(|q| q.table.clone()));
        inner.create(infos.clone()).await?;
        let mut stmts: Vec<(StmtKey, String)> = infos.iter().flat_map(|t| t.statements()).collect();
        stmts.extend(
            qs.iter()
                .map(|q| (StmtKey::Query(q.id), q.rendered.sql.clone())),
        );
        inner
            .pool
            .each(move |c| {
                for (k, sql) in &stmts {
                    if !c.has(k) {
                        c.stmt(*k, sql)?;
                    }
                }
                Ok(())
            })
            .await
    }

    async fn run(&self, op: Op<'_>) -> Result<Output> {
        let w = Arc::new(work(&self.inner.reg, op)?);
        self.inner.ready(&w).await?;
        let mut attempt = 0;
        loop {
            match self.inner.run_once(w.clone()).await {
                Err(e) if e.is_conflict() && attempt < AUTOCOMMIT_RETRIES => attempt += 1,
                r => return r,
            }
        }
    }

    async fn run_batch(&self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let ws = ops
            .into_iter()
            .map(|op| work(&self.inner.reg, op))
            .collect::<Result<Vec<_>>>()?;
        self.inner
            .create(ws.iter().map(|w| w.table().clone()).collect())
            .await?;
        let ws = Arc::new(ws);
        let read = ws.iter().all(Work::is_read);
        let mut attempt = 0;
        loop {
            let w = ws.clone();
            let r = if read {
                self.inner
                    .pool
                    .read(move |c| exec_batch(c, &w, "BEGIN DEFERRED"))
                    .await
            } else {
                self.inner
                    .pool
                    .write(move |c| exec_batch(c, &w, "BEGIN IMMEDIATE"))
                    .await
            };
            match r {
                Err(e) if e.is_conflict() && attempt < AUTOCOMMIT_RETRIES => attempt += 1,
                r => return r,
            }
        }
    }

    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn EngineTx>> {
        let read_only = opts.read_only;
        let chan = self
            .inner
            .pool
            .begin(read_only, move |c| {
                if read_only {
                    c.fixed("BEGIN DEFERRED")?;
                    // Take the snapshot now, not at the first read.
                    let stmt = c.stmt(StmtKey::Fixed(PIN_SNAPSHOT), PIN_SNAPSHOT)?;
                    count_of(stmt)?;
                    Ok(())
                } else {
                    c.fixed("BEGIN IMMEDIATE")
                }
            })
            .await?;
        Ok(Box::new(SqliteTx {
            chan,
            inner: self.inner.clone(),
            read_only,
        }))
    }

    async fn catalog(&self) -> Result<Vec<TableSchema>> {
        let raw: Vec<Vec<u8>> = self
            .inner
            .pool
            .read(|c| {
                let stmt = c.stmt(StmtKey::Fixed(CATALOG_ALL), CATALOG_ALL)?;
                let mut rows = stmt.raw_query();
                let mut out = Vec::new();
                while let Some(r) = rows.next().map_err(map_err)? {
                    out.push(r.get(0).map_err(map_err)?);
                }
                Ok(out)
            })
            .await?;
        raw.iter()
            .map(|b| {
                postcard::from_bytes(b).map_err(|e| Error::corrupted(format!("catalog entry: {e}")))
            })
            .collect()
    }

    async fn close(&self) -> Result<()> {
        self.inner.pool.close().await
    }

    async fn enable_changes(&self, table: &str) -> Result<()> {
        validate_identifier("table", table)?;
        let table = table.to_owned();
        self.inner.pool.write(move |c| cdc::enable(c, &table)).await
    }

    async fn read_changes(&self, table: &str, after: u64, limit: usize) -> Result<Vec<Change>> {
        validate_identifier("table", table)?;
        let table = table.to_owned();
        self.inner
            .pool
            .read(move |c| cdc::read(c, &table, after, limit))
            .await
    }

    async fn trim_changes(&self, table: &str, upto: u64) -> Result<u64> {
        validate_identifier("table", table)?;
        let table = table.to_owned();
        self.inner
            .pool
            .write(move |c| cdc::trim(c, &table, upto))
            .await
    }
}

const PIN_SNAPSHOT: &str = "SELECT count(*) FROM sqlite_schema";

/// An explicit transaction: its connection (the writer, or a reader for a read-only
/// transaction) serves only this transaction until commit or rollback. Dropping it
/// drops the channel, and the connection's thread rolls back.
struct SqliteTx {
    chan: Sender<TxJob>,
    inner: Arc<Inner>,
    read_only: bool,
}

impl SqliteTx {
    async fn prepare(&self, op: Op<'_>) -> Result<Work> {
        let w = work(&self.inner.reg, op)?;
        if self.read_only {
            if !w.is_read() {
                return Err(Error::invalid_input("write in a read-only transaction"));
            }
            // A reader cannot create tables: have the writer do it first.
            self.inner.ready(&w).await?;
        }
        Ok(w)
    }

    fn savepoint_pos(st: &TxState, name: &str) -> Result<usize> {
        st.savepoints
            .iter()
            .rposition(|n| n == name)
            .ok_or_else(|| Error::not_found(format!("no savepoint named {name}")))
    }
}

#[async_trait]
impl EngineTx for SqliteTx {
    async fn run(&mut self, op: Op<'_>) -> Result<Output> {
        let w = self.prepare(op).await?;
        tx_call(&self.chan, move |c, st| (exec_in_tx(c, st, &w), false)).await
    }

    async fn run_batch(&mut self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        let mut ws = Vec::with_capacity(ops.len());
        for op in ops {
            ws.push(self.prepare(op).await?);
        }
        tx_call(&self.chan, move |c, st| {
            let r = ws.iter().map(|w| exec_in_tx(c, st, w)).collect();
            (r, false)
        })
        .await
    }

    async fn savepoint(&mut self, name: &str) -> Result<()> {
        validate_identifier("savepoint", name)?;
        let name = name.to_owned();
        tx_call(&self.chan, move |c, st| {
            if st.aborted {
                return (Err(aborted()), false);
            }
            let r =
                c.db.execute_batch(&format!("SAVEPOINT {}", SqliteDialect.quote_ident(&name)))
                    .map_err(map_err);
            if r.is_ok() {
                st.savepoints.push(name);
            }
            (r, false)
        })
        .await
    }

    async fn rollback_to(&mut self, name: &str) -> Result<()> {
        validate_identifier("savepoint", name)?;
        let name = name.to_owned();
        tx_call(&self.chan, move |c, st| {
            let r = Self::savepoint_pos(st, &name).and_then(|i| {
                c.db.execute_batch(&format!("ROLLBACK TO {}", SqliteDialect.quote_ident(&name)))
                    .map_err(map_err)?;
                st.savepoints.truncate(i + 1);
                Ok(())
            });
            (r, false)
        })
        .await
    }

    async fn release(&mut self, name: &str) -> Result<()> {
        validate_identifier("savepoint", name)?;
        let name = name.to_owned();
        tx_call(&self.chan, move |c, st| {
            let r = Self::savepoint_pos(st, &name).and_then(|i| {
                c.db.execute_batch(&format!("RELEASE {}", SqliteDialect.quote_ident(&name)))
                    .map_err(map_err)?;
                st.savepoints.truncate(i);
                Ok(())
            });
            (r, false)
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
