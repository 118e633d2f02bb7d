//! The online index backfill section (`--backfill`): the flights table (336,776 rows,
//! three secondary indexes) gets a fourth index `(dest, arr_delay)` through
//! `Db::migrate` on each engine, in rows/s, next to the engine's own `CREATE INDEX` on
//! a second copy of the same table where it has one (SQLite: plain `CREATE INDEX`;
//! PostgreSQL: `CREATE INDEX CONCURRENTLY`, what datalayer issues). etch, Redis and
//! TiKV have no index build of their own: datalayer's chunked backfill is the only
//! one.

use crate::flights::FlightRow;
use crate::migrate::{End, Engines};
use crate::targets::Scratch;
use crate::targets::datalayer::DlFlight;
use anyhow::ensure;
use datalayer::{Db, Table};
use std::time::{Duration, Instant};

/// `DlFlight` with the fourth index.
#[derive(Table, Clone, Debug)]
#[table(name = "flights")]
#[index(
    name = "by_origin_day",
    fields(origin, year, month, day, sched_dep_time)
)]
#[index(name = "by_tailnum", fields(tailnum))]
#[index(name = "by_carrier_day", fields(carrier, year, month, day))]
#[index(name = "by_dest_delay", fields(dest, arr_delay))]
#[allow(dead_code)]
struct IndexedFlight {
    #[pk]
    id: i64,
    year: i64,
    month: i64,
    day: i64,
    dep_time: Option<i64>,
    sched_dep_time: i64,
    dep_delay: Option<i64>,
    arr_time: Option<i64>,
    sched_arr_time: i64,
    arr_delay: Option<i64>,
    carrier: String,
    flight: i64,
    tailnum: Option<String>,
    origin: String,
    dest: String,
    air_time: Option<i64>,
    distance: i64,
    hour: i64,
    minute: i64,
    time_hour: String,
}

/// A fresh `kind` place holding the flights table.
async fn loaded(end: &End, flights: &[DlFlight]) -> anyhow::Result<Db> {
    let db = end.db().await?;
    for chunk in flights.chunks(20_000) {
        db.repo::<DlFlight>().insert_many(chunk).await?;
    }
    Ok(db)
}

/// The engine's own index build on `end`'s table, if it has one.
async fn native(end: &End) -> anyhow::Result<Option<Duration>> {
    match end.kind {
        "sqlite" => {
            let path = end.place.dir().join("dl.sqlite");
            let took = tokio::task::block_in_place(|| {
                let c = crate::targets::rusqlite::open(&path);
                let t0 = Instant::now();
                c.execute_batch("CREATE INDEX native_by_dest_delay ON flights (dest, arr_delay)")?;
                anyhow::Ok(t0.elapsed())
            })?;
            Ok(Some(took))
        }
        #[cfg(feature = "pg")]
        "postgres" => {
            let server = end.place.server()?;
            let c = crate::pg::connect(&server.config, Some(&end.place.schema()?)).await?;
            let t0 = Instant::now();
            c.batch_execute(
                "CREATE INDEX CONCURRENTLY native_by_dest_delay ON flights (dest, arr_delay NULLS FIRST)",
            )
            .await?;
            Ok(Some(t0.elapsed()))
        }
        _ => Ok(None),
    }
}

/// Runs the section for every engine of `engines`.
///
/// # Errors
/// An engine error, or a migrated index that does not hold every row.
pub fn run(scratch: &Scratch, engines: &Engines, rows: &[FlightRow]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let flights: Vec<DlFlight> = rows.iter().map(DlFlight::from).collect();
    let n = flights.len() as f64;
    println!(
        "| online index backfill, flights ({} rows) + (dest, arr_delay) | datalayer rows/s | engine's own CREATE INDEX rows/s | datalayer / own (throughput) |",
        flights.len()
    );
    println!("|---|---|---|---|");
    for (kind, _) in &engines.templates {
        let (end, own_end) = (
            End::new(scratch, engines, kind)?,
            End::new(scratch, engines, kind)?,
        );
        let line = rt.block_on(async {
            let db = loaded(&end, &flights).await?;
            let next = Db::with_engine(db.engine().clone())
                .table::<IndexedFlight>()
                .connect()
                .await?;
            let plan = next.plan_migration().await?;
            ensure!(plan.is_safe() && plan.tables.len() == 1, "{plan}");
            let t0 = Instant::now();
            next.migrate(&plan).await?;
            let ours = n / t0.elapsed().as_secs_f64();
            // Counted in pages: a server store caps the reads of one transaction.
            let (mut entries, mut cursor) = (0usize, None);
            loop {
                let mut f = next
                    .repo::<IndexedFlight>()
                    .find("by_dest_delay")
                    .limit(50_000);
                if let Some(c) = &cursor {
                    f = f.after(c);
                }
                let page = f.page().await?;
                entries += page.rows.len();
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            ensure!(entries == flights.len(), "{kind}: {entries} entries");
            next.close().await?;
            let own = if matches!(*kind, "sqlite" | "postgres") {
                let db = loaded(&own_end, &flights).await?;
                db.close().await?;
                native(&own_end).await?
            } else {
                None
            };
            Ok(match own {
                Some(d) => {
                    let theirs = n / d.as_secs_f64();
                    format!(
                        "| {kind} | {ours:.0} | {theirs:.0} | {:.2}x |",
                        ours / theirs
                    )
                }
                None => format!("| {kind} | {ours:.0} | (none) | |"),
            })
        })?;
        println!("{line}");
        end.close()?;
        own_end.close()?;
    }
    Ok(())
}
