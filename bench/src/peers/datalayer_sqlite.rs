//! Ours: datalayer on the SQLite engine (`datalayer::sqlite`), through the same public
//! API and the same table declaration as `datalayer-etch` (`DlUser` with index
//! `by_age`, the registered query `DlUser::by_id`, `Repo::insert_many`, `db.tx`).
//!
//! Durability: the same as the raw `rusqlite` peer: the engine opens the file with
//! `journal_mode=WAL` and the URL sets `synchronous=FULL`, so every commit fsyncs
//! the WAL before it returns. `readers=4` gives it the same read-pool size as the
//! rusqlite peer (the engine's one writer connection is its own).
//!
//! Every call goes the engine's way: the caller's task sends a job to the
//! connection's thread (writer or reader pool) and awaits the answer, and the
//! statement is one prepared once per connection.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datalayer::Db;

use super::datalayer_etch::{DlFlight, DlUser, runtime};
use crate::flights::FlightRow;
use crate::workloads::{CdcInserter, FlightsLoader, Target, User};

/// The engine URL of the SQLite file `file`, with the benchmark's durability
/// (`synchronous=FULL`) and read-pool size.
fn url(file: &Path) -> String {
    // `sqlite://` + an absolute path gives `sqlite:///abs/path`.
    format!("sqlite://{}?synchronous=full&readers=4", file.display())
}

/// Checks that the engine really runs with WAL + synchronous=FULL on `file`
/// (a separate raw connection reads the persistent journal mode; `synchronous` is
/// per connection, so it is checked through the engine's own options).
fn check_durability(db_file: &Path) {
    let opts = datalayer::sqlite::SqliteOptions::from_url(&url(db_file)).expect("sqlite url");
    assert_eq!(
        opts.synchronous,
        datalayer::sqlite::Synchronous::Full,
        "datalayer-sqlite must run with synchronous=FULL"
    );
    let conn = ::rusqlite::Connection::open(db_file).expect("sqlite open (check)");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("sqlite journal_mode");
    assert!(
        mode.eq_ignore_ascii_case("wal"),
        "datalayer-sqlite journal_mode is {mode}"
    );
}

/// datalayer + SQLite in `<dir>/dl.sqlite`: WAL, synchronous=FULL.
pub struct DatalayerSqlite {
    rt: Arc<tokio::runtime::Runtime>,
    db: Db,
}

impl Target for DatalayerSqlite {
    fn name(&self) -> String {
        "datalayer-sqlite".into()
    }

    fn setup(dir: &Path, rows: &[User]) -> Self {
        let rt = runtime();
        let file = dir.join("dl.sqlite");
        let db = rt.block_on(async {
            let db = datalayer::builder(url(&file))
                .table::<DlUser>()
                .queries::<DlUser>()
                .connect()
                .await
                .expect("open sqlite");
            let rows: Vec<DlUser> = rows.iter().map(DlUser::from).collect();
            for chunk in rows.chunks(10_000) {
                db.repo::<DlUser>()
                    .insert_many(chunk)
                    .await
                    .expect("preload");
            }
            db
        });
        check_durability(&file);
        DatalayerSqlite { rt, db }
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

/// Loads all flights in ONE durable SQLite transaction through `Repo::insert_many`
/// inside `db.tx` (the same code as the etch loader, another URL).
pub struct DatalayerSqliteFlights;

impl FlightsLoader for DatalayerSqliteFlights {
    fn name(&self) -> String {
        "datalayer-sqlite".into()
    }

    fn load(&self, dir: &Path, rows: &[FlightRow]) -> Duration {
        let rt = runtime();
        rt.block_on(async {
            let db = datalayer::builder(url(&dir.join("flights.sqlite")))
                .table::<DlFlight>()
                .connect()
                .await
                .expect("open sqlite");
            let rows: Vec<DlFlight> = rows.iter().map(DlFlight::from).collect();
            let t0 = Instant::now();
            db.tx(async |tx| tx.repo::<DlFlight>().insert_many(&rows).await)
                .await
                .expect("load flights");
            let took = t0.elapsed();
            let n = db.repo::<DlFlight>().count().await.expect("count flights");
            assert_eq!(n as usize, rows.len(), "flights row count after load");
            db.close().await.expect("close");
            took
        })
    }
}

/// Workload 7 on a datalayer engine: `Repo::insert_many` of all rows (one
/// transaction) into a fresh `users` table, with `Db::enable_changes("users")` (SQLite:
/// the engine's AFTER INSERT/UPDATE/DELETE triggers into `_dl_cdc_log`; etch: the KV
/// family's change records, written in the same transaction) or without.
pub struct DatalayerCdc {
    /// The target's name (`datalayer-sqlite`, `datalayer-etch`).
    pub name: &'static str,
    /// The engine URL of a fresh store under the given directory.
    pub url: fn(&Path) -> String,
}

/// [`DatalayerCdc`] on SQLite (WAL, synchronous=FULL).
pub const DATALAYER_SQLITE_CDC: DatalayerCdc = DatalayerCdc {
    name: "datalayer-sqlite",
    url: |dir| url(&dir.join("cdc.sqlite")),
};

/// [`DatalayerCdc`] on etch (fsync on every commit).
pub const DATALAYER_ETCH_CDC: DatalayerCdc = DatalayerCdc {
    name: "datalayer-etch",
    url: |dir| format!("etch://{}", dir.join("cdc-etch").display()),
};

impl CdcInserter for DatalayerCdc {
    fn name(&self) -> String {
        self.name.into()
    }

    fn insert(&self, dir: &Path, rows: &[User], cdc: bool) -> Duration {
        let rt = runtime();
        rt.block_on(async {
            let db = datalayer::builder((self.url)(dir))
                .table::<DlUser>()
                .connect()
                .await
                .expect("open sqlite");
            if cdc {
                db.enable_changes("users").await.expect("enable_changes");
            }
            let rows: Vec<DlUser> = rows.iter().map(DlUser::from).collect();
            let t0 = Instant::now();
            db.repo::<DlUser>()
                .insert_many(&rows)
                .await
                .expect("insert");
            let took = t0.elapsed();
            if cdc {
                let changes = db
                    .read_changes("users", 0, rows.len() + 1)
                    .await
                    .expect("read_changes");
                assert_eq!(changes.len(), rows.len(), "one captured change per row");
            }
            db.close().await.expect("close");
            took
        })
    }
}

/// Workload 7, control row: the exact tables and triggers datalayer-sqlite
/// creates (the `users` table as datalayer renders it, and `enable_changes`'
/// three triggers into `_dl_cdc_log`), made by datalayer and then closed, with
/// the rows inserted by raw rusqlite (one cached prepared statement, one
/// transaction, WAL + synchronous=FULL). Its with/without ratio is the cost of
/// datalayer's trigger SQL itself; the gap between it and the datalayer-sqlite
/// row is the cost of the layer's own write path.
pub struct RawOnDatalayerSchemaCdc;

impl CdcInserter for RawOnDatalayerSchemaCdc {
    fn name(&self) -> String {
        "rusqlite-on-dl-schema".into()
    }

    fn insert(&self, dir: &Path, rows: &[User], cdc: bool) -> Duration {
        let file = dir.join("cdc.sqlite");
        let rt = runtime();
        rt.block_on(async {
            let db = datalayer::builder(url(&file))
                .table::<DlUser>()
                .connect()
                .await
                .expect("open sqlite");
            if cdc {
                db.enable_changes("users").await.expect("enable_changes");
            }
            db.close().await.expect("close");
        });
        drop(rt);
        let mut conn = super::rusqlite::open(&file);
        let t0 = Instant::now();
        let tx = conn
            .transaction_with_behavior(::rusqlite::TransactionBehavior::Immediate)
            .expect("sqlite begin");
        {
            let mut st = tx
                .prepare_cached(
                    r#"INSERT INTO "users" ("id", "name", "email", "age") VALUES (?1, ?2, ?3, ?4)"#,
                )
                .expect("sqlite prepare");
            for u in rows {
                st.execute(::rusqlite::params![u.id, u.name, u.email, u.age])
                    .expect("sqlite insert");
            }
        }
        tx.commit().expect("sqlite commit");
        let elapsed = t0.elapsed();
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'",
                [],
                |r| r.get(0),
            )
            .expect("sqlite count triggers");
        assert_eq!(n, if cdc { 3 } else { 0 }, "datalayer's CDC triggers");
        if cdc {
            let n: i64 = conn
                .query_row("SELECT count(*) FROM _dl_cdc_log", [], |r| r.get(0))
                .expect("sqlite count");
            assert_eq!(n as usize, rows.len(), "one captured change per row");
        }
        elapsed
    }
}
