//! Change capture, the part every SQL engine shares: decoding the change log.
//!
//! Each SQL engine's triggers append `(position, tbl, op, row)` to `_dl_cdc_log`, with
//! the row image as a JSON array in column order (bytes as hex strings, non-finite
//! floats as `"NaN"`/`"Infinity"`/`"-Infinity"` where the database's JSON has no number
//! for them, booleans as JSON booleans or SQLite's `0`/`1`; timestamps as µs or ISO
//! 8601 text, dates as days or `YYYY-MM-DD`, UUIDs as hex, decimals as text or the hex
//! of their sortable form, JSON documents as their text: see [`crate::text`]). [`ChangeDecoder`] turns
//! those records into [`Change`]s with the table's declared column types.

use datalayer_core::{Change, ChangeKind, ColumnType, Error, Result, TableSchema, Value};
use std::collections::HashMap;

/// Decodes the change-log records of one table.
pub struct ChangeDecoder {
    table: String,
    columns: Vec<String>,
    types: Vec<Option<ColumnType>>,
}

impl ChangeDecoder {
    /// A decoder for `table` whose columns are `columns` (name, declared SQL type, in
    /// column order, as the database reports them). A column's type comes from the
    /// catalog entry `catalog` when it has one, else from `declared` applied to its SQL
    /// type, else from the JSON value itself.
    pub fn new(
        table: &str,
        columns: &[(String, String)],
        catalog: Option<&TableSchema>,
        declared: fn(&str) -> Option<ColumnType>,
    ) -> ChangeDecoder {
        let by_name: HashMap<&str, ColumnType> = catalog
            .map(|s| s.columns.iter().map(|c| (c.name.as_str(), c.ty)).collect())
            .unwrap_or_default();
        ChangeDecoder {
            table: table.to_owned(),
            columns: columns.iter().map(|(n, _)| n.clone()).collect(),
            types: columns
                .iter()
                .map(|(n, decl)| by_name.get(n.as_str()).copied().or_else(|| declared(decl)))
                .collect(),
        }
    }

    /// One change from its log record: `position`, `op` (`insert`, `update`,
    /// `delete`) and the JSON row image.
    ///
    /// # Errors
    /// `Corrupted` for an unknown op, an image that is not a JSON array, or a value
    /// that does not fit its column.
    pub fn decode(&self, position: i64, op: &str, image: &str) -> Result<Change> {
        let kind = match op {
            "insert" => ChangeKind::Insert,
            "update" => ChangeKind::Update,
            "delete" => ChangeKind::Delete,
            other => {
                return Err(Error::corrupted(format!(
                    "change log: unknown op {other:?}"
                )));
            }
        };
        let vals: Vec<serde_json::Value> = serde_json::from_str(image)
            .map_err(|e| Error::corrupted(format!("change log row {position}: {e}")))?;
        let n = vals.len().min(self.columns.len());
        let values = vals
            .iter()
            .take(n)
            .zip(&self.types)
            .map(|(j, ty)| json_value(j, *ty))
            .collect::<Result<Vec<_>>>()?;
        Ok(Change {
            position: u64::try_from(position)
                .map_err(|_| Error::corrupted(format!("change log: position {position}")))?,
            table: self.table.clone(),
            kind,
            columns: self.columns[..n].to_vec(),
            values,
        })
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn special_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Decodes one JSON value of a row image as `ty` (`None`: by its JSON type).
fn json_value(j: &serde_json::Value, ty: Option<ColumnType>) -> Result<Value> {
    use serde_json::Value as J;
    let bad = || Error::corrupted(format!("change log value {j} does not fit {ty:?}"));
    let int = |n: &serde_json::Number| n.as_i64().ok_or_else(bad);
    Ok(match (j, ty) {
        (J::Null, _) => Value::Null,
        (J::Bool(b), Some(ColumnType::Bool) | None) => Value::Bool(*b),
        (J::Number(n), Some(ColumnType::Bool)) => match n.as_i64() {
            Some(0) => Value::Bool(false),
            Some(1) => Value::Bool(true),
            _ => return Err(bad()),
        },
        (J::Number(n), Some(ColumnType::I16)) => {
            Value::I16(i16::try_from(int(n)?).map_err(|_| bad())?)
        }
        (J::Number(n), Some(ColumnType::I32)) => {
            Value::I32(i32::try_from(int(n)?).map_err(|_| bad())?)
        }
        (J::Number(n), Some(ColumnType::I64)) => Value::I64(int(n)?),
        (J::Number(n), Some(ColumnType::F32)) => Value::F32(n.as_f64().ok_or_else(bad)? as f32),
        (J::Number(n), Some(ColumnType::F64)) => Value::F64(n.as_f64().ok_or_else(bad)?),
        (J::String(s), Some(ColumnType::F32)) => {
            Value::F32(special_float(s).ok_or_else(bad)? as f32)
        }
        (J::String(s), Some(ColumnType::F64)) => Value::F64(special_float(s).ok_or_else(bad)?),
        (J::String(s), Some(ColumnType::String) | None) => Value::String(s.clone()),
        (J::String(s), Some(ColumnType::Bytes)) => Value::Bytes(unhex(s).ok_or_else(bad)?),
        (J::String(s), Some(ColumnType::Uuid)) => {
            Value::Uuid(datalayer_core::value::parse_uuid(s).ok_or_else(bad)?)
        }
        (J::Number(n), Some(ColumnType::Timestamp)) => Value::Timestamp(int(n)?),
        (J::String(s), Some(ColumnType::Timestamp)) => {
            Value::Timestamp(crate::text::parse_timestamp_text(s)?)
        }
        (J::Number(n), Some(ColumnType::Date)) => {
            Value::Date(i32::try_from(int(n)?).map_err(|_| bad())?)
        }
        (J::String(s), Some(ColumnType::Date)) => Value::Date(crate::text::parse_date_text(s)?),
        (J::String(s), Some(ColumnType::Decimal)) => {
            Value::Decimal(crate::text::parse_decimal_log(s).ok_or_else(bad)?)
        }
        (J::String(s), Some(ColumnType::Json)) => Value::json_from_text(s).map_err(|_| bad())?,
        (J::Number(n), None) => match n.as_i64() {
            Some(i) => Value::I64(i),
            None => Value::F64(n.as_f64().ok_or_else(bad)?),
        },
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_by_type() {
        let j: Vec<serde_json::Value> =
            serde_json::from_str(r#"[1, 0.1, "00FF", null, 70000, true, "NaN", "-Infinity"]"#)
                .unwrap();
        let v = |i: usize, ty| json_value(&j[i], ty);
        assert_eq!(v(0, Some(ColumnType::Bool)).unwrap(), Value::Bool(true));
        assert_eq!(v(1, Some(ColumnType::F64)).unwrap(), Value::F64(0.1));
        assert_eq!(
            v(2, Some(ColumnType::Bytes)).unwrap(),
            Value::Bytes(vec![0, 255])
        );
        assert_eq!(v(3, Some(ColumnType::I32)).unwrap(), Value::Null);
        assert!(v(4, Some(ColumnType::I16)).unwrap_err().is_corrupted());
        assert_eq!(v(4, None).unwrap(), Value::I64(70000));
        assert_eq!(v(5, Some(ColumnType::Bool)).unwrap(), Value::Bool(true));
        assert!(matches!(v(6, Some(ColumnType::F64)).unwrap(), Value::F64(x) if x.is_nan()));
        assert_eq!(
            v(7, Some(ColumnType::F32)).unwrap(),
            Value::F32(f32::NEG_INFINITY)
        );
        assert!(v(2, Some(ColumnType::I64)).unwrap_err().is_corrupted());
    }

    #[test]
    fn decodes_records() {
        let cols = [
            ("id".to_owned(), "INTEGER".to_owned()),
            ("blob".to_owned(), "BLOB".to_owned()),
        ];
        let declared = |d: &str| match d {
            "INTEGER" => Some(ColumnType::I64),
            "BLOB" => Some(ColumnType::Bytes),
            _ => None,
        };
        let d = ChangeDecoder::new("t", &cols, None, declared);
        let c = d.decode(7, "update", r#"[3, "0a"]"#).unwrap();
        assert_eq!(c.position, 7);
        assert_eq!(c.kind, ChangeKind::Update);
        assert_eq!(c.columns, vec!["id", "blob"]);
        assert_eq!(c.values, vec![Value::I64(3), Value::Bytes(vec![10])]);
        assert!(d.decode(8, "merge", "[]").unwrap_err().is_corrupted());
        assert!(d.decode(9, "insert", "{").unwrap_err().is_corrupted());
    }
}
