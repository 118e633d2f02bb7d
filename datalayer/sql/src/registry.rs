//! The registry: every table and query of an engine rendered to SQL once, with the
//! statement keys connections cache prepared statements under.
//!
//! Lookups are by table name, by [`QueryId`] and by [`ScanShape`]: hash lookups of SQL
//! rendered on first sight, shared by every connection of the engine.

use crate::{
    Bind, Dialect, OutputShape, RenderedQuery, RenderedScan, ScanBind, ScanShape, render_ddl,
    render_query, render_scan, render_table,
};
use datalayer_core::{ColumnType, QueryDef, QueryId, Result, TableSchema};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// A repository statement of one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableOp {
    /// `INSERT` one row.
    Insert,
    /// `INSERT ... ON CONFLICT (primary key) DO UPDATE` one row.
    Upsert,
    /// `UPDATE` one row by primary key.
    Update,
    /// `DELETE` one row by primary key.
    Delete,
    /// `SELECT` one row by primary key.
    Get,
    /// `SELECT count(*)` of the table.
    Count,
    /// `INSERT ... ON CONFLICT DO NOTHING` one row (a conflict reports 0 rows).
    InsertOrNothing,
}

const TABLE_OPS: [TableOp; 7] = [
    TableOp::Insert,
    TableOp::Upsert,
    TableOp::Update,
    TableOp::Delete,
    TableOp::Get,
    TableOp::Count,
    TableOp::InsertOrNothing,
];

/// What a prepared statement is: the key a connection caches it under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StmtKey {
    /// A registered query.
    Query(QueryId),
    /// A repository statement of the table with this registry id.
    Table(u32, TableOp),
    /// A keyset scan of the table with this registry id.
    Scan(u32, ScanShape),
    /// The bulk insert (`false`) or upsert (`true`) of the table with this registry id
    /// ([`TableInfo::bulk`]).
    Bulk(u32, bool),
    /// Fixed SQL of the executor or the engine (catalog, change log, `BEGIN`).
    Fixed(&'static str),
}

/// A statement to prepare: its key, its SQL, and the type of each placeholder (in
/// placeholder order; PostgreSQL prepares with them, SQLite ignores them).
#[derive(Clone, Debug)]
pub struct StmtDef {
    /// The cache key.
    pub key: StmtKey,
    /// The SQL text.
    pub sql: Arc<str>,
    /// Placeholder types: `$1` is `params[0]`.
    pub params: Arc<[ColumnType]>,
}

impl StmtDef {
    /// A fixed statement, keyed by its own text.
    pub fn fixed(sql: &'static str, params: &[ColumnType]) -> StmtDef {
        StmtDef {
            key: StmtKey::Fixed(sql),
            sql: Arc::from(sql),
            params: Arc::from(params),
        }
    }
}

/// A keyset scan rendered for one shape, with its statement.
pub struct ScanSql {
    /// The SQL and the order its values bind in.
    pub rendered: RenderedScan,
    /// The statement.
    pub def: StmtDef,
}

/// One table: its schema and everything rendered from it.
pub struct TableInfo {
    id: u32,
    /// The schema as first registered.
    pub schema: TableSchema,
    /// Address of the schema value first registered (fast identity check).
    addr: usize,
    /// `CREATE TABLE` and `CREATE INDEX` statements.
    pub(crate) ddl: Vec<String>,
    /// The catalog entry ([`TableSchema::catalog_bytes`]).
    pub(crate) catalog: Vec<u8>,
    /// The column types, in column order (to decode rows).
    pub types: Arc<[ColumnType]>,
    /// The repository statements, indexed by `TableOp as usize`.
    ops: Vec<StmtDef>,
    /// The bulk insert and upsert, where the dialect has a bulk row source.
    bulk: Option<[StmtDef; 2]>,
    /// The table and its catalog entry are known to exist (created or checked).
    created: AtomicBool,
    scans: RwLock<HashMap<ScanShape, Arc<ScanSql>>>,
}

fn types_of(t: &TableSchema, cols: &[usize]) -> Arc<[ColumnType]> {
    cols.iter().map(|&c| t.columns[c].ty).collect()
}

impl TableInfo {
    fn new(id: u32, t: &TableSchema, d: &dyn Dialect) -> Result<TableInfo> {
        let ddl = render_ddl(t, d)?;
        let sql = render_table(t, d);
        let all: Vec<usize> = (0..t.columns.len()).collect();
        let row = types_of(t, &all);
        let key = types_of(t, &t.primary_key);
        let ops = TABLE_OPS
            .iter()
            .map(|&op| {
                let (s, params) = match op {
                    TableOp::Insert => (&sql.insert, row.clone()),
                    TableOp::Upsert => (&sql.upsert, row.clone()),
                    TableOp::Update => (&sql.update, row.clone()),
                    TableOp::Delete => (&sql.delete, key.clone()),
                    TableOp::Get => (&sql.get, key.clone()),
                    TableOp::Count => (&sql.count, Arc::from(Vec::new())),
                    TableOp::InsertOrNothing => (&sql.insert_or_nothing, row.clone()),
                };
                StmtDef {
                    key: StmtKey::Table(id, op),
                    sql: Arc::from(s.as_str()),
                    params,
                }
            })
            .collect();
        // Bulk statements take one array per column; their types come from the casts
        // in the SQL, so no parameter types are given.
        let bulk = sql.bulk.as_ref().map(|[insert, upsert]| {
            [(insert, false), (upsert, true)].map(|(s, up)| StmtDef {
                key: StmtKey::Bulk(id, up),
                sql: Arc::from(s.as_str()),
                params: Arc::from(Vec::new()),
            })
        });
        Ok(TableInfo {
            id,
            bulk,
            schema: t.clone(),
            addr: std::ptr::from_ref(t) as usize,
            ddl,
            catalog: t.catalog_bytes()?,
            types: row,
            ops,
            created: AtomicBool::new(false),
            scans: RwLock::default(),
        })
    }

    /// The repository statement `op`.
    pub fn op(&self, op: TableOp) -> &StmtDef {
        &self.ops[op as usize]
    }

    /// The bulk insert (`upsert` false) or upsert of many rows in one statement, one
    /// array parameter per column, where the dialect has a bulk row source
    /// ([`crate::Dialect::bulk_rows_source`]).
    pub fn bulk(&self, upsert: bool) -> Option<&StmtDef> {
        self.bulk.as_ref().map(|b| &b[usize::from(upsert)])
    }

    /// Every repository statement (to prepare on each connection).
    pub fn ops(&self) -> &[StmtDef] {
        &self.ops
    }

    /// Whether the table is known to exist with its catalog entry.
    pub fn created(&self) -> bool {
        self.created.load(Ordering::Acquire)
    }

    pub(crate) fn set_created(&self) {
        self.created.store(true, Ordering::Release);
    }

    /// The scan of `shape`, rendering it on first sight.
    ///
    /// # Errors
    /// `InvalidInput` for a shape the table cannot serve (index out of range).
    pub(crate) fn scan(&self, shape: ScanShape, d: &dyn Dialect) -> Result<Arc<ScanSql>> {
        if let Some(s) = self.scans.read().get(&shape) {
            return Ok(s.clone());
        }
        let t = &self.schema;
        let rendered = render_scan(t, &shape, d)?;
        let mut cols: Vec<usize> = match shape.index {
            Some(i) => t.indexes[i].columns.clone(),
            None => Vec::new(),
        };
        cols.extend(t.primary_key.iter().copied());
        let next = cols.get(usize::from(shape.prefix_len)).copied();
        let params = rendered
            .binds
            .iter()
            .map(|b| match *b {
                ScanBind::Prefix(i) | ScanBind::After(i) => t.columns[cols[i]].ty,
                ScanBind::Lower | ScanBind::Upper => {
                    next.map_or(ColumnType::I64, |c| t.columns[c].ty)
                }
                ScanBind::Limit => ColumnType::I64,
            })
            .collect();
        let def = StmtDef {
            key: StmtKey::Scan(self.id, shape),
            sql: Arc::from(rendered.sql.as_str()),
            params,
        };
        let s = Arc::new(ScanSql { rendered, def });
        Ok(self.scans.write().entry(shape).or_insert(s).clone())
    }
}

/// One registered query and its SQL.
pub struct QueryInfo {
    /// The query's table.
    pub table: Arc<TableInfo>,
    /// The SQL and the order parameters bind in.
    pub rendered: RenderedQuery,
    /// Types of the result columns (for [`OutputShape::Rows`]).
    pub types: Arc<[ColumnType]>,
    /// The statement.
    pub def: StmtDef,
}

/// Everything rendered for one engine, shared by all its connections.
pub struct Registry {
    dialect: &'static dyn Dialect,
    tables: RwLock<HashMap<String, Arc<TableInfo>>>,
    queries: RwLock<HashMap<QueryId, Arc<QueryInfo>>>,
    next_id: AtomicU32,
}

impl Registry {
    /// An empty registry rendering with `dialect`.
    pub fn new(dialect: &'static dyn Dialect) -> Registry {
        Registry {
            dialect,
            tables: RwLock::default(),
            queries: RwLock::default(),
            next_id: AtomicU32::new(0),
        }
    }

    /// The dialect SQL is rendered in.
    pub fn dialect(&self) -> &'static dyn Dialect {
        self.dialect
    }

    /// The table `t`, rendering it on first sight.
    ///
    /// A declaration that differs from the one registered under the same name is
    /// returned unregistered: its creation, which checks it against the stored schema,
    /// decides which of them is current ([`Registry::adopt`]), so that after a schema
    /// change a stale declaration cannot hold the name from the current one.
    ///
    /// # Errors
    /// `InvalidInput` for a schema that fails validation.
    pub fn table(&self, t: &TableSchema) -> Result<Arc<TableInfo>> {
        if let Some(info) = self.tables.read().get(t.name.as_str()) {
            if info.addr == std::ptr::from_ref(t) as usize || info.schema == *t {
                return Ok(info.clone());
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            return Ok(Arc::new(TableInfo::new(id, t, self.dialect)?));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(TableInfo::new(id, t, self.dialect)?);
        let got = self
            .tables
            .write()
            .entry(t.name.clone())
            .or_insert(info.clone())
            .clone();
        // Another declaration registered meanwhile: as above.
        Ok(if got.schema == *t { got } else { info })
    }

    /// Forgets the table named `name` (after its schema was altered), so that the
    /// next [`Registry::table`] renders and checks it again. Queries already rendered
    /// against the old schema keep their statements.
    pub fn forget(&self, name: &str) {
        self.tables.write().remove(name);
    }

    /// Registers `info`, created (its schema is the stored one), under its name in
    /// place of whatever is held there.
    pub fn adopt(&self, info: &Arc<TableInfo>) {
        let mut tables = self.tables.write();
        let held = tables.get(info.schema.name.as_str());
        if !held.is_some_and(|h| Arc::ptr_eq(h, info)) {
            tables.insert(info.schema.name.clone(), info.clone());
        }
    }

    /// Forgets `info` if it is still the one registered under its name: a declaration
    /// whose creation or check failed (a stale one, after its table was altered)
    /// must not keep the name from the stored one.
    pub fn forget_failed(&self, info: &Arc<TableInfo>) {
        let mut tables = self.tables.write();
        if tables
            .get(info.schema.name.as_str())
            .is_some_and(|held| Arc::ptr_eq(held, info))
        {
            tables.remove(info.schema.name.as_str());
        }
    }

    /// The query `q`, rendering it on first sight.
    ///
    /// # Errors
    /// As [`Registry::table`] for its table; `InvalidInput` for a query the dialect
    /// cannot render.
    pub fn query(&self, q: &QueryDef) -> Result<Arc<QueryInfo>> {
        if let Some(i) = self.queries.read().get(&q.id) {
            return Ok(i.clone());
        }
        let table = self.table(q.table)?;
        let rendered = render_query(q, self.dialect)?;
        let types = match &rendered.output {
            OutputShape::Rows(cols) => cols.iter().map(|&c| q.table.columns[c].ty).collect(),
            _ => Arc::from(Vec::new()),
        };
        let params = rendered
            .binds
            .iter()
            .map(|b| match *b {
                Bind::Param(i) => q.params.get(i).map_or(ColumnType::I64, |p| p.ty),
                Bind::PrefixPattern(_) => ColumnType::String,
            })
            .collect();
        let def = StmtDef {
            key: StmtKey::Query(q.id),
            sql: Arc::from(rendered.sql.as_str()),
            params,
        };
        let info = Arc::new(QueryInfo {
            table,
            rendered,
            types,
            def,
        });
        Ok(self.queries.write().entry(q.id).or_insert(info).clone())
    }
}
