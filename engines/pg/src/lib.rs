//! # datalayer-pg
//!
//! The PostgreSQL engine of datalayer, on tokio-postgres.
//!
//! - **Connections**: a deadpool pool of at most [`PgOptions::pool_size`] connections
//!   (default 10), each working in the engine's schema ([`PgOptions::schema`],
//!   `SET search_path` when it opens). A connection whose socket broke, or that was
//!   abandoned inside a transaction, is discarded and replaced (see `conn`).
//! - **Queries**: rendered to SQL once by `datalayer_sql` (see [`PgDialect`]),
//!   prepared on every connection when it opens (queries registered later: at the
//!   connection's next checkout; scan shapes: on first use), and afterwards run by id:
//!   parameters are encoded in binary straight from the values, rows decoded straight
//!   into values by the schema's column types.
//! - **Batches** ([`Engine::run_batch`], `Batch`,
//!   `insert_many`): the statements are pipelined on one connection, up to
//!   [`PgOptions::pipeline_depth`] (default 32) in flight, inside one transaction;
//!   results come back in order.
//! - **Tables**: created from the [`TableSchema`](datalayer_core::TableSchema) with
//!   their indexes (unique, composite, partial), text columns in the `C` collation
//!   (byte order, as every engine), and recorded in `_dl_catalog(name TEXT PRIMARY KEY,
//!   schema BYTEA)` (postcard) for [`Engine::catalog`].
//!   A registered schema that differs from the stored one is rejected with
//!   `InvalidInput`.
//! - **Transactions**: `READ COMMITTED` (the default), `REPEATABLE READ`, `Snapshot`
//!   (served as PostgreSQL's `REPEATABLE READ`, which is snapshot isolation) and
//!   `SERIALIZABLE`; read-only transactions (`READ ONLY`, writes rejected with
//!   `InvalidInput`); savepoints. A failed op leaves the transaction usable (each op
//!   runs inside an internal savepoint, pipelined with it). Dropping a transaction
//!   without commit rolls it back (a background task sends `ROLLBACK`, or the
//!   connection is discarded). Serialization failures and deadlocks are `Conflict`
//!   (retryable: `tx_with().retry(n)` re-runs them); see the `error` module for the
//!   SQLSTATE mapping.
//! - **Change data capture**: triggers append to `_dl_cdc_log`, so raw-SQL writes are
//!   captured too; positions are assigned in commit order so that a transaction that
//!   commits late is never skipped (see the `cdc` module docs).
//! - **Outbox**: consumers wait on `LISTEN`/`NOTIFY` (a trigger on `_dl_outbox`
//!   notifies at commit) instead of polling, and claim partitions with
//!   `FOR UPDATE SKIP LOCKED`; see [`PgDriver`].
//! - **TLS**: with the `tls` cargo feature, `sslmode=prefer|require` connects through
//!   rustls (webpki roots). Without it, only plain connections are made.
//!
//! ```no_run
//! # async fn demo() -> datalayer_core::Result<()> {
//! datalayer_pg::register();
//! let db = datalayer_core::Db::builder("postgres://postgres@127.0.0.1:5432/test?pool_size=8")
//!     .connect()
//!     .await?;
//! # let _ = db; Ok(()) }
//! ```

mod backend;
mod cdc;
pub mod config;
mod conn;
pub mod dialect;
mod error;
mod outbox;
#[cfg(feature = "tls")]
mod tls;
mod value;

pub use backend::PgBackend;
pub use config::PgOptions;
pub use dialect::PgDialect;
pub use outbox::PgDriver;

use datalayer_core::{Engine, Result};
use futures::future::BoxFuture;
use std::sync::Arc;

/// The PostgreSQL engine: the SQL family's executor over [`PgBackend`]. Cheap to clone
/// (clones share the pool).
///
/// Open it with `PgEngine::open(url)` or `PgEngine::open_with(PgOptions)` (see
/// [`datalayer_sql::SqlEngine::open`]), then hand it to
/// `Db::with_engine(Arc::new(engine))`, or call [`register`] once and use
/// `Db::builder("postgres://...")`. `engine.options()` gives the options it was opened
/// with (the password stays hidden in `Debug`).
pub type PgEngine = datalayer_sql::SqlEngine<PgBackend>;

fn opener(url: String) -> BoxFuture<'static, Result<Arc<dyn Engine>>> {
    Box::pin(async move { Ok(Arc::new(PgEngine::open(&url).await?) as Arc<dyn Engine>) })
}

/// Registers this engine for `postgres:` and `postgresql:` URLs with
/// [`datalayer_core::register_engine`], so that
/// `Db::builder("postgres://user@host/db")` opens it. Idempotent.
pub fn register() {
    datalayer_core::register_engine("postgres:", opener);
    datalayer_core::register_engine("postgresql:", opener);
}
