//! The main job: nycflights13 (all 336,776 flights out of New York in 2013) loaded
//! through datalayer's public API, then queried.
//!
//! ```text
//! cargo run --release --example flights                        # etch in ./data/etch
//! cargo run --release --example flights -- --engine sqlite://flights.db
//! cargo run --release --example flights -- --data-dir /tmp/fl  # another place
//! ```
//!
//! A second run reuses the stored rows instead of loading again (loading uses upserts, so
//! an interrupted load simply resumes).

#[path = "common/flights_model.rs"]
mod flights_model;
#[path = "common/nycflights.rs"]
mod nycflights;
use anyhow::Context;
use flights_model::{Airline, Airport, Flight, Plane, Weather};
use nycflights::{open_csv, opt, req};

// The application's choice of allocator (a well-kept one); datalayer itself does not
// set a global allocator. The load allocates many small keys and values.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use datalayer::{Db, Table};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Load nycflights13 through datalayer and query it")]
struct Args {
    /// Where the embedded engine keeps its files (used when --engine is not given).
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Engine URL (etch://dir, etch::memory:, sqlite://file.db, postgres://...).
    /// Default: etch://<data-dir>/etch.
    #[arg(long)]
    engine: Option<String>,
    /// Folder with the nycflights13 *.csv.gz files.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/data/nycflights13"))]
    csv_dir: PathBuf,
    /// Rows per insert batch (one transaction each).
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
}

/// Total flights in the data set.
const FLIGHTS: u64 = 336_776;

fn parse_airline(r: &csv::StringRecord) -> anyhow::Result<Airline> {
    Ok(Airline {
        carrier: r[0].into(),
        name: r[1].into(),
    })
}
fn parse_airport(r: &csv::StringRecord) -> anyhow::Result<Airport> {
    Ok(Airport {
        faa: r[0].into(),
        name: r[1].into(),
        lat: req(&r[2])?,
        lon: req(&r[3])?,
        alt: req(&r[4])?,
        tz: req(&r[5])?,
        dst: r[6].into(),
        tzone: opt(&r[7])?,
    })
}
fn parse_plane(r: &csv::StringRecord) -> anyhow::Result<Plane> {
    Ok(Plane {
        tailnum: r[0].into(),
        year: opt(&r[1])?,
        kind: r[2].into(),
        manufacturer: r[3].into(),
        model: r[4].into(),
        engines: req(&r[5])?,
        seats: req(&r[6])?,
        // Written as a decimal ("90.0") in the source; knots.
        speed: opt::<f64>(&r[7])?.map(|v| v.round() as i32),
        engine: r[8].into(),
    })
}
fn parse_weather(r: &csv::StringRecord) -> anyhow::Result<Weather> {
    Ok(Weather {
        id: req(&r[0])?,
        origin: r[1].into(),
        year: req(&r[2])?,
        month: req(&r[3])?,
        day: req(&r[4])?,
        hour: req(&r[5])?,
        temp: opt(&r[6])?,
        dewp: opt(&r[7])?,
        humid: opt(&r[8])?,
        wind_dir: opt(&r[9])?,
        wind_speed: opt(&r[10])?,
        wind_gust: opt(&r[11])?,
        precip: opt(&r[12])?,
        pressure: opt(&r[13])?,
        visib: opt(&r[14])?,
        time_hour: r[15].into(),
    })
}
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

/// Loads one file with upserts in batches, with a progress bar.
async fn load<T: Table>(
    db: &Db,
    dir: &Path,
    name: &str,
    expected: u64,
    batch: usize,
    parse: fn(&csv::StringRecord) -> anyhow::Result<T>,
) -> anyhow::Result<u64> {
    let repo = db.repo::<T>();
    let have = repo.count().await?;
    if have == expected {
        return Ok(0);
    }
    let bar = ProgressBar::new(expected).with_message(name.to_owned());
    bar.set_style(
        ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len} rows {per_sec} eta {eta}")?
            .progress_chars("=> "),
    );
    let mut rdr = open_csv(dir, name)?;
    let mut rows = Vec::with_capacity(batch);
    let mut n = 0u64;
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec?;
        rows.push(parse(&rec).with_context(|| format!("{name}.csv line {}", i + 2))?);
        if rows.len() == batch {
            n += repo.upsert_many(&rows).await?;
            bar.inc(rows.len() as u64);
            rows.clear();
        }
    }
    n += repo.upsert_many(&rows).await?;
    bar.inc(rows.len() as u64);
    bar.finish();
    Ok(n)
}

fn show_flight(f: &Flight) -> String {
    format!(
        "{} {:>4}  {} -> {}  sched {:04}  dep_delay {:>4}",
        f.carrier,
        f.flight,
        f.origin,
        f.dest,
        f.sched_dep_time,
        f.dep_delay.map_or("NULL".into(), |d| d.to_string())
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = match &args.engine {
        Some(u) => u.clone(),
        None => {
            std::fs::create_dir_all(&args.data_dir)?;
            format!("etch://{}", args.data_dir.join("etch").display())
        }
    };
    println!("engine: {}", datalayer::redact(&url));
    let t = Instant::now();
    let db = datalayer::builder(url.clone())
        .table::<Airline>()
        .table::<Airport>()
        .table::<Plane>()
        .table::<Weather>()
        .table::<Flight>()
        .queries::<Flight>()
        .connect()
        .await
        .with_context(|| format!("open {}", datalayer::redact(&url)))?;
    println!("opened in {:.2?}", t.elapsed());

    let t = Instant::now();
    let mut loaded = 0;
    loaded += load(
        &db,
        &args.csv_dir,
        "airlines",
        16,
        args.batch,
        parse_airline,
    )
    .await?;
    loaded += load(
        &db,
        &args.csv_dir,
        "airports",
        1_458,
        args.batch,
        parse_airport,
    )
    .await?;
    loaded += load(&db, &args.csv_dir, "planes", 3_322, args.batch, parse_plane).await?;
    loaded += load(
        &db,
        &args.csv_dir,
        "weather",
        26_115,
        args.batch,
        parse_weather,
    )
    .await?;
    loaded += load(
        &db,
        &args.csv_dir,
        "flights",
        FLIGHTS,
        args.batch,
        parse_flight,
    )
    .await?;
    if loaded > 0 {
        let secs = t.elapsed().as_secs_f64();
        println!(
            "loaded {loaded} rows in {secs:.2} s ({:.0} rows/s)",
            loaded as f64 / secs
        );
    } else {
        println!("reusing stored data (checked in {:.2?})", t.elapsed());
    }

    println!("\n== rows per table");
    let t = Instant::now();
    let counts = [
        ("airlines", db.repo::<Airline>().count().await?),
        ("airports", db.repo::<Airport>().count().await?),
        ("planes", db.repo::<Plane>().count().await?),
        ("weather", db.repo::<Weather>().count().await?),
        ("flights", db.repo::<Flight>().count().await?),
    ];
    for (name, n) in counts {
        println!("{name:>9}: {n}");
    }
    println!("({:.2?})", t.elapsed());

    println!("\n== first 5 flights out of EWR on 2013-02-14 by scheduled departure");
    let t = Instant::now();
    let first = Flight::first_out_of(&db, "EWR", 2013, 2, 14, 5).await?;
    for f in &first {
        println!(
            "{} {:>4}  -> {}  sched_dep_time {:04}",
            f.carrier, f.flight, f.dest, f.sched_dep_time
        );
    }
    println!("({:.2?})", t.elapsed());

    println!("\n== flights JFK -> LAX in July 2013");
    let t = Instant::now();
    let n = Flight::count_route(&db, "JFK", "LAX", 2013, 7).await?;
    println!("{n} ({:.2?})", t.elapsed());

    println!("\n== flights flown by N14228, with the plane (belongs_to relationship)");
    let t = Instant::now();
    let flights = Flight::by_plane(&db, "N14228").await?;
    let planes = db.repo::<Flight>().belongs_to::<Plane>(&flights).await?;
    if let Some(Some(p)) = planes.first() {
        println!(
            "plane N14228: {} {} ({} seats, built {})",
            p.manufacturer,
            p.model,
            p.seats,
            p.year.map_or("?".into(), |y| y.to_string())
        );
    }
    println!("{} flights; first and last:", flights.len());
    for f in flights.first().into_iter().chain(flights.last()) {
        println!(
            "  {}-{:02}-{:02}  {}",
            f.year,
            f.month,
            f.day,
            show_flight(f)
        );
    }
    println!("({:.2?})", t.elapsed());

    println!(
        "\n== in one transaction: delay every UA departure of 2013-03-01 by 10 minutes, read one back"
    );
    let t = Instant::now();
    let before = Flight::of_carrier_day(&db, "UA", 2013, 3, 1, 1).await?;
    let (changed, after) = db
        .tx(async |tx| {
            let changed = Flight::delay_carrier_day(tx, "UA", 2013, 3, 1, 10).await?;
            let after = Flight::of_carrier_day(tx, "UA", 2013, 3, 1, 1).await?;
            Ok((changed, after))
        })
        .await?;
    println!("{changed} flights updated");
    if let (Some(b), Some(a)) = (before.first(), after.first()) {
        println!("before: {}\nafter:  {}", show_flight(b), show_flight(a));
    }
    println!("({:.2?})", t.elapsed());
    db.close().await?;
    Ok(())
}
