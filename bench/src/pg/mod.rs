//! The PostgreSQL section (cargo feature `pg`, flag `--pg`): datalayer on its
//! PostgreSQL engine next to raw tokio-postgres, sqlx and SeaORM, on one server,
//! in one process, with repetitions interleaved across targets.
//!
//! Every target gets its own schema `dl_bench_<run>_<target>` (the same random
//! `<run>` for all of them), holding the same table
//! `users(id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, age INT
//! NOT NULL)` with an index on `age`; a [`SchemaGuard`] drops them all at the end,
//! also when a target panics. Every target runs prepared statements: the engine
//! prepares its statements on every connection, the raw target prepares once,
//! sqlx (and SeaORM, which runs on sqlx) caches prepared statements per
//! connection.
//!
//! Rows (see [`PgWorkload`]):
//! 1. point read by primary key among N preloaded rows;
//! 2. M single-row INSERTs one after another inside ONE transaction;
//! 3. the same M inserts batched inside ONE transaction (each target's batching);
//! 4. one 1,000-row `insert_many` call;
//!
//! plus one row that only raw tokio-postgres runs (the same 1,000 rows with
//! `COPY ... FROM STDIN BINARY`: the ceiling of a bulk insert).
//!
//! The server is named by `DATALAYER_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Nothing asserts on timing; reads
//! are checked against the rows written, inserts by counting rows at the end.

mod datalayer_pg;
pub mod outbox;
mod raw;
mod report;
mod seaorm;
mod sqlx_peer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::runtime::Runtime;

use crate::stats::Stat;
use crate::workloads::User;

pub use report::pg_table;

/// Default server when `DATALAYER_PG_URL` is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Rows per insert repetition (M) and per `insert_many` call.
pub const INSERT_ROWS: usize = 1_000;

/// Fixed seed of the point-read ids.
const SEED: u64 = 0x5EED_0000_0000_00D6;

/// The table every target creates (datalayer's engine renders its own DDL from the
/// `DlUser` declaration: the same columns, primary key and index, its text columns
/// in the `C` collation; the catalog table `_dl_catalog` is its own).
pub const USERS_DDL: &str = "CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT NOT NULL, \
                             email TEXT NOT NULL, age INT NOT NULL); \
                             CREATE INDEX users_by_age ON users (age)";

/// The INSERT every raw-SQL target prepares (datalayer's engine renders the same
/// statement with quoted identifiers).
pub const INSERT_SQL: &str = "INSERT INTO users (id, name, email, age) VALUES ($1, $2, $3, $4)";

/// The point read every raw-SQL target prepares.
pub const SELECT_SQL: &str = "SELECT id, name, email, age FROM users WHERE id = $1";

/// How much work the PostgreSQL section does.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// Rows preloaded into every target's table (N).
    pub preload_rows: usize,
    /// Point reads per repetition.
    pub reads_per_rep: usize,
    /// Timed repetitions of the point reads.
    pub read_reps: usize,
    /// Timed repetitions of each insert row.
    pub insert_reps: usize,
}

impl PgConfig {
    /// Full run: N = 10,000, 10,000 reads x 7 reps, 7 reps of each insert row.
    pub fn full() -> Self {
        Self {
            preload_rows: 10_000,
            reads_per_rep: 10_000,
            read_reps: 7,
            insert_reps: 7,
        }
    }

    /// Quick run: N = 2,000, 2,000 reads x 3 reps, 3 reps of each insert row.
    pub fn quick() -> Self {
        Self {
            preload_rows: 2_000,
            reads_per_rep: 2_000,
            read_reps: 3,
            insert_reps: 3,
        }
    }
}

/// The rows of the PostgreSQL table, in run and print order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgWorkload {
    /// 1. Point read by primary key.
    PointRead,
    /// 2. M single-row INSERTs, one after another, in one transaction.
    InsertSequential,
    /// 3. The same M inserts, batched (pipelined where the client can), in one transaction.
    InsertBatch,
    /// 4. One `insert_many` call of 1,000 rows.
    InsertMany,
    /// 4'. The same 1,000 rows with `COPY FROM STDIN BINARY` (raw tokio-postgres only).
    Copy,
}

impl PgWorkload {
    /// Every row, in run order.
    pub const ALL: [PgWorkload; 5] = [
        PgWorkload::PointRead,
        PgWorkload::InsertSequential,
        PgWorkload::InsertBatch,
        PgWorkload::InsertMany,
        PgWorkload::Copy,
    ];

    /// Row label in the report.
    pub fn label(self) -> &'static str {
        match self {
            PgWorkload::PointRead => "1 point read by pk           reads/s",
            PgWorkload::InsertSequential => "2 1k inserts, sequential, 1 tx rows/s",
            PgWorkload::InsertBatch => "3 1k inserts, batched, 1 tx   rows/s",
            PgWorkload::InsertMany => "4 insert_many 1k rows        rows/s",
            PgWorkload::Copy => "4' COPY BINARY 1k rows       rows/s",
        }
    }
}

/// One client library under test, connected to its own schema.
///
/// Methods block on the target's tokio runtime once per call (one repetition),
/// and panic on a database error: the benchmark cannot go on from one.
pub trait PgTarget {
    /// Column header.
    fn name(&self) -> &'static str;

    /// Reads the row with primary key `id` (decoded), or `None`.
    fn point_read(&self, id: i64) -> Option<User>;

    /// Point-reads every id in `ids`, one after another; returns how many were found.
    fn point_reads(&self, ids: &[i64]) -> usize;

    /// Inserts `rows` with one single-row INSERT each, awaiting each before the
    /// next, inside one transaction.
    fn insert_sequential(&self, rows: &[User]);

    /// Inserts `rows` inside one transaction, batched the way this client batches.
    fn insert_batch(&self, rows: &[User]);

    /// Inserts `rows` with the client's one-call multi-row insert.
    fn insert_many(&self, rows: &[User]);

    /// Inserts `rows` with `COPY FROM STDIN BINARY` in one transaction; `false`
    /// (nothing done) when the target does not implement it.
    fn copy_in(&self, _rows: &[User]) -> bool {
        false
    }

    /// Number of rows in the table.
    fn count(&self) -> i64;

    /// Closes connections (untimed).
    fn close(&self) {}
}

/// Everything measured for one target.
#[derive(Debug, Clone)]
pub struct PgResults {
    /// Display name.
    pub name: &'static str,
    /// Connect, create and preload wall time.
    pub setup: Duration,
    /// One entry per row the target ran.
    pub stats: Vec<(PgWorkload, Stat)>,
}

impl PgResults {
    /// The figure for `w`, if the target ran it.
    pub fn get(&self, w: PgWorkload) -> Option<Stat> {
        self.stats.iter().find(|(x, _)| *x == w).map(|(_, s)| *s)
    }
}

/// The server URL: `DATALAYER_PG_URL`, or [`DEFAULT_URL`].
pub fn base_url() -> String {
    std::env::var("DATALAYER_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// `url` with `params` appended to its query string.
pub fn with_params(url: &str, params: &str) -> String {
    if url.contains('?') {
        format!("{url}&{params}")
    } else {
        format!("{url}?{params}")
    }
}

/// What a target's setup gets: the runtime, the server's connection settings and
/// its own schema.
pub struct Conn {
    /// The runtime every target blocks on.
    pub rt: Arc<Runtime>,
    /// `DATALAYER_PG_URL` as given (datalayer's engine parameters allowed).
    pub url: String,
    /// The server settings as tokio-postgres understands them (engine parameters
    /// removed, through `PgOptions::from_url`).
    pub config: tokio_postgres::Config,
    /// This target's schema (already created, empty).
    pub schema: String,
    /// The engine's `pipeline_depth` for this URL (32 unless the URL sets it): the
    /// window the raw target's `insert_many` uses too.
    pub pipeline_depth: usize,
}

/// Drops the run's schemas (`CASCADE`) when dropped, also while unwinding from a
/// panic, through its own connection.
pub struct SchemaGuard {
    rt: Arc<Runtime>,
    client: tokio_postgres::Client,
    schemas: Vec<String>,
}

impl SchemaGuard {
    /// Creates `schema` and remembers to drop it.
    fn create(&mut self, schema: &str) -> anyhow::Result<()> {
        self.schemas.push(schema.to_owned());
        self.rt
            .block_on(
                self.client
                    .batch_execute(&format!("CREATE SCHEMA \"{schema}\"")),
            )
            .with_context(|| format!("creating schema {schema}"))
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        for s in &self.schemas {
            let sql = format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE");
            match self.rt.block_on(self.client.batch_execute(&sql)) {
                Ok(()) => eprintln!("  dropped schema {s}"),
                Err(e) => eprintln!("  WARNING: could not drop schema {s} ({e}); run `{sql}`"),
            }
        }
    }
}

/// Tells how to start a server and fails.
fn unreachable(url: &str, e: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach PostgreSQL at {} ({e}).\n\
         Start a server (Debian: `service postgresql start`, or `pg_ctlcluster 15 main start`; \
         trust auth for user postgres and a database `test`: `createdb -U postgres test`), \
         or point DATALAYER_PG_URL at one.",
        datalayer::redact(url)
    )
}

/// A lower-case random suffix for this run's schema names.
fn run_id() -> String {
    let mut r = rand::rng();
    (0..8)
        .map(|_| (b'a' + r.random_range(0..26)) as char)
        .collect()
}

/// The setup functions of every target, datalayer first (the baseline of the
/// ratio columns), then raw tokio-postgres, sqlx, SeaORM.
type SetupFn = fn(&Conn, &[User]) -> anyhow::Result<Box<dyn PgTarget>>;

fn setups() -> [(&'static str, SetupFn); 4] {
    [
        ("dl", datalayer_pg::setup),
        ("raw", raw::setup),
        ("sqlx", sqlx_peer::setup),
        ("sea", seaorm::setup),
    ]
}

/// One open target during the run.
struct Live {
    target: Box<dyn PgTarget>,
    next_id: i64,
    setup: Duration,
    stats: Vec<(PgWorkload, Stat)>,
}

impl Live {
    fn fresh_rows(&mut self, n: usize) -> Vec<User> {
        let first = self.next_id;
        self.next_id += n as i64;
        (first..first + n as i64).map(User::synthetic).collect()
    }
}

/// Server facts for the header: version, `fsync`, `synchronous_commit`.
pub struct ServerInfo {
    /// `server_version`.
    pub version: String,
    /// `fsync` and `synchronous_commit`, as `SHOW` prints them.
    pub durability: String,
}

/// Runs the PostgreSQL section: connects, creates the schemas, sets up every
/// target, runs the rows with interleaved repetitions, checks row counts, drops
/// the schemas.
///
/// # Errors
/// The server cannot be reached (the message says how to start one), or a
/// schema cannot be created.
pub fn run(cfg: &PgConfig) -> anyhow::Result<(ServerInfo, Vec<PgResults>)> {
    let rt = crate::peers::datalayer_etch::runtime();
    let url = base_url();
    let opts = datalayer::pg::PgOptions::from_url(&url)
        .map_err(|e| anyhow::anyhow!("DATALAYER_PG_URL: {e}"))?;
    let (config, pipeline_depth) = (opts.config, opts.pipeline_depth);
    let client = rt
        .block_on(async {
            let (client, conn) = tokio::time::timeout(
                Duration::from_secs(5),
                config.connect(tokio_postgres::NoTls),
            )
            .await
            .map_err(|_| unreachable(&url, &"timed out after 5 s"))?
            .map_err(|e| unreachable(&url, &e))?;
            rt.spawn(conn);
            // A leftover lock (a panicked target's open transaction) must not hang
            // the clean-up forever.
            client
                .batch_execute("SET lock_timeout = '15s'")
                .await
                .context("SET lock_timeout")?;
            anyhow::Ok(client)
        })
        .context("connecting to PostgreSQL")?;
    let info = rt.block_on(async {
        let show = |name: &'static str| {
            let client = &client;
            async move {
                let rows = client.simple_query(&format!("SHOW {name}")).await?;
                let v = rows.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                });
                Ok::<_, tokio_postgres::Error>(v.unwrap_or_default())
            }
        };
        anyhow::Ok(ServerInfo {
            version: show("server_version").await?,
            durability: format!(
                "fsync={}, synchronous_commit={}",
                show("fsync").await?,
                show("synchronous_commit").await?
            ),
        })
    })?;
    let mut guard = SchemaGuard {
        rt: rt.clone(),
        client,
        schemas: Vec::new(),
    };
    let run = run_id();
    eprintln!(
        "PostgreSQL {} at {} ({}), schemas dl_bench_{run}_*, pipeline_depth {pipeline_depth}",
        info.version,
        datalayer::redact(&url),
        info.durability
    );

    let preload: Vec<User> = (1..=cfg.preload_rows as i64).map(User::synthetic).collect();
    let mut rng = StdRng::seed_from_u64(SEED);
    let read_ids: Vec<i64> = (0..cfg.reads_per_rep)
        .map(|_| rng.random_range(1..=cfg.preload_rows as i64))
        .collect();

    let mut live: Vec<Live> = Vec::new();
    for (tag, setup) in setups() {
        let schema = format!("dl_bench_{run}_{tag}");
        guard.create(&schema)?;
        let conn = Conn {
            rt: rt.clone(),
            url: url.clone(),
            config: config.clone(),
            schema,
            pipeline_depth,
        };
        let t0 = Instant::now();
        let target = setup(&conn, &preload)?;
        let setup = t0.elapsed();
        eprintln!("  {}: setup {:.2}s", target.name(), setup.as_secs_f64());
        live.push(Live {
            target,
            next_id: cfg.preload_rows as i64 + 1,
            setup,
            stats: Vec::new(),
        });
    }

    let result = measure(cfg, &read_ids, &mut live);
    for l in &live {
        l.target.close();
    }
    let results = live
        .into_iter()
        .map(|l| PgResults {
            name: l.target.name(),
            setup: l.setup,
            stats: l.stats,
        })
        .collect();
    result?;
    drop(guard);
    Ok((info, results))
}

/// Warm-up (with correctness checks), interleaved timed repetitions, final row
/// counts.
fn measure(cfg: &PgConfig, read_ids: &[i64], live: &mut [Live]) -> anyhow::Result<()> {
    for w in PgWorkload::ALL {
        // Untimed warm-up: prepares statements, fills caches, checks results.
        let mut runs = vec![true; live.len()];
        for (i, l) in live.iter_mut().enumerate() {
            match w {
                PgWorkload::PointRead => {
                    for &id in &read_ids[..read_ids.len().min(200)] {
                        let got = l.target.point_read(id);
                        if got.as_ref() != Some(&User::synthetic(id)) {
                            bail!("{}: point read of {id} returned {got:?}", l.target.name());
                        }
                    }
                    let warm = &read_ids[..read_ids.len().min(1_000)];
                    if l.target.point_reads(warm) != warm.len() {
                        bail!("{}: point reads missed rows", l.target.name());
                    }
                }
                _ => runs[i] = one_rep(l, w, read_ids).is_some(),
            }
        }
        let reps = match w {
            PgWorkload::PointRead => cfg.read_reps,
            _ => cfg.insert_reps,
        };
        let ops = match w {
            PgWorkload::PointRead => read_ids.len(),
            _ => INSERT_ROWS,
        };
        let mut times = vec![Vec::with_capacity(reps); live.len()];
        for rep in 0..reps {
            for k in 0..live.len() {
                let i = (rep + k) % live.len();
                if runs[i]
                    && let Some(t) = one_rep(&mut live[i], w, read_ids)
                {
                    times[i].push(t);
                }
            }
        }
        for (l, times) in live.iter_mut().zip(&times) {
            if times.is_empty() {
                continue;
            }
            let stat = Stat::from_samples(ops, times);
            eprintln!(
                "  {:<16} {:<38} median {:>10.0}  MAD {:>4.1}%  min {:>10.0}  max {:>10.0}",
                l.target.name(),
                w.label(),
                stat.median,
                stat.spread() * 100.0,
                stat.min,
                stat.max
            );
            l.stats.push((w, stat));
        }
    }
    for l in live.iter() {
        let want = l.next_id - 1;
        let got = l.target.count();
        if got != want {
            bail!(
                "{}: {got} rows in the table at the end, expected {want}",
                l.target.name()
            );
        }
    }
    Ok(())
}

/// Times one repetition of `w` on `l` (rows are made before the clock starts);
/// `None` when the target does not run `w`.
fn one_rep(l: &mut Live, w: PgWorkload, read_ids: &[i64]) -> Option<Duration> {
    let rows = match w {
        PgWorkload::PointRead => Vec::new(),
        _ => l.fresh_rows(INSERT_ROWS),
    };
    let t = &l.target;
    let t0 = Instant::now();
    match w {
        PgWorkload::PointRead => {
            let found = t.point_reads(read_ids);
            let elapsed = t0.elapsed();
            assert_eq!(
                found,
                read_ids.len(),
                "{}: point read missed a row",
                t.name()
            );
            return Some(elapsed);
        }
        PgWorkload::InsertSequential => t.insert_sequential(&rows),
        PgWorkload::InsertBatch => t.insert_batch(&rows),
        PgWorkload::InsertMany => t.insert_many(&rows),
        PgWorkload::Copy => {
            if !t.copy_in(&rows) {
                // Nothing was inserted: give the ids back.
                l.next_id -= INSERT_ROWS as i64;
                return None;
            }
        }
    }
    Some(t0.elapsed())
}
