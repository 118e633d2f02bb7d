//! `datalayer-etch`: the storage layer of datalayer's embedded engine.
//!
//! An embedded, ordered, transactional key-value store: the whole state lives in
//! memory as a persistent B-tree ([`Snapshot`], O(1) to clone), made durable by a
//! write-ahead log (one CRC-checked record per commit) and periodic snapshot files.
//! One writer at a time ([`Store::begin_write`]), any number of readers
//! ([`Store::snapshot`]), group commit under [`FlushPolicy::EveryCommit`].
//!
//! The on-disk format, the recovery rules and what a commit guarantees under each
//! [`FlushPolicy`] are specified in `FORMAT.md` beside this crate.

pub mod error;
pub mod io;
pub mod kv;
pub mod snapshot;
pub mod store;
mod wal;

pub use error::StoreError;
pub use snapshot::{RangeIter, Snapshot};
pub use store::{FlushPolicy, Store, StoreOptions, WriteTxn};
