//! Ours: datalayer on any URL, through the public API (`Repo`, a registered
//! `#[query_group]` query, `db.tx`, `enable_changes`, the outbox). One type for
//! every engine: the URL is the only difference, so a new engine (Redis, TiKV)
//! joins the benchmark with `--url name=redis://..` and no code here.
//!
//! The URL is a template, rendered once per fresh store ([`Place`]):
//! `{dir}` becomes the place's empty temporary directory and `{schema}` a fresh
//! schema on the run's PostgreSQL server (dropped at the end). The default
//! targets:
//!
//! - `datalayer-etch`: [`ETCH_URL`], fsync on every commit (group commit across
//!   concurrent writers);
//! - `datalayer-sqlite`: [`SQLITE_URL`]: the engine always runs WAL and the URL
//!   sets `synchronous=full`, so every commit fsyncs the WAL before it returns (the
//!   same as the raw `rusqlite` peer); `readers=4` gives it the same read-pool size
//!   as that peer. Writes send a job to the writer's thread and await the answer;
//!   autocommit reads run on the calling thread's own read connection (the engine's
//!   default `caller_reads`); statements are prepared once per connection;
//! - `datalayer-pg` (PostgreSQL section): `DATALAYER_PG_URL` + `schema={schema}`
//!   (pool size and pipeline depth: the engine's defaults, 10 and 32, unless the
//!   URL sets them).
//!
//! What each `users` workload calls:
//! - point read: `DlUser::by_id(&db, id)` (a `#[query_group]` query);
//! - range scan: `db.repo().find("by_age").range(lo..=hi).all()`;
//! - one-row commits: `db.repo().insert(row)` (its own transaction);
//! - insert_many: `db.repo().insert_many(rows)` (one call, one transaction; on
//!   PostgreSQL pipelined, <= `pipeline_depth` in flight);
//! - sequential: `db.tx(|tx| for row { tx.repo().insert(row).await })`; on
//!   PostgreSQL every op inside a transaction is wrapped in the engine's internal
//!   savepoint, pipelined with the INSERT (one round trip per row, three
//!   statements);
//! - batched: `db.tx(|tx| tx.repo().insert_many(rows))`: the `#[query_group]` DSL
//!   has no INSERT, so there is no `*_stmt` insert to stage in a `Batch`;
//!   `insert_many` on a `Tx` is the engine's batch path (the same pipeline as
//!   `Batch::run` on a `Tx`).
//!
//! In the Redis and TiKV sections the target runs [`Shape::TwoIndexes`]: the same
//! row in a table `users2` with a second index, on `email` (`DlUser2`), so that a
//! one-row insert maintains two indexes; there:
//! - point read: `DlUser2::by_id(&db, id)`;
//! - insert (one row, own transaction): `db.repo().insert(row)`;
//! - range scan: `db.repo().find("by_age").range(lo..=hi).all()`;
//! - batched reads: a `Batch` of 1,000 `DlUser2::by_id_stmt(id)`, `batch.run(&db)`
//!   (one atomic unit on the `Db`).
//!
//! Which of [`Workload::Changes`] and [`Workload::Outbox`] a target runs comes from
//! its engine's declared `Capability` (`change_feed`, `outbox`), read once when
//! the target is made.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use datalayer::prelude::*;
use datalayer::{Capability, DbBuilder, Stmt};
use tokio::runtime::Runtime;

use super::{AsyncUsers, Place, Target, UsersTable, runtime};
use crate::flights::FlightRow;
use crate::outbox::OutboxRun;
use crate::workloads::{User, Workload};

/// datalayer on etch in the place's directory, fsync per commit.
pub const ETCH_URL: &str = "etch://{dir}/etch";

/// datalayer on SQLite in the place's directory: WAL, `synchronous=FULL`, 4 readers.
pub const SQLITE_URL: &str = "sqlite://{dir}/dl.sqlite?synchronous=full&readers=4";

/// The SQLite file of [`SQLITE_URL`] inside a place's directory.
pub const SQLITE_FILE: &str = "dl.sqlite";

/// Rows per `insert_many` call while preloading.
const PRELOAD_CHUNK: usize = 10_000;

/// Declares the benchmark's user row as a datalayer table (the attributes given:
/// its doc, `#[table]` and `#[index]`es) with its `#[query_group]` point query
/// by id, its [`Row`] impl and the conversions from and into [`User`].
macro_rules! user_table {
    ($(#$attr:tt)* struct $name:ident;) => {
        #[derive(Table, Clone, Debug)]
        $(#$attr)*
        pub(crate) struct $name {
            #[pk]
            id: i64,
            name: String,
            email: String,
            age: i32,
        }

        #[query_group]
        impl $name {
            fn by_id(id: i64) -> Option<$name> {
                Self::filter(|u| u.id == id)
            }
        }

        impl Row for $name {
            fn by_id_stmt(id: i64) -> Stmt<Option<Self>> {
                $name::by_id_stmt(id)
            }
        }

        impl From<&User> for $name {
            fn from(u: &User) -> Self {
                $name {
                    id: u.id,
                    name: u.name.clone(),
                    email: u.email.clone(),
                    age: u.age,
                }
            }
        }

        impl From<$name> for User {
            fn from(u: $name) -> Self {
                User {
                    id: u.id,
                    name: u.name,
                    email: u.email,
                    age: u.age,
                }
            }
        }
    };
}

user_table! {
    /// The benchmark's user row as a datalayer table with a secondary index on age.
    /// Every datalayer target runs this one declaration.
    #[table(name = "users")]
    #[index(name = "by_age", fields(age))]
    struct DlUser;
}

user_table! {
    /// The benchmark's user row in the Redis and TiKV sections: the same columns with
    /// TWO secondary indexes, on age and on email.
    #[table(name = "users2")]
    #[index(name = "by_age", fields(age))]
    #[index(name = "by_email", fields(email))]
    struct DlUser2;
}

/// The table declaration a [`Datalayer`] target's `users` workloads run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `users` with one index (on age): the default and PostgreSQL tables.
    OneIndex,
    /// `users2` with two indexes (on age and on email): the Redis and TiKV sections.
    #[cfg_attr(not(any(feature = "redis", feature = "tikv")), allow(dead_code))]
    TwoIndexes,
}

/// What the `users` workloads need of a table declaration.
trait Row:
    Table + datalayer::QueryGroup + Send + Sync + 'static + for<'a> From<&'a User> + Into<User>
{
    /// The `#[query_group]` point query by primary key, staged.
    fn by_id_stmt(id: i64) -> Stmt<Option<Self>>;
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

/// Renders the URL template `url` for `place`: `{dir}` becomes its directory,
/// `{schema}` its PostgreSQL schema (created now), `{ns}` its namespace on the
/// section's Redis server or TiKV cluster (created now).
///
/// # Errors
/// `{schema}` or `{ns}` is used and the place cannot have one.
pub fn render(url: &str, place: &Place) -> anyhow::Result<String> {
    let mut out = url.replace("{dir}", &place.dir().display().to_string());
    if out.contains("{schema}") {
        out = out.replace("{schema}", &place.schema()?);
    }
    if out.contains("{ns}") {
        out = out.replace("{ns}", &place.namespace()?);
    }
    Ok(out)
}

/// datalayer on one URL template.
pub struct Datalayer {
    name: String,
    url: String,
    rt: Arc<Runtime>,
    capability: Capability,
    shape: Shape,
}

impl Datalayer {
    /// A target named `name` on the URL template `url`. Opens the URL once in a
    /// fresh place of `scratch` to read the engine's capabilities.
    ///
    /// # Errors
    /// The URL cannot be opened.
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        scratch: &super::Scratch,
    ) -> anyhow::Result<Self> {
        let (name, url) = (name.into(), url.into());
        let rt = runtime();
        let place = scratch.place(&name)?;
        let at = render(&url, &place)?;
        let capability = rt
            .block_on(async {
                let db = datalayer::connect(at).await?;
                let c = db.capability();
                db.close().await?;
                Ok::<_, datalayer::Error>(c)
            })
            .with_context(|| format!("{name}: opening {}", datalayer::redact(&url)))?;
        place.close()?;
        Ok(Self {
            name,
            url,
            rt,
            capability,
            shape: Shape::OneIndex,
        })
    }

    /// The same target on the table declaration `shape`.
    #[cfg(any(feature = "redis", feature = "tikv"))]
    pub fn with_shape(mut self, shape: Shape) -> Self {
        self.shape = shape;
        self
    }

    /// Opens the `users` table of declaration `T` at `place` and preloads `rows`.
    fn open_as<T: Row>(&self, place: &Place, rows: &[User]) -> anyhow::Result<Box<dyn UsersTable>> {
        let (db, url) = self.connect(place, |b| b.table::<T>().queries::<T>())?;
        self.rt.block_on(async {
            let rows: Vec<T> = rows.iter().map(T::from).collect();
            for chunk in rows.chunks(PRELOAD_CHUNK) {
                db.repo::<T>().insert_many(chunk).await?;
            }
            Ok::<_, datalayer::Error>(())
        })?;
        check_sqlite_durability(&db, &url)?;
        Ok(Box::new(DlUsers::<T> {
            rt: self.rt.clone(),
            db,
            _row: std::marker::PhantomData,
        }))
    }

    /// Connects at `place` with the tables and options `build` adds.
    fn connect(
        &self,
        place: &Place,
        build: impl FnOnce(DbBuilder) -> DbBuilder,
    ) -> anyhow::Result<(Db, String)> {
        let url = render(&self.url, place)?;
        let db = self
            .rt
            .block_on(build(datalayer::builder(url.clone())).connect())
            .with_context(|| format!("{}: connecting", self.name))?;
        Ok((db, url))
    }
}

/// Checks that a SQLite file URL runs durably: `synchronous=FULL` in the engine's
/// options, `journal_mode=WAL` in the file (read through a separate raw
/// connection). Other engines and in-memory databases are not checked.
fn check_sqlite_durability(db: &Db, url: &str) -> anyhow::Result<()> {
    if db.engine_name() != "sqlite" {
        return Ok(());
    }
    let opts = datalayer::sqlite::SqliteOptions::from_url(url)?;
    let Some(path) = opts.path else {
        return Ok(());
    };
    ensure!(
        opts.synchronous == datalayer::sqlite::Synchronous::Full,
        "{}: the benchmark commits durably; add synchronous=full to the URL",
        datalayer::redact(url)
    );
    let conn = ::rusqlite::Connection::open(&path)?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "{}: journal_mode is {mode}",
        path.display()
    );
    Ok(())
}

impl Target for Datalayer {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, w: Workload) -> bool {
        match w {
            Workload::Copy => false,
            Workload::Changes => self.capability.change_feed,
            Workload::Outbox => self.capability.outbox,
            _ => true,
        }
    }

    fn open(&self, place: &Place, rows: &[User]) -> anyhow::Result<Box<dyn UsersTable>> {
        match self.shape {
            Shape::OneIndex => self.open_as::<DlUser>(place, rows),
            Shape::TwoIndexes => self.open_as::<DlUser2>(place, rows),
        }
    }

    fn load_flights(&self, place: &Place, rows: &[FlightRow]) -> anyhow::Result<Duration> {
        let (db, _) = self.connect(place, |b| b.table::<DlFlight>())?;
        self.rt.block_on(async {
            let rows: Vec<DlFlight> = rows.iter().map(DlFlight::from).collect();
            let t0 = Instant::now();
            db.tx(async |tx| tx.repo::<DlFlight>().insert_many(&rows).await)
                .await?;
            let took = t0.elapsed();
            let n = db.repo::<DlFlight>().count().await?;
            ensure!(
                n as usize == rows.len(),
                "{n} flights after loading {}",
                rows.len()
            );
            db.close().await?;
            Ok(took)
        })
    }

    /// `Repo::insert_many` of all rows (one transaction) into a fresh `users`
    /// table, after `Db::enable_changes("users")` (SQL engines: the engine's
    /// triggers into its change log; KV engines: change records written in the
    /// same transaction) or without.
    fn insert_rows(&self, place: &Place, rows: &[User], changes: bool) -> anyhow::Result<Duration> {
        let (db, _) = self.connect(place, |b| b.table::<DlUser>())?;
        self.rt.block_on(async {
            if changes {
                db.enable_changes("users").await?;
            }
            let rows: Vec<DlUser> = rows.iter().map(DlUser::from).collect();
            let t0 = Instant::now();
            db.repo::<DlUser>().insert_many(&rows).await?;
            let took = t0.elapsed();
            if changes {
                let got = db.read_changes("users", 0, rows.len() + 1).await?.len();
                if got != rows.len() {
                    bail!("{got} captured changes for {} rows", rows.len());
                }
            }
            db.close().await?;
            Ok(took)
        })
    }

    fn outbox(&self, place: &Place, n: usize) -> anyhow::Result<OutboxRun> {
        let (db, _) = self.connect(place, |b| b.outbox())?;
        self.rt.block_on(async {
            let r = crate::outbox::run_datalayer(&db, &self.name, n).await;
            db.close().await?;
            r
        })
    }
}

/// The `users` table of a [`Datalayer`] target, declared by `T`.
struct DlUsers<T> {
    rt: Arc<Runtime>,
    db: Db,
    _row: std::marker::PhantomData<fn() -> T>,
}

impl<T: Row> AsyncUsers for DlUsers<T> {
    type Row = T;

    fn rt(&self) -> &Runtime {
        &self.rt
    }

    async fn read(&self, id: i64) -> Option<T> {
        T::by_id_stmt(id)
            .run(&self.db)
            .await
            .expect("datalayer read")
    }

    async fn batch(&self, ids: &[i64]) -> Vec<Option<T>> {
        let batch: Batch<Option<T>> = ids.iter().map(|&id| T::by_id_stmt(id)).collect();
        batch.run(&self.db).await.expect("datalayer batch of reads")
    }

    async fn range(&self, lo: i32, hi: i32) -> usize {
        self.db
            .repo::<T>()
            .find("by_age")
            .range(lo..=hi)
            .all()
            .await
            .expect("datalayer range scan")
            .len()
    }

    async fn insert(&self, u: &User) {
        self.db
            .repo::<T>()
            .insert(&T::from(u))
            .await
            .expect("datalayer commit");
    }

    async fn insert_all(&self, rows: &[User]) {
        let rows: Vec<T> = rows.iter().map(T::from).collect();
        let n = self
            .db
            .repo::<T>()
            .insert_many(&rows)
            .await
            .expect("datalayer insert_many");
        assert_eq!(n as usize, rows.len(), "rows inserted by insert_many");
    }

    async fn insert_each_in_tx(&self, rows: &[User]) {
        let rows: Vec<T> = rows.iter().map(T::from).collect();
        self.db
            .tx(async |tx| {
                let repo = tx.repo::<T>();
                for r in &rows {
                    repo.insert(r).await?;
                }
                Ok(())
            })
            .await
            .expect("datalayer sequential inserts");
    }

    async fn insert_batch_in_tx(&self, rows: &[User]) {
        let rows: Vec<T> = rows.iter().map(T::from).collect();
        let n = self
            .db
            .tx(async |tx| tx.repo::<T>().insert_many(&rows).await)
            .await
            .expect("datalayer batched inserts");
        assert_eq!(
            n as usize,
            rows.len(),
            "rows inserted by insert_many in a tx"
        );
    }

    async fn row_count(&self) -> i64 {
        self.db.repo::<T>().count().await.expect("datalayer count") as i64
    }

    async fn shutdown(&self) {
        self.db.close().await.expect("datalayer close");
    }
}
