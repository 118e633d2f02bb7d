//! The key-value engine family (etch, Redis, TiKV).
//!
//! An engine of this family implements only an ordered, transactional key-value store
//! ([`KvStore`] → [`KvTxn`]: get, batch_get, scan, commit with a write set, rollback).
//! Everything above it lives here, once for all three engines: the key layout and the
//! order-preserving key codec ([`codec`]), the access-path planner ([`datalayer_core::plan`]), index
//! maintenance and unique checks on every write, ordering and limits, savepoints, and
//! the catalog ([`KvEngine`]).
//!
//! Writes are buffered here (an overlay over the store's snapshot) and handed to the
//! store in one piece at commit, so a store only needs atomic multi-key commit and
//! consistent reads; savepoints and read-your-writes come for free.
//!
//! What a store can do beyond that minimum — snapshot reads, pessimistic locks, a
//! write-set limit, concurrent writers — it declares in a [`KvCapability`], and
//! [`KvEngine`] adapts to it.

mod alter;
mod capability;
pub mod codec;
pub mod contract;
mod engine;
mod fence;
pub mod mem;

mod txn;

pub use capability::{KvCapability, write_set_bytes};
pub use codec::EntryLayout;
pub use engine::KvEngine;

/// The failpoints of this crate (feature `failpoints`), for
/// [`fail::cfg`](https://docs.rs/fail/latest/fail/fn.cfg.html).
pub mod failpoints {
    /// In a schema change's row rewrite, just after a chunk committed: `return`
    /// makes the change stop there with an `Engine` error, as a crash would.
    pub const AFTER_REWRITE_CHUNK: &str = "kv::alter::after_rewrite_chunk";
    /// In a schema change's index build, just after a chunk committed (writers of
    /// the table are admitted meanwhile): `return` stops the change there with an
    /// `Engine` error; a callback runs while the build waits.
    pub const AFTER_BUILD_CHUNK: &str = "kv::alter::after_build_chunk";
}

use async_trait::async_trait;
use datalayer_core::capability::Capability;
use datalayer_core::engine::TxOptions;
use datalayer_core::error::{Error, Result};
use std::ops::Bound;

/// One key or value.
pub type Bytes = Vec<u8>;

/// A write set: `(key, Some(value))` puts, `(key, None)` deletes, in key order, each key
/// at most once.
pub type WriteSet = Vec<(Bytes, Option<Bytes>)>;

/// An ordered, transactional key-value store.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// Engine name (`etch`, `redis`, `tikv`).
    fn name(&self) -> &'static str;
    /// Capabilities of the engine built on this store. `max_value_bytes` and
    /// `max_key_bytes` are enforced by [`KvEngine`] before anything reaches the store.
    /// [`KvEngine`]'s `Engine::capability` derives `concurrent_writers`, `snapshot` and
    /// `repeatable_read` from [`KvStore::kv_capability`] (see there), whatever this
    /// declares for them.
    fn capability(&self) -> Capability;
    /// What the store itself can do: snapshot reads, pessimistic locks, the largest
    /// write set, concurrent writers (see [`KvCapability`]). Constant for the life of
    /// the store. The contract suite ([`contract`]) checks each declaration against
    /// the store's behaviour.
    fn kv_capability(&self) -> KvCapability;
    /// Begins a transaction. Its reads see nothing of other uncommitted transactions;
    /// with [`KvCapability::snapshot_reads`] they see one consistent state (a snapshot),
    /// without it each read may see a later committed state and the commit validates
    /// them.
    ///
    /// # Errors
    /// `Timeout` when the store cannot start a transaction in time (etch: the writer
    /// lock); `ConnectionLost` for a server store that is unreachable.
    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn KvTxn>>;
    /// Makes every commit acknowledged so far durable (it survives a power loss).
    /// Called after writes that must never be lost, such as the open epoch of the
    /// change feed. Default: nothing to do, for stores whose commits are durable when
    /// acknowledged.
    ///
    /// # Errors
    /// The store's own errors (etch: `Io` when the fsync fails).
    async fn sync(&self) -> Result<()> {
        Ok(())
    }
    /// Flushes and closes the store.
    ///
    /// # Errors
    /// The store's own errors (etch: `Io` when the final fsync fails).
    async fn close(&self) -> Result<()>;

    /// An engine-specific service, as [`Engine::extension`](datalayer_core::Engine::extension)
    /// describes it; [`KvEngine`] answers its `extension` with the store's (the Redis
    /// store offers its outbox driver). Default: `None` for every type.
    fn extension(&self, ty: std::any::TypeId) -> Option<Box<dyn std::any::Any + Send>> {
        let _ = ty;
        None
    }

    /// A consistent, committed, read-only view that can be read without awaiting, for
    /// stores whose reads never wait (in-process stores such as etch). [`KvEngine`] uses
    /// it for autocommit primary-key point reads, decoding straight from the borrowed
    /// bytes. Default: `None` (server stores), and every read goes through [`KvStore::begin`].
    fn snapshot(&self) -> Option<Box<dyn KvSnapshot>> {
        None
    }
}

/// A synchronous read-only view of a [`KvStore`] at one point in time.
pub trait KvSnapshot: Send + Sync {
    /// The value at `key`, borrowed from the snapshot.
    fn get(&self, key: &[u8]) -> Option<&[u8]>;
}

/// A transaction on a [`KvStore`]. Reads (and, where declared, locks) only; writes
/// arrive all at once in `commit`.
///
/// # Behavior
/// - `scan` returns entries with `start <= key < end` (per the bounds) in ascending key
///   order, or descending if `reverse`, at most `limit` of them.
/// - `commit` applies the write set atomically or not at all; a conflict with a
///   concurrent transaction is `Conflict` (retryable). A write set over
///   [`KvCapability::max_txn_bytes`] is `InvalidInput`, and nothing is applied.
/// - A store without [`KvCapability::snapshot_reads`] validates at `commit` every key
///   and range the transaction read, even when the write set is empty: one that changed
///   after it was read fails the commit with `Conflict`. One exception: a transaction
///   with an empty write set whose reads were all served by **one** atomic read of the
///   server (one call, e.g. a single `get`) saw one state at one point of the server's
///   serial order, where it is serialized; it may commit without validation.
/// - Dropping a transaction without `commit` discards it (and releases its locks).
#[async_trait]
pub trait KvTxn: Send {
    /// The value at `key`.
    ///
    /// # Errors
    /// The store's own errors (`ConnectionLost`, `Timeout` for a server store).
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>>;
    /// The values at `keys`, in order, in one round trip where the store can.
    ///
    /// # Errors
    /// As [`KvTxn::get`].
    async fn batch_get(&mut self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }
    /// Entries in `[start, end)` per the bounds, in key order (reversed if `reverse`).
    ///
    /// # Errors
    /// As [`KvTxn::get`].
    async fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>>;
    /// The entries [`KvTxn::scan`] returns for the same arguments, each with the value
    /// stored at `target_prefix ‖ entry value` (`None` when that key is absent): a
    /// secondary index's entries, whose values are primary keys, with the rows they
    /// point at. Shapes: `(entry key, entry value, target value)`, in scan order.
    ///
    /// Reads count as a `scan` followed by a `batch_get` of the targets (the same
    /// isolation and validation). The default does exactly that, in two calls; a
    /// server store should override it to serve both in one atomic round trip.
    ///
    /// `layout`, when given, says that every entry in the range is a non-unique index
    /// entry whose value is the tail of its key ([`EntryLayout::value_of`]): a store
    /// may then find the targets from the keys alone, without reading the entries'
    /// values first. A store may ignore it; the result is the same.
    ///
    /// # Errors
    /// As [`KvTxn::get`]; `Corrupted` where the store used `layout` and a key in the
    /// range is not of its shape.
    async fn scan_with_targets(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
        target_prefix: &[u8],
        layout: Option<&EntryLayout>,
    ) -> Result<Vec<(Bytes, Bytes, Option<Bytes>)>> {
        let _ = layout;
        let entries = self.scan(start, end, limit, reverse).await?;
        join_targets(self, entries, target_prefix).await
    }
    /// The number of entries in `[start, end)` per the bounds. The default scans in
    /// chunks; stores that can count without copying values should override it.
    ///
    /// # Errors
    /// As [`KvTxn::get`].
    async fn count(&mut self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<u64> {
        let mut n = 0u64;
        let mut from: Option<Bytes> = None;
        loop {
            let lo = match &from {
                Some(k) => Bound::Excluded(k.as_slice()),
                None => start,
            };
            let chunk = self.scan(lo, end, 4096, false).await?;
            n += chunk.len() as u64;
            if chunk.len() < 4096 {
                return Ok(n);
            }
            from = chunk.last().map(|(k, _)| k.clone());
        }
    }
    /// Locks `keys` for this transaction until it commits, rolls back or is dropped
    /// (pessimistic locking, as TiKV's pessimistic transactions). Needs
    /// [`KvCapability::pessimistic_locks`]; [`KvEngine`] calls it with the keys it is
    /// about to write, before they enter the write set.
    ///
    /// # Behavior
    /// - While a key is locked, another transaction's `lock` of it, and its `commit` of
    ///   a write set that contains it, fail with `Conflict` (a store may first wait for
    ///   the holder, up to its lock-wait timeout).
    /// - When a call fails, some of `keys` may be locked all the same; they are
    ///   released with the transaction.
    /// - Locking a key this transaction already holds succeeds; so does an empty `keys`;
    ///   a key need not exist.
    /// - A lock changes nothing the transaction reads and writes nothing by itself.
    ///
    /// # Errors
    /// `Unsupported` when the store does not declare `pessimistic_locks` (the default
    /// implementation); `Conflict` (retryable) when another open transaction holds one
    /// of the keys; `InvalidInput` in a read-only transaction.
    async fn lock(&mut self, keys: &[Bytes]) -> Result<()> {
        let _ = keys;
        Err(Error::unsupported(
            "key-value",
            "pessimistic locks (KvTxn::lock)",
        ))
    }
    /// Records, without reading it, that `key` is expected to be absent: validated at
    /// commit like a read that found it absent (a commit that finds it present fails
    /// with `Conflict` and applies nothing). Returns false, recording nothing, where
    /// the store cannot — the default: only stores that validate reads at commit can
    /// (no [`KvCapability::snapshot_reads`]), and not for a key the transaction read
    /// as present. It lets an insert that expects its keys to be free commit in one
    /// round trip; a `Conflict` may then mean only that the expectation was wrong,
    /// and [`KvEngine`] runs the work again with reads.
    fn assume_absent(&mut self, key: &[u8]) -> bool {
        let _ = key;
        false
    }
    /// Commits the write set atomically.
    ///
    /// # Errors
    /// `Conflict` when the transaction lost a race with a concurrent one (or, without
    /// snapshot reads, something it read changed); `InvalidInput` for a write set over
    /// [`KvCapability::max_txn_bytes`] or a non-empty one in a read-only transaction;
    /// the store's own errors (`Io`, `ConnectionLost`, `CommitUnknown`) otherwise.
    async fn commit(self: Box<Self>, writes: WriteSet) -> Result<()>;
    /// Discards the transaction (and releases its locks).
    ///
    /// # Errors
    /// The store's own errors (a server store's `ConnectionLost`); the transaction is
    /// discarded all the same.
    async fn rollback(self: Box<Self>) -> Result<()>;
}

/// What [`KvTxn::scan_with_targets`] does by default: one
/// [`KvTxn::batch_get`] of `target_prefix ‖ value` for every scanned `(key, value)`,
/// returned as `(key, value, target value)` in the order of `entries`. For stores that
/// serve large scans the two-call way and small ones in one round trip.
///
/// # Errors
/// As [`KvTxn::batch_get`].
pub async fn join_targets<T: KvTxn + ?Sized>(
    txn: &mut T,
    entries: Vec<(Bytes, Bytes)>,
    target_prefix: &[u8],
) -> Result<Vec<(Bytes, Bytes, Option<Bytes>)>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<Bytes> = entries
        .iter()
        .map(|(_, v)| [target_prefix, v].concat())
        .collect();
    let targets = txn.batch_get(&keys).await?;
    Ok(entries
        .into_iter()
        .zip(targets)
        .map(|((k, v), t)| (k, v, t))
        .collect())
}
