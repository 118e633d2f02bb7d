//! PostgreSQL's [`Dialect`].

use datalayer_core::ColumnType;
use datalayer_sql::Dialect;

/// The SQL dialect of PostgreSQL (≥ 13).
///
/// - Placeholders `$1`, `$2`, ...
/// - Column types `BOOLEAN`, `SMALLINT`, `INTEGER`, `BIGINT`, `REAL`,
///   `DOUBLE PRECISION`, `TEXT COLLATE "C"`, `BYTEA`, `UUID`, `TIMESTAMPTZ`, `DATE`,
///   `NUMERIC`, `JSONB`. Text uses the `C` collation so
///   that comparisons and `ORDER BY` follow byte (code point) order, as in every other
///   engine, whatever the database's default collation is.
/// - `ORDER BY` spells out `NULLS FIRST` (ascending) / `NULLS LAST` (descending).
/// - `starts_with` is `LIKE $n ESCAPE '\'` with `\`, `%`, `_` escaped (case-sensitive).
/// - Literals: `TRUE`/`FALSE`, `'\x..'::bytea`.
/// - Identifiers keep at most 63 bytes (`NAMEDATALEN - 1`; the server silently
///   truncates longer ones, PostgreSQL documentation, "Identifiers and Key Words"):
///   generated names longer than that get a prefix and a hash
///   ([`datalayer_sql::fit_identifier`]).
/// - Indexes of a table are listed from `pg_index` for the table that the unqualified
///   name resolves to (`to_regclass`, the connection's `search_path`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PgDialect;

impl Dialect for PgDialect {
    fn name(&self) -> &'static str {
        "postgres"
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
            ColumnType::String => "TEXT COLLATE \"C\"",
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
        let mut s = String::with_capacity(12 + 2 * b.len());
        s.push_str("'\\x");
        for x in b {
            s.push_str(&format!("{x:02x}"));
        }
        s.push_str("'::bytea");
        s
    }
    fn supports_returning(&self) -> bool {
        true
    }
    fn online_index(&self) -> &'static str {
        "CONCURRENTLY "
    }
    fn index_column(&self, expr: &str, nullable: bool) -> String {
        if nullable {
            format!("{expr} NULLS FIRST")
        } else {
            expr.to_owned()
        }
    }
    fn max_identifier_bytes(&self) -> Option<usize> {
        Some(MAX_IDENTIFIER_BYTES)
    }
    /// `SELECT * FROM UNNEST($1::int8[], $2::text[], ...)`: one array per column, as
    /// the backend binds them (`crate::backend::bulk_params`). `UNNEST` of several
    /// arrays zips them into rows (PostgreSQL documentation, "Array Functions").
    fn bulk_rows_source(&self, types: &[ColumnType]) -> Option<String> {
        let arrays: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, &ty)| format!("${}::{}[]", i + 1, crate::value::pg_type(ty).name()))
            .collect();
        Some(format!("SELECT * FROM UNNEST({})", arrays.join(", ")))
    }
    fn index_list_sql(&self) -> String {
        "SELECT c.relname::text, x.indisunique FROM pg_index x \
         JOIN pg_class c ON c.oid = x.indexrelid \
         WHERE x.indrelid = to_regclass(quote_ident($1))"
            .to_owned()
    }
}

/// The most bytes of an identifier PostgreSQL keeps: `NAMEDATALEN - 1` = 63 with the
/// default build (PostgreSQL documentation, "Identifiers and Key Words"). Longer
/// identifiers are truncated by the server with only a NOTICE.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        let d = PgDialect;
        assert_eq!(d.bytes_literal(&[0, 255]), "'\\x00ff'::bytea");
        assert_eq!(d.placeholder(3), "$3");
        assert_eq!(d.order_term("\"a\"", false, true), "\"a\" ASC NULLS FIRST");
        assert_eq!(d.order_term("\"a\"", true, false), "\"a\" DESC");
        assert_eq!(d.index_column("\"a\"", true), "\"a\" NULLS FIRST");
        assert_eq!(d.prefix_pattern("a%_\\"), "a\\%\\_\\\\%");
    }
}
