//! The engine contract: what every storage engine implements.
//!
//! `Engine` and `EngineTx` are object-safe (`async_trait`), so a [`crate::Db`] holds an
//! `Arc<dyn Engine>` picked by URL at run time. Work reaches an engine as [`Op`] values:
//! a registered query, or one of the repository operations. The two engine families
//! implement these traits once each: `datalayer_kv::KvEngine` over any ordered transactional
//! key-value store, and the SQL engines over `datalayer_sql`.

use crate::capability::Capability;
use crate::error::{Error, Result};
use crate::query::QueryDef;
use crate::schema::TableSchema;
use crate::value::{Row, Value};
use async_trait::async_trait;
use std::ops::Bound;

/// Transaction isolation levels (ANSI SQL-92 names, plus snapshot isolation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// Each statement sees data committed before it started.
    ReadCommitted,
    /// Rows read once read the same again (PostgreSQL: snapshot per transaction).
    RepeatableRead,
    /// One snapshot for the whole transaction; write-write conflicts abort.
    Snapshot,
    /// Equivalent to some serial order of the committed transactions.
    Serializable,
}

/// Options for one transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxOptions {
    /// Requested isolation level; `None` = the engine's default. Requesting a level the
    /// engine does not declare is `Unsupported`.
    pub isolation: Option<Isolation>,
    /// The transaction only reads; writes in it fail with `InvalidInput` where the
    /// engine declares `read_only_tx`.
    pub read_only: bool,
}

/// Insert or upsert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Fail with `AlreadyExists` when the primary key exists.
    Insert,
    /// Replace the row when the primary key exists.
    Upsert,
}

/// A keyset scan over the primary key or one secondary index.
///
/// Rows come in index order (index columns, then primary-key columns), reversed if
/// `reverse`. `prefix` fixes the leading index columns by equality; `lower`/`upper`
/// bound the next column; `after` continues strictly after a position (the index column
/// values followed by the primary-key values of the last row seen, in scan direction).
#[derive(Clone, Debug)]
pub struct ScanRequest<'a> {
    /// The table.
    pub table: &'a TableSchema,
    /// Position of the index in `table.indexes`; `None` = primary-key order.
    pub index: Option<usize>,
    /// Equality values for the leading columns of the index.
    pub prefix: Row,
    /// Lower bound on the column after the prefix.
    pub lower: Bound<Value>,
    /// Upper bound on the column after the prefix.
    pub upper: Bound<Value>,
    /// Keyset cursor: continue after this position (see above).
    pub after: Option<Row>,
    /// Scan in descending order.
    pub reverse: bool,
    /// At most this many rows.
    pub limit: Option<usize>,
}

impl<'a> ScanRequest<'a> {
    /// The columns the scan walks: the index's columns, or the primary key.
    ///
    /// # Errors
    /// `InvalidInput` for an index position out of range.
    pub fn columns(&self) -> crate::Result<&'a [usize]> {
        let t: &'a TableSchema = self.table;
        match self.index {
            Some(i) => t
                .indexes
                .get(i)
                .map(|ix| ix.columns.as_slice())
                .ok_or_else(|| crate::Error::invalid_input("index out of range")),
            None => Ok(&t.primary_key),
        }
    }

    /// The request with every value converted to its column's type: the prefix to the
    /// leading columns, the bounds to the column after the prefix, the cursor to the
    /// index columns then the primary key. Every engine normalises a scan this way
    /// before building keys or binding parameters.
    ///
    /// # Errors
    /// `InvalidInput` for an index out of range, more prefix values than columns, a
    /// cursor of the wrong length, or a value that does not fit its column.
    pub fn coerce(self) -> crate::Result<ScanRequest<'a>> {
        let t = self.table;
        let cols = self.columns()?;
        let prefix = t.coerce_values(cols, self.prefix)?;
        let next_ty = cols.get(prefix.len()).map(|&c| t.columns[c].ty);
        let bound = |b: Bound<Value>| -> crate::Result<Bound<Value>> {
            Ok(match (b, next_ty) {
                (Bound::Included(v), Some(ty)) => Bound::Included(v.coerce(ty)?),
                (Bound::Excluded(v), Some(ty)) => Bound::Excluded(v.coerce(ty)?),
                _ => Bound::Unbounded,
            })
        };
        let (lower, upper) = (bound(self.lower)?, bound(self.upper)?);
        let after = match self.after {
            None => None,
            Some(pos) if self.index.is_none() => Some(t.coerce_key(pos)?),
            Some(mut pos) => {
                if pos.len() != cols.len() + t.primary_key.len() {
                    return Err(crate::Error::invalid_input(
                        "cursor does not belong to this index",
                    ));
                }
                let pk = pos.split_off(cols.len());
                let mut v = t.coerce_values(cols, pos)?;
                v.extend(t.coerce_key(pk)?);
                Some(v)
            }
        };
        Ok(ScanRequest {
            prefix,
            lower,
            upper,
            after,
            ..self
        })
    }
}

/// One unit of work sent to an engine.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Op<'a> {
    /// A registered query with its parameters.
    Query {
        /// The query.
        query: &'a QueryDef,
        /// Parameter values, in declaration order.
        params: &'a [Value],
    },
    /// Insert or upsert rows (column order). Output: `Count` of rows written.
    Insert {
        /// The table.
        table: &'a TableSchema,
        /// The rows.
        rows: Vec<Row>,
        /// Insert or upsert.
        mode: WriteMode,
    },
    /// Replace rows by primary key. Output: `Count` of rows that existed and were replaced.
    /// On a table with a version column ([`TableSchema::version`]), a row is replaced
    /// only where the stored version equals the row's, and is stored at the row's
    /// version + 1; a row at another version is not counted (optimistic locking).
    Update {
        /// The table.
        table: &'a TableSchema,
        /// The new rows.
        rows: Vec<Row>,
    },
    /// Delete rows by primary key. Output: `Count` of rows deleted.
    Delete {
        /// The table.
        table: &'a TableSchema,
        /// Primary keys.
        keys: Vec<Row>,
    },
    /// Read rows by primary key. Output: `Optional`, one entry per key, in order.
    Get {
        /// The table.
        table: &'a TableSchema,
        /// Primary keys.
        keys: Vec<Row>,
    },
    /// A keyset scan. Output: `Rows`.
    Scan(ScanRequest<'a>),
    /// Count all rows of a table. Output: `Count`.
    Count {
        /// The table.
        table: &'a TableSchema,
    },
}

impl Op<'_> {
    /// The table the op reads or writes.
    pub fn table(&self) -> &TableSchema {
        match self {
            Op::Query { query, .. } => query.table,
            Op::Insert { table, .. }
            | Op::Update { table, .. }
            | Op::Delete { table, .. }
            | Op::Get { table, .. }
            | Op::Count { table } => table,
            Op::Scan(r) => r.table,
        }
    }

    /// A short name for tracing (`query`, `insert`, ...).
    pub fn name(&self) -> &str {
        match self {
            Op::Query { query, .. } => &query.name,
            Op::Insert { .. } => "insert",
            Op::Update { .. } => "update",
            Op::Delete { .. } => "delete",
            Op::Get { .. } => "get",
            Op::Scan(_) => "scan",
            Op::Count { .. } => "count",
        }
    }

    /// The op checked and coerced against its table, as [`crate::Db`] and [`crate::Tx`]
    /// hand it to an engine, so that no engine repeats the checks: rows fit the table
    /// ([`TableSchema::check_row`]), keys are full primary keys of the key columns' types
    /// ([`TableSchema::coerce_key`]), a scan is coerced ([`ScanRequest::coerce`]), a
    /// query gets as many parameters as it declares and a parameter limit is a
    /// non-negative integer.
    ///
    /// # Errors
    /// `InvalidInput` naming the table (or query), the column and the offending value.
    pub fn checked(self) -> Result<Self> {
        let each = |rows: Vec<Row>, f: fn(&TableSchema, Row) -> Result<Row>, t: &TableSchema| {
            rows.into_iter()
                .map(|r| f(t, r))
                .collect::<Result<Vec<_>>>()
        };
        Ok(match self {
            Op::Query { query, params } => {
                query.check_params(params)?;
                Op::Query { query, params }
            }
            Op::Insert { table, rows, mode } => Op::Insert {
                rows: each(rows, TableSchema::check_row, table)?,
                table,
                mode,
            },
            Op::Update { table, rows } => Op::Update {
                rows: each(rows, TableSchema::check_row, table)?,
                table,
            },
            Op::Delete { table, keys } => Op::Delete {
                keys: each(keys, TableSchema::coerce_key, table)?,
                table,
            },
            Op::Get { table, keys } => Op::Get {
                keys: each(keys, TableSchema::coerce_key, table)?,
                table,
            },
            Op::Scan(req) => Op::Scan(req.coerce()?),
            op @ Op::Count { .. } => op,
        })
    }

    /// Whether the op only reads.
    pub fn is_read(&self) -> bool {
        match self {
            Op::Query { query, .. } => matches!(
                query.kind,
                crate::query::QueryKind::Select { .. } | crate::query::QueryKind::Count
            ),
            Op::Get { .. } | Op::Scan(_) | Op::Count { .. } => true,
            _ => false,
        }
    }
}

/// The result of one [`Op`].
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Rows (a select or a scan). A select with a projection returns one-value rows.
    Rows(Vec<Row>),
    /// One entry per requested key (`Op::Get`).
    Optional(Vec<Option<Row>>),
    /// A count: rows matched (`Count`) or affected (writes).
    Count(u64),
}

impl Output {
    /// The number of rows returned or affected, for tracing.
    pub fn rows(&self) -> u64 {
        match self {
            Output::Rows(r) => r.len() as u64,
            Output::Optional(r) => r.iter().filter(|r| r.is_some()).count() as u64,
            Output::Count(n) => *n,
        }
    }
}

/// How many times an autocommit op (or engine batch) is re-run after a `Conflict`
/// before the conflict is returned: the one autocommit retry policy of every engine.
pub const AUTOCOMMIT_RETRIES: u32 = 8;

/// Runs `attempt` and re-runs it on `Conflict`, at most [`AUTOCOMMIT_RETRIES`] times,
/// after an exponential backoff with jitter (1 ms, doubling, at most 64 ms between
/// tries: about 0.25 s in all), so that a conflict with a transaction that holds locks
/// for a while (TiKV's pessimistic locks, a lock being resolved) is outwaited rather
/// than hit again at once. Only for autocommit work, where a conflict means nothing
/// was applied; never re-runs any other error (`CommitUnknown` above all). Backoff by
/// the `backon` crate.
///
/// # Errors
/// The last attempt's error.
pub async fn retry_autocommit<T, F, Fut>(attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    use backon::{ExponentialBuilder, Retryable};
    let policy = ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(1))
        .with_max_delay(std::time::Duration::from_millis(64))
        .with_max_times(AUTOCOMMIT_RETRIES as usize)
        .with_jitter();
    attempt
        .retry(policy)
        .sleep(tokio::time::sleep)
        .when(crate::Error::is_conflict)
        .await
}

/// A storage engine: what etch, SQLite, PostgreSQL, Redis and TiKV implement (the KV
/// engines through `datalayer_kv::KvEngine`), and what [`crate::Db`] runs on.
///
/// # Behavior
/// - `run` executes one op atomically outside any explicit transaction (autocommit).
/// - `run_batch` executes the ops in order as ONE atomic unit and returns their outputs
///   in order; on error nothing of the batch is kept.
/// - Every op and method either works or returns `Unsupported`; none is a silent no-op.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Short engine name (`etch`, `sqlite`, `postgres`, `redis`, `tikv`).
    fn name(&self) -> &'static str;
    /// What the engine supports.
    fn capability(&self) -> Capability;
    /// Creates (if missing) the tables and indexes, and prepares the queries. Called
    /// once at start-up with everything the application registered; engines must also
    /// accept queries first seen later (prepared on first use).
    ///
    /// # Errors
    /// `InvalidInput` for a schema that fails validation or differs from the stored one.
    async fn register(&self, tables: &[&TableSchema], queries: &[&QueryDef]) -> Result<()>;
    /// Runs one op atomically.
    ///
    /// # Errors
    /// The kinds listed on [`crate::Executor`], classified as in [`crate::error`]; a
    /// `Conflict` only after the autocommit re-runs ([`AUTOCOMMIT_RETRIES`]).
    async fn run(&self, op: Op<'_>) -> Result<Output>;
    /// Runs ops in order, atomically.
    ///
    /// # Errors
    /// As [`Engine::run`], for the first failing op; nothing of the batch is kept.
    async fn run_batch(&self, ops: Vec<Op<'_>>) -> Result<Vec<Output>>;
    /// Begins a transaction. `opts` has passed [`Capability::check_tx`] (the client API
    /// checks it once, before any engine sees it).
    ///
    /// # Errors
    /// `Timeout` when the engine cannot start a transaction in time; `ConnectionLost`
    /// for an unreachable server.
    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn EngineTx>>;
    /// The table schemas stored by the engine (its catalog), for migration.
    ///
    /// # Errors
    /// `Corrupted` for a catalog entry that cannot be decoded; `ConnectionLost` or
    /// `Timeout` for an unreachable server.
    async fn catalog(&self) -> Result<Vec<TableSchema>>;

    /// Applies the safe steps of `plan` ([`crate::TablePlan::is_safe`]) to the stored
    /// table `plan.from`, leaving it stored as `plan.to` (catalog included). Index
    /// additions are built online where the engine can (PostgreSQL `CREATE INDEX
    /// CONCURRENTLY`; the KV family backfills in chunked transactions); a unique index
    /// that stored rows violate fails with `AlreadyExists` naming their values, and
    /// leaves the table as it was. Called by [`crate::Db`] with a validated plan.
    ///
    /// # Errors
    /// `Unsupported` where the engine cannot (the default); `AlreadyExists` as above;
    /// the engine's own errors.
    async fn alter_table(&self, plan: &crate::TablePlan) -> Result<()> {
        let _ = plan;
        Err(Error::unsupported(self.name(), "schema evolution"))
    }

    /// Drops the table `name` with its rows, indexes, catalog entry and change
    /// capture; nothing when there is no such table. For destructive schema changes,
    /// which copy a table to a new one and drop the old.
    ///
    /// # Errors
    /// `Unsupported` where the engine cannot (the default); the engine's own errors.
    async fn drop_table(&self, name: &str) -> Result<()> {
        let _ = name;
        Err(Error::unsupported(self.name(), "dropping a table"))
    }
    /// Flushes and closes; later calls fail.
    ///
    /// # Errors
    /// `Io` when the final flush fails; `Engine` when a connection does not close
    /// cleanly.
    async fn close(&self) -> Result<()>;

    /// Installs change capture on `table` (idempotent). Needs `Capability::change_feed`.
    ///
    /// # Errors
    /// `Unsupported` without `Capability::change_feed` (the default); `NotFound` for an
    /// unknown table.
    async fn enable_changes(&self, table: &str) -> Result<()> {
        let _ = table;
        Err(crate::Error::unsupported(
            self.name(),
            "change data capture",
        ))
    }
    /// Up to `limit` changes of `table` after position `after`, in commit order.
    ///
    /// # Errors
    /// `Unsupported` without `Capability::change_feed` (the default); `NotFound` for an
    /// unknown table; `Corrupted` for an undecodable change record.
    async fn read_changes(
        &self,
        table: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<crate::change::Change>> {
        let _ = (table, after, limit);
        Err(crate::Error::unsupported(
            self.name(),
            "change data capture",
        ))
    }
    /// Deletes changes of `table` up to and including `upto`; returns how many.
    ///
    /// # Errors
    /// `Unsupported` without `Capability::change_feed` (the default).
    async fn trim_changes(&self, table: &str, upto: u64) -> Result<u64> {
        let _ = (table, upto);
        Err(crate::Error::unsupported(
            self.name(),
            "change data capture",
        ))
    }

    /// An engine-specific service that a layer above core asks for by type, so that
    /// core need not know that layer: the outbox asks for an
    /// `Arc<dyn datalayer_outbox::Driver>` (pg answers with its LISTEN/NOTIFY driver).
    /// Returns a `Box` holding a value of the type whose [`TypeId`](std::any::TypeId)
    /// is `ty`, or `None` when the engine offers no such service (the caller then uses
    /// its generic path). Default: `None` for every type.
    fn extension(&self, ty: std::any::TypeId) -> Option<Box<dyn std::any::Any + Send>> {
        let _ = ty;
        None
    }
}

/// An open transaction.
///
/// # Behavior
/// - Dropping it without `commit` MUST roll it back (synchronously or by handing the
///   rollback to a background task); nothing of it becomes visible.
/// - After an error inside the transaction, the transaction stays usable where the
///   engine allows (SQL engines wrap each op in an internal savepoint when needed).
/// - Savepoint names are validated identifiers; `rollback_to` an unknown name is
///   `NotFound`. Engines without `Capability::savepoints` return `Unsupported`.
#[async_trait]
pub trait EngineTx: Send {
    /// Runs one op inside the transaction.
    ///
    /// # Errors
    /// The kinds listed on [`crate::Executor`]; `InvalidInput` for a write in a read-only
    /// transaction. Never retried inside the transaction.
    async fn run(&mut self, op: Op<'_>) -> Result<Output>;
    /// Runs ops in order inside the transaction (pipelined where the engine can).
    ///
    /// # Errors
    /// As [`EngineTx::run`], for the first failing op.
    async fn run_batch(&mut self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(self.run(op).await?);
        }
        Ok(out)
    }
    /// Creates a savepoint.
    ///
    /// # Errors
    /// `Unsupported` without `Capability::savepoints` ([`crate::Tx`] checks the
    /// capability and the name before calling); a server's `ConnectionLost`.
    async fn savepoint(&mut self, name: &str) -> Result<()>;
    /// Undoes everything since the savepoint (which stays, as in SQL).
    ///
    /// # Errors
    /// `NotFound` for an unknown savepoint; as [`EngineTx::savepoint`].
    async fn rollback_to(&mut self, name: &str) -> Result<()>;
    /// Forgets the savepoint (and any after it), keeping the changes.
    ///
    /// # Errors
    /// `NotFound` for an unknown savepoint; as [`EngineTx::savepoint`].
    async fn release(&mut self, name: &str) -> Result<()>;
    /// Commits.
    ///
    /// # Errors
    /// `Conflict` for a serialization failure or write conflict; `ConnectionLost` when
    /// the connection broke before the commit was sent; `CommitUnknown` when it broke
    /// after (see [`crate::Error::at_commit`]); `Io` when the log cannot be written.
    async fn commit(self: Box<Self>) -> Result<()>;
    /// Rolls back.
    ///
    /// # Errors
    /// `ConnectionLost` when the connection is gone (the server rolls back by itself).
    async fn rollback(self: Box<Self>) -> Result<()>;
}
