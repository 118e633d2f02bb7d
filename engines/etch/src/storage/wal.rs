//! Write-ahead-log records: framing, payload encoding, and scanning a segment on
//! recovery. The byte layout is specified in `FORMAT.md`.
//!
//! A record is `len: u32 LE | crc: u32 LE | payload[len]`, with `crc = CRC-32
//! (IEEE, crc32fast) of payload` and `payload = postcard((seq, durable, ops))`, where
//! `durable` is the durable watermark when the record was appended (every record with
//! a seq up to it had been fsynced) and each op is `(key: bytes, value: Option<bytes>)`
//! (`None` = delete).

use serde::ser::{SerializeSeq, SerializeTuple};
use serde::{Deserialize, Serialize, Serializer};

use super::error::StoreError;

/// Bytes of the record header: length + CRC.
pub(crate) const HEADER_BYTES: usize = 8;
/// The smallest possible payload: 1-byte varints for the seq, the durable watermark and
/// the op count.
const MIN_PAYLOAD_BYTES: usize = 3;

/// The writes of one commit, as given to [`WriteTxn::commit`](crate::storage::WriteTxn::commit).
pub(crate) type Writes = [(Vec<u8>, Option<Vec<u8>>)];

struct BytesOut<'a>(&'a [u8]);
impl Serialize for BytesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct OpOut<'a>(&'a (Vec<u8>, Option<Vec<u8>>));
impl Serialize for OpOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&BytesOut(&self.0.0))?;
        t.serialize_element(&self.0.1.as_deref().map(BytesOut))?;
        t.end()
    }
}

struct OpsOut<'a>(&'a Writes);
impl Serialize for OpsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for op in self.0 {
            seq.serialize_element(&OpOut(op))?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct RecordOut<'a> {
    seq: u64,
    durable: u64,
    ops: OpsOut<'a>,
}

/// One decoded record, borrowing keys and values from the segment's bytes.
#[derive(Deserialize, Debug)]
pub(crate) struct Record<'a> {
    /// The commit sequence number.
    pub seq: u64,
    /// The durable watermark when the record was appended: every record with a seq
    /// `<= durable` had been fsynced (and possibly acknowledged) by then. Recovery uses
    /// it to tell damage to acknowledged data from a torn, unacknowledged tail.
    pub durable: u64,
    /// `(key, Some(value))` = put, `(key, None)` = delete, applied in order.
    #[serde(borrow)]
    pub ops: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// The largest write set, in bytes (the sum of its keys' and values' lengths), whose
/// commit record always fits the record's `u32` length field: 341 MiB and a bit.
///
/// A payload is a seq, a durable-watermark and an op-count varint (at most 10 bytes
/// each), then per op a key-length varint, an option tag and a value-length varint (at
/// most 5 + 1 + 5 = 11 bytes for lengths under 2^35) beside the key and value bytes. A
/// write set holds each key once, so at most one key is empty and `ops <= bytes + 1`;
/// the payload is therefore at most `30 + 11 * (bytes + 1) + bytes = 41 + 12 * bytes`,
/// which is at most `u32::MAX` up to this many bytes.
pub const MAX_COMMIT_BYTES: usize = (u32::MAX as usize - 41) / 12;

/// Encode commit `seq` as a complete framed record, ready for a single `write`;
/// `durable` is the store's durable watermark at the append (see [`Record::durable`]).
///
/// # Errors
/// [`StoreError::TooLarge`] when the payload does not fit the `u32` length field.
pub(crate) fn encode_record(
    seq: u64,
    durable: u64,
    writes: &Writes,
) -> Result<Vec<u8>, StoreError> {
    let estimate: usize = writes
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 11)
        .sum::<usize>()
        + HEADER_BYTES
        + 30;
    let mut buf = Vec::with_capacity(estimate);
    buf.extend_from_slice(&[0u8; HEADER_BYTES]);
    let rec = RecordOut {
        seq,
        durable,
        ops: OpsOut(writes),
    };
    let mut buf = postcard::to_extend(&rec, buf)
        .map_err(|e| StoreError::Io(std::io::Error::other(format!("etch: encode: {e}"))))?;
    let payload_len = buf.len() - HEADER_BYTES;
    let len32 = u32::try_from(payload_len).map_err(|_| StoreError::TooLarge {
        what: "commit record",
        size_bytes: payload_len as u64,
        limit_bytes: u64::from(u32::MAX),
    })?;
    let crc = crc32fast::hash(&buf[HEADER_BYTES..]);
    buf[0..4].copy_from_slice(&len32.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// Try to decode the record that starts at `off`. Returns the record and the offset
/// just after it, or why the bytes there are not a valid record.
pub(crate) fn decode_at(data: &[u8], off: usize) -> Result<(Record<'_>, usize), String> {
    let rest = &data[off..];
    if rest.len() < HEADER_BYTES {
        return Err(format!(
            "incomplete record header ({} of {HEADER_BYTES} bytes)",
            rest.len()
        ));
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len < MIN_PAYLOAD_BYTES {
        return Err(format!("record length {len} is below the minimum"));
    }
    if rest.len() - HEADER_BYTES < len {
        return Err(format!(
            "record of {len} payload bytes runs past the end of the file ({} bytes left)",
            rest.len() - HEADER_BYTES
        ));
    }
    let payload = &rest[HEADER_BYTES..HEADER_BYTES + len];
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Err(format!(
            "checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        ));
    }
    let (rec, tail) = postcard::take_from_bytes::<Record<'_>>(payload)
        .map_err(|e| format!("payload does not decode: {e}"))?;
    if !tail.is_empty() {
        return Err(format!("{} stray bytes after the payload", tail.len()));
    }
    Ok((rec, off + HEADER_BYTES + len))
}

/// Read a LEB128 varint (postcard's `u64` encoding) at the start of `b`.
fn peek_varint(b: &[u8]) -> Option<u64> {
    let mut out = 0u64;
    for (i, byte) in b.iter().take(10).enumerate() {
        out |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

/// A valid record found after a damaged spot: see [`valid_record_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LaterRecord {
    /// Its offset in the segment.
    pub offset: usize,
    /// Its seq.
    pub seq: u64,
    /// Its durable watermark ([`Record::durable`]).
    pub durable: u64,
}

/// The valid record, starting anywhere in `data[from..]` with a seq greater than
/// `last_seq`, that has the highest durable watermark (`None`: there is none). Used to
/// tell damage at the tail of the log from damage to acknowledged data: group commit
/// leaves several records unsynced, and a disk may persist a later one but not an
/// earlier one. The damage is harmless exactly when no later record says that a seq
/// above `last_seq` had already been fsynced when it was appended.
///
/// Candidates are filtered cheaply (plausible length and seq) before the CRC is
/// computed, so scanning a garbage tail is close to linear.
pub(crate) fn valid_record_after(data: &[u8], from: usize, last_seq: u64) -> Option<LaterRecord> {
    // Every record is at least HEADER_BYTES + MIN_PAYLOAD_BYTES long, so no record
    // after `from` can carry a seq beyond this.
    let max_seq = last_seq
        .saturating_add(1)
        .saturating_add((data.len() / (HEADER_BYTES + MIN_PAYLOAD_BYTES)) as u64);
    let mut best: Option<LaterRecord> = None;
    let mut off = from;
    while off + HEADER_BYTES + MIN_PAYLOAD_BYTES <= data.len() {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
        let body = off + HEADER_BYTES;
        if len >= MIN_PAYLOAD_BYTES
            && data.len() - body >= len
            && let Some(seq) = peek_varint(&data[body..body + len])
            && seq > last_seq
            && seq <= max_seq
            && let Ok((rec, _)) = decode_at(data, off)
            && rec.seq > last_seq
            && best.is_none_or(|b| rec.durable > b.durable)
        {
            best = Some(LaterRecord {
                offset: off,
                seq: rec.seq,
                durable: rec.durable,
            });
        }
        off += 1;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_within_the_bound_behind_max_commit_bytes() {
        type WriteOp = (Vec<u8>, Option<Vec<u8>>);
        // The worst cases for overhead per byte: empty and 1-byte keys, empty values
        // and deletes; and ordinary ones. payload <= 31 + 12 * bytes.
        let mut sets: Vec<Vec<WriteOp>> = vec![
            vec![],
            vec![(Vec::new(), None)],
            vec![(Vec::new(), Some(Vec::new()))],
            (0..=255u8).map(|b| (vec![b], None)).collect(),
            (0..=255u8).map(|b| (vec![b], Some(Vec::new()))).collect(),
            (0..200u32)
                .map(|i| (i.to_be_bytes().to_vec(), Some(vec![7; i as usize * 3])))
                .collect(),
        ];
        sets[3].insert(0, (Vec::new(), Some(Vec::new())));
        for (i, writes) in sets.iter().enumerate() {
            let bytes: usize = writes
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum();
            let payload = encode_record(u64::MAX, u64::MAX, writes).unwrap().len() - HEADER_BYTES;
            assert!(
                payload <= 41 + 12 * bytes,
                "set {i}: {payload} > 41 + 12 * {bytes}"
            );
        }
        assert!(41 + 12 * MAX_COMMIT_BYTES as u64 <= u64::from(u32::MAX));
    }

    #[test]
    fn round_trip_and_postcard_compatible() {
        let writes = vec![
            (b"k1".to_vec(), Some(b"v1".to_vec())),
            (b"k2".to_vec(), None),
            (Vec::new(), Some(Vec::new())),
        ];
        let buf = encode_record(300, 298, &writes).unwrap();
        let (rec, end) = decode_at(&buf, 0).unwrap();
        assert_eq!(end, buf.len());
        assert_eq!(rec.seq, 300);
        assert_eq!(rec.durable, 298);
        assert_eq!(
            rec.ops,
            vec![
                (&b"k1"[..], Some(&b"v1"[..])),
                (&b"k2"[..], None),
                (&b""[..], Some(&b""[..]))
            ]
        );
        // The payload is exactly postcard of (u64, u64, Vec<(Vec<u8>, Option<Vec<u8>>)>).
        let plain = postcard::to_allocvec(&(300u64, 298u64, writes)).unwrap();
        assert_eq!(&buf[HEADER_BYTES..], &plain[..]);
        // Byte-level layout documented in FORMAT.md.
        assert_eq!(
            &buf[HEADER_BYTES..],
            &[
                0xac, 0x02, 0xaa, 0x02, 3, 2, b'k', b'1', 1, 2, b'v', b'1', 2, b'k', b'2', 0, 0, 1,
                0
            ]
        );
        assert_eq!(
            u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize,
            buf.len() - 8
        );
    }

    #[test]
    fn format_md_example() {
        let buf = encode_record(
            300,
            299,
            &[
                (b"k1".to_vec(), Some(b"v1".to_vec())),
                (b"k2".to_vec(), None),
            ],
        )
        .unwrap();
        assert_eq!(
            &buf[HEADER_BYTES..],
            &[
                0xac, 0x02, 0xab, 0x02, 0x02, 0x02, 0x6b, 0x31, 0x01, 0x02, 0x76, 0x31, 0x02, 0x6b,
                0x32, 0x00
            ]
        );
        assert_eq!(&buf[0..4], &[0x10, 0, 0, 0]);
        assert_eq!(
            &buf[4..8],
            &crc32fast::hash(&buf[HEADER_BYTES..]).to_le_bytes()
        );
    }

    #[test]
    fn detects_bad_records() {
        let buf = encode_record(1, 0, &[(b"a".to_vec(), Some(b"b".to_vec()))]).unwrap();
        for cut in 0..buf.len() {
            assert!(decode_at(&buf[..cut], 0).is_err(), "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert!(decode_at(&b, 0).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn finds_valid_records_after_garbage() {
        let mut data = vec![0xffu8; 37];
        data.extend(encode_record(5, 3, &[(b"a".to_vec(), None)]).unwrap());
        let at = data.len();
        data.extend(encode_record(6, 5, &[(b"b".to_vec(), None)]).unwrap());
        let later = |last| valid_record_after(&data, 0, last);
        assert_eq!(
            later(4),
            Some(LaterRecord {
                offset: at,
                seq: 6,
                durable: 5
            })
        );
        assert_eq!(later(5).map(|r| r.seq), Some(6));
        assert_eq!(later(6), None);
        assert_eq!(valid_record_after(&[0u8; 100], 0, 0), None);
    }
}
