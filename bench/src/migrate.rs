//! The migration section (`--migrate`): `datalayer::migrate` copying the nycflights13
//! `flights` table (336,776 rows, its three secondary indexes) between engines, next
//! to the fastest raw write of the same rows into the same target table in the same
//! run; then follow lag at 5,000 row writes/s on the source and the cut-over's write
//! pause.
//!
//! Ceilings, each writing rows already in memory (so they leave out the source read
//! that the migration pays): PostgreSQL — one binary `COPY` (tokio-postgres
//! `BinaryCopyInWriter`) in one transaction (with `--features pg`); SQLite — raw
//! rusqlite, one prepared `INSERT` per row in one transaction; etch and Redis — the
//! engine's own `insert_many`, 20,000 rows per transaction (no layer below it to
//! compare with).

use crate::flights::FlightRow;
use crate::targets::datalayer::DlFlight;
use anyhow::{Context, ensure};
use datalayer::migrate::{CutoverOptions, Migration, Options};
use datalayer::{Db, Executor};
use std::time::{Duration, Instant};

/// One endpoint: a URL in a fresh place, removed when dropped.
struct End {
    url: String,
    _dir: Option<tempfile::TempDir>,
    #[cfg(feature = "pg")]
    pg_schema: Option<(String, String)>,
    #[cfg(feature = "redis")]
    redis: Option<String>,
}

#[cfg(any(feature = "pg", feature = "redis"))]
fn suffix() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..8)
        .map(|_| (b'a' + r.random_range(0..26)) as char)
        .collect()
}

impl End {
    fn new(kind: &str) -> anyhow::Result<End> {
        let dir = tempfile::tempdir()?;
        let mut end = End {
            url: String::new(),
            _dir: None,
            #[cfg(feature = "pg")]
            pg_schema: None,
            #[cfg(feature = "redis")]
            redis: None,
        };
        match kind {
            "etch" => end.url = format!("etch://{}", dir.path().join("e").display()),
            "sqlite" => end.url = format!("sqlite://{}", dir.path().join("s.db").display()),
            #[cfg(feature = "pg")]
            "postgres" => {
                let base = std::env::var("DATALAYER_PG_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
                let schema = format!("dl_bench_mig_{}", suffix());
                end.url = crate::pg::with_params(&base, &format!("schema={schema}"));
                end.pg_schema = Some((base, schema));
            }
            #[cfg(feature = "redis")]
            "redis" => {
                let base = std::env::var("DATALAYER_REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
                end.url =
                    crate::pg::with_params(&base, &format!("namespace=dl_bench_mig_{}", suffix()));
                end.redis = Some(end.url.clone());
            }
            other => anyhow::bail!("engine {other} is not compiled into this bench"),
        }
        end._dir = Some(dir);
        Ok(end)
    }

    async fn db(&self) -> anyhow::Result<Db> {
        datalayer::builder(self.url.clone())
            .table::<DlFlight>()
            .connect()
            .await
            .with_context(|| datalayer::redact(&self.url))
    }
}

impl Drop for End {
    fn drop(&mut self) {
        #[cfg(feature = "pg")]
        if let Some((base, schema)) = self.pg_schema.take() {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().expect("runtime");
                rt.block_on(async {
                    let base = base.split('?').next().unwrap_or(&base).to_owned();
                    if let Ok((c, conn)) =
                        tokio_postgres::connect(&base, tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = c
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                            .await;
                    }
                });
            })
            .join()
            .ok();
        }
        #[cfg(feature = "redis")]
        if let Some(url) = self.redis.take() {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().expect("runtime");
                rt.block_on(async {
                    if let Ok(o) = datalayer::redis::RedisOptions::from_url(&url) {
                        let _ = datalayer::redis::destroy_namespace(&o).await;
                    }
                });
            })
            .join()
            .ok();
        }
    }
}

/// The raw ceiling: `rows` written into `end`'s (empty, just created) flights table
/// by the fastest path below datalayer; returns the time and what it was.
async fn ceiling(
    kind: &str,
    end: &End,
    src: &[FlightRow],
    rows: &[DlFlight],
) -> anyhow::Result<(Duration, &'static str)> {
    let db = end.db().await?; // creates the table with datalayer's DDL
    match kind {
        "sqlite" => {
            db.close().await?;
            let path = end.url.trim_start_matches("sqlite://").to_owned();
            let src = src.to_vec();
            let took = tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
                let mut c = rusqlite::Connection::open(path)?;
                let t0 = Instant::now();
                let tx = c.transaction()?;
                {
                    let mut st = tx.prepare(
                        "INSERT INTO flights (id, year, month, day, dep_time, sched_dep_time, dep_delay, arr_time, sched_arr_time, arr_delay, carrier, flight, tailnum, origin, dest, air_time, distance, hour, minute, time_hour) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
                    )?;
                    for f in &src {
                        st.execute(rusqlite::params![
                            f.id, f.year, f.month, f.day, f.dep_time, f.sched_dep_time, f.dep_delay,
                            f.arr_time, f.sched_arr_time, f.arr_delay, f.carrier, f.flight, f.tailnum,
                            f.origin, f.dest, f.air_time, f.distance, f.hour, f.minute, f.time_hour
                        ])?;
                    }
                }
                tx.commit()?;
                Ok(t0.elapsed())
            })
            .await??;
            Ok((took, "raw rusqlite, one transaction"))
        }
        #[cfg(feature = "pg")]
        "postgres" => {
            use std::pin::pin;
            use tokio_postgres::binary_copy::BinaryCopyInWriter;
            use tokio_postgres::types::{ToSql, Type};
            db.close().await?;
            let (base, schema) = end.pg_schema.clone().expect("a pg end");
            let base = base.split('?').next().unwrap_or(&base).to_owned();
            let (mut c, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            c.batch_execute(&format!("SET search_path TO \"{schema}\""))
                .await?;
            let t0 = Instant::now();
            let tx = c.transaction().await?;
            let sink = tx
                .copy_in("COPY flights (id, year, month, day, dep_time, sched_dep_time, dep_delay, arr_time, sched_arr_time, arr_delay, carrier, flight, tailnum, origin, dest, air_time, distance, hour, minute, time_hour) FROM STDIN BINARY")
                .await?;
            let i8 = Type::INT8;
            let t = Type::TEXT;
            let types = [
                i8.clone(),
                i8.clone(),
                i8.clone(),
                i8.clone(),
                i8.clone(),
                i8.clone(),
                i8.clone(),
                i8.clone(),
                i8.clone(),
                i8.clone(),
                t.clone(),
                i8.clone(),
                t.clone(),
                t.clone(),
                t.clone(),
                i8.clone(),
                i8.clone(),
                i8.clone(),
                i8.clone(),
                t,
            ];
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

/// Runs the section and prints its tables.
///
/// # Errors
/// Any engine error; a verification that finds a difference.
pub fn run(rows: &[FlightRow]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run_async(rows))
}

async fn run_async(rows: &[FlightRow]) -> anyhow::Result<()> {
    let flights: Vec<DlFlight> = rows.iter().map(DlFlight::from).collect();
    let mut kinds = vec!["etch", "sqlite"];
    if cfg!(feature = "pg") {
        kinds.push("postgres");
    }
    if cfg!(feature = "redis") {
        kinds.push("redis");
    }
    // Sources, each loaded once.
    let mut sources = Vec::new();
    for k in kinds
        .iter()
        .filter(|k| ["etch", "sqlite", "postgres"].contains(k))
    {
        let end = End::new(k)?;
        let db = end.db().await?;
        db.tx(async |tx| tx.repo::<DlFlight>().insert_many(&flights).await)
            .await?;
        sources.push((*k, end, db));
    }
    println!(
        "| migration of flights ({} rows), copy only | rows/s | MB/s | raw ceiling rows/s | ceiling | copy / ceiling (throughput) | aim |",
        flights.len()
    );
    println!("|---|---|---|---|---|---|---|");
    for (from, _, source) in &sources {
        for to in kinds.iter().filter(|t| *t != from) {
            let dst = End::new(to)?;
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
            drop(dst);
            let raw_end = End::new(to)?;
            let (raw, what) = ceiling(to, &raw_end, rows, &flights).await?;
            drop(raw_end);
            let ours = n as f64 / secs;
            let ceil = flights.len() as f64 / raw.as_secs_f64();
            let ratio = ours / ceil;
            println!(
                "| {from} -> {to} | {ours:.0} | {:.1} | {ceil:.0} | {what} | {ratio:.2}x | >= 0.5x: {} |",
                mb / secs,
                if ratio >= 0.5 { "met" } else { "NOT met" }
            );
        }
    }
    // Follow lag and cut-over pause: 5,000 row writes/s (50 upserts per 10 ms, one
    // atomic batch each) on the source while the migration copies, then follows.
    for (from, to) in [("etch", "postgres"), ("etch", "sqlite")] {
        if !kinds.contains(&to) {
            continue;
        }
        let (_, _, source) = sources.iter().find(|(k, _, _)| *k == from).expect("source");
        let dst = End::new(to)?;
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
        println!(
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
    }
    for (_, _, db) in sources {
        db.close().await?;
    }
    Ok(())
}
