//! The storage layer of etch, apart from its datalayer binding: an embedded, ordered,
//! transactional key-value store.
//!
//! The whole state lives in memory as a persistent B-tree ([`Snapshot`], O(1) to
//! clone), made durable by a write-ahead log (one CRC-checked record per commit) and
//! periodic snapshot files. One writer at a time ([`Store::begin_write`]), any number
//! of readers ([`Store::snapshot`]), group commit under [`FlushPolicy::EveryCommit`].
//! File I/O goes through the small [`io::Dir`] backend trait, so crash tests can run
//! the store on a file system that keeps written bytes apart from durable ones.
//!
//! The on-disk format, the recovery rules and what a commit guarantees under each
//! [`FlushPolicy`] are specified in `FORMAT.md` beside this module
//! (`engines/etch/src/storage/FORMAT.md`). Errors are [`StoreError`]; the engine maps
//! them to datalayer's portable kinds in one place (`crate::error`).

#[cfg(feature = "crashfs")]
pub mod crashfs;
pub mod error;
pub mod io;
pub mod snapshot;
pub mod store;
#[cfg(feature = "crashfs")]
pub mod torture;
mod wal;

pub use error::StoreError;
pub use snapshot::{RangeIter, Snapshot};
pub use store::{FlushPolicy, Store, StoreOptions, WriteTxn};
pub use wal::MAX_COMMIT_BYTES;
