//! The migration section (`--migrate`): `datalayer::migrate` copying the nycflights13
//! `flights` table (336,776 rows, its three secondary indexes) between engines, next
//! to the fastest raw write of the same rows into the same target table in the same
//! run; then follow lag at 5,000 row writes/s on the source and the cut-over's write
//! pause; and the copy in 4 key ranges at once next to one.
//!
//! Ceilings, each writing rows already in memory (so they leave out the source read
//! that the migration pays): PostgreSQL — one binary `COPY` (tokio-postgres
//! `BinaryCopyInWriter`) in one transaction (with `--features pg`); SQLite — raw
//! rusqlite, one prepared `INSERT` per row in one transaction; etch, Redis and TiKV
//! (the in-process test cluster, with `--features tikv`) — the
//! engine's own `insert_many`, 20,000 rows per transaction (no layer below it to
//! compare with).

use crate::flights::FlightRow;
use crate::targets::Scratch;
use crate::targets::datalayer::{DlFlight, ETCH_URL, SQLITE_URL, render};
use anyhow::{Context, ensure};
use datalayer::migrate::{CutoverOptions, Migration, Options};
use datalayer::{Db, Executor};
use std::time::{Duration, Instant};

/// The engines of the section: name and URL template ([`render`]ed for a fresh
/// place of `scratch`: its directory, schema or namespace).
pub struct Engines {
    /// `(name, template)`: etch and SQLite, then PostgreSQL, Redis and TiKV when
    /// their servers are in the run.
    pub templates: Vec<(&'static str, String)>,
    /// The PostgreSQL server, for the raw `COPY` ceiling.
    #[cfg(feature = "pg")]
    pub pg: Option<std::sync::Arc<crate::pg::PgServer>>,
    /// Engines whose places come from a scratch of their own (TiKV's namespaces next
    /// to Redis's).
    pub own_scratch: Vec<(&'static str, Scratch)>,
}

impl Engines {
    /// etch and SQLite (the bench's own templates), plus the servers given.
    pub fn new() -> Self {
        Engines {
            templates: vec![("etch", ETCH_URL.into()), ("sqlite", SQLITE_URL.into())],
            #[cfg(feature = "pg")]
            pg: None,
            own_scratch: Vec::new(),
        }
    }
}

/// One endpoint: the rendered URL of a fresh place (closed by the caller).
pub(crate) struct End {
    pub(crate) kind: &'static str,
    pub(crate) url: String,
    pub(crate) place: crate::targets::Place,
}

impl End {
    /// A fresh place for `kind` (sync: making a schema blocks on the server's runtime).
    pub(crate) fn new(
        scratch: &Scratch,
        engines: &Engines,
        kind: &'static str,
    ) -> anyhow::Result<End> {
        let template = engines
            .templates
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, t)| t)
            .with_context(|| format!("engine {kind} is not in this run"))?;
        let scratch = engines
            .own_scratch
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(scratch, |(_, s)| s);
        let place = scratch.place(&format!("mig_{kind}"))?;
        let url = render(template, &place)?;
        Ok(End { kind, url, place })
    }

    pub(crate) async fn db(&self) -> anyhow::Result<Db> {
        datalayer::builder(self.url.clone())
            .table::<DlFlight>()
            .connect()
            .await
            .with_context(|| datalayer::redact(&self.url))
    }

    pub(crate) fn close(self) -> anyhow::Result<()> {
        self.place.close()
    }
}

/// The column names of the flights table, comma-separated (for the raw `COPY`).
#[cfg(feature = "pg")]
fn column_list() -> String {
    <DlFlight as datalayer::Table>::schema()
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The raw ceiling: `rows` written into `end`'s (empty, just created) flights table
/// by the fastest path below datalayer; returns the time and what it was.
async fn ceiling(
    engines: &Engines,
    end: &End,
    src: &[FlightRow],
    rows: &[DlFlight],
) -> anyhow::Result<(Duration, &'static str)> {
    let db = end.db().await?; // creates the table with datalayer's DDL
    #[cfg(not(feature = "pg"))]
    let _ = engines;
    match end.kind {
        "sqlite" => {
            db.close().await?;
            // The file datalayer made (`SQLITE_URL`), through the rusqlite target's
            // own connection settings (WAL, synchronous=FULL) and loader.
            let path = end.place.dir().join("dl.sqlite");
            let took = tokio::task::block_in_place(|| {
                use crate::targets::rusqlite::{insert_flights, open};
                insert_flights(&mut open(&path), src)
            })?;
            Ok((took, "raw rusqlite, one transaction"))
        }
        #[cfg(feature = "pg")]
        "postgres" => {
            use std::pin::pin;
            use tokio_postgres::binary_copy::BinaryCopyInWriter;
            use tokio_postgres::types::{ToSql, Type};
            db.close().await?;
            let server = engines.pg.as_ref().context("no PostgreSQL server")?;
            let mut c = crate::pg::connect(&server.config, Some(&end.place.schema()?)).await?;
            let t0 = Instant::now();
            let tx = c.transaction().await?;
            let sink = tx
                .copy_in(&format!(
                    "COPY flights ({}) FROM STDIN BINARY",
                    column_list()
                ))
                .await?;
            let types: Vec<Type> = <DlFlight as datalayer::Table>::schema()
                .columns
                .iter()
                .map(|c| match c.ty {
                    datalayer::ColumnType::String => Type::TEXT,
                    _ => Type::INT8,
                })
                .collect();
            let mut w = pin!(BinaryCopyInWriter::new(sink, &types));
            for f in src {
                let vals: [&(dyn ToSql + Sync); 20] = [
                    &f.id,
                    &f.year,
                    &f.month,
                    &f.day,
                    &f.dep_time,
                    &f.sched_dep_time,
                    &f.dep_delay,
                    &f.arr_time,
                    &f.sched_arr_time,
                    &f.arr_delay,
                    &f.carrier,
                    &f.flight,
                    &f.tailnum,
                    &f.origin,
                    &f.dest,
                    &f.air_time,
                    &f.distance,
                    &f.hour,
                    &f.minute,
                    &f.time_hour,
                ];
                w.as_mut().write(&vals).await?;
            }
            w.finish().await?;
            tx.commit().await?;
            Ok((t0.elapsed(), "raw binary COPY, one transaction"))
        }
        _ => {
            // Transactions of 20,000 rows: Redis caps a transaction's size (32 MiB).
            let t0 = Instant::now();
            for chunk in rows.chunks(20_000) {
                db.tx(async |tx| tx.repo::<DlFlight>().insert_many(chunk).await)
                    .await?;
            }
            let took = t0.elapsed();
            db.close().await?;
            Ok((
                took,
                "the engine's insert_many, 20,000 rows per transaction",
            ))
        }
    }
}

/// Runs the section and prints its tables. Every store lives in a fresh place of
/// `scratch` (directory, schema, namespace), removed when its pair is done. `only`
/// (`FROM:TO` pairs, e.g. `sqlite:postgres`) keeps those pairs in every table; empty
/// keeps them all.
///
/// # Errors
/// Any engine error; a verification that finds a difference.
pub fn run(
    scratch: &Scratch,
    engines: &Engines,
    rows: &[FlightRow],
    only: &[String],
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let flights: Vec<DlFlight> = rows.iter().map(DlFlight::from).collect();
    let kinds: Vec<&'static str> = engines.templates.iter().map(|(k, _)| *k).collect();
    let picked =
        |from: &str, to: &str| only.is_empty() || only.iter().any(|p| *p == format!("{from}:{to}"));
    // Sources, each loaded once (those of a picked pair).
    let mut sources = Vec::new();
    for &k in kinds.iter().filter(|k| {
        ["etch", "sqlite", "postgres"].contains(k) && kinds.iter().any(|t| picked(k, t))
    }) {
        let end = End::new(scratch, engines, k)?;
        let db = rt.block_on(async {
            let db = end.db().await?;
            db.tx(async |tx| tx.repo::<DlFlight>().insert_many(&flights).await)
                .await?;
            anyhow::Ok(db)
        })?;
        sources.push((end, db));
    }
    println!(
        "| migration of flights ({} rows), copy only | rows/s | MB/s | raw ceiling rows/s | ceiling | copy / ceiling (throughput) | aim |",
        flights.len()
    );
    println!("|---|---|---|---|---|---|---|");
    for (src, source) in &sources {
        let from = src.kind;
        for &to in kinds.iter().filter(|t| **t != from && picked(from, t)) {
            let (dst, raw_end) = (
                End::new(scratch, engines, to)?,
                End::new(scratch, engines, to)?,
            );
            let line = rt.block_on(async {
                let target = dst.db().await?;
                let m = Migration::new(source, &target).options(Options::default());
                let t0 = Instant::now();
                let r = m.copy().await?;
                let secs = t0.elapsed().as_secs_f64();
                let n: u64 = r.tables.iter().map(|t| t.rows).sum();
                let mb: f64 = r.tables.iter().map(|t| t.bytes).sum::<u64>() as f64 / 1e6;
                ensure!(n as usize == flights.len(), "{from} -> {to}: copied {n}");
                let v = m.verify().await?;
                ensure!(v.is_equal(), "{from} -> {to}: {v:#?}");
                target.close().await?;
                let (raw, what) = ceiling(engines, &raw_end, rows, &flights).await?;
                let ours = n as f64 / secs;
                let ceil = flights.len() as f64 / raw.as_secs_f64();
                let ratio = ours / ceil;
                Ok(format!(
                    "| {from} -> {to} | {ours:.0} | {:.1} | {ceil:.0} | {what} | {ratio:.2}x | >= 0.5x: {} |",
                    mb / secs,
                    if ratio >= 0.5 { "met" } else { "NOT met" }
                ))
            })?;
            println!("{line}");
            dst.close()?;
            raw_end.close()?;
        }
    }
    // The same copy in one key range and in 4 ranges read at once (a split copy,
    // forced: flights is under the default split threshold).
    println!();
    println!(
        "| copy of flights in key ranges | 1 range rows/s | 4 ranges rows/s | 4 / 1 (throughput) |"
    );
    println!("|---|---|---|---|");
    for (from, to) in [
        ("postgres", "sqlite"),
        ("sqlite", "postgres"),
        ("etch", "postgres"),
    ] {
        let Some((_, source)) = sources.iter().find(|(e, _)| e.kind == from) else {
            continue;
        };
        if !kinds.contains(&to) || !picked(from, to) {
            continue;
        }
        let mut rates = Vec::new();
        for ranges in [1, 4] {
            let dst = End::new(scratch, engines, to)?;
            let rate = rt.block_on(async {
                let target = dst.db().await?;
                let m = Migration::new(source, &target).options(Options {
                    split_rows: 0,
                    parallel_ranges: ranges,
                    ..Options::default()
                });
                let t0 = Instant::now();
                let r = m.copy().await?;
                let secs = t0.elapsed().as_secs_f64();
                let n: u64 = r.tables.iter().map(|t| t.rows).sum();
                ensure!(n as usize == flights.len(), "{from} -> {to}: copied {n}");
                let v = m.verify().await?;
                ensure!(v.is_equal(), "{from} -> {to} in {ranges} ranges: {v:#?}");
                target.close().await?;
                anyhow::Ok(n as f64 / secs)
            })?;
            dst.close()?;
            rates.push(rate);
        }
        println!(
            "| {from} -> {to} | {:.0} | {:.0} | {:.2}x |",
            rates[0],
            rates[1],
            rates[1] / rates[0]
        );
    }
    // Follow lag and cut-over pause: 5,000 row writes/s (50 upserts per 10 ms, one
    // atomic batch each) on the source while the migration copies, then follows.
    for (from, to) in [("etch", "postgres"), ("etch", "sqlite")] {
        if !kinds.contains(&to) || !picked(from, to) {
            continue;
        }
        let (_, source) = sources
            .iter()
            .find(|(e, _)| e.kind == from)
            .expect("source");
        let dst = End::new(scratch, engines, to)?;
        let line = rt.block_on(follow_and_cut_over(source, &dst, &flights, from))?;
        println!("{line}");
        dst.close()?;
    }
    for (end, db) in sources {
        rt.block_on(db.close())?;
        end.close()?;
    }
    Ok(())
}

/// Copies `source` to `dst` while a writer makes 5,000 row writes/s on the source,
/// follows for 5 s, cuts over and verifies: the follow lag and the write pause.
async fn follow_and_cut_over(
    source: &Db,
    dst: &End,
    flights: &[DlFlight],
    from: &str,
) -> anyhow::Result<String> {
    let to = dst.kind;
    let target = dst.db().await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (db, stop, rows) = (source.clone(), stop.clone(), flights[..5_000].to_vec());
        async move {
            let mut commits: Vec<Instant> = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                // 50 rows with a new `arr_delay` (column 9).
                let batch: Vec<datalayer::Row> = rows[(i * 50) % 5_000..][..50]
                    .iter()
                    .map(|f| {
                        let mut r = datalayer::Table::to_row(f);
                        r[9] = datalayer::Value::I64(i as i64);
                        r
                    })
                    .collect();
                let ops = vec![datalayer::Op::Insert {
                    table: <DlFlight as datalayer::Table>::schema(),
                    rows: batch,
                    mode: datalayer::WriteMode::Upsert,
                }];
                match db.run_batch(ops).await {
                    Ok(_) => commits.push(Instant::now()),
                    Err(e) if e.kind() == datalayer::ErrorKind::Timeout => break,
                    Err(e) => return Err(e),
                }
                i += 1;
            }
            Ok(commits)
        }
    });
    let m = Migration::new(source, &target);
    m.copy().await?;
    let mut rounds: Vec<(Instant, Instant)> = Vec::new();
    let follow_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < follow_until {
        let start = Instant::now();
        m.follow_until_caught_up().await?;
        rounds.push((start, Instant::now()));
    }
    let cut = m.cutover(CutoverOptions::default()).await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let commits = writer.await??;
    let v = m.verify().await?;
    ensure!(v.is_equal(), "{from} -> {to} after the cut-over: {v:#?}");
    // A write committed at t is applied by the first round that starts after t.
    let first = rounds.first().map(|r| r.0).expect("a round");
    let mut lags: Vec<f64> = commits
        .iter()
        .filter(|&&t| t >= first)
        .filter_map(|&t| {
            rounds
                .iter()
                .find(|r| r.0 >= t)
                .map(|r| (r.1 - t).as_secs_f64())
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    let q = |p: f64| {
        lags.get(((lags.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let rate = commits.len() as f64 * 50.0
        / commits
            .last()
            .zip(commits.first())
            .map_or(1.0, |(l, f)| (*l - *f).as_secs_f64().max(1e-9));
    let line = format!(
        "follow {from} -> {to} at {rate:.0} row writes/s: lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (aim < 1 s: {}); cut-over write pause {:.1} ms (aim < 1 s: {})",
        q(0.5) * 1e3,
        q(0.99) * 1e3,
        q(1.0) * 1e3,
        if q(1.0) < 1.0 { "met" } else { "NOT met" },
        cut.pause.as_secs_f64() * 1e3,
        if cut.pause < Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        }
    );
    // The source serves the next pair: the fence falls instead of being sealed.
    drop(cut);
    target.close().await?;
    Ok(line)
}
