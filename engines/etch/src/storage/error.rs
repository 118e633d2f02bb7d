//! The one error type of the store.

use std::path::PathBuf;

/// Everything that can go wrong in [`Store`](crate::storage::Store).
///
/// Classification contract (for adapters mapping this onto a portable error kind):
/// - [`StoreError::Io`]: the operating system refused a read, write, fsync, rename or
///   directory operation. Not retryable as such; if it happened on the write-ahead log
///   the store is poisoned afterwards (see [`StoreError::Poisoned`]).
/// - [`StoreError::Corrupted`]: a checksum or structural check failed while reading a
///   file on open. Never retryable; the files need attention.
/// - [`StoreError::TooLarge`]: the caller's input breaks a size limit; nothing was applied.
/// - [`StoreError::Closed`]: [`Store::close`](crate::storage::Store::close) was called.
/// - [`StoreError::Poisoned`]: an earlier write-ahead-log append or fsync failed, so the
///   store refuses every further commit rather than risk a hole in the log. Reopen it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O error from the operating system (or from the [`Dir`](crate::storage::io::Dir)
    /// backend in use).
    #[error("etch: I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A file failed a checksum or structural check.
    #[error("etch: corrupted file {}: at byte offset {offset}: {reason}", file.display())]
    Corrupted {
        /// The file, as `<store dir>/<file name>`.
        file: PathBuf,
        /// Byte offset from the start of the file where the bad data starts
        /// (for a WAL record: the offset of the record's length field).
        offset: u64,
        /// What check failed, in words.
        reason: String,
    },
    /// A value (or a whole commit record) is over its size limit. Nothing was applied.
    #[error("etch: {what} of {size_bytes} bytes is over the limit of {limit_bytes} bytes")]
    TooLarge {
        /// What was too large: `"value"` (see
        /// [`StoreOptions::max_value_bytes`](crate::storage::StoreOptions::max_value_bytes)) or
        /// `"commit record"` (a record's payload must fit in a `u32`).
        what: &'static str,
        /// Its size, in bytes.
        size_bytes: u64,
        /// The limit, in bytes.
        limit_bytes: u64,
    },
    /// The store was closed with [`Store::close`](crate::storage::Store::close); it accepts no
    /// more commits.
    #[error("etch: the store is closed")]
    Closed,
    /// An earlier write-ahead-log write or fsync failed; the store refuses further
    /// commits until it is reopened (recovery then cuts any torn record off the log).
    #[error("etch: the store refuses commits after a write-ahead-log failure: {reason}")]
    Poisoned {
        /// The failure that poisoned the store.
        reason: String,
    },
}

impl StoreError {
    /// True for [`StoreError::Io`].
    pub fn is_io(&self) -> bool {
        matches!(self, StoreError::Io(_))
    }

    /// True for [`StoreError::Corrupted`].
    pub fn is_corrupted(&self) -> bool {
        matches!(self, StoreError::Corrupted { .. })
    }

    /// True for [`StoreError::TooLarge`].
    pub fn is_too_large(&self) -> bool {
        matches!(self, StoreError::TooLarge { .. })
    }

    /// True for [`StoreError::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, StoreError::Closed)
    }

    /// True for [`StoreError::Poisoned`].
    pub fn is_poisoned(&self) -> bool {
        matches!(self, StoreError::Poisoned { .. })
    }
}
