//! # datalayer
//!
//! Declare tables and queries once, in Rust, and run them unchanged on five storage
//! engines: the embedded write-ahead-log store **etch** (the default), **SQLite**,
//! **PostgreSQL**, **Redis** and **TiKV**.
//!
//! This facade re-exports [`datalayer_core`] (values, schemas, the query AST, `Db`,
//! `Tx`, `Repo`, `Batch`, errors), the derive macros, and one module per engine enabled
//! by cargo features. Open a database with [`connect`] or [`builder`].

pub use datalayer_core::*;
/// The key-value engine family (etch, Redis, TiKV): see [`datalayer_kv`].
pub use datalayer_kv as kv;
pub use datalayer_macros::{DbEnum, Table, query_group};
/// Live migration between any two engines: see [`datalayer_migrate`].
pub use datalayer_migrate as migrate;
/// The transactional outbox: see [`datalayer_outbox`].
pub use datalayer_outbox as outbox;
pub use datalayer_outbox::{
    BuilderOutbox, ConsumerBuilder, DbOutbox, Event, EventId, TableEvent, TxOutbox,
};
/// The SQL engine family (SQLite, PostgreSQL): see [`datalayer_sql`].
pub use datalayer_sql as sql;

/// What an application imports to use everything on [`Db`] and [`Tx`]: the derive
/// macros, the core types, and the outbox's extension traits (`tx.emit(..)`,
/// `db.consumer(..)`), which live in a crate above core.
///
/// ```
/// use datalayer::prelude::*;
/// ```
pub mod prelude {
    pub use datalayer_core::{
        Batch, Db, Error, ErrorKind, Executor, Isolation, Repo, Result, Table, Tx,
    };
    pub use datalayer_macros::{DbEnum, Table, query_group};
    pub use datalayer_outbox::{BuilderOutbox as _, DbOutbox as _, TxOutbox as _};
}

/// The embedded write-ahead-log engine (feature `etch`, on by default).
#[cfg(feature = "etch")]
pub use datalayer_etch as etch;

/// The SQLite engine (feature `sqlite`, on by default).
#[cfg(feature = "sqlite")]
pub use datalayer_sqlite as sqlite;

/// The PostgreSQL engine (feature `postgres`).
#[cfg(feature = "postgres")]
pub use datalayer_pg as pg;

/// The Redis engine (feature `redis`, on by default).
#[cfg(feature = "redis")]
pub use datalayer_redis as redis;
/// The TiKV engine (feature `tikv`, off by default: a heavy build).
#[cfg(feature = "tikv")]
pub use datalayer_tikv as tikv;

/// Registers every engine compiled into this build with the URL registry (idempotent).
pub fn install_engines() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(feature = "etch")]
        datalayer_etch::register();
        #[cfg(feature = "sqlite")]
        datalayer_sqlite::register();
        #[cfg(feature = "postgres")]
        datalayer_pg::register();
        #[cfg(feature = "redis")]
        datalayer_redis::register();
        #[cfg(feature = "tikv")]
        datalayer_tikv::register();
    });
}

/// A [`DbBuilder`] for `url`, with every compiled-in engine registered. Add tables and
/// query groups, then `.connect().await`.
///
/// URLs: `etch://<dir>` or `etch::memory:`; `sqlite://<file>` or `sqlite::memory:`;
/// `postgres://user@host:port/db`;
/// `redis://[user:password@]host:port[/db]?namespace=<ns>`; `tikv://pd1:2379,pd2:2379`.
pub fn builder(url: impl Into<String>) -> DbBuilder {
    install_engines();
    Db::builder(url)
}

/// Opens `url` with no tables registered (they can be registered later by building
/// again, or used through an engine's catalog).
///
/// # Errors
/// As [`DbBuilder::connect`].
pub async fn connect(url: impl Into<String>) -> Result<Db> {
    builder(url).connect().await
}
