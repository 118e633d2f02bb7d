//! TiKV as a datalayer engine: [`TikvKv`] implements the KV family's [`KvStore`] and
//! [`KvTxn`] on tikv-client's transactional API, and [`KvEngine`] supplies everything
//! above it (rows, indexes, queries, savepoints, catalog, change feed).
//!
//! Transactions are Percolator's (the paper; tikv/tikv `src/storage/txn/`): each one
//! reads one snapshot at its start timestamp (snapshot isolation: write skew is
//! possible, so the engine does not declare serializable), and its write set is
//! prewritten and committed at the end by the client's two-phase commit. Writes are
//! buffered by [`KvEngine`] and handed to the client only at commit, so an optimistic
//! transaction holds no lock before it commits; a pessimistic one
//! ([`TxnMode::Pessimistic`]) locks keys as [`KvEngine`] announces them
//! ([`KvTxn::lock`]).

use crate::config::{TikvOptions, TxnMode, parse_url};
use crate::error::{Class, busy, classify, is_pessimistic_retry, map_commit_error, map_error};
use async_trait::async_trait;
use datalayer_core::{Capability, Error, Result, TxOptions};
use datalayer_kv::{Bytes, KvCapability, KvEngine, KvStore, KvTxn, WriteSet};
use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::time::Duration;
use tikv_client::transaction::Mutation;
use tikv_client::{
    BoundRange, CheckLevel, Config, Key, Transaction, TransactionClient, TransactionOptions,
};

/// Entries fetched per `KvScan` round: a scan larger than this is paged, so that no
/// response outgrows the gRPC message limit.
const SCAN_PAGE: usize = 1024;

/// [`KvStore`] over a TiKV cluster: what [`open`] wraps in a [`KvEngine`].
pub struct TikvKv {
    client: TransactionClient,
    opts: TikvOptions,
    prefix: Vec<u8>,
}

impl std::fmt::Debug for TikvKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TikvKv").field("opts", &self.opts).finish()
    }
}

impl TikvKv {
    /// Connects to the cluster's PD (`TransactionClient::new_with_config`).
    ///
    /// # Errors
    /// `InvalidInput` for options that fail [`TikvOptions::validate`];
    /// `ConnectionLost` when no PD endpoint answers.
    pub async fn connect(opts: TikvOptions) -> Result<TikvKv> {
        opts.validate()?;
        let config = Config::default()
            .with_timeout(opts.request_timeout)
            // Values up to max_value_bytes, and pages of them, must fit a response.
            .with_grpc_max_decoding_message_size(256 * 1024 * 1024);
        let client = TransactionClient::new_with_config(opts.pd_endpoints.clone(), config)
            .await
            .map_err(|e| {
                Error::connection_lost(format!(
                    "tikv: cannot reach PD at {}: {e}",
                    opts.pd_endpoints.join(",")
                ))
            })?;
        Ok(TikvKv {
            client,
            prefix: opts.key_prefix(),
            opts,
        })
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &TikvOptions {
        &self.opts
    }
}

/// Opens a TiKV engine on the cluster `opts` names.
///
/// # Errors
/// As [`TikvKv::connect`].
pub async fn open(opts: TikvOptions) -> Result<KvEngine> {
    Ok(KvEngine::new(TikvKv::connect(opts).await?))
}

/// Opens the engine a `tikv://` URL names (forms in [`parse_url`]).
///
/// # Errors
/// `InvalidInput` for a malformed URL; otherwise as [`open`].
pub async fn open_url(url: &str) -> Result<KvEngine> {
    open(parse_url(url)?).await
}

/// Deletes every key of `opts`' namespace (all of the cluster's keys when the namespace
/// is empty), 1000 keys per transaction; returns how many were deleted. For tests and
/// tools that reuse a cluster: a concurrent writer's keys may survive.
///
/// A batch that fails with a retryable error (`Conflict`: a key written after the
/// batch's snapshot, or the lock of a transaction that was dropped mid-commit and
/// cannot be resolved before its TTL runs out) is read and deleted again, after a
/// backoff of 10 ms doubling to 500 ms, for about 25 s (past the 20 s TTL of a
/// pessimistic lock).
///
/// # Errors
/// As [`TikvKv::connect`], and the errors of the scans and commits (`Conflict` when
/// every attempt found a key being written).
pub async fn clear_namespace(opts: TikvOptions) -> Result<u64> {
    let store = TikvKv::connect(opts).await?;
    let mut n = 0u64;
    let mut failed = 0u32;
    loop {
        match clear_batch(&store).await {
            Ok(0) => return Ok(n),
            Ok(k) => {
                n += k;
                failed = 0;
            }
            Err(e) if e.is_retryable() && failed + 1 < CLEAR_ATTEMPTS => {
                tokio::time::sleep(backoff(failed)).await;
                failed += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Attempts of one batch of [`clear_namespace`]: with [`backoff`], about 25 s, past
/// the 20 s TTL of a pessimistic lock that an abandoned transaction left (see
/// `TikvTxn`'s `Drop`).
const CLEAR_ATTEMPTS: u32 = 56;

/// One batch of [`clear_namespace`]: up to 1000 keys deleted; how many (0: none left).
async fn clear_batch(store: &TikvKv) -> Result<u64> {
    let mut t = store.begin(TxOptions::default()).await?;
    let keys = match t
        .scan(Bound::Unbounded, Bound::Unbounded, 1000, false)
        .await
    {
        Ok(k) => k,
        Err(e) => {
            let _ = t.rollback().await;
            return Err(e);
        }
    };
    if keys.is_empty() {
        t.rollback().await?;
        return Ok(0);
    }
    let n = keys.len() as u64;
    t.commit(keys.into_iter().map(|(k, _)| (k, None)).collect())
        .await?;
    Ok(n)
}

/// Exponential backoff for busy retries: 10 ms doubling up to 500 ms.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((10u64 << attempt.min(6)).min(500))
}

#[async_trait]
impl KvStore for TikvKv {
    fn name(&self) -> &'static str {
        "tikv"
    }

    fn capability(&self) -> Capability {
        // Percolator gives snapshot isolation: every level up to snapshot, not
        // serializable (write skew between two transactions is possible).
        Capability {
            read_committed: true,
            repeatable_read: true,
            snapshot: true,
            serializable: false,
            read_only_tx: true,
            savepoints: true,
            concurrent_writers: true,
            pipeline_depth: None,
            max_value_bytes: Some(self.opts.max_value_bytes),
            max_key_bytes: None,
            durable: true,
            outbox: true,
            ..Capability::default()
        }
    }

    fn kv_capability(&self) -> KvCapability {
        KvCapability {
            snapshot_reads: true,
            pessimistic_locks: self.opts.mode == TxnMode::Pessimistic,
            max_txn_bytes: Some(self.opts.max_txn_bytes),
            concurrent_writers: true,
        }
    }

    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn KvTxn>> {
        let pessimistic = self.opts.mode == TxnMode::Pessimistic && !opts.read_only;
        let mut topts = if pessimistic {
            TransactionOptions::new_pessimistic()
        } else {
            TransactionOptions::new_optimistic()
        };
        // Dropping is handled by `TikvTxn`'s Drop (a rollback), never a panic.
        topts = topts.drop_check(CheckLevel::None);
        if opts.read_only {
            topts = topts.read_only();
        }
        let mut tries = 0;
        let txn = loop {
            match self.client.begin_with_options(topts.clone()).await {
                Ok(t) => break t,
                Err(e) if classify(&e) == Class::Busy && tries < self.opts.busy_retries => {
                    tokio::time::sleep(backoff(tries)).await;
                    tries += 1;
                }
                Err(e) => return Err(map_error("begin", e)),
            }
        };
        Ok(Box::new(TikvTxn {
            txn: Some(txn),
            prefix: self.prefix.clone(),
            read_only: opts.read_only,
            pessimistic,
            locked: false,
            locked_keys: HashSet::new(),
            cap: self.kv_capability(),
            busy_retries: self.opts.busy_retries,
            max_value_bytes: self.opts.max_value_bytes,
        }))
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// One transaction. `txn` is `None` once committed or rolled back.
struct TikvTxn {
    txn: Option<Transaction>,
    prefix: Vec<u8>,
    read_only: bool,
    pessimistic: bool,
    /// A pessimistic lock may be held: a drop must roll back.
    locked: bool,
    /// Keys locked (and checked against the snapshot) so far.
    locked_keys: HashSet<Key>,
    cap: KvCapability,
    busy_retries: u32,
    /// Values over this size fail the commit with `InvalidInput`.
    max_value_bytes: usize,
}

/// Retries `$op` (an expression on `$txn: &mut Transaction`) while the cluster is
/// busy, with backoff; maps the final error with `map_error($what, ..)`.
macro_rules! with_retry {
    ($self:ident, $what:expr, |$txn:ident| $op:expr) => {{
        let mut tries = 0u32;
        loop {
            let $txn = $self.txn_mut()?;
            match $op.await {
                Ok(v) => break Ok(v),
                Err(e) if classify(&e) == Class::Busy => {
                    if tries >= $self.busy_retries {
                        break Err(busy($what, tries + 1, e));
                    }
                    tokio::time::sleep(backoff(tries)).await;
                    tries += 1;
                }
                Err(e) => break Err(map_error($what, e)),
            }
        }
    }};
}

impl TikvTxn {
    fn txn_mut(&mut self) -> Result<&mut Transaction> {
        self.txn
            .as_mut()
            .ok_or_else(|| Error::invalid_input("tikv: the transaction is finished"))
    }

    fn key(&self, k: &[u8]) -> Key {
        let mut v = Vec::with_capacity(self.prefix.len() + k.len());
        v.extend_from_slice(&self.prefix);
        v.extend_from_slice(k);
        Key::from(v)
    }

    /// Locks `full` (namespaced keys) pessimistically, keeping snapshot isolation.
    ///
    /// tikv-client locks at a fresh `for_update_ts` (TiDB's "current read"): a commit
    /// between the snapshot and the lock is not a conflict to TiKV. To keep snapshot
    /// isolation (no lost update), the lock returns the keys' current values and they
    /// must equal the snapshot's; otherwise a key changed after the snapshot and the
    /// transaction loses the race with `Conflict` (first committer wins, by value: a
    /// change undone before the lock is not a conflict). A lock refused with
    /// `PessimisticRetry` (a commit landed between `for_update_ts` and the lock) is
    /// tried again at a newer `for_update_ts`, up to 10 times, as TiDB does.
    async fn lock_keys(&mut self, full: Vec<Key>) -> Result<()> {
        let full: Vec<Key> = full
            .into_iter()
            .filter(|k| !self.locked_keys.contains(k))
            .collect();
        if full.is_empty() {
            return Ok(());
        }
        self.locked = true;
        let mut tries = 0u32;
        let current: Vec<tikv_client::KvPair> = loop {
            let r = with_retry!(self, "lock", |t| async {
                match t.batch_get_for_update(full.clone()).await {
                    Err(e) if is_pessimistic_retry(&e) => Ok(None),
                    r => r.map(Some),
                }
            })?;
            match r {
                Some(pairs) => break pairs,
                None if tries < 10 => {
                    tokio::time::sleep(backoff(tries)).await;
                    tries += 1;
                }
                None => {
                    return Err(Error::conflict(
                        "tikv: lock: still conflicting after 10 pessimistic retries",
                    ));
                }
            }
        };
        let snapshot: Vec<tikv_client::KvPair> = with_retry!(self, "lock", |t| async {
            t.batch_get(full.clone()).await.map(Iterator::collect)
        })?;
        let as_map = |pairs: Vec<tikv_client::KvPair>| -> HashMap<Vec<u8>, Vec<u8>> {
            pairs.into_iter().map(|p| (Vec::from(p.0), p.1)).collect()
        };
        let (current, snapshot) = (as_map(current), as_map(snapshot));
        for k in &full {
            let k = Vec::<u8>::from(k.clone());
            if current.get(&k) != snapshot.get(&k) {
                return Err(Error::conflict(format!(
                    "tikv: lock: key {:?} was changed by a transaction that committed after \
                     this one's snapshot",
                    &k[self.prefix.len()..]
                )));
            }
        }
        self.locked_keys.extend(full);
        Ok(())
    }

    /// The first key after `k` (`k` + `0x00`), in the namespace.
    fn key_after(&self, k: &[u8]) -> Key {
        let mut v: Vec<u8> = self.key(k).into();
        v.push(0);
        Key::from(v)
    }

    fn strip(&self, k: Key) -> Bytes {
        let mut v: Vec<u8> = k.into();
        v.drain(..self.prefix.len());
        v
    }

    /// The client's range for `[start, end)` inside the namespace; `None` when empty.
    fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Option<BoundRange> {
        match (start, end) {
            (Bound::Included(s), Bound::Included(e)) if s > e => return None,
            (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e) | Bound::Included(e))
                if s >= e && !matches!((start, end), (Bound::Included(_), Bound::Included(_))) =>
            {
                return None;
            }
            _ => {}
        }
        // Only half-open ranges reach the client: an empty key as an end bound means
        // "unbounded" to it, so an included end `e` becomes `e\0` excluded.
        let lo = match start {
            Bound::Included(s) => self.key(s),
            Bound::Excluded(s) => self.key_after(s),
            Bound::Unbounded => self.key(b""),
        };
        let hi = match end {
            Bound::Included(e) => Bound::Excluded(self.key_after(e)),
            Bound::Excluded(e) => {
                let k = self.key(e);
                if Vec::<u8>::from(k.clone()).is_empty() {
                    // Nothing sorts below the empty key.
                    return None;
                }
                Bound::Excluded(k)
            }
            Bound::Unbounded if self.prefix.is_empty() => Bound::Unbounded,
            Bound::Unbounded => {
                let mut p = self.prefix.clone();
                *p.last_mut().expect("non-empty prefix") += 1;
                Bound::Excluded(Key::from(p))
            }
        };
        let lo = Bound::Included(lo);
        Some(BoundRange::new(lo, hi))
    }
}

impl Drop for TikvTxn {
    /// A transaction dropped with pessimistic locks is rolled back in the background
    /// (releasing its locks at once, not after their 20 s TTL); an optimistic one holds
    /// no lock before its commit, so there is nothing to release.
    fn drop(&mut self) {
        if let Some(mut txn) = self.txn.take()
            && self.locked
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = txn.rollback().await;
            });
        }
    }
}

#[async_trait]
impl KvTxn for TikvTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        let k = self.key(key);
        with_retry!(self, "get", |t| t.get(k.clone()))
    }

    async fn batch_get(&mut self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<Key> = keys.iter().map(|k| self.key(k)).collect();
        let pairs: Vec<tikv_client::KvPair> = with_retry!(self, "batch_get", |t| async {
            t.batch_get(full.clone()).await.map(Iterator::collect)
        })?;
        let mut found: HashMap<Vec<u8>, Vec<u8>> =
            pairs.into_iter().map(|p| (Vec::from(p.0), p.1)).collect();
        let n = keys.len();
        Ok(full
            .into_iter()
            .enumerate()
            .map(|(i, k)| {
                let k: Vec<u8> = k.into();
                // The last occurrence may take the value; earlier ones clone it.
                if keys[i + 1..n].iter().any(|later| later == &keys[i]) {
                    found.get(&k).cloned()
                } else {
                    found.remove(&k)
                }
            })
            .collect())
    }

    async fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let Some(mut range) = self.range(start, end) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        while out.len() < limit {
            let page = (limit - out.len()).min(SCAN_PAGE);
            let r = range.clone();
            let pairs: Vec<tikv_client::KvPair> = with_retry!(self, "scan", |t| async {
                let it = if reverse {
                    t.scan_reverse(r.clone(), page as u32).await?.collect()
                } else {
                    t.scan(r.clone(), page as u32).await?.collect()
                };
                Ok::<_, tikv_client::Error>(it)
            })?;
            let got = pairs.len();
            let Some(last) = pairs.last().map(|p| p.0.clone()) else {
                break;
            };
            out.extend(pairs.into_iter().map(|p| (self.strip(p.0), p.1)));
            if got < page {
                break;
            }
            // Continue strictly after (or, reversed, before) the last key.
            range = if reverse {
                BoundRange::new(range.from.clone(), Bound::Excluded(last))
            } else {
                BoundRange::new(Bound::Excluded(last), range.to.clone())
            };
        }
        Ok(out)
    }

    async fn count(&mut self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<u64> {
        let Some(mut range) = self.range(start, end) else {
            return Ok(0);
        };
        let mut n = 0u64;
        loop {
            let r = range.clone();
            let keys: Vec<Key> = with_retry!(self, "count", |t| async {
                Ok::<_, tikv_client::Error>(
                    t.scan_keys(r.clone(), SCAN_PAGE as u32).await?.collect(),
                )
            })?;
            n += keys.len() as u64;
            match keys.last() {
                Some(last) if keys.len() == SCAN_PAGE => {
                    range = BoundRange::new(Bound::Excluded(last.clone()), range.to.clone());
                }
                _ => return Ok(n),
            }
        }
    }

    async fn lock(&mut self, keys: &[Bytes]) -> Result<()> {
        if !self.pessimistic {
            return Err(if self.read_only && self.cap.pessimistic_locks {
                Error::invalid_input("tikv: lock in a read-only transaction")
            } else {
                Error::unsupported(
                    "tikv",
                    "pessimistic locks (KvTxn::lock) in optimistic mode (use ?mode=pessimistic)",
                )
            });
        }
        if keys.is_empty() {
            return Ok(());
        }
        let full: Vec<Key> = keys.iter().map(|k| self.key(k)).collect();
        self.lock_keys(full).await
    }

    async fn commit(mut self: Box<Self>, writes: WriteSet) -> Result<()> {
        if writes.is_empty() {
            return self.rollback().await;
        }
        if self.read_only {
            return Err(Error::invalid_input(
                "tikv: write in a read-only transaction",
            ));
        }
        self.cap.check_write_set("tikv", &writes)?;
        if let Some((k, v)) = writes
            .iter()
            .find(|(_, v)| v.as_ref().is_some_and(|v| v.len() > self.max_value_bytes))
        {
            return Err(Error::invalid_input(format!(
                "tikv: a value of {} bytes at key {k:?} exceeds max_value_bytes ({} bytes); \
                 nothing was written",
                v.as_ref().map_or(0, Vec::len),
                self.max_value_bytes
            )));
        }
        let keys: Vec<(Key, Option<Bytes>)> =
            writes.into_iter().map(|(k, v)| (self.key(&k), v)).collect();
        if self.pessimistic {
            // tikv-client would lock a written key itself, without the snapshot check:
            // lock what the KV family did not lock yet.
            let unlocked: Vec<Key> = keys.iter().map(|(k, _)| k.clone()).collect();
            // On failure the drop rolls the transaction back.
            self.lock_keys(unlocked).await?;
        }
        let busy_retries = self.busy_retries;
        let Some(txn) = self.txn.take() else {
            return Err(Error::invalid_input("tikv: the transaction is finished"));
        };
        // The commit runs to its end in a task of its own: a caller cancelled inside the
        // commit (a dropped future, an aborted task) must not leave prewritten locks
        // behind for their TTL (3 s, 20 s for pessimistic locks), blocking every reader
        // and writer of those keys. Percolator itself (the primary's commit) decides
        // the outcome either way; the task only finishes what was started.
        tokio::spawn(commit_to_end(txn, keys, busy_retries))
            .await
            .map_err(|e| Error::commit_unknown(format!("tikv: the commit task ended early: {e}")))?
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        match self.txn.take() {
            Some(mut txn) if !self.read_only => {
                txn.rollback().await.map_err(|e| map_error("rollback", e))
            }
            _ => Ok(()),
        }
    }
}

/// Writes `keys` into `txn`'s buffer and commits it (two-phase: prewrite, then the
/// primary's commit), retrying `ServerIsBusy` before the commit point up to
/// `busy_retries` times; on a failure whose outcome is known the prewritten locks are
/// rolled back at once rather than left to their TTL.
async fn commit_to_end(
    mut txn: Transaction,
    keys: Vec<(Key, Option<Bytes>)>,
    busy_retries: u32,
) -> Result<()> {
    // One buffer update (in pessimistic mode one lock round, a no-op on the keys
    // already locked) instead of a put or delete per key, each of which would lock
    // again in a pessimistic transaction.
    let mutations = keys.into_iter().map(|(k, v)| match v {
        Some(v) => Mutation::Put(k, v),
        None => Mutation::Delete(k),
    });
    if let Err(e) = txn.batch_mutate(mutations).await {
        let _ = txn.rollback().await;
        return Err(map_error("commit", e));
    }
    let mut tries = 0u32;
    loop {
        match txn.commit().await {
            Ok(_) => return Ok(()),
            // Busy before the commit point: prewrite again (harmless) and commit.
            Err(e) if classify(&e) == Class::Busy && tries < busy_retries => {
                tokio::time::sleep(backoff(tries)).await;
                tries += 1;
            }
            Err(e) => {
                let mapped = map_commit_error(e);
                if !mapped.is_commit_unknown() {
                    // Release the prewritten locks now rather than at their TTL.
                    let _ = txn.rollback().await;
                }
                return Err(if mapped.kind() == datalayer_core::ErrorKind::Timeout {
                    busy_after(mapped, tries)
                } else {
                    mapped
                });
            }
        }
    }
}

/// A commit still busy after every retry: `Timeout`, saying how many tries.
fn busy_after(e: Error, tries: u32) -> Error {
    Error::new(
        datalayer_core::ErrorKind::Timeout,
        format!("{} (after {} tries)", e.message(), tries + 1),
    )
}
