//! `Db`, transactions and the executor abstraction shared by both.

use crate::capability::Capability;
use crate::engine::{Engine, EngineTx, Isolation, Op, Output, TxOptions};
use crate::error::{Error, Result};
use crate::evolve::Evolution;
use crate::fence::{WriteFence, WriteGate, WritePermit};
use crate::query::QueryDef;
use crate::repo::Repo;
use crate::schema::{Table, TableSchema, validate_identifier};
use async_trait::async_trait;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{Instrument, Span, field};

/// Something queries run on: a [`Db`] (each call atomic on its own) or a [`Tx`].
/// Generated query methods and [`Repo`] take any executor.
///
/// # Errors
/// What running any op can fail with, on every engine. The methods built on an
/// executor ([`Repo`], [`Stmt::run`](crate::Stmt::run), [`Batch::run`](crate::Batch::run),
/// generated query methods) refer to this list and name only what they add.
/// - `InvalidInput`: the op does not fit its table or query ([`Op::checked`]: a row of
///   the wrong arity or types, NULL in a non-nullable column, a key of the wrong arity,
///   a wrong number of query parameters, a negative limit parameter), a row over
///   [`Capability::max_value_bytes`], a write in a read-only transaction, or arithmetic
///   overflow in an update (engines that evaluate updates themselves, the KV family).
/// - `AlreadyExists`: a write violates the primary key or a unique index.
/// - `Conflict` (retryable): a write conflict or serialization failure. On a `Db`,
///   autocommit work is re-run up to [`AUTOCOMMIT_RETRIES`](crate::AUTOCOMMIT_RETRIES)
///   times before the conflict is returned; in a `Tx`, re-run the whole transaction
///   ([`TxBuilder::retry`]).
/// - `Timeout` (retryable): the engine could not start the work in time (etch: a write
///   waits for the single writer lock, which an open `Tx` holds; server engines: a
///   free connection).
/// - `ConnectionLost` (retryable): a server engine's connection broke before a commit was
///   sent; nothing was applied.
/// - `CommitUnknown` (never retried): on a `Db`, a server engine lost the connection
///   while committing an autocommit write; it may or may not be applied.
/// - `Corrupted`: stored bytes failed a checksum or could not be decoded.
/// - `Io`, `Engine`: an operating-system error, or another native engine error (its code
///   in [`Error::code`]).
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs one op.
    ///
    /// # Errors
    /// See the [trait docs](Executor#errors).
    async fn run(&self, op: Op<'_>) -> Result<Output>;
    /// Runs ops in order as one atomic unit (on a `Db`) or inside the transaction.
    ///
    /// # Errors
    /// The first failing op's error (see the [trait docs](Executor#errors)); on a `Db`
    /// nothing of the batch is kept.
    async fn run_batch(&self, ops: Vec<Op<'_>>) -> Result<Vec<Output>>;
    /// The engine's capabilities.
    fn capability(&self) -> Capability;
    /// The engine's name.
    fn engine_name(&self) -> &'static str;
}

/// Opens an engine from a URL. Engines register one per URL scheme with
/// [`register_engine`]; the `datalayer` facade registers every engine compiled in.
pub type EngineOpener = fn(String) -> BoxFuture<'static, Result<Arc<dyn Engine>>>;

static OPENERS: parking_lot::RwLock<Vec<(&'static str, EngineOpener)>> =
    parking_lot::RwLock::new(Vec::new());

/// Registers `opener` for URLs starting with `prefix` (`"etch:"`, `"sqlite:"`, ...).
/// Registering the same prefix again replaces the opener.
pub fn register_engine(prefix: &'static str, opener: EngineOpener) {
    let mut o = OPENERS.write();
    o.retain(|(p, _)| *p != prefix);
    o.push((prefix, opener));
}

async fn open_url(url: &str) -> Result<Arc<dyn Engine>> {
    let opener = OPENERS
        .read()
        .iter()
        .filter(|(p, _)| url.starts_with(p))
        .max_by_key(|(p, _)| p.len())
        .map(|(_, o)| *o);
    match opener {
        Some(open) => open(url.to_owned()).await,
        None => {
            let known: Vec<_> = OPENERS.read().iter().map(|(p, _)| *p).collect();
            Err(Error::invalid_input(format!(
                "no engine for URL {:?}: compiled-in engines handle {known:?}; enable the matching cargo feature of `datalayer` and open through `datalayer::connect`/`datalayer::builder`",
                redact(url)
            )))
        }
    }
}

/// `url` with `params` (`k=v&k2=v2`) appended to its query string (after `?`, or
/// `&` when it has one already); `url` itself for empty `params`. For the engine
/// options of a URL (`schema=`, `namespace=`, `pool_size=`, ...).
pub fn with_params(url: &str, params: &str) -> String {
    if params.is_empty() {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&{params}")
    } else {
        format!("{url}?{params}")
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((auth, host)) = rest.split_once('@')
        && let Some((user, _pw)) = auth.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_owned()
}

/// Collects tables and queries, then opens the engine and prepares them.
#[must_use = "call .connect().await"]
pub struct DbBuilder {
    target: Target,
    tables: Vec<&'static TableSchema>,
    /// The evolution hints of each table, in `tables` order.
    evolutions: Vec<Evolution>,
    queries: Vec<&'static QueryDef>,
    auto_migrate: bool,
    allow_destructive: bool,
}

enum Target {
    Url(String),
    Engine(Arc<dyn Engine>),
}

impl DbBuilder {
    /// Registers a table (created with its indexes if missing).
    pub fn table<T: Table>(mut self) -> Self {
        self.tables.push(T::schema());
        self.evolutions.push(T::evolution());
        self
    }
    /// Registers a table by schema (migration, dynamic use).
    pub fn table_schema(mut self, schema: &'static TableSchema) -> Self {
        self.tables.push(schema);
        self.evolutions.push(Evolution::default());
        self
    }
    /// Applies the safe steps of the schema migration at connect
    /// ([`Db::plan_migration`], [`Db::migrate`]): a table stored with another schema
    /// is altered to its declaration before `connect` returns. Default: off — such a
    /// table is left as stored, and every op on it fails with `InvalidInput` until
    /// [`Db::migrate`] applies its plan.
    ///
    /// # Errors
    /// `connect` fails with `InvalidInput` naming the steps when a plan has unsafe
    /// steps and [`DbBuilder::allow_destructive`] is off.
    pub fn auto_migrate(mut self, on: bool) -> Self {
        self.auto_migrate = on;
        self
    }
    /// Allows destructive schema steps (drop a column, change a type, nullability,
    /// the primary key or the version column; see [`crate::evolve`]). Default: off,
    /// and a plan with such steps is refused. When on, [`Db::migrate`] copies such a
    /// table into a new one in the declared schema, converting each value
    /// ([`crate::evolve::convert`]), then drops the old table and renames the copy;
    /// a copy cut short (a crash, a value that does not convert) resumes after its
    /// last committed chunk on the next run with the same declaration. Writes to the
    /// table during the copy are not carried over: stop its writers first.
    pub fn allow_destructive(mut self, on: bool) -> Self {
        self.allow_destructive = on;
        self
    }
    /// Registers the queries of a `#[query_group]` so the engine prepares them at start-up.
    pub fn queries<Q: QueryGroup>(mut self) -> Self {
        self.queries.extend(Q::queries());
        self
    }
    /// Opens the engine, creates the tables, prepares the queries.
    ///
    /// # Errors
    /// `InvalidInput` for an unknown URL scheme or an invalid schema; the engine's own
    /// errors (`ConnectionLost` when a server is unreachable, `Corrupted`, `Io`).
    pub async fn connect(self) -> Result<Db> {
        let engine = match self.target {
            Target::Url(u) => open_url(&u).await?,
            Target::Engine(e) => e,
        };
        for t in &self.tables {
            t.validate()?;
        }
        let declared: Vec<(&'static TableSchema, Evolution)> =
            self.tables.iter().copied().zip(self.evolutions).collect();
        let plan = crate::schema_change::plan(engine.as_ref(), &declared).await?;
        let pending = crate::schema_change::Pending::new(&plan);
        let ready: Vec<&'static TableSchema> = self
            .tables
            .iter()
            .copied()
            .filter(|t| !pending.contains(&t.name))
            .collect();
        let ready_queries: Vec<&'static QueryDef> = self
            .queries
            .iter()
            .copied()
            .filter(|q| !pending.contains(&q.table.name))
            .collect();
        engine.register(&ready, &ready_queries).await?;
        let db = Db {
            inner: Arc::new(DbInner {
                engine,
                gate: WriteGate::default(),
                declared,
                queries: self.queries,
                pending: Arc::new(pending),
                allow_destructive: self.allow_destructive,
            }),
        };
        if self.auto_migrate && !plan.is_empty() {
            db.migrate(&plan).await?;
        }
        Ok(db)
    }
}

/// A group of queries declared together; implemented by `#[query_group]`.
pub trait QueryGroup {
    /// Every query of the group (built on first call, then cached).
    fn queries() -> Vec<&'static QueryDef>;
}

pub(crate) struct DbInner {
    pub(crate) engine: Arc<dyn Engine>,
    /// Every write passes it; a cut-over's fence closes it ([`Db::fence_writes`]).
    gate: WriteGate,
    /// The declared tables and their evolution hints.
    pub(crate) declared: Vec<(&'static TableSchema, Evolution)>,
    /// Every declared query (those of pending tables are registered after
    /// [`Db::migrate`]).
    pub(crate) queries: Vec<&'static QueryDef>,
    /// Tables whose stored schema differs from the declaration until migrated.
    pub(crate) pending: Arc<crate::schema_change::Pending>,
    pub(crate) allow_destructive: bool,
}

/// A handle to one database on one engine. Cheap to clone; share it freely.
///
/// Each call on a `Db` is atomic on its own; use [`Db::tx`] for more.
///
/// # Examples
///
/// Open a database on the in-memory etch engine, write through a [`Repo`] and run a
/// query of a `#[query_group]`:
///
/// ```
/// # extern crate datalayer_core as datalayer;
/// use datalayer::Db;
/// use datalayer_macros::{Table, query_group};
///
/// #[derive(Table, Clone, Debug, PartialEq)]
/// struct User {
///     #[pk]
///     id: i64,
///     name: String,
///     age: i32,
/// }
///
/// #[query_group]
/// impl User {
///     fn adults(n: i64) -> Vec<User> {
///         Self::filter(|u| u.age >= 18).order_by(|u| u.age.desc()).limit(n)
///     }
/// }
///
/// # #[tokio::main]
/// # async fn main() -> datalayer::Result<()> {
/// let engine = datalayer_etch::memory();
/// let db = Db::with_engine(std::sync::Arc::new(engine))
///     .table::<User>()
///     .queries::<User>()
///     .connect()
///     .await?;
///
/// let users = db.repo::<User>();
/// users.insert(&User { id: 1, name: "ann".into(), age: 36 }).await?;
/// users.insert(&User { id: 2, name: "bob".into(), age: 12 }).await?;
///
/// let adults = User::adults(&db, 10).await?;
/// assert_eq!(adults.iter().map(|u| u.id).collect::<Vec<_>>(), [1]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<DbInner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("engine", &self.inner.engine.name())
            .finish()
    }
}

fn op_span(engine: &'static str, op: &Op<'_>) -> Span {
    tracing::debug_span!(
        "datalayer.query",
        engine,
        query = op.name(),
        rows = field::Empty,
        duration_us = field::Empty
    )
}

async fn traced<F: Future<Output = Result<Output>>>(span: Span, fut: F) -> Result<Output> {
    if span.is_disabled() {
        return fut.await;
    }
    let start = Instant::now();
    let out = fut.instrument(span.clone()).await;
    span.record("duration_us", start.elapsed().as_micros() as u64);
    if let Ok(o) = &out {
        span.record("rows", o.rows());
    }
    out
}

impl Db {
    /// A builder for the engine at `url` (see the crate docs for URL forms).
    pub fn builder(url: impl Into<String>) -> DbBuilder {
        DbBuilder {
            target: Target::Url(url.into()),
            tables: Vec::new(),
            evolutions: Vec::new(),
            queries: Vec::new(),
            auto_migrate: false,
            allow_destructive: false,
        }
    }
    /// A builder over an engine value you opened yourself.
    pub fn with_engine(engine: Arc<dyn Engine>) -> DbBuilder {
        DbBuilder {
            target: Target::Engine(engine),
            tables: Vec::new(),
            evolutions: Vec::new(),
            queries: Vec::new(),
            auto_migrate: false,
            allow_destructive: false,
        }
    }
    /// The engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.inner.engine
    }
    /// Fences writes through this `Db` (every clone of it), for a cut-over to another
    /// engine: waits at most `drain` for the writes in flight (write ops, batches,
    /// read-write transactions) to finish, then holds every new write until the
    /// returned [`WriteFence`] is dropped; a write waiting longer than `writer_wait`
    /// fails with `Timeout`. Reads go on. Writes made to the engine by other `Db`
    /// handles, other processes or raw SQL are not fenced.
    ///
    /// # Errors
    /// `Timeout` when writes are still in flight after `drain`; the fence is then not
    /// raised.
    pub async fn fence_writes(&self, drain: Duration, writer_wait: Duration) -> Result<WriteFence> {
        self.inner.gate.fence(drain, writer_wait).await
    }
    /// A repository for `T` running each call atomically.
    pub fn repo<T: Table>(&self) -> Repo<'_, T, Db> {
        Repo::new(self)
    }
    /// Begins a transaction with default options; the returned guard rolls back when
    /// dropped without [`Tx::commit`]. See [`Tx`] for an example.
    ///
    /// # Errors
    /// `Timeout` when the engine cannot start a transaction in time (etch: another
    /// transaction holds the single writer lock for longer than its lock timeout, 30 s
    /// by default, as happens to a second `begin` on a task that still holds a `Tx`);
    /// `ConnectionLost` or `Timeout` when a server engine is unreachable or has no free
    /// connection in time.
    pub async fn begin(&self) -> Result<Tx> {
        self.begin_with(TxOptions::default()).await
    }
    /// Begins a transaction with `opts`.
    ///
    /// # Errors
    /// `Unsupported` when the engine does not declare the requested isolation level or
    /// read-only transactions; otherwise as [`Db::begin`].
    pub async fn begin_with(&self, opts: TxOptions) -> Result<Tx> {
        let cap = self.capability();
        cap.check_tx(self.engine_name(), opts)?;
        let span = tracing::debug_span!(
            "datalayer.tx",
            engine = self.engine_name(),
            outcome = field::Empty,
            duration_us = field::Empty
        );
        let permit = if opts.read_only {
            None
        } else {
            Some(self.inner.gate.admit().await?)
        };
        let inner = self
            .inner
            .engine
            .begin(opts)
            .instrument(span.clone())
            .await?;
        Ok(Tx {
            pending: self.inner.pending.clone(),
            _permit: permit,
            inner: tokio::sync::Mutex::new(Some(inner)),
            engine: self.engine_name(),
            capability: cap,
            span,
            started: Instant::now(),
        })
    }
    /// Runs `f` in a transaction: commits when it returns `Ok`, rolls back on `Err` or
    /// panic (the guard's drop). Not retried; see [`Db::tx_with`].
    ///
    /// # Errors
    /// The errors of [`Db::begin`]; the error `f` returns, unchanged (the transaction is
    /// rolled back first); the errors of [`Tx::commit`] (`Conflict`, `CommitUnknown`, ...).
    pub async fn tx<R>(&self, f: impl AsyncFnOnce(&Tx) -> Result<R>) -> Result<R> {
        let tx = self.begin().await?;
        match f(&tx).await {
            Ok(v) => {
                tx.commit().await?;
                Ok(v)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
    /// A transaction builder: isolation level, read-only, retries.
    ///
    /// # Examples
    ///
    /// Re-run a transaction that fails with a retryable error (here a simulated
    /// `Conflict` on the first attempt, which is rolled back):
    ///
    /// ```
    /// # extern crate datalayer_core as datalayer;
    /// # use datalayer::{Db, Error};
    /// # #[derive(datalayer_macros::Table, Clone, Debug, PartialEq)]
    /// # struct User { #[pk] id: i64, name: String }
    /// # async fn memory_db() -> datalayer::Result<Db> {
    /// #     let engine = std::sync::Arc::new(datalayer_etch::memory());
    /// #     Db::with_engine(engine).table::<User>().connect().await
    /// # }
    /// # #[tokio::main]
    /// # async fn main() -> datalayer::Result<()> {
    /// let db = memory_db().await?;
    /// let mut attempts = 0;
    /// let count = db
    ///     .tx_with()
    ///     .retry(3)
    ///     .run(async |tx| {
    ///         attempts += 1;
    ///         let users = tx.repo::<User>();
    ///         users.insert(&User { id: 1, name: "ann".into() }).await?;
    ///         if attempts == 1 {
    ///             return Err(Error::conflict("lost a race"));
    ///         }
    ///         users.count().await
    ///     })
    ///     .await?;
    /// assert_eq!((attempts, count), (2, 1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn tx_with(&self) -> TxBuilder<'_> {
        TxBuilder {
            db: self,
            opts: TxOptions::default(),
            retries: 0,
            backoff: Duration::from_millis(2),
        }
    }
    /// Closes the engine (flushes what is pending). Later writes fail (etch:
    /// `InvalidInput`).
    ///
    /// # Errors
    /// `Io` when the final flush fails (etch: the last fsync of the write-ahead log);
    /// `Engine` when a server connection does not close cleanly.
    pub async fn close(&self) -> Result<()> {
        self.inner.engine.close().await
    }
}

#[async_trait]
impl Executor for Db {
    async fn run(&self, op: Op<'_>) -> Result<Output> {
        self.inner.pending.check(&op)?;
        let span = op_span(self.engine_name(), &op);
        let _permit = if op.is_read() {
            None
        } else {
            Some(self.inner.gate.admit().await?)
        };
        traced(span, async { self.inner.engine.run(op.checked()?).await }).await
    }
    async fn run_batch(&self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        let span = tracing::debug_span!(
            "datalayer.batch",
            engine = self.engine_name(),
            ops = ops.len()
        );
        let _permit = if ops.iter().all(Op::is_read) {
            None
        } else {
            Some(self.inner.gate.admit().await?)
        };
        for op in &ops {
            self.inner.pending.check(op)?;
        }
        let ops = checked_all(ops)?;
        self.inner.engine.run_batch(ops).instrument(span).await
    }
    fn capability(&self) -> Capability {
        self.inner.engine.capability()
    }
    fn engine_name(&self) -> &'static str {
        self.inner.engine.name()
    }
}

/// Options for [`Db::tx_with`].
#[must_use = "call .run(..).await"]
pub struct TxBuilder<'a> {
    db: &'a Db,
    opts: TxOptions,
    retries: u32,
    backoff: Duration,
}

impl TxBuilder<'_> {
    /// The isolation level. Default: the engine's.
    pub fn isolation(mut self, level: Isolation) -> Self {
        self.opts.isolation = Some(level);
        self
    }
    /// Makes the transaction read-only. Default: read-write.
    pub fn read_only(mut self) -> Self {
        self.opts.read_only = true;
        self
    }
    /// Re-runs the closure up to `n` more times when it or the commit fails with a
    /// retryable error (`Conflict`, `ConnectionLost`, `Timeout`). Default: 0.
    ///
    /// A commit whose outcome is unknown (`ErrorKind::CommitUnknown`) is never re-run:
    /// the transaction may already be applied. See [`crate::error`] for how to make a
    /// transaction safe to re-run by hand.
    pub fn retry(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }
    /// First backoff between retries, doubled each time (with jitter from the attempt
    /// count). Default: 2 ms.
    pub fn backoff(mut self, first: Duration) -> Self {
        self.backoff = first;
        self
    }
    /// Runs `f` in a transaction with these options; commits on `Ok`, rolls back on
    /// `Err` or panic, and re-runs it on retryable errors as configured.
    ///
    /// # Errors
    /// `Unsupported` for an isolation level or read-only transaction the engine does not
    /// declare (never retried); the errors of [`Db::begin`] (not retried); otherwise the
    /// error of `f` or of the commit, once it is not retryable or the retries are used
    /// up. `CommitUnknown` is returned at once.
    pub async fn run<R>(self, mut f: impl AsyncFnMut(&Tx) -> Result<R>) -> Result<R> {
        let mut attempt = 0u32;
        loop {
            let tx = self.db.begin_with(self.opts).await?;
            let err = match f(&tx).await {
                Ok(v) => match tx.commit().await {
                    Ok(()) => return Ok(v),
                    Err(e) => e,
                },
                Err(e) => {
                    let _ = tx.rollback().await;
                    e
                }
            };
            if !err.is_retryable() || attempt >= self.retries {
                return Err(err);
            }
            let wait = self.backoff.saturating_mul(1 << attempt.min(10));
            tracing::debug!(attempt, error = %err, "retrying transaction");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// An open transaction. Everything a [`Db`] can do, a `Tx` can do.
///
/// Dropping a `Tx` without [`Tx::commit`] rolls it back (the engine's drop behaviour),
/// which is what happens when a `db.tx(..)` closure returns `Err` or panics.
///
/// # Examples
///
/// ```
/// # extern crate datalayer_core as datalayer;
/// # use datalayer::Db;
/// # #[derive(datalayer_macros::Table, Clone, Debug, PartialEq)]
/// # struct User { #[pk] id: i64, name: String }
/// # async fn memory_db() -> datalayer::Result<Db> {
/// #     let engine = std::sync::Arc::new(datalayer_etch::memory());
/// #     Db::with_engine(engine).table::<User>().connect().await
/// # }
/// # #[tokio::main]
/// # async fn main() -> datalayer::Result<()> {
/// let db = memory_db().await?;
///
/// let tx = db.begin().await?;
/// tx.repo::<User>().insert(&User { id: 1, name: "ann".into() }).await?;
/// assert_eq!(db.repo::<User>().get(1).await?, None, "not visible before commit");
/// tx.commit().await?;
/// assert!(db.repo::<User>().get(1).await?.is_some());
///
/// {
///     let tx = db.begin().await?;
///     tx.repo::<User>().insert(&User { id: 2, name: "bob".into() }).await?;
///     // dropped without commit: rolled back
/// }
/// assert_eq!(db.repo::<User>().count().await?, 1);
/// # Ok(())
/// # }
/// ```
pub struct Tx {
    /// The `Db`'s tables with a pending schema migration (their ops are refused).
    pending: Arc<crate::schema_change::Pending>,
    /// A read-write transaction's hold on the write gate, from `begin` to its end.
    _permit: Option<WritePermit>,
    inner: tokio::sync::Mutex<Option<Box<dyn EngineTx>>>,
    engine: &'static str,
    capability: Capability,
    span: Span,
    started: Instant,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("engine", &self.engine).finish()
    }
}

fn finished() -> Error {
    Error::invalid_input("the transaction has already committed or rolled back")
}

impl Tx {
    /// A repository for `T` inside this transaction.
    pub fn repo<T: Table>(&self) -> Repo<'_, T, Tx> {
        Repo::new(self)
    }

    fn check_savepoint(&self, name: &str) -> Result<()> {
        if !self.capability.savepoints {
            return Err(Error::unsupported(self.engine, "savepoints"));
        }
        validate_identifier("savepoint", name)
    }

    /// Creates a savepoint named `name`.
    ///
    /// # Errors
    /// `InvalidInput` for a bad name; `Unsupported` without `Capability::savepoints`.
    pub async fn savepoint(&self, name: &str) -> Result<()> {
        self.check_savepoint(name)?;
        let mut g = self.inner.lock().await;
        g.as_mut().ok_or_else(finished)?.savepoint(name).await
    }
    /// Undoes everything since savepoint `name` (the savepoint stays).
    ///
    /// # Errors
    /// `NotFound` for an unknown savepoint; as [`Tx::savepoint`].
    ///
    /// # Examples
    ///
    /// ```
    /// # extern crate datalayer_core as datalayer;
    /// # use datalayer::{Db, ErrorKind};
    /// # #[derive(datalayer_macros::Table, Clone, Debug, PartialEq)]
    /// # struct User { #[pk] id: i64, name: String }
    /// # async fn memory_db() -> datalayer::Result<Db> {
    /// #     let engine = std::sync::Arc::new(datalayer_etch::memory());
    /// #     Db::with_engine(engine).table::<User>().connect().await
    /// # }
    /// # #[tokio::main]
    /// # async fn main() -> datalayer::Result<()> {
    /// let db = memory_db().await?;
    /// let tx = db.begin().await?;
    /// let users = tx.repo::<User>();
    /// users.insert(&User { id: 1, name: "ann".into() }).await?;
    /// tx.savepoint("before_bob").await?;
    /// users.insert(&User { id: 2, name: "bob".into() }).await?;
    /// tx.rollback_to("before_bob").await?;
    /// assert_eq!(users.count().await?, 1);
    ///
    /// let err = tx.rollback_to("nowhere").await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotFound);
    ///
    /// tx.commit().await?;
    /// assert_eq!(db.repo::<User>().get(2).await?, None);
    /// assert!(db.repo::<User>().get(1).await?.is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn rollback_to(&self, name: &str) -> Result<()> {
        self.check_savepoint(name)?;
        let mut g = self.inner.lock().await;
        g.as_mut().ok_or_else(finished)?.rollback_to(name).await
    }
    /// Releases savepoint `name` (and any created after it), keeping the changes.
    ///
    /// # Errors
    /// `NotFound` for an unknown savepoint; as [`Tx::savepoint`].
    pub async fn release(&self, name: &str) -> Result<()> {
        self.check_savepoint(name)?;
        let mut g = self.inner.lock().await;
        g.as_mut().ok_or_else(finished)?.release(name).await
    }
    /// Runs `f` inside a savepoint: released on `Ok`, rolled back to on `Err` (the
    /// outer transaction goes on either way).
    ///
    /// # Errors
    /// The errors of [`Tx::savepoint`] (`InvalidInput`, `Unsupported`); the error `f`
    /// returns, after its changes are undone; an error of undoing or releasing the
    /// savepoint (a server engine's `ConnectionLost`).
    pub async fn nested<R>(&self, name: &str, f: impl AsyncFnOnce(&Tx) -> Result<R>) -> Result<R> {
        self.savepoint(name).await?;
        match f(self).await {
            Ok(v) => {
                self.release(name).await?;
                Ok(v)
            }
            Err(e) => {
                self.rollback_to(name).await?;
                self.release(name).await?;
                Err(e)
            }
        }
    }

    fn finish(&self, outcome: &'static str) {
        self.span.record("outcome", outcome);
        self.span
            .record("duration_us", self.started.elapsed().as_micros() as u64);
    }

    /// Commits.
    ///
    /// # Errors
    /// `Conflict` when the engine detects a serialization failure at commit (retryable);
    /// `ConnectionLost` when a server connection broke before the commit was sent
    /// (nothing applied, retryable); `CommitUnknown` when it broke after (the
    /// transaction may or may not be applied; see [`crate::error`]); `Io` when a local
    /// engine cannot write its log.
    pub async fn commit(self) -> Result<()> {
        let tx = self.inner.lock().await.take().ok_or_else(finished)?;
        let r = tx.commit().instrument(self.span.clone()).await;
        self.finish(if r.is_ok() { "commit" } else { "commit_failed" });
        r
    }
    /// Rolls back. Dropping the `Tx` does the same without waiting for the outcome.
    ///
    /// # Errors
    /// `ConnectionLost` when a server connection is gone (the server then rolls the
    /// transaction back by itself). Either way nothing of the transaction is applied.
    pub async fn rollback(self) -> Result<()> {
        let tx = self.inner.lock().await.take().ok_or_else(finished)?;
        let r = tx.rollback().instrument(self.span.clone()).await;
        self.finish("rollback");
        r
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.inner.get_mut().is_some() {
            self.finish("dropped");
        }
    }
}

#[async_trait]
impl Executor for Tx {
    async fn run(&self, op: Op<'_>) -> Result<Output> {
        self.pending.check(&op)?;
        let span = op_span(self.engine, &op);
        let fut = async {
            let op = op.checked()?;
            let mut g = self.inner.lock().await;
            g.as_mut().ok_or_else(finished)?.run(op).await
        };
        traced(span, fut).await
    }
    async fn run_batch(&self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        for op in &ops {
            self.pending.check(op)?;
        }
        let ops = checked_all(ops)?;
        let mut g = self.inner.lock().await;
        g.as_mut().ok_or_else(finished)?.run_batch(ops).await
    }
    fn capability(&self) -> Capability {
        self.capability
    }
    fn engine_name(&self) -> &'static str {
        self.engine
    }
}

/// Every op of a batch through [`Op::checked`].
fn checked_all(ops: Vec<Op<'_>>) -> Result<Vec<Op<'_>>> {
    ops.into_iter().map(Op::checked).collect()
}
