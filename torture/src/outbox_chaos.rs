//! `outbox-chaos`: outbox consumers in worker processes, killed at failpoints,
//! stopped past their lease and run through engine restarts.
//!
//! The parent emits events with unique payloads over [`PARTITIONS`] partitions (all
//! acknowledged: emitted in committed transactions), while worker processes (hidden
//! subcommand `outbox-chaos-child`) consume them in one consumer group. Between
//! chunks of events the parent applies one fault, in a seeded random order:
//! - **kill -9 at a failpoint**: a worker started with one failpoint armed (named in
//!   `datalayer_outbox::failpoints`, plus [`MID_HANDLER`] inside the handler's own
//!   transaction) at its k-th hit prints a marker and blocks there; the parent
//!   SIGKILLs it on the marker, so the kill lands exactly at that point, and starts a
//!   replacement;
//! - **SIGSTOP** a worker holding leases for 1.5 times the lease TTL, then SIGCONT;
//! - **engine restart** (PostgreSQL private instance only): `pg_ctl -m immediate`.
//!
//! The handler records every call in `torture_handled` in a transaction of its own
//! (so duplicates stay visible): payload, partition, seq, worker, a per-process call
//! counter, and the partition's lease as the store shows it at the call (owner,
//! expiry, fencing token) — the handler API does not expose the lease's token, so
//! the handler reads it from `_dl_outbox_groups`. A trigger on `_dl_outbox_groups`
//! appends every lease acquisition (fencing changed) and checkpoint (high changed) to
//! `torture_audit`, in the order the store applied them.
//!
//! After the faults a clean worker drains everything; then the checks: every emitted
//! event handled at least once (duplicates counted); no checkpoint with a fencing token
//! lower than a lease acquisition before it, and `high` never moving back; within each
//! lease (partition, fencing token, worker) events first handled in seq order; and no
//! handler call outside a live lease of its worker (owner in the store is the worker,
//! and the stored expiry is after the call started): a worker stopped past its TTL must
//! not deliver concurrently with the new holder.
//!
//! SQLite (one file, several processes) and PostgreSQL (the shared server in a private
//! schema; the restarts on a private instance). etch is single-process.

use crate::common::{self, Ctx, Outcome, PgSchema};
use crate::pg::PrivatePg;
use datalayer::outbox::{self, Event, failpoints};
use datalayer::prelude::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::Rng;
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// The topic.
const TOPIC: &str = "torture_chaos";
/// The consumer group.
const GROUP: &str = "chaos";
/// Partitions of the topic.
pub const PARTITIONS: u32 = 32;
/// Worker processes running at once.
const WORKERS: usize = 3;
/// The failpoint inside the handler's transaction (after reading the lease, before
/// writing the record): a kill mid-handler.
pub const MID_HANDLER: &str = "torture::mid_handler";
/// Events per emitting transaction.
const EMIT_BATCH: usize = 50;
/// Emitting transactions run at once.
const EMIT_TASKS: usize = 4;

/// Arguments of `outbox-chaos`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Args {
    /// Events per engine (default: 3,000 with --quick, else 100,000).
    #[arg(long)]
    pub events: Option<u64>,
    /// kill -9 at failpoints per engine (default: 8 with --quick, else 50).
    #[arg(long)]
    pub kills: Option<u64>,
    /// SIGSTOPs past the lease TTL per engine (default: 2 with --quick, else 10).
    #[arg(long)]
    pub stops: Option<u64>,
    /// Restarts of the private PostgreSQL instance (default: 1 with --quick, else 5).
    #[arg(long)]
    pub restarts: Option<u64>,
}

/// Arguments of the hidden worker process.
#[derive(clap::Args, Debug, Clone)]
pub struct ChildArgs {
    /// The engine URL.
    #[arg(long)]
    pub url: String,
    /// Where the handler writes its records: `sqlite:<path>` or `pg:<schema>:<url>`.
    #[arg(long)]
    pub raw: String,
    /// The worker id.
    #[arg(long)]
    pub worker: String,
    /// Lease TTL in milliseconds.
    #[arg(long)]
    pub ttl_ms: u64,
    /// The failpoint to arm.
    #[arg(long)]
    pub fail: Option<String>,
    /// Block at this hit of the failpoint (1 = the first).
    #[arg(long, default_value_t = 1)]
    pub hit: u64,
}

/// Progress lines on stderr with `TORTURE_VERBOSE` set.
macro_rules! verbose {
    ($($a:tt)*) => {
        if std::env::var_os("TORTURE_VERBOSE").is_some() {
            eprintln!("   [{}] {}", chrono_s(), format!($($a)*));
        }
    };
}

fn chrono_s() -> String {
    format!("{:.3}", now_us() as f64 / 1e6 % 1000.0)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------
// Raw access to the store (records, audit, lease reads), per engine.

/// Where the records live, as the child receives it.
#[derive(Clone, Debug)]
enum RawSpec {
    Sqlite(PathBuf),
    Pg { schema: String, url: String },
}

impl RawSpec {
    fn encode(&self) -> String {
        match self {
            RawSpec::Sqlite(p) => format!("sqlite:{}", p.display()),
            RawSpec::Pg { schema, url } => format!("pg:{schema}:{url}"),
        }
    }
    fn decode(s: &str) -> anyhow::Result<RawSpec> {
        if let Some(p) = s.strip_prefix("sqlite:") {
            Ok(RawSpec::Sqlite(PathBuf::from(p)))
        } else if let Some(rest) = s.strip_prefix("pg:") {
            let (schema, url) = rest
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("bad raw spec {s:?}"))?;
            Ok(RawSpec::Pg {
                schema: schema.to_owned(),
                url: url.to_owned(),
            })
        } else {
            anyhow::bail!("bad raw spec {s:?}")
        }
    }
}

/// One raw connection.
enum Raw {
    /// In a mutex only to be `Sync` (each is used by one task at a time).
    Sqlite(std::sync::Mutex<rusqlite::Connection>),
    Pg(tokio_postgres::Client),
}

async fn raw_open(spec: &RawSpec) -> anyhow::Result<Raw> {
    match spec {
        RawSpec::Sqlite(p) => {
            let c = rusqlite::Connection::open(p)?;
            c.busy_timeout(Duration::from_secs(30))?;
            Ok(Raw::Sqlite(std::sync::Mutex::new(c)))
        }
        RawSpec::Pg { schema, url } => {
            let c = crate::pg::raw_client(url).await?;
            c.batch_execute(&format!("SET search_path TO \"{schema}\""))
                .await?;
            Ok(Raw::Pg(c))
        }
    }
}

const PG_SETUP: &str = r#"
CREATE TABLE torture_handled (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL,
  part INT NOT NULL, seq BIGINT NOT NULL, worker TEXT NOT NULL, n BIGINT NOT NULL,
  owner TEXT NOT NULL, fencing BIGINT NOT NULL, until_us BIGINT NOT NULL,
  start_us BIGINT NOT NULL);
CREATE TABLE torture_audit (id BIGSERIAL PRIMARY KEY, part INT NOT NULL,
  old_owner TEXT NOT NULL, new_owner TEXT NOT NULL, old_fencing BIGINT NOT NULL,
  new_fencing BIGINT NOT NULL, old_high BIGINT NOT NULL, new_high BIGINT NOT NULL,
  at_us BIGINT NOT NULL);
CREATE FUNCTION torture_audit_fn() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  INSERT INTO torture_audit (part, old_owner, new_owner, old_fencing, new_fencing,
    old_high, new_high, at_us)
  VALUES (NEW.part, OLD.lease_owner, NEW.lease_owner, OLD.fencing, NEW.fencing,
    OLD.high, NEW.high, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
  RETURN NULL;
END
$f$;
CREATE TRIGGER torture_audit AFTER UPDATE ON _dl_outbox_groups FOR EACH ROW
  WHEN (OLD.high IS DISTINCT FROM NEW.high OR OLD.fencing IS DISTINCT FROM NEW.fencing)
  EXECUTE FUNCTION torture_audit_fn();
"#;

const SQLITE_SETUP: &str = r#"
CREATE TABLE torture_handled (id INTEGER PRIMARY KEY AUTOINCREMENT, payload TEXT NOT NULL,
  part INTEGER NOT NULL, seq INTEGER NOT NULL, worker TEXT NOT NULL, n INTEGER NOT NULL,
  owner TEXT NOT NULL, fencing INTEGER NOT NULL, until_us INTEGER NOT NULL,
  start_us INTEGER NOT NULL);
CREATE TABLE torture_audit (id INTEGER PRIMARY KEY AUTOINCREMENT, part INTEGER NOT NULL,
  old_owner TEXT NOT NULL, new_owner TEXT NOT NULL, old_fencing INTEGER NOT NULL,
  new_fencing INTEGER NOT NULL, old_high INTEGER NOT NULL, new_high INTEGER NOT NULL,
  at_us INTEGER NOT NULL);
CREATE TRIGGER torture_audit AFTER UPDATE ON _dl_outbox_groups
  WHEN OLD.high IS NOT NEW.high OR OLD.fencing IS NOT NEW.fencing
BEGIN
  INSERT INTO torture_audit (part, old_owner, new_owner, old_fencing, new_fencing,
    old_high, new_high, at_us)
  VALUES (NEW.part, OLD.lease_owner, NEW.lease_owner, OLD.fencing, NEW.fencing,
    OLD.high, NEW.high, CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER));
END;
"#;

const LEASE_SQL_PG: &str = "SELECT lease_owner, lease_until_us, fencing FROM _dl_outbox_groups WHERE grp = $1 AND topic = $2 AND part = $3";
const LEASE_SQL_SQLITE: &str = "SELECT lease_owner, lease_until_us, fencing FROM _dl_outbox_groups WHERE grp = ?1 AND topic = ?2 AND part = ?3";
const INSERT_SQL_PG: &str = "INSERT INTO torture_handled (payload, part, seq, worker, n, owner, fencing, until_us, start_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const INSERT_SQL_SQLITE: &str = "INSERT INTO torture_handled (payload, part, seq, worker, n, owner, fencing, until_us, start_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// One handler call as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    /// The event's payload (unique per event).
    pub payload: String,
    /// Partition and seq of the delivered event.
    pub part: i32,
    /// The event's seq.
    pub seq: i64,
    /// The worker that ran the handler.
    pub worker: String,
    /// The worker's call counter (order of its calls).
    pub n: i64,
    /// The partition's lease owner as the store showed it during the call.
    pub owner: String,
    /// The lease's fencing token then.
    pub fencing: i64,
    /// The stored lease expiry then.
    pub until_us: i64,
    /// When the handler call started (wall clock, µs).
    pub start_us: i64,
}

/// One audited update of a group row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    /// Store order.
    pub id: i64,
    /// Partition.
    pub part: i32,
    /// Lease owner before and after.
    pub old_owner: String,
    /// Lease owner after.
    pub new_owner: String,
    /// Fencing token before.
    pub old_fencing: i64,
    /// Fencing token after.
    pub new_fencing: i64,
    /// `high` before.
    pub old_high: i64,
    /// `high` after.
    pub new_high: i64,
    /// When the store applied it (the store's clock, µs since the epoch).
    pub at_us: i64,
}

impl Raw {
    async fn setup(&self) -> anyhow::Result<()> {
        match self {
            Raw::Sqlite(c) => tokio::task::block_in_place(|| lock(c).execute_batch(SQLITE_SETUP))?,
            Raw::Pg(c) => c.batch_execute(PG_SETUP).await?,
        }
        Ok(())
    }

    async fn handled(&self) -> anyhow::Result<Vec<Handled>> {
        const Q: &str = "SELECT payload, part, seq, worker, n, owner, fencing, until_us, start_us FROM torture_handled ORDER BY id";
        self.rows(Q, |r| {
            Ok(Handled {
                payload: r.text(0)?,
                part: i32::try_from(r.int(1)?)?,
                seq: r.int(2)?,
                worker: r.text(3)?,
                n: r.int(4)?,
                owner: r.text(5)?,
                fencing: r.int(6)?,
                until_us: r.int(7)?,
                start_us: r.int(8)?,
            })
        })
        .await
    }

    async fn audit(&self) -> anyhow::Result<Vec<Audit>> {
        const Q: &str = "SELECT id, part, old_owner, new_owner, old_fencing, new_fencing, old_high, new_high, at_us FROM torture_audit ORDER BY id";
        self.rows(Q, |r| {
            Ok(Audit {
                id: r.int(0)?,
                part: i32::try_from(r.int(1)?)?,
                old_owner: r.text(2)?,
                new_owner: r.text(3)?,
                old_fencing: r.int(4)?,
                new_fencing: r.int(5)?,
                old_high: r.int(6)?,
                new_high: r.int(7)?,
                at_us: r.int(8)?,
            })
        })
        .await
    }

    /// Every row of `sql` (no parameters), each built by `make` from its columns.
    async fn rows<T>(
        &self,
        sql: &str,
        make: fn(&dyn Cols) -> anyhow::Result<T>,
    ) -> anyhow::Result<Vec<T>> {
        match self {
            Raw::Sqlite(c) => tokio::task::block_in_place(|| {
                let c = lock(c);
                let mut s = c.prepare(sql)?;
                let mut rows = s.query([])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(make(r)?);
                }
                Ok(out)
            }),
            Raw::Pg(c) => c.query(sql, &[]).await?.iter().map(|r| make(r)).collect(),
        }
    }

    /// How many distinct payloads were handled.
    async fn distinct_handled(&self) -> anyhow::Result<i64> {
        const Q: &str = "SELECT count(DISTINCT payload) FROM torture_handled";
        Ok(match self {
            Raw::Sqlite(c) => {
                tokio::task::block_in_place(|| lock(c).query_row(Q, [], |r| r.get::<_, i64>(0)))?
            }
            Raw::Pg(c) => c.query_one(Q, &[]).await?.get(0),
        })
    }

    /// Live lease holders: worker → partitions held.
    async fn holders(&self) -> anyhow::Result<HashMap<String, i64>> {
        let now = now_us();
        let mut out = HashMap::new();
        match self {
            Raw::Sqlite(c) => {
                let rows = tokio::task::block_in_place(|| -> rusqlite::Result<Vec<(String, i64)>> {
                    let c = lock(c);
                    let mut s = c.prepare(
                        "SELECT lease_owner, count(*) FROM _dl_outbox_groups WHERE lease_until_us > ?1 GROUP BY lease_owner",
                    )?;
                    let rows = s.query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    rows.collect()
                })?;
                out.extend(rows);
            }
            Raw::Pg(c) => {
                for r in c
                    .query(
                        "SELECT lease_owner, count(*) FROM _dl_outbox_groups WHERE lease_until_us > $1 GROUP BY lease_owner",
                        &[&now],
                    )
                    .await?
                {
                    out.insert(r.get(0), r.get(1));
                }
            }
        }
        Ok(out)
    }
}

/// The columns of one row of a raw query, from either driver.
trait Cols {
    /// An integer column (INTEGER, INT4 or INT8).
    fn int(&self, i: usize) -> anyhow::Result<i64>;
    /// A text column.
    fn text(&self, i: usize) -> anyhow::Result<String>;
}

impl Cols for rusqlite::Row<'_> {
    fn int(&self, i: usize) -> anyhow::Result<i64> {
        Ok(self.get(i)?)
    }
    fn text(&self, i: usize) -> anyhow::Result<String> {
        Ok(self.get(i)?)
    }
}

impl Cols for tokio_postgres::Row {
    fn int(&self, i: usize) -> anyhow::Result<i64> {
        match self.try_get::<_, i64>(i) {
            Ok(v) => Ok(v),
            Err(_) => Ok(i64::from(self.try_get::<_, i32>(i)?)),
        }
    }
    fn text(&self, i: usize) -> anyhow::Result<String> {
        Ok(self.try_get(i)?)
    }
}

fn lock(
    c: &std::sync::Mutex<rusqlite::Connection>,
) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------
// The worker process.

/// Arms `name` to block at its `hit`-th evaluation, after printing
/// `FAILPOINT <name>` on stdout (the parent SIGKILLs the process on that line).
fn arm(name: &str, hit: u64) -> anyhow::Result<()> {
    let count = AtomicU64::new(0);
    let label = name.to_owned();
    fail::cfg_callback(name, move || {
        if count.fetch_add(1, Ordering::SeqCst) + 1 == hit {
            {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "FAILPOINT {label}");
                let _ = out.flush();
            }
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    })
    .map_err(|e| anyhow::anyhow!("arming {name}: {e}"))
}

/// The handler's connections (one per concurrent partition), re-opened after errors.
struct Recorder {
    spec: RawSpec,
    worker: String,
    calls: AtomicI64,
    conns: Vec<tokio::sync::Mutex<Option<Raw>>>,
}

impl Recorder {
    async fn record(&self, ev: &Event) -> anyhow::Result<()> {
        let start_us = now_us();
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let payload = String::from_utf8_lossy(&ev.payload).into_owned();
        let part = ev.partition as i32;
        let mut slot = self.conns[ev.partition as usize % self.conns.len()]
            .lock()
            .await;
        if slot.is_none() {
            *slot = Some(raw_open(&self.spec).await?);
        }
        let r = match slot.as_mut().expect("opened") {
            Raw::Sqlite(_) => {
                // On a blocking thread: the consumer runs the rounds of its partitions in
                // one task, which must not block while another round holds the write
                // lock. (So a cancelled call still finishes its transaction.)
                let Some(Raw::Sqlite(c)) = slot.take() else {
                    unreachable!()
                };
                let worker = self.worker.clone();
                let seq = ev.seq;
                // The consumer cancels a call by dropping its future (lease ended or
                // released); the blocking transaction then rolls back instead of
                // committing, as an async handler's would.
                let cancelled = Arc::new(AtomicBool::new(false));
                let _guard = CancelOnDrop(cancelled.clone());
                let (c, r) = tokio::task::spawn_blocking(move || {
                    let mut c = c;
                    let r = sqlite_record(
                        c.get_mut()
                            .unwrap_or_else(std::sync::PoisonError::into_inner),
                        &payload,
                        part,
                        seq,
                        &worker,
                        n,
                        start_us,
                        &cancelled,
                    );
                    (c, r)
                })
                .await?;
                *slot = Some(Raw::Sqlite(c));
                r
            }
            Raw::Pg(c) => {
                async {
                    let tx = c.transaction().await?;
                    let row = tx.query_one(LEASE_SQL_PG, &[&GROUP, &TOPIC, &part]).await?;
                    let (owner, until_us, fencing): (String, i64, i64) =
                        (row.get(0), row.get(1), row.get(2));
                    fail::fail_point!(MID_HANDLER);
                    tx.execute(
                        INSERT_SQL_PG,
                        &[
                            &payload,
                            &part,
                            &ev.seq,
                            &self.worker,
                            &n,
                            &owner,
                            &fencing,
                            &until_us,
                            &start_us,
                        ],
                    )
                    .await?;
                    tx.commit().await?;
                    anyhow::Ok(())
                }
                .await
            }
        };
        if r.is_err() {
            // Re-open on the next call (the connection may be gone: engine restart).
            *slot = None;
        }
        r
    }
}

/// Sets its flag when dropped (the handler's future was dropped: cancelled, or done).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Reads the parent's commands on stdin (`ARM <failpoint> <hit>`: arm it now); the
/// receiver resolves when stdin reaches its end: the parent's graceful stop.
fn stdin_eof() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        let stdin = std::io::stdin();
        while stdin.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let mut words = line.split_whitespace();
            if let (Some("ARM"), Some(name), Some(hit)) = (words.next(), words.next(), words.next())
            {
                match hit.parse() {
                    Ok(hit) => {
                        if let Err(e) = arm(name, hit) {
                            eprintln!("worker: {e:#}");
                        }
                    }
                    Err(e) => eprintln!("worker: bad hit {hit:?}: {e}"),
                }
            }
            line.clear();
        }
        let _ = tx.send(());
    });
    rx
}

/// The handler's transaction on SQLite: read the lease, record the call.
#[allow(clippy::too_many_arguments)]
fn sqlite_record(
    c: &mut rusqlite::Connection,
    payload: &str,
    part: i32,
    seq: i64,
    worker: &str,
    n: i64,
    start_us: i64,
    cancelled: &AtomicBool,
) -> anyhow::Result<()> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (owner, until_us, fencing): (String, i64, i64) = tx.query_row(
        LEASE_SQL_SQLITE,
        rusqlite::params![GROUP, TOPIC, part],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    fail::fail_point!(MID_HANDLER);
    tx.execute(
        INSERT_SQL_SQLITE,
        rusqlite::params![
            payload, part, seq, worker, n, owner, fencing, until_us, start_us
        ],
    )?;
    if cancelled.load(Ordering::SeqCst) {
        // Dropping `tx` rolls back.
        anyhow::bail!("cancelled");
    }
    tx.commit()?;
    Ok(())
}

/// The worker process: consumes until its stdin closes (or it is killed).
///
/// # Errors
/// A failed start; errors while running are the consumer's (logged, retried).
pub async fn child(args: ChildArgs) -> anyhow::Result<()> {
    // The consumer's warnings (failed rounds, lost leases) go to the worker's log.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    if let Some(name) = &args.fail {
        arm(name, args.hit)?;
    }
    let spec = RawSpec::decode(&args.raw)?;
    let db = datalayer::builder(&args.url).outbox().connect().await?;
    let concurrency = 4;
    let rec = Arc::new(Recorder {
        spec,
        worker: args.worker.clone(),
        calls: AtomicI64::new(0),
        conns: (0..concurrency)
            .map(|_| tokio::sync::Mutex::new(None))
            .collect(),
    });
    let stop = Arc::new(tokio::sync::Notify::new());
    {
        let stop = stop.clone();
        let eof = stdin_eof();
        tokio::spawn(async move {
            let _ = eof.await;
            eprintln!("worker: stdin closed; stopping");
            stop.notify_one();
        });
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY")?;
        out.flush()?;
    }
    let mut tries = 0;
    loop {
        let rec = rec.clone();
        let stop = stop.clone();
        let r = db
            .consumer(GROUP, TOPIC)
            .worker_id(args.worker.clone())
            .concurrency(concurrency)
            .lease_ttl(Duration::from_millis(args.ttl_ms))
            .poll_interval(Duration::from_millis(20))
            .batch_size(64)
            .max_attempts(1_000_000)
            .backoff(Duration::from_millis(10), Duration::from_millis(200))
            .run(
                move |ev| {
                    let rec = rec.clone();
                    async move {
                        rec.record(&ev)
                            .await
                            .map_err(|e| datalayer::Error::engine("torture", e.to_string()))
                    }
                },
                async move {
                    // `notify_one` stores a permit: an EOF before this wait is not lost.
                    stop.notified().await;
                },
            )
            .await;
        match r {
            // A start that met a locked store (SQLite: other workers writing): again.
            Err(e) if e.is_retryable() && tries < 50 => {
                tries += 1;
                eprintln!("worker start failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => {
                eprintln!("worker: consumer ended: {r:?}");
                r?;
                break;
            }
        }
    }
    db.close().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// The checks (pure, unit-tested below).

/// Coverage of the emitted events by the handled ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Emitted events never handled.
    pub missing: Vec<String>,
    /// Handler calls beyond the first per event.
    pub duplicates: u64,
    /// Handled events that were not emitted, or with another partition or seq.
    pub foreign: Vec<String>,
}

/// `emitted`: payload → (partition, seq) of acknowledged events; `maybe`: payloads
/// whose emit outcome is unknown (a commit cut by a restart), which may or may not be
/// handled.
pub fn check_coverage(
    emitted: &HashMap<String, (i32, i64)>,
    maybe: &HashSet<String>,
    handled: &[Handled],
) -> Coverage {
    let mut count: HashMap<&str, u64> = HashMap::new();
    let mut c = Coverage::default();
    for h in handled {
        *count.entry(&h.payload).or_default() += 1;
        match emitted.get(&h.payload) {
            Some(&(part, seq)) if (part, seq) != (h.part, h.seq) => c.foreign.push(format!(
                "{} handled as partition {} seq {}, emitted as partition {part} seq {seq}",
                h.payload, h.part, h.seq
            )),
            Some(_) => {}
            None if maybe.contains(&h.payload) => {}
            None => c
                .foreign
                .push(format!("{} handled but never emitted", h.payload)),
        }
    }
    c.duplicates = count.values().map(|n| n - 1).sum();
    let mut missing: Vec<(&(i32, i64), &String)> = emitted
        .iter()
        .filter(|(p, _)| !count.contains_key(p.as_str()))
        .map(|(p, ps)| (ps, p))
        .collect();
    missing.sort();
    c.missing = missing
        .into_iter()
        .map(|((part, seq), p)| format!("{p} (partition {part} seq {seq}) never handled"))
        .collect();
    c
}

/// What the checkpoint audit shows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Lease acquisitions (fencing changed).
    pub acquisitions: u64,
    /// Checkpoints (high changed).
    pub checkpoints: u64,
    /// Checkpoints committed with a fencing token lower than an acquisition before.
    pub stale: Vec<String>,
    /// Other broken rules: high moving back, fencing moving back.
    pub other: Vec<String>,
}

/// Per partition in store order: every acquisition raises the fencing token; every
/// checkpoint carries the token of the latest acquisition (a lower one is a
/// stale-token checkpoint: a former holder moved the position) and never moves
/// `high` back.
pub fn check_audit(audit: &[Audit]) -> AuditReport {
    let mut r = AuditReport::default();
    let mut by_part: BTreeMap<i32, Vec<&Audit>> = BTreeMap::new();
    for a in audit {
        by_part.entry(a.part).or_default().push(a);
    }
    for (part, mut rows) in by_part {
        rows.sort_by_key(|a| a.id);
        let mut latest = i64::MIN;
        for a in rows {
            if a.new_fencing != a.old_fencing {
                r.acquisitions += 1;
                if a.new_fencing < a.old_fencing {
                    r.other.push(format!(
                        "partition {part}: fencing moved back from {} to {} (audit {})",
                        a.old_fencing, a.new_fencing, a.id
                    ));
                }
                latest = latest.max(a.new_fencing);
            }
            if a.new_high != a.old_high {
                r.checkpoints += 1;
                if a.new_fencing < latest {
                    r.stale.push(format!(
                        "partition {part}: checkpoint {} -> {} by {} with fencing {} after an acquisition with fencing {latest} (audit {})",
                        a.old_high, a.new_high, a.new_owner, a.new_fencing, a.id
                    ));
                }
                if a.new_high < a.old_high {
                    r.other.push(format!(
                        "partition {part}: high moved back from {} to {} (audit {})",
                        a.old_high, a.new_high, a.id
                    ));
                }
            }
        }
    }
    r
}

/// Within each lease (partition, fencing token, worker), in the worker's call order:
/// an event handled for the first time in the lease never has a lower seq than one
/// handled before in the lease (redeliveries of events already handled in the lease,
/// after a failed checkpoint, are allowed). Returns the number of leases and the
/// out-of-order pairs.
pub fn check_order(handled: &[Handled]) -> (usize, Vec<String>) {
    let mut leases: BTreeMap<(i32, i64, &str), Vec<&Handled>> = BTreeMap::new();
    for h in handled {
        leases
            .entry((h.part, h.fencing, h.worker.as_str()))
            .or_default()
            .push(h);
    }
    let mut bad = Vec::new();
    for ((part, fencing, worker), mut calls) in leases.iter().map(|(k, v)| (*k, v.clone())) {
        calls.sort_by_key(|h| h.n);
        let mut seen = HashSet::new();
        let mut max: Option<&Handled> = None;
        for h in calls {
            if let Some(m) = max
                && h.seq < m.seq
                && !seen.contains(&h.seq)
            {
                bad.push(format!(
                    "partition {part}, lease {fencing} of {worker}: seq {} ({}) first handled after seq {} ({})",
                    h.seq, h.payload, m.seq, m.payload
                ));
            }
            seen.insert(h.seq);
            if max.is_none_or(|m| h.seq > m.seq) {
                max = Some(h);
            }
        }
    }
    (leases.len(), bad)
}

/// Handler calls the consumer started while another worker held the partition: at
/// each call's start (`start_us`), the partition's latest lease acquisition in the
/// audit (the store's clock; same machine) must be the calling worker's. A worker that
/// was SIGSTOPped past its lease must not start a call once another one took over.
pub fn check_invocations(handled: &[Handled], audit: &[Audit]) -> Vec<String> {
    let mut acq: HashMap<i32, Vec<(i64, i64, &str)>> = HashMap::new();
    for a in audit.iter().filter(|a| a.new_fencing != a.old_fencing) {
        acq.entry(a.part)
            .or_default()
            .push((a.at_us, a.id, a.new_owner.as_str()));
    }
    for v in acq.values_mut() {
        v.sort_unstable();
    }
    let mut bad = Vec::new();
    for h in handled {
        let list = acq.get(&h.part).map_or(&[][..], |v| v.as_slice());
        let before = list.partition_point(|&(at, _, _)| at <= h.start_us);
        match before.checked_sub(1).map(|i| list[i]) {
            Some((_, _, owner)) if owner == h.worker => {}
            last => bad.push(format!(
                "{} (partition {} seq {}): {} started the call at {} µs while the latest acquisition was {:?}",
                h.payload,
                h.part,
                h.seq,
                h.worker,
                h.start_us,
                last.map(|(at, id, owner)| format!("by {owner} at {at} µs (audit {id})")),
            )),
        }
    }
    bad
}

/// Handler effects committed outside a live lease of their worker: the store showed
/// another owner, or a lease that had expired when the call started, in the
/// handler's own transaction (so at its commit).
pub fn check_lease(handled: &[Handled]) -> Vec<String> {
    handled
        .iter()
        .filter(|h| h.owner != h.worker || h.until_us <= h.start_us)
        .map(|h| {
            format!(
                "{} (partition {} seq {}) handled by {} while the store showed owner {:?} (fencing {}) until {} µs, {} µs after the call started",
                h.payload,
                h.part,
                h.seq,
                h.worker,
                h.owner,
                h.fencing,
                h.until_us,
                h.start_us - h.until_us,
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// The parent.

/// One store the scenario runs on.
struct Target<'a> {
    label: String,
    url: String,
    raw: RawSpec,
    events: u64,
    kills: u64,
    stops: u64,
    restarts: u64,
    pg: Option<&'a PrivatePg>,
}

/// Runs `outbox-chaos` on SQLite and PostgreSQL.
///
/// # Errors
/// A failure to set up a store or spawn a worker.
pub async fn run(ctx: Ctx, args: Args) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let events = args.events.unwrap_or(ctx.pick(3_000, 100_000));
    let kills = args.kills.unwrap_or(ctx.pick(8, 50));
    let stops = args.stops.unwrap_or(ctx.pick(2, 10));
    let restarts = args.restarts.unwrap_or(ctx.pick(1, 5));
    let mut rng = ctx.rng(0x0B_C4A0);
    out.figure(
        "outbox-chaos etch: not applicable (single process: one process holds the store's directory lock)",
    );
    let tmp = tempfile::tempdir()?;
    let db_path = tmp.path().join("chaos.db");
    let sqlite = Target {
        label: "sqlite".into(),
        url: format!("sqlite://{}", db_path.display()),
        raw: RawSpec::Sqlite(db_path.clone()),
        events,
        kills,
        stops,
        restarts: 0,
        pg: None,
    };
    run_target(&ctx, &sqlite, tmp.path(), &mut out).await?;

    // PostgreSQL: the shared server (private schema) takes the kills and stops; a
    // private instance also takes the restarts. With --quick only one of them runs (the
    // private instance when it can be started), with every kind of fault.
    let private = match PrivatePg::start() {
        Ok(pg) => Some(pg),
        Err(e) => {
            out.figure(format!(
                "outbox-chaos postgres (private instance, restarts): NOT RUN: no private instance ({e:#})"
            ));
            None
        }
    };
    let shared = common::shared_pg_url();
    if !ctx.quick || private.is_none() {
        match common::pg_reachable(&shared).await {
            Ok(()) => {
                let s = PgSchema::new(&shared, &mut rng);
                let t = Target {
                    label: "postgres".into(),
                    url: s.url("pool_size=8"),
                    raw: RawSpec::Pg {
                        schema: s.schema.clone(),
                        url: shared.clone(),
                    },
                    events,
                    kills,
                    stops,
                    restarts: 0,
                    pg: None,
                };
                run_target(&ctx, &t, tmp.path(), &mut out).await?;
            }
            Err(e) => out.figure(format!(
                "outbox-chaos postgres: NOT RUN: the shared server at {shared} is unreachable ({e:#})"
            )),
        }
    }
    if let Some(pg) = &private {
        let base = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
        let schema = format!("torture_{}", common::random_suffix(&mut rng));
        let (events, kills, stops) = if ctx.quick {
            (events, kills, stops)
        } else {
            (events / 5, kills / 5, stops / 5)
        };
        let t = Target {
            label: "postgres (private instance, restarts)".into(),
            url: common::with_params(&base, &format!("schema={schema}&pool_size=8")),
            raw: RawSpec::Pg {
                schema,
                url: base.clone(),
            },
            events,
            kills,
            stops,
            restarts,
            pg: Some(pg),
        };
        run_target(&ctx, &t, tmp.path(), &mut out).await?;
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Stop,
    Restart,
}

/// A running worker process.
struct Worker {
    id: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Worker {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }
    /// Sends a command line to the worker.
    fn send(&mut self, line: &str) -> std::io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("stdin closed"))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()
    }
    fn sigkill(&mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
    /// Closes stdin (graceful stop) and waits up to `grace`, then SIGKILLs.
    async fn stop(&mut self, grace: Duration) {
        self.stdin = None;
        let t0 = Instant::now();
        while t0.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.sigkill();
    }
}

impl Drop for Worker {
    /// A worker left running (the parent failed half-way) is killed, also when it
    /// is stopped.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.sigkill();
        }
    }
}

/// Lines from the workers: (worker id, line).
type Lines = mpsc::UnboundedSender<(String, String)>;

struct Fleet<'a> {
    t: &'a Target<'a>,
    dir: PathBuf,
    ttl: Duration,
    lines: Lines,
    generation: u64,
}

impl Fleet<'_> {
    fn spawn(&mut self, fail: Option<(&str, u64)>) -> anyhow::Result<Worker> {
        self.generation += 1;
        let id = format!("w{}", self.generation);
        let log = std::fs::File::create(self.dir.join(format!("{id}.log")))?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([
            "outbox-chaos-child",
            "--url",
            &self.t.url,
            "--raw",
            &self.t.raw.encode(),
            "--worker",
            &id,
            "--ttl-ms",
            &self.ttl.as_millis().to_string(),
        ]);
        if let Some((name, hit)) = fail {
            cmd.args(["--fail", name, "--hit", &hit.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        let tx = self.lines.clone();
        let wid = id.clone();
        let pid = Pid::from_raw(child.id() as i32);
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if l.starts_with("FAILPOINT ") {
                    // At once: the worker blocks there (possibly holding a lock).
                    let _ = kill(pid, Signal::SIGKILL);
                }
                let _ = tx.send((wid.clone(), l));
            }
        });
        Ok(Worker { id, child, stdin })
    }
}

/// The failpoints a kill may land on, and the range of the hit that fires.
fn pick_failpoint(rng: &mut impl Rng) -> (&'static str, u64) {
    let names = [
        failpoints::BEFORE_HANDLER,
        failpoints::AFTER_HANDLER,
        failpoints::BEFORE_CHECKPOINT,
        failpoints::CHECKPOINT_BEFORE_COMMIT,
        MID_HANDLER,
    ];
    let name = names[rng.random_range(0..names.len())];
    let hit =
        if name == failpoints::BEFORE_CHECKPOINT || name == failpoints::CHECKPOINT_BEFORE_COMMIT {
            rng.random_range(1..=4)
        } else {
            rng.random_range(1..=40)
        };
    (name, hit)
}

/// What the emitter recorded.
#[derive(Default)]
struct Emitted {
    acked: HashMap<String, (i32, i64)>,
    maybe: HashSet<String>,
    next: u64,
}

/// Emits `n` events in transactions of [`EMIT_BATCH`], [`EMIT_TASKS`] at a time (each
/// in partition order, so that concurrent ones lock the partitions' seq rows in the
/// same order), retrying failed ones with new payloads (a failed commit's payloads go
/// to `maybe`: its outcome is unknown when the connection was cut).
async fn emit(db: &Db, em: &mut Emitted, n: u64, rng: &mut impl Rng) -> anyhow::Result<()> {
    let mut left = n;
    let mut failures = 0;
    while left > 0 {
        let mut batches = Vec::new();
        while left > 0 && batches.len() < EMIT_TASKS {
            let k = left.min(EMIT_BATCH as u64);
            let mut batch: Vec<(String, String)> = (0..k)
                .map(|i| {
                    (
                        format!("k{}", rng.random_range(0..4096u32)),
                        format!("e{}", em.next + i),
                    )
                })
                .collect();
            batch.sort_by_key(|(key, _)| outbox::partition_of(key.as_bytes(), PARTITIONS));
            em.next += k;
            left -= k;
            batches.push(batch);
        }
        let results = futures::future::join_all(batches.iter().map(|batch| {
            db.tx(async move |tx| {
                let mut ids = Vec::with_capacity(batch.len());
                for (key, payload) in batch {
                    ids.push(tx.emit(TOPIC, key, payload.as_bytes().to_vec()).await?);
                }
                Ok(ids)
            })
        }))
        .await;
        for (batch, r) in batches.into_iter().zip(results) {
            match r {
                Ok(ids) => {
                    for ((_, p), id) in batch.into_iter().zip(ids) {
                        em.acked.insert(p, (id.partition as i32, id.seq));
                    }
                }
                Err(e) => {
                    left += batch.len() as u64;
                    em.maybe.extend(batch.into_iter().map(|(_, p)| p));
                    failures += 1;
                    if failures > 200 {
                        anyhow::bail!("emitting keeps failing: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    Ok(())
}

async fn raw_retry(spec: &RawSpec) -> anyhow::Result<Raw> {
    let mut last = None;
    for _ in 0..100 {
        match raw_open(spec).await {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no connection")))
}

#[allow(clippy::too_many_lines)]
async fn run_target(
    ctx: &Ctx,
    t: &Target<'_>,
    tmp: &Path,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let label = &t.label;
    eprintln!("-- outbox-chaos {label}");
    let started = Instant::now();
    let mut rng = ctx.rng(0x0B_C4A0 ^ label.len() as u64 ^ t.restarts);
    let dir = tempfile::Builder::new().prefix("chaos-").tempdir_in(tmp)?;
    let db = datalayer::builder(&t.url).outbox().connect().await?;
    outbox::create_topic(&db, TOPIC, PARTITIONS).await?;
    outbox::install(&db).await?;
    raw_open(&t.raw).await?.setup().await?;
    let ttl = Duration::from_millis(1000);
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    let mut fleet = Fleet {
        t,
        dir: dir.path().to_owned(),
        ttl,
        lines: lines_tx,
        generation: 0,
    };
    let mut faults: Vec<Fault> = std::iter::repeat_n(Fault::Kill, t.kills as usize)
        .chain(std::iter::repeat_n(Fault::Stop, t.stops as usize))
        .chain(std::iter::repeat_n(Fault::Restart, t.restarts as usize))
        .collect();
    faults.shuffle(&mut rng);
    let chunk = (t.events / (faults.len() as u64 + 1)).max(1);
    let mut em = Emitted::default();
    let mut workers: Vec<Worker> = Vec::new();
    for _ in 0..WORKERS {
        workers.push(fleet.spawn(None)?);
    }
    let mut killed_at: BTreeMap<String, u64> = BTreeMap::new();
    let mut missed_kills = 0u64;
    let mut stopped = 0u64;
    let mut restarted = 0u64;
    let mut takeovers = 0i64;
    let mut failures: Vec<String> = Vec::new();
    for fault in faults {
        emit(&db, &mut em, chunk, &mut rng).await?;
        verbose!("{} events emitted; next fault {fault:?}", em.acked.len());
        match fault {
            Fault::Kill => {
                // Arm one live worker, then wait for its marker (the reader thread has
                // SIGKILLed it by then); keep events coming meanwhile so the point is hit.
                let live: Vec<usize> = (0..workers.len())
                    .filter(|&i| matches!(workers[i].child.try_wait(), Ok(None)))
                    .collect();
                let Some(&i) = live.get(rng.random_range(0..live.len().max(1))) else {
                    failures.push("no live worker to arm".into());
                    continue;
                };
                let (name, hit) = pick_failpoint(&mut rng);
                if workers[i].send(&format!("ARM {name} {hit}")).is_err() {
                    missed_kills += 1;
                    continue;
                }
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut fired = None;
                while fired.is_none() && Instant::now() < deadline {
                    match tokio::time::timeout(Duration::from_secs(1), lines.recv()).await {
                        Ok(Some((id, line))) => {
                            if let Some(name) = line.strip_prefix("FAILPOINT ") {
                                fired = Some((id, name.to_owned()));
                            }
                        }
                        Ok(None) => break,
                        Err(_) => emit(&db, &mut em, (chunk / 4).max(1), &mut rng).await?,
                    }
                }
                verbose!("marker: {fired:?}");
                let Some((id, name)) = fired else {
                    missed_kills += 1;
                    continue;
                };
                if let Some(i) = workers.iter().position(|w| w.id == id) {
                    let mut w = workers.remove(i);
                    w.sigkill();
                    *killed_at.entry(name).or_default() += 1;
                    workers.push(fleet.spawn(None)?);
                }
            }
            Fault::Stop => {
                // A live worker holding leases (just after a kill, the survivors may
                // not have claimed yet: look again for a while).
                let mut found = None;
                for _ in 0..20 {
                    tokio::time::sleep(ttl / 4).await;
                    let holders = raw_retry(&t.raw).await?.holders().await?;
                    verbose!(
                        "holders {holders:?}; workers {:?}",
                        workers.iter().map(|w| &w.id).collect::<Vec<_>>()
                    );
                    if let Some(i) = workers.iter_mut().position(|w| {
                        holders.get(&w.id).copied().unwrap_or(0) > 0
                            && matches!(w.child.try_wait(), Ok(None))
                    }) {
                        found = Some((i, holders));
                        break;
                    }
                }
                let Some((i, holders)) = found else {
                    failures.push("no live worker held a lease to SIGSTOP within 5 s".into());
                    continue;
                };
                let held = holders[&workers[i].id];
                verbose!("SIGSTOP {} holding {held}", workers[i].id);
                let pid = workers[i].pid();
                kill(pid, Signal::SIGSTOP)?;
                // Nothing written meanwhile: on SQLite the stopped worker may hold the
                // write lock until it is resumed.
                tokio::time::sleep(ttl * 3 / 2).await;
                let after = raw_retry(&t.raw).await?.holders().await?;
                takeovers += held - after.get(&workers[i].id).copied().unwrap_or(0);
                kill(pid, Signal::SIGCONT)?;
                stopped += 1;
            }
            Fault::Restart => {
                if let Some(pg) = t.pg {
                    tokio::task::block_in_place(|| pg.crash_restart())?;
                    restarted += 1;
                }
            }
        }
    }
    emit(&db, &mut em, chunk, &mut rng).await?;
    // Faults done: stop the fleet (an armed worker that never fired is stopped too),
    // then one clean worker drains everything.
    for w in &mut workers {
        w.stdin = None;
    }
    for w in &mut workers {
        w.stop(Duration::from_secs(5)).await;
    }
    let mut drain = fleet.spawn(None)?;
    let raw = raw_retry(&t.raw).await?;
    let want = em.acked.len() as i64;
    let limit = Duration::from_secs(ctx.pick(120, 1200));
    let t0 = Instant::now();
    loop {
        let got = raw.distinct_handled().await?;
        verbose!("drain: {got} of {want}");
        let all: HashSet<&String> = em.acked.keys().collect();
        if got >= want {
            // Every distinct handled payload may include `maybe` ones: check exactly.
            let h = raw.handled().await?;
            let done: HashSet<&String> = h.iter().map(|h| &h.payload).collect();
            if all.iter().all(|p| done.contains(*p)) {
                break;
            }
        }
        if t0.elapsed() > limit {
            failures.push(format!(
                "the clean worker did not drain within {limit:?} ({got} of {want} handled)"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drain.stop(Duration::from_secs(10)).await;
    let handled = raw.handled().await?;
    let audit = raw.audit().await?;
    let dead = outbox::stored_events(&db, &format!("{TOPIC}.dead")).await?;
    db.close().await?;

    let cov = check_coverage(&em.acked, &em.maybe, &handled);
    let rep = check_audit(&audit);
    let (leases, order) = check_order(&handled);
    let late_calls = check_invocations(&handled, &audit);
    let outside = check_lease(&handled);
    let kills_done: u64 = killed_at.values().sum();
    let at: Vec<String> = killed_at
        .iter()
        .map(|(n, k)| format!("{} {k}", n.rsplit("::").next().unwrap_or(n)))
        .collect();
    let handled_pct = common::percent(want as u64 - cov.missing.len() as u64, want as u64);
    out.figure(format!(
        "outbox-chaos {label}: {want} events over {PARTITIONS} partitions, {kills_done} kill -9 at failpoints ({}), {stopped} SIGSTOPs past the lease TTL ({takeovers} leases taken over meanwhile), {restarted} engine restarts: {handled_pct} handled >= 1, {} duplicates, {} stale-token checkpoints ({} checkpoints, {} lease acquisitions audited), per-partition order {} within each of {leases} leases, {} handler calls started outside the worker's lease ({} handler commits saw the lease passed on: stopped mid-call), {} dead letters ({:.1} s)",
        at.join(", "),
        cov.duplicates,
        rep.stale.len(),
        rep.checkpoints,
        rep.acquisitions,
        if order.is_empty() { "held" } else { "BROKEN" },
        late_calls.len(),
        outside.len(),
        dead.len(),
        started.elapsed().as_secs_f64(),
    ));
    if missed_kills > 0 {
        failures.push(format!(
            "{missed_kills} kills found no failpoint hit within 30 s (the test did less than planned)"
        ));
    }
    if kills_done == 0 && t.kills > 0 {
        failures.push("no kill landed at a failpoint".into());
    }
    if !dead.is_empty() {
        failures.push(format!("{} events were dead-lettered", dead.len()));
    }
    for (what, list) in [
        ("missing", &cov.missing),
        ("foreign", &cov.foreign),
        ("stale-token checkpoint", &rep.stale),
        ("audit", &rep.other),
        ("order", &order),
        ("call outside the lease", &late_calls),
    ] {
        for l in list.iter().take(5) {
            failures.push(format!("{what}: {l}"));
        }
        if list.len() > 5 {
            failures.push(format!("{what}: ... {} more", list.len() - 5));
        }
    }
    for f in failures {
        out.fail(format!("outbox-chaos {label}: {f}"));
    }
    for l in outside.iter().take(3) {
        eprintln!("   note: {l}");
    }
    if std::env::var_os("TORTURE_KEEP").is_some() {
        let kept = dir.keep();
        eprintln!("   worker logs kept in {}", kept.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(payload: &str, part: i32, seq: i64, worker: &str, n: i64, fencing: i64) -> Handled {
        Handled {
            payload: payload.into(),
            part,
            seq,
            worker: worker.into(),
            n,
            owner: worker.into(),
            fencing,
            until_us: 2_000,
            start_us: 1_000,
        }
    }

    fn a(id: i64, part: i32, fencing: (i64, i64), high: (i64, i64)) -> Audit {
        Audit {
            id,
            part,
            old_owner: "w1".into(),
            new_owner: "w1".into(),
            old_fencing: fencing.0,
            new_fencing: fencing.1,
            old_high: high.0,
            new_high: high.1,
            at_us: id * 100,
        }
    }

    #[test]
    fn a_missing_event_and_duplicates_are_found() {
        let emitted: HashMap<String, (i32, i64)> = [("e0", (0, 1)), ("e1", (0, 2)), ("e2", (1, 1))]
            .into_iter()
            .map(|(p, ps)| (p.to_owned(), ps))
            .collect();
        let handled = vec![
            h("e0", 0, 1, "w1", 0, 1),
            h("e0", 0, 1, "w2", 0, 2),
            h("e2", 1, 1, "w1", 1, 1),
        ];
        let c = check_coverage(&emitted, &HashSet::new(), &handled);
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.missing.len(), 1, "{:?}", c.missing);
        assert!(c.missing[0].starts_with("e1 "));
        assert!(c.foreign.is_empty());
        // Complete: nothing missing.
        let mut all = handled.clone();
        all.push(h("e1", 0, 2, "w2", 1, 2));
        let c = check_coverage(&emitted, &HashSet::new(), &all);
        assert!(c.missing.is_empty() && c.foreign.is_empty());
        // A handled event never emitted, or at another position.
        all.push(h("zz", 0, 9, "w2", 2, 2));
        all.push(h("e2", 1, 7, "w2", 3, 2));
        let c = check_coverage(&emitted, &HashSet::new(), &all);
        assert_eq!(c.foreign.len(), 2, "{:?}", c.foreign);
        let maybe: HashSet<String> = ["zz".to_owned()].into();
        assert_eq!(check_coverage(&emitted, &maybe, &all).foreign.len(), 1);
    }

    #[test]
    fn a_doctored_stale_checkpoint_is_found() {
        let good = vec![
            a(1, 0, (0, 1), (0, 0)),   // w1 acquires (1)
            a(2, 0, (1, 1), (0, 10)),  // checkpoint under 1
            a(3, 0, (1, 2), (10, 10)), // another acquires (2)
            a(4, 0, (2, 2), (10, 20)), // checkpoint under 2
            a(5, 1, (0, 1), (0, 0)),
            a(6, 1, (1, 1), (0, 5)),
        ];
        let r = check_audit(&good);
        assert_eq!((r.acquisitions, r.checkpoints), (3, 3));
        assert!(r.stale.is_empty() && r.other.is_empty(), "{r:?}");
        // The old holder (fencing 1) checkpoints after the acquisition of 2.
        let mut bad = good.clone();
        bad.push(a(7, 0, (1, 1), (20, 25)));
        let r = check_audit(&bad);
        assert_eq!(r.stale.len(), 1, "{r:?}");
        assert!(r.stale[0].contains("fencing 1 after an acquisition with fencing 2"));
        // high moving back.
        let mut back = good;
        back.push(a(7, 0, (2, 2), (20, 15)));
        let r = check_audit(&back);
        assert!(r.stale.is_empty());
        assert_eq!(r.other.len(), 1, "{r:?}");
    }

    #[test]
    fn an_out_of_order_pair_is_found() {
        let ok = vec![
            h("a", 0, 1, "w1", 0, 1),
            h("b", 0, 2, "w1", 1, 1),
            h("c", 0, 3, "w1", 2, 1),
            // A redelivery after a failed checkpoint: allowed.
            h("b", 0, 2, "w1", 3, 1),
            h("c", 0, 3, "w1", 4, 1),
            // Another lease starts lower: allowed.
            h("b", 0, 2, "w2", 0, 2),
            h("d", 0, 4, "w2", 1, 2),
        ];
        let (leases, bad) = check_order(&ok);
        assert_eq!(leases, 2);
        assert!(bad.is_empty(), "{bad:?}");
        // Seq 5 then seq 4 for the first time in one lease.
        let mut swapped = ok.clone();
        swapped.push(h("f", 0, 6, "w2", 2, 2));
        swapped.push(h("e", 0, 5, "w2", 3, 2));
        let (_, bad) = check_order(&swapped);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("seq 5 (e) first handled after seq 6 (f)"));
    }

    #[test]
    fn a_call_outside_the_lease_is_found() {
        let mut calls = vec![h("a", 0, 1, "w1", 0, 1)];
        assert!(check_lease(&calls).is_empty());
        let mut other = h("b", 0, 2, "w1", 1, 1);
        other.owner = "w2".into();
        let mut expired = h("c", 0, 3, "w1", 2, 1);
        expired.until_us = 500;
        calls.extend([other, expired]);
        assert_eq!(check_lease(&calls).len(), 2);
    }

    #[test]
    fn a_call_started_after_a_takeover_is_found() {
        let mut audit = vec![
            a(1, 0, (0, 1), (0, 0)), // w1 acquires at 100
        ];
        let mut take = a(2, 0, (1, 2), (0, 0)); // w2 takes over at 200
        take.new_owner = "w2".into();
        audit.push(take);
        let mut calls = vec![h("a", 0, 1, "w1", 0, 1), h("b", 0, 2, "w2", 0, 2)];
        calls[0].start_us = 150;
        calls[1].start_us = 250;
        assert!(check_invocations(&calls, &audit).is_empty());
        // w1 (stopped past its lease) starts a call after w2 took over.
        let mut late = h("c", 0, 3, "w1", 1, 1);
        late.start_us = 260;
        calls.push(late);
        // And a call on a partition nobody acquired.
        calls.push(h("d", 5, 1, "w1", 2, 1));
        let bad = check_invocations(&calls, &audit);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].starts_with("c "));
    }

    #[test]
    fn raw_specs_round_trip() {
        for s in [
            RawSpec::Sqlite("/tmp/x.db".into()),
            RawSpec::Pg {
                schema: "torture_a".into(),
                url: "postgres://postgres@127.0.0.1:5432/test".into(),
            },
        ] {
            assert_eq!(RawSpec::decode(&s.encode()).unwrap().encode(), s.encode());
        }
    }
}
