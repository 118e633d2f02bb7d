//! The byte layout the two raw key-value peers (`redis_raw`, `tikv_raw`) share:
//! order-preserving integers (in keys and index members) and the row value.

use crate::workloads::{User, Workload};

/// Whether a raw key-value peer runs `w`: the rows of the Redis and TiKV sections.
pub fn supports(w: Workload) -> bool {
    matches!(
        w,
        Workload::PointRead | Workload::RangeScan | Workload::Insert2Idx | Workload::ReadBatch
    )
}

/// `i64` as 8 bytes that sort like the numbers (sign bit flipped, big-endian).
pub fn ord_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// `i32` as 4 bytes that sort like the numbers.
pub fn ord_i32(v: i32) -> [u8; 4] {
    ((v as u32) ^ (1 << 31)).to_be_bytes()
}

/// The row's value: age, name length, name, email.
pub fn encode(u: &User) -> Vec<u8> {
    let mut v = Vec::with_capacity(6 + u.name.len() + u.email.len());
    v.extend_from_slice(&u.age.to_be_bytes());
    v.extend_from_slice(&(u.name.len() as u16).to_be_bytes());
    v.extend_from_slice(u.name.as_bytes());
    v.extend_from_slice(u.email.as_bytes());
    v
}

/// The row of `id` from its value.
pub fn decode(id: i64, v: &[u8]) -> User {
    let age = i32::from_be_bytes(v[0..4].try_into().expect("4 bytes"));
    let n = usize::from(u16::from_be_bytes(v[4..6].try_into().expect("2 bytes")));
    User {
        id,
        age,
        name: String::from_utf8(v[6..6 + n].to_vec()).expect("utf-8 name"),
        email: String::from_utf8(v[6 + n..].to_vec()).expect("utf-8 email"),
    }
}
