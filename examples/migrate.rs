//! A live migration of the flights data: etch → SQLite → PostgreSQL, while the
//! application keeps writing (bookings with an outbox event each, as the outbox
//! example writes) and a consumer keeps handling those events. After each cut-over the
//! application and its consumer move to the new engine; at the end the flights queries
//! answer on PostgreSQL exactly as they did on etch, and the consumer has handled every
//! event.
//!
//! ```text
//! cargo run --release --example flights      # first: load nycflights13 into ./data/etch
//! cargo run --release --example migrate      # etch -> SQLite -> PostgreSQL
//! cargo run --release --example migrate -- --to none   # etch -> SQLite only (no server)
//! ```
//!
//! The SQLite file (`./data/migrate.db`) and the PostgreSQL schema (`flights_migrated`
//! on `DATALAYER_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`) are
//! created afresh by each run.

#[path = "common/flights_model.rs"]
mod flights_model;
use flights_model::{Airline, Airport, Flight, Plane, Weather};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use datalayer::migrate::{CutoverOptions, Migration};
use datalayer::outbox::{DbOutbox, TxOutbox};
use datalayer::{Db, Event, Table};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{RwLock, oneshot};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the application writes during the migration.
#[derive(Table, Clone, Debug)]
#[table(name = "bookings")]
struct Booking {
    #[pk]
    id: i64,
    flight_id: i64,
    seats: i32,
}

#[derive(Parser, Debug)]
#[command(about = "Move the flights data etch -> SQLite -> PostgreSQL while writes go on")]
struct Args {
    /// The source: the flights example's store.
    #[arg(long, default_value = "etch://./data/etch")]
    from: String,
    /// The first hop's target. Created afresh.
    #[arg(long, default_value = "./data/migrate.db")]
    via: PathBuf,
    /// The second hop's target, or `none`. Default: the schema `flights_migrated` on
    /// `DATALAYER_PG_URL` (created afresh).
    #[arg(long)]
    to: Option<String>,
    /// Bookings written per second during the migration.
    #[arg(long, default_value_t = 500)]
    writes_per_sec: u64,
}

async fn open(url: &str) -> anyhow::Result<Db> {
    datalayer::builder(url.to_owned())
        .table::<Airline>()
        .table::<Airport>()
        .table::<Plane>()
        .table::<Weather>()
        .table::<Flight>()
        .table::<Booking>()
        .queries::<Flight>()
        .connect()
        .await
        .with_context(|| format!("open {}", datalayer::redact(url)))
}

/// The flights example's questions, answered as text.
async fn answers(db: &Db) -> anyhow::Result<Vec<String>> {
    let mut out = vec![
        format!("airlines {}", db.repo::<Airline>().count().await?),
        format!("airports {}", db.repo::<Airport>().count().await?),
        format!("planes {}", db.repo::<Plane>().count().await?),
        format!("weather {}", db.repo::<Weather>().count().await?),
        format!("flights {}", db.repo::<Flight>().count().await?),
    ];
    for f in Flight::first_out_of(db, "EWR", 2013, 2, 14, 5).await? {
        out.push(format!(
            "EWR 2013-02-14 {} {} -> {} {}",
            f.carrier, f.flight, f.dest, f.sched_dep_time
        ));
    }
    out.push(format!(
        "JFK-LAX 2013-07 {}",
        Flight::count_route(db, "JFK", "LAX", 2013, 7).await?
    ));
    let flights = Flight::by_plane(db, "N14228").await?;
    let planes = db.repo::<Flight>().belongs_to::<Plane>(&flights).await?;
    out.push(format!(
        "N14228 {} flights, plane {:?}",
        flights.len(),
        planes.first().map(|p| p.as_ref().map(|p| &p.model))
    ));
    for f in flights.iter().take(3).chain(flights.last()) {
        out.push(format!("{:?}", f));
    }
    for f in Flight::of_carrier_day(db, "UA", 2013, 3, 1, 3).await? {
        out.push(format!("{:?}", f));
    }
    Ok(out)
}

/// The consumer of the booking events, on the engine the application uses now.
struct Consumer {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<datalayer::Result<()>>,
}

fn consume(db: &Db, seen: &Arc<Mutex<BTreeSet<i64>>>) -> Consumer {
    let (stop, rx) = oneshot::channel::<()>();
    let seen = seen.clone();
    let task = tokio::spawn(
        db.consumer("audit", "bookings")
            .poll_interval(Duration::from_millis(20))
            .lease_ttl(Duration::from_millis(500))
            .run(
                move |ev: Event| {
                    let seen = seen.clone();
                    async move {
                        let id = String::from_utf8_lossy(&ev.payload)
                            .parse::<i64>()
                            .unwrap_or(-1);
                        seen.lock().unwrap().insert(id);
                        Ok(())
                    }
                },
                async move {
                    let _ = rx.await;
                },
            ),
    );
    Consumer { stop, task }
}

impl Consumer {
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// One hop: copy, follow, stop the consumer, cut over; the application's `Db` and
/// the consumer move to `target`.
async fn hop(
    name: &str,
    current: &RwLock<Db>,
    consumer: Consumer,
    target: Db,
    seen: &Arc<Mutex<BTreeSet<i64>>>,
) -> anyhow::Result<Consumer> {
    let source = current.read().await.clone();
    let m = Migration::new(&source, &target);
    let t0 = Instant::now();
    let copied = m.copy().await?;
    let secs = t0.elapsed().as_secs_f64();
    let rows: u64 = copied.tables.iter().map(|t| t.rows).sum();
    let bytes: u64 = copied.tables.iter().map(|t| t.bytes).sum();
    println!(
        "{name}: copied {rows} rows ({:.1} MB) in {secs:.2} s: {:.0} rows/s, {:.1} MB/s; {} changes reconciled",
        bytes as f64 / 1e6,
        rows as f64 / secs,
        bytes as f64 / 1e6 / secs,
        copied.tables.iter().map(|t| t.changes).sum::<u64>()
    );
    let t0 = Instant::now();
    let followed = m.follow_until_caught_up().await?;
    println!(
        "{name}: caught up in {:.2?} ({} changes)",
        t0.elapsed(),
        followed.changes
    );
    consumer.stop().await?;
    let cut = m.cutover(CutoverOptions::default()).await?;
    println!(
        "{name}: cut over; writes held {:.1} ms, {} changes drained, {} changed rows compared",
        cut.pause.as_secs_f64() * 1e3,
        cut.drained,
        cut.checked_before + cut.verified_rows
    );
    // The example keeps the fence up for a full verify before the application moves
    // (an application may skip it: the cut-over compared every row changed during
    // the follow), so that nothing the application writes next blurs the comparison.
    let t0 = Instant::now();
    let report = m.verify().await?;
    ensure!(
        report.is_equal(),
        "{name}: verify found differences: {report:#?}"
    );
    println!(
        "{name}: verified equal ({} tables) in {:.2?} under the fence",
        report.tables.len(),
        t0.elapsed()
    );
    // The application switches over.
    *current.write().await = target.clone();
    // Sealed, not dropped: a write still waiting on the old engine's fence must fail
    // (and be retried on the new one), never slip into the old engine.
    cut.fence.seal();
    Ok(consume(&target, seen))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let source = open(&args.from).await?;
    if source.repo::<Flight>().count().await? == 0 {
        bail!(
            "no flights in {}: run `cargo run --release --example flights` first",
            args.from
        );
    }
    let before = answers(&source).await?;
    datalayer::outbox::create_topic(&source, "bookings", 4).await?;
    let mut next = source.repo::<Booking>().count().await? as i64;
    let current = Arc::new(RwLock::new(source.clone()));
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let mut consumer = consume(&source, &seen);

    // The application: a booking and its event per transaction, on whatever engine
    // `current` names; a write the cut-over's fence turns away is retried there.
    let written = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let app = tokio::spawn({
        let (current, written, stop) = (current.clone(), written.clone(), stop.clone());
        let pause = Duration::from_micros(1_000_000 / args.writes_per_sec.max(1));
        async move {
            while !stop.load(Ordering::Relaxed) {
                let id = next;
                let db = current.read().await.clone();
                let r = db
                    .tx(async |tx| {
                        tx.repo::<Booking>()
                            .insert(&Booking {
                                id,
                                flight_id: id % 336_776,
                                seats: 1 + (id % 3) as i32,
                            })
                            .await?;
                        tx.emit("bookings", format!("{}", id % 97), id.to_string())
                            .await?;
                        Ok(())
                    })
                    .await;
                match r {
                    Ok(()) => {
                        written.lock().unwrap().insert(id);
                        next += 1;
                    }
                    // The fence (`Timeout`), the sealed old engine (`ConnectionLost`),
                    // a conflict: nothing was applied; retried on `current`.
                    Err(e) if e.is_retryable() => {}
                    Err(e) => return Err(anyhow::Error::from(e)),
                }
                tokio::time::sleep(pause).await;
            }
            Ok(())
        }
    });

    let _ = std::fs::remove_file(&args.via);
    let via_url = format!("sqlite://{}", args.via.display());
    consumer = hop(
        "etch -> SQLite",
        &current,
        consumer,
        open(&via_url).await?,
        &seen,
    )
    .await?;
    let to = match args.to.as_deref() {
        Some("none") => None,
        Some(u) => Some(u.to_owned()),
        None => {
            let base = std::env::var("DATALAYER_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            drop_schema(&base, "flights_migrated").await?;
            Some(datalayer::with_params(&base, "schema=flights_migrated"))
        }
    };
    if let Some(to) = &to {
        consumer = hop(
            "SQLite -> PostgreSQL",
            &current,
            consumer,
            open(to).await?,
            &seen,
        )
        .await?;
    }
    stop.store(true, Ordering::Relaxed);
    app.await??;
    let last = current.read().await.clone();
    let written = written.lock().unwrap().clone();
    let t0 = Instant::now();
    while !written.is_subset(&seen.lock().unwrap()) {
        if t0.elapsed() > Duration::from_secs(60) {
            let seen = seen.lock().unwrap();
            let missed: Vec<&i64> = written.difference(&seen).take(20).collect();
            bail!(
                "the consumer missed {} of {} events, e.g. bookings {missed:?}",
                written.difference(&seen).count(),
                written.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer.stop().await?;
    println!(
        "the application wrote {} bookings during the migration; the consumer handled every event",
        written.len()
    );
    let after = answers(&last).await?;
    ensure!(
        before == after,
        "the flights queries answer differently:\n{before:#?}\n{after:#?}"
    );
    println!(
        "the flights queries answer on {} exactly as on {} ({} answers)",
        last.engine().name(),
        source.engine().name(),
        after.len()
    );
    Ok(())
}

/// Drops `schema` on the PostgreSQL server of `base` (a fresh target each run).
async fn drop_schema(base: &str, schema: &str) -> anyhow::Result<()> {
    let base = base.split('?').next().unwrap_or(base);
    let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect {}", datalayer::redact(base)))?;
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    drop(client);
    let _ = task.await;
    Ok(())
}
