//! Options of the etch engine, and the URL forms that set them.

use crate::storage::{FlushPolicy, MAX_COMMIT_BYTES, StoreOptions};
use datalayer_core::{Error, Result};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Options of the etch engine ([`crate::open`]).
///
/// Built from a URL ([`parse_url`]) or directly (`EtchOptions::default()` and struct
/// update syntax).
#[derive(Clone, PartialEq, Eq)]
pub struct EtchOptions {
    /// The storage layer's options: when commits are fsynced
    /// ([`StoreOptions::flush`]), after how many bytes of log a snapshot is written
    /// ([`StoreOptions::compact_after_bytes`]), the largest value
    /// ([`StoreOptions::max_value_bytes`], declared as the engine's `max_value_bytes`).
    /// Default: [`StoreOptions::default`] (fsync every commit, compaction after 64 MiB
    /// of log, values up to 16 MiB).
    pub store: StoreOptions,
    /// How long a read-write transaction waits for the single writer lock before its
    /// `begin` fails with `Timeout`. Default: 30 seconds.
    pub lock_timeout: Duration,
    /// The largest write set one transaction may commit, in bytes (the sum of its keys'
    /// and values' lengths, as `datalayer_kv::write_set_bytes` counts them), declared
    /// as the store's `KvCapability::max_txn_bytes`: a larger one fails the commit
    /// with `InvalidInput` and nothing is applied. At most
    /// [`MAX_COMMIT_BYTES`] (a commit record must fit
    /// its `u32` length field). Default: 256 MiB (`256 * 1024 * 1024`).
    pub max_txn_bytes: usize,
}

impl Default for EtchOptions {
    fn default() -> Self {
        EtchOptions {
            store: StoreOptions::default(),
            lock_timeout: Duration::from_secs(30),
            max_txn_bytes: 256 * 1024 * 1024,
        }
    }
}

impl EtchOptions {
    /// Checks the options (the engine checks them when it opens).
    ///
    /// # Errors
    /// `InvalidInput` when [`EtchOptions::max_txn_bytes`] is over
    /// [`MAX_COMMIT_BYTES`].
    pub fn validate(&self) -> Result<()> {
        if self.max_txn_bytes > MAX_COMMIT_BYTES {
            return Err(Error::invalid_input(format!(
                "etch: max_txn_bytes of {} bytes is over the largest commit etch can log \
                 ({MAX_COMMIT_BYTES} bytes)",
                self.max_txn_bytes
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for EtchOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtchOptions")
            .field("flush", &self.store.flush)
            .field("compact_after_bytes", &self.store.compact_after_bytes)
            .field("max_value_bytes", &self.store.max_value_bytes)
            .field("lock_timeout_ms", &self.lock_timeout.as_millis())
            .field("max_txn_bytes", &self.max_txn_bytes)
            .finish()
    }
}

/// Parses an etch URL into the store's directory (`None`: in memory) and its options.
///
/// - `etch::memory:` (or `etch://:memory:`): a store in memory, with
///   [`EtchOptions::default`] (it takes no parameters);
/// - `etch://<dir>`: a store in directory `<dir>` (relative, or absolute as
///   `etch:///abs/dir`), created if missing;
/// - optional query parameters, each setting one option:
///   `flush=every_commit|never|<n>ms` ([`StoreOptions::flush`]),
///   `compact_after_bytes=<n>`, `max_value_bytes=<n>`,
///   `lock_timeout_ms=<milliseconds>`, `max_txn_bytes=<n>` — e.g.
///   `etch://data?flush=5ms&lock_timeout_ms=500`.
///
/// # Errors
/// `InvalidInput` for another scheme, a URL without a directory, an unknown parameter,
/// a value that does not parse, or options that fail [`EtchOptions::validate`].
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
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || Error::invalid_input(format!("etch URL parameter {k}={v:?} is invalid"));
        match k {
            "flush" => {
                opts.store.flush = match v {
                    "every_commit" => FlushPolicy::EveryCommit,
                    "never" => FlushPolicy::Never,
                    ms if ms.ends_with("ms") => {
                        let n: u64 = ms.trim_end_matches("ms").parse().map_err(|_| {
                            Error::invalid_input(format!("bad flush interval {ms:?}"))
                        })?;
                        FlushPolicy::Interval(Duration::from_millis(n))
                    }
                    _ => return Err(bad()),
                }
            }
            "compact_after_bytes" => {
                opts.store.compact_after_bytes = v.parse().map_err(|_| bad())?;
            }
            "max_value_bytes" => opts.store.max_value_bytes = v.parse().map_err(|_| bad())?,
            "lock_timeout_ms" => {
                opts.lock_timeout = Duration::from_millis(v.parse().map_err(|_| bad())?);
            }
            "max_txn_bytes" => opts.max_txn_bytes = v.parse().map_err(|_| bad())?,
            _ => {
                return Err(Error::invalid_input(format!(
                    "unknown etch URL option {pair:?} (known: flush, compact_after_bytes, \
                     max_value_bytes, lock_timeout_ms, max_txn_bytes)"
                )));
            }
        }
    }
    opts.validate()?;
    Ok((Some(PathBuf::from(path)), opts))
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

    #[test]
    fn every_option_from_a_url() {
        let (d, o) = parse_url(
            "etch:///abs/d?flush=never&compact_after_bytes=1024&max_value_bytes=77&lock_timeout_ms=250&max_txn_bytes=4096",
        )
        .unwrap();
        assert_eq!(d, Some(PathBuf::from("/abs/d")));
        assert_eq!(o.store.flush, FlushPolicy::Never);
        assert_eq!(o.store.compact_after_bytes, 1024);
        assert_eq!(o.store.max_value_bytes, 77);
        assert_eq!(o.lock_timeout, Duration::from_millis(250));
        assert_eq!(o.max_txn_bytes, 4096);
        let too_big = format!("etch://d?max_txn_bytes={}", MAX_COMMIT_BYTES + 1);
        assert!(
            parse_url(&too_big)
                .unwrap_err()
                .message()
                .contains("max_txn_bytes")
        );
        let (_, o) = parse_url(&format!("etch://d?max_txn_bytes={MAX_COMMIT_BYTES}")).unwrap();
        o.validate().unwrap();
        assert_eq!(parse_url("etch://:memory:").unwrap().0, None);
        for bad in [
            "etch://",
            "etch://d?lock_timeout_ms=soon",
            "etch://d?max_value_bytes=-1",
            "etch://d?cache=1",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.is_invalid_input(), "{bad}: {e}");
        }
    }

    #[test]
    fn debug_shows_units() {
        let s = format!("{:?}", EtchOptions::default());
        assert!(s.contains("lock_timeout_ms: 30000"), "{s}");
        assert!(s.contains("max_value_bytes: 16777216"), "{s}");
        assert!(s.contains("max_txn_bytes: 268435456"), "{s}");
        EtchOptions::default().validate().unwrap();
    }
}
