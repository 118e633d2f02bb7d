//! `datalayer-etch`: datalayer's embedded engine.
//!
//! - [`storage`]: the embedded, ordered, transactional key-value store with a
//!   write-ahead log (its on-disk format in `src/storage/FORMAT.md`).
//! - [`kv`]: its binding to the KV family (`datalayer_kv::KvStore`), on which
//!   `datalayer_kv::KvEngine` runs the data model.

pub mod kv;
pub mod storage;

pub use storage::{FlushPolicy, StoreOptions};
