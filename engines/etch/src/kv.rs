//! The etch store as a datalayer engine: [`EtchKv`] implements the KV family's
//! [`KvStore`], and [`KvEngine`] supplies everything above it (rows, indexes, queries,
//! savepoints, catalog).
//!
//! Transactions: read-only ones read one [`Snapshot`] (no lock). Read-write ones take the
//! single writer lock at `begin` and read the latest state, so they are serializable by
//! construction (one writer at a time); the lock wait is bounded by
//! [`EtchOptions::lock_timeout`] (then `ErrorKind::Timeout`), so a transaction that
//! waits on another one held by the same task fails instead of hanging.

use crate::storage::{FlushPolicy, Snapshot, Store, StoreError, StoreOptions, WriteTxn};
use async_trait::async_trait;
use datalayer_core::{Capability, Error, Result, TxOptions};
use datalayer_kv::{Bytes, KvCapability, KvEngine, KvSnapshot, KvStore, KvTxn, WriteSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Options of the etch engine.
#[derive(Debug, Clone)]
pub struct EtchOptions {
    /// The store's options (flush policy, compaction threshold, value limit).
    /// Default: [`StoreOptions::default`] (fsync every commit, 64 MiB compaction, 16 MiB values).
    pub store: StoreOptions,
    /// How long a read-write transaction waits for the writer lock.
    /// Default: 30 seconds.
    pub lock_timeout: Duration,
}

impl Default for EtchOptions {
    fn default() -> Self {
        EtchOptions {
            store: StoreOptions::default(),
            lock_timeout: Duration::from_secs(30),
        }
    }
}

/// Maps store errors to the portable kinds (the one place this engine does so).
pub fn map_error(e: StoreError) -> Error {
    match e {
        StoreError::Io(io) => Error::from(io),
        e @ StoreError::Corrupted { .. } => Error::corrupted(e.to_string()),
        e @ StoreError::TooLarge { .. } => Error::invalid_input(e.to_string()),
        e @ StoreError::Closed => Error::invalid_input(e.to_string()),
        e => Error::new(datalayer_core::ErrorKind::Io, e.to_string()),
    }
}

/// [`KvStore`] over an etch [`Store`].
#[derive(Clone)]
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
}

/// Opens (or creates) an etch engine in `dir`, recovering from its write-ahead log.
///
/// # Errors
/// `Corrupted` when a snapshot or a WAL record before the tail fails its checksum;
/// `Io` for file-system errors.
pub async fn open(dir: impl AsRef<Path>, opts: EtchOptions) -> Result<KvEngine> {
    let dir: PathBuf = dir.as_ref().to_owned();
    let store_opts = opts.store.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, store_opts))
        .await
        .map_err(|e| Error::engine("join", e.to_string()))?
        .map_err(map_error)?;
    Ok(KvEngine::new(EtchKv {
        store,
        durable: true,
        opts,
    }))
}

/// An etch engine with no files at all (state lives and dies with the process).
pub fn memory() -> KvEngine {
    KvEngine::new(EtchKv {
        store: Store::memory(),
        durable: false,
        opts: EtchOptions::default(),
    })
}

/// Parses an etch URL: `etch::memory:` or `etch://<dir>[?flush=every_commit|never|<ms>ms]`.
///
/// # Errors
/// `InvalidInput` for another scheme or an unknown option.
pub fn parse_url(url: &str) -> Result<(Option<PathBuf>, EtchOptions)> {
    let mut opts = EtchOptions::default();
    if url == "etch::memory:" || url == "etch://:memory:" {
        return Ok((None, opts));
    }
    let rest = url.strip_prefix("etch://").ok_or_else(|| {
        Error::invalid_input(format!(
            "not an etch URL: {url:?} (use etch://<dir> or etch::memory:)"
        ))
    })?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() {
        return Err(Error::invalid_input("etch URL without a directory"));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("flush", "every_commit")) => opts.store.flush = FlushPolicy::EveryCommit,
            Some(("flush", "never")) => opts.store.flush = FlushPolicy::Never,
            Some(("flush", ms)) if ms.ends_with("ms") => {
                let n: u64 = ms
                    .trim_end_matches("ms")
                    .parse()
                    .map_err(|_| Error::invalid_input(format!("bad flush interval {ms:?}")))?;
                opts.store.flush = FlushPolicy::Interval(Duration::from_millis(n));
            }
            _ => {
                return Err(Error::invalid_input(format!(
                    "unknown etch URL option {pair:?}"
                )));
            }
        }
    }
    Ok((Some(PathBuf::from(path)), opts))
}

/// Registers the `etch:` URL scheme with datalayer's engine registry.
pub fn register() {
    datalayer_core::register_engine("etch:", |url| {
        Box::pin(async move {
            let (dir, opts) = parse_url(&url)?;
            let engine: Arc<dyn datalayer_core::Engine> = match dir {
                None => Arc::new(memory()),
                Some(d) => Arc::new(open(d, opts).await?),
            };
            Ok(engine)
        })
    });
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
            // The generic outbox (core::outbox) runs on any transactional engine.
            outbox: true,
            ..Capability::default()
        }
    }

    fn kv_capability(&self) -> KvCapability {
        // Read-only transactions read one snapshot; a read-write one reads the base it
        // took with the single writer lock.
        KvCapability {
            snapshot_reads: true,
            concurrent_writers: false,
            ..KvCapability::default()
        }
    }

    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn KvTxn>> {
        if opts.read_only {
            return Ok(Box::new(EtchTxn::Read(self.store.snapshot())));
        }
        match tokio::time::timeout(self.opts.lock_timeout, self.store.begin_write()).await {
            Ok(w) => Ok(Box::new(EtchTxn::Write(w))),
            Err(_) => Err(Error::new(
                datalayer_core::ErrorKind::Timeout,
                format!(
                    "etch: waited {:?} for the writer lock (is a transaction open on this task?)",
                    self.opts.lock_timeout
                ),
            )),
        }
    }

    fn snapshot(&self) -> Option<Box<dyn KvSnapshot>> {
        Some(Box::new(EtchSnapshot(self.store.snapshot())))
    }

    async fn close(&self) -> Result<()> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|e| Error::engine("join", e.to_string()))?
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
    Write(WriteTxn),
}

impl EtchTxn {
    fn snapshot(&self) -> &Snapshot {
        match self {
            EtchTxn::Read(s) => s,
            EtchTxn::Write(w) => w.base(),
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
            EtchTxn::Write(w) => w.commit(writes).await.map(|_| ()).map_err(map_error),
            EtchTxn::Read(_) if writes.is_empty() => Ok(()),
            EtchTxn::Read(_) => Err(Error::invalid_input("write in a read-only transaction")),
        }
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(parse_url("etch::memory:").unwrap().0.is_none());
        let (d, o) = parse_url("etch://./data?flush=5ms").unwrap();
        assert_eq!(d.unwrap(), PathBuf::from("./data"));
        assert_eq!(
            o.store.flush,
            FlushPolicy::Interval(Duration::from_millis(5))
        );
        assert!(parse_url("etch://x?flush=sometimes").is_err());
        assert!(parse_url("sqlite://x").is_err());
    }
}
