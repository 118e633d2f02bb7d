//! TiKV's memcomparable byte encoding (tikv/tikv `components/tikv_util/src/codec/bytes.rs`,
//! `encode_bytes` ascending): the form in which PD stores region boundaries for the
//! transactional API. The key is cut into groups of 8 bytes, the last one padded with
//! zeros; each group is followed by a marker `0xFF - padding`. An empty key (an
//! unbounded region edge) stays empty.

const GROUP: usize = 8;
const MARKER: u8 = 0xFF;

/// Encodes `key` (ascending order). Empty stays empty (an unbounded edge).
pub fn encode_bytes(key: &[u8]) -> Vec<u8> {
    if key.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity((key.len() / GROUP + 1) * (GROUP + 1));
    let mut i = 0;
    loop {
        let rest = key.len() - i;
        if rest >= GROUP {
            out.extend_from_slice(&key[i..i + GROUP]);
            out.push(MARKER);
            i += GROUP;
        } else {
            let pad = GROUP - rest;
            out.extend_from_slice(&key[i..]);
            out.extend(std::iter::repeat_n(0u8, pad));
            out.push(MARKER - pad as u8);
            return out;
        }
    }
}

/// Decodes what [`encode_bytes`] made; `None` for a malformed encoding. Empty stays empty.
pub fn decode_bytes(data: &[u8]) -> Option<Vec<u8>> {
    if data.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::with_capacity(data.len());
    let mut chunks = data.chunks(GROUP + 1);
    loop {
        let chunk = chunks.next()?;
        if chunk.len() != GROUP + 1 {
            return None;
        }
        let pad = (MARKER - chunk[GROUP]) as usize;
        if pad > GROUP {
            return None;
        }
        out.extend_from_slice(&chunk[..GROUP - pad]);
        if pad > 0 {
            return chunk[GROUP - pad..GROUP]
                .iter()
                .all(|b| *b == 0)
                .then_some(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        let keys: Vec<&[u8]> = vec![b"a", b"a\0", b"abcdefgh", b"abcdefgh\0", b"abcdefghi", b"b"];
        for w in keys.windows(2) {
            assert!(encode_bytes(w[0]) < encode_bytes(w[1]), "{w:?}");
        }
        for k in keys {
            assert_eq!(decode_bytes(&encode_bytes(k)).unwrap(), k);
        }
        assert_eq!(encode_bytes(b"abc"), b"abc\0\0\0\0\0\xFA");
        assert_eq!(
            encode_bytes(b"12345678"),
            b"12345678\xFF\0\0\0\0\0\0\0\0\xF7"
        );
        assert!(decode_bytes(b"abc").is_none());
    }
}
