//! # datalayer-conformance
//!
//! The one suite that proves every engine behaves the same. Each case is an async fn
//! over a fresh, empty namespace ([`Ctx`]), tagged with the capabilities it needs
//! ([`Need`]). Each engine supplies a [`Target`] (how to create a namespace: a temp
//! directory, a schema, a key prefix) and one test file calling [`trials`] and [`main`], so that
//! `cargo test` lists every case × engine:
//!
//! ```text
//! test memory::crud::insert_get ... ok
//! test disk::durability::reopen_keeps_committed ... ok
//! ```
//!
//! [`url::UrlTarget`] is the target of any datalayer URL (what `datalayer conformance
//! URL` runs), and [`url::UrlNamespace`] the namespaces the engine test files share.
//!
//! A case whose needs the engine does not declare is listed as ignored; the
//! `capability::declared_matches_behaviour` case checks every declaration (so a missing
//! capability must really return `Unsupported`).

pub mod cases;
pub mod model;
pub mod url;

use async_trait::async_trait;
use datalayer::{Capability, Db, Engine};
use futures::FutureExt;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A capability a case needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// `Capability::savepoints`.
    Savepoints,
    /// `Capability::durable` and a namespace that can be reopened.
    Durable,
    /// `Capability::read_only_tx`.
    ReadOnlyTx,
    /// `Capability::change_feed`.
    ChangeFeed,
}

impl Need {
    /// Whether a target with capabilities `cap` (and namespaces that can be reopened
    /// or not) meets this need.
    pub fn met(self, cap: &Capability, reopenable: bool) -> bool {
        match self {
            Need::Savepoints => cap.savepoints,
            Need::Durable => cap.durable && reopenable,
            Need::ReadOnlyTx => cap.read_only_tx,
            Need::ChangeFeed => cap.change_feed,
        }
    }
}

/// One storage namespace for one case: a directory, a schema, a key prefix. Removed by
/// [`Namespace::destroy`] at the end of the case.
#[async_trait]
pub trait Namespace: Send + Sync {
    /// Opens the engine over this namespace (again, after a close, for reopen cases).
    async fn open(&self) -> datalayer::Result<Arc<dyn Engine>>;
    /// Whether [`Namespace::open`] can be called again after closing (data persists).
    fn reopenable(&self) -> bool;
    /// Removes everything the namespace holds.
    async fn destroy(&self) -> datalayer::Result<()>;
}

/// An engine under test.
#[async_trait]
pub trait Target: Send + Sync + 'static {
    /// Creates a fresh, empty namespace (random suffix).
    async fn namespace(&self) -> anyhow::Result<Box<dyn Namespace>>;
    /// The engine's declared capabilities (without opening a namespace).
    fn capability(&self) -> Capability;
    /// Whether namespaces can be reopened.
    fn reopenable(&self) -> bool;
}

/// What a case gets: the database, opened with every conformance table and query
/// group registered, and the namespace for reopening.
pub struct Ctx {
    /// The database.
    pub db: Db,
    ns: Box<dyn Namespace>,
    calls: Arc<AtomicU64>,
}

/// Wraps an engine to count the calls that reach it (one per `run` or `run_batch`),
/// so cases can check that relationships load with one batched read.
struct Counting {
    inner: Arc<dyn Engine>,
    calls: Arc<AtomicU64>,
}

#[async_trait]
impl Engine for Counting {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn capability(&self) -> Capability {
        self.inner.capability()
    }
    async fn register(
        &self,
        t: &[&datalayer::TableSchema],
        q: &[&datalayer::QueryDef],
    ) -> datalayer::Result<()> {
        self.inner.register(t, q).await
    }
    async fn run(&self, op: datalayer::Op<'_>) -> datalayer::Result<datalayer::Output> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.run(op).await
    }
    async fn run_batch(
        &self,
        ops: Vec<datalayer::Op<'_>>,
    ) -> datalayer::Result<Vec<datalayer::Output>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.run_batch(ops).await
    }
    async fn begin(
        &self,
        o: datalayer::TxOptions,
    ) -> datalayer::Result<Box<dyn datalayer::EngineTx>> {
        self.inner.begin(o).await
    }
    async fn catalog(&self) -> datalayer::Result<Vec<datalayer::TableSchema>> {
        self.inner.catalog().await
    }
    async fn alter_table(&self, plan: &datalayer::TablePlan) -> datalayer::Result<()> {
        self.inner.alter_table(plan).await
    }
    async fn drop_table(&self, name: &str) -> datalayer::Result<()> {
        self.inner.drop_table(name).await
    }
    async fn close(&self) -> datalayer::Result<()> {
        self.inner.close().await
    }
    async fn enable_changes(&self, table: &str) -> datalayer::Result<()> {
        self.inner.enable_changes(table).await
    }
    async fn read_changes(
        &self,
        table: &str,
        after: u64,
        limit: usize,
    ) -> datalayer::Result<Vec<datalayer::Change>> {
        self.inner.read_changes(table, after, limit).await
    }
    async fn trim_changes(&self, table: &str, upto: u64) -> datalayer::Result<u64> {
        self.inner.trim_changes(table, upto).await
    }
}

async fn open_db(ns: &dyn Namespace, calls: &Arc<AtomicU64>) -> anyhow::Result<Db> {
    let engine: Arc<dyn Engine> = Arc::new(Counting {
        inner: ns.open().await?,
        calls: calls.clone(),
    });
    Ok(model::register(Db::with_engine(engine)).connect().await?)
}

impl Ctx {
    /// Closes the database and opens the same namespace again.
    ///
    /// # Errors
    /// The engine's error from `close` or from opening it again.
    pub async fn reopen(&mut self) -> anyhow::Result<()> {
        self.db.close().await?;
        self.db = open_db(self.ns.as_ref(), &self.calls).await?;
        Ok(())
    }
    /// Engine calls (`run` + `run_batch`) made through `db` so far.
    pub fn engine_calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
    /// The capabilities.
    pub fn cap(&self) -> Capability {
        datalayer::Executor::capability(&self.db)
    }
}

/// A case body.
pub type CaseFn = for<'a> fn(&'a mut Ctx) -> BoxFuture<'a, anyhow::Result<()>>;

/// One conformance case.
pub struct Case {
    /// `area::name`.
    pub name: String,
    /// Capabilities it needs.
    pub needs: &'static [Need],
    /// The body.
    pub run: CaseFn,
}

impl Case {
    /// Whether a target with capabilities `cap` (and namespaces that can be reopened or
    /// not) meets every need of the case; a case that does not is skipped.
    pub fn runs_on(&self, cap: &Capability, reopenable: bool) -> bool {
        self.needs.iter().all(|n| n.met(cap, reopenable))
    }
}

/// Runs `case` against a fresh namespace of `target`, destroying it afterwards.
///
/// # Errors
/// The namespace could not be created or opened, or the case failed (its error).
pub async fn run_case(target: &dyn Target, case: &Case) -> anyhow::Result<()> {
    let ns = target.namespace().await?;
    let calls = Arc::new(AtomicU64::new(0));
    let db = match open_db(ns.as_ref(), &calls).await {
        Ok(db) => db,
        Err(e) => {
            let _ = ns.destroy().await;
            return Err(e);
        }
    };
    let mut cx = Ctx { db, ns, calls };
    // A failed assertion panics: catch it so the namespace is removed either way, then
    // re-raise it for the test harness.
    let result = std::panic::AssertUnwindSafe((case.run)(&mut cx))
        .catch_unwind()
        .await;
    let _ = cx.db.close().await;
    cx.ns.destroy().await?;
    match result {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `case` as one trial does: on its own runtime (2 worker threads, dropped with
/// whatever tasks the case left behind), blocking the calling thread. A failure is the
/// case's error chain, or its panic message.
///
/// # Errors
/// The failure, as text.
pub fn run_case_isolated(target: &dyn Target, case: &Case) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(run_case(target, case))
    }));
    drop(rt);
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => Err(panic_message(panic.as_ref())),
    }
}

/// The text of a panic payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_owned()
    }
}

/// Lists every case of `target` as a libtest-mimic trial, prefixed with `prefix`, and
/// runs the ones whose needs the target meets (others are listed as ignored).
pub fn trials(prefix: &str, target: Arc<dyn Target>) -> Vec<libtest_mimic::Trial> {
    let cap = target.capability();
    let reopenable = target.reopenable();
    cases::all()
        .into_iter()
        .map(|case| {
            let name = format!("{prefix}::{}", case.name);
            let ignored = !case.runs_on(&cap, reopenable);
            let target = target.clone();
            libtest_mimic::Trial::test(name, move || {
                run_case_isolated(target.as_ref(), &case).map_err(Into::into)
            })
            .with_ignored_flag(ignored)
        })
        .collect()
}

/// The whole runner: parses the test-harness arguments and runs `trials`.
pub fn main(trials: Vec<libtest_mimic::Trial>) -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    libtest_mimic::run(&args, trials).exit_code()
}

/// A random lower-case suffix for namespace names.
pub fn random_suffix() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..10)
        .map(|_| (b'a' + r.random_range(0..26)) as char)
        .collect()
}
