//! Peer: raw `rusqlite` (bundled SQLite), used the way a careful user would.
//!
//! Durability: `PRAGMA journal_mode = WAL` and `PRAGMA synchronous = FULL`
//! on every connection, so each commit fsyncs the WAL before returning.
//!
//! Connections: one write connection behind a mutex (SQLite admits one writer
//! at a time; serialising in-process avoids `SQLITE_BUSY` back-off sleeps)
//! and a small pool of read connections, the usual "one writer + read pool"
//! setup. Every statement is a cached prepared statement. SQLite has no group
//! commit: with 8 writers each commit still pays its own fsync.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use anyhow::ensure;

use super::datalayer::{DlUser, SQLITE_FILE, SQLITE_URL, render};
use super::{Place, Target, UsersTable, runtime};
use crate::flights::FlightRow;
use crate::workloads::{User, Workload};

const READERS: usize = 4;

const INSERT_USER: &str = "INSERT INTO users (id, name, email, age) VALUES (?1, ?2, ?3, ?4)";
const GET_USER: &str = "SELECT name, email, age FROM users WHERE id = ?1";
const USERS_BY_AGE: &str = "SELECT id, name, email, age FROM users WHERE age BETWEEN ?1 AND ?2";

/// Open `path` with the benchmark's durability settings.
pub(crate) fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("sqlite open");
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .expect("sqlite journal_mode");
    assert!(mode.eq_ignore_ascii_case("wal"), "journal_mode is {mode}");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sqlite synchronous");
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .expect("sqlite synchronous");
    assert_eq!(sync, 2, "PRAGMA synchronous is not FULL");
    conn.busy_timeout(Duration::from_secs(30))
        .expect("sqlite busy_timeout");
    conn
}

const USERS_SCHEMA: &str = "CREATE TABLE users (
     id    INTEGER PRIMARY KEY,
     name  TEXT    NOT NULL,
     email TEXT    NOT NULL,
     age   INTEGER NOT NULL
 );
 CREATE INDEX users_age ON users (age);";

/// SQLite in `<dir>/bench.sqlite`: WAL, synchronous=FULL, one writer + read
/// pool. Runs the embedded `users` workloads, the flights load (one table with
/// the flights columns, primary key on `id` and the three secondary indexes, all
/// rows in one transaction) and the change-capture insert (a hand-written
/// trigger, see [`CDC_LOG_SCHEMA`]).
pub struct Rusqlite;

impl Target for Rusqlite {
    fn name(&self) -> &str {
        "rusqlite"
    }

    fn supports(&self, w: Workload) -> bool {
        matches!(
            w,
            Workload::PointRead
                | Workload::RangeScan
                | Workload::Commit1
                | Workload::Commit8
                | Workload::Batch
                | Workload::Flights
                | Workload::Changes
        )
    }

    fn open(&self, place: &Place, rows: &[User]) -> anyhow::Result<Box<dyn UsersTable>> {
        let path = place.dir().join("bench.sqlite");
        let writer = open(&path);
        writer.execute_batch(USERS_SCHEMA)?;
        let readers = (0..READERS).map(|_| Mutex::new(open(&path))).collect();
        let this = RusqliteUsers {
            writer: Mutex::new(writer),
            readers,
        };
        for chunk in rows.chunks(10_000) {
            this.insert_all(chunk);
        }
        Ok(Box::new(this))
    }

    fn load_flights(&self, place: &Place, rows: &[FlightRow]) -> anyhow::Result<Duration> {
        let mut conn = open(&place.dir().join("flights.sqlite"));
        conn.execute_batch(FLIGHTS_SCHEMA)?;
        let elapsed = insert_flights(&mut conn, rows)?;
        let n: i64 = conn.query_row("SELECT count(*) FROM flights", [], |r| r.get(0))?;
        ensure!(
            n as usize == rows.len(),
            "{n} flights after loading {}",
            rows.len()
        );
        Ok(elapsed)
    }

    /// The `users` table of the users workloads and, with `changes`, a
    /// hand-written change log ([`CDC_LOG_SCHEMA`]).
    fn insert_rows(&self, place: &Place, rows: &[User], changes: bool) -> anyhow::Result<Duration> {
        let mut conn = open(&place.dir().join("cdc.sqlite"));
        conn.execute_batch(USERS_SCHEMA)?;
        if changes {
            conn.execute_batch(CDC_LOG_SCHEMA)?;
        }
        let elapsed = insert_in_one_tx(&mut conn, INSERT_USER, rows)?;
        if changes {
            let n: i64 = conn.query_row("SELECT count(*) FROM cdc_log", [], |r| r.get(0))?;
            ensure!(
                n as usize == rows.len(),
                "{n} captured changes for {} rows",
                rows.len()
            );
        }
        Ok(elapsed)
    }
}

/// Inserts `rows` with the cached statement `sql` in one IMMEDIATE transaction;
/// returns the time of the inserts and the commit.
fn insert_in_one_tx(conn: &mut Connection, sql: &str, rows: &[User]) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut st = tx.prepare_cached(sql)?;
        for u in rows {
            st.execute(params![u.id, u.name, u.email, u.age])?;
        }
    }
    tx.commit()?;
    Ok(t0.elapsed())
}

/// The open SQLite database of [`Rusqlite`].
struct RusqliteUsers {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
}

impl RusqliteUsers {
    fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().expect("sqlite writer mutex poisoned")
    }

    /// A free read connection, or (if all are busy) wait for the first one.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.readers
            .iter()
            .find_map(|m| m.try_lock().ok())
            .unwrap_or_else(|| {
                self.readers[0]
                    .lock()
                    .expect("sqlite reader mutex poisoned")
            })
    }

    fn insert_all(&self, rows: &[User]) {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("sqlite begin");
        {
            let mut st = tx.prepare_cached(INSERT_USER).expect("sqlite prepare");
            for u in rows {
                st.execute(params![u.id, u.name, u.email, u.age])
                    .expect("sqlite insert");
            }
        }
        tx.commit().expect("sqlite commit");
    }
}

impl UsersTable for RusqliteUsers {
    fn point_read(&self, id: i64) -> Option<User> {
        let conn = self.reader();
        let mut st = conn.prepare_cached(GET_USER).expect("sqlite prepare");
        st.query_row([id], |r| {
            Ok(User {
                id,
                name: r.get(0)?,
                email: r.get(1)?,
                age: r.get(2)?,
            })
        })
        .optional()
        .expect("sqlite point read")
    }

    /// One autocommit `INSERT`: a single statement is its own transaction.
    fn commit_one(&self, u: &User) {
        let conn = self.writer();
        let mut st = conn.prepare_cached(INSERT_USER).expect("sqlite prepare");
        st.execute(params![u.id, u.name, u.email, u.age])
            .expect("sqlite insert");
    }

    fn insert_many(&self, rows: &[User]) {
        self.insert_all(rows);
    }

    fn range_by_age(&self, lo: i32, hi: i32) -> usize {
        let conn = self.reader();
        let mut st = conn.prepare_cached(USERS_BY_AGE).expect("sqlite prepare");
        let rows: Vec<User> = st
            .query_map([lo, hi], |r| {
                Ok(User {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    email: r.get(2)?,
                    age: r.get(3)?,
                })
            })
            .expect("sqlite range")
            .collect::<Result<_, _>>()
            .expect("sqlite range row");
        rows.len()
    }

    fn count(&self) -> i64 {
        self.reader()
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .expect("sqlite count")
    }
}

const FLIGHTS_SCHEMA: &str = "
CREATE TABLE flights (
    id             INTEGER PRIMARY KEY,
    year           INTEGER NOT NULL,
    month          INTEGER NOT NULL,
    day            INTEGER NOT NULL,
    dep_time       INTEGER,
    sched_dep_time INTEGER NOT NULL,
    dep_delay      INTEGER,
    arr_time       INTEGER,
    sched_arr_time INTEGER NOT NULL,
    arr_delay      INTEGER,
    carrier        TEXT    NOT NULL,
    flight         INTEGER NOT NULL,
    tailnum        TEXT,
    origin         TEXT    NOT NULL,
    dest           TEXT    NOT NULL,
    air_time       INTEGER,
    distance       INTEGER NOT NULL,
    hour           INTEGER NOT NULL,
    minute         INTEGER NOT NULL,
    time_hour      TEXT    NOT NULL
);
CREATE INDEX flights_origin_day ON flights (origin, year, month, day, sched_dep_time);
CREATE INDEX flights_tailnum ON flights (tailnum);
CREATE INDEX flights_carrier_day ON flights (carrier, year, month, day);
";

/// Inserts `rows` into the `flights` table of `conn` (one prepared `INSERT` per row,
/// one immediate transaction); returns the time it took. Also the SQLite ceiling of
/// the migration section, on the table datalayer created.
pub(crate) fn insert_flights(
    conn: &mut Connection,
    rows: &[FlightRow],
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut st = tx.prepare_cached(INSERT_FLIGHT)?;
        for f in rows {
            st.execute(params![
                f.id,
                f.year,
                f.month,
                f.day,
                f.dep_time,
                f.sched_dep_time,
                f.dep_delay,
                f.arr_time,
                f.sched_arr_time,
                f.arr_delay,
                f.carrier,
                f.flight,
                f.tailnum,
                f.origin,
                f.dest,
                f.air_time,
                f.distance,
                f.hour,
                f.minute,
                f.time_hour,
            ])?;
        }
    }
    tx.commit()?;
    Ok(t0.elapsed())
}

const INSERT_FLIGHT: &str = "INSERT INTO flights (
    id, year, month, day, dep_time, sched_dep_time, dep_delay, arr_time, sched_arr_time,
    arr_delay, carrier, flight, tailnum, origin, dest, air_time, distance, hour, minute,
    time_hour
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
          ?19, ?20)";

/// The change log of [`Rusqlite`]'s change-capture insert: a hand-written log with the same layout as
/// datalayer-sqlite's `_dl_cdc_log` (AUTOINCREMENT position, index on
/// `(tbl, position)`) and one `AFTER INSERT` trigger appending
/// `json_array(NEW.id, NEW.name, NEW.email, NEW.age)`. (datalayer also installs
/// UPDATE and DELETE triggers, which an insert does not fire, and wraps each
/// value in a `CASE typeof(..) WHEN 'blob' THEN hex(..)` for BLOB columns.)
const CDC_LOG_SCHEMA: &str = "
CREATE TABLE cdc_log (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    tbl      TEXT NOT NULL,
    op       TEXT NOT NULL,
    row      TEXT NOT NULL
);
CREATE INDEX cdc_log_by_tbl ON cdc_log (tbl, position);
CREATE TRIGGER users_cdc_insert AFTER INSERT ON users FOR EACH ROW BEGIN
    INSERT INTO cdc_log (tbl, op, row)
    VALUES ('users', 'insert', json_array(NEW.id, NEW.name, NEW.email, NEW.age));
END;
";

/// Control target of the change-capture insert: the exact tables and triggers
/// datalayer-sqlite creates (the `users` table as datalayer renders it, and
/// `enable_changes`' three triggers into `_dl_cdc_log`), made by datalayer on
/// [`SQLITE_URL`] and then closed, with the rows inserted by raw rusqlite (one
/// cached prepared statement, one transaction, WAL + synchronous=FULL). Its
/// with/without ratio is the cost of datalayer's trigger SQL itself; the gap
/// between it and the datalayer-sqlite row is the cost of the layer's own write
/// path. `--only rusqlite` selects it too.
pub struct RusqliteOnDlSchema;

impl Target for RusqliteOnDlSchema {
    fn name(&self) -> &str {
        "rusqlite-on-dl-schema"
    }

    fn supports(&self, w: Workload) -> bool {
        w == Workload::Changes
    }

    fn insert_rows(&self, place: &Place, rows: &[User], changes: bool) -> anyhow::Result<Duration> {
        let url = render(SQLITE_URL, place)?;
        runtime().block_on(async {
            let db = datalayer::builder(url).table::<DlUser>().connect().await?;
            if changes {
                db.enable_changes("users").await?;
            }
            db.close().await
        })?;
        let mut conn = open(&place.dir().join(SQLITE_FILE));
        let elapsed = insert_in_one_tx(
            &mut conn,
            r#"INSERT INTO "users" ("id", "name", "email", "age") VALUES (?1, ?2, ?3, ?4)"#,
            rows,
        )?;
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'",
            [],
            |r| r.get(0),
        )?;
        ensure!(
            n == if changes { 3 } else { 0 },
            "{n} triggers on datalayer's tables"
        );
        if changes {
            let n: i64 = conn.query_row("SELECT count(*) FROM _dl_cdc_log", [], |r| r.get(0))?;
            ensure!(
                n as usize == rows.len(),
                "{n} captured changes for {} rows",
                rows.len()
            );
        }
        Ok(elapsed)
    }
}
