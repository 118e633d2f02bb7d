//! # datalayer-sqlite
//!
//! The SQLite engine of datalayer, on rusqlite with the bundled SQLite.
//!
//! - **Connections**: one writer connection on its own thread and a pool of reader
//!   connections (default: one per core), each on its own thread; async callers reach
//!   them through channels. The database runs in WAL mode, so readers never block the
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
mod core;
mod error;
pub mod render;
mod value;

pub use config::{SqliteOptions, Synchronous};
pub use render::SqliteDialect;

use backend::{CATALOG_DDL, Inner};
use datalayer_core::{Engine, Error, Result};
use futures::future::BoxFuture;
use rusqlite::{Connection, OpenFlags};
use std::sync::Arc;

/// The SQLite engine. Cheap to clone (clones share the connections).
///
/// Open it with [`SqliteEngine::open`] (a URL) or [`SqliteEngine::open_with`], then hand
/// it to `Db::with_engine(Arc::new(engine))`, or call [`register`] once and use
/// `Db::builder("sqlite://...")`.
#[derive(Clone)]
pub struct SqliteEngine {
    inner: Arc<Inner>,
    options: Arc<SqliteOptions>,
}

impl std::fmt::Debug for SqliteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEngine")
            .field("options", &self.options)
            .finish()
    }
}

impl SqliteEngine {
    /// Opens the database named by `url` (`sqlite://path/to/file.db`,
    /// `sqlite::memory:`; see [`SqliteOptions::from_url`] for parameters).
    ///
    /// # Errors
    /// `InvalidInput` for a malformed URL; `Io` when the file cannot be opened or
    /// created; `Corrupted` when it is not a SQLite database.
    pub async fn open(url: &str) -> Result<SqliteEngine> {
        Self::open_with(SqliteOptions::from_url(url)?).await
    }

    /// Opens a database with `options`. Opening runs on a blocking thread.
    ///
    /// # Errors
    /// As [`SqliteEngine::open`].
    pub async fn open_with(options: SqliteOptions) -> Result<SqliteEngine> {
        let o = options.clone();
        let pool = tokio::task::spawn_blocking(move || open_pool(&o))
            .await
            .map_err(|e| {
                Error::engine("join", format!("opening the sqlite database panicked: {e}"))
            })??;
        Ok(SqliteEngine {
            inner: Arc::new(Inner::new(pool, !options.is_memory())),
            options: Arc::new(options),
        })
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.options
    }
}

fn open_pool(o: &SqliteOptions) -> Result<core::Pool> {
    let map = error::map_err;
    let Some(path) = &o.path else {
        let w = Connection::open_in_memory().map_err(map)?;
        w.pragma_update(None, "foreign_keys", true).map_err(map)?;
        w.execute_batch(CATALOG_DDL).map_err(map)?;
        return core::Pool::start(w, Vec::new(), o.busy_timeout);
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let w =
        Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_CREATE).map_err(map)?;
    w.busy_timeout(o.busy_timeout).map_err(map)?;
    let mode: String = w
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(map)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::engine(
            "journal_mode",
            format!("could not switch {path:?} to WAL mode (got {mode})"),
        ));
    }
    let sync = match o.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    w.pragma_update(None, "synchronous", sync).map_err(map)?;
    w.pragma_update(None, "foreign_keys", true).map_err(map)?;
    w.execute_batch(CATALOG_DDL).map_err(map)?;
    let mut readers = Vec::new();
    for _ in 0..o.readers.max(1) {
        let r = Connection::open_with_flags(path, flags).map_err(map)?;
        r.busy_timeout(o.busy_timeout).map_err(map)?;
        r.pragma_update(None, "foreign_keys", true).map_err(map)?;
        r.pragma_update(None, "query_only", true).map_err(map)?;
        readers.push(r);
    }
    core::Pool::start(w, readers, o.busy_timeout)
}

fn opener(url: String) -> BoxFuture<'static, Result<Arc<dyn Engine>>> {
    Box::pin(async move { Ok(Arc::new(SqliteEngine::open(&url).await?) as Arc<dyn Engine>) })
}

/// Registers this engine for `sqlite:` URLs with
/// [`datalayer_core::register_engine`], so that `Db::builder("sqlite://app.db")` and
/// `Db::builder("sqlite::memory:")` open it. Idempotent.
pub fn register() {
    datalayer_core::register_engine("sqlite:", opener);
}
