//! [`Snapshot`]: an immutable, O(1)-clonable view of the store's state, and the
//! snapshot file format (layout in `FORMAT.md`).

use std::ops::Bound;
use std::sync::Arc;

use super::error::StoreError;
use super::io::Dir;

/// The ordered map behind every [`Snapshot`]: a persistent B-tree whose clones share
/// structure, so taking a snapshot is O(1) and a commit copies O(log n) nodes.
pub(crate) type Map = imbl::OrdMap<Arc<[u8]>, Arc<[u8]>>;

type ImblRange<'a> =
    imbl::ordmap::RangedIter<'a, Arc<[u8]>, Arc<[u8]>, imbl::shared_ptr::DefaultSharedPtr>;

/// An immutable view of the store at one commit sequence number.
///
/// Cloning is O(1) (reference counted); a `Snapshot` never changes, whatever is
/// committed after it was taken. From [`Store::snapshot`](crate::storage::Store::snapshot) it
/// holds the committed, *visible* state (under
/// [`FlushPolicy::EveryCommit`](crate::storage::FlushPolicy::EveryCommit): only durable
/// commits); from [`WriteTxn::base`](crate::storage::WriteTxn::base) the latest committed state.
#[derive(Clone, Default)]
pub struct Snapshot {
    map: Map,
    seq: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("seq", &self.seq)
            .field("len", &self.map.len())
            .finish()
    }
}

impl Snapshot {
    pub(crate) fn new(map: Map, seq: u64) -> Snapshot {
        Snapshot { map, seq }
    }

    pub(crate) fn map(&self) -> &Map {
        &self.map
    }

    /// The value stored under `key`, or `None`. One ordered-map lookup, O(log n).
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(|v| &**v)
    }

    /// True when `key` is present.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    /// Entries with `start <= key <= end` (per the bounds), in ascending key order, or
    /// descending when `reverse` is true. Keys compare as unsigned bytes
    /// (lexicographically, a prefix sorts first).
    ///
    /// # Behavior
    /// - An empty or inverted range (start after end, or equal with an excluded
    ///   bound) yields nothing; it never panics.
    pub fn range<'a>(
        &'a self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
    ) -> RangeIter<'a> {
        let empty = match (start, end) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e))
            | (Bound::Excluded(s), Bound::Included(e)) => s >= e,
            _ => false,
        };
        RangeIter {
            inner: if empty {
                None
            } else {
                Some(self.map.range::<_, [u8]>((start, end)))
            },
            reverse,
        }
    }

    /// All entries in ascending key order.
    pub fn iter(&self) -> RangeIter<'_> {
        self.range(Bound::Unbounded, Bound::Unbounded, false)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The sequence number of the last commit this view includes (0 = none yet).
    /// Commit sequence numbers start at 1 and grow by 1 per commit that wrote
    /// something.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// Iterator returned by [`Snapshot::range`] and [`Snapshot::iter`]: `(key, value)`
/// pairs borrowed from the snapshot.
pub struct RangeIter<'a> {
    inner: Option<ImblRange<'a>>,
    reverse: bool,
}

impl<'a> Iterator for RangeIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let it = self.inner.as_mut()?;
        let (k, v) = if self.reverse {
            it.next_back()?
        } else {
            it.next()?
        };
        Some((&**k, &**v))
    }
}

impl<'a> DoubleEndedIterator for RangeIter<'a> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let it = self.inner.as_mut()?;
        let (k, v) = if self.reverse {
            it.next()?
        } else {
            it.next_back()?
        };
        Some((&**k, &**v))
    }
}

// ---------------------------------------------------------------------------------
// Snapshot files.

/// First 8 bytes of every snapshot file.
pub(crate) const SNAP_MAGIC: &[u8; 8] = b"ETCHSNAP";
/// The snapshot format version written by this crate.
pub(crate) const SNAP_VERSION: u32 = 1;
/// magic + version + seq + count.
const SNAP_HEADER_BYTES: usize = 8 + 4 + 8 + 8;
const SNAP_TRAILER_BYTES: usize = 4;
/// Size of the write buffer used while writing a snapshot.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// Write `snap` to `final_name` atomically: write `final_name.tmp`, fsync it, rename
/// it, fsync the directory. A crash at any point leaves either no file under
/// `final_name` or the complete one; a failure before the rename removes the `.tmp`
/// file (best effort: recovery deletes leftovers too).
pub(crate) fn write_snapshot_file(
    dir: &dyn Dir,
    final_name: &str,
    snap: &Snapshot,
) -> std::io::Result<()> {
    let tmp = format!("{final_name}.tmp");
    let written = write_tmp(dir, &tmp, snap).and_then(|()| dir.rename(&tmp, final_name));
    if let Err(e) = written {
        let _ = dir.remove(&tmp);
        return Err(e);
    }
    dir.sync_dir()
}

/// Write and fsync `snap` as the file `tmp`.
fn write_tmp(dir: &dyn Dir, tmp: &str, snap: &Snapshot) -> std::io::Result<()> {
    let file = dir.create(tmp)?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = Vec::with_capacity(WRITE_CHUNK_BYTES + 64);
    buf.extend_from_slice(SNAP_MAGIC);
    buf.extend_from_slice(&SNAP_VERSION.to_le_bytes());
    buf.extend_from_slice(&snap.seq.to_le_bytes());
    buf.extend_from_slice(&(snap.map.len() as u64).to_le_bytes());
    let flush = |buf: &mut Vec<u8>, crc: &mut crc32fast::Hasher| -> std::io::Result<()> {
        crc.update(buf);
        file.write_all(buf)?;
        buf.clear();
        Ok(())
    };
    for (k, v) in snap.map.iter() {
        for part in [k, v] {
            let len = u32::try_from(part.len()).map_err(|_| {
                std::io::Error::other("etch: key or value over 4 GiB cannot be snapshotted")
            })?;
            buf.extend_from_slice(&len.to_le_bytes());
            if part.len() >= WRITE_CHUNK_BYTES {
                flush(&mut buf, &mut crc)?;
                crc.update(part);
                file.write_all(part)?;
            } else {
                buf.extend_from_slice(part);
            }
        }
        if buf.len() >= WRITE_CHUNK_BYTES {
            flush(&mut buf, &mut crc)?;
        }
    }
    flush(&mut buf, &mut crc)?;
    file.write_all(&crc.finalize().to_le_bytes())?;
    file.sync()
}

/// Parse a snapshot file's bytes. `name` is only for error messages.
pub(crate) fn read_snapshot_file(
    dir: &dyn Dir,
    name: &str,
    data: &[u8],
) -> Result<Snapshot, StoreError> {
    let corrupted = |offset: usize, reason: String| StoreError::Corrupted {
        file: dir.path().join(name),
        offset: offset as u64,
        reason,
    };
    if data.len() < SNAP_HEADER_BYTES + SNAP_TRAILER_BYTES {
        return Err(corrupted(
            0,
            format!("snapshot file of {} bytes is too short", data.len()),
        ));
    }
    let body_end = data.len() - SNAP_TRAILER_BYTES;
    let stored = u32::from_le_bytes(data[body_end..].try_into().expect("4 bytes"));
    let actual = crc32fast::hash(&data[..body_end]);
    if stored != actual {
        return Err(corrupted(
            body_end,
            format!("snapshot checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"),
        ));
    }
    if &data[0..8] != SNAP_MAGIC {
        return Err(corrupted(0, "bad snapshot magic".into()));
    }
    let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    if version != SNAP_VERSION {
        return Err(corrupted(
            8,
            format!("unsupported snapshot version {version}"),
        ));
    }
    let seq = u64::from_le_bytes(data[12..20].try_into().expect("8 bytes"));
    let count = u64::from_le_bytes(data[20..28].try_into().expect("8 bytes"));
    let mut off = SNAP_HEADER_BYTES;
    let take = |off: &mut usize| -> Result<&[u8], StoreError> {
        let at = *off;
        if body_end - at < 4 {
            return Err(corrupted(at, "truncated entry length".into()));
        }
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        if body_end - at - 4 < len {
            return Err(corrupted(
                at,
                format!("entry of {len} bytes runs past the end"),
            ));
        }
        *off = at + 4 + len;
        Ok(&data[at + 4..at + 4 + len])
    };
    let mut map = Map::new();
    let mut prev: Option<&[u8]> = None;
    for _ in 0..count {
        let at = off;
        let k = take(&mut off)?;
        let v = take(&mut off)?;
        if prev.is_some_and(|p| p >= k) {
            return Err(corrupted(at, "keys out of order".into()));
        }
        prev = Some(k);
        map.insert(Arc::from(k), Arc::from(v));
    }
    if off != body_end {
        return Err(corrupted(
            off,
            format!("{} stray bytes after {count} entries", body_end - off),
        ));
    }
    Ok(Snapshot::new(map, seq))
}
