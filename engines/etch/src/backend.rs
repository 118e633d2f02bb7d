//! The etch store as a datalayer engine: [`EtchKv`] implements the KV family's
//! [`KvStore`], [`KvTxn`] and [`KvSnapshot`] over the [`storage`](crate::storage)
//! layer, and [`KvEngine`] supplies everything above it (rows, indexes, queries,
//! savepoints, catalog). [`open`] and [`memory`] make the engine.
//!
//! Transactions: read-only ones read one [`Snapshot`] (no lock). Read-write ones take the
//! single writer lock at `begin` and read the latest state, so they are serializable by
//! construction (one writer at a time); the lock wait is bounded by
//! [`EtchOptions::lock_timeout`] (then `ErrorKind::Timeout`), so a transaction that
//! waits on another one held by the same task fails instead of hanging.

use crate::config::{EtchOptions, parse_url};
use crate::error::{join_error, lock_timeout, map_error};
use crate::storage::io::Dir;
use crate::storage::{Snapshot, Store, StoreError, StoreOptions, WriteTxn};
use async_trait::async_trait;
use datalayer_core::{Capability, Error, Result, TxOptions};
use datalayer_kv::{Bytes, KvCapability, KvEngine, KvSnapshot, KvStore, KvTxn, WriteSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// [`KvStore`] over an etch [`Store`]: what [`open`] and [`memory`] wrap in a
/// [`KvEngine`]. Cheap to clone (clones share the store).
#[derive(Clone, Debug)]
pub struct EtchKv {
    store: Store,
    durable: bool,
    opts: EtchOptions,
}

impl EtchKv {
    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &EtchOptions {
        &self.opts
    }
}

/// Opens (or creates) an etch engine in `dir`, recovering from its write-ahead log.
///
/// # Errors
/// `InvalidInput` for options that fail [`EtchOptions::validate`]; `Corrupted` when a
/// snapshot or a WAL record before the tail fails its checksum; `Io` for file-system
/// errors (including `dir` being open in another store).
pub async fn open(dir: impl AsRef<Path>, opts: EtchOptions) -> Result<KvEngine> {
    let dir: PathBuf = dir.as_ref().to_owned();
    start(opts, move |o| Store::open(&dir, o)).await
}

/// [`open`] on any [`Dir`] backend (tests use one that simulates crashes and failed
/// fsyncs).
///
/// # Errors
/// As [`open`].
pub async fn open_dir(dir: Arc<dyn Dir>, opts: EtchOptions) -> Result<KvEngine> {
    start(opts, move |o| Store::open_dir(dir, o)).await
}

/// Checks `opts`, runs `open_store` (recovery: blocking I/O) on a blocking thread and
/// wraps the store in the engine.
async fn start(
    opts: EtchOptions,
    open_store: impl FnOnce(StoreOptions) -> std::result::Result<Store, StoreError> + Send + 'static,
) -> Result<KvEngine> {
    opts.validate()?;
    let store_opts = opts.store.clone();
    let store = tokio::task::spawn_blocking(move || open_store(store_opts))
        .await
        .map_err(|e| join_error("opening the store", e))?
        .map_err(map_error)?;
    Ok(KvEngine::new(EtchKv {
        store,
        durable: true,
        opts,
    }))
}

/// Opens the engine an etch URL names: [`memory`] for `etch::memory:`, else [`open`]
/// on its directory with its options (the URL forms are in [`parse_url`]).
///
/// # Errors
/// `InvalidInput` for a malformed URL (see [`parse_url`]); otherwise as [`open`].
pub async fn open_url(url: &str) -> Result<KvEngine> {
    match parse_url(url)? {
        (None, _) => Ok(memory()),
        (Some(dir), opts) => open(dir, opts).await,
    }
}

/// An etch engine with no files at all (state lives and dies with the process), with
/// [`EtchOptions::default`].
pub fn memory() -> KvEngine {
    KvEngine::new(EtchKv {
        store: Store::memory(),
        durable: false,
        opts: EtchOptions::default(),
    })
}

#[async_trait]
impl KvStore for EtchKv {
    fn name(&self) -> &'static str {
        "etch"
    }

    fn capability(&self) -> Capability {
        // One writer at a time: every level is satisfied by serial execution.
        Capability {
            read_committed: true,
            repeatable_read: true,
            snapshot: true,
            serializable: true,
            read_only_tx: true,
            savepoints: true,
            concurrent_writers: false,
            pipeline_depth: None,
            max_value_bytes: Some(self.opts.store.max_value_bytes),
            max_key_bytes: None,
            durable: self.durable,
            // The outbox (datalayer-outbox) runs on any transactional engine.
            outbox: true,
            ..Capability::default()
        }
    }

    fn kv_capability(&self) -> KvCapability {
        // Read-only transactions read one snapshot; a read-write one reads the base it
        // took with the single writer lock. No key locks: the writer lock covers every
        // key from `begin`.
        KvCapability {
            snapshot_reads: true,
            pessimistic_locks: false,
            max_txn_bytes: Some(self.opts.max_txn_bytes),
            concurrent_writers: false,
        }
    }

    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn KvTxn>> {
        if opts.read_only {
            return Ok(Box::new(EtchTxn::Read(self.store.snapshot())));
        }
        match tokio::time::timeout(self.opts.lock_timeout, self.store.begin_write()).await {
            Ok(txn) => Ok(Box::new(EtchTxn::Write {
                txn,
                cap: self.kv_capability(),
            })),
            Err(_) => Err(lock_timeout(self.opts.lock_timeout)),
        }
    }

    fn snapshot(&self) -> Option<Box<dyn KvSnapshot>> {
        Some(Box::new(EtchSnapshot(self.store.snapshot())))
    }

    async fn sync(&self) -> Result<()> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sync())
            .await
            .map_err(|e| join_error("syncing the store", e))?
            .map_err(map_error)
    }

    async fn close(&self) -> Result<()> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|e| join_error("closing the store", e))?
            .map_err(map_error)
    }
}

/// The committed, visible state as a synchronous [`KvSnapshot`].
struct EtchSnapshot(Snapshot);

impl KvSnapshot for EtchSnapshot {
    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.0.get(key)
    }
}

enum EtchTxn {
    Read(Snapshot),
    /// Holds the writer lock; `cap` carries the write-set limit.
    Write {
        txn: WriteTxn,
        cap: KvCapability,
    },
}

impl EtchTxn {
    fn snapshot(&self) -> &Snapshot {
        match self {
            EtchTxn::Read(s) => s,
            EtchTxn::Write { txn, .. } => txn.base(),
        }
    }
}

#[async_trait]
impl KvTxn for EtchTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.snapshot().get(key).map(<[u8]>::to_vec))
    }

    async fn batch_get(&mut self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>> {
        let s = self.snapshot();
        Ok(keys.iter().map(|k| s.get(k).map(<[u8]>::to_vec)).collect())
    }

    async fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        Ok(self
            .snapshot()
            .range(start, end, reverse)
            .take(limit)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect())
    }

    async fn count(&mut self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<u64> {
        Ok(self.snapshot().range(start, end, false).count() as u64)
    }

    async fn commit(self: Box<Self>, writes: WriteSet) -> Result<()> {
        match *self {
            EtchTxn::Write { txn, cap } => {
                // Over the limit: the writer lock is released as `txn` drops.
                cap.check_write_set("etch", &writes)?;
                txn.commit(writes).await.map(|_| ()).map_err(map_error)
            }
            EtchTxn::Read(_) if writes.is_empty() => Ok(()),
            EtchTxn::Read(_) => Err(Error::invalid_input("write in a read-only transaction")),
        }
    }

    /// A read-write transaction waits until the state it read is durable (under
    /// `FlushPolicy::EveryCommit`): the KV engine rolls back a transaction that wrote
    /// nothing instead of committing it, and its answer (a unique violation, a 0-row
    /// update) may rest on commits whose fsync is still running.
    async fn rollback(self: Box<Self>) -> Result<()> {
        match *self {
            EtchTxn::Write { txn, .. } => txn.rollback().await.map_err(map_error),
            EtchTxn::Read(_) => Ok(()),
        }
    }
}
