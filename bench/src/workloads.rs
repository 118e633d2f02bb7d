//! The shared workload driver: the [`Target`] trait every store implements,
//! the synthetic data set, and the timing loop that turns one target into a
//! [`TargetResults`].
//!
//! Every workload is timed the same way: a short untimed warm-up, then a
//! number of timed repetitions of a fixed amount of work; the median
//! throughput is reported with its median absolute deviation (MAD). Nothing
//! here asserts on timing; the only assertions are on correctness (a point read finds its row, a range scan returns exactly the
//! rows the generator put in that range), so a broken target cannot post a
//! fast but meaningless figure.

use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::stats::Stat;

/// Ages are drawn uniformly from `0..AGE_SPAN`, so a window of `w` ages holds
/// about `n * w / AGE_SPAN` of `n` rows. The span is wide (think "age in
/// months") so that a range scan over 100,000 rows can return ~100 of them.
pub const AGE_SPAN: i32 = 1_000;

/// Rows a range scan should return, on average.
pub const RANGE_TARGET_ROWS: usize = 100;

/// Rows in one transaction of workload 4.
pub const BATCH_ROWS: usize = 1_000;

/// Concurrent writers in workload 3.
pub const WRITERS: usize = 8;

/// Fixed seed, so every target sees the same keys and ranges in the same order.
const SEED: u64 = 0x5EED_DA7A_1A7E;

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

/// A store under test.
///
/// A target owns everything it needs below `dir` and is shared by reference
/// between the writer threads of workload 3, hence `Send + Sync`. Methods
/// panic on a store error: the benchmark cannot go on from one.
///
/// Durability contract: every method that writes commits with an fsync (or
/// the store's equivalent guarantee) before it returns. A target whose store
/// offers a weaker mode must not use it here.
///
/// The `*_many` methods have defaults that loop over the single-operation
/// methods; the driver only calls the `*_many` forms, so an async target
/// (which has to `block_on` somewhere) can override them to enter its runtime
/// once per repetition instead of once per operation.
pub trait Target: Send + Sync {
    /// Short display name, used as the column header.
    fn name(&self) -> String;

    /// Open a fresh store in the empty directory `dir` and load `rows` (in
    /// any number of transactions; this is not timed).
    fn setup(dir: &Path, rows: &[User]) -> Self
    where
        Self: Sized;

    /// The row with primary key `id`, decoded, or `None`.
    fn point_read(&self, id: i64) -> Option<User>;

    /// Insert `u` in its own durable transaction.
    fn commit_one(&self, u: &User);

    /// Insert all of `rows` in ONE durable transaction.
    fn batch(&self, rows: &[User]);

    /// Fetch (decode) every row with `lo <= age <= hi` through the age index;
    /// returns how many there were.
    fn range_by_age(&self, lo: i32, hi: i32) -> usize;

    /// Point-read every id in `ids`; returns how many were found.
    fn point_reads(&self, ids: &[i64]) -> usize {
        ids.iter()
            .filter(|&&id| self.point_read(id).is_some())
            .count()
    }

    /// Insert each of `rows` in its own durable transaction, in order.
    fn commit_many(&self, rows: &[User]) {
        for u in rows {
            self.commit_one(u);
        }
    }

    /// Run every scan in `ranges`; returns the total number of rows fetched.
    fn range_scans(&self, ranges: &[(i32, i32)]) -> usize {
        ranges
            .iter()
            .map(|&(lo, hi)| self.range_by_age(lo, hi))
            .sum()
    }
}

/// Workload 6: bulk-load the nycflights13 `flights` table.
pub trait FlightsLoader {
    /// Short display name.
    fn name(&self) -> String;

    /// Create the `flights` table with its indexes below the empty directory
    /// `dir` and insert all of `rows` in ONE durable transaction. Only the
    /// insert and commit should be inside the returned duration; schema
    /// creation may be outside it.
    fn load(&self, dir: &Path, rows: &[crate::flights::FlightRow]) -> Duration;
}

/// Workload 7: insert rows in one transaction into a fresh table, with change
/// data capture (triggers writing a change log) or without.
pub trait CdcInserter {
    /// Short display name (the same as the store's [`Target::name`]).
    fn name(&self) -> String;

    /// Open a fresh store in the empty directory `dir` with an empty `users`
    /// table (same schema and index as workloads 1-5); when `cdc`, install
    /// change capture on it. Then insert all of `rows` in ONE durable
    /// transaction and return the time of the insert and commit only. When
    /// `cdc`, check (untimed) that the log holds one change per row.
    fn insert(&self, dir: &Path, rows: &[User], cdc: bool) -> Duration;
}

/// How much work each workload does.
#[derive(Debug, Clone)]
pub struct Config {
    /// Rows preloaded before any workload (N).
    pub preload_rows: usize,
    /// Timed repetitions of the read workloads (1, 5); the median is reported.
    pub reps: usize,
    /// Timed repetitions of the commit workloads (2, 3); the median is reported.
    pub commit_reps: usize,
    /// Point reads per repetition.
    pub reads_per_rep: usize,
    /// Range scans per repetition.
    pub scans_per_rep: usize,
    /// Single-row commits per repetition, one writer.
    pub commits_per_rep: usize,
    /// Single-row commits per writer per repetition, `WRITERS` writers.
    pub commits_per_writer_per_rep: usize,
    /// 1,000-row batches per repetition (each timed as one sample).
    pub batch_reps: usize,
    /// Rows of flights.csv.gz to insert in workload 6 (`None` = all).
    pub flights_rows: Option<usize>,
    /// Rows inserted in the one transaction of workload 7.
    pub cdc_rows: usize,
    /// Timed repetitions of workload 7, per store and variant (fresh table each).
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

    /// Width of the age window that returns ~[`RANGE_TARGET_ROWS`] rows.
    pub fn range_width(&self) -> i32 {
        let w = (RANGE_TARGET_ROWS as f64 * f64::from(AGE_SPAN) / self.preload_rows as f64).ceil();
        (w as i32).clamp(1, AGE_SPAN)
    }
}

/// The workloads, in the order they are run and printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// 1. Point read by primary key.
    PointRead,
    /// 5. Index range scan on age (run second: before any write changes the data).
    RangeScan,
    /// 2. Single-row durable commits, one writer.
    Commit1,
    /// 3. Single-row durable commits, [`WRITERS`] concurrent writers.
    Commit8,
    /// 4. One 1,000-row durable transaction.
    Batch,
}

impl Workload {
    /// All workloads in run order.
    pub const ALL: [Workload; 5] = [
        Workload::PointRead,
        Workload::RangeScan,
        Workload::Commit1,
        Workload::Commit8,
        Workload::Batch,
    ];

    /// Row label in the report.
    pub fn label(self) -> &'static str {
        match self {
            Workload::PointRead => "1 point read           reads/s",
            Workload::Commit1 => "2 durable commit, 1w   commits/s",
            Workload::Commit8 => "3 durable commit, 8w   commits/s",
            Workload::Batch => "4 batch 1k rows, 1 tx  rows/s",
            Workload::RangeScan => "5 age range ~100 rows  scans/s",
        }
    }

    /// Position in the printed table (the brief's numbering).
    pub fn print_order(self) -> usize {
        match self {
            Workload::PointRead => 1,
            Workload::Commit1 => 2,
            Workload::Commit8 => 3,
            Workload::Batch => 4,
            Workload::RangeScan => 5,
        }
    }
}

/// Everything measured for one target.
#[derive(Debug, Clone)]
pub struct TargetResults {
    /// Display name.
    pub name: String,
    /// Untimed-in-the-table setup (open + preload) wall time.
    pub setup: Duration,
    /// One entry per workload run, in [`Workload::ALL`] order.
    pub stats: Vec<(Workload, Stat)>,
}

impl TargetResults {
    /// The figure for `w`, if it was run.
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
}

/// Opens a target in an empty directory with the given rows preloaded.
pub type SetupFn = fn(&Path, &[User]) -> Box<dyn Target>;

/// [`Target::setup`] for `T`, boxed: the [`SetupFn`] of a target type.
pub fn boxed_setup<T: Target + 'static>(dir: &Path, rows: &[User]) -> Box<dyn Target> {
    Box::new(T::setup(dir, rows))
}

/// One open target during a run.
struct Live {
    target: Box<dyn Target>,
    dir: tempfile::TempDir,
    ids: IdSource,
    name: String,
    setup: Duration,
    stats: Vec<(Workload, Stat)>,
}

/// Open every target (each in its own temporary directory under `parent`),
/// run the selected workloads, then drop the targets and remove their
/// directories.
///
/// Repetitions are interleaved: repetition `r` of a workload runs on every
/// target, in an order rotated by `r`, before repetition `r + 1` starts. A
/// burst of load from another process then lands on all targets alike
/// instead of on whichever one happened to be running.
///
/// # Errors
///
/// A temporary directory cannot be created or removed.
pub fn run_all(
    cfg: &Config,
    data: &Dataset,
    parent: &Path,
    setups: &[SetupFn],
    selected: &[Workload],
) -> anyhow::Result<Vec<TargetResults>> {
    let mut live = Vec::with_capacity(setups.len());
    for setup in setups {
        let dir = tempfile::Builder::new()
            .prefix("datalayer-bench-")
            .tempdir_in(parent)?;
        let t0 = Instant::now();
        let target = setup(dir.path(), &data.rows);
        let setup = t0.elapsed();
        let name = target.name();
        eprintln!("  {name}: setup {:.2}s", setup.as_secs_f64());
        live.push(Live {
            target,
            dir,
            ids: IdSource(AtomicI64::new(cfg.preload_rows as i64 + 1)),
            name,
            setup,
            stats: Vec::new(),
        });
    }

    for w in Workload::ALL {
        if !selected.contains(&w) {
            continue;
        }
        for l in &live {
            warm_up(l.target.as_ref(), w, data, &l.ids);
        }
        let (reps, ops) = match w {
            Workload::PointRead => (cfg.reps, data.read_ids.len()),
            Workload::RangeScan => (cfg.reps, data.ranges.len()),
            Workload::Commit1 => (cfg.commit_reps, cfg.commits_per_rep),
            Workload::Commit8 => (cfg.commit_reps, cfg.commits_per_writer_per_rep * WRITERS),
            Workload::Batch => (cfg.batch_reps, BATCH_ROWS),
        };
        let mut times = vec![Vec::with_capacity(reps); live.len()];
        for rep in 0..reps {
            for k in 0..live.len() {
                let i = (rep + k) % live.len();
                times[i].push(one_rep(live[i].target.as_ref(), w, cfg, data, &live[i].ids));
            }
        }
        for (l, times) in live.iter_mut().zip(&times) {
            let stat = Stat::from_samples(ops, times);
            eprintln!(
                "  {:<16} {:<34} median {:>10.0}  MAD {:>4.1}%  min {:>10.0}  max {:>10.0}",
                l.name,
                w.label(),
                stat.median,
                stat.spread() * 100.0,
                stat.min,
                stat.max
            );
            l.stats.push((w, stat));
        }
    }

    let mut results = Vec::with_capacity(live.len());
    for l in live {
        drop(l.target);
        l.dir.close()?;
        results.push(TargetResults {
            name: l.name,
            setup: l.setup,
            stats: l.stats,
        });
    }
    Ok(results)
}

/// Untimed warm-up for `w`; for the read workloads also the correctness check.
fn warm_up(t: &dyn Target, w: Workload, data: &Dataset, ids: &IdSource) {
    match w {
        Workload::PointRead => {
            let warm = &data.read_ids[..data.read_ids.len().min(10_000)];
            assert_eq!(t.point_reads(warm), warm.len(), "point read missed a row");
        }
        Workload::RangeScan => {
            let got = t.range_scans(&data.ranges);
            assert_eq!(got, data.ranges_expected, "range scans returned wrong rows");
        }
        Workload::Commit1 => t.commit_many(&ids.rows(10)),
        Workload::Commit8 => {
            let per_writer: Vec<Vec<User>> = (0..WRITERS).map(|_| ids.rows(2)).collect();
            concurrent_commits(t, &per_writer);
        }
        Workload::Batch => t.batch(&ids.rows(BATCH_ROWS)),
    }
}

/// Time one repetition of `w` on `t`. Row generation happens before the clock starts.
fn one_rep(t: &dyn Target, w: Workload, cfg: &Config, data: &Dataset, ids: &IdSource) -> Duration {
    match w {
        Workload::PointRead => {
            let t0 = Instant::now();
            let found = t.point_reads(&data.read_ids);
            let elapsed = t0.elapsed();
            assert_eq!(found, data.read_ids.len(), "point read missed a row");
            elapsed
        }
        Workload::RangeScan => {
            let t0 = Instant::now();
            let got = t.range_scans(&data.ranges);
            let elapsed = t0.elapsed();
            assert_eq!(got, data.ranges_expected, "range scans returned wrong rows");
            elapsed
        }
        Workload::Commit1 => {
            let rows = ids.rows(cfg.commits_per_rep);
            let t0 = Instant::now();
            t.commit_many(&rows);
            t0.elapsed()
        }
        Workload::Commit8 => {
            let per_writer: Vec<Vec<User>> = (0..WRITERS)
                .map(|_| ids.rows(cfg.commits_per_writer_per_rep))
                .collect();
            concurrent_commits(t, &per_writer)
        }
        Workload::Batch => {
            let rows = ids.rows(BATCH_ROWS);
            let t0 = Instant::now();
            t.batch(&rows);
            t0.elapsed()
        }
    }
}

/// Start one thread per entry of `per_writer`, release them together, and
/// time until the last one has committed its rows.
fn concurrent_commits(t: &dyn Target, per_writer: &[Vec<User>]) -> Duration {
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

/// Workload 7 for one store: rows/s of the same insert without and with change
/// capture.
#[derive(Debug, Clone)]
pub struct CdcResult {
    /// Store name.
    pub name: String,
    /// Rows per transaction.
    pub rows: usize,
    /// Rows/s into a table without change capture.
    pub without: Stat,
    /// Rows/s into a table with change capture.
    pub with: Stat,
}

impl CdcResult {
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

/// Run workload 7 on every inserter: `cfg.cdc_reps` timed repetitions of
/// each (store, with/without) pair, each in a fresh temporary directory under
/// `parent`, after one untimed warm-up of each pair. Repetitions are
/// interleaved as in [`run_all`]: repetition `r` runs every pair, in an order
/// rotated by `r`, before repetition `r + 1`.
///
/// # Errors
///
/// A temporary directory cannot be created or removed.
pub fn run_cdc(
    cfg: &Config,
    parent: &Path,
    inserters: &[Box<dyn CdcInserter>],
) -> anyhow::Result<Vec<CdcResult>> {
    let rows: Vec<User> = (1..=cfg.cdc_rows as i64).map(User::synthetic).collect();
    let pairs: Vec<(usize, bool)> = (0..inserters.len())
        .flat_map(|i| [(i, false), (i, true)])
        .collect();
    let one = |i: usize, cdc: bool| -> anyhow::Result<Duration> {
        let dir = tempfile::Builder::new()
            .prefix("datalayer-bench-cdc-")
            .tempdir_in(parent)?;
        let took = inserters[i].insert(dir.path(), &rows, cdc);
        dir.close()?;
        Ok(took)
    };
    for &(i, cdc) in &pairs {
        one(i, cdc)?;
    }
    let mut times = vec![Vec::with_capacity(cfg.cdc_reps); pairs.len()];
    for rep in 0..cfg.cdc_reps {
        for k in 0..pairs.len() {
            let p = (rep + k) % pairs.len();
            let (i, cdc) = pairs[p];
            times[p].push(one(i, cdc)?);
        }
    }
    let mut out = Vec::with_capacity(inserters.len());
    for (i, ins) in inserters.iter().enumerate() {
        let without = Stat::from_samples(cfg.cdc_rows, &times[2 * i]);
        let with = Stat::from_samples(cfg.cdc_rows, &times[2 * i + 1]);
        let r = CdcResult {
            name: ins.name(),
            rows: cfg.cdc_rows,
            without,
            with,
        };
        eprintln!(
            "  {:<16} 7 insert {} rows, 1 tx: without CDC {:>8.0} rows/s (MAD {:.1}%), with CDC {:>8.0} rows/s (MAD {:.1}%), time with/without {:.2}x",
            r.name,
            r.rows,
            without.median,
            without.spread() * 100.0,
            with.median,
            with.spread() * 100.0,
            r.overhead()
        );
        out.push(r);
    }
    Ok(out)
}
