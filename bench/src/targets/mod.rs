//! The systems under test, one file each, all behind one trait: [`Target`].
//!
//! - [`datalayer`]: datalayer on any URL (`etch://{dir}/etch`, `etch::memory:`,
//!   `sqlite://{dir}/dl.sqlite?..`, `postgres://..?schema={schema}`, later
//!   `redis://..`, `tikv://..`): one type, the URL is the only difference;
//! - peers: [`etchdb`], [`redb`], [`rusqlite`] (and its control target
//!   `rusqlite-on-dl-schema`), and with the cargo feature `pg`
//!   `tokio_postgres` (raw), `sqlx`, `seaorm` and `pg_queue` (a plain
//!   `SKIP LOCKED` queue, the outbox's peer); with the feature `redis`
//!   `redis_raw` (raw redis-rs), with the feature `tikv` `tikv_raw` (raw
//!   tikv-client).
//!
//! A target says which [`Workload`]s it [supports](Target::supports); the
//! harness runs only those and the report shows "—" for the rest.
//!
//! To add a target: write `targets/<name>.rs` with a type implementing
//! [`Target`] (and, for the `users` workloads, a [`UsersTable`]), declare the
//! module below and add it to [`embedded`] (or `postgres`, with the `pg` feature). The first target of
//! a list is the baseline of its table's ratio columns, so datalayer goes first.
//! Another engine of datalayer needs no file: pass its URL (`--url`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::flights::FlightRow;
use crate::outbox::OutboxRun;
use crate::workloads::{User, Workload};

pub mod datalayer;
pub mod etchdb;
#[cfg(any(feature = "redis", feature = "tikv"))]
mod kv_row;
#[cfg(feature = "pg")]
pub mod pg_queue;
pub mod redb;
#[cfg(feature = "redis")]
pub mod redis_raw;
pub mod rusqlite;
#[cfg(feature = "pg")]
pub mod seaorm;
#[cfg(feature = "pg")]
pub mod sqlx;
#[cfg(feature = "tikv")]
pub mod tikv_raw;
#[cfg(feature = "pg")]
pub mod tokio_postgres;

/// One system under test: datalayer on one URL, a peer store, or a peer client.
///
/// The harness asks [`Target::supports`] before running a workload and calls
/// only the methods of the workloads a target supports; the defaults of the
/// others fail loudly, so a target cannot post a figure it did not measure.
///
/// Durability contract: every method that writes commits with the store's
/// durable guarantee (fsync per commit, or the server's) before it returns. A
/// target whose store offers a weaker mode must not use it here.
pub trait Target: Send + Sync {
    /// Display name, column header and `--only` key (lower case, no spaces).
    fn name(&self) -> &str;

    /// Whether this target runs `w`.
    fn supports(&self, w: Workload) -> bool;

    /// Opens a fresh `users` table at `place` and loads `rows` (in any number of
    /// transactions; not timed). For the workloads `PointRead` .. `Copy`.
    ///
    /// # Errors
    /// The store cannot be opened or loaded.
    fn open(&self, place: &Place, rows: &[User]) -> anyhow::Result<Box<dyn UsersTable>> {
        let _ = (place, rows);
        bail!("{} has no users table", self.name())
    }

    /// [`Workload::Flights`]: creates the `flights` table with its three
    /// secondary indexes at `place` and inserts all of `rows` in ONE durable
    /// transaction; returns the time of the insert and commit only, after
    /// checking (untimed) the row count.
    ///
    /// # Errors
    /// The store fails, or the count is wrong.
    fn load_flights(&self, place: &Place, rows: &[FlightRow]) -> anyhow::Result<Duration> {
        let _ = (place, rows);
        bail!("{} does not load flights", self.name())
    }

    /// [`Workload::Changes`]: opens a fresh store at `place` with an empty
    /// `users` table (same schema and index as the users workloads); when
    /// `changes`, enables change capture on it. Then inserts all of `rows` in ONE
    /// durable transaction and returns the time of the insert and commit only.
    /// When `changes`, checks (untimed) that one change per row was captured.
    ///
    /// # Errors
    /// The store fails, or the capture check does.
    fn insert_rows(&self, place: &Place, rows: &[User], changes: bool) -> anyhow::Result<Duration> {
        let _ = (place, rows, changes);
        bail!("{} does not capture changes", self.name())
    }

    /// [`Workload::Outbox`]: in a fresh store at `place`, produces `n` events
    /// while a consumer handles them (see [`crate::outbox`]).
    ///
    /// # Errors
    /// The store fails, or the consumer does not handle every event in time.
    fn outbox(&self, place: &Place, n: usize) -> anyhow::Result<OutboxRun> {
        let _ = (place, n);
        bail!("{} has no outbox", self.name())
    }
}

/// A target's open `users` table (id primary key, name, email, age with an index
/// on age), shared by reference between the writer threads of
/// [`Workload::Commit8`]. Methods panic on a store error: the benchmark cannot go
/// on from one.
///
/// The `*_many`/`*_reads`/`*_scans` methods have defaults that loop over the
/// single-operation methods; the harness only calls those forms, so an async
/// target (which has to `block_on` somewhere) enters its runtime once per
/// repetition instead of once per operation: it implements [`AsyncUsers`], whose
/// blanket impl does that. The method of a workload the target does not support
/// panics when called.
pub trait UsersTable: Send + Sync {
    /// The row with primary key `id`, decoded, or `None`.
    fn point_read(&self, id: i64) -> Option<User>;

    /// Point-reads every id in `ids`, one after another; returns how many were found.
    fn point_reads(&self, ids: &[i64]) -> usize {
        ids.iter()
            .filter(|&&id| self.point_read(id).is_some())
            .count()
    }

    /// Point-reads every id in `ids` in ONE batch (datalayer: one `Batch` of
    /// `*_stmt` point queries); the decoded rows in the order of `ids`.
    /// [`Workload::ReadBatch`].
    fn read_batch(&self, ids: &[i64]) -> Vec<Option<User>> {
        let _ = ids;
        unsupported(Workload::ReadBatch)
    }

    /// Point-reads `ids` in batches of `size`, one batch after another; returns
    /// how many rows were found.
    fn read_batches(&self, ids: &[i64], size: usize) -> usize {
        ids.chunks(size.max(1))
            .map(|c| self.read_batch(c).iter().flatten().count())
            .sum()
    }

    /// Fetches (decodes) every row with `lo <= age <= hi` through the age index;
    /// returns how many there were. [`Workload::RangeScan`].
    fn range_by_age(&self, lo: i32, hi: i32) -> usize {
        let _ = (lo, hi);
        unsupported(Workload::RangeScan)
    }

    /// Runs every scan in `ranges`; returns the total number of rows fetched.
    fn range_scans(&self, ranges: &[(i32, i32)]) -> usize {
        ranges
            .iter()
            .map(|&(lo, hi)| self.range_by_age(lo, hi))
            .sum()
    }

    /// Inserts `u` in its own durable transaction. [`Workload::Commit1`],
    /// [`Workload::Commit8`], [`Workload::Insert2Idx`] (on a table with two
    /// indexes).
    fn commit_one(&self, u: &User) {
        let _ = u;
        unsupported(Workload::Commit1)
    }

    /// Inserts each of `rows` in its own durable transaction, in order.
    fn commit_many(&self, rows: &[User]) {
        for u in rows {
            self.commit_one(u);
        }
    }

    /// Inserts all of `rows` in ONE durable transaction with the store's one-call
    /// bulk insert. [`Workload::Batch`].
    fn insert_many(&self, rows: &[User]);

    /// Inserts `rows` with one single-row INSERT each, awaiting each before the
    /// next, inside one transaction. [`Workload::InsertSequential`].
    fn insert_sequential(&self, rows: &[User]) {
        let _ = rows;
        unsupported(Workload::InsertSequential)
    }

    /// Inserts `rows` inside one transaction, batched the way this client
    /// batches. [`Workload::InsertBatched`].
    fn insert_batched(&self, rows: &[User]) {
        let _ = rows;
        unsupported(Workload::InsertBatched)
    }

    /// Inserts `rows` with `COPY FROM STDIN BINARY` in one transaction.
    /// [`Workload::Copy`].
    fn copy_in(&self, rows: &[User]) {
        let _ = rows;
        unsupported(Workload::Copy)
    }

    /// Number of rows in the table (checked at the end of a run).
    fn count(&self) -> i64;

    /// Closes connections (untimed).
    fn close(&self) {}
}

/// A [`UsersTable`] driven through async calls on a tokio runtime: datalayer and
/// the async peer clients. A target implements the operations as `async fn`s
/// and gets [`UsersTable`] from the blanket impl below, which blocks on
/// [`AsyncUsers::rt`] once per call and, for the `*_many`/`*_reads`/`*_scans`
/// forms, once per repetition around one loop that awaits each operation before
/// the next. An operation of a workload the target does not support panics, as
/// in [`UsersTable`].
pub trait AsyncUsers: Send + Sync {
    /// The decoded row of a read, turned into a [`User`] only where one is returned.
    type Row: Into<User>;

    /// The runtime every blocking method enters.
    fn rt(&self) -> &tokio::runtime::Runtime;

    /// [`UsersTable::point_read`].
    async fn read(&self, id: i64) -> Option<Self::Row>;

    /// [`UsersTable::read_batch`].
    async fn batch(&self, ids: &[i64]) -> Vec<Option<Self::Row>> {
        let _ = ids;
        unsupported(Workload::ReadBatch)
    }

    /// [`UsersTable::range_by_age`].
    async fn range(&self, lo: i32, hi: i32) -> usize {
        let _ = (lo, hi);
        unsupported(Workload::RangeScan)
    }

    /// [`UsersTable::commit_one`].
    async fn insert(&self, u: &User) {
        let _ = u;
        unsupported(Workload::Commit1)
    }

    /// [`UsersTable::insert_many`].
    async fn insert_all(&self, rows: &[User]);

    /// [`UsersTable::insert_sequential`].
    async fn insert_each_in_tx(&self, rows: &[User]) {
        let _ = rows;
        unsupported(Workload::InsertSequential)
    }

    /// [`UsersTable::insert_batched`].
    async fn insert_batch_in_tx(&self, rows: &[User]) {
        let _ = rows;
        unsupported(Workload::InsertBatched)
    }

    /// [`UsersTable::copy_in`].
    async fn copy(&self, rows: &[User]) {
        let _ = rows;
        unsupported(Workload::Copy)
    }

    /// [`UsersTable::count`].
    async fn row_count(&self) -> i64;

    /// [`UsersTable::close`].
    async fn shutdown(&self) {}
}

impl<A: AsyncUsers> UsersTable for A {
    fn point_read(&self, id: i64) -> Option<User> {
        self.rt().block_on(self.read(id)).map(Into::into)
    }

    fn point_reads(&self, ids: &[i64]) -> usize {
        self.rt().block_on(async {
            let mut n = 0;
            for &id in ids {
                n += usize::from(self.read(id).await.is_some());
            }
            n
        })
    }

    fn read_batch(&self, ids: &[i64]) -> Vec<Option<User>> {
        self.rt()
            .block_on(self.batch(ids))
            .into_iter()
            .map(|r| r.map(Into::into))
            .collect()
    }

    fn read_batches(&self, ids: &[i64], size: usize) -> usize {
        self.rt().block_on(async {
            let mut n = 0;
            for c in ids.chunks(size.max(1)) {
                n += self.batch(c).await.iter().flatten().count();
            }
            n
        })
    }

    fn range_by_age(&self, lo: i32, hi: i32) -> usize {
        self.rt().block_on(self.range(lo, hi))
    }

    fn range_scans(&self, ranges: &[(i32, i32)]) -> usize {
        self.rt().block_on(async {
            let mut n = 0;
            for &(lo, hi) in ranges {
                n += self.range(lo, hi).await;
            }
            n
        })
    }

    fn commit_one(&self, u: &User) {
        self.rt().block_on(self.insert(u));
    }

    fn commit_many(&self, rows: &[User]) {
        self.rt().block_on(async {
            for u in rows {
                self.insert(u).await;
            }
        });
    }

    fn insert_many(&self, rows: &[User]) {
        self.rt().block_on(self.insert_all(rows));
    }

    fn insert_sequential(&self, rows: &[User]) {
        self.rt().block_on(self.insert_each_in_tx(rows));
    }

    fn insert_batched(&self, rows: &[User]) {
        self.rt().block_on(self.insert_batch_in_tx(rows));
    }

    fn copy_in(&self, rows: &[User]) {
        self.rt().block_on(self.copy(rows));
    }

    fn count(&self) -> i64 {
        self.rt().block_on(self.row_count())
    }

    fn close(&self) {
        self.rt().block_on(self.shutdown());
    }
}

/// The default of a [`UsersTable`] method whose workload the target does not
/// support: the harness never calls it, so reaching it is a bug.
fn unsupported(w: Workload) -> ! {
    panic!(
        "{} was run on a target that does not support it (Target::supports is wrong)",
        w.label()
    )
}

/// The runtime a target blocks on: multi-threaded, 2 workers.
pub fn runtime() -> Arc<tokio::runtime::Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime"),
    )
}

/// The PostgreSQL server of the run, when there is one.
#[cfg(feature = "pg")]
type Server = Option<Arc<crate::pg::PgServer>>;

/// A key-value server (Redis, TiKV) on which every place gets its own fresh
/// namespace (key prefix), removed again when the place closes (and, for those
/// left after an error or a panic, when the server handle is dropped).
#[cfg(any(feature = "redis", feature = "tikv"))]
pub trait Namespaces: Send + Sync {
    /// Makes a fresh namespace for `tag` (unique: a run id, the tag and a
    /// counter) and remembers to remove it.
    ///
    /// # Errors
    /// The server refuses (e.g. a region split).
    fn create(&self, tag: &str) -> anyhow::Result<String>;

    /// Removes every key of the namespace `ns` now.
    ///
    /// # Errors
    /// The server refuses (the namespace stays remembered for the end of the run).
    fn destroy(&self, ns: &str) -> anyhow::Result<()>;
}

/// The namespace host of a scratch or place, when there is one.
#[cfg(any(feature = "redis", feature = "tikv"))]
type NsHost = Option<Arc<dyn Namespaces>>;

/// Hands out fresh [`Place`]s: a temporary directory under one parent and, when
/// the run has a PostgreSQL server, a fresh schema on it (or, in the Redis and
/// TiKV sections, a fresh namespace on that server).
#[derive(Clone)]
pub struct Scratch {
    parent: PathBuf,
    #[cfg(feature = "pg")]
    server: Server,
    #[cfg(any(feature = "redis", feature = "tikv"))]
    namespaces: NsHost,
    next: Arc<AtomicUsize>,
}

impl Scratch {
    /// Places under `parent` (which must exist), without a server.
    pub fn new(parent: PathBuf) -> Self {
        Self {
            parent,
            #[cfg(feature = "pg")]
            server: None,
            #[cfg(any(feature = "redis", feature = "tikv"))]
            namespaces: None,
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The same, with fresh namespaces on `host` (a Redis server, a TiKV cluster).
    #[cfg(any(feature = "redis", feature = "tikv"))]
    pub fn with_namespaces(&self, host: Arc<dyn Namespaces>) -> Self {
        let mut s = self.clone();
        s.namespaces = Some(host);
        s
    }

    /// The same, with fresh schemas on `server`.
    #[cfg(feature = "pg")]
    pub fn with_server(mut self, server: Arc<crate::pg::PgServer>) -> Self {
        self.server = Some(server);
        self
    }

    /// The parent directory of every place.
    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// A fresh place for `tag` (a target name; it names the directory and schema).
    ///
    /// # Errors
    /// The temporary directory cannot be created.
    pub fn place(&self, tag: &str) -> anyhow::Result<Place> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("datalayer-bench-{tag}-"))
            .tempdir_in(&self.parent)
            .with_context(|| format!("creating a temp dir under {}", self.parent.display()))?;
        Ok(Place {
            dir,
            tag: format!("{tag}_{n}"),
            #[cfg(feature = "pg")]
            server: self.server.clone(),
            #[cfg(feature = "pg")]
            schema: std::sync::OnceLock::new(),
            #[cfg(any(feature = "redis", feature = "tikv"))]
            namespaces: self.namespaces.clone(),
            #[cfg(any(feature = "redis", feature = "tikv"))]
            ns: std::sync::OnceLock::new(),
        })
    }
}

/// Where a target opens one fresh store: an empty temporary directory (removed by
/// [`Place::close`], or when dropped) and, on request, a fresh PostgreSQL schema
/// (dropped by [`Place::close`], or at the end of the run).
pub struct Place {
    dir: tempfile::TempDir,
    tag: String,
    #[cfg(feature = "pg")]
    server: Server,
    #[cfg(feature = "pg")]
    schema: std::sync::OnceLock<String>,
    #[cfg(any(feature = "redis", feature = "tikv"))]
    namespaces: NsHost,
    #[cfg(any(feature = "redis", feature = "tikv"))]
    ns: std::sync::OnceLock<String>,
}

impl Place {
    /// The empty directory of this place.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The run's PostgreSQL server.
    ///
    /// # Errors
    /// The run has no server (no PostgreSQL target was selected).
    #[cfg(feature = "pg")]
    pub fn server(&self) -> anyhow::Result<&crate::pg::PgServer> {
        self.server
            .as_deref()
            .context("this run has no PostgreSQL server (DATALAYER_PG_URL)")
    }

    /// This place's schema on the run's PostgreSQL server, created on the first
    /// call (`dl_bench_<run>_<target>_<n>`).
    ///
    /// # Errors
    /// There is no server (or the crate was built without the feature `pg`), or
    /// the schema cannot be created.
    pub fn schema(&self) -> anyhow::Result<String> {
        #[cfg(feature = "pg")]
        {
            if let Some(s) = self.schema.get() {
                return Ok(s.clone());
            }
            let s = self.server()?.create_schema(&self.tag)?;
            Ok(self.schema.get_or_init(|| s).clone())
        }
        #[cfg(not(feature = "pg"))]
        bail!(
            "a PostgreSQL schema for {} needs the cargo feature `pg`",
            self.tag
        )
    }

    /// This place's namespace on the section's key-value server, created on the
    /// first call (`dlbench_<run>_<target>_<n>`).
    ///
    /// # Errors
    /// The place has no namespace host (or the crate was built without the
    /// features `redis` and `tikv`), or the namespace cannot be made.
    pub fn namespace(&self) -> anyhow::Result<String> {
        #[cfg(any(feature = "redis", feature = "tikv"))]
        {
            if let Some(s) = self.ns.get() {
                return Ok(s.clone());
            }
            let host = self
                .namespaces
                .as_ref()
                .context("this place has no key-value server for a namespace")?;
            let s = host.create(&self.tag)?;
            Ok(self.ns.get_or_init(|| s).clone())
        }
        #[cfg(not(any(feature = "redis", feature = "tikv")))]
        bail!(
            "a namespace for {} needs the cargo feature `redis` or `tikv`",
            self.tag
        )
    }

    /// Drops the schema and removes the namespace (if one was created) and
    /// removes the directory.
    ///
    /// # Errors
    /// A clean-up fails.
    pub fn close(self) -> anyhow::Result<()> {
        #[cfg(any(feature = "redis", feature = "tikv"))]
        if let (Some(ns), Some(host)) = (self.ns.get(), &self.namespaces) {
            host.destroy(ns)?;
        }
        #[cfg(feature = "pg")]
        if let (Some(s), Some(server)) = (self.schema.get(), &self.server) {
            server.drop_schema(s)?;
        }
        self.dir.close().context("removing a benchmark temp dir")
    }
}

/// The targets of the default comparison, baseline first: datalayer on etch
/// (`etch://{dir}/etch`, fsync per commit) and on SQLite (WAL,
/// `synchronous=full`), datalayer on every extra `(name, url)` of `urls`, then
/// etchdb, redb, rusqlite and the control target `rusqlite-on-dl-schema`.
///
/// # Errors
/// A datalayer URL cannot be opened.
pub fn embedded(
    scratch: &Scratch,
    urls: &[(String, String)],
) -> anyhow::Result<Vec<Box<dyn Target>>> {
    let mut out: Vec<Box<dyn Target>> = vec![
        Box::new(datalayer::Datalayer::new(
            "datalayer-etch",
            datalayer::ETCH_URL,
            scratch,
        )?),
        Box::new(datalayer::Datalayer::new(
            "datalayer-sqlite",
            datalayer::SQLITE_URL,
            scratch,
        )?),
    ];
    for (name, url) in urls {
        out.push(Box::new(datalayer::Datalayer::new(
            name.clone(),
            url.clone(),
            scratch,
        )?));
    }
    out.push(Box::new(etchdb::Etchdb));
    out.push(Box::new(redb::Redb));
    out.push(Box::new(rusqlite::Rusqlite));
    out.push(Box::new(rusqlite::RusqliteOnDlSchema));
    Ok(out)
}

/// The targets of the PostgreSQL section, baseline first: datalayer on the
/// server (`DATALAYER_PG_URL` + `schema={schema}`), raw tokio-postgres, sqlx,
/// SeaORM, and the plain `SKIP LOCKED` queue (outbox only).
///
/// # Errors
/// datalayer cannot open the server URL.
#[cfg(feature = "pg")]
pub fn postgres(
    scratch: &Scratch,
    server: &crate::pg::PgServer,
) -> anyhow::Result<Vec<Box<dyn Target>>> {
    Ok(vec![
        Box::new(datalayer::Datalayer::new(
            "datalayer-pg",
            crate::pg::with_params(&server.url, "schema={schema}"),
            scratch,
        )?),
        Box::new(tokio_postgres::RawPg),
        Box::new(sqlx::Sqlx),
        Box::new(seaorm::SeaOrm),
        Box::new(pg_queue::PlainQueue),
    ])
}

/// The targets of the Redis section, baseline first: datalayer on the server
/// (`DATALAYER_REDIS_URL` + `namespace={ns}`, the table with two indexes) and raw
/// redis-rs. `scratch` must hand out namespaces on `server`.
///
/// # Errors
/// datalayer cannot open the server URL.
#[cfg(feature = "redis")]
pub fn redis(
    scratch: &Scratch,
    server: &Arc<crate::redis_server::RedisServer>,
) -> anyhow::Result<Vec<Box<dyn Target>>> {
    kv_section(
        scratch,
        "datalayer-redis",
        server.datalayer_url(),
        Box::new(redis_raw::RawRedis::new(server.clone())),
    )
}

/// The targets of the TiKV section, baseline first: datalayer on the cluster
/// (`tikv://<pd>?namespace={ns}`, the table with two indexes) and raw tikv-client.
/// `scratch` must hand out namespaces on `cluster`.
///
/// # Errors
/// datalayer cannot open the cluster URL.
#[cfg(feature = "tikv")]
pub fn tikv(
    scratch: &Scratch,
    cluster: &Arc<crate::tikv_cluster::TikvCluster>,
) -> anyhow::Result<Vec<Box<dyn Target>>> {
    kv_section(
        scratch,
        "datalayer-tikv",
        format!("tikv://{}?namespace={{ns}}", cluster.pd),
        Box::new(tikv_raw::RawTikv::new(cluster.clone())),
    )
}

/// The targets of a key-value section, baseline first: datalayer named `name` on
/// `url` (the table with two indexes), then the raw client `raw`.
///
/// # Errors
/// datalayer cannot open `url`.
#[cfg(any(feature = "redis", feature = "tikv"))]
fn kv_section(
    scratch: &Scratch,
    name: &str,
    url: String,
    raw: Box<dyn Target>,
) -> anyhow::Result<Vec<Box<dyn Target>>> {
    Ok(vec![
        Box::new(
            datalayer::Datalayer::new(name, url, scratch)?.with_shape(datalayer::Shape::TwoIndexes),
        ),
        raw,
    ])
}
