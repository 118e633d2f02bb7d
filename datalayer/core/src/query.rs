//! The typed query AST.
//!
//! A [`QueryDef`] is a value, built once per query (by `#[query_group]`, at first use or
//! at registration) and never from user strings. The SQL family renders it to SQL once
//! (`datalayer_sql`); the KV family plans an access path for it once ([`crate::plan`]).
//! Engines never see Rust closures.

use crate::error::{Error, Result};
use crate::schema::TableSchema;
use crate::value::{ColumnType, Value};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};

/// A process-wide id of one [`QueryDef`], used by engines to find what they prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u32);

static NEXT_QUERY_ID: AtomicU32 = AtomicU32::new(1);

impl QueryId {
    /// A fresh id, unique within the process.
    pub fn next() -> QueryId {
        QueryId(NEXT_QUERY_ID.fetch_add(1, Ordering::Relaxed))
    }
}

/// Comparison operators. Comparisons with NULL are unknown (never true), as in SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator with its operands swapped (`a < b` ⇔ `b > a`).
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }
}

/// Arithmetic operators allowed in update assignments and filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
}

/// A filter or value expression over one row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// A column, by position in the table's columns.
    Column(usize),
    /// A query parameter, by position.
    Param(usize),
    /// A literal value.
    Literal(Value),
    /// A comparison.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// All must hold (empty = true).
    And(Vec<Expr>),
    /// Any must hold (empty = false).
    Or(Vec<Expr>),
    /// Negation (NOT NULL is NULL).
    Not(Box<Expr>),
    /// `IS NULL` (`x.is_none()` in Rust).
    IsNull(Box<Expr>),
    /// Text prefix match (`x.starts_with(p)`); `LIKE 'p%'` in SQL, with `%` and `_` escaped.
    StartsWith(Box<Expr>, Box<Expr>),
    /// Arithmetic (`+`, `-`); NULL if either side is NULL.
    Arith(ArithOp, Box<Expr>, Box<Expr>),
}

impl Expr {
    /// `a op b`.
    pub fn cmp(op: CmpOp, a: Expr, b: Expr) -> Expr {
        Expr::Cmp(op, Box::new(a), Box::new(b))
    }
    /// `a op b` for arithmetic.
    pub fn arith(op: ArithOp, a: Expr, b: Expr) -> Expr {
        Expr::Arith(op, Box::new(a), Box::new(b))
    }
    /// The top-level conjuncts (`a && b && c` → `[a, b, c]`).
    pub fn conjuncts(&self) -> Vec<&Expr> {
        match self {
            Expr::And(v) => v.iter().flat_map(|e| e.conjuncts()).collect(),
            e => vec![e],
        }
    }
    /// Whether the expression reads no column (a parameter or literal).
    pub fn is_row_independent(&self) -> bool {
        match self {
            Expr::Column(_) => false,
            Expr::Param(_) | Expr::Literal(_) => true,
            Expr::Cmp(_, a, b) | Expr::StartsWith(a, b) | Expr::Arith(_, a, b) => {
                a.is_row_independent() && b.is_row_independent()
            }
            Expr::And(v) | Expr::Or(v) => v.iter().all(Expr::is_row_independent),
            Expr::Not(a) | Expr::IsNull(a) => a.is_row_independent(),
        }
    }
    /// The highest parameter position used, plus one.
    pub fn param_count(&self) -> usize {
        match self {
            Expr::Param(i) => i + 1,
            Expr::Column(_) | Expr::Literal(_) => 0,
            Expr::Cmp(_, a, b) | Expr::StartsWith(a, b) | Expr::Arith(_, a, b) => {
                a.param_count().max(b.param_count())
            }
            Expr::And(v) | Expr::Or(v) => v.iter().map(Expr::param_count).max().unwrap_or(0),
            Expr::Not(a) | Expr::IsNull(a) => a.param_count(),
        }
    }
}

/// One `ORDER BY` term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderBy {
    /// Column position.
    pub column: usize,
    /// Descending.
    pub desc: bool,
}

/// A row limit: a constant or a parameter (a non-negative integer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// A fixed number of rows.
    Const(u64),
    /// The value of parameter `n`.
    Param(usize),
}

/// How many rows a select returns, which decides the error for zero rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Returns {
    /// Exactly one row; zero rows is `NotFound`.
    One,
    /// Zero or one row.
    Optional,
    /// Any number of rows.
    Many,
}

/// What a query does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum QueryKind {
    /// Read rows (all columns, or the one column in `projection`).
    Select {
        /// `Some(column)`: return only this column.
        projection: Option<usize>,
        /// Cardinality of the result.
        returns: Returns,
    },
    /// Count matching rows.
    Count,
    /// Update matching rows; the result is the number of rows changed.
    Update {
        /// `column = expr` assignments (the expression may read the old row).
        assignments: Vec<(usize, Expr)>,
    },
    /// Delete matching rows; the result is the number of rows deleted.
    Delete,
}

/// A declared parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamDef {
    /// The Rust parameter name.
    pub name: String,
    /// The type it binds as.
    pub ty: ColumnType,
    /// Whether NULL may be passed.
    pub nullable: bool,
}

/// One query, prepared once per engine.
#[derive(Clone, Debug)]
pub struct QueryDef {
    /// Process-wide id.
    pub id: QueryId,
    /// `Type::fn_name`, used in tracing spans and error messages.
    pub name: String,
    /// The table queried.
    pub table: &'static TableSchema,
    /// What it does.
    pub kind: QueryKind,
    /// `WHERE`; `None` = every row.
    pub filter: Option<Expr>,
    /// `ORDER BY`, in priority order.
    pub order_by: Vec<OrderBy>,
    /// `LIMIT`.
    pub limit: Option<Limit>,
    /// Parameters, in call order.
    pub params: Vec<ParamDef>,
}

impl QueryDef {
    /// Checks the parameters of one call: as many as the query declares, and a
    /// parameter limit ([`Limit::Param`]) that is a non-negative integer.
    ///
    /// # Errors
    /// `InvalidInput` naming the query.
    pub fn check_params(&self, params: &[crate::value::Value]) -> crate::Result<()> {
        if params.len() != self.params.len() {
            return Err(crate::Error::invalid_input(format!(
                "query {} takes {} parameters, got {}",
                self.name,
                self.params.len(),
                params.len()
            )));
        }
        if let Some(Limit::Param(i)) = self.limit
            && params
                .get(i)
                .and_then(crate::value::Value::as_i64)
                .unwrap_or(-1)
                < 0
        {
            return Err(crate::Error::invalid_input(format!(
                "query {}: limit must be a non-negative integer",
                self.name
            )));
        }
        Ok(())
    }
}

/// Builds a [`QueryDef`] from field names; used by `#[query_group]` and by hand.
///
/// Field names are resolved against the table when the builder is used; the macro has
/// already made the compiler check them, so resolution cannot fail for macro-built queries.
pub struct QueryBuilder {
    def: QueryDef,
    error: Option<Error>,
}

impl QueryBuilder {
    /// A `SELECT * ... Returns::Many` over `table`, named `name`.
    pub fn new(name: impl Into<String>, table: &'static TableSchema) -> Self {
        QueryBuilder {
            def: QueryDef {
                id: QueryId::next(),
                name: name.into(),
                table,
                kind: QueryKind::Select {
                    projection: None,
                    returns: Returns::Many,
                },
                filter: None,
                order_by: Vec::new(),
                limit: None,
                params: Vec::new(),
            },
            error: None,
        }
    }

    fn resolve(&mut self, field: &str) -> usize {
        match self.def.table.column_index(field) {
            Some(i) => i,
            None => {
                self.error.get_or_insert_with(|| {
                    Error::invalid_input(format!(
                        "query {}: table {} has no column {field}",
                        self.def.name, self.def.table.name
                    ))
                });
                0
            }
        }
    }

    /// An expression for the column whose field name is `field`.
    pub fn col(&mut self, field: &str) -> Expr {
        Expr::Column(self.resolve(field))
    }

    /// Declares the next parameter; returns its expression.
    pub fn param(&mut self, name: &str, ty: ColumnType, nullable: bool) -> Expr {
        self.def.params.push(ParamDef {
            name: name.to_owned(),
            ty,
            nullable,
        });
        Expr::Param(self.def.params.len() - 1)
    }

    /// The expression of an already declared parameter.
    pub fn param_ref(&mut self, name: &str) -> Expr {
        match self.def.params.iter().position(|p| p.name == name) {
            Some(i) => Expr::Param(i),
            None => {
                self.error.get_or_insert_with(|| {
                    Error::invalid_input(format!("query {}: no parameter {name}", self.def.name))
                });
                Expr::Literal(Value::Null)
            }
        }
    }

    /// Sets the filter.
    pub fn filter(&mut self, e: Expr) -> &mut Self {
        self.def.filter = Some(e);
        self
    }
    /// Appends an `ORDER BY` term.
    pub fn order_by(&mut self, field: &str, desc: bool) -> &mut Self {
        let column = self.resolve(field);
        self.def.order_by.push(OrderBy { column, desc });
        self
    }
    /// Sets the limit.
    pub fn limit(&mut self, limit: Limit) -> &mut Self {
        self.def.limit = Some(limit);
        self
    }
    /// Sets the kind.
    pub fn kind(&mut self, kind: QueryKind) -> &mut Self {
        self.def.kind = kind;
        self
    }
    /// Makes it a select of one column (`select(|x| x.col)`).
    pub fn select(&mut self, field: &str, returns: Returns) -> &mut Self {
        let c = self.resolve(field);
        self.def.kind = QueryKind::Select {
            projection: Some(c),
            returns,
        };
        self
    }

    /// Finishes the query.
    ///
    /// # Errors
    /// `InvalidInput` for an unknown column or parameter, an assignment to a
    /// primary-key column, an `order_by` on a JSON column, or a parameter used but not
    /// declared.
    pub fn build(self) -> Result<QueryDef> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let d = self.def;
        for o in &d.order_by {
            let c = &d.table.columns[o.column];
            if !c.ty.is_orderable() {
                return Err(Error::invalid_input(format!(
                    "query {}: cannot order by {} column {}",
                    d.name,
                    format!("{:?}", c.ty).to_lowercase(),
                    c.name
                )));
            }
        }
        if let QueryKind::Update { assignments } = &d.kind {
            for (c, _) in assignments {
                if d.table.primary_key.contains(c) {
                    return Err(Error::invalid_input(format!(
                        "query {}: cannot assign to primary-key column {}",
                        d.name, d.table.columns[*c].name
                    )));
                }
            }
        }
        let used = d.filter.as_ref().map_or(0, Expr::param_count);
        if used > d.params.len() {
            return Err(Error::invalid_input(format!(
                "query {} uses parameter {} but declares {}",
                d.name,
                used,
                d.params.len()
            )));
        }
        Ok(d)
    }
}

/// Compile-time type checks emitted by `#[query_group]`.
///
/// The macro turns `u.age > min_age` into a call to [`check::cmp`] with the field and the
/// parameter, so that a type mismatch is a compiler error pointing at the user's
/// expression: "the trait `Comparable<&str>` is not implemented for `i64`".
pub mod check {
    /// `Self` can be compared with `R` in a filter. Nullable columns compare with their
    /// inner type (NULL never matches).
    #[diagnostic::on_unimplemented(
        message = "a column of type `{Self}` cannot be compared with a value of type `{R}`",
        label = "mismatched types in a datalayer query"
    )]
    pub trait Comparable<R: ?Sized> {}
    macro_rules! same {
        ($($t:ty),*) => {$(
            impl Comparable<$t> for $t {}
            impl Comparable<$t> for Option<$t> {}
            impl Comparable<Option<$t>> for Option<$t> {}
            impl Comparable<&$t> for $t {}
            impl Comparable<&$t> for Option<$t> {}
        )*};
    }
    same!(
        bool,
        i16,
        i32,
        i64,
        f32,
        f64,
        String,
        Vec<u8>,
        std::time::SystemTime
    );
    /// A non-null column compares with a nullable value (NULL never matches), as a
    /// nullable column compares with a non-null one.
    macro_rules! nullable_rhs {
        ($($t:ty),*) => {$(
            impl Comparable<Option<$t>> for $t {}
        )*};
    }
    nullable_rhs!(
        bool,
        i16,
        i32,
        i64,
        f32,
        f64,
        String,
        Vec<u8>,
        std::time::SystemTime
    );
    /// A type that compares with itself, nullable or not: implemented by
    /// `#[derive(DbEnum)]` (the blanket impls below give it every `Comparable` a
    /// built-in column type has; a derive in the user's crate could not write the
    /// `Option<E>`-with-`Option<E>` one itself, under the orphan rule).
    pub trait SelfComparable {}
    impl<T: SelfComparable> Comparable<T> for T {}
    impl<T: SelfComparable> Comparable<&T> for T {}
    impl<T: SelfComparable> Comparable<Option<T>> for T {}
    impl<T: SelfComparable> Comparable<T> for Option<T> {}
    impl<T: SelfComparable> Comparable<&T> for Option<T> {}
    impl<T: SelfComparable> Comparable<Option<T>> for Option<T> {}
    same!(crate::value::Numeric);
    nullable_rhs!(crate::value::Numeric);
    #[cfg(feature = "uuid")]
    same!(uuid::Uuid);
    #[cfg(feature = "uuid")]
    nullable_rhs!(uuid::Uuid);
    #[cfg(feature = "chrono")]
    same!(chrono::DateTime<chrono::Utc>, chrono::NaiveDate);
    #[cfg(feature = "chrono")]
    nullable_rhs!(chrono::DateTime<chrono::Utc>, chrono::NaiveDate);
    #[cfg(feature = "time")]
    same!(time::OffsetDateTime);
    #[cfg(feature = "time")]
    nullable_rhs!(time::OffsetDateTime);
    #[cfg(feature = "rust_decimal")]
    same!(rust_decimal::Decimal);
    #[cfg(feature = "rust_decimal")]
    nullable_rhs!(rust_decimal::Decimal);
    impl Comparable<&str> for String {}
    impl Comparable<&str> for Option<String> {}
    impl Comparable<&&str> for String {}
    impl Comparable<&[u8]> for Vec<u8> {}
    impl Comparable<&[u8]> for Option<Vec<u8>> {}
    macro_rules! widen {
        ($($a:ty => $b:ty),*) => {$(
            impl Comparable<$b> for $a {}
            impl Comparable<$b> for Option<$a> {}
        )*};
    }
    widen!(i16 => i32, i16 => i64, i32 => i64, i32 => i16, i64 => i32, i64 => i16, f32 => f64, f64 => f32);

    /// `Self` supports `+`/`-` with `R` in an update assignment or filter.
    #[diagnostic::on_unimplemented(
        message = "a column of type `{Self}` does not support `+`/`-` with a value of type `{R}`",
        label = "arithmetic on a non-numeric column or with a mismatched type"
    )]
    pub trait Numeric<R: ?Sized> {}
    macro_rules! num {
        ($($t:ty),*) => {$(
            impl Numeric<$t> for $t {}
            impl Numeric<$t> for Option<$t> {}
        )*};
    }
    num!(i16, i32, i64, f32, f64);

    /// `Self` can be assigned a value of type `R` in an update.
    #[diagnostic::on_unimplemented(
        message = "a column of type `{Self}` cannot be assigned a value of type `{R}`",
        label = "mismatched types in a datalayer update"
    )]
    pub trait Assignable<R: ?Sized> {}
    impl<T: super::super::value::ColumnValue> Assignable<T> for T {}
    impl<T: super::super::value::ColumnValue> Assignable<T> for Option<T> {}
    impl Assignable<&str> for String {}
    impl Assignable<&str> for Option<String> {}

    /// `Self` is a text column (for `starts_with`).
    #[diagnostic::on_unimplemented(message = "`starts_with` needs a String column, not `{Self}`")]
    pub trait Text {}
    impl Text for String {}
    impl Text for Option<String> {}

    /// Type-checks `column op value`.
    pub fn cmp<C: Comparable<V> + ?Sized, V: ?Sized>(_c: &C, _v: &V) {}
    /// Type-checks `column op column`.
    pub fn cmp_cols<A, B>(_a: &A, _b: &B)
    where
        A: Comparable<B>,
    {
    }
    /// Type-checks `column + value`.
    pub fn arith<C: Numeric<V> + ?Sized, V: ?Sized>(_c: &C, _v: &V) {}
    /// Type-checks `column = value`.
    pub fn assign<C: Assignable<V> + ?Sized, V>(_c: &C, _v: &V) {}
    /// Type-checks `column.starts_with(value)`.
    pub fn text<C: Text + ?Sized, V: AsRef<str> + ?Sized>(_c: &C, _v: &V) {}
    /// Type-checks `column.is_none()` (the column must be an `Option`).
    pub fn nullable<T>(_c: &Option<T>) {}
    /// Type-checks a `limit(n)` argument.
    pub fn limit<T: Into<i64> + Copy>(_n: &T) {}

    /// A column of type `Self` can be returned as `R` by a `select(|x| x.col)` query:
    /// `T` as `T` (and in `Vec<T>`), `T` or `Option<T>` as `Option<T>`.
    #[diagnostic::on_unimplemented(
        message = "a column of type `{Self}` cannot be returned as `{R}`",
        label = "the selected column does not match the fn's return type"
    )]
    pub trait Selectable<R> {}
    impl<T: crate::value::ColumnValue> Selectable<T> for T {}
    impl<T: crate::value::ColumnValue> Selectable<Option<T>> for T {}

    /// Type-checks `select(|x| x.col)` against the return type's item type `R`.
    pub fn select<R, C: Selectable<R>>(_c: &C) {}

    /// The field names of a table's primary-key columns, known at compile time.
    /// Implemented by `#[derive(Table)]`; `#[query_group]` uses it to reject an update
    /// that assigns to a key column (see [`not_primary_key`]).
    pub trait PrimaryKeyFields {
        /// Field names of the primary-key columns, in key order.
        const FIELDS: &'static [&'static str];
    }

    /// Panics — a compile error when evaluated in a constant — when `field` is one of
    /// `pk`. `#[query_group]` evaluates it for every update assignment.
    pub const fn not_primary_key(pk: &[&str], field: &str) {
        let mut i = 0;
        while i < pk.len() {
            if const_str_eq(pk[i], field) {
                panic!("datalayer: an update cannot assign to a primary-key column");
            }
            i += 1;
        }
    }

    const fn const_str_eq(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    /// A literal written in a query or a conditional index, converted to the type `ty`
    /// of the column it is compared with or assigned to when it fits (`18` becomes
    /// `I32(18)` next to an `i32` column), else kept as written. Keeping literals in the
    /// column's type lets engines bind them and match conditional indexes exactly.
    pub fn literal(v: crate::value::Value, ty: Option<crate::value::ColumnType>) -> super::Expr {
        let v = match ty {
            Some(t) => v.clone().coerce(t).unwrap_or(v),
            None => v,
        };
        super::Expr::Literal(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnDef, TableSchema};

    #[test]
    fn order_by_a_json_column_is_refused() {
        let t: &'static TableSchema = Box::leak(Box::new(TableSchema {
            name: "t".into(),
            columns: vec![
                ColumnDef::new("id", ColumnType::I64, false),
                ColumnDef::new("doc", ColumnType::Json, false),
            ],
            primary_key: vec![0],
            indexes: vec![],
            version: None,
        }));
        let mut q = QueryBuilder::new("by_doc", t);
        q.order_by("doc", false);
        let err = q.build().expect_err("json has no order");
        assert!(err.message().contains("cannot order by json"), "{err}");
        let mut q = QueryBuilder::new("by_id", t);
        q.order_by("id", true);
        assert!(q.build().is_ok());
        // Nor in a key or an index.
        let mut bad = t.clone();
        bad.indexes.push(crate::schema::IndexDef {
            name: "by_doc".into(),
            columns: vec![1],
            unique: false,
            when: None,
        });
        assert!(bad.validate().is_err());
    }
}
