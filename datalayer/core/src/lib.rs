//! # datalayer-core
//!
//! The engine-independent heart of datalayer, and the bottom layer of its crates:
//! [`Value`] and column types, [`Table`] and [`TableSchema`], the typed query AST
//! ([`QueryDef`], [`Expr`]) and its access-path planner ([`plan`]), the engine contract
//! ([`Engine`], [`EngineTx`], [`Op`]/[`Output`], [`Capability`], change types, the URL
//! registry), the client API ([`Db`]/[`Tx`] with the [`Executor`] abstraction,
//! [`Repo`], [`Batch`]) and the portable [`Error`].
//!
//! Crates above it depend only downward: `datalayer-kv` (the KV family) and
//! `datalayer-sql` (the SQL family) build engines on this contract; the engines build
//! on the families; the `datalayer` facade re-exports everything.
//!
pub mod capability;
pub mod change;
pub mod db;
pub mod engine;
pub mod error;
pub mod eval;
pub mod evolve;
pub mod ext;
pub mod fence;
mod history;
mod numeric;
pub mod plan;
pub mod query;
mod rebuild;
pub mod repo;
pub mod schema;
mod schema_change;
pub mod stmt;
pub mod value;

pub use capability::Capability;
pub use change::{Change, ChangeKind, ChangeOptions};
pub use db::{
    Db, DbBuilder, EngineOpener, Executor, QueryGroup, Tx, TxBuilder, redact, register_engine,
    with_params,
};
pub use engine::{
    AUTOCOMMIT_RETRIES, Engine, EngineTx, Isolation, Op, Output, ScanRequest, TxOptions, WriteMode,
    retry_autocommit,
};
pub use error::{Error, ErrorKind, Result, STALE_VERSION};
pub use evolve::{Evolution, HistoryEntry, MigrationPlan, SchemaStep, TablePlan};
pub use fence::WriteFence;
pub use query::{
    ArithOp, CmpOp, Expr, Limit, OrderBy, ParamDef, QueryBuilder, QueryDef, QueryId, QueryKind,
    Returns, check,
};
pub use repo::{Cursor, Find, Page, Repo};
pub use schema::{
    BelongsTo, ColumnDef, IdList, IndexDef, Table, TableSchema, validate_identifier,
    validate_table_name,
};
pub use schema_change::CatalogEntry;
pub use stmt::{Batch, Stmt, decode};
pub use value::{ColumnType, ColumnValue, Key, Numeric, Row, ToValue, Value};

// The root exposes every path `#[derive(Table)]` and `#[query_group]` generate, under the
// same names as the facade (which re-exports it with `*`), so that crates below the facade
// derive with `crate = "datalayer_core"` (`tests/derive.rs` uses each construct once).

/// Re-exports used by macro-generated code; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use std::sync::OnceLock;
}
