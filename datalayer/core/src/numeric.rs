//! [`Numeric`]: an exact decimal number, the value of a `Decimal` column.
//!
//! The range is `rust_decimal::Decimal`'s: a mantissa of at most 96 bits and a scale
//! (digits after the point) of 0 to 28, so every `rust_decimal::Decimal` converts
//! without loss. Values are kept normalized (no trailing zeros after the point: `1.50`
//! is stored as `1.5`), the way every engine compares them (PostgreSQL: `1.50 = 1.5`),
//! so that a unique index or an equality filter finds the same rows everywhere.
//!
//! [`Numeric::encode_sortable`] is the order-preserving byte form used in keys (KV
//! engines) and SQLite columns: byte order equals numeric order, and the encoding is
//! self-delimiting. It follows the digit-string scheme of CockroachDB's and
//! FoundationDB's tuple encodings: a sign byte, a base-10 exponent, the significant
//! digits, a terminator; negative numbers have the exponent and digits complemented.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// An exact decimal number: `mantissa × 10^-scale`, normalized.
///
/// Shapes: `|mantissa| < 2^96`, `scale ≤ 28` ([`Numeric::MAX_SCALE`]); zero is
/// `0 × 10^0`. Ordered numerically; equal values have equal fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Numeric {
    mantissa: i128,
    scale: u8,
}

/// Sign bytes of the sortable encoding: negative < zero < positive.
const NEG: u8 = 0x01;
const ZERO: u8 = 0x02;
const POS: u8 = 0x03;
/// Bias of the exponent byte (exponents lie in `-28..=29`).
const EXP_BIAS: i32 = 128;

impl Numeric {
    /// Most digits after the decimal point.
    pub const MAX_SCALE: u32 = 28;
    /// Largest magnitude of the mantissa, `2^96 - 1`.
    pub const MAX_MANTISSA: i128 = (1i128 << 96) - 1;

    /// `mantissa × 10^-scale`, normalized.
    ///
    /// # Errors
    /// `InvalidInput` when `|mantissa| > 2^96 - 1` or `scale > 28` after dropping
    /// trailing zeros.
    pub fn new(mut mantissa: i128, mut scale: u32) -> Result<Numeric> {
        while scale > 0 && mantissa % 10 == 0 {
            mantissa /= 10;
            scale -= 1;
        }
        if mantissa == 0 {
            scale = 0;
        }
        if mantissa.unsigned_abs() > Self::MAX_MANTISSA as u128 || scale > Self::MAX_SCALE {
            return Err(Error::invalid_input(format!(
                "the decimal {mantissa}e-{scale} is out of range (at most 96 bits of mantissa and 28 digits after the point)"
            )));
        }
        Ok(Numeric {
            mantissa,
            scale: scale as u8,
        })
    }

    /// The mantissa: the value is `mantissa × 10^-scale`.
    pub fn mantissa(&self) -> i128 {
        self.mantissa
    }

    /// Digits after the decimal point (0 to 28).
    pub fn scale(&self) -> u32 {
        self.scale.into()
    }

    /// The significant digits of `|mantissa|` without trailing zeros, and the decimal
    /// exponent `e` such that the value is `±0.d1d2… × 10^e`.
    fn digits(&self) -> (Vec<u8>, i32) {
        let text = self.mantissa.unsigned_abs().to_string();
        let exp = text.len() as i32 - i32::from(self.scale);
        let digits: Vec<u8> = text
            .trim_end_matches('0')
            .bytes()
            .map(|b| b - b'0')
            .collect();
        (digits, exp)
    }

    /// Appends the order-preserving encoding: `0x02` for zero; else `0x03` (positive)
    /// or `0x01` (negative), one exponent byte, one byte per significant digit, and a
    /// terminator. Positive: exponent `e + 128`, digit `d + 1`, terminator `0x00`.
    /// Negative: each of those bytes complemented (`0xFF - b`), terminator `0xFF`.
    pub fn encode_sortable(&self, buf: &mut Vec<u8>) {
        if self.mantissa == 0 {
            buf.push(ZERO);
            return;
        }
        let (digits, exp) = self.digits();
        let neg = self.mantissa < 0;
        let flip = |b: u8| if neg { 0xFF - b } else { b };
        buf.push(if neg { NEG } else { POS });
        buf.push(flip((exp + EXP_BIAS) as u8));
        buf.extend(digits.iter().map(|d| flip(d + 1)));
        buf.push(flip(0));
    }

    /// Decodes one value written by [`Numeric::encode_sortable`] at the start of
    /// `bytes`; returns it and the number of bytes it took.
    ///
    /// # Errors
    /// `Corrupted` for a bad sign byte, digit byte or a missing terminator.
    pub fn decode_sortable(bytes: &[u8]) -> Result<(Numeric, usize)> {
        let bad = || Error::corrupted("bad sortable decimal encoding");
        let neg = match bytes.first() {
            Some(&ZERO) => return Ok((Numeric::default(), 1)),
            Some(&NEG) => true,
            Some(&POS) => false,
            _ => return Err(bad()),
        };
        let flip = |b: u8| if neg { 0xFF - b } else { b };
        let exp = i32::from(flip(*bytes.get(1).ok_or_else(bad)?)) - EXP_BIAS;
        let mut mantissa: i128 = 0;
        let mut n = 0i32;
        let mut pos = 2;
        loop {
            let b = flip(*bytes.get(pos).ok_or_else(bad)?);
            pos += 1;
            if b == 0 {
                break;
            }
            if !(1..=10).contains(&b) {
                return Err(bad());
            }
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(b - 1)))
                .ok_or_else(bad)?;
            n += 1;
        }
        let mut scale = n - exp;
        while scale < 0 {
            mantissa = mantissa.checked_mul(10).ok_or_else(bad)?;
            scale += 1;
        }
        let value = Numeric::new(if neg { -mantissa } else { mantissa }, scale as u32)
            .map_err(|_| bad())?;
        Ok((value, pos))
    }

    /// The sortable encoding as a new vector ([`Numeric::encode_sortable`]).
    pub fn to_sortable(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8);
        self.encode_sortable(&mut b);
        b
    }
}

impl Default for Numeric {
    /// Zero.
    fn default() -> Self {
        Numeric {
            mantissa: 0,
            scale: 0,
        }
    }
}

impl Ord for Numeric {
    fn cmp(&self, other: &Self) -> Ordering {
        self.to_sortable().cmp(&other.to_sortable())
    }
}

impl PartialOrd for Numeric {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Numeric {
    /// Plain decimal text: `-12.5`, `0.001`, `1000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let scale = usize::from(self.scale);
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    }
}

impl FromStr for Numeric {
    type Err = Error;

    /// Parses plain decimal text: an optional sign, digits, an optional point and
    /// digits (`-12.50`, `.5`, `3.`). No exponent.
    ///
    /// # Errors
    /// `InvalidInput` for anything else, or a value out of range.
    fn from_str(s: &str) -> Result<Numeric> {
        let bad = || Error::invalid_input(format!("{s:?} is not a decimal number"));
        let (neg, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let frac = frac.trim_end_matches('0');
        let mut mantissa: i128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(b - b'0')))
                .ok_or_else(bad)?;
        }
        Numeric::new(
            if neg { -mantissa } else { mantissa },
            u32::try_from(frac.len()).map_err(|_| bad())?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(s: &str) -> Numeric {
        s.parse().unwrap()
    }

    #[test]
    fn normalizes_and_prints() {
        assert_eq!(n("1.50"), n("1.5"));
        assert_eq!(n("1.50").to_string(), "1.5");
        assert_eq!(n("-0.001").to_string(), "-0.001");
        assert_eq!(n("1000").to_string(), "1000");
        assert_eq!(n("-0.0"), Numeric::default());
        assert_eq!(n(".5").to_string(), "0.5");
        assert!("1e5".parse::<Numeric>().is_err());
        assert!("".parse::<Numeric>().is_err());
        assert!("79228162514264337593543950336".parse::<Numeric>().is_err());
        assert!(Numeric::new(1, 29).is_err());
    }

    #[test]
    fn sortable_order_examples() {
        let v = [
            "-1000", "-12.5", "-12", "-1.5", "-1", "-0.5", "-0.05", "0", "0.05", "0.5", "1", "1.5",
            "12", "12.5", "1000",
        ];
        for w in v.windows(2) {
            assert!(n(w[0]).to_sortable() < n(w[1]).to_sortable(), "{w:?}");
        }
    }

    proptest! {
        #[test]
        fn sortable_round_trips_and_orders(
            a in -(1i128 << 96) + 1..(1i128 << 96), sa in 0u32..=28,
            b in -(1i128 << 96) + 1..(1i128 << 96), sb in 0u32..=28,
        ) {
            let (x, y) = (Numeric::new(a, sa).unwrap(), Numeric::new(b, sb).unwrap());
            let (ex, ey) = (x.to_sortable(), y.to_sortable());
            prop_assert_eq!(Numeric::decode_sortable(&ex).unwrap(), (x, ex.len()));
            // Exact comparison by cross-multiplying in floats is lossy; compare texts
            // through the i128 difference when the scales agree, else via f64 when far.
            let fx = a as f64 / 10f64.powi(sa as i32);
            let fy = b as f64 / 10f64.powi(sb as i32);
            if (fx - fy).abs() > 1e-9 * fx.abs().max(fy.abs()) {
                prop_assert_eq!(fx.partial_cmp(&fy).unwrap(), ex.cmp(&ey));
            }
            prop_assert_eq!(x.to_string().parse::<Numeric>().unwrap(), x);
        }

        #[test]
        fn sortable_orders_same_scale(a in -(1i128 << 96) + 1..(1i128 << 96), b in -(1i128 << 96) + 1..(1i128 << 96), s in 0u32..=28) {
            let (x, y) = (Numeric::new(a, s).unwrap(), Numeric::new(b, s).unwrap());
            prop_assert_eq!(a.cmp(&b), x.to_sortable().cmp(&y.to_sortable()));
        }
    }
}
