//! `Db`, transactions and the executor abstraction shared by both.

use crate::capability::Capability;
use crate::engine::{Engine, EngineTx, Isolation, Op, Output, TxOptions};
use crate::error::{Error, Result};
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
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs one op.
    async fn run(&self, op: Op<'_>) -> Result<Output>;
    /// Runs ops in order as one atomic unit (on a `Db`) or inside the transaction.
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
    queries: Vec<&'static QueryDef>,
}

enum Target {
    Url(String),
    Engine(Arc<dyn Engine>),
}

impl DbBuilder {
    /// Registers a table (created with its indexes if missing).
    pub fn table<T: Table>(mut self) -> Self {
        self.tables.push(T::schema());
        self
    }
    /// Registers a table by schema (migration, dynamic use).
    pub fn table_schema(mut self, schema: &'static TableSchema) -> Self {
        self.tables.push(schema);
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
        engine.register(&self.tables, &self.queries).await?;
        Ok(Db {
            inner: Arc::new(DbInner { engine }),
        })
    }
}

/// A group of queries declared together; implemented by `#[query_group]`.
pub trait QueryGroup {
    /// Every query of the group (built on first call, then cached).
    fn queries() -> Vec<&'static QueryDef>;
}

struct DbInner {
    engine: Arc<dyn Engine>,
}

/// A handle to one database on one engine. Cheap to clone; share it freely.
///
/// Each call on a `Db` is atomic on its own; use [`Db::tx`] for more.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
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
            queries: Vec::new(),
        }
    }
    /// A builder over an engine value you opened yourself.
    pub fn with_engine(engine: Arc<dyn Engine>) -> DbBuilder {
        DbBuilder {
            target: Target::Engine(engine),
            tables: Vec::new(),
            queries: Vec::new(),
        }
    }
    /// The engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.inner.engine
    }
    /// A repository for `T` running each call atomically.
    pub fn repo<T: Table>(&self) -> Repo<'_, T, Db> {
        Repo::new(self)
    }
    /// Begins a transaction with default options; the returned guard rolls back when
    /// dropped without [`Tx::commit`].
    pub async fn begin(&self) -> Result<Tx> {
        self.begin_with(TxOptions::default()).await
    }
    /// Begins a transaction with `opts`.
    ///
    /// # Errors
    /// `Unsupported` when the engine does not declare the requested isolation level or
    /// read-only transactions.
    pub async fn begin_with(&self, opts: TxOptions) -> Result<Tx> {
        let cap = self.capability();
        cap.check_tx(self.engine_name(), opts)?;
        let span = tracing::debug_span!(
            "datalayer.tx",
            engine = self.engine_name(),
            outcome = field::Empty,
            duration_us = field::Empty
        );
        let inner = self
            .inner
            .engine
            .begin(opts)
            .instrument(span.clone())
            .await?;
        Ok(Tx {
            inner: tokio::sync::Mutex::new(Some(inner)),
            engine: self.engine_name(),
            capability: cap,
            span,
            started: Instant::now(),
        })
    }
    /// Runs `f` in a transaction: commits when it returns `Ok`, rolls back on `Err` or
    /// panic (the guard's drop). Not retried; see [`Db::tx_with`].
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
    pub fn tx_with(&self) -> TxBuilder<'_> {
        TxBuilder {
            db: self,
            opts: TxOptions::default(),
            retries: 0,
            backoff: Duration::from_millis(2),
        }
    }
    /// Closes the engine (flushes what is pending).
    pub async fn close(&self) -> Result<()> {
        self.inner.engine.close().await
    }
}

#[async_trait]
impl Executor for Db {
    async fn run(&self, op: Op<'_>) -> Result<Output> {
        let span = op_span(self.engine_name(), &op);
        traced(span, async { self.inner.engine.run(op.checked()?).await }).await
    }
    async fn run_batch(&self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        let span = tracing::debug_span!(
            "datalayer.batch",
            engine = self.engine_name(),
            ops = ops.len()
        );
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
pub struct Tx {
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
    /// `NotFound` for an unknown savepoint.
    pub async fn rollback_to(&self, name: &str) -> Result<()> {
        self.check_savepoint(name)?;
        let mut g = self.inner.lock().await;
        g.as_mut().ok_or_else(finished)?.rollback_to(name).await
    }
    /// Releases savepoint `name`, keeping its changes.
    pub async fn release(&self, name: &str) -> Result<()> {
        self.check_savepoint(name)?;
        let mut g = self.inner.lock().await;
        g.as_mut().ok_or_else(finished)?.release(name).await
    }
    /// Runs `f` inside a savepoint: released on `Ok`, rolled back to on `Err` (the
    /// outer transaction goes on either way).
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
    /// `Conflict` when the engine detects a serialization failure at commit (retryable).
    pub async fn commit(self) -> Result<()> {
        let tx = self.inner.lock().await.take().ok_or_else(finished)?;
        let r = tx.commit().instrument(self.span.clone()).await;
        self.finish(if r.is_ok() { "commit" } else { "commit_failed" });
        r
    }
    /// Rolls back.
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
        let span = op_span(self.engine, &op);
        let fut = async {
            let op = op.checked()?;
            let mut g = self.inner.lock().await;
            g.as_mut().ok_or_else(finished)?.run(op).await
        };
        traced(span, fut).await
    }
    async fn run_batch(&self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
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
