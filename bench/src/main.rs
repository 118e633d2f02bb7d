//! `datalayer-bench`: the same workloads on several embedded stores, in one
//! process, printed as one side-by-side table.
//!
//! ```text
//! cargo run --release -p datalayer-bench -- [--quick] [--only etchdb,redb] [--no-flights] [--no-cdc]
//! ```
//!
//! Workloads (every write commits durably, fsync per commit):
//! 1. point read by primary key among N preloaded rows;
//! 2. one-row commits, one writer;
//! 3. one-row commits, 8 concurrent writers (3 / 2 shows group commit);
//! 4. one 1,000-row transaction;
//! 5. age-index range scan returning ~100 full rows;
//! 6. bulk load of nycflights13 `flights` (336,776 rows) in one transaction;
//! 7. N rows in one transaction into a table with change capture (CDC
//!    triggers) vs without, on datalayer-sqlite and on raw rusqlite;
//! 8. outbox end to end (`--outbox` runs only this one, `--no-outbox` skips it):
//!    N events emitted 100 per transaction while a consumer handles them, on
//!    datalayer-etch and datalayer-sqlite (and, with `--pg`, datalayer-pg next
//!    to a plain `SKIP LOCKED` queue); see the `outbox` module.
//!
//! Besides the side-by-side table (ratios: first target / peer), a second
//! table puts datalayer-sqlite next to raw rusqlite on every row, as a time
//! ratio layer/raw. Figures are medians over repetitions; nothing asserts on
//! timing.
//!
//! With the cargo feature `pg` and the flag `--pg` (or `--pg-only`), a
//! PostgreSQL section follows: datalayer-pg next to raw tokio-postgres, sqlx and
//! SeaORM (point read, sequential vs batched inserts in one transaction, a
//! 1,000-row insert_many) on the server named by `DATALAYER_PG_URL`; see the
//! `pg` module.

mod flights;
mod outbox;
mod peers;
#[cfg(feature = "pg")]
mod pg;
mod report;
mod stats;
mod workloads;

// One allocator for every target in the process (Rust allocations only; SQLite's C
// allocations stay on the system allocator), so the comparison stays side by side.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;

use crate::report::FlightsResult;
use crate::workloads::{CdcInserter, Config, Dataset, Workload};

/// Side-by-side throughput of embedded stores on the same durable workloads.
#[derive(Debug, Parser)]
#[command(name = "datalayer-bench")]
struct Args {
    /// Small sizes (5,000 preloaded rows, fewer repetitions): under a minute.
    #[arg(long)]
    quick: bool,
    /// Run only these targets (comma-separated keys, e.g. `etchdb,redb`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip workload 6 (flights bulk load).
    #[arg(long)]
    no_flights: bool,
    /// Skip workload 7 (inserts with CDC triggers vs without).
    #[arg(long)]
    no_cdc: bool,
    /// Run only workload 8 (outbox end to end), on the embedded engines and, with
    /// `--pg`, on PostgreSQL (datalayer-pg next to a plain SKIP LOCKED queue).
    #[arg(long, conflicts_with = "no_outbox")]
    outbox: bool,
    /// Skip workload 8 (outbox end to end), also in the PostgreSQL section.
    #[arg(long)]
    no_outbox: bool,
    /// Directory under which each target gets its own temporary directory.
    /// It must be on a real disk (not tmpfs) for fsync figures to mean
    /// anything. Default: the system temporary directory.
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Path of flights.csv.gz. Default: the copy in examples/data.
    #[arg(long)]
    flights: Option<PathBuf>,
    /// Also run the PostgreSQL section (datalayer-pg, raw tokio-postgres, sqlx,
    /// SeaORM) on the server named by `DATALAYER_PG_URL` (default
    /// `postgres://postgres@127.0.0.1:5432/test`). Needs `--features pg`.
    #[arg(long)]
    pg: bool,
    /// Run only the PostgreSQL section (implies `--pg`).
    #[arg(long)]
    pg_only: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.pg || args.pg_only {
        if !cfg!(feature = "pg") {
            bail!(
                "the PostgreSQL section is not compiled in: rebuild with `--features pg` \
                 (cargo run --release -p datalayer-bench --features pg -- --pg)"
            );
        }
        if args.pg_only {
            return run_pg(args.quick, !args.no_outbox, !args.outbox);
        }
    }
    if args.outbox {
        return run_outbox_only(&args);
    }
    let cfg = if args.quick {
        Config::quick()
    } else {
        Config::full()
    };
    let parent = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let all = peers::targets();
    let selected: Vec<_> = if args.only.is_empty() {
        all
    } else {
        for key in &args.only {
            if !all.iter().any(|e| e.key == key) {
                let keys: Vec<_> = all.iter().map(|e| e.key).collect();
                bail!("unknown target {key:?}; known: {}", keys.join(", "));
            }
        }
        all.into_iter()
            .filter(|e| args.only.iter().any(|k| k == e.key))
            .collect()
    };

    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "datalayer-bench ({} run): N = {} preloaded rows, median of {} read / {} commit / {} batch reps, {} cores, temp dir under {}",
        if args.quick { "quick" } else { "full" },
        cfg.preload_rows,
        cfg.reps,
        cfg.commit_reps,
        cfg.batch_reps,
        cores,
        parent.display(),
    );
    println!(
        "per rep: {} point reads, {} range scans (age window {} wide), {} commits (1 writer), {} x {} commits ({} writers), 1 batch of {} rows; workload 7: {} rows in 1 tx, median of {} reps",
        cfg.reads_per_rep,
        cfg.scans_per_rep,
        cfg.range_width(),
        cfg.commits_per_rep,
        workloads::WRITERS,
        cfg.commits_per_writer_per_rep,
        workloads::WRITERS,
        workloads::BATCH_ROWS,
        cfg.cdc_rows,
        cfg.cdc_reps,
    );

    let fs = filesystem_of(&parent);
    println!("temp dir filesystem: {fs}");
    if fs == "tmpfs" || fs == "ramfs" {
        println!(
            "WARNING: {fs} ignores fsync; durable-commit figures are meaningless (use --tmp-dir)"
        );
    }
    let load_before = load_average();
    println!(
        "load average before: {load_before} (other processes share the cores; figures are noisy when it is high)"
    );
    let started = Instant::now();
    let data = Dataset::generate(&cfg);
    let setups: Vec<_> = selected.iter().map(|e| e.setup).collect();
    let results = workloads::run_all(&cfg, &data, &parent, &setups, &Workload::ALL)?;

    let mut flights_results = Vec::new();
    if !args.no_flights {
        let path = args.flights.clone().unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/data/nycflights13/flights.csv.gz"
            ))
        });
        let t0 = Instant::now();
        let mut rows = flights::load_flights(&path)?;
        eprintln!(
            "read {} flights from {} in {:.2}s",
            rows.len(),
            path.display(),
            t0.elapsed().as_secs_f64()
        );
        if let Some(n) = cfg.flights_rows {
            rows.truncate(n);
        }
        for loader in peers::flights_loaders() {
            if !args.only.is_empty() && !args.only.iter().any(|k| *k == loader.name()) {
                continue;
            }
            let dir = tempfile::Builder::new()
                .prefix("datalayer-bench-flights-")
                .tempdir_in(&parent)
                .context("creating flights temp dir")?;
            let elapsed = loader.load(dir.path(), &rows);
            dir.close()?;
            eprintln!("  {}: flights {:.2}s", loader.name(), elapsed.as_secs_f64());
            flights_results.push(FlightsResult {
                name: loader.name(),
                rows: rows.len(),
                elapsed,
            });
        }
    }

    let mut cdc_results = Vec::new();
    if !args.no_cdc {
        let inserters: Vec<Box<dyn CdcInserter>> = peers::cdc_inserters()
            .into_iter()
            // `--only rusqlite` also keeps "rusqlite-on-dl-schema".
            .filter(|i| {
                args.only.is_empty() || args.only.iter().any(|k| i.name().starts_with(k.as_str()))
            })
            .collect();
        if !inserters.is_empty() {
            cdc_results = workloads::run_cdc(&cfg, &parent, &inserters)?;
        }
    }

    let mut outbox_results = Vec::new();
    if !args.no_outbox {
        outbox_results = outbox::run_embedded(&parent, outbox::events(args.quick))?;
    }

    println!();
    print!("{}", report::workloads_table(&results));
    if !flights_results.is_empty() {
        println!();
        print!("{}", report::flights_table(&flights_results));
    }
    if !cdc_results.is_empty() {
        println!();
        print!("{}", report::cdc_table(&cdc_results));
    }
    let pair = report::pair_table(
        "datalayer-sqlite",
        "rusqlite",
        &results,
        &flights_results,
        &cdc_results,
    );
    if !pair.is_empty() {
        println!();
        print!("{pair}");
    }
    if !outbox_results.is_empty() {
        println!();
        print!("{}", outbox::outbox_table(&outbox_results));
    }
    println!();
    println!(
        "ratios: first target / peer on the same row (> 1 = first is faster); time a/b and with/without: > 1 = takes longer. Total {:.1}s; load average before {load_before}, after {}.",
        started.elapsed().as_secs_f64(),
        load_average(),
    );
    if args.pg {
        println!();
        run_pg(args.quick, !args.no_outbox, true)?;
    }
    Ok(())
}

/// `--outbox`: workload 8 alone, on the embedded engines, then (with `--pg`) on
/// PostgreSQL.
fn run_outbox_only(args: &Args) -> anyhow::Result<()> {
    let parent = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let n = outbox::events(args.quick);
    let fs = filesystem_of(&parent);
    println!(
        "datalayer-bench outbox end to end ({} run): N = {n} events, temp dir under {} ({fs}), load average before {}",
        if args.quick { "quick" } else { "full" },
        parent.display(),
        load_average(),
    );
    let mut results = outbox::run_embedded(&parent, n)?;
    if args.pg {
        results.extend(run_pg_outbox(n)?);
    }
    println!();
    print!("{}", outbox::outbox_table(&results));
    println!("load average after: {}", load_average());
    Ok(())
}

/// Workload 8 on PostgreSQL: datalayer-pg and the plain SKIP LOCKED queue.
#[cfg(feature = "pg")]
fn run_pg_outbox(n: usize) -> anyhow::Result<Vec<outbox::OutboxResult>> {
    pg::outbox::run(n)
}

/// Without the `pg` feature there is no PostgreSQL section (`main` refuses `--pg`).
#[cfg(not(feature = "pg"))]
fn run_pg_outbox(_n: usize) -> anyhow::Result<Vec<outbox::OutboxResult>> {
    bail!("the PostgreSQL section needs `--features pg`")
}

/// The PostgreSQL section: runs it and prints its table.
#[cfg(feature = "pg")]
fn run_pg(quick: bool, with_outbox: bool, with_rows: bool) -> anyhow::Result<()> {
    if !with_rows {
        let results = run_pg_outbox(outbox::events(quick))?;
        println!();
        print!("{}", outbox::outbox_table(&results));
        return Ok(());
    }
    let cfg = if quick {
        pg::PgConfig::quick()
    } else {
        pg::PgConfig::full()
    };
    println!(
        "datalayer-bench PostgreSQL section ({} run): N = {} preloaded rows, {} point reads x {} reps, M = {} rows x {} reps per insert row, {} cores",
        if quick { "quick" } else { "full" },
        cfg.preload_rows,
        cfg.reads_per_rep,
        cfg.read_reps,
        pg::INSERT_ROWS,
        cfg.insert_reps,
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    let load_before = load_average();
    println!("load average before: {load_before}");
    let started = Instant::now();
    let (info, results) = pg::run(&cfg)?;
    println!();
    print!("{}", pg::pg_table(&cfg, &info, &results));
    if with_outbox {
        let results = run_pg_outbox(outbox::events(quick))?;
        println!();
        print!("{}", outbox::outbox_table(&results));
    }
    println!(
        "ratios: time a/b > 1 = a takes longer; datalayer-pg/peer > 1 = datalayer-pg is faster. Total {:.1}s; load average before {load_before}, after {}.",
        started.elapsed().as_secs_f64(),
        load_average(),
    );
    Ok(())
}

/// Without the `pg` feature there is no PostgreSQL section (`main` refuses `--pg`).
#[cfg(not(feature = "pg"))]
fn run_pg(_quick: bool, _with_outbox: bool, _with_rows: bool) -> anyhow::Result<()> {
    bail!("the PostgreSQL section needs `--features pg`")
}

/// Type of the filesystem holding `dir` (Linux: longest matching mount
/// point in /proc/mounts), or "unknown".
fn filesystem_of(dir: &std::path::Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown".into();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, mount, fstype) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(mount)
                .then(|| (mount.len(), fstype.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, fs)| fs)
}

/// The 1, 5 and 15 minute load averages (Linux), or "n/a".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".into())
}
