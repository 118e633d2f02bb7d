//! # datalayer-tikv
//!
//! datalayer's TiKV engine: the KV family (`datalayer_kv::KvEngine`) on the real
//! `tikv-client` (0.4.0, pinned), with Percolator transactions.
//!
//! - **Binding** (`backend.rs`): [`TikvKv`], the KV family's `KvStore` over a
//!   `TransactionClient`; [`open`] and [`open_url`] make the engine.
//! - **Transactions**: snapshot isolation (reads at the start timestamp; write skew is
//!   possible, so `serializable` is not declared). Optimistic by default; pessimistic
//!   ([`TxnMode::Pessimistic`], URL `?mode=pessimistic`) locks every key as the KV
//!   family is about to write it. A dropped transaction is rolled back, never a panic.
//! - **Reads**: `batch_get` is one `KvBatchGet` per region; scans cross regions, in
//!   both directions, with the limit pushed down and paged by 1024 entries.
//! - **Retries**: the client retries region errors it can route around (`NotLeader`,
//!   `EpochNotMatch`, …); the engine retries `ServerIsBusy` with backoff
//!   ([`TikvOptions::busy_retries`]); a commit whose outcome is unknown is
//!   `CommitUnknown` and is never retried.
//! - **Namespaces**: every key is stored under the namespace prefix
//!   ([`TikvOptions::namespace`]), so engines and tests share one cluster in isolation.
//! - **Errors** (`error.rs`): every client error is mapped in one place; see that
//!   module's table.
//!
//! ```no_run
//! # async fn demo() -> datalayer_core::Result<()> {
//! datalayer_tikv::register();
//! let db = datalayer_core::Db::builder("tikv://127.0.0.1:2379?namespace=app").connect().await?;
//! # let _ = db; Ok(()) }
//! ```

mod backend;
pub mod config;
mod error;

pub use backend::{TikvKv, clear_namespace, open, open_url};
pub use config::{TikvOptions, TxnMode, parse_url};

use datalayer_core::Engine;
use std::sync::Arc;

/// The URL scheme this engine registers: `tikv:` (`tikv://pd1:2379,pd2:2379`).
pub const SCHEME: &str = "tikv:";

/// Registers this engine for `tikv:` URLs with [`datalayer_core::register_engine`], so
/// that `Db::builder("tikv://127.0.0.1:2379")` opens it (URL forms in [`parse_url`]).
/// Idempotent.
pub fn register() {
    datalayer_core::register_engine(SCHEME, |url| {
        Box::pin(async move { Ok(Arc::new(open_url(&url).await?) as Arc<dyn Engine>) })
    });
}
