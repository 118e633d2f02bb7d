//! The partition hash: FNV-1a, 64 bits, over the partition key's bytes.
//!
//! Stable by construction: the constants are those of the FNV specification
//! (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`), the function never
//! depends on the Rust version, the platform or a random seed (unlike std's
//! `DefaultHasher`), so an event's partition is the same in every process, forever.

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The partition of `key` in a topic of `partitions` partitions:
/// `fnv1a64(key) % partitions`. `partitions` must be at least 1.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    (fnv1a64(key) % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // Reference values of the FNV-1a 64 specification.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        assert_eq!(
            partition_of(b"foobar", 1024),
            (0x85944171f73967e8u64 % 1024) as u32
        );
        for i in 0..1000u32 {
            let k = i.to_string();
            let p = partition_of(k.as_bytes(), 7);
            assert!(p < 7);
            assert_eq!(p, partition_of(k.as_bytes(), 7));
        }
        assert_eq!(partition_of(b"x", 1), 0);
        assert_eq!(partition_of(b"x", 0), 0);
    }

    #[test]
    fn spreads_keys() {
        let mut counts = [0u32; 8];
        for i in 0..8000u32 {
            counts[partition_of(format!("key-{i}").as_bytes(), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700), "{counts:?}");
    }
}
