//! Column types from other crates, each behind a cargo feature named after its crate.
//!
//! | feature        | Rust type                   | [`ColumnType`]  | conversion                          |
//! |----------------|-----------------------------|-----------------|-------------------------------------|
//! | `uuid`         | `uuid::Uuid`                | `Uuid`          | its 16 bytes                        |
//! | `chrono`       | `chrono::DateTime<Utc>`     | `Timestamp`     | µs since the epoch, sub-µs dropped  |
//! | `chrono`       | `chrono::NaiveDate`         | `Date`          | days since 1970-01-01               |
//! | `time`         | `time::OffsetDateTime`      | `Timestamp`     | µs since the epoch (UTC), sub-µs dropped |
//! | `rust_decimal` | `rust_decimal::Decimal`     | `Decimal`       | mantissa and scale, normalized      |
//!
//! Sub-microsecond digits are dropped toward the past (`floor`), the same on every
//! engine. A value outside the years 1 to 9999 converts, and is refused with
//! `InvalidInput` when written ([`crate::Value::check_range`]); a stored value that
//! the Rust type cannot hold is `InvalidInput` when read.

#[allow(unused_imports)]
use crate::error::{Error, Result};
#[allow(unused_imports)]
use crate::value::{CE_TO_EPOCH_DAYS, ColumnType, ColumnValue, Value, mismatch};

#[cfg(feature = "uuid")]
impl ColumnValue for uuid::Uuid {
    const TYPE: ColumnType = ColumnType::Uuid;
    fn to_value(&self) -> Value {
        Value::Uuid(*self.as_bytes())
    }
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Uuid(b) => Ok(uuid::Uuid::from_bytes(b)),
            other => mismatch(ColumnType::Uuid, &other),
        }
    }
}

#[cfg(feature = "chrono")]
impl ColumnValue for chrono::DateTime<chrono::Utc> {
    const TYPE: ColumnType = ColumnType::Timestamp;
    fn to_value(&self) -> Value {
        Value::Timestamp(self.timestamp_micros())
    }
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Timestamp(us) => chrono::DateTime::from_timestamp_micros(us).ok_or_else(|| {
                Error::invalid_input(format!("the timestamp {us} µs is out of chrono's range"))
            }),
            other => mismatch(ColumnType::Timestamp, &other),
        }
    }
}

#[cfg(feature = "chrono")]
impl ColumnValue for chrono::NaiveDate {
    const TYPE: ColumnType = ColumnType::Date;
    fn to_value(&self) -> Value {
        use chrono::Datelike;
        Value::Date(self.num_days_from_ce() - CE_TO_EPOCH_DAYS)
    }
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Date(d) => d
                .checked_add(CE_TO_EPOCH_DAYS)
                .and_then(chrono::NaiveDate::from_num_days_from_ce_opt)
                .ok_or_else(|| {
                    Error::invalid_input(format!("the date {d} days is out of chrono's range"))
                }),
            other => mismatch(ColumnType::Date, &other),
        }
    }
}

#[cfg(feature = "time")]
impl ColumnValue for time::OffsetDateTime {
    const TYPE: ColumnType = ColumnType::Timestamp;
    fn to_value(&self) -> Value {
        let us = self.unix_timestamp_nanos().div_euclid(1_000);
        Value::Timestamp(i64::try_from(us).unwrap_or(if us < 0 { i64::MIN } else { i64::MAX }))
    }
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Timestamp(us) => {
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
                    .map_err(|e| Error::invalid_input(format!("the timestamp {us} µs: {e}")))
            }
            other => mismatch(ColumnType::Timestamp, &other),
        }
    }
}

#[cfg(feature = "rust_decimal")]
impl ColumnValue for rust_decimal::Decimal {
    const TYPE: ColumnType = ColumnType::Decimal;
    fn to_value(&self) -> Value {
        Value::Decimal(
            crate::value::Numeric::new(self.mantissa(), self.scale())
                .expect("a rust_decimal::Decimal is within Numeric's range"),
        )
    }
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Decimal(n) => {
                rust_decimal::Decimal::try_from_i128_with_scale(n.mantissa(), n.scale())
                    .map_err(|e| Error::invalid_input(format!("the decimal {n}: {e}")))
            }
            other => mismatch(ColumnType::Decimal, &other),
        }
    }
}

#[cfg(all(
    test,
    feature = "uuid",
    feature = "chrono",
    feature = "time",
    feature = "rust_decimal"
))]
mod tests {
    use super::*;

    #[test]
    fn chrono_and_time_agree_on_micros() {
        let t = chrono::DateTime::from_timestamp(-1, 999_999_999).unwrap();
        // Floor: -0.000000001 s is -1 µs.
        assert_eq!(ColumnValue::to_value(&t), Value::Timestamp(-1));
        let o = time::OffsetDateTime::from_unix_timestamp_nanos(-1).unwrap();
        assert_eq!(ColumnValue::to_value(&o), Value::Timestamp(-1));
        let back =
            chrono::DateTime::<chrono::Utc>::from_value(Value::Timestamp(1_500_000)).unwrap();
        assert_eq!(back.timestamp_micros(), 1_500_000);
    }

    #[test]
    fn dates_count_from_the_epoch() {
        let d = chrono::NaiveDate::from_ymd_opt(1970, 1, 2).unwrap();
        assert_eq!(ColumnValue::to_value(&d), Value::Date(1));
        let first = chrono::NaiveDate::from_ymd_opt(1, 1, 1).unwrap();
        assert_eq!(
            ColumnValue::to_value(&first),
            Value::Date(crate::value::MIN_DATE_DAYS)
        );
        let last = chrono::NaiveDate::from_ymd_opt(9999, 12, 31).unwrap();
        assert_eq!(
            ColumnValue::to_value(&last),
            Value::Date(crate::value::MAX_DATE_DAYS)
        );
        assert_eq!(chrono::NaiveDate::from_value(Value::Date(1)).unwrap(), d);
    }

    #[test]
    fn decimals_and_uuids_round_trip() {
        let d: rust_decimal::Decimal = "-12.50".parse().unwrap();
        let v = ColumnValue::to_value(&d);
        assert_eq!(v.to_string(), "-12.5");
        assert_eq!(rust_decimal::Decimal::from_value(v).unwrap(), d);
        let u = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let v = ColumnValue::to_value(&u);
        assert_eq!(v.to_string(), u.hyphenated().to_string());
        assert_eq!(uuid::Uuid::from_value(v).unwrap(), u);
        assert!(uuid::Uuid::from_value(Value::String("x".into())).is_err());
    }
}
