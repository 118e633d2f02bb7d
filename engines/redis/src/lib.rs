//! # datalayer-redis
//!
//! datalayer's Redis engine: datalayer's data model (rows, indexes, queries,
//! savepoints, catalog, change feed, outbox) on a Redis server (7.0 or later: it needs
//! Redis Functions), through the KV family (`datalayer_kv::KvEngine`).
//!
//! - **Binding** (`backend.rs`): [`RedisKv`], the KV family's `KvStore` over one
//!   namespace of a server; [`open`] and [`open_url`] make the engine. The key layout
//!   and how transactions are validated are described there and in `README`-level terms
//!   below.
//! - **Layout**: every key of a namespace carries the hash tag `{namespace}`, so a
//!   namespace lives in one cluster slot; keys are ordered by score-0 sorted sets read
//!   with `ZRANGE … BYLEX`, so order and cursors are byte-identical to etch.
//! - **Transactions**: serializable by backward validation. Reads go to the server and
//!   record what they saw; the commit is one `FCALL` of the engine's Redis Function,
//!   which validates every read and then applies the writes atomically. A failed
//!   validation is `Conflict` (retryable); a connection lost during the commit call is
//!   `CommitUnknown`. Any number of concurrent writers. No `WATCH`: connections are
//!   multiplexed (redis-rs `ConnectionManager`).
//! - **Durability**: what an acknowledged commit survives is the server's
//!   `appendonly`/`appendfsync` setting, read at connect ([`RedisKv::durability`]):
//!   `durable` is declared when `appendonly` is on; only `appendfsync always` makes
//!   every acknowledged commit survive a crash of the machine.
//! - **Options** ([`config`]): [`RedisOptions`], set directly or from the URL
//!   (`redis://[user:password@]host:port[/db]?namespace=&pool_size=&pipeline_depth=`).
//! - **Outbox**: idle consumers wake on a Pub/Sub message that the commit function
//!   publishes when a commit emits events ([`RedisDriver`]), instead of polling.
//! - **Errors** (`error.rs`): every native error is mapped to a portable `ErrorKind` in
//!   one place; see that module's table.
//!
//! ```no_run
//! # async fn demo() -> datalayer_core::Result<()> {
//! datalayer_redis::register();
//! let db = datalayer_core::Db::builder("redis://127.0.0.1:6379?namespace=app")
//!     .connect()
//!     .await?;
//! # let _ = db; Ok(()) }
//! ```

mod backend;
pub mod config;
mod error;
mod outbox;

pub use backend::{Durability, RedisKv, destroy_namespace, open, open_url};
pub use config::RedisOptions;
pub use outbox::RedisDriver;

use datalayer_core::Engine;
use std::sync::Arc;

/// The URL scheme this engine registers: `redis:` (`redis://host:port`).
pub const SCHEME: &str = "redis:";

/// Registers this engine for `redis:` URLs with [`datalayer_core::register_engine`],
/// so that `Db::builder("redis://127.0.0.1:6379?namespace=app")` opens it (URL forms
/// in [`RedisOptions::from_url`]). Idempotent.
pub fn register() {
    datalayer_core::register_engine(SCHEME, |url| {
        Box::pin(async move { Ok(Arc::new(open_url(&url).await?) as Arc<dyn Engine>) })
    });
}
