//! [`CrashFs`]: an in-memory [`Dir`] for crash and fault tests (cargo feature
//! `crashfs`). It keeps what each file has been *written* apart from what is *durable*
//! (fsynced), and directory entries apart from *durable* entries (`sync_dir`), and
//! builds the file system a machine would find after a power loss, with the damage
//! real disks do to data that was never fsynced.
//!
//! The model follows the crash-testing backends of SQLite (its `crash` VFS: unsynced
//! sectors written, lost or garbled at random) and redb (a crash backend that drops
//! unsynced writes), under one assumption stated in etch's `FORMAT.md`: a power loss
//! damages only bytes written since the last fsync of their file (SQLite's *powersafe
//! overwrite*), and directory operations since the last directory fsync survive as a
//! prefix of their order.
//!
//! It can also count, delay, hold and fail fsyncs, fail the N-th I/O operation, and
//! record the file system at every sync point of a workload
//! ([`CrashFs::record_sync_points`]), so a test can power off at each of them.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rand::{Rng, RngCore};

use super::io::{Dir, WalFile};

/// Size of the pages the page-level [`Damage`] variants work on, in bytes.
pub const PAGE_BYTES: usize = 4096;
/// Size of the sector [`Damage::TornSector`] tears, in bytes.
pub const SECTOR_BYTES: usize = 512;

/// What a power loss does to the data and names that were not yet durable.
///
/// Fsynced bytes and directory entries covered by a `sync_dir` always survive intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Damage {
    /// Nothing unsynced survives.
    NoneKept,
    /// Every written byte survives (names: only durable ones).
    AllKept,
    /// A random prefix of each file's unsynced bytes survives.
    Prefix,
    /// Random 4 KiB pages of the unsynced bytes survive, in any order: the file keeps
    /// its length up to the last surviving page, and lost pages read as zeros.
    PagesOutOfOrder,
    /// All unsynced bytes are there, but random 4 KiB pages of them read as zeros.
    ZeroedPages,
    /// All unsynced bytes are there, but random 4 KiB pages hold random bytes.
    GarbagePages,
    /// All unsynced bytes are there, but the last 512-byte sector is torn: from a random
    /// point in it to its end, random bytes.
    TornSector,
    /// A random prefix of the directory operations (create, rename, remove) since the
    /// last directory fsync survives, with every written byte of the files it names.
    DirPrefix,
}

impl Damage {
    /// Every variant, in a fixed order.
    pub const ALL: [Damage; 8] = [
        Damage::NoneKept,
        Damage::AllKept,
        Damage::Prefix,
        Damage::PagesOutOfOrder,
        Damage::ZeroedPages,
        Damage::GarbagePages,
        Damage::TornSector,
        Damage::DirPrefix,
    ];
}

/// An I/O operation [`CrashFs::fail_op`] can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`WalFile::write_all`] (a failed write may leave half of its bytes).
    Write,
    /// [`WalFile::sync`] (a failed fsync drops the file's unsynced bytes, as Linux may).
    Sync,
    /// [`Dir::create`].
    Create,
    /// [`Dir::rename`].
    Rename,
    /// [`Dir::remove`].
    Remove,
    /// [`Dir::sync_dir`] (a failed one drops the directory operations since the last
    /// successful one from what would survive a power loss).
    SyncDir,
}

#[derive(Debug, Clone)]
enum DirOp {
    Create(String, u64),
    Rename(String, String),
    Remove(String),
}

#[derive(Default, Clone)]
struct FileData {
    data: Vec<u8>,
    durable: Vec<u8>,
}

/// Labels a sync point with the caller's progress (e.g. the highest acknowledged seq).
type Label = Arc<dyn Fn() -> u64 + Send + Sync>;

#[derive(Default, Clone)]
struct FsState {
    files: HashMap<u64, FileData>,
    next_id: u64,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    /// Directory operations since the last successful `sync_dir`.
    dir_ops: Vec<DirOp>,
    file_syncs: u64,
    sync_delay: Duration,
    gate_held: bool,
    syncs_waiting_at_gate: u64,
    fail_writes: bool,
    fail_syncs: bool,
    fail_creates: bool,
    /// `Some(filter)`: the next file fsync (from a thread named `filter`, when given)
    /// fails and drops the file's unsynced bytes; later fsyncs succeed.
    fail_sync_once: Option<Option<String>>,
    /// A thread of this name passes the gate of [`CrashFs::hold_syncs`].
    gate_pass: Option<String>,
    /// Every file fsync, as `(file name when it was opened, bytes it made durable)`.
    sync_log: Vec<(String, usize)>,
    /// I/O operations so far (see [`CrashFs::ops`]).
    ops: u64,
    /// Fail the operation with this number, with this error kind.
    fail_at: Option<(u64, io::ErrorKind)>,
    /// Operations that failed by injection: number, operation, file name.
    failed_ops: Vec<(u64, Op, String)>,
    recorder: Option<Label>,
    sync_points: Vec<(u64, FsState)>,
}

impl FsState {
    /// Count an I/O operation on file `name`; `Err` if it is the one to fail.
    fn op(&mut self, op: Op, name: &str) -> io::Result<()> {
        self.ops += 1;
        match self.fail_at {
            Some((n, kind)) if n == self.ops => {
                self.fail_at = None;
                self.failed_ops.push((n, op, name.to_string()));
                Err(io::Error::new(
                    kind,
                    format!("crashfs: injected {op:?} failure"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Remember the state as it is when a sync starts (a power loss "at" this sync).
    fn record_sync_point(&mut self) {
        if let Some(label) = self.recorder.clone() {
            let mut frozen = self.clone();
            frozen.recorder = None;
            frozen.sync_points = Vec::new();
            self.sync_points.push((label(), frozen));
        }
    }

    fn sync_dir(&mut self) {
        self.durable_names = self.names.clone();
        self.dir_ops.clear();
    }

    /// The state a machine finds after a power loss with `damage`.
    fn crashed(&self, damage: Damage, rng: &mut dyn RngCore) -> FsState {
        let names = if damage == Damage::DirPrefix {
            let keep = rng.random_range(0..=self.dir_ops.len());
            let mut names = self.durable_names.clone();
            for op in &self.dir_ops[..keep] {
                match op {
                    DirOp::Create(n, id) => {
                        names.insert(n.clone(), *id);
                    }
                    DirOp::Rename(from, to) => {
                        if let Some(id) = names.remove(from) {
                            names.insert(to.clone(), id);
                        }
                    }
                    DirOp::Remove(n) => {
                        names.remove(n);
                    }
                }
            }
            names
        } else {
            self.durable_names.clone()
        };
        FsState::durable(
            names
                .into_iter()
                .map(|(name, id)| (name, damaged(&self.files[&id], damage, rng))),
        )
    }

    /// A state holding exactly `files`, all durable.
    fn durable(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> FsState {
        let mut out = FsState::default();
        for (name, data) in files {
            let id = out.next_id;
            out.next_id += 1;
            out.files.insert(
                id,
                FileData {
                    durable: data.clone(),
                    data,
                },
            );
            out.names.insert(name, id);
        }
        out.durable_names = out.names.clone();
        out
    }
}

/// A file's bytes after a power loss with `damage`.
fn damaged(f: &FileData, damage: Damage, rng: &mut dyn RngCore) -> Vec<u8> {
    let synced = f
        .data
        .iter()
        .zip(&f.durable)
        .take_while(|(a, b)| a == b)
        .count();
    if damage == Damage::NoneKept || (synced == f.data.len() && synced == f.durable.len()) {
        return f.durable.clone();
    }
    let mut out = f.data.clone();
    let len = out.len();
    // The unsynced pages, as (start, end) offsets clipped to the unsynced region.
    let pages: Vec<(usize, usize)> = (synced / PAGE_BYTES..len.div_ceil(PAGE_BYTES))
        .map(|p| {
            (
                (p * PAGE_BYTES).max(synced),
                ((p + 1) * PAGE_BYTES).min(len),
            )
        })
        .filter(|(a, b)| a < b)
        .collect();
    match damage {
        Damage::NoneKept => unreachable!("handled above"),
        Damage::AllKept | Damage::DirPrefix => {}
        Damage::Prefix => out.truncate(rng.random_range(synced..=len)),
        Damage::PagesOutOfOrder => {
            let kept: Vec<bool> = pages.iter().map(|_| rng.random_bool(0.5)).collect();
            let end = pages
                .iter()
                .zip(&kept)
                .filter(|(_, k)| **k)
                .map(|((_, b), _)| *b)
                .max()
                .unwrap_or(synced);
            for ((a, b), k) in pages.iter().zip(&kept) {
                if !k {
                    out[*a..*b].fill(0);
                }
            }
            out.truncate(end);
        }
        Damage::ZeroedPages | Damage::GarbagePages => {
            for (a, b) in &pages {
                if rng.random_bool(0.5) {
                    if damage == Damage::ZeroedPages {
                        out[*a..*b].fill(0);
                    } else {
                        rng.fill_bytes(&mut out[*a..*b]);
                    }
                }
            }
        }
        Damage::TornSector => {
            let start = ((len - 1) / SECTOR_BYTES * SECTOR_BYTES).max(synced);
            let from = rng.random_range(start..len);
            rng.fill_bytes(&mut out[from..]);
        }
    }
    out
}

struct Shared {
    state: Mutex<FsState>,
    gate: Condvar,
}

/// See the module docs. Cloning gives another handle to the same file system.
#[derive(Clone)]
pub struct CrashFs {
    shared: Arc<Shared>,
    path: PathBuf,
}

impl Default for CrashFs {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CrashFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashFs")
            .field("files", &self.listing())
            .finish()
    }
}

impl CrashFs {
    /// An empty file system.
    pub fn new() -> CrashFs {
        CrashFs::from_state(FsState::default())
    }

    /// A file system holding exactly `files` (`(name, bytes)`), all durable.
    pub fn with_files(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> CrashFs {
        CrashFs::from_state(FsState::durable(files))
    }

    /// Every file's name and content.
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        let s = self.lock();
        s.names
            .iter()
            .map(|(n, id)| (n.clone(), s.files[id].data.clone()))
            .collect()
    }

    fn from_state(state: FsState) -> CrashFs {
        CrashFs {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                gate: Condvar::new(),
            }),
            path: PathBuf::from("/crashfs"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FsState> {
        // A test thread that panicked while holding the lock leaves a usable state.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This file system as a [`Dir`] for [`Store::open_dir`](super::Store::open_dir).
    pub fn dir(&self) -> Arc<dyn Dir> {
        Arc::new(self.clone())
    }

    /// Number of file fsyncs so far.
    pub fn file_syncs(&self) -> u64 {
        self.lock().file_syncs
    }

    /// Every file fsync sleeps this long (outside the file system's lock).
    pub fn set_sync_delay(&self, d: Duration) {
        self.lock().sync_delay = d;
    }

    /// While on, every write fails after appending half of its bytes.
    pub fn set_fail_writes(&self, on: bool) {
        self.lock().fail_writes = on;
    }

    /// While on, every file fsync fails (keeping the unsynced bytes).
    pub fn set_fail_syncs(&self, on: bool) {
        self.lock().fail_syncs = on;
    }

    /// While on, every [`Dir::create`] fails (each failure is listed in
    /// [`CrashFs::failed_ops`]).
    pub fn set_fail_creates(&self, on: bool) {
        self.lock().fail_creates = on;
    }

    /// The next file fsync — only one called from a thread named `thread`, if given —
    /// fails *and drops the file's unsynced bytes*, as Linux may after a writeback
    /// error (the dirty pages are marked clean; the next fsync has nothing to write and
    /// succeeds). Later fsyncs succeed.
    pub fn fail_next_sync(&self, thread: Option<&str>) {
        self.lock().fail_sync_once = Some(thread.map(str::to_owned));
    }

    /// True while a [`CrashFs::fail_next_sync`] failure has not happened yet.
    pub fn sync_failure_pending(&self) -> bool {
        self.lock().fail_sync_once.is_some()
    }

    /// Number of I/O operations (writes, fsyncs, creates, renames, removes, directory
    /// fsyncs) so far; reads, listings and truncates are not counted.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Fail the I/O operation numbered `n` (counting as [`CrashFs::ops`] does, from 1)
    /// with an error of `kind` (e.g. `Other` for EIO, `StorageFull` for ENOSPC). A
    /// failed write keeps half of its bytes; a failed fsync drops the file's unsynced
    /// bytes; a failed directory fsync leaves the names as durable as they were.
    pub fn fail_op(&self, n: u64, kind: io::ErrorKind) {
        self.lock().fail_at = Some((n, kind));
    }

    /// The operations that failed by injection, as `(number, operation, file name)`
    /// (`""` for a directory fsync).
    pub fn failed_ops(&self) -> Vec<(u64, Op, String)> {
        self.lock().failed_ops.clone()
    }

    /// From now on, remember the file system at the start of every file or directory
    /// fsync, labelled with `label()` read at that moment (e.g. the number of commits
    /// acknowledged so far). [`CrashFs::sync_points`] returns them.
    pub fn record_sync_points(&self, label: impl Fn() -> u64 + Send + Sync + 'static) {
        self.lock().recorder = Some(Arc::new(label));
    }

    /// The recorded sync points, in order: `(label, file system at that moment)`.
    pub fn sync_points(&self) -> Vec<(u64, CrashFs)> {
        let s = self.lock();
        s.sync_points
            .iter()
            .map(|(label, st)| (*label, CrashFs::from_state(st.clone())))
            .collect()
    }

    /// While syncs are held, let the fsyncs of threads named `thread` through.
    pub fn let_syncs_through(&self, thread: &str) {
        self.lock().gate_pass = Some(thread.to_owned());
        self.shared.gate.notify_all();
    }

    /// While held, every file fsync blocks.
    pub fn hold_syncs(&self) {
        self.lock().gate_held = true;
    }

    /// Let held fsyncs go on.
    pub fn release_syncs(&self) {
        self.lock().gate_held = false;
        self.shared.gate.notify_all();
    }

    /// Number of file fsyncs blocked by [`CrashFs::hold_syncs`] right now.
    pub fn syncs_waiting_at_gate(&self) -> u64 {
        self.lock().syncs_waiting_at_gate
    }

    /// Current names and written lengths in bytes.
    pub fn listing(&self) -> Vec<(String, usize)> {
        let s = self.lock();
        s.names
            .iter()
            .map(|(n, id)| (n.clone(), s.files[id].data.len()))
            .collect()
    }

    /// Total bytes written to all live files.
    pub fn written_bytes(&self) -> usize {
        self.listing().iter().map(|(_, l)| l).sum()
    }

    /// The file system as a machine finds it after power loss: durable names with
    /// their durable bytes, plus — when `rng` is given — a random prefix of each
    /// file's unsynced appended tail ([`Damage::Prefix`]).
    pub fn crash(&self, rng: Option<&mut dyn RngCore>) -> CrashFs {
        match rng {
            Some(r) => self.power_loss(Damage::Prefix, r),
            None => self.power_loss(Damage::NoneKept, &mut rand::rng()),
        }
    }

    /// The file system as a machine finds it after a power loss that does `damage` to
    /// what was not durable, drawing random choices from `rng`.
    pub fn power_loss(&self, damage: Damage, rng: &mut dyn RngCore) -> CrashFs {
        CrashFs::from_state(self.lock().crashed(damage, rng))
    }

    /// The file system after the process is killed (`kill -9`) while the machine keeps
    /// running: every written byte and name stays readable, but only what was fsynced
    /// (and `sync_dir`ed) is durable; [`CrashFs::crash`] on the result still loses the
    /// rest.
    pub fn kill(&self) -> CrashFs {
        let s = self.lock();
        CrashFs::from_state(FsState {
            files: s.files.clone(),
            next_id: s.next_id,
            names: s.names.clone(),
            durable_names: s.durable_names.clone(),
            dir_ops: s.dir_ops.clone(),
            ..FsState::default()
        })
    }

    /// Every successful file fsync so far, as `(file name, durable length in bytes)`.
    pub fn sync_log(&self) -> Vec<(String, usize)> {
        self.lock().sync_log.clone()
    }

    /// A copy of everything written (durable or not): a clean restart, not a crash.
    pub fn restart(&self) -> CrashFs {
        let s = self.lock();
        let mut out = FsState {
            next_id: s.next_id,
            files: s.files.clone(),
            names: s.names.clone(),
            ..FsState::default()
        };
        for f in out.files.values_mut() {
            f.durable = f.data.clone();
        }
        out.durable_names = out.names.clone();
        CrashFs::from_state(out)
    }

    /// Overwrite one byte of a file (written and durable): bit rot.
    ///
    /// # Panics
    /// If the file or the offset does not exist.
    pub fn poke(&self, name: &str, offset: usize, f: impl FnOnce(u8) -> u8) {
        let mut s = self.lock();
        let id = s.names[name];
        let file = s.files.get_mut(&id).expect("file");
        file.data[offset] = f(file.data[offset]);
        file.durable = file.data.clone();
    }

    /// Everything written to file `name`.
    ///
    /// # Panics
    /// If there is no such file.
    pub fn contents(&self, name: &str) -> Vec<u8> {
        let s = self.lock();
        s.files[&s.names[name]].data.clone()
    }
}

struct CrashFile {
    fs: CrashFs,
    id: u64,
    name: String,
}

impl WalFile for CrashFile {
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.fs.lock();
        let injected = s.op(Op::Write, &self.name);
        if s.fail_writes || injected.is_err() {
            // A failed write may still have put part of the bytes in the file.
            let half = buf.len() / 2;
            s.files
                .get_mut(&self.id)
                .expect("file")
                .data
                .extend_from_slice(&buf[..half]);
            return Err(injected
                .err()
                .unwrap_or_else(|| io::Error::other("injected write failure")));
        }
        s.files
            .get_mut(&self.id)
            .expect("file")
            .data
            .extend_from_slice(buf);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.record_sync_point();
        let me = std::thread::current().name().map(str::to_owned);
        s.syncs_waiting_at_gate += 1;
        while s.gate_held && !(me.is_some() && s.gate_pass == me) {
            s = self
                .fs
                .shared
                .gate
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        s.syncs_waiting_at_gate -= 1;
        if s.fail_syncs {
            return Err(io::Error::other("injected fsync failure"));
        }
        let once = s
            .fail_sync_once
            .as_ref()
            .is_some_and(|filter| filter.is_none() || *filter == me);
        let injected = s.op(Op::Sync, &self.name);
        if once || injected.is_err() {
            if once {
                s.fail_sync_once = None;
            }
            let f = s.files.get_mut(&self.id).expect("file");
            f.data = f.durable.clone();
            return Err(injected.err().unwrap_or_else(|| {
                io::Error::other("injected fsync failure (unsynced bytes dropped)")
            }));
        }
        let delay = s.sync_delay;
        s.file_syncs += 1;
        // Capture what the fsync covers at its start, then take its time.
        let covered = s.files[&self.id].data.clone();
        drop(s);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut s = self.fs.lock();
        let f = s.files.get_mut(&self.id).expect("file");
        if f.data.starts_with(&covered) {
            f.durable = covered;
        } else {
            f.durable = f.data.clone();
        }
        let len = f.durable.len();
        let name = self.name.clone();
        s.sync_log.push((name, len));
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.fs.lock().files[&self.id].data.len() as u64)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.files
            .get_mut(&self.id)
            .expect("file")
            .data
            .truncate(len as usize);
        Ok(())
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("crashfs: no file {name}"))
}

impl Dir for CrashFs {
    fn path(&self) -> &Path {
        &self.path
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().names.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let s = self.lock();
        let id = s.names.get(name).ok_or_else(|| not_found(name))?;
        Ok(s.files[id].data.clone())
    }

    fn open_append(&self, name: &str) -> io::Result<Arc<dyn WalFile>> {
        let id = *self.lock().names.get(name).ok_or_else(|| not_found(name))?;
        Ok(Arc::new(CrashFile {
            fs: self.clone(),
            id,
            name: name.to_string(),
        }))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn WalFile>> {
        let mut s = self.lock();
        s.op(Op::Create, name)?;
        if s.fail_creates {
            let n = s.ops;
            s.failed_ops.push((n, Op::Create, name.to_string()));
            return Err(io::Error::other("crashfs: injected Create failure"));
        }
        let id = s.next_id;
        s.next_id += 1;
        s.files.insert(id, FileData::default());
        s.names.insert(name.to_string(), id);
        s.dir_ops.push(DirOp::Create(name.to_string(), id));
        Ok(Arc::new(CrashFile {
            fs: self.clone(),
            id,
            name: name.to_string(),
        }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut s = self.lock();
        s.op(Op::Rename, from)?;
        let id = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_string(), id);
        s.dir_ops
            .push(DirOp::Rename(from.to_string(), to.to_string()));
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut s = self.lock();
        s.op(Op::Remove, name)?;
        s.names.remove(name).ok_or_else(|| not_found(name))?;
        s.dir_ops.push(DirOp::Remove(name.to_string()));
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut s = self.lock();
        s.record_sync_point();
        s.op(Op::SyncDir, "")?;
        s.sync_dir();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn file(data: &[u8], durable: &[u8]) -> FileData {
        FileData {
            data: data.to_vec(),
            durable: durable.to_vec(),
        }
    }

    #[test]
    fn damage_never_touches_synced_bytes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let synced: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8 + 1).collect();
        let mut written = synced.clone();
        written.extend((0..9000u32).map(|i| (i % 13) as u8 + 1));
        let f = file(&written, &synced);
        for damage in Damage::ALL {
            for _ in 0..20 {
                let out = damaged(&f, damage, &mut rng);
                assert!(out.len() >= synced.len(), "{damage:?}");
                assert_eq!(&out[..synced.len()], &synced[..], "{damage:?}");
                assert!(out.len() <= written.len(), "{damage:?}");
            }
        }
        assert_eq!(damaged(&f, Damage::NoneKept, &mut rng), synced);
        assert_eq!(damaged(&f, Damage::AllKept, &mut rng), written);
        // Some variant changes some unsynced byte (the damage is real).
        let changed = (0..20).any(|_| damaged(&f, Damage::GarbagePages, &mut rng) != written);
        assert!(changed);
    }

    #[test]
    fn dir_prefix_replays_a_prefix_of_operations() {
        let fs = CrashFs::new();
        let a = fs.create("a").unwrap();
        a.write_all(b"x").unwrap();
        fs.sync_dir().unwrap();
        fs.create("b").unwrap();
        fs.rename("b", "c").unwrap();
        fs.remove("a").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..64 {
            let names: Vec<String> = fs
                .power_loss(Damage::DirPrefix, &mut rng)
                .listing()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            seen.insert(names.join(","));
        }
        let expected: std::collections::BTreeSet<String> = ["a", "a,b", "a,c", "c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn fail_op_fails_exactly_the_nth_operation() {
        let fs = CrashFs::new();
        fs.fail_op(2, io::ErrorKind::StorageFull);
        let f = fs.create("a").unwrap();
        let err = f.write_all(b"hello").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        f.write_all(b"!").unwrap();
        assert_eq!(fs.contents("a"), b"he!");
        assert_eq!(fs.failed_ops(), vec![(2, Op::Write, "a".to_string())]);
    }
}
