//! An in-memory reference [`KvStore`]: [`MemKv`], an ordered map behind a mutex.
//!
//! Meant for tests and as the executable reading of the [`KvStore`] contract (it passes
//! every case of [`crate::contract`]); it keeps nothing on disk and is not tuned for
//! large data sets.
//!
//! # Transactions
//! - `begin` never waits. Every transaction reads the committed state as of its `begin`
//!   (a snapshot shared copy-on-write: `begin` is O(1), the first commit after it copies
//!   the map once).
//! - Commits are serialised under the store's lock. A read-write transaction that
//!   commits a non-empty write set is validated first: if any key it writes, any key it
//!   read (`get`, `batch_get`) or any key range it scanned or counted holds a different
//!   committed state than in its snapshot, the commit fails with `Conflict` and applies
//!   nothing. So two concurrent read-modify-writes of one key never both succeed
//!   (first committer wins), and committed transactions are serializable.
//! - A read-only transaction (`TxOptions::read_only`) is never validated; its commit
//!   with a non-empty write set fails with `InvalidInput`.

use crate::{Bytes, KvEngine, KvSnapshot, KvStore, KvTxn, WriteSet};
use async_trait::async_trait;
use datalayer_core::capability::Capability;
use datalayer_core::engine::TxOptions;
use datalayer_core::error::{Error, Result};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

type Map = BTreeMap<Bytes, Bytes>;
type Range = (Bound<Bytes>, Bound<Bytes>);

/// An in-memory, ordered, transactional [`KvStore`] (see the [module docs](self)).
///
/// Clones share the same data: wrap one clone in a [`KvEngine`] and keep another to
/// look at the raw keys and values. Its [`KvStore::name`] is `memkv`; it declares every
/// isolation level, read-only transactions, savepoints (provided by [`KvEngine`]) and
/// concurrent writers, no value or key size limit, and is not durable.
#[derive(Default, Clone)]
pub struct MemKv {
    state: Arc<Mutex<Arc<Map>>>,
}

impl MemKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A [`KvEngine`] over a new, empty [`MemKv`].
pub fn engine() -> KvEngine {
    KvEngine::new(MemKv::new())
}

#[async_trait]
impl KvStore for MemKv {
    fn name(&self) -> &'static str {
        "memkv"
    }

    fn capability(&self) -> Capability {
        Capability {
            read_committed: true,
            repeatable_read: true,
            snapshot: true,
            serializable: true,
            read_only_tx: true,
            savepoints: true,
            concurrent_writers: true,
            ..Capability::default()
        }
    }

    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn KvTxn>> {
        Ok(Box::new(MemTxn {
            snap: self.state.lock().clone(),
            store: self.state.clone(),
            writable: !opts.read_only,
            reads: BTreeSet::new(),
            ranges: Vec::new(),
        }))
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }

    fn snapshot(&self) -> Option<Box<dyn KvSnapshot>> {
        Some(Box::new(MemSnapshot(self.state.lock().clone())))
    }
}

struct MemSnapshot(Arc<Map>);

impl KvSnapshot for MemSnapshot {
    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.0.get(key).map(Vec::as_slice)
    }
}

struct MemTxn {
    snap: Arc<Map>,
    store: Arc<Mutex<Arc<Map>>>,
    /// Read-write: reads are recorded for validation at commit.
    writable: bool,
    reads: BTreeSet<Bytes>,
    ranges: Vec<Range>,
}

/// Whether no key can lie in the range (`BTreeMap::range` panics on such bounds).
fn is_empty_range(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e)) => s >= e,
        _ => false,
    }
}

fn range<'a>(
    m: &'a Map,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
) -> impl DoubleEndedIterator<Item = (&'a Bytes, &'a Bytes)> + 'a {
    let r = if is_empty_range(start, end) {
        None
    } else {
        Some(m.range::<[u8], _>((start, end)))
    };
    r.into_iter().flatten()
}

fn owned(b: Bound<&[u8]>) -> Bound<Bytes> {
    b.map(<[u8]>::to_vec)
}

fn borrowed(b: &Bound<Bytes>) -> Bound<&[u8]> {
    b.as_ref().map(Vec::as_slice)
}

impl MemTxn {
    /// Whether the committed state `cur` differs from the snapshot in anything this
    /// transaction read or writes; returns the first such key (or range) for the message.
    fn first_change(&self, cur: &Map, writes: &WriteSet) -> Option<String> {
        let keys = writes.iter().map(|(k, _)| k).chain(&self.reads);
        for k in keys {
            if cur.get(k) != self.snap.get(k) {
                return Some(format!("key \"{}\"", k.escape_ascii()));
            }
        }
        for (s, e) in &self.ranges {
            let (s, e) = (borrowed(s), borrowed(e));
            if !range(cur, s, e).eq(range(&self.snap, s, e)) {
                return Some(format!("a key in the scanned range {s:?}..{e:?}"));
            }
        }
        None
    }
}

#[async_trait]
impl KvTxn for MemTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        if self.writable {
            self.reads.insert(key.to_vec());
        }
        Ok(self.snap.get(key).cloned())
    }

    async fn batch_get(&mut self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>> {
        if self.writable {
            self.reads.extend(keys.iter().cloned());
        }
        Ok(keys.iter().map(|k| self.snap.get(k).cloned()).collect())
    }

    async fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let r = range(&self.snap, start, end).map(|(k, v)| (k.clone(), v.clone()));
        let out: Vec<(Bytes, Bytes)> = if reverse {
            r.rev().take(limit).collect()
        } else {
            r.take(limit).collect()
        };
        if self.writable && limit > 0 {
            // What was read: up to the last entry returned when the limit cut the scan.
            let (mut s, mut e) = (owned(start), owned(end));
            if out.len() == limit
                && let Some((last, _)) = out.last()
            {
                if reverse {
                    s = Bound::Included(last.clone());
                } else {
                    e = Bound::Included(last.clone());
                }
            }
            self.ranges.push((s, e));
        }
        Ok(out)
    }

    async fn count(&mut self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<u64> {
        if self.writable {
            self.ranges.push((owned(start), owned(end)));
        }
        Ok(range(&self.snap, start, end).count() as u64)
    }

    async fn commit(self: Box<Self>, writes: WriteSet) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        if !self.writable {
            return Err(Error::invalid_input(
                "memkv: write in a read-only transaction",
            ));
        }
        let store = Arc::clone(&self.store);
        let mut cur = store.lock();
        // While this transaction holds its snapshot, every commit replaces the shared map
        // (copy-on-write), so the same map means nothing was committed since `begin`.
        if !Arc::ptr_eq(&cur, &self.snap)
            && let Some(what) = self.first_change(&cur, &writes)
        {
            return Err(Error::conflict(format!(
                "memkv: {what} changed since the transaction began"
            )));
        }
        drop(self); // releases the snapshot, so the map is copied only if others hold it
        let map = Arc::make_mut(&mut cur);
        for (k, v) in writes {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
