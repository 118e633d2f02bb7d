//! `datalayer migrate` and `datalayer verify`: a live migration between two engines
//! (`datalayer::migrate`), with a progress bar per table and a summary, and the
//! side-by-side verification on its own.

use anyhow::{Context, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use datalayer::migrate::{CutoverOptions, Migration, Options, VerifyReport};
use datalayer::{Db, Executor, Op, Output};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The arguments of `datalayer migrate`.
#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    ends: Ends,
    /// After the copy, keep replaying the source's changes until Ctrl-C or SIGTERM.
    #[arg(long)]
    follow: bool,
    /// After the copy (and the follow), cut over: drain the change feed to its end and
    /// compare every row changed meanwhile. The fence covers writes made through this
    /// process only: stop the application's writes to the source first (in an
    /// application, `Migration::cutover` fences its own `Db`).
    #[arg(long)]
    cutover: bool,
    /// After the cut-over, keep the way back open: turn on change capture on the
    /// target and replay its changes into the source until Ctrl-C or SIGTERM
    /// (`Migration::reverse`), so that moving back loses nothing; then verify the
    /// source against the target.
    #[arg(long, requires = "cutover")]
    follow_back: bool,
    /// Continue a migration into this target that an earlier run left unfinished.
    /// Without it, a target holding such progress is refused.
    #[arg(long)]
    resume: bool,
    /// The wall time one chunk should take, in milliseconds (chunk sizes follow it).
    #[arg(long, default_value_t = 250, value_name = "MS")]
    chunk_ms: u64,
}

/// The arguments of `datalayer verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    ends: Ends,
}

/// Source, target and the tables.
#[derive(clap::Args, Debug)]
struct Ends {
    /// The source engine's URL.
    #[arg(long, value_name = "URL")]
    from: String,
    /// The target engine's URL.
    #[arg(long, value_name = "URL")]
    to: String,
    /// Only these tables (comma-separated). Default: every table of the source's
    /// catalog.
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    tables: Vec<String>,
}

impl Ends {
    async fn open(&self) -> anyhow::Result<(Db, Db)> {
        let source = datalayer::connect(self.from.clone())
            .await
            .with_context(|| format!("source {}", datalayer::redact(&self.from)))?;
        let target = datalayer::connect(self.to.clone())
            .await
            .with_context(|| format!("target {}", datalayer::redact(&self.to)))?;
        Ok((source, target))
    }

    fn migration(&self, source: &Db, target: &Db, opts: Options) -> Migration {
        let m = Migration::new(source, target).options(opts);
        if self.tables.is_empty() {
            m
        } else {
            m.tables(self.tables.iter().cloned())
        }
    }
}

/// `datalayer migrate`.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let (source, target) = args.ends.open().await?;
    let opts = Options {
        chunk_time: Duration::from_millis(args.chunk_ms.max(1)),
        ..Options::default()
    };
    let m = args.ends.migration(&source, &target, opts);
    let status = m.status().await?;
    let schemas = m.source_tables().await?;
    let started: Vec<&str> = status
        .iter()
        .filter(|(_, s)| s.is_some())
        .map(|(t, _)| t.as_str())
        .collect();
    if !args.resume && status.iter().any(|(_, s)| s.is_some()) {
        bail!(
            "the target holds the progress of an earlier migration (tables {:?}); \
             pass --resume to continue it",
            status
                .iter()
                .filter(|(_, s)| s.is_some())
                .map(|(t, _)| t)
                .collect::<Vec<_>>()
        );
    }
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:>16} [{bar:30}] {pos}/{len} rows {per_sec} eta {eta} {msg}",
    )?
    .progress_chars("=> ");
    let mut by_table: HashMap<String, ProgressBar> = HashMap::new();
    for ((t, s), schema) in status.iter().zip(&schemas) {
        let total = count(&source, schema).await?;
        let bar = bars.add(ProgressBar::new(total).with_style(style.clone()));
        bar.set_prefix(t.clone());
        bar.set_position(s.map_or(0, |s| s.rows));
        by_table.insert(t.clone(), bar);
    }
    if !started.is_empty() {
        bars.println(format!("resuming {started:?}"))?;
    }
    let t0 = Instant::now();
    let m = m.on_progress(move |p| {
        if let Some(b) = by_table.get(p.table) {
            b.set_position(p.rows);
            if p.done {
                b.finish_with_message("copied");
            } else {
                b.set_message(format!("lag {} ms", p.lag.as_millis()));
            }
        }
    });
    let copied = m.copy().await?;
    let elapsed = t0.elapsed();
    let rows: u64 = copied.tables.iter().map(|t| t.rows).sum();
    let bytes: u64 = copied.tables.iter().map(|t| t.bytes).sum();
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!(
        "copied {rows} rows ({:.1} MB) in {:.2} s: {:.0} rows/s, {:.1} MB/s; {} changes replayed",
        bytes as f64 / 1e6,
        secs,
        rows as f64 / secs,
        bytes as f64 / 1e6 / secs,
        copied.tables.iter().map(|t| t.changes).sum::<u64>()
    );
    if args.follow {
        println!("following the source's changes; Ctrl-C or SIGTERM stops");
        let replayed = follow_until_stopped(&m).await?;
        println!("followed: {replayed} changes replayed");
    }
    if args.cutover {
        let cut = m.cutover(CutoverOptions::default()).await?;
        println!(
            "cut over: writes held {:.1} ms; {} changes drained; {} changed rows compared",
            cut.pause.as_secs_f64() * 1e3,
            cut.drained,
            cut.checked_before + cut.verified_rows
        );
        cut.fence.seal();
        if args.follow_back {
            let back = m.reverse().await?;
            println!(
                "following the target's changes back into the source; Ctrl-C or SIGTERM stops"
            );
            let replayed = follow_until_stopped(&back).await?;
            println!("followed back: {replayed} changes replayed into the source");
            let report = back.verify().await?;
            print_report(&report);
            source.close().await?;
            target.close().await?;
            return verdict(&report);
        }
    }
    let report = m.verify().await?;
    print_report(&report);
    source.close().await?;
    target.close().await?;
    verdict(&report)
}

/// `datalayer verify`.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let (source, target) = args.ends.open().await?;
    let report = args
        .ends
        .migration(&source, &target, Options::default())
        .verify()
        .await?;
    print_report(&report);
    source.close().await?;
    target.close().await?;
    verdict(&report)
}

/// Replays `m`'s changes until Ctrl-C or SIGTERM; returns how many.
async fn follow_until_stopped(m: &Migration) -> anyhow::Result<u64> {
    let mut replayed = 0u64;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        replayed += m.follow_until_caught_up().await?.changes;
        tokio::select! {
            () = &mut stop => return Ok(replayed),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn count(db: &Db, table: &datalayer::TableSchema) -> anyhow::Result<u64> {
    match db.run(Op::Count { table }).await? {
        Output::Count(n) => Ok(n),
        other => bail!("unexpected output of a count: {other:?}"),
    }
}

/// Prints the verification side by side, one line per table.
fn print_report(r: &VerifyReport) {
    let mut grid = Table::new();
    grid.load_preset(UTF8_FULL_CONDENSED).set_header([
        "table",
        "source rows",
        "target rows",
        "buckets",
        "differing key ranges",
        "indexes (source/target entries)",
        "result",
    ]);
    for t in &r.tables {
        let ranges: Vec<String> = t
            .mismatched
            .iter()
            .map(|k| {
                format!(
                    "({}, {}]: {} vs {} rows",
                    k.after
                        .as_ref()
                        .map_or("start".into(), |a| format!("{a:?}")),
                    k.upto.as_ref().map_or("end".into(), |u| format!("{u:?}")),
                    k.source_rows,
                    k.target_rows
                )
            })
            .collect();
        let indexes: Vec<String> = t
            .indexes
            .iter()
            .map(|i| format!("{} {}/{}", i.index, i.source, i.target))
            .collect();
        grid.add_row([
            t.table.clone(),
            t.source_rows.to_string(),
            t.target_rows.to_string(),
            t.buckets.to_string(),
            ranges.join("\n"),
            indexes.join("\n"),
            if t.is_equal() { "equal" } else { "DIFFERENT" }.to_owned(),
        ]);
    }
    println!("{grid}");
}

/// `Ok` when every table is equal; else an error that sets exit status 1.
fn verdict(r: &VerifyReport) -> anyhow::Result<()> {
    let bad: Vec<&str> = r
        .tables
        .iter()
        .filter(|t| !t.is_equal())
        .map(|t| t.table.as_str())
        .collect();
    if bad.is_empty() {
        println!("verify: {} table(s) equal", r.tables.len());
        Ok(())
    } else {
        bail!("verify: {} table(s) differ: {bad:?}", bad.len())
    }
}
