//! Options of the SQLite engine, and the URL forms that set them.

use datalayer_core::{Error, Result};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How durable a commit is: SQLite's `PRAGMA synchronous` in WAL mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// `NORMAL`: a commit survives a crash of the process; the last commits before a
    /// power loss may be lost (the database stays consistent). The default.
    #[default]
    Normal,
    /// `FULL`: every commit is fsynced to the WAL before it returns; survives power loss.
    Full,
}

/// Options of [`crate::SqliteEngine`].
///
/// Built from a URL ([`SqliteOptions::from_url`]) or directly
/// (`SqliteOptions::file("app.db").readers(4)`).
#[derive(Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// The database file; `None` = a private in-memory database (`sqlite::memory:`).
    /// Default: `None`.
    pub path: Option<PathBuf>,
    /// Durability of commits. Default: [`Synchronous::Normal`].
    pub synchronous: Synchronous,
    /// Reader connections (each on its own thread). Default: the number of cores
    /// (`std::thread::available_parallelism`). Ignored for in-memory databases, whose
    /// reads run on the writer connection (the only connection that sees the data).
    pub readers: usize,
    /// How long an operation waits for a lock held by another connection or process
    /// (SQLite `busy_timeout`), and for a free connection of this engine before it
    /// fails with `Timeout`. Default: 5 s.
    pub busy_timeout: Duration,
    /// Autocommit reads of a file database run on the calling thread, each thread
    /// with a read connection of its own (opened at its first read), rather than on
    /// a reader thread: a point read then costs no thread hop, but the calling (async
    /// runtime) thread is busy for the read's length. Default: on; `false` sends
    /// them to the reader threads. Transactions always use the engine's threads.
    pub caller_reads: bool,
}

fn default_readers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl SqliteOptions {
    /// A database in the file at `path` (created if missing), with default options.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: Some(path.into()),
            synchronous: Synchronous::default(),
            readers: default_readers(),
            busy_timeout: Duration::from_secs(5),
            caller_reads: true,
        }
    }

    /// A private in-memory database, with default options.
    pub fn memory() -> Self {
        SqliteOptions {
            path: None,
            ..Self::file("")
        }
    }

    /// Parses a URL:
    ///
    /// - `sqlite::memory:` — an in-memory database;
    /// - `sqlite://path/to/file.db` (relative), `sqlite:///abs/file.db` (absolute), or
    ///   `sqlite:path/to/file.db`;
    /// - optional query parameters: `synchronous=normal|full`, `readers=<n>`,
    ///   `busy_timeout_ms=<milliseconds>`, `caller_reads=true|false`
    ///   (`sqlite://app.db?synchronous=full`).
    ///
    /// # Errors
    /// `InvalidInput` for another scheme, an empty path or an unknown parameter.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("sqlite:")
            .ok_or_else(|| Error::invalid_input(format!("not a sqlite URL: {url:?}")))?;
        let (target, query) = match rest.split_once('?') {
            Some((t, q)) => (t, Some(q)),
            None => (rest, None),
        };
        let mut opts = if target == ":memory:" || target == "//:memory:" {
            SqliteOptions::memory()
        } else {
            let path = target.strip_prefix("//").unwrap_or(target);
            if path.is_empty() {
                return Err(Error::invalid_input(format!(
                    "sqlite URL without a file path: {url:?}"
                )));
            }
            SqliteOptions::file(path)
        };
        for kv in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|s| !s.is_empty())
        {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let bad = || Error::invalid_input(format!("sqlite URL parameter {k}={v:?} is invalid"));
            match k {
                "synchronous" => {
                    opts.synchronous = match v.to_ascii_lowercase().as_str() {
                        "normal" => Synchronous::Normal,
                        "full" => Synchronous::Full,
                        _ => return Err(bad()),
                    }
                }
                "readers" => opts.readers = v.parse().map_err(|_| bad())?,
                "caller_reads" => opts.caller_reads = v.parse().map_err(|_| bad())?,
                "busy_timeout_ms" => {
                    opts.busy_timeout = Duration::from_millis(v.parse().map_err(|_| bad())?)
                }
                _ => {
                    return Err(Error::invalid_input(format!(
                        "unknown sqlite URL parameter {k:?} (known: synchronous, readers, busy_timeout_ms, caller_reads)"
                    )));
                }
            }
        }
        Ok(opts)
    }

    /// Sets [`SqliteOptions::synchronous`].
    pub fn synchronous(mut self, s: Synchronous) -> Self {
        self.synchronous = s;
        self
    }
    /// Sets [`SqliteOptions::readers`] (at least 1 is used for a file database).
    pub fn readers(mut self, n: usize) -> Self {
        self.readers = n;
        self
    }
    /// Sets [`SqliteOptions::busy_timeout`].
    pub fn busy_timeout(mut self, d: Duration) -> Self {
        self.busy_timeout = d;
        self
    }
    /// Whether this is an in-memory database.
    pub fn is_memory(&self) -> bool {
        self.path.is_none()
    }
}

impl fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteOptions")
            .field(
                "path",
                &self
                    .path
                    .as_ref()
                    .map_or(":memory:".into(), |p| p.display().to_string()),
            )
            .field("synchronous", &self.synchronous)
            .field("readers", &self.readers)
            .field("busy_timeout_ms", &self.busy_timeout.as_millis())
            .field("caller_reads", &self.caller_reads)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(
            SqliteOptions::from_url("sqlite::memory:")
                .unwrap()
                .is_memory()
        );
        let o = SqliteOptions::from_url(
            "sqlite://data/app.db?synchronous=FULL&readers=3&busy_timeout_ms=250",
        )
        .unwrap();
        assert_eq!(o.path, Some(PathBuf::from("data/app.db")));
        assert_eq!(o.synchronous, Synchronous::Full);
        assert_eq!(o.readers, 3);
        assert_eq!(o.busy_timeout, Duration::from_millis(250));
        assert!(o.caller_reads);
        let o = SqliteOptions::from_url("sqlite://a.db?caller_reads=false").unwrap();
        assert!(!o.caller_reads);
        assert!(SqliteOptions::from_url("sqlite://a.db?caller_reads=maybe").is_err());
        assert_eq!(
            SqliteOptions::from_url("sqlite:///tmp/x.db").unwrap().path,
            Some(PathBuf::from("/tmp/x.db"))
        );
        assert!(SqliteOptions::from_url("sqlite://").is_err());
        assert!(SqliteOptions::from_url("sqlite://a.db?cache=1").is_err());
        assert!(SqliteOptions::from_url("etch://a").is_err());
    }
}
