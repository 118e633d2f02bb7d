//! The workloads and the one harness that runs them on any [`Target`]: the
//! synthetic data set, the sizes ([`Config`]), and the timing loops that turn
//! targets into results.
//!
//! Every workload is timed the same way: a short untimed warm-up, then timed
//! repetitions of a fixed amount of work, interleaved across targets; the report
//! shows the median with its median absolute deviation (MAD), see
//! [`Stat`]. Before running a workload the harness asks each target whether it
//! [supports](Target::supports) it; a target that does not is skipped (shown as
//! "—"), never given a stand-in. Nothing here asserts on timing; the only checks
//! are on correctness (a point read finds its row, a range scan returns exactly
//! the rows the generator put in that range, a table holds every row written), so
//! a broken target cannot post a fast but meaningless figure.

use std::sync::Barrier;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::flights::FlightRow;
use crate::stats::Stat;
use crate::targets::{Scratch, Target, UsersTable};

/// Ages are drawn uniformly from `0..AGE_SPAN`, so a window of `w` ages holds
/// about `n * w / AGE_SPAN` of `n` rows. The span is wide (think "age in
/// months") so that a range scan over 100,000 rows can return ~100 of them.
pub const AGE_SPAN: i32 = 1_000;

/// Rows a range scan should return, on average.
pub const RANGE_TARGET_ROWS: usize = 100;

/// Rows of every 1,000-row insert workload ([`Workload::Batch`],
/// [`Workload::InsertSequential`], [`Workload::InsertBatched`], [`Workload::Copy`]).
pub const BATCH_ROWS: usize = 1_000;

/// Point reads per `Batch` in [`Workload::ReadBatch`].
pub const READ_BATCH: usize = 1_000;

/// Concurrent writers in [`Workload::Commit8`].
pub const WRITERS: usize = 8;

/// Fixed seed, so every target sees the same keys and ranges in the same order.
const SEED: u64 = 0x5EED_DA7A_1A7E;

/// Point reads whose decoded row is compared field by field in the warm-up.
const CHECKED_READS: usize = 200;

/// One row of the benchmark table: a "user".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Primary key.
    pub id: i64,
    /// About 12 bytes.
    pub name: String,
    /// About 20 bytes.
    pub email: String,
    /// Secondary-indexed column, uniform in `0..AGE_SPAN`.
    pub age: i32,
}

impl User {
    /// The deterministic row for `id`: every target stores the same bytes.
    pub fn synthetic(id: i64) -> Self {
        Self {
            id,
            name: format!("name-{:07}", id % 10_000_000),
            email: format!("u{:07}@example.com", id % 10_000_000),
            age: age_of(id),
        }
    }
}

/// The age of the synthetic row `id` (a hash of the id, uniform in `0..AGE_SPAN`).
pub fn age_of(id: i64) -> i32 {
    // splitmix64 finaliser: cheap, well mixed, no state.
    let mut z = (id as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % AGE_SPAN as u64) as i32
}

/// Every workload of the benchmark. The first eight run on an open `users`
/// table ([`Target::open`]); the last three open a fresh store per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Point read by primary key among the preloaded rows, one read per call.
    PointRead,
    /// Range scan of ~[`RANGE_TARGET_ROWS`] rows through the age index.
    RangeScan,
    /// One-row inserts, each in its own durable transaction, one writer.
    Commit1,
    /// The same with [`WRITERS`] concurrent writer threads.
    Commit8,
    /// [`BATCH_ROWS`] rows in ONE transaction, through the store's one-call bulk
    /// insert (datalayer: `Repo::insert_many`).
    Batch,
    /// [`BATCH_ROWS`] single-row inserts, each awaited before the next, inside one
    /// transaction.
    InsertSequential,
    /// The same inserts inside one transaction, batched the way the client
    /// batches (pipelined where it can).
    InsertBatched,
    /// The same rows with `COPY .. FROM STDIN BINARY` (PostgreSQL's bulk ceiling).
    Copy,
    /// Bulk load of nycflights13 `flights` in one transaction, fresh store.
    Flights,
    /// Rows in one transaction into a fresh `users` table, with change capture
    /// enabled and without (two figures).
    Changes,
    /// Outbox end to end: events produced and handled by a consumer (two figures).
    Outbox,
    /// One-row insert per transaction into a table with TWO secondary indexes
    /// (age and email), one writer: the Redis and TiKV sections' insert row.
    #[cfg_attr(not(any(feature = "redis", feature = "tikv")), allow(dead_code))]
    Insert2Idx,
    /// Point reads by primary key sent [`READ_BATCH`] at a time (datalayer: one
    /// `Batch` of `*_stmt` queries), among the preloaded rows.
    ReadBatch,
}

impl Workload {
    /// Stable id, used in `--json` records.
    pub fn key(self) -> &'static str {
        match self {
            Workload::PointRead => "point_read",
            Workload::RangeScan => "range_scan",
            Workload::Commit1 => "commit_1w",
            Workload::Commit8 => "commit_8w",
            Workload::Batch => "insert_many_1k",
            Workload::InsertSequential => "insert_sequential_1k",
            Workload::InsertBatched => "insert_batched_1k",
            Workload::Copy => "copy_binary_1k",
            Workload::Flights => "flights_load",
            Workload::Changes => "insert_changes",
            Workload::Outbox => "outbox",
            Workload::Insert2Idx => "insert_2idx",
            Workload::ReadBatch => "read_batch_1k",
        }
    }

    /// Unit of the figure (operations per second).
    pub fn unit(self) -> &'static str {
        match self {
            Workload::PointRead | Workload::ReadBatch => "reads/s",
            Workload::RangeScan => "scans/s",
            Workload::Commit1 | Workload::Commit8 | Workload::Insert2Idx => "commits/s",
            Workload::Outbox => "events/s",
            _ => "rows/s",
        }
    }

    /// Short label for progress lines.
    pub fn label(self) -> &'static str {
        match self {
            Workload::PointRead => "point read",
            Workload::RangeScan => "age range ~100 rows",
            Workload::Commit1 => "durable commit, 1 writer",
            Workload::Commit8 => "durable commit, 8 writers",
            Workload::Batch => "insert_many 1k rows, 1 tx",
            Workload::InsertSequential => "1k inserts, sequential, 1 tx",
            Workload::InsertBatched => "1k inserts, batched, 1 tx",
            Workload::Copy => "COPY BINARY 1k rows",
            Workload::Flights => "flights load, 1 tx",
            Workload::Changes => "insert with changes vs without",
            Workload::Outbox => "outbox end to end",
            Workload::Insert2Idx => "insert 1 row + 2 indexes, own tx",
            Workload::ReadBatch => "batches of 1k point reads",
        }
    }
}

/// How much work each workload does.
#[derive(Debug, Clone)]
pub struct Config {
    /// Rows preloaded before any `users` workload (N).
    pub preload_rows: usize,
    /// Timed repetitions of the read workloads; the median is reported.
    pub reps: usize,
    /// Timed repetitions of the commit workloads ([`Workload::Commit1`],
    /// [`Workload::Commit8`]).
    pub commit_reps: usize,
    /// Point reads per repetition.
    pub reads_per_rep: usize,
    /// Range scans per repetition.
    pub scans_per_rep: usize,
    /// Single-row commits per repetition, one writer.
    pub commits_per_rep: usize,
    /// Single-row commits per writer per repetition, [`WRITERS`] writers.
    pub commits_per_writer_per_rep: usize,
    /// Timed repetitions of each 1,000-row insert workload (one sample each).
    pub batch_reps: usize,
    /// Rows of flights.csv.gz to insert in [`Workload::Flights`] (`None` = all).
    pub flights_rows: Option<usize>,
    /// Rows inserted in the one transaction of [`Workload::Changes`].
    pub cdc_rows: usize,
    /// Timed repetitions of [`Workload::Changes`], per target and variant (fresh
    /// table each).
    pub cdc_reps: usize,
}

impl Config {
    /// Sizes for the default run: a few minutes on 2 cores.
    pub fn full() -> Self {
        Self {
            preload_rows: 100_000,
            reps: 9,
            commit_reps: 15,
            reads_per_rep: 100_000,
            scans_per_rep: 2_000,
            commits_per_rep: 1_000,
            commits_per_writer_per_rep: 125,
            batch_reps: 31,
            flights_rows: None,
            cdc_rows: 20_000,
            cdc_reps: 7,
        }
    }

    /// Sizes for `--quick`: the whole run in well under a minute.
    pub fn quick() -> Self {
        Self {
            preload_rows: 5_000,
            reps: 3,
            commit_reps: 3,
            reads_per_rep: 20_000,
            scans_per_rep: 300,
            commits_per_rep: 300,
            commits_per_writer_per_rep: 50,
            batch_reps: 5,
            flights_rows: None,
            cdc_rows: 5_000,
            cdc_reps: 3,
        }
    }

    /// The PostgreSQL section, full run: N = 10,000, 10,000 reads x 7 reps, 7 reps
    /// of each insert row.
    #[cfg(feature = "pg")]
    pub fn pg_full() -> Self {
        Self {
            preload_rows: 10_000,
            reads_per_rep: 10_000,
            reps: 7,
            batch_reps: 7,
            ..Self::full()
        }
    }

    /// The PostgreSQL section, `--quick`: N = 2,000, 2,000 reads x 3 reps, 3 reps
    /// of each insert row.
    #[cfg(feature = "pg")]
    pub fn pg_quick() -> Self {
        Self {
            preload_rows: 2_000,
            reads_per_rep: 2_000,
            reps: 3,
            batch_reps: 3,
            ..Self::quick()
        }
    }

    /// The Redis and TiKV sections, full run: N = 10,000 preloaded rows, 10,000
    /// point reads x 7 reps, 200 range scans x 7 reps, 1,000 inserts x 7 reps.
    #[cfg(any(feature = "redis", feature = "tikv"))]
    pub fn kv_full() -> Self {
        Self {
            preload_rows: 10_000,
            reads_per_rep: 10_000,
            scans_per_rep: 200,
            commits_per_rep: 1_000,
            reps: 7,
            commit_reps: 7,
            ..Self::full()
        }
    }

    /// The Redis and TiKV sections, `--quick`: N = 2,000, 2,000 point reads x 3
    /// reps, 100 range scans x 3 reps, 300 inserts x 3 reps.
    #[cfg(any(feature = "redis", feature = "tikv"))]
    pub fn kv_quick() -> Self {
        Self {
            preload_rows: 2_000,
            reads_per_rep: 2_000,
            scans_per_rep: 100,
            commits_per_rep: 300,
            reps: 3,
            commit_reps: 3,
            ..Self::quick()
        }
    }

    /// Width of the age window that returns ~[`RANGE_TARGET_ROWS`] rows.
    pub fn range_width(&self) -> i32 {
        let w = (RANGE_TARGET_ROWS as f64 * f64::from(AGE_SPAN) / self.preload_rows as f64).ceil();
        (w as i32).clamp(1, AGE_SPAN)
    }

    /// Timed repetitions and operations per repetition of a `users` workload.
    fn reps_and_ops(&self, w: Workload, data: &Dataset) -> (usize, usize) {
        match w {
            Workload::PointRead | Workload::ReadBatch => (self.reps, data.read_ids.len()),
            Workload::RangeScan => (self.reps, data.ranges.len()),
            Workload::Commit1 | Workload::Insert2Idx => (self.commit_reps, self.commits_per_rep),
            Workload::Commit8 => (self.commit_reps, self.commits_per_writer_per_rep * WRITERS),
            _ => (self.batch_reps, BATCH_ROWS),
        }
    }
}

/// Everything measured on one target's `users` table.
#[derive(Debug, Clone)]
pub struct TargetResults {
    /// Display name.
    pub name: String,
    /// Open + preload wall time (not part of any figure).
    pub setup: Duration,
    /// One entry per workload the target ran, in run order.
    pub stats: Vec<(Workload, Stat)>,
}

impl TargetResults {
    /// The figure for `w`, if the target ran it.
    pub fn get(&self, w: Workload) -> Option<Stat> {
        self.stats.iter().find(|(x, _)| *x == w).map(|(_, s)| *s)
    }
}

/// Inputs shared by every target so that all of them do identical work.
pub struct Dataset {
    /// The preloaded rows, ids `1..=N`.
    pub rows: Vec<User>,
    /// Random ids among the preloaded rows, one repetition's worth.
    pub read_ids: Vec<i64>,
    /// Random age windows, one repetition's worth.
    pub ranges: Vec<(i32, i32)>,
    /// Exact number of preloaded rows each of `ranges` must return, summed.
    pub ranges_expected: usize,
}

impl Dataset {
    /// Generate the data set for `cfg` (deterministic).
    pub fn generate(cfg: &Config) -> Self {
        let n = cfg.preload_rows as i64;
        let rows: Vec<User> = (1..=n).map(User::synthetic).collect();
        let mut rng = StdRng::seed_from_u64(SEED);
        let read_ids = (0..cfg.reads_per_rep)
            .map(|_| rng.random_range(1..=n))
            .collect();
        let w = cfg.range_width();
        let ranges: Vec<(i32, i32)> = (0..cfg.scans_per_rep)
            .map(|_| {
                let lo = rng.random_range(0..=AGE_SPAN - w);
                (lo, lo + w - 1)
            })
            .collect();
        let mut per_age = vec![0usize; AGE_SPAN as usize];
        for u in &rows {
            per_age[u.age as usize] += 1;
        }
        let ranges_expected = ranges
            .iter()
            .map(|&(lo, hi)| per_age[lo as usize..=hi as usize].iter().sum::<usize>())
            .sum();
        Self {
            rows,
            read_ids,
            ranges,
            ranges_expected,
        }
    }
}

/// Hands out fresh primary keys above the preloaded range, so inserts never
/// collide (across workloads, repetitions and writer threads).
struct IdSource(AtomicI64);

impl IdSource {
    fn rows(&self, count: usize) -> Vec<User> {
        let first = self.0.fetch_add(count as i64, Ordering::Relaxed);
        (first..first + count as i64).map(User::synthetic).collect()
    }

    /// The highest id handed out so far (the preloaded rows included).
    fn last(&self) -> i64 {
        self.0.load(Ordering::Relaxed) - 1
    }
}

/// One open `users` table during a run.
struct Live<'a> {
    target: &'a dyn Target,
    table: Box<dyn UsersTable>,
    ids: IdSource,
    setup: Duration,
    stats: Vec<(Workload, Stat)>,
}

/// Runs the `users` workloads `selected` (in that order) on every target that
/// supports at least one of them: opens each at its own fresh place from
/// `scratch` with the preloaded rows, runs the workloads it supports, checks that
/// its table holds every row written, then closes the tables and cleans the
/// places up.
///
/// Repetitions are interleaved: repetition `r` of a workload runs on every
/// target, in an order rotated by `r`, before repetition `r + 1` starts. A
/// burst of load from another process then lands on all targets alike
/// instead of on whichever one happened to be running.
///
/// # Errors
/// A place cannot be made or cleaned up, a target cannot open, or a target
/// returns wrong results.
pub fn run_users(
    cfg: &Config,
    data: &Dataset,
    scratch: &Scratch,
    targets: &[&dyn Target],
    selected: &[Workload],
) -> anyhow::Result<Vec<TargetResults>> {
    let mut places = Vec::new();
    let mut live: Vec<Live<'_>> = Vec::new();
    for &target in targets {
        if !selected.iter().any(|&w| target.supports(w)) {
            continue;
        }
        let place = scratch.place(target.name())?;
        let t0 = Instant::now();
        let table = target
            .open(&place, &data.rows)
            .with_context(|| format!("{}: opening the users table", target.name()))?;
        let setup = t0.elapsed();
        eprintln!("  {}: setup {:.2}s", target.name(), setup.as_secs_f64());
        places.push(place);
        live.push(Live {
            target,
            table,
            ids: IdSource(AtomicI64::new(cfg.preload_rows as i64 + 1)),
            setup,
            stats: Vec::new(),
        });
    }

    let measured = measure(cfg, data, selected, &mut live);
    for l in &live {
        l.table.close();
    }
    let results = live
        .into_iter()
        .map(|l| TargetResults {
            name: l.target.name().to_owned(),
            setup: l.setup,
            stats: l.stats,
        })
        .collect();
    measured?;
    for p in places {
        p.close()?;
    }
    Ok(results)
}

/// Warm-up (with the correctness checks), interleaved timed repetitions, and the
/// final row count of every table.
fn measure(
    cfg: &Config,
    data: &Dataset,
    selected: &[Workload],
    live: &mut [Live<'_>],
) -> anyhow::Result<()> {
    for &w in selected {
        let runs: Vec<usize> = (0..live.len())
            .filter(|&i| live[i].target.supports(w))
            .collect();
        if runs.is_empty() {
            continue;
        }
        for &i in &runs {
            warm_up(&live[i], w, data)?;
        }
        let (reps, ops) = cfg.reps_and_ops(w, data);
        let mut times = vec![Vec::with_capacity(reps); runs.len()];
        for rep in 0..reps {
            for k in 0..runs.len() {
                let j = (rep + k) % runs.len();
                times[j].push(one_rep(&live[runs[j]], w, cfg, data)?);
            }
        }
        for (&i, times) in runs.iter().zip(&times) {
            let stat = Stat::from_samples(ops, times);
            eprintln!(
                "  {:<16} {:<30} median {:>10.0} {:<9} MAD {:>4.1}%  min {:>10.0}  max {:>10.0}",
                live[i].target.name(),
                w.label(),
                stat.median,
                w.unit(),
                stat.spread() * 100.0,
                stat.min,
                stat.max
            );
            live[i].stats.push((w, stat));
        }
    }
    for l in live.iter() {
        let want = l.ids.last();
        let got = l.table.count();
        if got != want {
            bail!(
                "{}: {got} rows in the users table at the end, expected {want}",
                l.target.name()
            );
        }
    }
    Ok(())
}

/// Untimed warm-up for `w`; for the read workloads also the correctness check.
fn warm_up(l: &Live<'_>, w: Workload, data: &Dataset) -> anyhow::Result<()> {
    let (t, name) = (l.table.as_ref(), l.target.name());
    match w {
        Workload::PointRead => {
            for &id in data.read_ids.iter().take(CHECKED_READS) {
                let got = t.point_read(id);
                if got.as_ref() != Some(&User::synthetic(id)) {
                    bail!("{name}: point read of {id} returned {got:?}");
                }
            }
            let warm = &data.read_ids[..data.read_ids.len().min(10_000)];
            if t.point_reads(warm) != warm.len() {
                bail!("{name}: point reads missed rows");
            }
        }
        Workload::RangeScan => {
            let got = t.range_scans(&data.ranges);
            if got != data.ranges_expected {
                bail!(
                    "{name}: range scans returned {got} rows, expected {}",
                    data.ranges_expected
                );
            }
        }
        Workload::ReadBatch => {
            let ids = &data.read_ids[..data.read_ids.len().min(READ_BATCH)];
            let got = t.read_batch(ids);
            if got.len() != ids.len() {
                bail!(
                    "{name}: a batch of {} reads returned {} results",
                    ids.len(),
                    got.len()
                );
            }
            for (&id, got) in ids.iter().zip(&got) {
                if got.as_ref() != Some(&User::synthetic(id)) {
                    bail!("{name}: batched point read of {id} returned {got:?}");
                }
            }
            if t.read_batches(&data.read_ids, READ_BATCH) != data.read_ids.len() {
                bail!("{name}: batched point reads missed rows");
            }
        }
        Workload::Commit1 | Workload::Insert2Idx => {
            let rows = l.ids.rows(10);
            t.commit_many(&rows);
            for u in &rows {
                let got = t.point_read(u.id);
                if got.as_ref() != Some(u) {
                    bail!("{name}: the inserted row {} reads back as {got:?}", u.id);
                }
            }
        }
        Workload::Commit8 => {
            let per_writer: Vec<Vec<User>> = (0..WRITERS).map(|_| l.ids.rows(2)).collect();
            concurrent_commits(t, &per_writer);
        }
        _ => {
            one_insert(t, w, &l.ids.rows(BATCH_ROWS));
        }
    }
    Ok(())
}

/// Time one repetition of `w`. Row generation happens before the clock starts.
fn one_rep(l: &Live<'_>, w: Workload, cfg: &Config, data: &Dataset) -> anyhow::Result<Duration> {
    let (t, name) = (l.table.as_ref(), l.target.name());
    Ok(match w {
        Workload::PointRead => {
            let t0 = Instant::now();
            let found = t.point_reads(&data.read_ids);
            let elapsed = t0.elapsed();
            if found != data.read_ids.len() {
                bail!("{name}: point read missed a row");
            }
            elapsed
        }
        Workload::RangeScan => {
            let t0 = Instant::now();
            let got = t.range_scans(&data.ranges);
            let elapsed = t0.elapsed();
            if got != data.ranges_expected {
                bail!("{name}: range scans returned wrong rows");
            }
            elapsed
        }
        Workload::ReadBatch => {
            let t0 = Instant::now();
            let found = t.read_batches(&data.read_ids, READ_BATCH);
            let elapsed = t0.elapsed();
            if found != data.read_ids.len() {
                bail!("{name}: a batched point read missed a row");
            }
            elapsed
        }
        Workload::Commit1 | Workload::Insert2Idx => {
            let rows = l.ids.rows(cfg.commits_per_rep);
            let t0 = Instant::now();
            t.commit_many(&rows);
            t0.elapsed()
        }
        Workload::Commit8 => {
            let per_writer: Vec<Vec<User>> = (0..WRITERS)
                .map(|_| l.ids.rows(cfg.commits_per_writer_per_rep))
                .collect();
            concurrent_commits(t, &per_writer)
        }
        _ => one_insert(t, w, &l.ids.rows(BATCH_ROWS)),
    })
}

/// Times one 1,000-row insert workload on `rows`.
fn one_insert(t: &dyn UsersTable, w: Workload, rows: &[User]) -> Duration {
    let t0 = Instant::now();
    match w {
        Workload::Batch => t.insert_many(rows),
        Workload::InsertSequential => t.insert_sequential(rows),
        Workload::InsertBatched => t.insert_batched(rows),
        Workload::Copy => t.copy_in(rows),
        other => unreachable!("{other:?} is not a users-table insert workload"),
    }
    t0.elapsed()
}

/// Start one thread per entry of `per_writer`, release them together, and
/// time until the last one has committed its rows.
fn concurrent_commits(t: &dyn UsersTable, per_writer: &[Vec<User>]) -> Duration {
    let start = Barrier::new(per_writer.len() + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = per_writer
            .iter()
            .map(|rows| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    t.commit_many(rows);
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        for h in handles {
            h.join().expect("writer thread panicked");
        }
        t0.elapsed()
    })
}

/// [`Workload::Flights`] for one target.
#[derive(Debug, Clone)]
pub struct FlightsResult {
    /// Target name.
    pub name: String,
    /// Rows inserted.
    pub rows: usize,
    /// Insert + commit wall time.
    pub elapsed: Duration,
}

impl FlightsResult {
    /// Rows per second (one repetition).
    pub fn stat(&self) -> Stat {
        Stat::from_samples(self.rows, &[self.elapsed])
    }
}

/// Runs [`Workload::Flights`] once on every target that supports it, each in a
/// fresh place from `scratch`.
///
/// # Errors
/// A place cannot be made or cleaned up, or a load fails.
pub fn run_flights(
    scratch: &Scratch,
    targets: &[&dyn Target],
    rows: &[FlightRow],
) -> anyhow::Result<Vec<FlightsResult>> {
    let mut out = Vec::new();
    for &t in targets.iter().filter(|t| t.supports(Workload::Flights)) {
        let place = scratch.place(t.name())?;
        let elapsed = t
            .load_flights(&place, rows)
            .with_context(|| format!("{}: flights load", t.name()))?;
        place.close()?;
        eprintln!("  {}: flights {:.2}s", t.name(), elapsed.as_secs_f64());
        out.push(FlightsResult {
            name: t.name().to_owned(),
            rows: rows.len(),
            elapsed,
        });
    }
    Ok(out)
}

/// [`Workload::Changes`] for one target: rows/s of the same insert without and
/// with change capture.
#[derive(Debug, Clone)]
pub struct ChangesResult {
    /// Target name.
    pub name: String,
    /// Rows per transaction.
    pub rows: usize,
    /// Rows/s into a table without change capture.
    pub without: Stat,
    /// Rows/s into a table with change capture.
    pub with: Stat,
}

impl ChangesResult {
    /// Time with capture / time without (> 1 = capture costs that factor), from
    /// the medians.
    pub fn overhead(&self) -> f64 {
        if self.with.median > 0.0 {
            self.without.median / self.with.median
        } else {
            f64::NAN
        }
    }
}

/// Runs [`Workload::Changes`] on every target that supports it:
/// `cfg.cdc_reps` timed repetitions of each (target, with/without) pair, each in
/// a fresh place, after one untimed warm-up of each pair. Repetitions are
/// interleaved as in [`run_users`].
///
/// # Errors
/// A place cannot be made or cleaned up, or an insert fails.
pub fn run_changes(
    cfg: &Config,
    scratch: &Scratch,
    targets: &[&dyn Target],
) -> anyhow::Result<Vec<ChangesResult>> {
    let targets: Vec<&dyn Target> = targets
        .iter()
        .copied()
        .filter(|t| t.supports(Workload::Changes))
        .collect();
    let rows: Vec<User> = (1..=cfg.cdc_rows as i64).map(User::synthetic).collect();
    let pairs: Vec<(usize, bool)> = (0..targets.len())
        .flat_map(|i| [(i, false), (i, true)])
        .collect();
    let one = |i: usize, changes: bool| -> anyhow::Result<Duration> {
        let place = scratch.place(targets[i].name())?;
        let took = targets[i]
            .insert_rows(&place, &rows, changes)
            .with_context(|| format!("{}: insert with changes={changes}", targets[i].name()))?;
        place.close()?;
        Ok(took)
    };
    for &(i, changes) in &pairs {
        one(i, changes)?;
    }
    let mut times = vec![Vec::with_capacity(cfg.cdc_reps); pairs.len()];
    for rep in 0..cfg.cdc_reps {
        for k in 0..pairs.len() {
            let p = (rep + k) % pairs.len();
            let (i, changes) = pairs[p];
            times[p].push(one(i, changes)?);
        }
    }
    let mut out = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        let r = ChangesResult {
            name: t.name().to_owned(),
            rows: cfg.cdc_rows,
            without: Stat::from_samples(cfg.cdc_rows, &times[2 * i]),
            with: Stat::from_samples(cfg.cdc_rows, &times[2 * i + 1]),
        };
        eprintln!(
            "  {:<16} insert {} rows, 1 tx: without changes {:>8.0} rows/s (MAD {:.1}%), with {:>8.0} rows/s (MAD {:.1}%), time with/without {:.2}x",
            r.name,
            r.rows,
            r.without.median,
            r.without.spread() * 100.0,
            r.with.median,
            r.with.spread() * 100.0,
            r.overhead()
        );
        out.push(r);
    }
    Ok(out)
}
