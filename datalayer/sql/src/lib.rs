//! The SQL engine family (SQLite, PostgreSQL).
//!
//! One executor, [`SqlEngine`], implements the engine contract for every SQL database
//! over a [`SqlBackend`] (connections, dialect, value codec, error mapping, trigger
//! SQL); see [`engine`].
//!
//! A SQL engine never builds SQL on the hot path. Everything here runs once: when a
//! table is registered ([`render_ddl`], [`render_table`]), when a query is registered
//! or first seen ([`render_query`]), and when a keyset scan of a new *shape* is first
//! seen ([`render_scan`]; the shape, [`ScanShape`], is what the SQL depends on: index,
//! prefix length, bound kinds, which values are NULL, cursor, direction, limit). Engines
//! prepare the result once per connection and afterwards only bind values and step.
//!
//! The few places where SQL dialects differ are behind the small [`Dialect`] trait
//! (placeholders `?1` vs `$1`, identifier quoting, column types, literals, NULL
//! ordering, upsert, prefix matching). The renderer itself is dialect-generic.
//!
//! # Semantics (identical to the KV family, `datalayer_kv`)
//! - Filters use SQL's own three-valued logic, which is what [`datalayer_core::eval`] implements
//!   for the KV family: a comparison with NULL is unknown, a row is kept only when the
//!   filter is true.
//! - Ordering: NULL sorts first ascending and last descending. Ties after the query's
//!   `ORDER BY` are broken by the access path the KV planner ([`datalayer_core::plan`])
//!   would use (index columns, then primary-key columns), so both families return the
//!   same rows in the same order, also for `LIMIT`.
//! - Keyset scans compare positions in *key order* (NULL smallest), not with SQL's
//!   NULL-is-unknown comparisons, so cursors and bounds that contain NULL work.
//!
//! # Safety of generated SQL
//! Identifiers are validated ([`datalayer_core::validate_identifier`]) and quoted
//! ([`Dialect::quote_ident`]). Every runtime value (query parameters, rows, keys, scan
//! bounds, cursors, limits) travels as a bound parameter. Literals that are part of a
//! query or index *definition* (code, never user input: `u.active == true`, a partial
//! index's `when`) are rendered inline by [`Dialect::literal`], which only ever emits
//! numbers, `NULL`, quote-doubled strings and hex blobs, so that the database can match
//! partial indexes against query filters.
//!
//! # Generated identifiers
//! Names datalayer makes up (index names `<table>__<index>`, change-capture triggers
//! and functions `_dl_cdc_<table>`) go through [`Dialect::generated_ident`]: unchanged
//! when they fit the database's identifier limit (PostgreSQL keeps 63 bytes), else a
//! readable prefix plus a hash of the full name ([`fit_identifier`]), so two long
//! names never collapse into one object. After a table's DDL, one catalog query checks
//! that each declared index exists with its uniqueness ([`verify_indexes`]).

mod alter;
pub mod cdc;
mod ddl;
pub mod engine;
mod ident;
pub mod registry;
mod render;
pub mod text;
pub mod work;

pub use cdc::ChangeDecoder;
pub use ddl::{index_name, render_ddl, render_index, verify_indexes};
pub use engine::{
    OP_RELEASE, OP_ROLLBACK_TO, OP_SAVEPOINT, SqlBackend, SqlConn, SqlEngine, catalog_ddl,
};
pub use ident::{HASH_SUFFIX_BYTES, fit_identifier, truncated_identifier};
pub use registry::{Registry, StmtDef, StmtKey, TableInfo, TableOp};
pub use render::{
    Bind, BoundShape, OutputShape, RenderedQuery, RenderedScan, ScanBind, ScanShape, TableSql,
    render_expr_inline, render_query, render_scan, render_table,
};
pub use work::{BULK_MIN_ROWS, Fetch, Fetched, Work};

use datalayer_core::error::{Error, Result};
use datalayer_core::value::{ColumnType, Value};

/// What differs between SQL databases. Implemented by each SQL engine (`SqliteDialect`
/// in `datalayer-sqlite`); the renderer in this module is generic over it.
pub trait Dialect: Send + Sync + 'static {
    /// Short name (`sqlite`, `postgres`), for messages.
    fn name(&self) -> &'static str;

    /// The placeholder of bound parameter number `n` (1-based): `?1` in SQLite, `$1`
    /// in PostgreSQL. The renderer uses each number once per distinct value and may
    /// repeat a placeholder where the same value is needed twice.
    fn placeholder(&self, n: usize) -> String;

    /// The most bytes of an identifier the database keeps, `None` for no limit.
    /// PostgreSQL: `Some(63)` (`NAMEDATALEN - 1`; longer identifiers are silently
    /// truncated, see the PostgreSQL documentation, "Identifiers and Key Words").
    /// SQLite: `None`. Default: `None`.
    fn max_identifier_bytes(&self) -> Option<usize> {
        None
    }

    /// A generated identifier (index, trigger, function name) from its full readable
    /// form `full` (`<table>__<index>`, `_dl_cdc_<table>`), within
    /// [`Dialect::max_identifier_bytes`]: `full` itself when it fits, else a prefix plus
    /// a hash of `full` ([`fit_identifier`]). At most `max_identifier_bytes` bytes.
    fn generated_ident(&self, full: &str) -> String {
        fit_identifier(full, self.max_identifier_bytes())
    }

    /// A query listing the indexes of one table, used to check after DDL that every
    /// declared index exists ([`verify_indexes`]). It takes one bound parameter, the
    /// table's name (unquoted; resolved as the DDL's unqualified name is), and returns
    /// one row per index of that table: `(name, unique)`, a text and a value read as
    /// [`ColumnType::Bool`] (a boolean, or SQLite's integer 0/1). Runs once per table
    /// when the table is created or first checked, never on the hot path.
    fn index_list_sql(&self) -> String;

    /// Quotes an identifier (already validated): `"name"` with `"` doubled.
    fn quote_ident(&self, ident: &str) -> String {
        format!("\"{}\"", ident.replace('"', "\"\""))
    }

    /// The column type used in `CREATE TABLE` for `ty`.
    fn column_type(&self, ty: ColumnType) -> &'static str;

    /// A row source for many rows in one statement, one array parameter per column
    /// (`types`, in column order): PostgreSQL's `SELECT * FROM UNNEST($1::int8[],
    /// $2::text[], ...)`, so that an insert of N rows is one statement instead of N.
    /// `None` (the default) where the database has no such form: rows then go one
    /// statement each.
    fn bulk_rows_source(&self, types: &[ColumnType]) -> Option<String> {
        let _ = types;
        None
    }

    /// An optional `CHECK` expression enforcing the range of `ty` in a database whose
    /// column type is wider (SQLite stores `i16` in a 64-bit `INTEGER`). `col` is the
    /// quoted column name. Default: none.
    fn column_check(&self, col: &str, ty: ColumnType) -> Option<String> {
        let _ = (col, ty);
        None
    }

    /// The keyword that builds an index without blocking writes, with its trailing
    /// space (PostgreSQL: `CONCURRENTLY `, which cannot run inside a transaction;
    /// PostgreSQL documentation, "Building Indexes Concurrently"). Default: none (the
    /// build runs in a DDL transaction; SQLite has one writer anyway).
    fn online_index(&self) -> &'static str {
        ""
    }

    /// Text appended after the closing parenthesis of `CREATE TABLE` (SQLite:
    /// ` STRICT`). Default: empty.
    fn table_options(&self) -> &'static str {
        ""
    }

    /// The literal for a boolean (`1`/`0` in SQLite, `TRUE`/`FALSE` in PostgreSQL).
    fn bool_literal(&self, b: bool) -> &'static str;

    /// The literal for a byte string (SQLite: `X'00ff'`).
    fn bytes_literal(&self, b: &[u8]) -> String;

    /// An inline literal (for partial-index predicates and literals written in query
    /// definitions; never for runtime values).
    ///
    /// # Errors
    /// `InvalidInput` for a value that has no safe literal (a non-finite float, a
    /// string containing NUL).
    fn literal(&self, v: &Value) -> Result<String> {
        Ok(match v {
            Value::Null => "NULL".to_owned(),
            Value::Bool(b) => self.bool_literal(*b).to_owned(),
            Value::I16(x) => int_literal(i64::from(*x)),
            Value::I32(x) => int_literal(i64::from(*x)),
            Value::I64(x) => int_literal(*x),
            Value::F32(x) => float_literal(f64::from(*x))?,
            Value::F64(x) => float_literal(*x)?,
            Value::String(s) => {
                if s.contains('\0') {
                    return Err(Error::invalid_input("a string literal cannot contain NUL"));
                }
                format!("'{}'", s.replace('\'', "''"))
            }
            Value::Bytes(b) => self.bytes_literal(b),
            // Never written in a query or an index predicate (the DSL's literals are
            // numbers, text and booleans); parameters carry these.
            Value::Uuid(_)
            | Value::Timestamp(_)
            | Value::Date(_)
            | Value::Decimal(_)
            | Value::Json(_) => {
                return Err(Error::invalid_input(format!(
                    "{v} has no inline SQL literal; pass it as a parameter"
                )));
            }
        })
    }

    /// One `ORDER BY` term with datalayer's NULL order: NULL first ascending, last
    /// descending. SQLite does this by default; PostgreSQL needs `NULLS FIRST`/`LAST`,
    /// and only for a `nullable` column: on a `NOT NULL` one the NULL order means
    /// nothing, and a plain `ASC`/`DESC` matches the server's default index order, so
    /// that a keyset scan walks the index instead of sorting the whole table
    /// (PostgreSQL documentation, "Indexes and ORDER BY").
    fn order_term(&self, expr: &str, desc: bool, nullable: bool) -> String {
        match (desc, nullable) {
            (true, true) => format!("{expr} DESC NULLS LAST"),
            (false, true) => format!("{expr} ASC NULLS FIRST"),
            (true, false) => format!("{expr} DESC"),
            (false, false) => format!("{expr} ASC"),
        }
    }

    /// One column of a `CREATE INDEX`, in the order [`Dialect::order_term`] scans it:
    /// PostgreSQL puts NULLs last by default, so a nullable column is declared `NULLS
    /// FIRST` for its ascending and descending scans to walk the index. Default: the
    /// column as is (SQLite sorts NULL first already).
    fn index_column(&self, expr: &str, nullable: bool) -> String {
        let _ = nullable;
        expr.to_owned()
    }

    /// The conflict clause of an upsert on the primary key: `ON CONFLICT ("id") DO
    /// UPDATE SET "name" = excluded."name", ...` (`DO NOTHING` when every column is in
    /// the key). Arguments are quoted names.
    fn upsert_clause(&self, key_cols: &[String], update_cols: &[String]) -> String {
        if update_cols.is_empty() {
            return format!("ON CONFLICT ({}) DO NOTHING", key_cols.join(", "));
        }
        let sets: Vec<String> = update_cols
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        format!(
            "ON CONFLICT ({}) DO UPDATE SET {}",
            key_cols.join(", "),
            sets.join(", ")
        )
    }

    /// Whether `INSERT/UPDATE/DELETE ... RETURNING` is available.
    fn supports_returning(&self) -> bool;

    /// Whether row values (`(a, b) > (?1, ?2)`) compare lexicographically. Default: true
    /// (SQLite ≥ 3.15, PostgreSQL).
    fn supports_row_values(&self) -> bool {
        true
    }

    /// A prefix match of `text` against a pattern made by [`Dialect::prefix_pattern`].
    /// Default: `text LIKE pattern ESCAPE '\'` (case-sensitive in PostgreSQL).
    fn starts_with(&self, text: &str, pattern: &str) -> String {
        format!("({text} LIKE {pattern} ESCAPE '\\')")
    }

    /// The pattern that matches exactly the strings starting with `prefix`, for
    /// [`Dialect::starts_with`]; applied to the parameter at bind time. Default: LIKE
    /// with `\`, `%` and `_` escaped, then `%`.
    fn prefix_pattern(&self, prefix: &str) -> String {
        let mut p = String::with_capacity(prefix.len() + 2);
        for ch in prefix.chars() {
            if matches!(ch, '\\' | '%' | '_') {
                p.push('\\');
            }
            p.push(ch);
        }
        p.push('%');
        p
    }

    /// A prefix match where the prefix is an arbitrary expression (a column): default
    /// `substr(text, 1, length(prefix)) = prefix`.
    fn starts_with_expr(&self, text: &str, prefix: &str) -> String {
        format!("(substr({text}, 1, length({prefix})) = {prefix})")
    }
}

fn int_literal(x: i64) -> String {
    if x < 0 {
        format!("({x})")
    } else {
        x.to_string()
    }
}

fn float_literal(x: f64) -> Result<String> {
    if !x.is_finite() {
        return Err(Error::invalid_input(format!(
            "the float {x} has no SQL literal"
        )));
    }
    // `{:?}` always prints a decimal point or an exponent, and round-trips exactly.
    let s = format!("{x:?}");
    Ok(if x < 0.0 { format!("({s})") } else { s })
}

#[cfg(test)]
pub(crate) mod test_dialect {
    use super::*;

    /// A PostgreSQL-like dialect for the renderer's unit tests.
    pub struct Pg;
    impl Dialect for Pg {
        fn name(&self) -> &'static str {
            "test-pg"
        }
        fn placeholder(&self, n: usize) -> String {
            format!("${n}")
        }
        fn column_type(&self, ty: ColumnType) -> &'static str {
            match ty {
                ColumnType::Bool => "BOOLEAN",
                ColumnType::I16 => "SMALLINT",
                ColumnType::I32 => "INTEGER",
                ColumnType::I64 => "BIGINT",
                ColumnType::F32 => "REAL",
                ColumnType::F64 => "DOUBLE PRECISION",
                ColumnType::String => "TEXT",
                ColumnType::Bytes => "BYTEA",
                ColumnType::Uuid => "UUID",
                ColumnType::Timestamp => "TIMESTAMPTZ",
                ColumnType::Date => "DATE",
                ColumnType::Decimal => "NUMERIC",
                ColumnType::Json => "JSONB",
            }
        }
        fn bool_literal(&self, b: bool) -> &'static str {
            if b { "TRUE" } else { "FALSE" }
        }
        fn bytes_literal(&self, b: &[u8]) -> String {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("'\\x{hex}'::bytea")
        }
        fn supports_returning(&self) -> bool {
            true
        }
        fn max_identifier_bytes(&self) -> Option<usize> {
            Some(63)
        }
        fn index_list_sql(&self) -> String {
            "SELECT name, uniq FROM indexes WHERE tbl = $1".to_owned()
        }
    }
}
