//! Work: an [`Op`] made owned and resolved against the [`Registry`], as a connection
//! runs it — one prepared statement, run once per parameter set, and how its results
//! combine into the op's [`Output`].
//!
//! A connection needs only three things to run any work: the statement
//! ([`Work::def`]), the parameter sets ([`Work::param_sets`], one call each) and what to
//! read back from each call ([`Work::fetch`]); [`Work::output`] then builds the output.
//! Ops arrive already checked and coerced by core ([`Op::checked`]).

use crate::registry::{QueryInfo, Registry, ScanSql, StmtDef, TableInfo, TableOp};
use crate::{Bind, OutputShape, ScanShape};
use datalayer_core::eval::compare;
use datalayer_core::{ColumnType, Error, Op, Output, Result, Row, TableSchema, Value, WriteMode};
use std::sync::Arc;

/// An op resolved to its statement, with its values in placeholder order.
pub enum Work {
    /// A registered query: one call.
    Query {
        /// The query.
        q: Arc<QueryInfo>,
        /// Its values in placeholder order (one parameter set).
        values: [Row; 1],
    },
    /// Insert or upsert: one call per row.
    Insert {
        /// The table.
        t: Arc<TableInfo>,
        /// The rows.
        rows: Vec<Row>,
        /// `ON CONFLICT DO UPDATE`.
        upsert: bool,
        /// The rows go as one bulk statement ([`Work::bulk`]), decided once when the
        /// work is made.
        bulk: bool,
    },
    /// Update by primary key: one call per row.
    Update {
        /// The table.
        t: Arc<TableInfo>,
        /// The rows.
        rows: Vec<Row>,
    },
    /// Delete by primary key: one call per key.
    Delete {
        /// The table.
        t: Arc<TableInfo>,
        /// The keys.
        keys: Vec<Row>,
    },
    /// Read by primary key: one call per key.
    Get {
        /// The table.
        t: Arc<TableInfo>,
        /// The keys.
        keys: Vec<Row>,
    },
    /// A keyset scan: one call.
    Scan {
        /// The table.
        t: Arc<TableInfo>,
        /// The scan's SQL for its shape.
        scan: Arc<ScanSql>,
        /// Its values in placeholder order (one parameter set).
        values: [Row; 1],
    },
    /// Count the table's rows: one call without parameters.
    Count {
        /// The table.
        t: Arc<TableInfo>,
    },
}

/// What a connection reads back from one call of a statement.
#[derive(Clone, Copy, Debug)]
pub enum Fetch<'a> {
    /// Every result row, decoded by these column types.
    Rows(&'a [ColumnType]),
    /// The first column of the first row, an integer count (`0` without rows).
    Count,
    /// The number of rows the statement changed.
    Affected,
}

/// The result of one call, as asked for by its [`Fetch`].
#[derive(Debug)]
pub enum Fetched {
    /// The rows ([`Fetch::Rows`]).
    Rows(Vec<Row>),
    /// The count ([`Fetch::Count`] or [`Fetch::Affected`]).
    Count(u64),
}

impl Fetched {
    fn count(self) -> u64 {
        match self {
            Fetched::Count(n) => n,
            Fetched::Rows(r) => r.len() as u64,
        }
    }

    fn rows(self) -> Vec<Row> {
        match self {
            Fetched::Rows(r) => r,
            Fetched::Count(_) => Vec::new(),
        }
    }
}

static NO_PARAMS: [Row; 1] = [Vec::new()];

impl Work {
    /// Resolves an op: registry lookups (rendering on first sight) and the values in
    /// placeholder order.
    ///
    /// # Errors
    /// `InvalidInput` for a table registered with another schema or a scan the table
    /// cannot serve; `Unsupported` for an op this family does not know.
    pub fn new(reg: &Registry, op: Op<'_>) -> Result<Work> {
        Ok(match op {
            Op::Query { query, params } => {
                let q = reg.query(query)?;
                let d = reg.dialect();
                let values = q
                    .rendered
                    .binds
                    .iter()
                    .map(|b| match *b {
                        Bind::Param(i) => params[i].clone(),
                        Bind::PrefixPattern(i) => match &params[i] {
                            Value::String(s) => Value::String(d.prefix_pattern(s)),
                            v => v.clone(),
                        },
                    })
                    .collect();
                Work::Query {
                    q,
                    values: [values],
                }
            }
            Op::Insert { table, rows, mode } => {
                let t = reg.table(table)?;
                let upsert = mode == WriteMode::Upsert;
                // An upsert naming one primary key twice goes row by row (a bulk
                // upsert would touch the row twice, which PostgreSQL refuses; row by
                // row, the last one wins).
                let bulk = rows.len() >= BULK_MIN_ROWS
                    && t.bulk(upsert).is_some()
                    && !(upsert && has_duplicate_key(&t.schema, &rows));
                Work::Insert {
                    t,
                    rows,
                    upsert,
                    bulk,
                }
            }
            Op::Update { table, rows } => Work::Update {
                t: reg.table(table)?,
                rows,
            },
            Op::Delete { table, keys } => Work::Delete {
                t: reg.table(table)?,
                keys,
            },
            Op::Get { table, keys } => Work::Get {
                t: reg.table(table)?,
                keys,
            },
            Op::Scan(req) => {
                let t = reg.table(req.table)?;
                let shape = ScanShape::of(&req)?;
                let scan = t.scan(shape, reg.dialect())?;
                let values = scan.rendered.bind_values(&req);
                Work::Scan {
                    t,
                    scan,
                    values: [values],
                }
            }
            Op::Count { table } => Work::Count {
                t: reg.table(table)?,
            },
            _ => {
                return Err(Error::unsupported(
                    reg.dialect().name(),
                    format!("op {}", op.name()),
                ));
            }
        })
    }

    /// The table the work touches.
    pub fn table(&self) -> &Arc<TableInfo> {
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

    /// The one statement this work runs (for a bulk insert, the bulk statement).
    pub fn def(&self) -> &StmtDef {
        if let Some((d, _)) = self.bulk() {
            return d;
        }
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

    /// The parameter sets, in order: the statement runs once per set.
    pub fn param_sets(&self) -> &[Row] {
        match self {
            Work::Query { values, .. } | Work::Scan { values, .. } => values,
            Work::Insert { rows, .. } | Work::Update { rows, .. } => rows,
            Work::Delete { keys, .. } | Work::Get { keys, .. } => keys,
            Work::Count { .. } => &NO_PARAMS,
        }
    }

    /// What to read back from each call.
    pub fn fetch(&self) -> Fetch<'_> {
        match self {
            Work::Query { q, .. } => match q.rendered.output {
                OutputShape::Rows(_) => Fetch::Rows(&q.types),
                OutputShape::Count => Fetch::Count,
                OutputShape::Changes => Fetch::Affected,
            },
            Work::Get { t, .. } | Work::Scan { t, .. } => Fetch::Rows(&t.types),
            Work::Count { .. } => Fetch::Count,
            Work::Insert { .. } | Work::Update { .. } | Work::Delete { .. } => Fetch::Affected,
        }
    }

    /// The op's output from the results of its calls (one per parameter set, in order).
    ///
    /// # Errors
    /// `Engine` when a result is missing.
    pub fn output(&self, results: Vec<Fetched>) -> Result<Output> {
        let first = |results: Vec<Fetched>| {
            results
                .into_iter()
                .next()
                .ok_or_else(|| Error::engine("internal", "a statement result went missing"))
        };
        Ok(match self {
            Work::Query { .. } | Work::Scan { .. } | Work::Count { .. } => match first(results)? {
                Fetched::Rows(r) => Output::Rows(r),
                Fetched::Count(n) => Output::Count(n),
            },
            Work::Insert { rows, .. } => Output::Count(rows.len() as u64),
            Work::Update { .. } | Work::Delete { .. } => {
                Output::Count(results.into_iter().map(Fetched::count).sum())
            }
            Work::Get { .. } => Output::Optional(
                results
                    .into_iter()
                    .map(|f| f.rows().into_iter().next())
                    .collect(),
            ),
        })
    }

    /// Whether the work only reads.
    pub fn is_read(&self) -> bool {
        match self {
            Work::Query { q, .. } => {
                matches!(q.rendered.output, OutputShape::Rows(_) | OutputShape::Count)
            }
            Work::Get { .. } | Work::Scan { .. } | Work::Count { .. } => true,
            _ => false,
        }
    }

    /// An insert or upsert of at least [`BULK_MIN_ROWS`] rows that goes as one bulk
    /// statement ([`TableInfo::bulk`], where the dialect has one), without two rows of
    /// one primary key in an upsert: the statement and the rows.
    pub fn bulk(&self) -> Option<(&StmtDef, &[Row])> {
        match self {
            Work::Insert {
                t,
                rows,
                upsert,
                bulk: true,
            } => t.bulk(*upsert).map(|d| (d, rows.as_slice())),
            _ => None,
        }
    }

    /// The single-row insert that may run without the per-op savepoint inside a
    /// transaction: the row's `INSERT ... ON CONFLICT DO NOTHING` statement and the row.
    /// A unique conflict, the one failure left to the database for such a row, then
    /// inserts nothing and reports 0 rows (the caller returns `AlreadyExists`), and the
    /// transaction stays usable without a subtransaction. `None` (the savepoint path)
    /// for anything else, or a row whose text and bytes total more than
    /// [`FAST_INSERT_MAX_BYTES`] or whose text holds NUL: the database could refuse
    /// those otherwise (an index entry over PostgreSQL's 2,704-byte B-tree limit, a NUL
    /// in `TEXT`), and only a savepoint keeps the transaction usable after that.
    pub fn fast_insert(&self) -> Option<(&StmtDef, &Row)> {
        let Work::Insert {
            t,
            rows,
            upsert: false,
            bulk: false,
        } = self
        else {
            return None;
        };
        let [row] = rows.as_slice() else {
            return None;
        };
        let mut bytes = 0usize;
        for v in row {
            bytes += match v {
                Value::String(s) | Value::Json(s) => {
                    if s.contains('\0') {
                        return None;
                    }
                    s.len()
                }
                Value::Bytes(b) => b.len(),
                _ => 0,
            };
        }
        (bytes <= FAST_INSERT_MAX_BYTES).then(|| (t.op(TableOp::InsertOrNothing), row))
    }

    /// Whether the work runs its statement more than once (and so needs a transaction
    /// to be atomic).
    pub fn is_multi(&self) -> bool {
        self.param_sets().len() > 1 && self.bulk().is_none()
    }
}

/// The most text and bytes a row may carry for [`Work::fast_insert`]: below
/// PostgreSQL's largest B-tree entry (2,704 bytes for the 8 kB page), whatever
/// columns an index holds.
pub const FAST_INSERT_MAX_BYTES: usize = 2_000;

/// The fewest rows an insert sends as one bulk statement ([`Work::bulk`]); fewer go
/// one statement each (prepared, pipelined), which is as fast for a handful.
pub const BULK_MIN_ROWS: usize = 8;

/// Whether two of `rows` share a primary key.
fn has_duplicate_key(t: &TableSchema, rows: &[Row]) -> bool {
    let mut keys: Vec<Row> = rows.iter().map(|r| t.key_of(r)).collect();
    let cmp = |a: &Row, b: &Row| {
        a.iter()
            .zip(b)
            .map(|(x, y)| compare(x, y).unwrap_or(std::cmp::Ordering::Equal))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    };
    keys.sort_by(cmp);
    keys.windows(2).any(|w| cmp(&w[0], &w[1]).is_eq())
}
