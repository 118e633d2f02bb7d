//! Value ↔ PostgreSQL mapping (binary protocol, no text round trip).
//!
//! | [`ColumnType`] | PostgreSQL column          | parameter encodes from                      |
//! |----------------|----------------------------|---------------------------------------------|
//! | `Bool`         | `BOOLEAN`                  | `Bool`                                      |
//! | `I16`          | `SMALLINT` (int2)          | any integer that fits                       |
//! | `I32`          | `INTEGER` (int4)           | any integer that fits                       |
//! | `I64`          | `BIGINT` (int8)            | any integer                                 |
//! | `F32`          | `REAL` (float4)            | any float (narrowed) or integer             |
//! | `F64`          | `DOUBLE PRECISION` (float8)| any float or integer                        |
//! | `String`       | `TEXT COLLATE "C"`         | `String`                                    |
//! | `Bytes`        | `BYTEA`                    | `Bytes`                                     |
//!
//! Every statement is prepared with explicit parameter types (from the schema and the
//! query's parameter declarations), so a [`PgValue`] always knows the exact type it
//! encodes to; `NULL` encodes for any type. A value that does not fit its parameter
//! (an integer out of range, text for a number) fails with `InvalidInput` before
//! anything is sent. Results are decoded by the schema's column types; a column whose
//! server type does not match is `Corrupted`.

use crate::error::{EncodeError, map_err};
use bytes::BytesMut;
use datalayer_core::{ColumnType, Result, Value};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// The PostgreSQL type of a column type.
pub(crate) fn pg_type(ty: ColumnType) -> Type {
    match ty {
        ColumnType::Bool => Type::BOOL,
        ColumnType::I16 => Type::INT2,
        ColumnType::I32 => Type::INT4,
        ColumnType::I64 => Type::INT8,
        ColumnType::F32 => Type::FLOAT4,
        ColumnType::F64 => Type::FLOAT8,
        ColumnType::String => Type::TEXT,
        ColumnType::Bytes => Type::BYTEA,
    }
}

/// A [`Value`] bound as a parameter (borrowed: text and bytes are not copied).
#[derive(Debug)]
pub(crate) struct PgValue<'a>(pub(crate) &'a Value);

type BoxErr = Box<dyn std::error::Error + Sync + Send>;

fn misfit(v: &Value, ty: &Type) -> BoxErr {
    Box::new(EncodeError(format!(
        "the value {v} does not fit a parameter of type {ty}"
    )))
}

impl ToSql for PgValue<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxErr> {
        let v = self.0;
        if v.is_null() {
            return Ok(IsNull::Yes);
        }
        let bad = || misfit(v, ty);
        match *ty {
            Type::BOOL => match v {
                Value::Bool(b) => b.to_sql(ty, out),
                _ => Err(bad()),
            },
            Type::INT2 => {
                let i = v.as_i64().ok_or_else(bad)?;
                i16::try_from(i).map_err(|_| bad())?.to_sql(ty, out)
            }
            Type::INT4 => {
                let i = v.as_i64().ok_or_else(bad)?;
                i32::try_from(i).map_err(|_| bad())?.to_sql(ty, out)
            }
            Type::INT8 => v.as_i64().ok_or_else(bad)?.to_sql(ty, out),
            Type::FLOAT4 => match v {
                Value::F32(f) => f.to_sql(ty, out),
                Value::F64(f) => (*f as f32).to_sql(ty, out),
                _ => (v.as_f64().ok_or_else(bad)? as f32).to_sql(ty, out),
            },
            Type::FLOAT8 => v.as_f64().ok_or_else(bad)?.to_sql(ty, out),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => match v {
                Value::String(s) => s.as_str().to_sql(ty, out),
                _ => Err(bad()),
            },
            Type::BYTEA => match v {
                Value::Bytes(b) => b.as_slice().to_sql(ty, out),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::BOOL
                | Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::FLOAT4
                | Type::FLOAT8
                | Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
                | Type::UNKNOWN
                | Type::BYTEA
        )
    }

    to_sql_checked!();
}

/// Decodes column `i` of `row` as `ty`.
///
/// # Errors
/// `Corrupted` when the server's column type does not fit `ty`.
pub(crate) fn decode(row: &tokio_postgres::Row, i: usize, ty: ColumnType) -> Result<Value> {
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        i: usize,
    ) -> Result<Option<T>> {
        row.try_get::<_, Option<T>>(i).map_err(map_err)
    }
    Ok(match ty {
        ColumnType::Bool => get::<bool>(row, i)?.map(Value::Bool),
        ColumnType::I16 => get::<i16>(row, i)?.map(Value::I16),
        ColumnType::I32 => get::<i32>(row, i)?.map(Value::I32),
        ColumnType::I64 => get::<i64>(row, i)?.map(Value::I64),
        ColumnType::F32 => get::<f32>(row, i)?.map(Value::F32),
        ColumnType::F64 => get::<f64>(row, i)?.map(Value::F64),
        ColumnType::String => get::<String>(row, i)?.map(Value::String),
        ColumnType::Bytes => get::<Vec<u8>>(row, i)?.map(Value::Bytes),
    }
    .unwrap_or(Value::Null))
}

/// Decodes a whole result row whose columns have `types`.
pub(crate) fn read_row(row: &tokio_postgres::Row, types: &[ColumnType]) -> Result<Vec<Value>> {
    types
        .iter()
        .enumerate()
        .map(|(i, &ty)| decode(row, i, ty))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: Value, ty: Type) -> std::result::Result<Vec<u8>, String> {
        let mut out = BytesMut::new();
        PgValue(&v)
            .to_sql_checked(&ty, &mut out)
            .map(|_| out.to_vec())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn encodes_by_parameter_type() {
        assert_eq!(enc(Value::I64(7), Type::INT2).unwrap(), vec![0, 7]);
        assert_eq!(enc(Value::I16(7), Type::INT8).unwrap(), 7i64.to_be_bytes());
        assert!(enc(Value::I64(70_000), Type::INT2).is_err());
        assert!(enc(Value::String("x".into()), Type::INT4).is_err());
        assert_eq!(
            enc(Value::F64(0.5), Type::FLOAT4).unwrap(),
            0.5f32.to_be_bytes()
        );
        assert_eq!(
            enc(Value::Bytes(vec![1, 2]), Type::BYTEA).unwrap(),
            vec![1, 2]
        );
        assert_eq!(enc(Value::Null, Type::INT4).unwrap(), Vec::<u8>::new());
        assert!(enc(Value::I32(1), Type::JSON).is_err());
    }
}
