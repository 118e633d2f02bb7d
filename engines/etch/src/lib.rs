//! # datalayer-etch
//!
//! datalayer's embedded engine: an in-process, ordered, transactional key-value store
//! with a write-ahead log, running datalayer's data model through the KV family
//! (`datalayer_kv::KvEngine`).
//!
//! - **Storage** ([`storage`]): the whole state in memory as a persistent B-tree, made
//!   durable by a write-ahead log (one CRC-checked record per commit, group commit)
//!   and periodic snapshot files. Its on-disk format, recovery rules and commit
//!   guarantees are in `src/storage/FORMAT.md`.
//! - **Binding** (`backend.rs`): [`EtchKv`], the KV family's `KvStore` over the store;
//!   [`open`], [`open_url`] and [`memory`] make the engine.
//! - **Transactions**: one writer at a time (a read-write transaction holds the writer
//!   lock from `begin`, bounded by [`EtchOptions::lock_timeout`]), any number of
//!   readers, each on one snapshot. Every isolation level is served as serializable.
//! - **Options** ([`config`]): [`EtchOptions`], set directly or from the URL
//!   ([`parse_url`]).
//! - **Errors** (`error.rs`): every native error is mapped to a portable `ErrorKind` in
//!   one place; see that module's table.
//!
//! ```no_run
//! # async fn demo() -> datalayer_core::Result<()> {
//! datalayer_etch::register();
//! let db = datalayer_core::Db::builder("etch://data").connect().await?;
//! # let _ = db; Ok(()) }
//! ```

mod backend;
pub mod config;
mod error;
pub mod storage;

pub use backend::{EtchKv, memory, open, open_dir, open_url};
pub use config::{EtchOptions, parse_url};
pub use storage::{FlushPolicy, StoreOptions};

use datalayer_core::Engine;
use std::sync::Arc;

/// The URL scheme this engine registers: `etch:` (`etch://<dir>`, `etch::memory:`).
pub const SCHEME: &str = "etch:";

/// Registers this engine for `etch:` URLs with [`datalayer_core::register_engine`], so
/// that `Db::builder("etch://data")` and `Db::builder("etch::memory:")` open it (URL
/// forms in [`parse_url`]). Idempotent.
pub fn register() {
    datalayer_core::register_engine(SCHEME, |url| {
        Box::pin(async move { Ok(Arc::new(open_url(&url).await?) as Arc<dyn Engine>) })
    });
}
