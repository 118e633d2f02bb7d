//! The one place where etch's native errors become datalayer errors.
//!
//! | native error                                             | [`ErrorKind`]          |
//! |----------------------------------------------------------|------------------------|
//! | [`StoreError::Io`]                                        | as `std::io::Error` converts: `TimedOut` → `Timeout`, anything else → `Io` |
//! | [`StoreError::Corrupted`] (a checksum or structural check failed on open) | `Corrupted` |
//! | [`StoreError::TooLarge`] (a value over `max_value_bytes`, a record over 4 GiB) | `InvalidInput` |
//! | [`StoreError::Closed`] (a commit after `close`)          | `InvalidInput`         |
//! | [`StoreError::Poisoned`] (an earlier WAL write or fsync failed) | `Io`            |
//! | the writer lock not acquired within `lock_timeout`       | `Timeout` (retryable)  |
//! | a blocking task (open, close) that panicked              | `Engine`, code `join`  |
//!
//! A write set over the engine's `max_txn_bytes` is `InvalidInput`, made by
//! `datalayer_kv::KvCapability::check_write_set` (the same message for every KV store).
//! etch never reports `Conflict`: one writer at a time, so a transaction never loses
//! a race; and never `CommitUnknown`: a commit that returns an error was not applied,
//! except after a failed fsync under `FlushPolicy::EveryCommit` (`Poisoned`: the
//! commit's durability is unknown, and the store refuses further commits until it is
//! reopened; recovery then decides).

use crate::storage::StoreError;
use datalayer_core::{Error, ErrorKind};
use std::time::Duration;

/// Maps a storage error.
pub(crate) fn map_error(e: StoreError) -> Error {
    match e {
        StoreError::Io(io) => Error::from(io),
        e @ StoreError::Corrupted { .. } => Error::corrupted(e.to_string()).with_source(e),
        e @ (StoreError::TooLarge { .. } | StoreError::Closed) => {
            Error::invalid_input(e.to_string()).with_source(e)
        }
        e => Error::new(ErrorKind::Io, e.to_string()).with_source(e),
    }
}

/// The writer lock was not acquired within `waited`.
pub(crate) fn lock_timeout(waited: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!(
            "etch: waited {} ms for the writer lock (is a transaction open on this task?)",
            waited.as_millis()
        ),
    )
}

/// A blocking task (`what`: opening or closing the store) failed to complete.
pub(crate) fn join_error(what: &str, e: tokio::task::JoinError) -> Error {
    Error::engine(
        "join",
        format!("etch: {what} panicked or was cancelled: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let too_large = StoreError::TooLarge {
            what: "value",
            size_bytes: 10,
            limit_bytes: 5,
        };
        assert_eq!(map_error(too_large).kind(), ErrorKind::InvalidInput);
        assert_eq!(
            map_error(StoreError::Closed).kind(),
            ErrorKind::InvalidInput
        );
        let corrupted = StoreError::Corrupted {
            file: "d/wal-1.log".into(),
            offset: 8,
            reason: "crc".into(),
        };
        let e = map_error(corrupted);
        assert!(e.is_corrupted() && e.message().contains("wal-1.log"), "{e}");
        let poisoned = StoreError::Poisoned {
            reason: "fsync".into(),
        };
        assert_eq!(map_error(poisoned).kind(), ErrorKind::Io);
        let io = StoreError::Io(std::io::Error::other("disk"));
        assert_eq!(map_error(io).kind(), ErrorKind::Io);
        let t = lock_timeout(Duration::from_millis(250));
        assert!(t.is_retryable() && t.message().contains("250 ms"), "{t}");
    }
}
