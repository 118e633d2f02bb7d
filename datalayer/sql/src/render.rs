//! Rendering of queries, repository operations and keyset scans to SQL.

use super::Dialect;
use datalayer_core::engine::ScanRequest;
use datalayer_core::error::{Error, Result};
use datalayer_core::plan::{Access, plan_filter};
use datalayer_core::query::{ArithOp, CmpOp, Expr, Limit, QueryDef, QueryKind};
use datalayer_core::schema::TableSchema;
use datalayer_core::value::{ColumnType, Value};
use std::ops::Bound;

/// Where the value of one placeholder comes from, for a rendered query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bind {
    /// The value of query parameter `i` (0-based), bound unchanged.
    Param(usize),
    /// Query parameter `i` turned into a pattern by [`Dialect::prefix_pattern`] (for
    /// `starts_with`). A NULL or non-text value is bound unchanged.
    PrefixPattern(usize),
}

/// What a rendered query returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputShape {
    /// Rows whose values are these table columns (positions), in this order; decode
    /// each by its column's type. A projection has one column.
    Rows(Vec<usize>),
    /// One row with one integer: `COUNT(*)`.
    Count,
    /// No rows; the result is the number of rows changed (UPDATE/DELETE).
    Changes,
}

/// A query rendered once, at registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedQuery {
    /// The SQL text, with numbered placeholders from [`Dialect::placeholder`].
    pub sql: String,
    /// Placeholder `n` (1-based) takes the value described by `binds[n - 1]`.
    pub binds: Vec<Bind>,
    /// How to read the result.
    pub output: OutputShape,
}

/// The repository operations of one table, rendered once per table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSql {
    /// The quoted column list in column order (`"id", "name"`), for `SELECT`.
    pub columns: String,
    /// `INSERT INTO t (cols) VALUES (p1, ..., pn)`: placeholder `k` = column `k - 1`.
    pub insert: String,
    /// `insert` plus an upsert clause on the primary key; same placeholders.
    pub upsert: String,
    /// `insert` plus `ON CONFLICT DO NOTHING` (every unique constraint and index):
    /// a conflict inserts nothing and reports 0 rows instead of failing, so that a
    /// transaction needs no savepoint around it ([`crate::Work::fast_insert`]).
    pub insert_or_nothing: String,
    /// `UPDATE t SET <non-key columns> WHERE <key columns>`: placeholder `k` = column
    /// `k - 1`, so a whole row binds by position. On a table with a version column
    /// `v`: `SET .., v = $v + 1 WHERE <key> AND v = $v` (optimistic locking).
    pub update: String,
    /// `DELETE FROM t WHERE <key>`: placeholder `k` = primary-key value `k - 1`.
    pub delete: String,
    /// `SELECT <cols> FROM t WHERE <key>`: placeholder `k` = primary-key value `k - 1`.
    pub get: String,
    /// `SELECT COUNT(*) FROM t`.
    pub count: String,
    /// `INSERT INTO t (cols) <bulk source>` and the same with the upsert clause: many
    /// rows in one statement, one array parameter per column
    /// ([`crate::Dialect::bulk_rows_source`]); `None` where the dialect has no bulk
    /// source.
    pub bulk: Option<[String; 2]>,
}

/// The kind of one scan bound, including whether its value is NULL (which changes
/// the SQL: NULL sorts first in key order, and `= NULL` never holds in SQL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoundShape {
    /// No bound.
    Unbounded,
    /// Inclusive bound with a non-NULL value.
    Included,
    /// Exclusive bound with a non-NULL value.
    Excluded,
    /// Inclusive bound at NULL.
    IncludedNull,
    /// Exclusive bound at NULL.
    ExcludedNull,
}

impl BoundShape {
    /// The shape of a bound.
    pub fn of(b: &Bound<Value>) -> BoundShape {
        match b {
            Bound::Unbounded => BoundShape::Unbounded,
            Bound::Included(v) if v.is_null() => BoundShape::IncludedNull,
            Bound::Excluded(v) if v.is_null() => BoundShape::ExcludedNull,
            Bound::Included(_) => BoundShape::Included,
            Bound::Excluded(_) => BoundShape::Excluded,
        }
    }
}

/// Everything the SQL of a keyset scan depends on. Engines cache rendered scans (and
/// prepared statements) by table and shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScanShape {
    /// Index position; `None` = primary-key order.
    pub index: Option<usize>,
    /// Number of equality prefix values.
    pub prefix_len: u8,
    /// Bit `i` set: prefix value `i` is NULL.
    pub prefix_nulls: u64,
    /// Lower bound on the column after the prefix.
    pub lower: BoundShape,
    /// Upper bound on the column after the prefix.
    pub upper: BoundShape,
    /// `Some(mask)` when a cursor is given; bit `i` set: position value `i` is NULL.
    pub after: Option<u64>,
    /// Descending.
    pub reverse: bool,
    /// A limit is bound.
    pub limit: bool,
}

fn null_mask(vals: &[Value]) -> Result<u64> {
    if vals.len() > 64 {
        return Err(Error::invalid_input(
            "a scan position has more than 64 values",
        ));
    }
    Ok(vals
        .iter()
        .enumerate()
        .fold(0, |m, (i, v)| if v.is_null() { m | (1 << i) } else { m }))
}

impl ScanShape {
    /// The shape of a request whose values are already coerced to the column types.
    ///
    /// # Errors
    /// `InvalidInput` for more than 64 prefix or cursor values.
    pub fn of(req: &ScanRequest<'_>) -> Result<ScanShape> {
        Ok(ScanShape {
            index: req.index,
            prefix_len: u8::try_from(req.prefix.len())
                .map_err(|_| Error::invalid_input("scan prefix too long"))?,
            prefix_nulls: null_mask(&req.prefix)?,
            lower: BoundShape::of(&req.lower),
            upper: BoundShape::of(&req.upper),
            after: req.after.as_deref().map(null_mask).transpose()?,
            reverse: req.reverse,
            limit: req.limit.is_some(),
        })
    }
}

/// Where the value of one placeholder of a rendered scan comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanBind {
    /// `prefix[i]`.
    Prefix(usize),
    /// The lower bound's value.
    Lower,
    /// The upper bound's value.
    Upper,
    /// `after[i]`.
    After(usize),
    /// The limit, as an integer.
    Limit,
}

/// A keyset scan rendered once per (table, shape).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedScan {
    /// The SQL text; returns every column in column order.
    pub sql: String,
    /// Placeholder `n` (1-based) takes the value described by `binds[n - 1]`.
    pub binds: Vec<ScanBind>,
}

impl RenderedScan {
    /// The parameter values for `req` (already [coerced](ScanRequest::coerce)), in
    /// placeholder order. An absent bound or cursor binds NULL (its shape has no
    /// placeholder for it); no limit binds `i64::MAX`.
    pub fn bind_values(&self, req: &ScanRequest<'_>) -> Vec<Value> {
        let bound = |b: &Bound<Value>| match b {
            Bound::Included(v) | Bound::Excluded(v) => v.clone(),
            Bound::Unbounded => Value::Null,
        };
        self.binds
            .iter()
            .map(|b| match *b {
                ScanBind::Prefix(i) => req.prefix[i].clone(),
                ScanBind::Lower => bound(&req.lower),
                ScanBind::Upper => bound(&req.upper),
                ScanBind::After(i) => req.after.as_ref().map_or(Value::Null, |a| a[i].clone()),
                ScanBind::Limit => Value::I64(
                    req.limit
                        .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX)),
                ),
            })
            .collect()
    }
}

// ---- expressions ----------------------------------------------------------------------

struct Ctx<'a, B> {
    d: &'a dyn Dialect,
    t: &'a TableSchema,
    binds: Vec<B>,
    /// Query parameters may appear (false for index predicates).
    params: bool,
}

impl<'a, B: PartialEq + Copy> Ctx<'a, B> {
    fn new(d: &'a dyn Dialect, t: &'a TableSchema, params: bool) -> Self {
        Ctx {
            d,
            t,
            binds: Vec::new(),
            params,
        }
    }

    /// The placeholder of `b` (numbered by first use; repeated binds share one).
    fn bind(&mut self, b: B) -> String {
        let n = match self.binds.iter().position(|x| *x == b) {
            Some(i) => i + 1,
            None => {
                self.binds.push(b);
                self.binds.len()
            }
        };
        self.d.placeholder(n)
    }

    /// A fresh placeholder for `b` even if `b` was bound before (scans bind each
    /// position value where it is used; the values are equal anyway).
    fn bind_new(&mut self, b: B) -> String {
        self.binds.push(b);
        self.d.placeholder(self.binds.len())
    }

    fn col(&self, i: usize) -> Result<String> {
        let c = self.t.columns.get(i).ok_or_else(|| {
            Error::invalid_input(format!(
                "table {}: column position {i} out of range",
                self.t.name
            ))
        })?;
        Ok(self.d.quote_ident(&c.name))
    }
}

impl Ctx<'_, Bind> {
    fn expr(&mut self, e: &Expr) -> Result<String> {
        Ok(match e {
            Expr::Column(i) => self.col(*i)?,
            Expr::Param(i) => {
                if !self.params {
                    return Err(Error::invalid_input(
                        "an index predicate cannot use query parameters",
                    ));
                }
                self.bind(Bind::Param(*i))
            }
            Expr::Literal(v) => self.d.literal(v)?,
            Expr::Cmp(op, a, b) => {
                let op = match op {
                    CmpOp::Eq => "=",
                    CmpOp::Ne => "<>",
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                };
                format!("({} {op} {})", self.expr(a)?, self.expr(b)?)
            }
            Expr::And(v) if v.is_empty() => "(1 = 1)".to_owned(),
            Expr::Or(v) if v.is_empty() => "(1 = 0)".to_owned(),
            Expr::And(v) => self.join(v, " AND ")?,
            Expr::Or(v) => self.join(v, " OR ")?,
            Expr::Not(a) => format!("(NOT {})", self.expr(a)?),
            Expr::IsNull(a) => format!("({} IS NULL)", self.expr(a)?),
            Expr::StartsWith(a, b) => {
                let text = self.expr(a)?;
                match &**b {
                    Expr::Param(i) if self.params => {
                        let p = self.bind(Bind::PrefixPattern(*i));
                        self.d.starts_with(&text, &p)
                    }
                    Expr::Literal(Value::String(s)) => {
                        let p = self.d.literal(&Value::String(self.d.prefix_pattern(s)))?;
                        self.d.starts_with(&text, &p)
                    }
                    other => {
                        let p = self.expr(other)?;
                        self.d.starts_with_expr(&text, &p)
                    }
                }
            }
            Expr::Arith(op, a, b) => {
                let op = match op {
                    ArithOp::Add => "+",
                    ArithOp::Sub => "-",
                };
                format!("({} {op} {})", self.expr(a)?, self.expr(b)?)
            }
        })
    }

    fn join(&mut self, v: &[Expr], sep: &str) -> Result<String> {
        let parts = v.iter().map(|e| self.expr(e)).collect::<Result<Vec<_>>>()?;
        Ok(format!("({})", parts.join(sep)))
    }
}

/// Renders an expression over `t` with literals inline and no parameters: a partial
/// index predicate (`CREATE INDEX ... WHERE <this>`), also added to scans of that
/// index so the database matches the index.
///
/// # Errors
/// `InvalidInput` for a parameter, an out-of-range column or a literal without a safe
/// SQL form.
pub fn render_expr_inline(t: &TableSchema, e: &Expr, d: &dyn Dialect) -> Result<String> {
    let mut c = Ctx::<Bind>::new(d, t, false);
    c.expr(e)
}

// ---- queries -----------------------------------------------------------------------------

fn quoted_list(t: &TableSchema, d: &dyn Dialect, cols: &[usize]) -> String {
    cols.iter()
        .map(|&c| d.quote_ident(&t.columns[c].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `ORDER BY` terms of `q`: its own terms, then the access path the KV planner
/// would use as tie-breakers, so both families agree on the order of equal rows.
fn order_terms(q: &QueryDef, d: &dyn Dialect) -> Result<Vec<String>> {
    let t = q.table;
    let plan = plan_filter(t, q.filter.as_ref(), &q.order_by);
    let mut access: Vec<usize> = match &plan.access {
        Access::PkPoint(_) | Access::Range { index: None, .. } => Vec::new(),
        Access::Range { index: Some(i), .. } => t.indexes[*i].columns.clone(),
    };
    access.extend(t.primary_key.iter().copied());
    let mut seen = Vec::new();
    let mut terms = Vec::new();
    let col = |i: usize| -> Result<String> {
        t.columns
            .get(i)
            .map(|c| d.quote_ident(&c.name))
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "query {}: column position {i} out of range",
                    q.name
                ))
            })
    };
    for o in &q.order_by {
        if !seen.contains(&o.column) {
            seen.push(o.column);
            terms.push(d.order_term(&col(o.column)?, o.desc, t.columns[o.column].nullable));
        }
    }
    for c in access {
        if !seen.contains(&c) {
            seen.push(c);
            terms.push(d.order_term(&col(c)?, plan.reverse, t.columns[c].nullable));
        }
    }
    Ok(terms)
}

/// Renders a registered query. Called once per query (at registration or first use).
///
/// - `Select`: `SELECT <cols> FROM t [WHERE f] ORDER BY <terms> [LIMIT n]`; the order
///   always ends with the access-path tie-breakers (see the module docs).
/// - `Count`: `SELECT COUNT(*) FROM t [WHERE f]` (a limit does not apply to a count,
///   as in the KV family).
/// - `Update`/`Delete`: `... WHERE f`; with a limit, the rows are the first `n` in
///   `ORDER BY` order: `WHERE (pk) IN (SELECT pk FROM t WHERE f ORDER BY .. LIMIT n)`.
///
/// # Errors
/// `InvalidInput` for an out-of-range column or a literal without a safe SQL form.
pub fn render_query(q: &QueryDef, d: &dyn Dialect) -> Result<RenderedQuery> {
    let t = q.table;
    let mut c = Ctx::<Bind>::new(d, t, true);
    let table = d.quote_ident(&t.name);
    let filter = match &q.filter {
        Some(f) => format!(" WHERE {}", c.expr(f)?),
        None => String::new(),
    };
    let limit = match q.limit {
        // A limit does not apply to a count (as in the KV family): bind nothing for it.
        _ if q.kind == QueryKind::Count => None,
        None => None,
        Some(Limit::Const(n)) => Some(n.min(i64::MAX as u64).to_string()),
        Some(Limit::Param(i)) => Some(c.bind(Bind::Param(i))),
    };
    let ordered_limit = || -> Result<String> {
        let mut s = format!(" ORDER BY {}", order_terms(q, d)?.join(", "));
        if let Some(l) = &limit {
            s.push_str(&format!(" LIMIT {l}"));
        }
        Ok(s)
    };
    let key_cols = quoted_list(t, d, &t.primary_key);
    let limited_where = || -> Result<String> {
        Ok(match &limit {
            None => filter.clone(),
            Some(_) => {
                let key = if t.primary_key.len() == 1 {
                    key_cols.clone()
                } else {
                    format!("({key_cols})")
                };
                format!(
                    " WHERE {key} IN (SELECT {key_cols} FROM {table}{filter}{})",
                    ordered_limit()?
                )
            }
        })
    };
    let (sql, output) = match &q.kind {
        QueryKind::Select { projection, .. } => {
            let cols: Vec<usize> = match projection {
                Some(p) => {
                    c.col(*p)?;
                    vec![*p]
                }
                None => (0..t.columns.len()).collect(),
            };
            let tail = ordered_limit()?;
            (
                format!(
                    "SELECT {} FROM {table}{filter}{tail}",
                    quoted_list(t, d, &cols)
                ),
                OutputShape::Rows(cols),
            )
        }
        QueryKind::Count => (
            format!("SELECT COUNT(*) FROM {table}{filter}"),
            OutputShape::Count,
        ),
        QueryKind::Update { assignments } => {
            let mut sets = Vec::new();
            for (col, e) in assignments {
                let name = c.col(*col)?;
                sets.push(format!("{name} = {}", c.expr(e)?));
            }
            if let Some(v) = t
                .version
                .filter(|v| !assignments.iter().any(|(c, _)| c == v))
            {
                // Optimistic locking: every update moves the version on.
                let name = c.col(v)?;
                sets.push(format!("{name} = {name} + 1"));
            }
            if sets.is_empty() {
                // Nothing to change: still count (and touch) the matching rows.
                let first = c.col(0)?;
                sets.push(format!("{first} = {first}"));
            }
            let w = limited_where()?;
            (
                format!("UPDATE {table} SET {}{w}", sets.join(", ")),
                OutputShape::Changes,
            )
        }
        QueryKind::Delete => {
            let w = limited_where()?;
            (format!("DELETE FROM {table}{w}"), OutputShape::Changes)
        }
    };
    Ok(RenderedQuery {
        sql,
        binds: c.binds,
        output,
    })
}

// ---- repository operations ----------------------------------------------------------------

/// Renders the repository operations of `t` (insert, upsert, update, delete and get by
/// primary key, count). Called once per table.
pub fn render_table(t: &TableSchema, d: &dyn Dialect) -> TableSql {
    let table = d.quote_ident(&t.name);
    let all: Vec<usize> = (0..t.columns.len()).collect();
    let columns = quoted_list(t, d, &all);
    let ph: Vec<String> = (1..=t.columns.len()).map(|n| d.placeholder(n)).collect();
    let insert = format!("INSERT INTO {table} ({columns}) VALUES ({})", ph.join(", "));
    let key: Vec<String> = t
        .primary_key
        .iter()
        .map(|&c| d.quote_ident(&t.columns[c].name))
        .collect();
    let non_key: Vec<usize> = all
        .iter()
        .copied()
        .filter(|c| !t.primary_key.contains(c))
        .collect();
    let non_key_q: Vec<String> = non_key
        .iter()
        .map(|&c| d.quote_ident(&t.columns[c].name))
        .collect();
    let upsert_clause = d.upsert_clause(&key, &non_key_q);
    let upsert = format!("{insert} {upsert_clause}");
    let types: Vec<ColumnType> = t.columns.iter().map(|c| c.ty).collect();
    let bulk = d.bulk_rows_source(&types).map(|src| {
        let insert = format!("INSERT INTO {table} ({columns}) {src}");
        let upsert = format!("{insert} {upsert_clause}");
        [insert, upsert]
    });
    let key_by_col: Vec<String> = t
        .primary_key
        .iter()
        .map(|&c| format!("{} = {}", d.quote_ident(&t.columns[c].name), ph[c]))
        .collect();
    let sets: Vec<String> = if non_key.is_empty() {
        vec![format!("{0} = {0}", key[0])]
    } else {
        non_key
            .iter()
            .map(|&c| match t.version {
                // Optimistic locking: written over the version read, moved on by one.
                Some(v) if v == c => {
                    format!("{} = {} + 1", d.quote_ident(&t.columns[c].name), ph[c])
                }
                _ => format!("{} = {}", d.quote_ident(&t.columns[c].name), ph[c]),
            })
            .collect()
    };
    let mut update_where = key_by_col;
    if let Some(v) = t.version {
        update_where.push(format!("{} = {}", d.quote_ident(&t.columns[v].name), ph[v]));
    }
    let update = format!(
        "UPDATE {table} SET {} WHERE {}",
        sets.join(", "),
        update_where.join(" AND ")
    );
    let key_by_pos: Vec<String> = key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} = {}", d.placeholder(i + 1)))
        .collect();
    let where_key = key_by_pos.join(" AND ");
    TableSql {
        delete: format!("DELETE FROM {table} WHERE {where_key}"),
        get: format!("SELECT {columns} FROM {table} WHERE {where_key}"),
        count: format!("SELECT COUNT(*) FROM {table}"),
        columns,
        insert_or_nothing: format!("{insert} ON CONFLICT DO NOTHING"),
        insert,
        upsert,
        update,
        bulk,
    }
}

// ---- keyset scans ----------------------------------------------------------------------------

/// Renders a keyset scan of `t` with `shape`. Rows come in key order (index columns,
/// then primary-key columns; NULL first), reversed if `shape.reverse`; bounds and the
/// cursor compare in that key order, so NULL values work:
///
/// - prefix value NULL → `c IS NULL`; otherwise `c = ?`;
/// - a bound or cursor value NULL is the smallest position, and a nullable column's
///   NULL rows lie below every non-NULL bound (`(c IS NULL OR c < ?)`);
/// - a cursor without NULLs compares as a row value `(a, b, pk) > (?, ?, ?)` when that
///   is exact (forward scans; reverse scans over non-nullable columns), else as the
///   expanded lexicographic comparison.
///
/// A scan of a partial index includes only rows matching its predicate, like the
/// index itself.
///
/// # Errors
/// `InvalidInput` for an index position out of range, or a prefix/cursor longer than
/// the index.
pub fn render_scan(t: &TableSchema, shape: &ScanShape, d: &dyn Dialect) -> Result<RenderedScan> {
    let mut cols: Vec<usize> = match shape.index {
        Some(i) => t
            .indexes
            .get(i)
            .ok_or_else(|| {
                Error::invalid_input(format!("table {}: index {i} out of range", t.name))
            })?
            .columns
            .clone(),
        None => Vec::new(),
    };
    let index_len = if shape.index.is_some() {
        cols.len()
    } else {
        t.primary_key.len()
    };
    cols.extend(t.primary_key.iter().copied());
    let prefix_len = usize::from(shape.prefix_len);
    if prefix_len > index_len {
        return Err(Error::invalid_input(format!(
            "{}: the scan fixes more columns than the index has ({index_len})",
            t.name
        )));
    }
    let mut c = Ctx::<ScanBind>::new(d, t, false);
    let name = |i: usize| d.quote_ident(&t.columns[i].name);
    let nullable = |i: usize| t.columns[i].nullable;
    let mut conds: Vec<String> = Vec::new();

    for (i, &col) in cols.iter().take(prefix_len).enumerate() {
        if shape.prefix_nulls & (1 << i) != 0 {
            conds.push(format!("{} IS NULL", name(col)));
        } else {
            let p = c.bind_new(ScanBind::Prefix(i));
            conds.push(format!("{} = {p}", name(col)));
        }
    }
    if prefix_len < index_len {
        let col = cols[prefix_len];
        let n = name(col);
        match shape.lower {
            BoundShape::Included => conds.push(format!("{n} >= {}", c.bind_new(ScanBind::Lower))),
            BoundShape::Excluded => conds.push(format!("{n} > {}", c.bind_new(ScanBind::Lower))),
            BoundShape::ExcludedNull => conds.push(format!("{n} IS NOT NULL")),
            BoundShape::IncludedNull | BoundShape::Unbounded => {}
        }
        // A non-NULL upper bound excludes NULL rows, as `col <= x` does in SQL (the KV
        // family starts such ranges after the NULL entries).
        let below = |op: &str, p: String| format!("{n} {op} {p}");
        match shape.upper {
            BoundShape::Included => {
                let p = c.bind_new(ScanBind::Upper);
                conds.push(below("<=", p));
            }
            BoundShape::Excluded => {
                let p = c.bind_new(ScanBind::Upper);
                conds.push(below("<", p));
            }
            BoundShape::IncludedNull => conds.push(format!("{n} IS NULL")),
            BoundShape::ExcludedNull => conds.push("1 = 0".to_owned()),
            BoundShape::Unbounded => {}
        }
    }
    if let Some(i) = shape.index
        && let Some(w) = &t.indexes[i].when
    {
        conds.push(render_expr_inline(t, w, d)?);
    }
    if let Some(mask) = shape.after {
        let row_value = d.supports_row_values()
            && mask == 0
            && (!shape.reverse || cols.iter().all(|&i| !nullable(i)));
        let op = if shape.reverse { "<" } else { ">" };
        if row_value {
            let ps: Vec<String> = (0..cols.len())
                .map(|i| c.bind_new(ScanBind::After(i)))
                .collect();
            if cols.len() == 1 {
                conds.push(format!("{} {op} {}", name(cols[0]), ps[0]));
            } else {
                let names: Vec<String> = cols.iter().map(|&i| name(i)).collect();
                conds.push(format!("({}) {op} ({})", names.join(", "), ps.join(", ")));
            }
        } else {
            let mut ors = Vec::new();
            for j in 0..cols.len() {
                let mut ands = Vec::new();
                for (i, &col) in cols.iter().enumerate().take(j) {
                    if mask & (1 << i) != 0 {
                        ands.push(format!("{} IS NULL", name(col)));
                    } else {
                        ands.push(format!(
                            "{} = {}",
                            name(col),
                            c.bind_new(ScanBind::After(i))
                        ));
                    }
                }
                let col = cols[j];
                let null = mask & (1 << j) != 0;
                let last = match (shape.reverse, null) {
                    (false, true) => format!("{} IS NOT NULL", name(col)),
                    (false, false) => format!("{} > {}", name(col), c.bind_new(ScanBind::After(j))),
                    (true, true) => continue,
                    (true, false) => {
                        let p = c.bind_new(ScanBind::After(j));
                        if nullable(col) {
                            format!("({0} IS NULL OR {0} < {p})", name(col))
                        } else {
                            format!("{} < {p}", name(col))
                        }
                    }
                };
                ands.push(last);
                ors.push(format!("({})", ands.join(" AND ")));
            }
            if ors.is_empty() {
                conds.push("1 = 0".to_owned());
            } else {
                conds.push(format!("({})", ors.join(" OR ")));
            }
        }
    }
    let all: Vec<usize> = (0..t.columns.len()).collect();
    let mut sql = format!(
        "SELECT {} FROM {}",
        quoted_list(t, d, &all),
        d.quote_ident(&t.name)
    );
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    let order: Vec<String> = cols
        .iter()
        .map(|&i| d.order_term(&name(i), shape.reverse, t.columns[i].nullable))
        .collect();
    sql.push_str(" ORDER BY ");
    sql.push_str(&order.join(", "));
    if shape.limit {
        let p = c.bind_new(ScanBind::Limit);
        sql.push_str(&format!(" LIMIT {p}"));
    }
    Ok(RenderedScan {
        sql,
        binds: c.binds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dialect::Pg;
    use datalayer_core::query::{OrderBy, QueryBuilder};
    use datalayer_core::schema::{ColumnDef, IndexDef};
    use datalayer_core::value::ColumnType;
    use std::sync::OnceLock;

    fn table() -> &'static TableSchema {
        static T: OnceLock<TableSchema> = OnceLock::new();
        T.get_or_init(|| {
            let col = |n: &str, ty, nullable| ColumnDef {
                name: n.into(),
                field: n.into(),
                ty,
                nullable,
            };
            TableSchema {
                version: None,
                name: "users".into(),
                columns: vec![
                    col("id", ColumnType::I64, false),
                    col("email", ColumnType::String, false),
                    col("age", ColumnType::I32, true),
                    col("active", ColumnType::Bool, false),
                ],
                primary_key: vec![0],
                indexes: vec![
                    IndexDef {
                        name: "by_age".into(),
                        columns: vec![2],
                        unique: false,
                        when: None,
                    },
                    IndexDef {
                        name: "active_email".into(),
                        columns: vec![1],
                        unique: true,
                        when: Some(Expr::cmp(
                            CmpOp::Eq,
                            Expr::Column(3),
                            Expr::Literal(Value::Bool(true)),
                        )),
                    },
                ],
            }
        })
    }

    #[test]
    fn select_with_params_order_and_limit() {
        let mut b = QueryBuilder::new("adults", table());
        let age = b.col("age");
        let p = b.param("min", ColumnType::I32, false);
        let email = b.col("email");
        let pre = b.param("prefix", ColumnType::String, false);
        b.filter(Expr::And(vec![
            Expr::cmp(CmpOp::Ge, age, p),
            Expr::StartsWith(Box::new(email), Box::new(pre)),
        ]));
        b.order_by("age", true);
        b.limit(Limit::Param(0));
        let q = b.build().unwrap();
        let r = render_query(&q, &Pg).unwrap();
        assert_eq!(
            r.sql,
            "SELECT \"id\", \"email\", \"age\", \"active\" FROM \"users\" WHERE ((\"age\" >= $1) AND (\"email\" LIKE $2 ESCAPE '\\')) ORDER BY \"age\" DESC NULLS LAST, \"id\" DESC LIMIT $1"
        );
        assert_eq!(r.binds, vec![Bind::Param(0), Bind::PrefixPattern(1)]);
        assert_eq!(r.output, OutputShape::Rows(vec![0, 1, 2, 3]));
    }

    #[test]
    fn update_with_limit_uses_a_key_subquery() {
        let mut b = QueryBuilder::new("bump", table());
        let age = b.col("age");
        let by = b.param("by", ColumnType::I32, false);
        b.kind(QueryKind::Update {
            assignments: vec![(2, Expr::arith(ArithOp::Add, age, by))],
        });
        b.limit(Limit::Const(3));
        let q = b.build().unwrap();
        let r = render_query(&q, &Pg).unwrap();
        assert_eq!(
            r.sql,
            "UPDATE \"users\" SET \"age\" = (\"age\" + $1) WHERE \"id\" IN (SELECT \"id\" FROM \"users\" ORDER BY \"id\" ASC LIMIT 3)"
        );
        assert_eq!(r.output, OutputShape::Changes);
    }

    #[test]
    fn literals_are_escaped() {
        let e = Expr::cmp(
            CmpOp::Eq,
            Expr::Column(1),
            Expr::Literal(Value::String("o'neil".into())),
        );
        assert_eq!(
            render_expr_inline(table(), &e, &Pg).unwrap(),
            "(\"email\" = 'o''neil')"
        );
        let p = Expr::cmp(CmpOp::Eq, Expr::Column(1), Expr::Param(0));
        assert!(render_expr_inline(table(), &p, &Pg).is_err());
        let bad = Expr::cmp(
            CmpOp::Eq,
            Expr::Column(1),
            Expr::Literal(Value::F64(f64::NAN)),
        );
        assert!(render_expr_inline(table(), &bad, &Pg).is_err());
    }

    #[test]
    fn scan_cursor_with_null_expands() {
        let shape = ScanShape {
            index: Some(0),
            prefix_len: 0,
            prefix_nulls: 0,
            lower: BoundShape::Unbounded,
            upper: BoundShape::Excluded,
            after: Some(0b01),
            reverse: false,
            limit: true,
        };
        let r = render_scan(table(), &shape, &Pg).unwrap();
        assert!(r.sql.contains("\"age\" < $1"), "{}", r.sql);
        assert!(
            !r.sql.contains("\"age\" IS NULL OR \"age\" < $1"),
            "{}",
            r.sql
        );
        assert!(
            r.sql
                .contains("((\"age\" IS NOT NULL) OR (\"age\" IS NULL AND \"id\" > $2))"),
            "{}",
            r.sql
        );
        assert_eq!(
            r.binds,
            vec![ScanBind::Upper, ScanBind::After(1), ScanBind::Limit]
        );
        let fwd = ScanShape {
            after: Some(0),
            ..shape
        };
        let r = render_scan(table(), &fwd, &Pg).unwrap();
        assert!(r.sql.contains("(\"age\", \"id\") > ($2, $3)"), "{}", r.sql);
        let partial = ScanShape {
            index: Some(1),
            upper: BoundShape::Unbounded,
            after: None,
            ..shape
        };
        let r = render_scan(table(), &partial, &Pg).unwrap();
        assert!(r.sql.contains("(\"active\" = TRUE)"), "{}", r.sql);
    }

    #[test]
    fn repo_ops_bind_by_position() {
        let s = render_table(table(), &Pg);
        assert_eq!(
            s.update,
            "UPDATE \"users\" SET \"email\" = $2, \"age\" = $3, \"active\" = $4 WHERE \"id\" = $1"
        );
        assert!(s.upsert.ends_with("ON CONFLICT (\"id\") DO UPDATE SET \"email\" = excluded.\"email\", \"age\" = excluded.\"age\", \"active\" = excluded.\"active\""));
        let _ = OrderBy {
            column: 0,
            desc: false,
        };
    }
}
