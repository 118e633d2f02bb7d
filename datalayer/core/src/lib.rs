//! # datalayer-core
//!
//! The engine-independent heart of datalayer: [`Value`] and column types, [`Table`] and
//! [`TableSchema`], the typed query AST ([`QueryDef`], [`Expr`]), [`Db`]/[`Tx`] with the
//! [`Executor`] abstraction, [`Repo`], [`Batch`], the [`Engine`] traits with
//! [`Capability`], the portable [`Error`], and the key-value engine family ([`kv`]).
//!
//! Applications depend on the `datalayer` facade, which re-exports this crate together
//! with the derive macros and the engines picked by cargo features.

pub mod capability;
pub mod change;
pub mod db;
pub mod engine;
pub mod error;
pub mod eval;
pub mod kv;
pub mod outbox;
pub mod query;
pub mod repo;
pub mod schema;
pub mod sql;
pub mod stmt;
pub mod value;

pub use capability::Capability;
pub use change::{Change, ChangeKind, ChangeOptions};
pub use db::{
    Db, DbBuilder, EngineOpener, Executor, QueryGroup, Tx, TxBuilder, redact, register_engine,
};
pub use engine::{Engine, EngineTx, Isolation, Op, Output, ScanRequest, TxOptions, WriteMode};
pub use error::{Error, ErrorKind, Result};
pub use outbox::{ConsumerBuilder, Event, EventId, TableEvent, TableOp};
pub use query::{
    ArithOp, CmpOp, Expr, Limit, OrderBy, ParamDef, QueryBuilder, QueryDef, QueryId, QueryKind,
    Returns, check,
};
pub use repo::{Cursor, Find, Page, Repo};
pub use schema::{BelongsTo, ColumnDef, IdList, IndexDef, Table, TableSchema, validate_identifier};
pub use stmt::{Batch, Stmt, decode};
pub use value::{ColumnType, ColumnValue, Key, Row, ToValue, Value};

/// Re-exports used by macro-generated code; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use std::sync::OnceLock;
}
