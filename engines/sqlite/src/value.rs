//! Value ↔ SQLite mapping.
//!
//! | [`ColumnType`] | SQLite storage (STRICT table)  | read back                          |
//! |----------------|--------------------------------|------------------------------------|
//! | `Bool`         | `INTEGER` 0 / 1 (CHECK)        | 0 → false, 1 → true                |
//! | `I16`, `I32`   | `INTEGER` (range CHECK)        | range-checked                      |
//! | `I64`          | `INTEGER`                      |                                    |
//! | `F32`          | `REAL` (the f32 widened)       | narrowed to f32                    |
//! | `F64`          | `REAL`                         |                                    |
//! | `String`       | `TEXT` (UTF-8)                 | UTF-8 checked                      |
//! | `Bytes`        | `BLOB`                         |                                    |
//! | `Uuid`         | `BLOB`, 16 bytes (CHECK)       |                                    |
//! | `Timestamp`    | `TEXT` `YYYY-MM-DDTHH:MM:SS.ffffffZ` (CHECK length) | parsed (RFC 3339) |
//! | `Date`         | `TEXT` `YYYY-MM-DD` (CHECK length) | parsed                         |
//! | `Decimal`      | `BLOB`, [`Numeric::encode_sortable`] | decoded                      |
//! | `Json`         | `TEXT`, canonical (CHECK `json_valid`) | canonicalized              |
//!
//! Timestamps and dates are ISO 8601 text, SQLite's documented convention for its
//! date and time functions, in a fixed width so that text order is time order
//! ([`datalayer_sql::text`]). Decimals are blobs of their order-preserving encoding:
//! SQLite has no exact decimal type (`REAL` rounds, decimal text sorts as text), and
//! blobs compare with `memcmp`, so `ORDER BY`, ranges and unique indexes agree with
//! every other engine.
//!
//! A stored value that does not fit its column's type is `Corrupted`.

use datalayer_core::{ColumnType, Error, Numeric, Result, Value};
use datalayer_sql::text;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};

/// A [`Value`] bound as a SQLite parameter (borrowed, no copy of text or bytes).
pub(crate) struct Sql<'a>(pub &'a Value);

impl ToSql for Sql<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let owned = |r: Result<String>| {
            r.map(|t| ToSqlOutput::Owned(rusqlite::types::Value::Text(t)))
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
        };
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Timestamp(us) => return owned(text::timestamp_text(*us)),
            Value::Date(d) => return owned(text::date_text(*d)),
            Value::Decimal(n) => {
                return Ok(ToSqlOutput::Owned(rusqlite::types::Value::Blob(
                    n.to_sortable(),
                )));
            }
            Value::Uuid(b) => ValueRef::Blob(b),
            Value::Json(t) => ValueRef::Text(t.as_bytes()),
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
            Value::I16(x) => ValueRef::Integer(i64::from(*x)),
            Value::I32(x) => ValueRef::Integer(i64::from(*x)),
            Value::I64(x) => ValueRef::Integer(*x),
            Value::F32(x) => ValueRef::Real(f64::from(*x)),
            Value::F64(x) => ValueRef::Real(*x),
            Value::String(s) => ValueRef::Text(s.as_bytes()),
            Value::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

fn utf8(t: &[u8]) -> Result<&str> {
    std::str::from_utf8(t).map_err(|_| Error::corrupted("a stored TEXT value is not UTF-8"))
}

fn bad(ty: ColumnType, got: &ValueRef<'_>) -> Error {
    Error::corrupted(format!(
        "a stored {:?} value does not fit a {ty:?} column",
        got.data_type()
    ))
}

/// Decodes a stored value as `ty`.
///
/// # Errors
/// `Corrupted` when the stored value does not fit `ty`.
pub(crate) fn decode(v: ValueRef<'_>, ty: ColumnType) -> Result<Value> {
    Ok(match (ty, v) {
        (_, ValueRef::Null) => Value::Null,
        (ColumnType::Bool, ValueRef::Integer(0)) => Value::Bool(false),
        (ColumnType::Bool, ValueRef::Integer(1)) => Value::Bool(true),
        (ColumnType::I16, ValueRef::Integer(i)) => {
            Value::I16(i16::try_from(i).map_err(|_| bad(ty, &v))?)
        }
        (ColumnType::I32, ValueRef::Integer(i)) => {
            Value::I32(i32::try_from(i).map_err(|_| bad(ty, &v))?)
        }
        (ColumnType::I64, ValueRef::Integer(i)) => Value::I64(i),
        (ColumnType::F32, ValueRef::Real(f)) => Value::F32(f as f32),
        (ColumnType::F32, ValueRef::Integer(i)) => Value::F32(i as f32),
        (ColumnType::F64, ValueRef::Real(f)) => Value::F64(f),
        (ColumnType::F64, ValueRef::Integer(i)) => Value::F64(i as f64),
        (ColumnType::String, ValueRef::Text(t)) => Value::String(utf8(t)?.to_owned()),
        (ColumnType::Bytes, ValueRef::Blob(b)) => Value::Bytes(b.to_vec()),
        (ColumnType::Uuid, ValueRef::Blob(b)) => {
            Value::Uuid(b.try_into().map_err(|_| bad(ty, &v))?)
        }
        (ColumnType::Timestamp, ValueRef::Text(t)) => {
            Value::Timestamp(text::parse_timestamp_text(utf8(t)?)?)
        }
        (ColumnType::Date, ValueRef::Text(t)) => Value::Date(text::parse_date_text(utf8(t)?)?),
        (ColumnType::Decimal, ValueRef::Blob(b)) => match Numeric::decode_sortable(b) {
            Ok((n, len)) if len == b.len() => Value::Decimal(n),
            _ => return Err(bad(ty, &v)),
        },
        (ColumnType::Json, ValueRef::Text(t)) => Value::json_from_text(utf8(t)?)
            .map_err(|e| Error::corrupted(format!("a stored JSON value: {}", e.message())))?,
        _ => return Err(bad(ty, &v)),
    })
}

/// Reads one result row whose columns have `types`.
pub(crate) fn read_row(row: &rusqlite::Row<'_>, types: &[ColumnType]) -> Result<Vec<Value>> {
    types
        .iter()
        .enumerate()
        .map(|(i, &ty)| decode(row.get_ref(i).map_err(crate::error::map_err)?, ty))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_checks_ranges_and_types() {
        assert_eq!(
            decode(ValueRef::Integer(1), ColumnType::Bool).unwrap(),
            Value::Bool(true)
        );
        assert!(
            decode(ValueRef::Integer(2), ColumnType::Bool)
                .unwrap_err()
                .is_corrupted()
        );
        assert!(
            decode(ValueRef::Integer(70_000), ColumnType::I16)
                .unwrap_err()
                .is_corrupted()
        );
        assert_eq!(
            decode(ValueRef::Real(0.5), ColumnType::F32).unwrap(),
            Value::F32(0.5)
        );
        assert!(decode(ValueRef::Text(b"x"), ColumnType::I64).is_err());
        assert_eq!(
            decode(ValueRef::Null, ColumnType::I64).unwrap(),
            Value::Null
        );
    }
}
