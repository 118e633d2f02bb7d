//! # datalayer-sqlite
//!
//! The SQLite engine of datalayer, on rusqlite with the bundled SQLite.
//!
//! - **Connections**: one writer connection on its own thread and a pool of reader
//!   connections (default: one per core), each on its own thread; async callers reach
//!   them through channels. Autocommit reads of a file database run instead on the
//!   calling thread, on a read connection of that thread's own (opened at its first
//!   read; [`SqliteOptions::caller_reads`], on by default): no thread hop, which costs
//!   more than a point read. The database runs in WAL mode, so readers never block the
//!   writer and the writer never blocks readers. Opened with `journal_mode=WAL`,
//!   `synchronous=NORMAL` (or `FULL`, see [`Synchronous`]), `busy_timeout` and
//!   `foreign_keys=ON`; reader connections are `query_only`.
//! - **`sqlite::memory:`**: an in-memory database has a single connection, the writer,
//!   which also serves every read (a private `:memory:` database is visible to one
//!   connection only, and SQLite's shared-cache mode would make readers and the writer
//!   block each other with table locks).
//! - **Queries**: rendered to SQL once by `datalayer_sql` (see [`SqliteDialect`])
//!   and prepared once per connection; afterwards they are run by id: bind and step.
//! - **Tables**: created from the [`TableSchema`](datalayer_core::TableSchema) as
//!   `STRICT` tables with their indexes (unique, composite, partial), and recorded in
//!   `_dl_catalog(name TEXT PRIMARY KEY, schema BLOB)` (postcard) for
//!   [`Engine::catalog`]. A registered schema that
//!   differs from the stored one is rejected with `InvalidInput`.
//! - **Transactions**: write transactions hold the writer (`BEGIN IMMEDIATE`) until
//!   commit or rollback; read-only transactions run on a reader (`BEGIN DEFERRED`, the
//!   snapshot is taken at begin) and reject writes. Savepoints are SQL savepoints.
//!   Dropping a transaction without commit rolls it back. After a failed op the
//!   transaction stays usable (each write op runs in an internal savepoint).
//! - **Isolation**: every level that can be requested is served as serializable:
//!   writers are serialized by the single writer, and a read sees a WAL snapshot, which
//!   is a prefix of that serial history.
//! - **Change data capture**: triggers append to `_dl_cdc_log`, so raw-SQL writes are
//!   captured too (see the `cdc` module docs for the log format).
//!
//! ```no_run
//! # async fn demo() -> datalayer_core::Result<()> {
//! datalayer_sqlite::register();
//! let db = datalayer_core::Db::builder("sqlite://app.db").connect().await?;
//! # let _ = db; Ok(()) }
//! ```

mod backend;
mod cdc;
pub mod config;
mod conn;
pub mod dialect;
mod error;
mod value;

pub use backend::SqliteBackend;
pub use config::{SqliteOptions, Synchronous};
pub use dialect::SqliteDialect;

use datalayer_core::{Engine, Result};
use futures::future::BoxFuture;
use std::sync::Arc;

/// The SQLite engine: the SQL family's executor over [`SqliteBackend`]. Cheap to clone
/// (clones share the connections).
///
/// Open it with `SqliteEngine::open(url)` or `SqliteEngine::open_with(SqliteOptions)`
/// (see [`datalayer_sql::SqlEngine::open`]; opening runs on a blocking thread), then
/// hand it to `Db::with_engine(Arc::new(engine))`, or call [`register`] once and use
/// `Db::builder("sqlite://...")`.
pub type SqliteEngine = datalayer_sql::SqlEngine<SqliteBackend>;

fn opener(url: String) -> BoxFuture<'static, Result<Arc<dyn Engine>>> {
    Box::pin(async move { Ok(Arc::new(SqliteEngine::open(&url).await?) as Arc<dyn Engine>) })
}

/// Registers this engine for `sqlite:` URLs with
/// [`datalayer_core::register_engine`], so that `Db::builder("sqlite://app.db")` and
/// `Db::builder("sqlite::memory:")` open it. Idempotent.
pub fn register() {
    datalayer_core::register_engine("sqlite:", opener);
}
