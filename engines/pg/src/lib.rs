//! # datalayer-pg
//!
//! The PostgreSQL engine of datalayer, on tokio-postgres.
//!
//! - **Connections**: a deadpool pool of at most [`PgOptions::pool_size`] connections
//!   (default 10), each working in the engine's schema ([`PgOptions::schema`],
//!   `SET search_path` when it opens). A connection whose socket broke, or that was
//!   abandoned inside a transaction, is discarded and replaced (see `core`).
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
mod core;
mod error;
mod outbox;
pub mod render;
#[cfg(feature = "tls")]
mod tls;
mod value;

pub use config::PgOptions;
pub use outbox::PgDriver;
pub use render::PgDialect;

use backend::Inner;
use datalayer_core::{Engine, Result};
use futures::future::BoxFuture;
use std::sync::Arc;

/// The PostgreSQL engine. Cheap to clone (clones share the pool).
///
/// Open it with [`PgEngine::open`] (a URL) or [`PgEngine::open_with`], then hand it to
/// `Db::with_engine(Arc::new(engine))`, or call [`register`] once and use
/// `Db::builder("postgres://...")`.
#[derive(Clone)]
pub struct PgEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEngine")
            .field("options", &self.inner.options)
            .finish()
    }
}

impl PgEngine {
    /// Connects to the server named by `url` (`postgres://user@host:port/db`; see
    /// [`PgOptions::from_url`] for parameters).
    ///
    /// # Errors
    /// `InvalidInput` for a malformed URL; `ConnectionLost` when the server cannot be
    /// reached; `Timeout` when connecting takes longer than `connect_timeout_ms`;
    /// `Engine` (with the SQLSTATE) when the server refuses (authentication, unknown
    /// database).
    pub async fn open(url: &str) -> Result<PgEngine> {
        Self::open_with(PgOptions::from_url(url)?).await
    }

    /// Connects with `options`: opens one connection, creates the schema (when one is
    /// named) and the catalog table.
    ///
    /// # Errors
    /// As [`PgEngine::open`].
    pub async fn open_with(options: PgOptions) -> Result<PgEngine> {
        let inner = Arc::new(Inner::new(Arc::new(options))?);
        inner.init().await?;
        Ok(PgEngine { inner })
    }

    /// The options the engine was opened with (the password stays hidden in `Debug`).
    pub fn options(&self) -> &PgOptions {
        &self.inner.options
    }
}

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
