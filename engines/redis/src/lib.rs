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
//! - **Redis Cluster** (`redis+cluster://h1:p1,h2:p2?namespace=`): through redis-rs'
//!   cluster client (`conn.rs`), which learns the slot map from the seed nodes, routes
//!   every command by its key's hash slot and follows `MOVED`/`ASK` by itself (Redis
//!   Cluster specification,
//!   redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec). Since a
//!   namespace is one slot, every read, `MULTI` and commit `FCALL` of a namespace goes
//!   to the one primary that owns it and runs exactly as on a single server (a
//!   namespace is bounded by one node's memory; spread load with many namespaces). The
//!   function library is loaded on every primary at connect, and again when a node
//!   answers that it lacks it (a new or failed-over primary). [`destroy_namespace`]
//!   scans the owning node. The outbox driver subscribes on a seed node: a classic
//!   `PUBLISH` reaches every node. `CLUSTERDOWN`/`TRYAGAIN` left after the client's
//!   retries are `ConnectionLost` (retryable). Replicas are not read from.
//! - **TLS** (`rediss://`, `rediss+cluster://`; cargo feature `tls`, rustls with the
//!   ring provider, no system OpenSSL): the server's certificate is verified against
//!   the system's roots, or the CA file named by `ca_file=`. Without the feature the
//!   TLS schemes fail with `Unsupported`, naming the feature. Client certificates
//!   (mutual TLS) and skipping verification are not offered.
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
//!   (`redis://[user:password@]host:port[/db]?namespace=&pool_size=&pipeline_depth=`,
//!   `redis+cluster://[user:password@]h1:p1,h2:p2?…`, `rediss://…&ca_file=`).
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
//! # let _ = db;
//! let cluster = datalayer_core::Db::builder(
//!     "redis+cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000?namespace=app",
//! )
//! .connect()
//! .await?;
//! # let _ = cluster; Ok(()) }
//! ```

mod backend;
pub mod config;
mod conn;
mod error;
mod outbox;

pub use backend::{Durability, RedisKv, destroy_namespace, open, open_url};
pub use config::RedisOptions;
pub use outbox::RedisDriver;

use datalayer_core::Engine;
use std::sync::Arc;

/// The main URL scheme of this engine: `redis:` (`redis://host:port`).
pub const SCHEME: &str = "redis:";

/// Every URL scheme this engine registers: `redis:` (one server), `rediss:` (one
/// server over TLS), `redis+cluster:` (a Redis Cluster) and `rediss+cluster:` (a
/// Redis Cluster over TLS). The TLS schemes are registered in every build; without
/// the cargo feature `tls` opening them fails with `Unsupported`, naming the feature.
pub const SCHEMES: [&str; 4] = ["redis:", "rediss:", "redis+cluster:", "rediss+cluster:"];

/// Registers this engine for the URL schemes of [`SCHEMES`] with
/// [`datalayer_core::register_engine`], so that
/// `Db::builder("redis://127.0.0.1:6379?namespace=app")` or
/// `Db::builder("redis+cluster://10.0.0.1:7000,10.0.0.2:7000?namespace=app")` opens it
/// (URL forms in [`RedisOptions::from_url`]). Idempotent.
pub fn register() {
    for scheme in SCHEMES {
        datalayer_core::register_engine(scheme, |url| {
            Box::pin(async move { Ok(Arc::new(open_url(&url).await?) as Arc<dyn Engine>) })
        });
    }
}
