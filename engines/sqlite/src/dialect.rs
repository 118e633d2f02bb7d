//! SQLite's [`Dialect`].

use datalayer_core::ColumnType;
use datalayer_sql::Dialect;

/// The SQL dialect of SQLite (≥ 3.37: STRICT tables, row values, `RETURNING`,
/// `ON CONFLICT ... DO UPDATE`).
///
/// - Placeholders `?1`, `?2`, ...
/// - Tables are `STRICT`: `INTEGER` (bool, i16, i32, i64), `REAL` (f32, f64), `TEXT`,
///   `BLOB`; `CHECK` constraints keep bools at 0/1 and i16/i32 in range, so a raw-SQL
///   write cannot store what datalayer could not read back.
/// - NULL already sorts first ascending and last descending: `ORDER BY` needs no
///   `NULLS FIRST/LAST`.
/// - `starts_with` is `GLOB` (case-sensitive, unlike SQLite's `LIKE`) with `*`, `?`
///   and `[` escaped as `[*]`, `[?]`, `[[]`.
/// - Identifiers have no length limit: generated names (`<table>__<index>`,
///   `_dl_cdc_<table>_<op>`) are used unchanged.
/// - Indexes of a table are listed with `pragma_index_list`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SqliteDialect;

impl Dialect for SqliteDialect {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn placeholder(&self, n: usize) -> String {
        format!("?{n}")
    }
    fn column_type(&self, ty: ColumnType) -> &'static str {
        match ty {
            ColumnType::Bool | ColumnType::I16 | ColumnType::I32 | ColumnType::I64 => "INTEGER",
            ColumnType::F32 | ColumnType::F64 => "REAL",
            ColumnType::String | ColumnType::Timestamp | ColumnType::Date | ColumnType::Json => {
                "TEXT"
            }
            ColumnType::Bytes | ColumnType::Uuid | ColumnType::Decimal => "BLOB",
        }
    }
    fn column_check(&self, col: &str, ty: ColumnType) -> Option<String> {
        match ty {
            ColumnType::Bool => Some(format!("{col} IN (0, 1)")),
            ColumnType::I16 => Some(format!("{col} BETWEEN {} AND {}", i16::MIN, i16::MAX)),
            ColumnType::I32 => Some(format!("{col} BETWEEN {} AND {}", i32::MIN, i32::MAX)),
            ColumnType::Uuid => Some(format!("length({col}) = 16")),
            ColumnType::Timestamp => Some(format!("length({col}) = 27")),
            ColumnType::Date => Some(format!("length({col}) = 10")),
            ColumnType::Json => Some(format!("json_valid({col})")),
            _ => None,
        }
    }
    fn table_options(&self) -> &'static str {
        " STRICT"
    }
    fn bool_literal(&self, b: bool) -> &'static str {
        if b { "1" } else { "0" }
    }
    fn bytes_literal(&self, b: &[u8]) -> String {
        let mut s = String::with_capacity(3 + 2 * b.len());
        s.push_str("X'");
        for x in b {
            s.push_str(&format!("{x:02X}"));
        }
        s.push('\'');
        s
    }
    fn order_term(&self, expr: &str, desc: bool, _nullable: bool) -> String {
        if desc {
            format!("{expr} DESC")
        } else {
            expr.to_owned()
        }
    }
    fn supports_returning(&self) -> bool {
        true
    }
    fn index_list_sql(&self) -> String {
        "SELECT name, \"unique\" FROM pragma_index_list(?1)".to_owned()
    }
    fn starts_with(&self, text: &str, pattern: &str) -> String {
        format!("({text} GLOB {pattern})")
    }
    fn prefix_pattern(&self, prefix: &str) -> String {
        let mut p = String::with_capacity(prefix.len() + 1);
        for ch in prefix.chars() {
            match ch {
                '*' => p.push_str("[*]"),
                '?' => p.push_str("[?]"),
                '[' => p.push_str("[[]"),
                c => p.push(c),
            }
        }
        p.push('*');
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escaping_matches_literally() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let d = SqliteDialect;
        let m = |s: &str, p: &str| -> bool {
            c.query_row("SELECT ?1 GLOB ?2", [s, &d.prefix_pattern(p)], |r| r.get(0))
                .unwrap()
        };
        assert!(m("a*b?c[d]e", "a*b?c[d]"));
        assert!(!m("axbyc", "a*b"));
        assert!(!m("Abc", "a"));
        assert!(m("abc", ""));
        assert!(m("100%_x", "100%_"));
    }
}
