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
//! | `Uuid`         | `UUID`                     | `Uuid` (16 bytes)                           |
//! | `Timestamp`    | `TIMESTAMPTZ`              | `Timestamp` (µs since 2000-01-01 on the wire) |
//! | `Date`         | `DATE`                     | `Date` (days since 2000-01-01 on the wire)  |
//! | `Decimal`      | `NUMERIC`                  | `Decimal` (through `rust_decimal`)          |
//! | `Json`         | `JSONB`                    | `Json` (version byte 1, then the text)      |
//!
//! Binary formats: PostgreSQL's `uuid_send`, `timestamptz_send`, `date_send`,
//! `numeric_send` and `jsonb_send` (src/backend/utils/adt). JSONB read back is
//! canonicalized ([`Value::json_from_text`]): the server reorders object keys.
//!
//! Every statement is prepared with explicit parameter types (from the schema and the
//! query's parameter declarations), so a [`PgValue`] always knows the exact type it
//! encodes to; `NULL` encodes for any type. A value that does not fit its parameter
//! (an integer out of range, text for a number) fails with `InvalidInput` before
//! anything is sent. Results are decoded by the schema's column types; a column whose
//! server type does not match is `Corrupted`.

use crate::error::{EncodeError, map_err};
use bytes::BytesMut;
use datalayer_core::{ColumnType, Error, Numeric, Result, Value};
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
        ColumnType::Uuid => Type::UUID,
        ColumnType::Timestamp => Type::TIMESTAMPTZ,
        ColumnType::Date => Type::DATE,
        ColumnType::Decimal => Type::NUMERIC,
        ColumnType::Json => Type::JSONB,
    }
}

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01 (UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800 * 1_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// The `jsonb` binary format's version byte.
const JSONB_VERSION: u8 = 1;

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
            Type::UUID => match v {
                Value::Uuid(b) => {
                    out.extend_from_slice(b);
                    Ok(IsNull::No)
                }
                _ => Err(bad()),
            },
            Type::TIMESTAMPTZ => match v {
                Value::Timestamp(us) => {
                    v.check_range().map_err(|_| bad())?;
                    (us - PG_EPOCH_MICROS).to_sql(&Type::INT8, out)
                }
                _ => Err(bad()),
            },
            Type::DATE => match v {
                Value::Date(d) => {
                    v.check_range().map_err(|_| bad())?;
                    (d - PG_EPOCH_DAYS).to_sql(&Type::INT4, out)
                }
                _ => Err(bad()),
            },
            Type::NUMERIC => match v {
                Value::Decimal(n) => {
                    rust_decimal::Decimal::try_from_i128_with_scale(n.mantissa(), n.scale())
                        .map_err(|_| bad())?
                        .to_sql(ty, out)
                }
                _ => Err(bad()),
            },
            Type::JSONB => match v {
                Value::Json(t) => {
                    out.extend_from_slice(&[JSONB_VERSION]);
                    out.extend_from_slice(t.as_bytes());
                    Ok(IsNull::No)
                }
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
                | Type::UUID
                | Type::TIMESTAMPTZ
                | Type::DATE
                | Type::NUMERIC
                | Type::JSONB
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
        ColumnType::Uuid => get::<Raw>(row, i)?
            .map(|r| r.0.try_into().map(Value::Uuid))
            .transpose()
            .map_err(|_| Error::corrupted("a uuid value is not 16 bytes"))?,
        ColumnType::Timestamp => get::<Raw>(row, i)?
            .map(|r| {
                fixed::<8>(r.0).map(|b| Value::Timestamp(i64::from_be_bytes(b) + PG_EPOCH_MICROS))
            })
            .transpose()?,
        ColumnType::Date => get::<Raw>(row, i)?
            .map(|r| fixed::<4>(r.0).map(|b| Value::Date(i32::from_be_bytes(b) + PG_EPOCH_DAYS)))
            .transpose()?,
        ColumnType::Decimal => get::<rust_decimal::Decimal>(row, i)?
            .map(|d| Numeric::new(d.mantissa(), d.scale()).map(Value::Decimal))
            .transpose()
            .map_err(|e| Error::corrupted(format!("a numeric value: {}", e.message())))?,
        ColumnType::Json => get::<Raw>(row, i)?
            .map(|r| match r.0.split_first() {
                Some((&JSONB_VERSION, text)) => std::str::from_utf8(text)
                    .map_err(|_| Error::corrupted("a jsonb value is not UTF-8"))
                    .and_then(|t| {
                        Value::json_from_text(t).map_err(|e| {
                            Error::corrupted(format!("a jsonb value: {}", e.message()))
                        })
                    }),
                _ => Err(Error::corrupted(
                    "a jsonb value with an unknown version byte",
                )),
            })
            .transpose()?,
    }
    .unwrap_or(Value::Null))
}

/// The raw binary value of a `uuid`, `timestamptz`, `date` or `jsonb` column, decoded
/// by [`decode`] (the wire formats are fixed: see the module docs).
struct Raw<'a>(&'a [u8]);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxErr> {
        Ok(Raw(raw))
    }
    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::UUID | Type::TIMESTAMPTZ | Type::DATE | Type::JSONB
        )
    }
}

fn fixed<const N: usize>(raw: &[u8]) -> Result<[u8; N]> {
    raw.try_into()
        .map_err(|_| Error::corrupted(format!("a {}-byte value has {} bytes", N, raw.len())))
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

    #[test]
    fn typed_values_use_the_server_epochs() {
        // 2000-01-01T00:00:00.000001Z is 1 µs after PostgreSQL's epoch.
        assert_eq!(
            enc(Value::Timestamp(PG_EPOCH_MICROS + 1), Type::TIMESTAMPTZ).unwrap(),
            1i64.to_be_bytes()
        );
        assert_eq!(
            enc(Value::Date(0), Type::DATE).unwrap(),
            (-10_957i32).to_be_bytes()
        );
        assert!(enc(Value::Date(i32::MAX), Type::DATE).is_err());
        assert_eq!(enc(Value::Uuid([7; 16]), Type::UUID).unwrap(), vec![7; 16]);
        assert_eq!(
            enc(Value::Json("{}".into()), Type::JSONB).unwrap(),
            b"\x01{}".to_vec()
        );
        assert!(enc(Value::String("1".into()), Type::NUMERIC).is_err());
    }
}
