//! The engine-neutral encoding a checksum hashes: typed values, never text casts, so
//! that the same row reads the same on every engine and a changed type, a lost
//! fraction or a trimmed string all change the hash (pgcopydb's `compare data` hashes
//! `row::text`, which hides type changes).
//!
//! Per value: a tag byte, then the value: `0` NULL; `1` bool (one byte); `2` any integer
//! widened to i64 (8 bytes, little-endian); `3` f32 and `4` f64 (IEEE 754 bits,
//! little-endian, with `-0.0` written as `0.0`: the two compare equal in IEEE 754 and
//! SQLite keeps no sign of zero; NaN payloads stay distinct); `5` text and `6` bytes
//! (u64 length, little-endian, then the bytes); `7` UUID (length 16, then its bytes);
//! `8` timestamp (µs, i64) and `9` date (days, widened to i64), little-endian; `10`
//! decimal (length, then [`datalayer_core::Numeric::encode_sortable`], normalized) and
//! `11` JSON (length, then the canonical text). A row is its values in column order;
//! its hash is XXH3-128 of that encoding (the `xxhash-rust` crate).

use datalayer_core::Value;

/// Appends the canonical encoding of `v` to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, v: &Value) {
    let bytes = |buf: &mut Vec<u8>, tag: u8, b: &[u8]| {
        buf.push(tag);
        buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
        buf.extend_from_slice(b);
    };
    match v {
        Value::Null => buf.push(0),
        Value::Bool(b) => buf.extend_from_slice(&[1, u8::from(*b)]),
        Value::I16(_) | Value::I32(_) | Value::I64(_) => {
            buf.push(2);
            buf.extend_from_slice(&v.as_i64().unwrap_or_default().to_le_bytes());
        }
        // `x + 0.0` turns -0.0 into 0.0 and leaves every other value as it is.
        Value::F32(x) => {
            buf.push(3);
            buf.extend_from_slice(&(x + 0.0).to_bits().to_le_bytes());
        }
        Value::F64(x) => {
            buf.push(4);
            buf.extend_from_slice(&(x + 0.0).to_bits().to_le_bytes());
        }
        Value::String(s) => bytes(buf, 5, s.as_bytes()),
        Value::Bytes(b) => bytes(buf, 6, b),
        Value::Uuid(b) => bytes(buf, 7, b),
        Value::Timestamp(us) => {
            buf.push(8);
            buf.extend_from_slice(&us.to_le_bytes());
        }
        Value::Date(d) => {
            buf.push(9);
            buf.extend_from_slice(&i64::from(*d).to_le_bytes());
        }
        Value::Decimal(n) => bytes(buf, 10, &n.to_sortable()),
        Value::Json(t) => bytes(buf, 11, t.as_bytes()),
    }
}

/// The 128-bit hash of a row's canonical encoding; `buf` is scratch space.
pub(crate) fn row_hash(buf: &mut Vec<u8>, row: &[Value]) -> u128 {
    buf.clear();
    for v in row {
        encode(buf, v);
    }
    xxhash_rust::xxh3::xxh3_128(buf)
}

/// The length in bytes of a row's canonical encoding (a size in the same unit on every
/// engine, for throughput figures), counted without encoding.
pub(crate) fn size(row: &[Value]) -> usize {
    row.iter()
        .map(|v| match v {
            Value::Null => 1,
            Value::Bool(_) => 2,
            Value::F32(_) => 5,
            Value::I16(_) | Value::I32(_) | Value::I64(_) | Value::F64(_) => 9,
            Value::String(s) => 9 + s.len(),
            Value::Bytes(b) => 9 + b.len(),
            Value::Uuid(_) => 25,
            Value::Timestamp(_) | Value::Date(_) => 9,
            Value::Decimal(n) => 9 + n.to_sortable().len(),
            Value::Json(t) => 9 + t.len(),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_hash_apart() {
        let mut buf = Vec::new();
        let h = |buf: &mut Vec<u8>, r: &[Value]| row_hash(buf, r);
        let rows: Vec<Vec<Value>> = vec![
            vec![Value::I64(1)],
            vec![Value::String("1".into())],
            vec![Value::Bytes(b"1".to_vec())],
            vec![Value::F64(1.0)],
            vec![Value::F64(0.0)],
            vec![Value::F32(1.0)],
            vec![Value::Null],
            vec![Value::Bool(true)],
            vec![Value::String("a".into()), Value::String("b".into())],
            vec![Value::String("ab".into()), Value::String(String::new())],
        ];
        let hashes: std::collections::HashSet<u128> = rows.iter().map(|r| h(&mut buf, r)).collect();
        assert_eq!(hashes.len(), rows.len(), "every row hashes apart");
        for r in &rows {
            h(&mut buf, r);
            assert_eq!(size(r), buf.len(), "size counts the encoding of {r:?}");
        }
        assert_eq!(
            h(&mut buf, &[Value::F64(-0.0)]),
            h(&mut buf, &[Value::F64(0.0)])
        );
        assert_ne!(
            h(&mut buf, &[Value::F64(-1.0)]),
            h(&mut buf, &[Value::F64(1.0)])
        );
        // Integer widths are one type: an i32 column read back as i64 is the same value.
        assert_eq!(h(&mut buf, &[Value::I32(5)]), h(&mut buf, &[Value::I64(5)]));
    }
}
