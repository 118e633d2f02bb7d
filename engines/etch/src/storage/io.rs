//! The file-system seam: everything the store does to files goes through [`Dir`] and
//! [`WalFile`], so tests can substitute a backend that simulates crashes (keeping
//! "written" bytes apart from "durable", fsynced bytes) or fails on demand.
//!
//! [`OsDir`] is the real implementation on `std::fs`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An append-only file: a WAL segment, or a snapshot being written.
///
/// Methods take `&self` because a flusher thread fsyncs the file while the writer
/// appends to it.
///
/// # Behavior
/// - `write_all` appends at the end of the file (after a `truncate`, at the new end).
/// - `sync` makes every byte written before the call durable (`fdatasync` is enough:
///   the store never relies on metadata other than the length).
/// - A file newly made by [`Dir::create`] is only durable under its name after
///   [`Dir::sync_dir`].
pub trait WalFile: Send + Sync {
    /// Append all of `buf` at the end of the file (one `write` syscall when possible).
    fn write_all(&self, buf: &[u8]) -> io::Result<()>;
    /// Make all bytes written so far durable (fsync / fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// Current length in bytes, including bytes not yet durable.
    fn len(&self) -> io::Result<u64>;
    /// True when [`WalFile::len`] is 0.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Cut the file to `len` bytes (used by recovery to drop a torn tail). Not durable
    /// until [`WalFile::sync`].
    fn truncate(&self, len: u64) -> io::Result<()>;
}

/// A flat directory of named files holding one store.
///
/// # Behavior
/// - Names are plain file names (no `/`).
/// - `create`, `rename` and `remove` are durable only after [`Dir::sync_dir`].
/// - `read` of a missing file fails with [`io::ErrorKind::NotFound`].
pub trait Dir: Send + Sync {
    /// The directory's path, used in error messages ([`StoreError::Corrupted`](crate::storage::StoreError::Corrupted)).
    fn path(&self) -> &Path;
    /// Names of all files in the directory, in any order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Open an existing file for appending.
    fn open_append(&self, name: &str) -> io::Result<Arc<dyn WalFile>>;
    /// Create an empty file for appending, replacing any file of that name.
    fn create(&self, name: &str) -> io::Result<Arc<dyn WalFile>>;
    /// Atomically rename `from` to `to`, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Remove a file.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Make the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self) -> io::Result<()>;

    /// Releases the directory's lock so another store may open it. Called by
    /// [`Store::close`](crate::storage::Store::close) once nothing more will be written.
    /// Default: nothing to release.
    fn unlock(&self) {}
}

/// The real file system: a directory on disk, locked against a second [`Store`](crate::storage::Store)
/// (in this or another process) for as long as this value lives.
pub struct OsDir {
    path: PathBuf,
    lock: parking_lot::Mutex<Option<File>>,
}

/// Name of the lock file inside an [`OsDir`].
pub const LOCK_FILE: &str = "LOCK";

impl OsDir {
    /// Create `path` (and its parents) if missing and take an exclusive lock on
    /// `path/LOCK`. Every directory it creates is made durable: the parent of each
    /// one is fsynced (a new directory's entry is otherwise lost by a power loss, and
    /// with it every commit made inside).
    ///
    /// # Errors
    /// [`io::ErrorKind::WouldBlock`] when another store holds the lock; any error of
    /// creating the directory, fsyncing a parent, or creating the lock file.
    pub fn open(path: &Path) -> io::Result<OsDir> {
        create_dir_durably(path)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join(LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("etch: {} is already open in another store", path.display()),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        Ok(OsDir {
            path: path.to_path_buf(),
            lock: parking_lot::Mutex::new(Some(lock)),
        })
    }
}

/// `create_dir_all`, then fsync the parent of every directory it created, deepest
/// first (POSIX: a new entry is durable once its directory is fsynced).
fn create_dir_durably(path: &Path) -> io::Result<()> {
    create_dir_syncing(path, |dir| File::open(dir)?.sync_all())
}

/// [`create_dir_durably`] with the directory fsync as a parameter (tests record it).
fn create_dir_syncing(
    path: &Path,
    mut sync_dir: impl FnMut(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    std::fs::create_dir_all(path)?;
    for dir in missing {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

struct OsFile(File);

impl WalFile for OsFile {
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        (&self.0).write_all(buf)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Dir for OsDir {
    fn path(&self) -> &Path {
        &self.path
    }
    fn unlock(&self) {
        // Dropping the file releases its advisory lock.
        self.lock.lock().take();
    }
    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                out.push(name);
            }
        }
        Ok(out)
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path.join(name))
    }
    fn open_append(&self, name: &str) -> io::Result<Arc<dyn WalFile>> {
        let f = OpenOptions::new()
            .read(true)
            .append(true)
            .open(self.path.join(name))?;
        Ok(Arc::new(OsFile(f)))
    }
    fn create(&self, name: &str) -> io::Result<Arc<dyn WalFile>> {
        let p = self.path.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let f = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(p)?;
        Ok(Arc::new(OsFile(f)))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path.join(from), self.path.join(to))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))
    }
    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 9, defect 9: every directory `OsDir::open` creates has its parent
    /// fsynced, deepest first; existing ones are not synced again.
    #[test]
    fn new_directories_have_their_parents_fsynced() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let target = base.join("a").join("b").join("c");
        let mut synced = Vec::new();
        create_dir_syncing(&target, |d| {
            synced.push(d.to_path_buf());
            File::open(d)?.sync_all()
        })
        .unwrap();
        assert!(target.is_dir());
        let want = vec![base.join("a").join("b"), base.join("a"), base.clone()];
        assert_eq!(synced, want);
        synced.clear();
        create_dir_syncing(&target, |d| {
            synced.push(d.to_path_buf());
            Ok(())
        })
        .unwrap();
        assert!(synced.is_empty(), "{synced:?}");
        // A failing fsync fails the open.
        let err = create_dir_syncing(&base.join("x"), |_| Err(io::Error::other("EIO")));
        assert!(err.is_err());
    }
}
