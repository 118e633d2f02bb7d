//! Column values and the mapping between Rust types and column types.
//!
//! A row travels between the typed layer and the engines as [`Row`]: a `Vec<Value>` in
//! the table's column order. [`ColumnValue`] maps a Rust field type to a
//! [`ColumnType`]; [`ToValue`] turns query parameters (including borrowed `&str` and
//! `&[u8]`) into values; [`Key`] turns a primary key (a single value or a tuple, for
//! composite keys) into the values of the key columns.
//!
//! Documented mappings beyond the native types:
//! - `std::time::SystemTime` → `I64`, microseconds since the Unix epoch (UTC).
//! - `Vec<i64>`, `Vec<i32>`, `Vec<String>` (id lists) → `Bytes`, postcard-encoded.
//! - `serde_json::Value` → `Json` (canonical text, see [`Value::Json`]); any
//!   `T: Serialize + DeserializeOwned` field with `#[column(json)]` (see [`json`]).
//! - Behind cargo features named after the crates ([`crate::ext`]): `uuid::Uuid` →
//!   `Uuid`; `chrono::DateTime<Utc>` and `time::OffsetDateTime` → `Timestamp`;
//!   `chrono::NaiveDate` → `Date`; `rust_decimal::Decimal` → `Decimal`.
//!
//! Timestamps and dates cover the years 1 to 9999 (every engine can store and order
//! them: PostgreSQL's range is wider, SQLite's ISO-8601 text sorts only within it);
//! a value outside is `InvalidInput` ([`Value::check_range`]).

use crate::error::{Error, Result};
pub use crate::numeric::Numeric;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One row: the column values in the table's column order.
pub type Row = Vec<Value>;

/// The type of a column, as declared by the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    /// `bool`.
    Bool,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// UTF-8 text, `String`.
    String,
    /// Raw bytes, `Vec<u8>`.
    Bytes,
    /// A UUID (RFC 9562), 16 bytes; ordered by its bytes (PostgreSQL `uuid` order).
    Uuid,
    /// An instant, microseconds since 1970-01-01T00:00:00Z (PostgreSQL `timestamptz`).
    Timestamp,
    /// A calendar date, days since 1970-01-01 (PostgreSQL `date`).
    Date,
    /// An exact decimal, [`Numeric`] (PostgreSQL `numeric`).
    Decimal,
    /// A JSON document (PostgreSQL `jsonb`). Not orderable: never in a key, an index,
    /// an `order_by` or a comparison.
    Json,
}

impl ColumnType {
    /// Whether the type is one of the integer types.
    pub fn is_integer(self) -> bool {
        matches!(self, ColumnType::I16 | ColumnType::I32 | ColumnType::I64)
    }
    /// Whether the type is numeric (integer or float).
    pub fn is_numeric(self) -> bool {
        self.is_integer() || matches!(self, ColumnType::F32 | ColumnType::F64)
    }
    /// Whether values of the type have an order every engine agrees on, so that the
    /// column may be in a primary key, an index, an `order_by` or a range filter (all
    /// but `Json`).
    pub fn is_orderable(self) -> bool {
        self != ColumnType::Json
    }
}

/// The earliest [`Value::Timestamp`]: 0001-01-01T00:00:00Z, in microseconds.
pub const MIN_TIMESTAMP_MICROS: i64 = -62_135_596_800 * 1_000_000;
/// The latest [`Value::Timestamp`]: 9999-12-31T23:59:59.999999Z, in microseconds.
pub const MAX_TIMESTAMP_MICROS: i64 = 253_402_300_799 * 1_000_000 + 999_999;
/// The earliest [`Value::Date`]: 0001-01-01, in days since 1970-01-01.
pub const MIN_DATE_DAYS: i32 = -719_162;
/// The latest [`Value::Date`]: 9999-12-31, in days since 1970-01-01.
pub const MAX_DATE_DAYS: i32 = 2_932_896;

/// A single column value. `Null` is SQL NULL and is only allowed in nullable columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub enum Value {
    /// SQL NULL; sorts before every other value in keys.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A 16-bit integer.
    I16(i16),
    /// A 32-bit integer.
    I32(i32),
    /// A 64-bit integer.
    I64(i64),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
    /// UTF-8 text.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A UUID's 16 bytes, in RFC 9562 (network) order.
    Uuid([u8; 16]),
    /// Microseconds since 1970-01-01T00:00:00Z, within [`MIN_TIMESTAMP_MICROS`] ..=
    /// [`MAX_TIMESTAMP_MICROS`] (sub-microsecond digits are dropped on the way in,
    /// toward the past, as PostgreSQL keeps microseconds).
    Timestamp(i64),
    /// Days since 1970-01-01, within [`MIN_DATE_DAYS`] ..= [`MAX_DATE_DAYS`].
    Date(i32),
    /// An exact decimal.
    Decimal(Numeric),
    /// A JSON document as canonical text ([`Value::json`]: compact, object keys sorted
    /// by their bytes), so that every engine returns the same text for the same
    /// document (PostgreSQL's `jsonb` reorders keys; it is canonicalized on read).
    Json(String),
}

impl Value {
    /// The value's type, or `None` for `Null`.
    pub fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(_) => ColumnType::Bool,
            Value::I16(_) => ColumnType::I16,
            Value::I32(_) => ColumnType::I32,
            Value::I64(_) => ColumnType::I64,
            Value::F32(_) => ColumnType::F32,
            Value::F64(_) => ColumnType::F64,
            Value::String(_) => ColumnType::String,
            Value::Bytes(_) => ColumnType::Bytes,
            Value::Uuid(_) => ColumnType::Uuid,
            Value::Timestamp(_) => ColumnType::Timestamp,
            Value::Date(_) => ColumnType::Date,
            Value::Decimal(_) => ColumnType::Decimal,
            Value::Json(_) => ColumnType::Json,
        })
    }

    /// A JSON value as its canonical text: compact, object keys sorted by their bytes
    /// (whatever `serde_json`'s map order is built with).
    pub fn json(v: &serde_json::Value) -> Value {
        Value::Json(canonical_json(v))
    }

    /// A JSON value from text in any layout (PostgreSQL's `jsonb` output, SQLite's
    /// `json()`), canonicalized ([`Value::json`]).
    ///
    /// # Errors
    /// `InvalidInput` when `text` is not JSON.
    pub fn json_from_text(text: &str) -> Result<Value> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid_input(format!("not a JSON document: {e}")))?;
        Ok(Value::json(&v))
    }

    /// Checks the ranges the types promise on every engine: timestamps and dates in
    /// the years 1 to 9999, JSON text that parses.
    ///
    /// # Errors
    /// `InvalidInput` naming the value and the range.
    pub fn check_range(&self) -> Result<()> {
        match self {
            Value::Timestamp(us) if !(MIN_TIMESTAMP_MICROS..=MAX_TIMESTAMP_MICROS).contains(us) => {
                Err(Error::invalid_input(format!(
                    "the timestamp {us} µs since the epoch is outside the years 1 to 9999"
                )))
            }
            Value::Date(d) if !(MIN_DATE_DAYS..=MAX_DATE_DAYS).contains(d) => {
                Err(Error::invalid_input(format!(
                    "the date {d} days since the epoch is outside the years 1 to 9999"
                )))
            }
            Value::Json(t) => serde_json::from_str::<serde::de::IgnoredAny>(t)
                .map(|_| ())
                .map_err(|e| Error::invalid_input(format!("not a JSON document: {e}"))),
            _ => Ok(()),
        }
    }

    /// Whether this is `Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as an `i64`, for any integer type.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as an `f64`, for any numeric type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// Converts the value to `ty`, widening or narrowing integers and floats where the
    /// value fits. `Null` stays `Null`.
    ///
    /// # Errors
    /// `InvalidInput` when the value has another type family or does not fit (an `i64`
    /// of 70,000 into an `I16` column).
    pub fn coerce(self, ty: ColumnType) -> Result<Value> {
        if self.column_type() == Some(ty) || self.is_null() {
            return Ok(self);
        }
        let bad = |v: &Value| {
            Error::invalid_input(format!("value {v:?} does not fit a column of type {ty:?}"))
        };
        if let Some(i) = self.as_i64() {
            return match ty {
                ColumnType::I16 => i16::try_from(i).map(Value::I16).map_err(|_| bad(&self)),
                ColumnType::I32 => i32::try_from(i).map(Value::I32).map_err(|_| bad(&self)),
                ColumnType::I64 => Ok(Value::I64(i)),
                ColumnType::F64 => Ok(Value::F64(i as f64)),
                ColumnType::F32 => Ok(Value::F32(i as f32)),
                _ => Err(bad(&self)),
            };
        }
        match (&self, ty) {
            (Value::F32(f), ColumnType::F64) => Ok(Value::F64((*f).into())),
            (Value::F64(f), ColumnType::F32) => Ok(Value::F32(*f as f32)),
            _ => Err(bad(&self)),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::String(v) => write!(f, "{v:?}"),
            Value::Bytes(v) => write!(f, "<{} bytes>", v.len()),
            Value::Uuid(b) => {
                for (i, x) in b.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{x:02x}")?;
                }
                Ok(())
            }
            Value::Timestamp(us) => write!(f, "{us}µs"),
            Value::Date(d) => write!(f, "day {d}"),
            Value::Decimal(x) => write!(f, "{x}"),
            Value::Json(t) => f.write_str(t),
        }
    }
}

/// A Rust type that can be stored in a column.
///
/// Implemented for `bool`, `i16`, `i32`, `i64`, `f32`, `f64`, `String`, `Vec<u8>`,
/// `SystemTime`, the id-list types `Vec<i64>`, `Vec<i32>`, `Vec<String>`, [`Numeric`],
/// `serde_json::Value`, the feature-gated types of [`crate::ext`], enums deriving
/// `DbEnum`, and `Option<T>` of each (NULL = `None`).
pub trait ColumnValue: Sized + Send + Sync + 'static {
    /// The column type this Rust type maps to.
    const TYPE: ColumnType;
    /// Whether `None`/NULL is allowed (only for `Option<T>`).
    const NULLABLE: bool = false;
    /// Converts to a value.
    fn to_value(&self) -> Value;
    /// Converts from a value read from an engine.
    ///
    /// # Errors
    /// `InvalidInput` when the value's type does not match (after integer/float coercion).
    fn from_value(v: Value) -> Result<Self>;
}

/// Days from 0001-01-01 (day 1 of the common era, chrono's `num_days_from_ce`) to
/// 1970-01-01, the epoch of [`Value::Date`].
pub const CE_TO_EPOCH_DAYS: i32 = 719_163;

/// A UUID's 16 bytes from its text: 32 hex digits in any case, RFC 9562 hyphens
/// optional. `None` for anything else.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(std::str::from_utf8(&hex[2 * i..2 * i + 2]).ok()?, 16).ok()?;
    }
    Some(out)
}

pub(crate) fn mismatch<T>(want: ColumnType, got: &Value) -> Result<T> {
    Err(Error::invalid_input(format!(
        "expected a {want:?} value, got {got:?}"
    )))
}

macro_rules! native {
    ($t:ty, $variant:ident) => {
        impl ColumnValue for $t {
            const TYPE: ColumnType = ColumnType::$variant;
            fn to_value(&self) -> Value {
                Value::$variant(self.clone())
            }
            fn from_value(v: Value) -> Result<Self> {
                match v {
                    Value::$variant(x) => Ok(x),
                    other => match other.clone().coerce(ColumnType::$variant) {
                        Ok(Value::$variant(x)) => Ok(x),
                        _ => mismatch(ColumnType::$variant, &other),
                    },
                }
            }
        }
    };
}
native!(bool, Bool);
native!(i16, I16);
native!(i32, I32);
native!(i64, I64);
native!(f32, F32);
native!(f64, F64);
native!(String, String);
native!(Vec<u8>, Bytes);
native!(Numeric, Decimal);

impl ColumnValue for serde_json::Value {
    const TYPE: ColumnType = ColumnType::Json;
    fn to_value(&self) -> Value {
        Value::json(self)
    }
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Json(t) => serde_json::from_str(&t).map_err(|e| {
                Error::invalid_input(format!("a stored JSON value does not parse: {e}"))
            }),
            other => mismatch(ColumnType::Json, &other),
        }
    }
}

/// Canonical JSON text: compact, object keys sorted by their bytes.
fn canonical_json(v: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// `#[column(json)]`: a field of any `T: Serialize + DeserializeOwned` stored in a
/// `Json` column as its `serde_json` document. `#[derive(Table)]` calls these; an
/// `Option<T>` field is nullable (`None` is SQL NULL, not JSON `null`).
pub mod json {
    use super::{ColumnType, Value, mismatch};
    use crate::error::{Error, Result};
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// The column value of `v`.
    ///
    /// # Panics
    /// When `T`'s `Serialize` fails (a map with non-string keys), as `serde_json` does.
    pub fn to_value<T: Serialize>(v: &T) -> Value {
        Value::json(
            &serde_json::to_value(v)
                .expect("datalayer: #[column(json)] value does not serialize to JSON"),
        )
    }
    /// The field from its column value.
    ///
    /// # Errors
    /// `InvalidInput` when the value is not JSON or does not deserialize into `T`.
    pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T> {
        match v {
            Value::Json(t) => serde_json::from_str(&t).map_err(|e| {
                Error::invalid_input(format!("a stored JSON value does not fit the field: {e}"))
            }),
            other => mismatch(ColumnType::Json, &other),
        }
    }
    /// [`to_value`] of an optional field (`None` → NULL).
    pub fn to_value_opt<T: Serialize>(v: &Option<T>) -> Value {
        v.as_ref().map_or(Value::Null, to_value)
    }
    /// [`from_value`] of an optional field (NULL → `None`).
    ///
    /// # Errors
    /// As [`from_value`].
    pub fn from_value_opt<T: DeserializeOwned>(v: Value) -> Result<Option<T>> {
        match v {
            Value::Null => Ok(None),
            v => from_value(v).map(Some),
        }
    }
}

impl<T: ColumnValue> ColumnValue for Option<T> {
    const TYPE: ColumnType = T::TYPE;
    const NULLABLE: bool = true;
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl ColumnValue for SystemTime {
    const TYPE: ColumnType = ColumnType::I64;
    fn to_value(&self) -> Value {
        let micros = match self.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_micros() as i64,
            Err(e) => -(e.duration().as_micros() as i64),
        };
        Value::I64(micros)
    }
    fn from_value(v: Value) -> Result<Self> {
        let micros = i64::from_value(v)?;
        Ok(if micros >= 0 {
            UNIX_EPOCH + Duration::from_micros(micros as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
        })
    }
}

macro_rules! id_list {
    ($t:ty) => {
        impl ColumnValue for Vec<$t> {
            const TYPE: ColumnType = ColumnType::Bytes;
            fn to_value(&self) -> Value {
                Value::Bytes(postcard::to_allocvec(self).expect("postcard encodes a Vec"))
            }
            fn from_value(v: Value) -> Result<Self> {
                match v {
                    Value::Bytes(b) => postcard::from_bytes(&b)
                        .map_err(|e| Error::invalid_input(format!("bad id list encoding: {e}"))),
                    other => mismatch(ColumnType::Bytes, &other),
                }
            }
        }
    };
}
id_list!(i64);
id_list!(i32);
id_list!(String);

/// Anything usable as a query parameter or key part: every [`ColumnValue`], plus
/// borrowed `&str`, `&String` and `&[u8]`.
pub trait ToValue {
    /// The column type the parameter binds as.
    const TYPE: ColumnType;
    /// Whether the parameter may be NULL.
    const NULLABLE: bool;
    /// Converts to a value.
    fn param_value(&self) -> Value;
}

impl<T: ColumnValue> ToValue for T {
    const TYPE: ColumnType = <T as ColumnValue>::TYPE;
    const NULLABLE: bool = <T as ColumnValue>::NULLABLE;
    fn param_value(&self) -> Value {
        ColumnValue::to_value(self)
    }
}
impl ToValue for &str {
    const TYPE: ColumnType = ColumnType::String;
    const NULLABLE: bool = false;
    fn param_value(&self) -> Value {
        Value::String((*self).to_owned())
    }
}
impl ToValue for &[u8] {
    const TYPE: ColumnType = ColumnType::Bytes;
    const NULLABLE: bool = false;
    fn param_value(&self) -> Value {
        Value::Bytes(self.to_vec())
    }
}
impl ToValue for &String {
    const TYPE: ColumnType = ColumnType::String;
    const NULLABLE: bool = false;
    fn param_value(&self) -> Value {
        Value::String((*self).clone())
    }
}

/// A primary key: one value for a single-column key, a tuple for a composite key
/// (`(carrier, flight)`), or the raw values as a [`Row`].
pub trait Key {
    /// The key column values, in primary-key order.
    fn into_key(self) -> Row;
}
impl<T: ToValue> Key for T {
    fn into_key(self) -> Row {
        vec![self.param_value()]
    }
}
impl Key for Row {
    fn into_key(self) -> Row {
        self
    }
}
macro_rules! tuple_key {
    ($($n:ident $i:tt),+) => {
        impl<$($n: ToValue),+> Key for ($($n,)+) {
            fn into_key(self) -> Row {
                vec![$(self.$i.param_value()),+]
            }
        }
    };
}
tuple_key!(A 0);
tuple_key!(A 0, B 1);
tuple_key!(A 0, B 1, C 2);
tuple_key!(A 0, B 1, C 2, D 3);
tuple_key!(A 0, B 1, C 2, D 3, E 4);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coerce_checks_range() {
        assert_eq!(
            Value::I64(7).coerce(ColumnType::I16).unwrap(),
            Value::I16(7)
        );
        assert!(Value::I64(70_000).coerce(ColumnType::I16).is_err());
        assert!(Value::String("x".into()).coerce(ColumnType::I64).is_err());
    }

    #[test]
    fn option_round_trips_null() {
        assert_eq!(Option::<i32>::from_value(Value::Null).unwrap(), None);
        assert_eq!(ColumnValue::to_value(&Some(3i32)), Value::I32(3));
        assert!(i32::from_value(Value::String("3".into())).is_err());
    }

    #[test]
    fn system_time_is_micros() {
        let t = UNIX_EPOCH + Duration::from_micros(1_500_000);
        assert_eq!(ColumnValue::to_value(&t), Value::I64(1_500_000));
        assert_eq!(SystemTime::from_value(Value::I64(1_500_000)).unwrap(), t);
    }

    #[test]
    fn keys_from_tuples() {
        assert_eq!(
            ("UA", 5i32).into_key(),
            vec![Value::String("UA".into()), Value::I32(5)]
        );
        assert_eq!(7i64.into_key(), vec![Value::I64(7)]);
    }
}
