//! An in-memory reference [`KvStore`]: [`MemKv`], an ordered map behind a mutex.
//!
//! Meant for tests and as the executable reading of the [`KvStore`] contract (it passes
//! every case of [`crate::contract`], in each of its modes); it keeps nothing on disk
//! and is not tuned for large data sets.
//!
//! # Transactions
//! - `begin` never waits. Every transaction keeps the committed state as of its `begin`
//!   (a snapshot shared copy-on-write: `begin` is O(1), the first commit after it copies
//!   the map once). With [`MemOptions::snapshot_reads`] (the default) it reads that
//!   snapshot; without it, every read sees the latest committed state (as Redis does).
//! - Commits are serialised under the store's lock. A read-write transaction that
//!   commits a non-empty write set is validated first: if any key it writes holds a
//!   different committed state than at its `begin`, or any key it read (`get`,
//!   `batch_get`) or key range it scanned or counted holds a different committed state
//!   than when it read it, the commit fails with `Conflict` and applies nothing. So two
//!   concurrent read-modify-writes of one key never both succeed (first committer
//!   wins), and committed transactions are serializable.
//! - Without snapshot reads, every transaction's reads are validated that way at
//!   commit, even a read-only one and even with an empty write set (backward
//!   validation, as Redis `WATCH` will do): a transaction that read two states fails.
//! - With snapshot reads, a read-only transaction (`TxOptions::read_only`) is never
//!   validated. Either way its commit with a non-empty write set fails with
//!   `InvalidInput`.
//! - With [`MemOptions::pessimistic_locks`], [`KvTxn::lock`] takes key locks that never
//!   wait: a key locked by another open transaction fails the `lock` with `Conflict`,
//!   and so does a commit whose write set holds it. Locks are released when the
//!   transaction commits, rolls back or is dropped. Without it, `lock` is `Unsupported`.
//! - With [`MemOptions::max_txn_bytes`], a larger write set fails the commit with
//!   `InvalidInput` and applies nothing.

use crate::{Bytes, KvCapability, KvEngine, KvSnapshot, KvStore, KvTxn, WriteSet};
use async_trait::async_trait;
use datalayer_core::capability::Capability;
use datalayer_core::engine::TxOptions;
use datalayer_core::error::{Error, Result};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

type Map = BTreeMap<Bytes, Bytes>;
type Range = (Bound<Bytes>, Bound<Bytes>);

/// Which optional parts of the [`KvStore`] contract a [`MemKv`] implements, so that
/// tests can run the KV family on stores with and without them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOptions {
    /// Reads see the transaction's snapshot (taken at `begin`); `false`: every read sees
    /// the latest committed state and every read is validated at commit (see the
    /// [module docs](self)). Declared as [`KvCapability::snapshot_reads`].
    /// Default: `true`.
    pub snapshot_reads: bool,
    /// [`KvTxn::lock`] takes key locks (see the [module docs](self)); `false`: it
    /// returns `Unsupported`. Declared as [`KvCapability::pessimistic_locks`].
    /// Default: `false`.
    pub pessimistic_locks: bool,
    /// The largest write set a commit accepts, in bytes (keys plus values, as
    /// [`crate::write_set_bytes`] counts them); `None`: no limit. Declared as
    /// [`KvCapability::max_txn_bytes`]. Default: `None`.
    pub max_txn_bytes: Option<usize>,
}

impl Default for MemOptions {
    fn default() -> Self {
        MemOptions {
            snapshot_reads: true,
            pessimistic_locks: false,
            max_txn_bytes: None,
        }
    }
}

/// An in-memory, ordered, transactional [`KvStore`] (see the [module docs](self)).
///
/// Clones share the same data: wrap one clone in a [`KvEngine`] and keep another to
/// look at the raw keys and values. Its [`KvStore::name`] is `memkv`; it declares every
/// isolation level (`Snapshot` and `RepeatableRead` only with snapshot reads),
/// read-only transactions, savepoints (provided by [`KvEngine`]) and concurrent
/// writers, no value or key size limit, and is not durable. Its [`KvCapability`]
/// follows its [`MemOptions`].
#[derive(Default, Clone)]
pub struct MemKv {
    state: Arc<Mutex<Shared>>,
    opts: MemOptions,
}

/// What every clone of a [`MemKv`] and every open transaction on it share.
#[derive(Default)]
struct Shared {
    /// The latest committed state.
    map: Arc<Map>,
    /// Key → id of the transaction that holds its lock.
    locks: HashMap<Bytes, u64>,
    /// Id of the next transaction.
    next_txn: u64,
}

impl MemKv {
    /// An empty store with [`MemOptions::default`] (snapshot reads, no locks, no limit).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with `opts`.
    pub fn with_options(opts: MemOptions) -> Self {
        MemKv {
            state: Arc::default(),
            opts,
        }
    }

    /// The options the store was made with.
    pub fn options(&self) -> MemOptions {
        self.opts
    }
}

impl std::fmt::Debug for MemKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("MemKv")
            .field("opts", &self.opts)
            .field("keys", &s.map.len())
            .field("locks", &s.locks.len())
            .finish()
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
        // Reads are validated at commit in both modes, so committed transactions are
        // serializable either way; only a snapshot makes reads repeatable.
        Capability {
            read_committed: true,
            repeatable_read: self.opts.snapshot_reads,
            snapshot: self.opts.snapshot_reads,
            serializable: true,
            read_only_tx: true,
            savepoints: true,
            concurrent_writers: true,
            ..Capability::default()
        }
    }

    fn kv_capability(&self) -> KvCapability {
        declared(self.opts)
    }

    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn KvTxn>> {
        let (begin, id) = {
            let mut s = self.state.lock();
            s.next_txn += 1;
            (s.map.clone(), s.next_txn)
        };
        Ok(Box::new(MemTxn {
            id,
            begin,
            store: self.state.clone(),
            opts: self.opts,
            writable: !opts.read_only,
            views: Vec::new(),
            held: Vec::new(),
        }))
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }

    fn snapshot(&self) -> Option<Box<dyn KvSnapshot>> {
        Some(Box::new(MemSnapshot(self.state.lock().map.clone())))
    }
}

struct MemSnapshot(Arc<Map>);

impl KvSnapshot for MemSnapshot {
    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.0.get(key).map(Vec::as_slice)
    }
}

struct MemTxn {
    id: u64,
    /// The committed state at `begin`: what written keys are validated against, and
    /// what every read sees with snapshot reads.
    begin: Arc<Map>,
    store: Arc<Mutex<Shared>>,
    opts: MemOptions,
    writable: bool,
    /// What was read, grouped by the committed state it was read from (one view with
    /// snapshot reads), for validation at commit.
    views: Vec<View>,
    /// Keys this transaction has locked.
    held: Vec<Bytes>,
}

/// Keys and ranges read from one committed state.
struct View {
    map: Arc<Map>,
    keys: BTreeSet<Bytes>,
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
    /// Whether reads are recorded for validation at commit: in a read-write
    /// transaction, and in every transaction without snapshot reads.
    fn validates(&self) -> bool {
        self.writable || !self.opts.snapshot_reads
    }

    /// The committed state the next read sees: the snapshot, or the latest state.
    fn read_state(&self) -> Arc<Map> {
        if self.opts.snapshot_reads {
            self.begin.clone()
        } else {
            self.store.lock().map.clone()
        }
    }

    /// Where to record a read from `map` (`None` when reads are not validated).
    fn view(&mut self, map: &Arc<Map>) -> Option<&mut View> {
        if !self.validates() {
            return None;
        }
        if !self.views.last().is_some_and(|v| Arc::ptr_eq(&v.map, map)) {
            self.views.push(View {
                map: map.clone(),
                keys: BTreeSet::new(),
                ranges: Vec::new(),
            });
        }
        self.views.last_mut()
    }

    /// Whether the committed state `cur` differs from what this transaction saw, in
    /// anything it writes (since `begin`) or read (since it read it); returns the first
    /// such key (or range) for the message.
    fn first_change(&self, cur: &Arc<Map>, writes: &WriteSet) -> Option<String> {
        // While this transaction holds a state, every commit replaces the shared map
        // (copy-on-write), so the same map means nothing was committed since.
        if !Arc::ptr_eq(cur, &self.begin) {
            for (k, _) in writes {
                if cur.get(k) != self.begin.get(k) {
                    return Some(format!("key \"{}\"", k.escape_ascii()));
                }
            }
        }
        for v in self.views.iter().filter(|v| !Arc::ptr_eq(cur, &v.map)) {
            for k in &v.keys {
                if cur.get(k) != v.map.get(k) {
                    return Some(format!("key \"{}\"", k.escape_ascii()));
                }
            }
            for (s, e) in &v.ranges {
                let (s, e) = (borrowed(s), borrowed(e));
                if !range(cur, s, e).eq(range(&v.map, s, e)) {
                    return Some(format!("a key in the scanned range {s:?}..{e:?}"));
                }
            }
        }
        None
    }

    /// Releases this transaction's locks; `shared` is the store's locked state.
    fn release(&mut self, shared: &mut Shared) {
        for k in self.held.drain(..) {
            if shared.locks.get(&k) == Some(&self.id) {
                shared.locks.remove(&k);
            }
        }
    }
}

impl Drop for MemTxn {
    fn drop(&mut self) {
        if !self.held.is_empty() {
            let store = self.store.clone();
            self.release(&mut store.lock());
        }
    }
}

#[async_trait]
impl KvTxn for MemTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        let map = self.read_state();
        if let Some(v) = self.view(&map) {
            v.keys.insert(key.to_vec());
        }
        Ok(map.get(key).cloned())
    }

    async fn batch_get(&mut self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>> {
        let map = self.read_state();
        if let Some(v) = self.view(&map) {
            v.keys.extend(keys.iter().cloned());
        }
        Ok(keys.iter().map(|k| map.get(k).cloned()).collect())
    }

    async fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let map = self.read_state();
        let r = range(&map, start, end).map(|(k, v)| (k.clone(), v.clone()));
        let out: Vec<(Bytes, Bytes)> = if reverse {
            r.rev().take(limit).collect()
        } else {
            r.take(limit).collect()
        };
        if limit > 0
            && let Some(view) = self.view(&map)
        {
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
            view.ranges.push((s, e));
        }
        Ok(out)
    }

    async fn count(&mut self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<u64> {
        let map = self.read_state();
        if let Some(v) = self.view(&map) {
            v.ranges.push((owned(start), owned(end)));
        }
        Ok(range(&map, start, end).count() as u64)
    }

    async fn lock(&mut self, keys: &[Bytes]) -> Result<()> {
        if !self.opts.pessimistic_locks {
            return Err(Error::unsupported(
                "memkv",
                "pessimistic locks (KvTxn::lock); see MemOptions::pessimistic_locks",
            ));
        }
        if !self.writable {
            return Err(Error::invalid_input(
                "memkv: lock in a read-only transaction",
            ));
        }
        let mut s = self.store.lock();
        if let Some(k) = keys
            .iter()
            .find(|k| s.locks.get(*k).is_some_and(|&holder| holder != self.id))
        {
            return Err(Error::conflict(format!(
                "memkv: key \"{}\" is locked by another transaction",
                k.escape_ascii()
            )));
        }
        for k in keys {
            if s.locks.insert(k.clone(), self.id).is_none() {
                self.held.push(k.clone());
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>, writes: WriteSet) -> Result<()> {
        if writes.is_empty() && self.opts.snapshot_reads {
            return Ok(());
        }
        if !self.writable && !writes.is_empty() {
            return Err(Error::invalid_input(
                "memkv: write in a read-only transaction",
            ));
        }
        declared(self.opts).check_write_set("memkv", &writes)?;
        let store = Arc::clone(&self.store);
        let mut shared = store.lock();
        if let Some((k, _)) = writes
            .iter()
            .find(|(k, _)| shared.locks.get(k).is_some_and(|&h| h != self.id))
        {
            return Err(Error::conflict(format!(
                "memkv: key \"{}\" is locked by another transaction",
                k.escape_ascii()
            )));
        }
        if let Some(what) = self.first_change(&shared.map, &writes) {
            return Err(Error::conflict(format!(
                "memkv: {what} changed since the transaction {}",
                if self.opts.snapshot_reads {
                    "began"
                } else {
                    "read it"
                }
            )));
        }
        self.release(&mut shared);
        // Releases the states this transaction held, so the map is copied only if
        // others hold it.
        drop(self);
        let map = Arc::make_mut(&mut shared.map);
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

/// The [`KvCapability`] a [`MemKv`] with `opts` declares.
fn declared(opts: MemOptions) -> KvCapability {
    KvCapability {
        snapshot_reads: opts.snapshot_reads,
        pessimistic_locks: opts.pessimistic_locks,
        max_txn_bytes: opts.max_txn_bytes,
        concurrent_writers: true,
    }
}
