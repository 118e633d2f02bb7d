//! Test backends: [`CrashFs`], an in-memory [`Dir`] that keeps the bytes each file has
//! been *written* apart from the bytes that are *durable* (fsynced), and directory
//! entries apart from *durable* directory entries (`sync_dir`). `crash()` builds the
//! file system a machine would find after power loss: only durable names and bytes,
//! plus (optionally) a random prefix of each file's unsynced tail.
//!
//! It can also count fsyncs, delay them, hold them at a gate, and fail writes/fsyncs.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use datalayer_etch::storage::io::{Dir, WalFile};
use rand::Rng;

#[derive(Default, Clone)]
struct FileData {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Default)]
struct FsState {
    files: HashMap<u64, FileData>,
    next_id: u64,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    file_syncs: u64,
    sync_delay: Duration,
    gate_held: bool,
    syncs_waiting_at_gate: u64,
    fail_writes: bool,
    fail_syncs: bool,
    /// `Some(filter)`: the next file fsync (from a thread named `filter`, when given)
    /// fails and drops the file's unsynced bytes; later fsyncs succeed.
    fail_sync_once: Option<Option<String>>,
    /// A thread of this name passes the gate of [`CrashFs::hold_syncs`].
    gate_pass: Option<String>,
    /// Every file fsync, as `(file name when it was opened, bytes it made durable)`.
    sync_log: Vec<(String, usize)>,
}

struct Shared {
    state: Mutex<FsState>,
    gate: Condvar,
}

/// See the module docs.
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

impl CrashFs {
    pub fn new() -> CrashFs {
        CrashFs::from_state(FsState::default())
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
        self.shared.state.lock().unwrap()
    }

    pub fn dir(&self) -> Arc<dyn Dir> {
        Arc::new(self.clone())
    }

    /// Number of file fsyncs so far.
    pub fn file_syncs(&self) -> u64 {
        self.lock().file_syncs
    }

    pub fn set_sync_delay(&self, d: Duration) {
        self.lock().sync_delay = d;
    }

    pub fn set_fail_writes(&self, on: bool) {
        self.lock().fail_writes = on;
    }

    pub fn set_fail_syncs(&self, on: bool) {
        self.lock().fail_syncs = on;
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

    /// While syncs are held, let the fsyncs of threads named `thread` through.
    pub fn let_syncs_through(&self, thread: &str) {
        self.lock().gate_pass = Some(thread.to_owned());
        self.shared.gate.notify_all();
    }

    /// While held, every file fsync blocks.
    pub fn hold_syncs(&self) {
        self.lock().gate_held = true;
    }

    pub fn release_syncs(&self) {
        self.lock().gate_held = false;
        self.shared.gate.notify_all();
    }

    pub fn syncs_waiting_at_gate(&self) -> u64 {
        self.lock().syncs_waiting_at_gate
    }

    /// Current names and written lengths.
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
    /// file's unsynced appended tail.
    pub fn crash(&self, rng: Option<&mut dyn rand::RngCore>) -> CrashFs {
        let s = self.lock();
        let mut rng = rng;
        let mut out = FsState::default();
        for (name, id) in &s.durable_names {
            let f = &s.files[id];
            let mut data = f.durable.clone();
            if let Some(r) = rng.as_deref_mut()
                && f.data.starts_with(&f.durable)
                && f.data.len() > f.durable.len()
            {
                let extra = f.data.len() - f.durable.len();
                let keep = r.random_range(0..=extra);
                data.extend_from_slice(&f.data[f.durable.len()..f.durable.len() + keep]);
            }
            let nid = out.next_id;
            out.next_id += 1;
            out.files.insert(
                nid,
                FileData {
                    data: data.clone(),
                    durable: data,
                },
            );
            out.names.insert(name.clone(), nid);
        }
        out.durable_names = out.names.clone();
        CrashFs::from_state(out)
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
            ..FsState::default()
        })
    }

    /// Every successful file fsync so far, as `(file name, durable length in bytes)`.
    pub fn sync_log(&self) -> Vec<(String, usize)> {
        self.lock().sync_log.clone()
    }

    /// A copy of everything written (durable or not): a process restart, not a crash.
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

    /// Overwrite one byte of a file (written and durable).
    pub fn poke(&self, name: &str, offset: usize, f: impl FnOnce(u8) -> u8) {
        let mut s = self.lock();
        let id = s.names[name];
        let file = s.files.get_mut(&id).unwrap();
        file.data[offset] = f(file.data[offset]);
        file.durable = file.data.clone();
    }

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
        if s.fail_writes {
            // A failed write may still have put part of the bytes in the file.
            let half = buf.len() / 2;
            s.files
                .get_mut(&self.id)
                .unwrap()
                .data
                .extend_from_slice(&buf[..half]);
            return Err(io::Error::other("injected write failure"));
        }
        s.files
            .get_mut(&self.id)
            .unwrap()
            .data
            .extend_from_slice(buf);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.fs.lock();
        let me = std::thread::current().name().map(str::to_owned);
        s.syncs_waiting_at_gate += 1;
        while s.gate_held && !(me.is_some() && s.gate_pass == me) {
            s = self.fs.shared.gate.wait(s).unwrap();
        }
        s.syncs_waiting_at_gate -= 1;
        if s.fail_syncs {
            return Err(io::Error::other("injected fsync failure"));
        }
        if let Some(filter) = &s.fail_sync_once
            && (filter.is_none() || *filter == me)
        {
            s.fail_sync_once = None;
            let f = s.files.get_mut(&self.id).unwrap();
            f.data = f.durable.clone();
            return Err(io::Error::other(
                "injected fsync failure (unsynced bytes dropped)",
            ));
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
        let f = s.files.get_mut(&self.id).unwrap();
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
            .unwrap()
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
        let id = s.next_id;
        s.next_id += 1;
        s.files.insert(id, FileData::default());
        s.names.insert(name.to_string(), id);
        Ok(Arc::new(CrashFile {
            fs: self.clone(),
            id,
            name: name.to_string(),
        }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut s = self.lock();
        let id = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_string(), id);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.lock()
            .names
            .remove(name)
            .ok_or_else(|| not_found(name))?;
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut s = self.lock();
        s.durable_names = s.names.clone();
        Ok(())
    }
}
