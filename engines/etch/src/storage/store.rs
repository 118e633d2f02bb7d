//! [`Store`]: the embedded, ordered, transactional key-value store.
//!
//! Life of a commit (see `FORMAT.md` for the guarantees in full):
//! 1. [`Store::begin_write`] waits (async, FIFO) for the single writer lock and takes
//!    the latest committed state as the transaction's base.
//! 2. [`WriteTxn::commit`] encodes the writes as one WAL record, appends it with one
//!    `write`, applies it to the latest state and releases the writer lock.
//! 3. Under [`FlushPolicy::EveryCommit`] the commit then waits for the flusher thread,
//!    whose single fsync covers every record appended so far (group commit), and only
//!    then is the commit published to readers ([`Store::snapshot`]) and acknowledged.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use tokio::sync::{OwnedMutexGuard, watch};

use super::error::StoreError;
use super::io::{Dir, OsDir, WalFile};
use super::snapshot::{Snapshot, read_snapshot_file, write_snapshot_file};
use super::wal::{decode_at, encode_record, valid_record_after};

/// When a commit's WAL record is fsynced, and so when the commit is acknowledged and
/// becomes visible to readers.
///
/// Default: [`FlushPolicy::EveryCommit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// [`WriteTxn::commit`] returns only after an fsync (`fdatasync`) covers the
    /// commit's record; readers see the commit only from then on, so a reader never
    /// observes data that a crash could lose. Concurrent committers share fsyncs
    /// (group commit): the writer lock is released right after the append, so the next
    /// writer proceeds while the fsync runs.
    #[default]
    EveryCommit,
    /// A background thread fsyncs at most once per interval (and only when something
    /// was appended). Commits are acknowledged and visible right after the append; a
    /// crash (power loss, kernel panic) may lose the commits of the last interval, but
    /// never part of a commit. A process crash loses nothing: the bytes are in the OS.
    /// An interval of zero is treated as 1 millisecond.
    Interval(Duration),
    /// Append only; the operating system decides when data reaches the disk (fsyncs
    /// still happen on checkpoints and [`Store::close`]). Same visibility and crash
    /// guarantees as [`FlushPolicy::Interval`] with an unbounded interval.
    Never,
}

/// Options for [`Store::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// When commits are fsynced. Default: [`FlushPolicy::EveryCommit`].
    pub flush: FlushPolicy,
    /// After this many bytes appended to the current WAL segment, a background thread
    /// writes a snapshot file and starts a new segment, deleting the files the snapshot
    /// covers; this bounds the time [`Store::open`] spends replaying the log.
    /// Default: 64 MiB (`64 * 1024 * 1024`).
    pub compact_after_bytes: u64,
    /// The largest value a put may carry, in bytes; larger ones fail the commit with
    /// [`StoreError::TooLarge`] and nothing of it is applied. Default: 16 MiB
    /// (`16 * 1024 * 1024`).
    pub max_value_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            flush: FlushPolicy::EveryCommit,
            compact_after_bytes: 64 * 1024 * 1024,
            max_value_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Name of the WAL segment whose first record has sequence number `first_seq`.
pub(crate) fn wal_name(first_seq: u64) -> String {
    format!("wal-{first_seq:020}.log")
}

/// Name of the snapshot file holding the state after commit `seq`.
pub(crate) fn snap_name(seq: u64) -> String {
    format!("snap-{seq:020}.etch")
}

fn parse_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// An embedded, ordered, transactional key-value store: an in-memory persistent
/// B-tree ([`Snapshot`]) made durable by a write-ahead log and periodic snapshot files.
///
/// Cloning is cheap (an `Arc`); all clones are the same store. Background threads (the
/// flusher and the checkpointer) stop when the last clone is dropped; the drop waits
/// for a checkpoint in progress to finish.
///
/// # Example
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use datalayer_etch::storage::{Store, StoreOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
/// let txn = store.begin_write().await;
/// let seq = txn.commit(vec![(b"k".to_vec(), Some(b"v".to_vec()))]).await.unwrap();
/// assert_eq!(seq, 1);
/// assert_eq!(store.snapshot().get(b"k"), Some(&b"v"[..]));
/// # });
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sh = &self.inner.shared;
        f.debug_struct("Store")
            .field("dir", &sh.dir.as_ref().map(|d| d.path().to_path_buf()))
            .field("opts", &sh.opts)
            .field("visible_seq", &sh.visible.read().seq())
            .finish()
    }
}

/// Owns the background threads; dropping the last [`Store`] clone drops this.
struct Inner {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.wal.lock().shutdown = true;
        self.shared.flush_cv.notify_all();
        self.shared.ckpt.lock().shutdown = true;
        self.shared.ckpt_cv.notify_all();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

/// State shared with the background threads.
struct Shared {
    /// `None` for [`Store::memory`].
    dir: Option<Arc<dyn Dir>>,
    opts: StoreOptions,
    /// The single-writer lock held by a [`WriteTxn`].
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Log and latest state. Held only for short, non-blocking sections (an append,
    /// a swap of pointers) except during a segment switch (one fsync of an already
    /// pre-synced file plus a create and a directory fsync).
    wal: Mutex<WalState>,
    /// Wakes the flusher thread (new record appended, or shutdown).
    flush_cv: Condvar,
    /// What readers see. Lock order: `wal` before `visible`.
    visible: RwLock<Snapshot>,
    /// Durable sequence number, or the failure that poisoned the store.
    durable_tx: watch::Sender<Durable>,
    ckpt: Mutex<CkptState>,
    ckpt_cv: Condvar,
    /// Serializes checkpoints with each other and with [`Store::close`].
    ckpt_lock: Mutex<()>,
    /// Held for every fsync of a WAL file ([`Shared::sync_wal`]), so no two run at
    /// once: the caller that receives a writeback error is the only one that could
    /// have synced the dropped pages, and it poisons the store before any other fsync
    /// starts. Lock order: `ckpt_lock`, `sync_turn`, `wal`.
    sync_turn: Mutex<()>,
}

#[derive(Clone, Debug, Default)]
struct Durable {
    seq: u64,
    failed: Option<Arc<str>>,
}

struct WalState {
    /// The segment being appended to (`None` for memory stores).
    file: Option<Arc<dyn WalFile>>,
    segment_first_seq: u64,
    segment_bytes: u64,
    /// Request a checkpoint once `segment_bytes` reaches this: `compact_after_bytes`,
    /// pushed further after a failed checkpoint.
    checkpoint_at_bytes: u64,
    /// Latest committed state, including commits not yet durable.
    latest: Snapshot,
    /// Every record with seq <= this is durable.
    synced_seq: u64,
    /// Seq of the newest snapshot file on disk (0 = none).
    snapshot_seq: u64,
    checkpoint_requested: bool,
    poisoned: Option<String>,
    closed: bool,
    shutdown: bool,
}

impl WalState {
    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed {
            return Err(StoreError::Closed);
        }
        if let Some(reason) = &self.poisoned {
            return Err(StoreError::Poisoned {
                reason: reason.clone(),
            });
        }
        Ok(())
    }
}

#[derive(Default)]
struct CkptState {
    requested: bool,
    shutdown: bool,
}

impl Shared {
    fn new(dir: Option<Arc<dyn Dir>>, opts: StoreOptions, w: WalState) -> Shared {
        let seq = w.latest.seq();
        Shared {
            dir,
            opts,
            writer: Arc::new(tokio::sync::Mutex::new(())),
            visible: RwLock::new(w.latest.clone()),
            wal: Mutex::new(w),
            flush_cv: Condvar::new(),
            durable_tx: watch::Sender::new(Durable { seq, failed: None }),
            ckpt: Mutex::new(CkptState::default()),
            ckpt_cv: Condvar::new(),
            ckpt_lock: Mutex::new(()),
            sync_turn: Mutex::new(()),
        }
    }

    /// Publish `snap` to readers if it is newer than what they see. Call with `wal` held.
    fn publish(&self, snap: &Snapshot) {
        let mut v = self.visible.write();
        if snap.seq() > v.seq() {
            *v = snap.clone();
        }
    }

    /// Record that everything up to `target` is durable and publish it. Call with `wal`
    /// held. Does nothing once the store is poisoned.
    fn mark_synced(&self, w: &mut WalState, target: &Snapshot) {
        if w.poisoned.is_some() {
            return;
        }
        if target.seq() > w.synced_seq {
            w.synced_seq = target.seq();
        }
        self.publish(target);
        let seq = w.synced_seq;
        self.durable_tx.send_modify(|d| d.seq = d.seq.max(seq));
    }

    /// Poison the store after a failed append or fsync. Call with `wal` held.
    fn poison(&self, w: &mut WalState, what: &str, e: &std::io::Error) {
        let reason = format!("{what} failed: {e}");
        tracing::error!(target: "etch", "{reason}; the store refuses further commits");
        if w.poisoned.is_none() {
            w.poisoned = Some(reason.clone());
        }
        self.durable_tx
            .send_modify(|d| d.failed = Some(Arc::from(reason.as_str())));
    }

    async fn wait_durable(&self, seq: u64) -> Result<(), StoreError> {
        let mut rx = self.durable_tx.subscribe();
        let d = rx
            .wait_for(|d| d.seq >= seq || d.failed.is_some())
            .await
            .map_err(|_| StoreError::Closed)?;
        if d.seq >= seq {
            Ok(())
        } else {
            Err(StoreError::Poisoned {
                reason: d.failed.as_deref().unwrap_or("unknown").to_string(),
            })
        }
    }

    /// The one place a WAL file is fsynced. `turn` is the held `sync_turn` lock, so no
    /// other fsync of a WAL file runs meanwhile.
    ///
    /// Captures the latest state, fsyncs the current segment (with `wal` unlocked
    /// during the fsync unless `keep_wal_locked`), then marks that state durable and
    /// publishes it. Once the store is poisoned it neither fsyncs nor publishes: after
    /// a failed fsync the kernel may have dropped the dirty pages and report success to
    /// the next fsync, which then proves nothing.
    ///
    /// # Errors
    /// [`StoreError::Poisoned`] when the store was poisoned before or during the fsync;
    /// [`StoreError::Io`] when the fsync fails (the store is then poisoned).
    fn sync_wal(
        &self,
        turn: &MutexGuard<'_, ()>,
        w: &mut MutexGuard<'_, WalState>,
        keep_wal_locked: bool,
    ) -> Result<(), StoreError> {
        debug_assert!(std::ptr::eq(MutexGuard::mutex(turn), &self.sync_turn));
        let poisoned = |w: &WalState| {
            w.poisoned.as_ref().map(|reason| StoreError::Poisoned {
                reason: reason.clone(),
            })
        };
        if let Some(e) = poisoned(w) {
            return Err(e);
        }
        let target = w.latest.clone();
        if let Some(file) = w.file.clone() {
            // The segment cannot switch meanwhile: switching needs `sync_turn`.
            let res = if keep_wal_locked {
                file.sync()
            } else {
                MutexGuard::unlocked(w, || file.sync())
            };
            if let Err(e) = res {
                self.poison(w, "WAL fsync", &e);
                return Err(e.into());
            }
            // An append may have failed while `wal` was unlocked.
            if let Some(e) = poisoned(w) {
                return Err(e);
            }
        }
        self.mark_synced(w, &target);
        Ok(())
    }

    /// The EveryCommit flusher: one fsync covers every record appended before it.
    fn run_group_flusher(&self) {
        loop {
            {
                let mut w = self.wal.lock();
                loop {
                    if w.poisoned.is_some() || w.shutdown {
                        return;
                    }
                    if w.latest.seq() > w.synced_seq {
                        break;
                    }
                    self.flush_cv.wait(&mut w);
                }
            }
            let turn = self.sync_turn.lock();
            let mut w = self.wal.lock();
            if w.latest.seq() > w.synced_seq && self.sync_wal(&turn, &mut w, false).is_err() {
                return;
            }
        }
    }

    /// The Interval flusher: at most one fsync per `every`, only when something is new.
    fn run_interval_flusher(&self, every: Duration) {
        loop {
            let last = {
                let mut w = self.wal.lock();
                if !w.shutdown {
                    self.flush_cv.wait_for(&mut w, every);
                }
                if w.poisoned.is_some() {
                    return;
                }
                if w.latest.seq() <= w.synced_seq {
                    if w.shutdown {
                        return;
                    }
                    continue;
                }
                w.shutdown
            };
            let turn = self.sync_turn.lock();
            let mut w = self.wal.lock();
            if w.latest.seq() > w.synced_seq && self.sync_wal(&turn, &mut w, false).is_err() {
                return;
            }
            if last {
                return;
            }
        }
    }

    fn run_checkpointer(&self) {
        loop {
            {
                let mut c = self.ckpt.lock();
                while !c.requested && !c.shutdown {
                    self.ckpt_cv.wait(&mut c);
                }
                if c.shutdown {
                    return;
                }
                c.requested = false;
            }
            match self.checkpoint() {
                Ok(()) => {}
                Err(e) => tracing::warn!(target: "etch", "background checkpoint failed: {e}"),
            }
            self.wal.lock().checkpoint_requested = false;
        }
    }

    fn request_checkpoint(&self, w: &mut WalState) {
        if !w.checkpoint_requested {
            w.checkpoint_requested = true;
            self.ckpt.lock().requested = true;
            self.ckpt_cv.notify_one();
        }
    }

    /// Snapshot the latest state at seq N into `snap-N.etch`, with the WAL switched to
    /// a new segment starting at N+1, then delete the files the snapshot covers.
    fn checkpoint(&self) -> Result<(), StoreError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let _ck = self.ckpt_lock.lock();
        // Pre-sync with `wal` unlocked so the sync under it has little left to do.
        {
            let turn = self.sync_turn.lock();
            let mut w = self.wal.lock();
            w.check_open()?;
            self.sync_wal(&turn, &mut w, false)?;
        }
        let snap = {
            let turn = self.sync_turn.lock();
            let mut w = self.wal.lock();
            w.check_open()?;
            let n = w.latest.seq();
            if w.snapshot_seq == n {
                return Ok(());
            }
            // With `wal` held: no append between this fsync and the segment switch.
            self.sync_wal(&turn, &mut w, true)?;
            let latest = w.latest.clone();
            if w.segment_first_seq != n + 1 {
                // Switch segments. The old one is fully durable, so recovery never sees
                // a torn record in any segment but the newest. On failure commits go on
                // in the old segment; the new file, if any, is removed (recovery also
                // drops a trailing empty segment whose removal did not reach the disk).
                let name = wal_name(n + 1);
                let new = dir.create(&name).and_then(|f| dir.sync_dir().map(|()| f));
                match new {
                    Ok(new) => {
                        w.file = Some(new);
                        w.segment_first_seq = n + 1;
                        w.segment_bytes = 0;
                        w.checkpoint_at_bytes = self.opts.compact_after_bytes;
                    }
                    Err(e) => {
                        let _ = dir.remove(&name);
                        self.postpone_checkpoint(&mut w);
                        return Err(e.into());
                    }
                }
            }
            latest
        };
        let n = snap.seq();
        let res = write_snapshot_file(dir.as_ref(), &snap_name(n), &snap)
            .map_err(StoreError::from)
            .and_then(|()| {
                self.wal.lock().snapshot_seq = n;
                remove_covered(dir.as_ref(), n)
            });
        if res.is_err() {
            self.postpone_checkpoint(&mut self.wal.lock());
        }
        res
    }

    /// After a failed checkpoint, request the next one only once the segment has
    /// grown by `max(compact_after_bytes, its size)` (so a lasting failure costs
    /// O(log size) attempts), not on every commit: each attempt fsyncs the segment.
    fn postpone_checkpoint(&self, w: &mut WalState) {
        w.checkpoint_at_bytes = w
            .segment_bytes
            .saturating_add(self.opts.compact_after_bytes.max(w.segment_bytes));
    }
}

/// Delete WAL segments whose records are all <= `n` and snapshots older than `n`.
fn remove_covered(dir: &dyn Dir, n: u64) -> Result<(), StoreError> {
    let mut removed = false;
    for name in dir.list()? {
        let covered = parse_name(&name, "wal-", ".log").is_some_and(|first| first <= n)
            || parse_name(&name, "snap-", ".etch").is_some_and(|s| s < n);
        if covered {
            dir.remove(&name)?;
            removed = true;
        }
    }
    if removed {
        dir.sync_dir()?;
    }
    Ok(())
}

impl Store {
    /// Open (creating it if missing) the store in directory `dir`, and recover its
    /// state: load the newest snapshot file, then replay the WAL records after it.
    ///
    /// The directory is locked (`dir/LOCK`) until [`Store::close`] or until the last clone of the store is
    /// dropped. Recovery rules (`FORMAT.md`, "Recovery"):
    /// - a torn or corrupt record in the newest WAL segment is cut (with everything
    ///   after it; logged with `tracing::warn`) when no valid record after it says it
    ///   was durable when appended (each record carries the durable watermark): it was
    ///   then never acknowledged, even if a disk kept later unsynced records;
    /// - anything else that fails a check is [`StoreError::Corrupted`] naming the file
    ///   and byte offset; nothing is silently dropped;
    /// - what it keeps (every replayed WAL segment, then the directory) is fsynced
    ///   before the store is returned, so nothing it serves is only in the page cache
    ///   of a process killed before its fsync.
    ///
    /// # Errors
    /// [`StoreError::Io`] (including the directory being locked by another store, kind
    /// `WouldBlock`), [`StoreError::Corrupted`].
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        Store::open_dir(Arc::new(OsDir::open(dir)?), opts)
    }

    /// [`Store::open`] on any [`Dir`] backend (tests use one that simulates crashes).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_dir(dir: Arc<dyn Dir>, opts: StoreOptions) -> Result<Store, StoreError> {
        let mut w = recover(dir.as_ref())?;
        w.checkpoint_at_bytes = opts.compact_after_bytes;
        let shared = Arc::new(Shared::new(Some(dir), opts.clone(), w));
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(f)
                .map_err(StoreError::Io)
        };
        match opts.flush {
            FlushPolicy::EveryCommit => {
                let sh = shared.clone();
                threads.push(spawn(
                    "etch-flusher",
                    Box::new(move || sh.run_group_flusher()),
                )?);
            }
            FlushPolicy::Interval(every) => {
                let every = every.max(Duration::from_millis(1));
                let sh = shared.clone();
                threads.push(spawn(
                    "etch-flusher",
                    Box::new(move || sh.run_interval_flusher(every)),
                )?);
            }
            FlushPolicy::Never => {}
        }
        let sh = shared.clone();
        threads.push(spawn(
            "etch-checkpoint",
            Box::new(move || sh.run_checkpointer()),
        )?);
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                threads: Mutex::new(threads),
            }),
        })
    }

    /// A store that lives in memory only: no files, no threads; commits are visible
    /// as soon as they are applied. Same transaction semantics as a file-backed store.
    pub fn memory() -> Store {
        let w = WalState {
            file: None,
            segment_first_seq: 1,
            segment_bytes: 0,
            checkpoint_at_bytes: u64::MAX,
            latest: Snapshot::default(),
            synced_seq: 0,
            snapshot_seq: 0,
            checkpoint_requested: false,
            poisoned: None,
            closed: false,
            shutdown: false,
        };
        Store {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared::new(None, StoreOptions::default(), w)),
                threads: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The committed, visible state, in O(1) (an `Arc` clone under a short read lock).
    ///
    /// Under [`FlushPolicy::EveryCommit`] it includes exactly the commits that are
    /// durable (it never waits for an fsync, and never shows data a crash could lose);
    /// under the other policies and for [`Store::memory`], every applied commit.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.shared.visible.read().clone()
    }

    /// Start a write transaction: waits (asynchronously, first come first served) for
    /// the single writer lock, which the returned [`WriteTxn`] holds until it is
    /// committed or dropped.
    pub async fn begin_write(&self) -> WriteTxn {
        let sh = &self.inner.shared;
        let guard = sh.writer.clone().lock_owned().await;
        let base = sh.wal.lock().latest.clone();
        WriteTxn {
            store: self.clone(),
            base,
            _guard: guard,
        }
    }

    /// Write a snapshot file of the latest state at seq N, make sure the WAL continues
    /// in a segment starting at N+1, and delete the WAL segments and older snapshots it
    /// covers. Also run automatically, on a background thread, after
    /// [`StoreOptions::compact_after_bytes`] of WAL. A no-op for [`Store::memory`] and
    /// when nothing was committed since the last checkpoint.
    ///
    /// Blocking: it fsyncs and writes the whole state; call it from
    /// `spawn_blocking` in async code. Writers are held up only for the segment switch
    /// (one fsync of the already pre-synced old segment, a file creation and a
    /// directory fsync), not while the snapshot is written.
    ///
    /// # Errors
    /// [`StoreError::Closed`], [`StoreError::Poisoned`], [`StoreError::Io`]. A failed
    /// fsync of the WAL poisons the store; a failure while writing the snapshot file
    /// does not (the WAL still holds everything).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.inner.shared.checkpoint()
    }

    /// Fsync whatever is pending and make every applied commit visible, whatever the
    /// [`FlushPolicy`]: afterwards every commit acknowledged so far survives a power
    /// loss. A no-op for [`Store::memory`]. Blocking (one fsync).
    ///
    /// # Errors
    /// [`StoreError::Closed`], [`StoreError::Poisoned`]; [`StoreError::Io`] when the
    /// fsync fails (the store is then poisoned).
    pub fn sync(&self) -> Result<(), StoreError> {
        let sh = &self.inner.shared;
        if sh.dir.is_none() {
            return Ok(());
        }
        let turn = sh.sync_turn.lock();
        let mut w = sh.wal.lock();
        w.check_open()?;
        if w.latest.seq() <= w.synced_seq {
            return Ok(());
        }
        sh.sync_wal(&turn, &mut w, false)
    }

    /// Fsync whatever is pending, make every applied commit visible, and refuse later
    /// commits with [`StoreError::Closed`]. Snapshots keep working. Idempotent.
    /// Waits for a checkpoint in progress. Blocking (one fsync).
    ///
    /// A poisoned store is closed too (and its directory unlocked), but nothing is
    /// fsynced or published: the commits whose append or fsync failed stay invisible.
    ///
    /// # Errors
    /// [`StoreError::Poisoned`] if an earlier append or fsync failed (on every call);
    /// [`StoreError::Io`] if the final fsync fails (the store is then also poisoned).
    pub fn close(&self) -> Result<(), StoreError> {
        let sh = &self.inner.shared;
        let _ck = sh.ckpt_lock.lock();
        let turn = sh.sync_turn.lock();
        let mut w = sh.wal.lock();
        let was_closed = std::mem::replace(&mut w.closed, true);
        let res = if let Some(reason) = &w.poisoned {
            Err(StoreError::Poisoned {
                reason: reason.clone(),
            })
        } else if was_closed || w.latest.seq() <= w.synced_seq {
            Ok(())
        } else {
            sh.sync_wal(&turn, &mut w, true)
        };
        sh.flush_cv.notify_all();
        // Nothing more is written (checkpoints check `closed` under `ckpt_lock`), so the
        // directory may be opened again, by this process or another.
        if !was_closed && let Some(dir) = &sh.dir {
            dir.unlock();
        }
        res
    }
}

/// A write transaction: holds the store's single writer lock and the base state the
/// writes apply to.
///
/// Dropping it without [`WriteTxn::commit`] releases the lock and changes nothing.
pub struct WriteTxn {
    store: Store,
    base: Snapshot,
    _guard: OwnedMutexGuard<()>,
}

impl std::fmt::Debug for WriteTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTxn")
            .field("base_seq", &self.base.seq())
            .finish()
    }
}

impl WriteTxn {
    /// The state this transaction writes on: the latest committed state, including
    /// commits that are not yet durable (their committers are still waiting for the
    /// fsync). Reads inside the transaction should read this, overlaid with the
    /// transaction's own pending writes.
    pub fn base(&self) -> &Snapshot {
        &self.base
    }

    /// End the transaction without writing: release the writer lock, then — under
    /// [`FlushPolicy::EveryCommit`] — wait until [`WriteTxn::base`] is durable, as a
    /// commit with no writes does. Whatever the transaction read (and reported: a
    /// unique violation, a 0-row update) may rest on commits whose fsync is still
    /// running; it must not be answered before a crash can no longer undo them.
    /// Dropping a `WriteTxn` instead releases the lock without waiting.
    ///
    /// # Errors
    /// [`StoreError::Poisoned`]: the fsync that was to cover the base failed (what the
    /// transaction read may be lost).
    pub async fn rollback(self) -> Result<(), StoreError> {
        let WriteTxn {
            store,
            base,
            _guard: guard,
        } = self;
        drop(guard);
        let sh = &store.inner.shared;
        if sh.dir.is_some() && matches!(sh.opts.flush, FlushPolicy::EveryCommit) {
            sh.wait_durable(base.seq()).await?;
        }
        Ok(())
    }

    /// Commit `writes` atomically as one WAL record and return the commit's sequence
    /// number. `(key, Some(value))` puts, `(key, None)` deletes (deleting a missing key
    /// succeeds); they apply in order, so a later write to the same key wins.
    ///
    /// # Behavior
    /// - The record is appended with one `write` before anything is applied; the
    ///   writer lock is released right after the append, before any fsync.
    /// - [`FlushPolicy::EveryCommit`]: returns after an fsync covers the record; the
    ///   commit becomes visible to [`Store::snapshot`] at that fsync.
    ///   Other policies and memory stores: visible and returned right after the append.
    /// - Empty `writes` append nothing and return the base's seq (after waiting until
    ///   that is durable, so an acknowledged read-only transaction never saw data a
    ///   crash could lose).
    /// - Cancelling the returned future after the append does not undo the commit.
    ///
    /// # Errors
    /// - [`StoreError::TooLarge`]: a value is over [`StoreOptions::max_value_bytes`]
    ///   (or the record over 4 GiB); nothing is applied, the store stays usable.
    /// - [`StoreError::Closed`]: after [`Store::close`].
    /// - [`StoreError::Io`]: the append failed; nothing is applied and the store is
    ///   poisoned. [`StoreError::Poisoned`]: the store was poisoned earlier, or the fsync
    ///   covering this commit failed (the commit's durability is then unknown).
    pub async fn commit(self, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<u64, StoreError> {
        if writes.is_empty() {
            // Nothing to append: end as a rollback does (waiting until the base is
            // durable), but refuse after `close` as every commit does.
            self.store.inner.shared.wal.lock().check_open()?;
            let seq = self.base.seq();
            return self.rollback().await.map(|()| seq);
        }
        let WriteTxn {
            store,
            base,
            _guard: guard,
        } = self;
        let sh = &store.inner.shared;
        let max = sh.opts.max_value_bytes;
        for (_, v) in &writes {
            if let Some(v) = v
                && v.len() > max
            {
                return Err(StoreError::TooLarge {
                    what: "value",
                    size_bytes: v.len() as u64,
                    limit_bytes: max as u64,
                });
            }
        }
        let wait_for_fsync = sh.dir.is_some() && matches!(sh.opts.flush, FlushPolicy::EveryCommit);
        let seq = base.seq() + 1;
        let frame = match sh.dir {
            // The watermark may lag (it is read before the append), never lead: every
            // record up to it has been fsynced.
            Some(_) => Some(encode_record(seq, sh.durable_tx.borrow().seq, &writes)?),
            None => None,
        };
        let mut map = base.map().clone();
        for (k, v) in writes {
            match v {
                Some(v) => {
                    map.insert(Arc::from(k), Arc::from(v));
                }
                None => {
                    map.remove(&k[..]);
                }
            }
        }
        let next = Snapshot::new(map, seq);
        {
            let mut w = sh.wal.lock();
            w.check_open()?;
            debug_assert_eq!(w.latest.seq(), base.seq(), "single writer");
            if let (Some(frame), Some(file)) = (&frame, &w.file) {
                if let Err(e) = file.write_all(frame) {
                    sh.poison(&mut w, "WAL append", &e);
                    return Err(e.into());
                }
                w.segment_bytes += frame.len() as u64;
                if w.segment_bytes >= w.checkpoint_at_bytes {
                    sh.request_checkpoint(&mut w);
                }
            }
            w.latest = next.clone();
            if wait_for_fsync {
                sh.flush_cv.notify_one();
            } else {
                sh.publish(&next);
            }
        }
        drop(guard);
        drop(frame);
        if wait_for_fsync {
            sh.wait_durable(seq).await?;
        }
        Ok(seq)
    }
}

/// Rebuild the state from the files in `dir` (see [`Store::open`]).
fn recover(dir: &dyn Dir) -> Result<WalState, StoreError> {
    let mut snaps = Vec::new();
    let mut wals = Vec::new();
    for name in dir.list()? {
        if let Some(s) = parse_name(&name, "snap-", ".etch") {
            snaps.push(s);
        } else if let Some(f) = parse_name(&name, "wal-", ".log") {
            wals.push(f);
        } else if name.ends_with(".tmp") {
            // A snapshot whose write never completed (it never got its final name).
            dir.remove(&name)?;
        }
    }
    snaps.sort_unstable();
    wals.sort_unstable();

    let corrupted = |name: &str, offset: usize, reason: String| StoreError::Corrupted {
        file: dir.path().join(name),
        offset: offset as u64,
        reason,
    };

    let base = match snaps.last() {
        Some(&n) => {
            let name = snap_name(n);
            let snap = read_snapshot_file(dir, &name, &dir.read(&name)?)?;
            if snap.seq() != n {
                return Err(corrupted(
                    &name,
                    12,
                    format!("snapshot holds seq {} but is named for {n}", snap.seq()),
                ));
            }
            snap
        }
        None => Snapshot::default(),
    };
    let snapshot_seq = base.seq();

    // Segments before `start` hold only records the snapshot covers.
    let start = wals.iter().rposition(|&f| f <= base.seq() + 1).unwrap_or(0);
    let mut map = base.map().clone();
    let mut seq = base.seq();
    // (first seq, valid bytes, last seq, open file) of the newest segment.
    let mut tail: Option<(u64, u64, u64, Arc<dyn WalFile>)> = None;
    let mut live = &wals[start.min(wals.len())..];
    // A segment switch whose directory fsync failed leaves an empty segment while
    // commits continue in the previous one: the last non-empty segment is the one
    // that was appended to.
    while let [rest @ .., last] = live
        && !rest.is_empty()
        && dir.read(&wal_name(*last))?.is_empty()
    {
        dir.remove(&wal_name(*last))?;
        live = rest;
    }
    for (i, &first) in live.iter().enumerate() {
        let name = wal_name(first);
        let newest = i + 1 == live.len();
        if first == 0 || first > seq + 1 {
            return Err(corrupted(
                &name,
                0,
                format!("segment starts at seq {first} but the log before it ends at seq {seq}"),
            ));
        }
        let data = dir.read(&name)?;
        let file = dir.open_append(&name)?;
        let mut off = 0usize;
        let mut last = first - 1;
        while off < data.len() {
            match decode_at(&data, off) {
                Ok((rec, next)) => {
                    if rec.seq != last + 1 {
                        return Err(corrupted(
                            &name,
                            off,
                            format!("record has seq {} where {} was expected", rec.seq, last + 1),
                        ));
                    }
                    if rec.seq > seq {
                        for (k, v) in rec.ops {
                            match v {
                                Some(v) => {
                                    map.insert(Arc::from(k), Arc::from(v));
                                }
                                None => {
                                    map.remove(k);
                                }
                            }
                        }
                        seq = rec.seq;
                    }
                    last = rec.seq;
                    off = next;
                }
                Err(reason) => {
                    // Older segments were fsynced whole before the next one started.
                    if !newest {
                        return Err(corrupted(&name, off, reason));
                    }
                    // Group commit leaves several records unsynced and a disk may keep
                    // a later one but not this one; the damage touched acknowledged
                    // data only if a later record was appended after this seq was
                    // durable.
                    if let Some(later) = valid_record_after(&data, off + 1, last)
                        && later.durable > last
                    {
                        return Err(corrupted(
                            &name,
                            off,
                            format!(
                                "{reason}; the record of seq {} at offset {} was appended \
                                 after seq {} was durable, so acknowledged data is damaged",
                                later.seq, later.offset, later.durable
                            ),
                        ));
                    }
                    tracing::warn!(
                        target: "etch",
                        "{}: cutting the log at offset {off} ({reason}); no commit from \
                         there on was ever durable or acknowledged",
                        dir.path().join(&name).display()
                    );
                    file.truncate(off as u64)?;
                    break;
                }
            }
        }
        // What is kept may be only in the page cache (a process killed between an
        // append and its fsync): make it durable before anyone can read it.
        file.sync()?;
        if newest {
            tail = Some((first, off as u64, last, file));
        }
    }

    // Continue the newest segment if it ends exactly at the recovered state; otherwise
    // (no segment, or the snapshot is ahead of it) start a new one.
    let (file, segment_first_seq, segment_bytes) = match tail {
        Some((first, bytes, last, file)) if last == seq => (file, first, bytes),
        _ => (dir.create(&wal_name(seq + 1))?, seq + 1, 0),
    };
    // Make the names durable too: the snapshot's rename and the segments' creation may
    // not have reached a directory fsync before the process died.
    dir.sync_dir()?;
    // Leftovers of an interrupted checkpoint (best effort; they are harmless).
    for &f in &wals[..start.min(wals.len())] {
        let _ = dir.remove(&wal_name(f));
    }
    for &s in snaps.iter().filter(|&&s| s < snapshot_seq) {
        let _ = dir.remove(&snap_name(s));
    }

    Ok(WalState {
        file: Some(file),
        segment_first_seq,
        segment_bytes,
        checkpoint_at_bytes: u64::MAX,
        latest: Snapshot::new(map, seq),
        synced_seq: seq,
        snapshot_seq,
        checkpoint_requested: false,
        poisoned: None,
        closed: false,
        shutdown: false,
    })
}
