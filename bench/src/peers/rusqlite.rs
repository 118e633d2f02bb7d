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

use crate::flights::FlightRow;
use crate::workloads::{CdcInserter, FlightsLoader, Target, User};

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

/// SQLite in `<dir>/bench.sqlite`: WAL, synchronous=FULL, one writer + read pool.
pub struct Rusqlite {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
}

impl Rusqlite {
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

impl Target for Rusqlite {
    fn name(&self) -> String {
        "rusqlite".into()
    }

    fn setup(dir: &Path, rows: &[User]) -> Self {
        let path = dir.join("bench.sqlite");
        let writer = open(&path);
        writer.execute_batch(USERS_SCHEMA).expect("sqlite schema");
        let readers = (0..READERS).map(|_| Mutex::new(open(&path))).collect();
        let this = Self {
            writer: Mutex::new(writer),
            readers,
        };
        for chunk in rows.chunks(10_000) {
            this.insert_all(chunk);
        }
        this
    }

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

    fn batch(&self, rows: &[User]) {
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
}

/// Workload 6 on raw rusqlite: one table with the flights columns, primary
/// key on `id` and the three secondary indexes, all rows in one transaction.
pub struct RusqliteFlights;

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

const INSERT_FLIGHT: &str = "INSERT INTO flights (
    id, year, month, day, dep_time, sched_dep_time, dep_delay, arr_time, sched_arr_time,
    arr_delay, carrier, flight, tailnum, origin, dest, air_time, distance, hour, minute,
    time_hour
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
          ?19, ?20)";

impl FlightsLoader for RusqliteFlights {
    fn name(&self) -> String {
        "rusqlite".into()
    }

    fn load(&self, dir: &Path, rows: &[FlightRow]) -> Duration {
        let mut conn = open(&dir.join("flights.sqlite"));
        conn.execute_batch(FLIGHTS_SCHEMA)
            .expect("sqlite flights schema");
        let t0 = Instant::now();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("sqlite begin");
        {
            let mut st = tx.prepare_cached(INSERT_FLIGHT).expect("sqlite prepare");
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
                ])
                .expect("sqlite insert flight");
            }
        }
        tx.commit().expect("sqlite commit");
        let elapsed = t0.elapsed();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM flights", [], |r| r.get(0))
            .expect("sqlite count");
        assert_eq!(n as usize, rows.len(), "flights row count after load");
        elapsed
    }
}

/// Workload 7 on raw rusqlite: the `users` table of workloads 1-5 and, for the
/// "with CDC" variant, a hand-written change log with the same layout as
/// datalayer-sqlite's `_dl_cdc_log` (AUTOINCREMENT position, index on
/// `(tbl, position)`) and one `AFTER INSERT` trigger appending
/// `json_array(NEW.id, NEW.name, NEW.email, NEW.age)`. (datalayer also installs
/// UPDATE and DELETE triggers, which an insert does not fire, and wraps each
/// value in a `CASE typeof(..) WHEN 'blob' THEN hex(..)` for BLOB columns.)
pub struct RusqliteCdc;

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

impl CdcInserter for RusqliteCdc {
    fn name(&self) -> String {
        "rusqlite".into()
    }

    fn insert(&self, dir: &Path, rows: &[User], cdc: bool) -> Duration {
        let mut conn = open(&dir.join("cdc.sqlite"));
        conn.execute_batch(USERS_SCHEMA).expect("sqlite schema");
        if cdc {
            conn.execute_batch(CDC_LOG_SCHEMA)
                .expect("sqlite cdc schema");
        }
        let t0 = Instant::now();
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
        let elapsed = t0.elapsed();
        if cdc {
            let n: i64 = conn
                .query_row("SELECT count(*) FROM cdc_log", [], |r| r.get(0))
                .expect("sqlite count");
            assert_eq!(n as usize, rows.len(), "one captured change per row");
        }
        elapsed
    }
}
