//! Text forms of the typed values, for databases that store them as text (SQLite) and
//! for change logs written as JSON.
//!
//! - Timestamps: ISO 8601 with six fractional digits and `Z`,
//!   `YYYY-MM-DDTHH:MM:SS.ffffffZ` (27 bytes). Fixed width, so that text order is time
//!   order for the years 1 to 9999, and one of the forms SQLite's date and time
//!   functions read (SQLite documentation, "Date And Time Functions", time values 4–7
//!   with the `Z` suffix).
//! - Dates: `YYYY-MM-DD` (10 bytes), likewise.
//! - UUIDs in a change log: 32 hex digits, with or without RFC 9562 hyphens, any case
//!   (`datalayer_core::value::parse_uuid`).
//! - Decimals in a change log: plain decimal text (PostgreSQL's `numeric::text`), or
//!   the hex of [`Numeric::encode_sortable`] (SQLite's `hex()` of the stored blob,
//!   which starts `01`, `02` or `03`; a decimal's text never starts with `0` and a
//!   digit).

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use datalayer_core::value::CE_TO_EPOCH_DAYS;
use datalayer_core::{Error, Numeric, Result};

/// `µs` since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
///
/// # Errors
/// `InvalidInput` outside the years 1 to 9999.
pub fn timestamp_text(us: i64) -> Result<String> {
    let t = DateTime::<Utc>::from_timestamp_micros(us)
        .filter(|t| (1..=9999).contains(&t.year()))
        .ok_or_else(|| {
            Error::invalid_input(format!(
                "the timestamp {us} µs is outside the years 1 to 9999"
            ))
        })?;
    Ok(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// Parses [`timestamp_text`]'s form (any RFC 3339 text) back to µs since the epoch.
///
/// # Errors
/// `Corrupted` for text that is not RFC 3339.
pub fn parse_timestamp_text(s: &str) -> Result<i64> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|e| Error::corrupted(format!("stored timestamp {s:?}: {e}")))
}

/// Days since 1970-01-01 as `YYYY-MM-DD`.
///
/// # Errors
/// `InvalidInput` outside the years 1 to 9999.
pub fn date_text(days: i32) -> Result<String> {
    days.checked_add(CE_TO_EPOCH_DAYS)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .filter(|d| (1..=9999).contains(&d.year()))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .ok_or_else(|| {
            Error::invalid_input(format!(
                "the date {days} days is outside the years 1 to 9999"
            ))
        })
}

/// Parses `YYYY-MM-DD` back to days since 1970-01-01.
///
/// # Errors
/// `Corrupted` for anything else.
pub fn parse_date_text(s: &str) -> Result<i32> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.num_days_from_ce() - CE_TO_EPOCH_DAYS)
        .map_err(|e| Error::corrupted(format!("stored date {s:?}: {e}")))
}

/// A decimal from a change log: the hex of its sortable encoding, or decimal text.
pub fn parse_decimal_log(s: &str) -> Option<Numeric> {
    let sortable = ["01", "02", "03"].iter().any(|p| s.starts_with(p))
        && s.len().is_multiple_of(2)
        && s.bytes().all(|b| b.is_ascii_hexdigit());
    if sortable {
        let bytes: Option<Vec<u8>> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
            .collect();
        let bytes = bytes?;
        return match Numeric::decode_sortable(&bytes) {
            Ok((n, len)) if len == bytes.len() => Some(n),
            _ => None,
        };
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalayer_core::value::{
        MAX_DATE_DAYS, MAX_TIMESTAMP_MICROS, MIN_DATE_DAYS, MIN_TIMESTAMP_MICROS,
    };

    #[test]
    fn texts_round_trip_and_sort() {
        let ts = [
            MIN_TIMESTAMP_MICROS,
            -1,
            0,
            1,
            1_700_000_000_123_456,
            MAX_TIMESTAMP_MICROS,
        ];
        let texts: Vec<String> = ts.iter().map(|&t| timestamp_text(t).unwrap()).collect();
        for (t, s) in ts.iter().zip(&texts) {
            assert_eq!(s.len(), 27, "{s}");
            assert_eq!(parse_timestamp_text(s).unwrap(), *t);
        }
        assert!(texts.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(texts[2], "1970-01-01T00:00:00.000000Z");
        assert!(timestamp_text(MAX_TIMESTAMP_MICROS + 1).is_err());
        for d in [MIN_DATE_DAYS, -1, 0, 19_000, MAX_DATE_DAYS] {
            assert_eq!(parse_date_text(&date_text(d).unwrap()).unwrap(), d);
        }
        assert_eq!(date_text(0).unwrap(), "1970-01-01");
        assert!(date_text(MIN_DATE_DAYS - 1).is_err());
    }

    #[test]
    fn log_forms_of_uuids_and_decimals() {
        let u = datalayer_core::value::parse_uuid("01234567-89ab-cdef-0123-456789ABCDEF").unwrap();
        assert_eq!(u[0], 0x01);
        assert_eq!(u[15], 0xEF);
        assert!(datalayer_core::value::parse_uuid("0123").is_none());
        let n: Numeric = "-12.5".parse().unwrap();
        let hex: String = n.to_sortable().iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_decimal_log(&hex), Some(n));
        assert_eq!(parse_decimal_log("-12.50"), Some(n));
        assert_eq!(parse_decimal_log("2"), Some(Numeric::new(2, 0).unwrap()));
        assert_eq!(parse_decimal_log("02"), Some(Numeric::default()));
    }
}
