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

pub mod codec;
pub mod contract;
mod engine;
pub mod mem;

mod txn;

pub use engine::KvEngine;

use async_trait::async_trait;
use datalayer_core::capability::Capability;
use datalayer_core::engine::TxOptions;
use datalayer_core::error::Result;
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
    fn capability(&self) -> Capability;
    /// Begins a transaction. Reads inside it must see one consistent state (a snapshot)
    /// plus nothing of other uncommitted transactions.
    ///
    /// # Errors
    /// `Timeout` when the store cannot start a transaction in time (etch: the writer
    /// lock); `ConnectionLost` for a server store that is unreachable.
    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn KvTxn>>;
    /// Flushes and closes the store.
    async fn close(&self) -> Result<()>;

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

/// A transaction on a [`KvStore`]. Reads only; writes arrive all at once in `commit`.
///
/// # Behavior
/// - `scan` returns entries with `start <= key < end` (per the bounds) in ascending key
///   order, or descending if `reverse`, at most `limit` of them.
/// - `commit` applies the write set atomically or not at all; a conflict with a
///   concurrent transaction is `Conflict` (retryable).
/// - Dropping a transaction without `commit` discards it.
#[async_trait]
pub trait KvTxn: Send {
    /// The value at `key`.
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>>;
    /// The values at `keys`, in order, in one round trip where the store can.
    async fn batch_get(&mut self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }
    /// Entries in `[start, end)` per the bounds, in key order (reversed if `reverse`).
    async fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>>;
    /// The number of entries in `[start, end)` per the bounds. The default scans in
    /// chunks; stores that can count without copying values should override it.
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
    /// Commits the write set atomically.
    async fn commit(self: Box<Self>, writes: WriteSet) -> Result<()>;
    /// Discards the transaction.
    async fn rollback(self: Box<Self>) -> Result<()>;
}
