//! The transactional outbox on nycflights13: flight delay updates emit events in their
//! own transactions, and a consumer keeps per-carrier delay totals from the events
//! alone. At the end the totals must equal a direct read of the flights table.
//!
//! ```text
//! cargo run --example outbox                                  # etch, in memory
//! cargo run --example outbox -- --engine sqlite::memory:
//! cargo run --example outbox -- --flights 20000 --updates 5000
//! ```
//!
//! What it shows:
//! - `tx.emit(..)` in the same transaction as `tx.repo::<Flight>().update(..)`: a
//!   rolled-back update (every tenth one here, on purpose) leaves no event;
//! - partitioning by carrier (events of one carrier are applied in commit order);
//! - an idempotent handler: it records each event's stable id in the same transaction
//!   as the totals, so a redelivery (delivery is at least once) changes nothing.

#[path = "common/nycflights.rs"]
mod nycflights;
use anyhow::{Context, bail};
use clap::Parser;
use datalayer::prelude::*;
use datalayer::{Db, Table, query_group};
use nycflights::{open_csv, opt, req};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One flight (the columns of examples/flights.rs, without the plane relation).
#[derive(Table, Clone, Debug)]
#[table(name = "outbox_flights")]
#[index(name = "by_carrier_day", fields(carrier, year, month, day))]
struct Flight {
    #[pk]
    id: i64,
    year: i32,
    month: i32,
    day: i32,
    dep_time: Option<i32>,
    sched_dep_time: i32,
    /// Minutes; NULL for cancelled flights (counted as 0).
    dep_delay: Option<i32>,
    arr_time: Option<i32>,
    sched_arr_time: i32,
    arr_delay: Option<i32>,
    carrier: String,
    flight: i32,
    tailnum: Option<String>,
    origin: String,
    dest: String,
    air_time: Option<i32>,
    distance: i32,
    hour: i32,
    minute: i32,
    time_hour: String,
}

/// The consumer's state: total departure delay per carrier, in minutes.
#[derive(Table, Clone, Debug)]
#[table(name = "carrier_delay_totals")]
struct CarrierTotal {
    #[pk]
    carrier: String,
    minutes: i64,
}

#[query_group]
impl Flight {
    /// Clears the table (a run starts from nothing, also on a persistent engine).
    fn clear() -> u64 {
        Self::all().delete()
    }
}

#[query_group]
impl Applied {
    /// Clears the table.
    fn clear() -> u64 {
        Self::all().delete()
    }
}

#[query_group]
impl CarrierTotal {
    /// Clears the table.
    fn clear() -> u64 {
        Self::all().delete()
    }
    fn add(carrier: &str, minutes: i64) -> u64 {
        Self::filter(|t| t.carrier == carrier).update(|t| t.minutes = t.minutes + minutes)
    }
}

/// Event ids already applied (the handler's idempotence).
#[derive(Table, Clone, Debug)]
#[table(name = "applied_events")]
struct Applied {
    #[pk]
    id: String,
}

#[derive(Parser, Debug)]
#[command(about = "Outbox demo: per-carrier delay totals kept from events")]
struct Args {
    /// The engine URL.
    #[arg(long, default_value = "etch::memory:")]
    engine: String,
    /// Where the nycflights13 CSV files are.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/data/nycflights13"))]
    csv_dir: PathBuf,
    /// How many flights to load (the first N of the file).
    #[arg(long, default_value_t = 5_000)]
    flights: usize,
    /// How many delay updates to make.
    #[arg(long, default_value_t = 2_000)]
    updates: usize,
}

/// Topic prefix; each run uses its own topic (`flight_delays_<unix ms>`), so events of an
/// earlier run on a persistent engine never reach this run's consumer.
const TOPIC_PREFIX: &str = "flight_delays";

fn parse_flight(r: &csv::StringRecord) -> anyhow::Result<Flight> {
    Ok(Flight {
        id: req(&r[0])?,
        year: req(&r[1])?,
        month: req(&r[2])?,
        day: req(&r[3])?,
        dep_time: opt(&r[4])?,
        sched_dep_time: req(&r[5])?,
        dep_delay: opt(&r[6])?,
        arr_time: opt(&r[7])?,
        sched_arr_time: req(&r[8])?,
        arr_delay: opt(&r[9])?,
        carrier: r[10].into(),
        flight: req(&r[11])?,
        tailnum: opt(&r[12])?,
        origin: r[13].into(),
        dest: r[14].into(),
        air_time: opt(&r[15])?,
        distance: req(&r[16])?,
        hour: req(&r[17])?,
        minute: req(&r[18])?,
        time_hour: r[19].into(),
    })
}

/// The event payload: `carrier,delta_minutes`.
fn payload(carrier: &str, delta: i64) -> Vec<u8> {
    format!("{carrier},{delta}").into_bytes()
}

fn parse_payload(p: &[u8]) -> datalayer::Result<(String, i64)> {
    let s = std::str::from_utf8(p).map_err(|e| datalayer::Error::invalid_input(e.to_string()))?;
    let (c, d) = s
        .split_once(',')
        .ok_or_else(|| datalayer::Error::invalid_input(format!("bad payload {s:?}")))?;
    let d = d
        .parse()
        .map_err(|e| datalayer::Error::invalid_input(format!("bad delta in {s:?}: {e}")))?;
    Ok((c.to_owned(), d))
}

/// Applies one event: once per event id, in one transaction with the totals.
async fn apply(db: &Db, ev: datalayer::Event) -> datalayer::Result<()> {
    let (carrier, delta) = parse_payload(&ev.payload)?;
    db.tx(async |tx| {
        match tx
            .repo::<Applied>()
            .insert(&Applied { id: ev.id.clone() })
            .await
        {
            Ok(()) => {}
            // Delivered again (at least once): already applied.
            Err(e) if e.is_already_exists() => return Ok(()),
            Err(e) => return Err(e),
        }
        if CarrierTotal::add(tx, &carrier, delta).await? == 0 {
            tx.repo::<CarrierTotal>()
                .insert(&CarrierTotal {
                    carrier: carrier.clone(),
                    minutes: delta,
                })
                .await?;
        }
        Ok(())
    })
    .await
}

/// A small deterministic generator (the demo needs no real randomness).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("engine: {}", datalayer::redact(&args.engine));
    let db = datalayer::builder(&args.engine)
        .table::<Flight>()
        .table::<CarrierTotal>()
        .table::<Applied>()
        .queries::<CarrierTotal>()
        .queries::<Flight>()
        .queries::<Applied>()
        .outbox()
        .connect()
        .await?;
    // Start from nothing, also on a persistent engine that kept an earlier run's rows.
    db.tx(async |tx| {
        Flight::clear(tx).await?;
        Applied::clear(tx).await?;
        CarrierTotal::clear(tx).await
    })
    .await?;
    let topic = format!(
        "{TOPIC_PREFIX}_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let topic = topic.as_str();
    if !datalayer::Executor::capability(&db).outbox {
        bail!(
            "the {} engine does not declare Capability::outbox",
            db.engine().name()
        );
    }
    datalayer::outbox::create_topic(&db, topic, 16).await?;

    // The consumer runs from the start: it sees the load's events and the updates'.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker_db = db.clone();
    let consumer = tokio::spawn(
        db.consumer("carrier_totals", topic)
            .concurrency(4)
            .poll_interval(Duration::from_millis(20))
            .run(
                move |ev| {
                    let db = worker_db.clone();
                    async move { apply(&db, ev).await }
                },
                async move {
                    let _ = stopped.await;
                },
            ),
    );

    // Load: each batch of flights and its events in one transaction.
    let t0 = Instant::now();
    let mut rdr = open_csv(&args.csv_dir, "flights")?;
    let mut flights: Vec<Flight> = Vec::with_capacity(args.flights);
    for rec in rdr.records().take(args.flights) {
        flights.push(parse_flight(&rec?)?);
    }
    let mut emitted = 0u64;
    for chunk in flights.chunks(500) {
        let tx = db.begin().await?;
        tx.repo::<Flight>().insert_many(chunk).await?;
        for f in chunk {
            let d = i64::from(f.dep_delay.unwrap_or(0));
            tx.emit(topic, &f.carrier, payload(&f.carrier, d)).await?;
        }
        tx.commit().await?;
        emitted += chunk.len() as u64;
    }
    println!("loaded {} flights in {:.1?}", flights.len(), t0.elapsed());

    // Updates: read a flight, change its delay, emit the delta; every tenth
    // transaction rolls back, taking its event with it.
    let t1 = Instant::now();
    let mut rng = Lcg(13);
    let mut rolled_back = 0;
    for i in 0..args.updates {
        let id = flights[(rng.next() as usize) % flights.len()].id;
        let delta = (rng.next() % 61) as i32 - 20;
        let tx = db.begin().await?;
        let mut f = tx
            .repo::<Flight>()
            .get(id)
            .await?
            .context("flight exists")?;
        f.dep_delay = Some(f.dep_delay.unwrap_or(0) + delta);
        tx.repo::<Flight>().update(&f).await?;
        tx.emit(topic, &f.carrier, payload(&f.carrier, i64::from(delta)))
            .await?;
        if i % 10 == 9 {
            tx.rollback().await?;
            rolled_back += 1;
        } else {
            tx.commit().await?;
            emitted += 1;
        }
    }
    println!(
        "{} updates ({rolled_back} rolled back) in {:.1?}",
        args.updates,
        t1.elapsed()
    );

    // Wait until every committed event has been applied.
    let t2 = Instant::now();
    loop {
        let applied = db.repo::<Applied>().count().await?;
        if applied == emitted {
            break;
        }
        if t2.elapsed() > Duration::from_secs(120) {
            bail!("the consumer applied {applied} of {emitted} events in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "consumer caught up ({emitted} events) {:.1?} after the last update",
        t2.elapsed()
    );
    let _ = stop.send(());
    consumer.await??;
    let purged = datalayer::outbox::purge(&db, topic).await?;
    println!("retention deleted {purged} consumed events");

    // The totals kept from events, against a direct read of the table.
    let from_events: BTreeMap<String, i64> = db
        .repo::<CarrierTotal>()
        .scan()
        .all()
        .await?
        .into_iter()
        .map(|t| (t.carrier, t.minutes))
        .collect();
    let mut direct: BTreeMap<String, i64> = BTreeMap::new();
    for f in db.repo::<Flight>().scan().all().await? {
        *direct.entry(f.carrier).or_default() += i64::from(f.dep_delay.unwrap_or(0));
    }
    println!(
        "{:<8} {:>14} {:>14}",
        "carrier", "from events", "direct query"
    );
    for c in direct
        .keys()
        .chain(from_events.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        println!(
            "{c:<8} {:>14} {:>14}",
            from_events.get(c).map_or("-".into(), i64::to_string),
            direct.get(c).map_or("-".into(), i64::to_string)
        );
    }
    db.close().await?;
    if from_events != direct {
        bail!("the totals kept from events differ from the table");
    }
    println!("OK: the totals kept from events equal the table");
    Ok(())
}
