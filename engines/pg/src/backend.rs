//! The [`Engine`] and [`EngineTx`] implementations: the registry of rendered SQL, the
//! translation of [`Op`]s into owned work, and the execution of that work on a pooled
//! connection.
//!
//! # Hot path
//! An op is looked up in the [`Registry`] (by `QueryId`, by table name, by scan shape:
//! hash lookups of SQL rendered once), checked and coerced, and its parameter values
//! are put in placeholder order. A pooled connection is checked out; the statement
//! prepared for the op on that connection is found by [`StmtKey`] (a hash lookup);
//! the values are encoded straight from the [`Value`]s in the binary format of the
//! statement's parameter types, and result rows are decoded straight into values by
//! the schema's column types. No SQL is built or parsed per call.
//!
//! # Atomicity
//! - `run` of one statement is autocommit. A write of several rows (`insert_many`,
//!   `get_many`, ...) runs `BEGIN`, the statements pipelined (up to `pipeline_depth`
//!   in flight), `COMMIT`.
//! - `run_batch` on the engine: one transaction, every op pipelined on one connection
//!   (`BEGIN` goes out with the first ops), results in order. A batch of reads only
//!   runs `REPEATABLE READ READ ONLY`: one snapshot.
//! - Inside an explicit transaction, every op runs inside `SAVEPOINT _dl_op` (sent in
//!   the same round trip as the op and its `RELEASE`), rolled back to on error, so a
//!   failed op leaves no trace and the transaction stays usable.
//! - Autocommit ops and engine batches re-run up to 3 times on `Conflict`
//!   (serialization failure or deadlock), as in the other engines.

use crate::cdc;
use crate::config::PgOptions;
use crate::core::{Conn, PgConn, Pool, StmtDef, StmtKey, TableOp, mark_lost, pipeline};
use crate::error::map_err;
use crate::render::PgDialect;
use crate::value::{PgValue, pg_type, read_row};
use async_trait::async_trait;
use datalayer_core::{
    Capability, Change, ColumnType, Engine, EngineTx, Error, ErrorKind, Isolation, Limit, Op,
    Output, QueryDef, QueryId, Result, Row, ScanRequest, TableSchema, TxOptions, Value, WriteMode,
    validate_identifier,
};
use datalayer_sql::{
    Bind, Dialect, OutputShape, RenderedQuery, RenderedScan, ScanBind, ScanShape, TableSql,
    render_ddl, render_query, render_scan, render_table,
};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

/// The catalog: one row per registered table, its [`TableSchema`] as postcard bytes.
pub(crate) const CATALOG_DDL: &str =
    "CREATE TABLE IF NOT EXISTS _dl_catalog (name TEXT PRIMARY KEY, schema BYTEA NOT NULL)";
const CATALOG_GET: &str = "SELECT schema FROM _dl_catalog WHERE name = $1";
const CATALOG_PUT: &str = "INSERT INTO _dl_catalog (name, schema) VALUES ($1, $2)";
const CATALOG_ALL: &str = "SELECT schema FROM _dl_catalog ORDER BY name";
/// Serializes DDL of one schema across engines and processes:
/// `pg_advisory_xact_lock(DDL_LOCK, hashtext(current_schema()))`.
pub(crate) const DDL_LOCK: &str =
    "SELECT pg_advisory_xact_lock(4242001, hashtext(coalesce(current_schema(), '')))";
/// Autocommit ops re-run this many times on a retryable `Conflict`.
const AUTOCOMMIT_RETRIES: u32 = 3;

fn types_of(t: &TableSchema, cols: &[usize]) -> Arc<[Type]> {
    cols.iter().map(|&c| pg_type(t.columns[c].ty)).collect()
}

// ---- registry -------------------------------------------------------------------------------

/// A keyset scan rendered for one shape, with its statement.
pub(crate) struct ScanSql {
    rendered: RenderedScan,
    def: StmtDef,
}

/// One table: its schema and everything rendered from it.
pub(crate) struct TableInfo {
    id: u32,
    pub(crate) schema: TableSchema,
    addr: usize,
    ddl: Vec<String>,
    catalog: Vec<u8>,
    types: Vec<ColumnType>,
    /// The repository statements, indexed by `TableOp as usize`.
    ops: Vec<StmtDef>,
    created: AtomicBool,
    scans: RwLock<HashMap<ScanShape, Arc<ScanSql>>>,
}

const TABLE_OPS: [TableOp; 6] = [
    TableOp::Insert,
    TableOp::Upsert,
    TableOp::Update,
    TableOp::Delete,
    TableOp::Get,
    TableOp::Count,
];

impl TableInfo {
    fn new(id: u32, t: &TableSchema) -> Result<TableInfo> {
        let d = PgDialect;
        let ddl = render_ddl(t, &d)?;
        let sql: TableSql = render_table(t, &d);
        let all: Vec<usize> = (0..t.columns.len()).collect();
        let row_types = types_of(t, &all);
        let key_types = types_of(t, &t.primary_key);
        let ops = TABLE_OPS
            .iter()
            .map(|&op| {
                let (s, types) = match op {
                    TableOp::Insert => (&sql.insert, row_types.clone()),
                    TableOp::Upsert => (&sql.upsert, row_types.clone()),
                    TableOp::Update => (&sql.update, row_types.clone()),
                    TableOp::Delete => (&sql.delete, key_types.clone()),
                    TableOp::Get => (&sql.get, key_types.clone()),
                    TableOp::Count => (&sql.count, Arc::from(Vec::new())),
                };
                StmtDef {
                    key: StmtKey::Table(id, op),
                    sql: Arc::from(s.as_str()),
                    types,
                }
            })
            .collect();
        Ok(TableInfo {
            id,
            schema: t.clone(),
            addr: std::ptr::from_ref(t) as usize,
            ddl,
            catalog: postcard::to_allocvec(t)
                .map_err(|e| Error::engine("postcard", e.to_string()))?,
            types: t.columns.iter().map(|c| c.ty).collect(),
            ops,
            created: AtomicBool::new(false),
            scans: RwLock::default(),
        })
    }

    fn op(&self, op: TableOp) -> &StmtDef {
        &self.ops[op as usize]
    }

    fn scan(&self, shape: ScanShape) -> Result<Arc<ScanSql>> {
        if let Some(s) = self.scans.read().get(&shape) {
            return Ok(s.clone());
        }
        let t = &self.schema;
        let rendered = render_scan(t, &shape, &PgDialect)?;
        let mut cols: Vec<usize> = match shape.index {
            Some(i) => t.indexes[i].columns.clone(),
            None => Vec::new(),
        };
        cols.extend(t.primary_key.iter().copied());
        let next = cols.get(usize::from(shape.prefix_len)).copied();
        let types = rendered
            .binds
            .iter()
            .map(|b| match *b {
                ScanBind::Prefix(i) | ScanBind::After(i) => pg_type(t.columns[cols[i]].ty),
                ScanBind::Lower | ScanBind::Upper => {
                    next.map_or(Type::INT8, |c| pg_type(t.columns[c].ty))
                }
                ScanBind::Limit => Type::INT8,
            })
            .collect();
        let def = StmtDef {
            key: StmtKey::Scan(self.id, shape),
            sql: Arc::from(rendered.sql.as_str()),
            types,
        };
        let s = Arc::new(ScanSql { rendered, def });
        Ok(self.scans.write().entry(shape).or_insert(s).clone())
    }
}

/// One registered query and its SQL.
pub(crate) struct QueryInfo {
    name: String,
    params: usize,
    limit: Option<Limit>,
    table: Arc<TableInfo>,
    rendered: RenderedQuery,
    /// Types of the result columns (for `OutputShape::Rows`).
    types: Vec<ColumnType>,
    def: StmtDef,
}

/// Everything rendered, shared by every connection of the engine.
#[derive(Default)]
pub(crate) struct Registry {
    tables: RwLock<HashMap<String, Arc<TableInfo>>>,
    queries: RwLock<HashMap<QueryId, Arc<QueryInfo>>>,
    next_id: AtomicU32,
}

fn different(t: &TableSchema) -> Error {
    Error::invalid_input(format!(
        "table {} is registered with a different schema",
        t.name
    ))
}

impl Registry {
    /// The table `t`, rendering it on first sight.
    fn table(&self, t: &TableSchema) -> Result<Arc<TableInfo>> {
        if let Some(info) = self.tables.read().get(t.name.as_str()) {
            if info.addr == std::ptr::from_ref(t) as usize || info.schema == *t {
                return Ok(info.clone());
            }
            return Err(different(t));
        }
        let info = Arc::new(TableInfo::new(
            self.next_id.fetch_add(1, Ordering::Relaxed),
            t,
        )?);
        let got = self
            .tables
            .write()
            .entry(t.name.clone())
            .or_insert(info)
            .clone();
        if got.schema != *t {
            return Err(different(t));
        }
        Ok(got)
    }

    /// The query `q`, rendering it on first sight.
    fn query(&self, q: &QueryDef) -> Result<Arc<QueryInfo>> {
        if let Some(i) = self.queries.read().get(&q.id) {
            return Ok(i.clone());
        }
        let table = self.table(q.table)?;
        let rendered = render_query(q, &PgDialect)?;
        let types = match &rendered.output {
            OutputShape::Rows(cols) => cols.iter().map(|&c| q.table.columns[c].ty).collect(),
            _ => Vec::new(),
        };
        let param_types = rendered
            .binds
            .iter()
            .map(|b| match *b {
                Bind::Param(i) => q.params.get(i).map_or(Type::INT8, |p| pg_type(p.ty)),
                Bind::PrefixPattern(_) => Type::TEXT,
            })
            .collect();
        let def = StmtDef {
            key: StmtKey::Query(q.id),
            sql: Arc::from(rendered.sql.as_str()),
            types: param_types,
        };
        let info = Arc::new(QueryInfo {
            name: q.name.clone(),
            params: q.params.len(),
            limit: q.limit,
            table,
            rendered,
            types,
            def,
        });
        Ok(self.queries.write().entry(q.id).or_insert(info).clone())
    }
}

// ---- work -------------------------------------------------------------------------------------

/// An [`Op`] made owned, checked and coerced, with its values in placeholder order.
pub(crate) enum Work {
    Query {
        q: Arc<QueryInfo>,
        values: Vec<Value>,
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
        scan: Arc<ScanSql>,
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

    /// The one statement this work runs (once, or once per row/key).
    fn def(&self) -> &StmtDef {
        match self {
            Work::Query { q, .. } => &q.def,
            Work::Insert { t, upsert, .. } => t.op(if *upsert {
                TableOp::Upsert
            } else {
                TableOp::Insert
            }),
            Work::Update { t, .. } => t.op(TableOp::Update),
            Work::Delete { t, .. } => t.op(TableOp::Delete),
            Work::Get { t, .. } => t.op(TableOp::Get),
            Work::Scan { scan, .. } => &scan.def,
            Work::Count { t } => t.op(TableOp::Count),
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
    let values = scan.rendered.bind_values(&req);
    drop(req);
    Ok(Work::Scan {
        t: info.clone(),
        scan,
        values,
    })
}

/// Turns an op into work: registry lookups, arity checks, coercion to column types,
/// parameter values in placeholder order.
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
            let values = q
                .rendered
                .binds
                .iter()
                .map(|b| match *b {
                    Bind::Param(i) => params[i].clone(),
                    Bind::PrefixPattern(i) => match &params[i] {
                        Value::String(s) => Value::String(PgDialect.prefix_pattern(s)),
                        v => v.clone(),
                    },
                })
                .collect();
            Work::Query { q, values }
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
        _ => return Err(Error::unsupported("postgres", format!("op {}", op.name()))),
    })
}

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
async fn execute(client: &Client, stmt: &Statement, vals: &[Value]) -> Result<u64> {
    let p: Vec<PgValue<'_>> = vals.iter().map(PgValue).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = p.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    client.execute(stmt, &refs).await.map_err(map_err)
}

fn count_of(rows: &[tokio_postgres::Row]) -> Result<u64> {
    let n: i64 = match rows.first() {
        Some(r) => r.try_get(0).map_err(map_err)?,
        None => 0,
    };
    Ok(n.max(0) as u64)
}

/// Runs `stmt` once per value list, up to `depth` in flight; affected counts in order.
async fn execute_each(
    client: &Client,
    stmt: &Statement,
    rows: &[Row],
    depth: usize,
) -> Result<Vec<u64>> {
    let mut futs = Vec::with_capacity(rows.len());
    for r in rows {
        futs.push(execute(client, stmt, r));
    }
    pipeline(futs, depth).await
}

/// Runs one piece of work on `client` with its prepared `stmt` (no transaction
/// handling). A single-statement work sends its statement on the first poll, so
/// callers can pipeline other statements around it.
async fn exec(client: &Client, stmt: &Statement, w: &Work, depth: usize) -> Result<Output> {
    match w {
        Work::Query { q, values } => match &q.rendered.output {
            OutputShape::Rows(_) => {
                let rows = query(client, stmt, values).await?;
                Ok(Output::Rows(
                    rows.iter()
                        .map(|r| read_row(r, &q.types))
                        .collect::<Result<_>>()?,
                ))
            }
            OutputShape::Count => Ok(Output::Count(count_of(
                &query(client, stmt, values).await?,
            )?)),
            OutputShape::Changes => Ok(Output::Count(execute(client, stmt, values).await?)),
        },
        Work::Insert { rows, .. } => {
            execute_each(client, stmt, rows, depth).await?;
            Ok(Output::Count(rows.len() as u64))
        }
        Work::Update { rows, .. } => Ok(Output::Count(
            execute_each(client, stmt, rows, depth).await?.iter().sum(),
        )),
        Work::Delete { keys, .. } => Ok(Output::Count(
            execute_each(client, stmt, keys, depth).await?.iter().sum(),
        )),
        Work::Get { t, keys } => {
            let mut futs = Vec::with_capacity(keys.len());
            for k in keys {
                futs.push(query(client, stmt, k));
            }
            let found = pipeline(futs, depth).await?;
            Ok(Output::Optional(
                found
                    .iter()
                    .map(|rows| rows.first().map(|r| read_row(r, &t.types)).transpose())
                    .collect::<Result<_>>()?,
            ))
        }
        Work::Scan { t, values, .. } => {
            let rows = query(client, stmt, values).await?;
            Ok(Output::Rows(
                rows.iter()
                    .map(|r| read_row(r, &t.types))
                    .collect::<Result<_>>()?,
            ))
        }
        Work::Count { .. } => Ok(Output::Count(count_of(&query(client, stmt, &[]).await?)?)),
    }
}

/// The prepared statement of `w` on `c`.
async fn stmt_of(c: &mut PgConn, w: &Work) -> Result<Statement> {
    let d = w.def();
    c.stmt(d.key, &d.sql, &d.types).await
}

/// Runs works in order, pipelined (at most `depth` in flight); outputs in order.
async fn exec_all(
    client: &Client,
    items: &[(&Work, Statement)],
    depth: usize,
) -> Result<Vec<Output>> {
    let mut futs = Vec::with_capacity(items.len());
    for (w, s) in items {
        futs.push(exec(client, s, w, depth));
    }
    pipeline(futs, depth).await
}

/// Creates `t` (if missing) and its catalog entry, or checks the stored schema, in
/// one transaction holding the schema's DDL lock.
async fn ensure_tables(c: &mut PgConn, ts: &[Arc<TableInfo>]) -> Result<()> {
    let get = c
        .stmt(StmtKey::Fixed(CATALOG_GET), CATALOG_GET, &[Type::TEXT])
        .await?;
    let put = c
        .stmt(
            StmtKey::Fixed(CATALOG_PUT),
            CATALOG_PUT,
            &[Type::TEXT, Type::BYTEA],
        )
        .await?;
    let PgConn {
        client, tainted, ..
    } = c;
    let client: &Client = client;
    let body = async {
        client.batch_execute(DDL_LOCK).await.map_err(map_err)?;
        for t in ts {
            let name = Value::String(t.schema.name.clone());
            let stored = query(client, &get, std::slice::from_ref(&name)).await?;
            let stored: Option<Vec<u8>> = match stored.first() {
                Some(r) => Some(r.try_get(0).map_err(map_err)?),
                None => None,
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
                client.batch_execute(s).await.map_err(map_err)?;
            }
            if stored.is_none() {
                execute(client, &put, &[name, Value::Bytes(t.catalog.clone())]).await?;
            }
        }
        Ok(())
    };
    PgConn::atomically(client, tainted, "BEGIN", body).await
}

// ---- the engine -------------------------------------------------------------------------------

/// Shared state of one engine: the pool and the registry.
pub(crate) struct Inner {
    pub(crate) pool: Pool,
    reg: Registry,
    pub(crate) options: Arc<PgOptions>,
}

impl Inner {
    pub(crate) fn new(options: Arc<PgOptions>) -> Result<Inner> {
        Ok(Inner {
            pool: Pool::new(options.clone())?,
            reg: Registry::default(),
            options,
        })
    }

    /// Creates the schema (if the options name one) and the catalog table.
    pub(crate) async fn init(&self) -> Result<()> {
        let mut c = self.pool.get().await?;
        let c = &mut *c;
        if let Some(s) = &self.options.schema {
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
        let body = async {
            client.batch_execute(DDL_LOCK).await.map_err(map_err)?;
            client.batch_execute(CATALOG_DDL).await.map_err(map_err)
        };
        PgConn::atomically(client, tainted, "BEGIN", body).await
    }

    /// Creates the tables not yet known to exist, in one transaction.
    async fn create(&self, tables: Vec<Arc<TableInfo>>) -> Result<()> {
        let mut missing: Vec<Arc<TableInfo>> = Vec::new();
        for t in tables {
            if !t.created.load(Ordering::Acquire) && !missing.iter().any(|m| m.id == t.id) {
                missing.push(t);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut c = self.pool.get().await?;
        if let Err(e) = ensure_tables(&mut c, &missing).await {
            return Err(c.lost(e));
        }
        for t in &missing {
            t.created.store(true, Ordering::Release);
        }
        self.pool
            .eager
            .add(missing.iter().flat_map(|t| t.ops.iter().cloned()).collect());
        Ok(())
    }

    async fn ready(&self, w: &Work) -> Result<()> {
        if w.table().created.load(Ordering::Acquire) {
            return Ok(());
        }
        self.create(vec![w.table().clone()]).await
    }

    async fn run_once(&self, w: &Work) -> Result<Output> {
        let mut c = self.pool.get().await?;
        let c = &mut *c;
        let stmt = stmt_of(c, w).await?;
        let depth = self.pool.depth;
        let PgConn {
            client, tainted, ..
        } = &mut *c;
        let client: &Client = client;
        let r = if w.is_multi() {
            let begin = if w.is_read() {
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
            } else {
                "BEGIN"
            };
            PgConn::atomically(client, tainted, begin, exec(client, &stmt, w, depth)).await
        } else {
            exec(client, &stmt, w, depth).await
        };
        r.map_err(|e| c.lost(e))
    }

    async fn batch_once(&self, ws: &[Work]) -> Result<Vec<Output>> {
        let mut c = self.pool.get().await?;
        let c = &mut *c;
        let mut items = Vec::with_capacity(ws.len());
        for w in ws {
            items.push((w, stmt_of(c, w).await?));
        }
        let begin = if ws.iter().all(Work::is_read) {
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        } else {
            "BEGIN"
        };
        let depth = self.pool.depth;
        let PgConn {
            client, tainted, ..
        } = &mut *c;
        let client: &Client = client;
        let r = PgConn::atomically(client, tainted, begin, exec_all(client, &items, depth)).await;
        r.map_err(|e| c.lost(e))
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

#[async_trait]
impl Engine for crate::PgEngine {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn capability(&self) -> Capability {
        capability(self.inner.pool.depth)
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
        inner.create(infos).await?;
        inner
            .pool
            .eager
            .add(qs.iter().map(|q| q.def.clone()).collect());
        // Prepare on one connection now, so that a query that does not prepare (bad
        // SQL for this server) fails at registration rather than at first use.
        drop(inner.pool.get().await?);
        Ok(())
    }

    async fn run(&self, op: Op<'_>) -> Result<Output> {
        let w = work(&self.inner.reg, op)?;
        self.inner.ready(&w).await?;
        let mut attempt = 0;
        loop {
            match self.inner.run_once(&w).await {
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
        let mut attempt = 0;
        loop {
            match self.inner.batch_once(&ws).await {
                Err(e) if e.is_conflict() && attempt < AUTOCOMMIT_RETRIES => attempt += 1,
                r => return r,
            }
        }
    }

    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn EngineTx>> {
        let mut c = self.inner.pool.get().await?;
        c.tainted = true;
        if let Err(e) = c.client.batch_execute(&begin_sql(opts)).await {
            return Err(c.lost(map_err(e)));
        }
        Ok(Box::new(PgTx {
            conn: Some(c),
            inner: self.inner.clone(),
            read_only: opts.read_only,
            savepoints: Vec::new(),
            broken: None,
        }))
    }

    async fn catalog(&self) -> Result<Vec<TableSchema>> {
        let mut c = self.inner.pool.get().await?;
        let stmt = c
            .stmt(StmtKey::Fixed(CATALOG_ALL), CATALOG_ALL, &[])
            .await?;
        let rows = query(&c.client, &stmt, &[]).await.map_err(|e| c.lost(e))?;
        rows.iter()
            .map(|r| {
                let b: Vec<u8> = r.try_get(0).map_err(map_err)?;
                postcard::from_bytes(&b)
                    .map_err(|e| Error::corrupted(format!("catalog entry: {e}")))
            })
            .collect()
    }

    async fn close(&self) -> Result<()> {
        self.inner.pool.close();
        Ok(())
    }

    async fn enable_changes(&self, table: &str) -> Result<()> {
        validate_identifier("table", table)?;
        let mut c = self.inner.pool.get().await?;
        cdc::enable(&mut c, table).await.map_err(|e| c.lost(e))
    }

    async fn read_changes(&self, table: &str, after: u64, limit: usize) -> Result<Vec<Change>> {
        validate_identifier("table", table)?;
        let mut c = self.inner.pool.get().await?;
        cdc::read(&mut c, table, after, limit)
            .await
            .map_err(|e| c.lost(e))
    }

    async fn trim_changes(&self, table: &str, upto: u64) -> Result<u64> {
        validate_identifier("table", table)?;
        let mut c = self.inner.pool.get().await?;
        cdc::trim(&mut c, table, upto).await.map_err(|e| c.lost(e))
    }

    fn extension(&self, ty: std::any::TypeId) -> Option<Box<dyn std::any::Any + Send>> {
        type Driver = Arc<dyn datalayer_outbox::Driver>;
        (ty == std::any::TypeId::of::<Driver>()).then(|| {
            let d: Driver = Arc::new(crate::outbox::PgDriver::new(self));
            Box::new(d) as Box<dyn std::any::Any + Send>
        })
    }
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
    inner: Arc<Inner>,
    read_only: bool,
    /// User savepoints, oldest first.
    savepoints: Vec<String>,
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

    fn savepoint_pos(&self, name: &str) -> Result<usize> {
        self.savepoints
            .iter()
            .rposition(|n| n == name)
            .ok_or_else(|| Error::not_found(format!("no savepoint named {name}")))
    }

    async fn simple(&mut self, sql: &str) -> Result<()> {
        let c = self.conn()?;
        let r = c.client.batch_execute(sql).await.map_err(map_err);
        r.map_err(|e| c.lost(e))
    }

    /// Runs works inside `SAVEPOINT _dl_op` (pipelined with them), rolled back to on
    /// error so the transaction stays usable.
    async fn run_works(&mut self, ws: &[Work]) -> Result<Vec<Output>> {
        for w in ws {
            if self.read_only && !w.is_read() {
                return Err(Error::invalid_input("write in a read-only transaction"));
            }
            // Tables first seen inside a transaction are created on another connection.
            self.inner.ready(w).await?;
        }
        let depth = self.inner.pool.depth;
        let c = self.conn()?;
        let mut items = Vec::with_capacity(ws.len());
        for w in ws {
            items.push((w, stmt_of(c, w).await.map_err(|e| c.lost(e))?));
        }
        let PgConn {
            client, tainted, ..
        } = c;
        let client: &Client = client;
        let single = items.len() == 1 && !items[0].0.is_multi();
        let r = if single {
            // One round trip: SAVEPOINT, the statement and RELEASE are pipelined.
            let (sp, r, rel) = futures::join!(
                client.batch_execute("SAVEPOINT _dl_op"),
                exec(client, &items[0].1, items[0].0, depth),
                client.batch_execute("RELEASE SAVEPOINT _dl_op"),
            );
            match (sp.map_err(map_err), r, rel.map_err(map_err)) {
                (Ok(()), Ok(out), Ok(())) => Ok(vec![out]),
                (_, Err(e), _) | (Err(e), Ok(_), _) | (Ok(()), Ok(_), Err(e)) => Err(e),
            }
        } else {
            let (sp, r) = futures::join!(
                client.batch_execute("SAVEPOINT _dl_op"),
                exec_all(client, &items, depth),
            );
            match (sp.map_err(map_err), r) {
                (Ok(()), Ok(out)) => client
                    .batch_execute("RELEASE SAVEPOINT _dl_op")
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
                .batch_execute("ROLLBACK TO SAVEPOINT _dl_op; RELEASE SAVEPOINT _dl_op")
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
impl EngineTx for PgTx {
    async fn run(&mut self, op: Op<'_>) -> Result<Output> {
        let w = work(&self.inner.reg, op)?;
        let mut out = self.run_works(std::slice::from_ref(&w)).await?;
        out.pop()
            .ok_or_else(|| Error::engine("internal", "no output"))
    }

    async fn run_batch(&mut self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let ws = ops
            .into_iter()
            .map(|op| work(&self.inner.reg, op))
            .collect::<Result<Vec<_>>>()?;
        self.run_works(&ws).await
    }

    async fn savepoint(&mut self, name: &str) -> Result<()> {
        validate_identifier("savepoint", name)?;
        self.simple(&format!("SAVEPOINT {}", PgDialect.quote_ident(name)))
            .await?;
        self.savepoints.push(name.to_owned());
        Ok(())
    }

    async fn rollback_to(&mut self, name: &str) -> Result<()> {
        validate_identifier("savepoint", name)?;
        let i = self.savepoint_pos(name)?;
        self.simple(&format!(
            "ROLLBACK TO SAVEPOINT {}",
            PgDialect.quote_ident(name)
        ))
        .await?;
        self.savepoints.truncate(i + 1);
        Ok(())
    }

    async fn release(&mut self, name: &str) -> Result<()> {
        validate_identifier("savepoint", name)?;
        let i = self.savepoint_pos(name)?;
        self.simple(&format!(
            "RELEASE SAVEPOINT {}",
            PgDialect.quote_ident(name)
        ))
        .await?;
        self.savepoints.truncate(i);
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.finish("COMMIT").await
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        self.finish("ROLLBACK").await
    }
}
