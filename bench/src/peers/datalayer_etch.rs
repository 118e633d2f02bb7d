//! Ours: datalayer on the etch engine, through the public API (`Repo`, a registered
//! `#[query_group]` query, `db.tx`), fsync on every commit (`FlushPolicy::EveryCommit`,
//! group commit across concurrent writers).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datalayer::{Db, Table, query_group};

use crate::flights::FlightRow;
use crate::workloads::{FlightsLoader, Target, User};

/// The benchmark's user row as a datalayer table with a secondary index on age.
/// Shared with the `datalayer-sqlite` target, so both engines run the same
/// declaration.
#[derive(Table, Clone, Debug)]
#[table(name = "users")]
#[index(name = "by_age", fields(age))]
pub(crate) struct DlUser {
    #[pk]
    id: i64,
    name: String,
    email: String,
    age: i32,
}

#[query_group]
impl DlUser {
    fn by_id(id: i64) -> Option<DlUser> {
        Self::filter(|u| u.id == id)
    }
}

impl From<&User> for DlUser {
    fn from(u: &User) -> Self {
        DlUser {
            id: u.id,
            name: u.name.clone(),
            email: u.email.clone(),
            age: u.age,
        }
    }
}

impl From<DlUser> for User {
    fn from(u: DlUser) -> Self {
        User {
            id: u.id,
            name: u.name,
            email: u.email,
            age: u.age,
        }
    }
}

/// datalayer + etch in `<dir>/etch`, fsync per commit.
pub struct DatalayerEtch {
    rt: Arc<tokio::runtime::Runtime>,
    db: Db,
}

/// The runtime every datalayer target blocks on: multi-threaded, 2 workers.
pub(crate) fn runtime() -> Arc<tokio::runtime::Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime"),
    )
}

impl Target for DatalayerEtch {
    fn name(&self) -> String {
        "datalayer-etch".into()
    }

    fn setup(dir: &Path, rows: &[User]) -> Self {
        let rt = runtime();
        let url = format!("etch://{}", dir.join("etch").display());
        let db = rt.block_on(async {
            let db = datalayer::builder(url)
                .table::<DlUser>()
                .queries::<DlUser>()
                .connect()
                .await
                .expect("open etch");
            let rows: Vec<DlUser> = rows.iter().map(DlUser::from).collect();
            for chunk in rows.chunks(10_000) {
                db.repo::<DlUser>()
                    .insert_many(chunk)
                    .await
                    .expect("preload");
            }
            db
        });
        DatalayerEtch { rt, db }
    }

    fn point_read(&self, id: i64) -> Option<User> {
        self.rt
            .block_on(DlUser::by_id(&self.db, id))
            .expect("read")
            .map(User::from)
    }

    fn point_reads(&self, ids: &[i64]) -> usize {
        self.rt.block_on(async {
            let mut n = 0;
            for &id in ids {
                n += usize::from(DlUser::by_id(&self.db, id).await.expect("read").is_some());
            }
            n
        })
    }

    fn commit_one(&self, u: &User) {
        self.rt
            .block_on(self.db.repo::<DlUser>().insert(&DlUser::from(u)))
            .expect("commit");
    }

    fn commit_many(&self, rows: &[User]) {
        self.rt.block_on(async {
            for u in rows {
                self.db
                    .repo::<DlUser>()
                    .insert(&DlUser::from(u))
                    .await
                    .expect("commit");
            }
        })
    }

    fn batch(&self, rows: &[User]) {
        let rows: Vec<DlUser> = rows.iter().map(DlUser::from).collect();
        self.rt
            .block_on(self.db.repo::<DlUser>().insert_many(&rows))
            .expect("batch");
    }

    fn range_by_age(&self, lo: i32, hi: i32) -> usize {
        self.rt
            .block_on(self.db.repo::<DlUser>().find("by_age").range(lo..=hi).all())
            .expect("scan")
            .len()
    }

    fn range_scans(&self, ranges: &[(i32, i32)]) -> usize {
        self.rt.block_on(async {
            let mut n = 0;
            for &(lo, hi) in ranges {
                n += self
                    .db
                    .repo::<DlUser>()
                    .find("by_age")
                    .range(lo..=hi)
                    .all()
                    .await
                    .expect("scan")
                    .len();
            }
            n
        })
    }
}

/// The flights table with the same secondary indexes as the rusqlite loader.
#[derive(Table, Clone, Debug)]
#[table(name = "flights")]
#[index(
    name = "by_origin_day",
    fields(origin, year, month, day, sched_dep_time)
)]
#[index(name = "by_tailnum", fields(tailnum))]
#[index(name = "by_carrier_day", fields(carrier, year, month, day))]
pub(crate) struct DlFlight {
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

impl From<&FlightRow> for DlFlight {
    fn from(f: &FlightRow) -> Self {
        DlFlight {
            id: f.id,
            year: f.year,
            month: f.month,
            day: f.day,
            dep_time: f.dep_time,
            sched_dep_time: f.sched_dep_time,
            dep_delay: f.dep_delay,
            arr_time: f.arr_time,
            sched_arr_time: f.sched_arr_time,
            arr_delay: f.arr_delay,
            carrier: f.carrier.clone(),
            flight: f.flight,
            tailnum: f.tailnum.clone(),
            origin: f.origin.clone(),
            dest: f.dest.clone(),
            air_time: f.air_time,
            distance: f.distance,
            hour: f.hour,
            minute: f.minute,
            time_hour: f.time_hour.clone(),
        }
    }
}

/// Loads all flights in ONE durable etch transaction through `Repo::insert_many`.
pub struct DatalayerEtchFlights;

impl FlightsLoader for DatalayerEtchFlights {
    fn name(&self) -> String {
        "datalayer-etch".into()
    }

    fn load(&self, dir: &Path, rows: &[FlightRow]) -> Duration {
        let rt = runtime();
        rt.block_on(async {
            let url = format!("etch://{}", dir.join("etch").display());
            let db = datalayer::builder(url)
                .table::<DlFlight>()
                .connect()
                .await
                .expect("open etch");
            let rows: Vec<DlFlight> = rows.iter().map(DlFlight::from).collect();
            let t0 = Instant::now();
            db.tx(async |tx| tx.repo::<DlFlight>().insert_many(&rows).await)
                .await
                .expect("load flights");
            let took = t0.elapsed();
            db.close().await.expect("close");
            took
        })
    }
}
