//! `datalayer::migrate` between every ordered pair of the local engines (etch, SQLite,
//! PostgreSQL on 127.0.0.1:5432 or `DATALAYER_PG_URL`, Redis on 127.0.0.1:6379 or
//! `DATALAYER_REDIS_URL`): a data set with every column type, NULLs, a composite key,
//! unique and conditional indexes, unicode and large values, copied and verified; a
//! copy under concurrent writes; a copy cut off and resumed; a tampered target found
//! and repaired; a target holding another schema refused. Every endpoint lives in its
//! own directory, schema or namespace, removed at the end (also when a test fails).

use datalayer::migrate::{Migration, Options};
use datalayer::{Db, Table};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Every column type, nullable and not.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "kinds")]
struct Kinds {
    #[pk]
    id: i64,
    b: bool,
    small: i16,
    medium: i32,
    single: f32,
    double: f64,
    text: String,
    bytes: Vec<u8>,
    maybe_int: Option<i64>,
    maybe_text: Option<String>,
    maybe_bytes: Option<Vec<u8>>,
    maybe_double: Option<f64>,
}

/// The typed columns: UUID, timestamp, date, decimal, JSON, indexed where orderable.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "typed")]
#[index(name = "by_uid", fields(uid), unique)]
#[index(name = "by_at_amount", fields(at, amount))]
struct Typed {
    #[pk]
    id: i64,
    uid: uuid::Uuid,
    at: chrono::DateTime<chrono::Utc>,
    day: Option<chrono::NaiveDate>,
    amount: rust_decimal::Decimal,
    doc: serde_json::Value,
}

fn typed(i: i64) -> Typed {
    Typed {
        id: i,
        uid: uuid::Uuid::from_u128(u128::from(i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        at: chrono::DateTime::from_timestamp_micros((i - 20) * 86_400_000_123).unwrap(),
        day: (i % 3 != 0).then(|| {
            chrono::NaiveDate::from_ymd_opt(1960 + i as i32, 2, 29 - (i % 2) as u32)
                .unwrap_or_default()
        }),
        amount: rust_decimal::Decimal::new((i - 20) * 12_345, (i % 6) as u32),
        doc: serde_json::json!({"i": i, "tags": ["a", i.to_string()], "z": null}),
    }
}

/// Unique and conditional indexes.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "accounts")]
#[index(name = "by_email", fields(email), unique)]
#[index(name = "active_by_age", fields(age), when = |a| a.active == true)]
#[index(name = "by_age_name", fields(age, name))]
struct Account {
    #[pk]
    id: i64,
    email: String,
    name: String,
    age: i32,
    active: bool,
}

/// A composite primary key with a text column first.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "members")]
struct Member {
    #[pk]
    org: String,
    #[pk]
    user_id: i64,
    role: String,
}

const ACCOUNTS: i64 = 2_500;

fn kinds(i: i64) -> Kinds {
    Kinds {
        id: i * 7 - 500,
        b: i % 2 == 0,
        small: (i % 300) as i16 - 150,
        medium: (i as i32) * -3,
        single: i as f32 / 3.0,
        double: if i == 3 { -0.0 } else { i as f64 * 1e-3 - 0.5 },
        text: format!("ünïcødé ✓ {i} 🦀"),
        bytes: if i == 5 {
            vec![0xAB; 200_000] // a large value
        } else {
            (0..(i % 40) as u8).collect()
        },
        maybe_int: (i % 3 != 0).then_some(i * 1_000_000_007),
        maybe_text: (i % 4 != 0).then(|| "x".repeat((i % 9) as usize)),
        maybe_bytes: (i % 5 != 0).then(|| vec![0, 255, i as u8]),
        maybe_double: (i % 6 != 0).then_some(f64::from(i as i32) / 7.0),
    }
}

fn account(i: i64) -> Account {
    Account {
        id: i,
        email: format!("user{i}@example.org"),
        name: format!("名前 {}", i % 97),
        age: (i % 70) as i32 + 18,
        active: i % 3 != 0,
    }
}

fn member(i: i64) -> Member {
    Member {
        org: ["", "acme", "Ωmega", "zeta"][(i % 4) as usize].to_owned(),
        user_id: i - 20,
        role: format!("r{}", i % 5),
    }
}

/// One endpoint: a fresh directory, file, schema or namespace; removed on drop.
struct Endpoint {
    url: String,
    _dir: Option<tempfile::TempDir>,
    cleanup: Option<Cleanup>,
}

enum Cleanup {
    PgSchema { base: String, schema: String },
    Redis(String),
}

fn suffix() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..10)
        .map(|_| (b'a' + r.random_range(0..26)) as char)
        .collect()
}

impl Endpoint {
    fn new(kind: &str) -> Endpoint {
        match kind {
            "etch" => {
                let d = tempfile::tempdir().unwrap();
                Endpoint {
                    url: format!("etch://{}", d.path().join("e").display()),
                    _dir: Some(d),
                    cleanup: None,
                }
            }
            "sqlite" => {
                let d = tempfile::tempdir().unwrap();
                Endpoint {
                    url: format!("sqlite://{}", d.path().join("s.db").display()),
                    _dir: Some(d),
                    cleanup: None,
                }
            }
            "pg" => {
                let base = std::env::var("DATALAYER_PG_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
                let schema = format!("dl_mig_{}", suffix());
                Endpoint {
                    url: datalayer::with_params(&base, &format!("schema={schema}")),
                    _dir: None,
                    cleanup: Some(Cleanup::PgSchema { base, schema }),
                }
            }
            "redis" => {
                let base = std::env::var("DATALAYER_REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
                let url = datalayer::with_params(&base, &format!("namespace=mig_{}", suffix()));
                Endpoint {
                    url: url.clone(),
                    _dir: None,
                    cleanup: Some(Cleanup::Redis(url)),
                }
            }
            other => panic!("unknown engine {other}"),
        }
    }

    async fn db(&self) -> Db {
        datalayer::builder(self.url.clone())
            .table::<Kinds>()
            .table::<Account>()
            .table::<Member>()
            .table::<Typed>()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", datalayer::redact(&self.url)))
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let Some(c) = self.cleanup.take() else {
            return;
        };
        // A runtime of its own: drop may run inside or outside the test's runtime.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                match c {
                    Cleanup::PgSchema { base, schema } => {
                        let base = base.split('?').next().unwrap_or(&base).to_owned();
                        if let Ok((client, conn)) =
                            tokio_postgres::connect(&base, tokio_postgres::NoTls).await
                        {
                            let task = tokio::spawn(conn);
                            let _ = client
                                .batch_execute(&format!(
                                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                                ))
                                .await;
                            drop(client);
                            let _ = task.await;
                        }
                    }
                    Cleanup::Redis(url) => {
                        if let Ok(o) = datalayer::redis::RedisOptions::from_url(&url) {
                            let _ = datalayer::redis::destroy_namespace(&o).await;
                        }
                    }
                }
            });
        })
        .join()
        .unwrap();
    }
}

async fn load(db: &Db) {
    let k: Vec<Kinds> = (0..60).map(kinds).collect();
    db.repo::<Kinds>().insert_many(&k).await.unwrap();
    let a: Vec<Account> = (0..ACCOUNTS).map(account).collect();
    for c in a.chunks(500) {
        db.repo::<Account>().insert_many(c).await.unwrap();
    }
    let m: Vec<Member> = (0..80).map(member).collect();
    db.repo::<Member>().insert_many(&m).await.unwrap();
    let t: Vec<Typed> = (0..TYPED).map(typed).collect();
    db.repo::<Typed>().insert_many(&t).await.unwrap();
}

const TYPED: i64 = 40;

/// Small chunks and buckets, so that a few thousand rows take many of each.
fn small() -> Options {
    Options {
        max_chunk_rows: 300,
        bucket_rows: 250,
        ..Options::default()
    }
}

/// Every row of every table on `a` and `b` read back through the typed API: equal.
async fn assert_same_rows(a: &Db, b: &Db, what: &str) {
    let all = |db: &Db| {
        let db = db.clone();
        async move {
            let mut k = db.repo::<Kinds>().scan().all().await.unwrap();
            k.sort_by_key(|r| r.id);
            let mut ac = db.repo::<Account>().scan().all().await.unwrap();
            ac.sort_by_key(|r| r.id);
            let mut m = db.repo::<Member>().scan().all().await.unwrap();
            m.sort_by(|x, y| (&x.org, x.user_id).cmp(&(&y.org, y.user_id)));
            let t = db.repo::<Typed>().find("by_at_amount").all().await.unwrap();
            (k, ac, m, t)
        }
    };
    let (x, y) = (all(a).await, all(b).await);
    assert_eq!(x.0.len(), y.0.len(), "{what}: kinds");
    // -0.0 == 0.0 (IEEE 754), and SQLite keeps no sign of zero.
    assert_eq!(x.0, y.0, "{what}: kinds");
    assert_eq!(x.1, y.1, "{what}: accounts");
    assert_eq!(x.2, y.2, "{what}: members");
    assert_eq!(x.3.len(), TYPED as usize, "{what}: typed");
    assert_eq!(x.3, y.3, "{what}: typed, in index order");
}

const ENGINES: [&str; 4] = ["etch", "sqlite", "pg", "redis"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pair_copies_and_verifies_equal() {
    for from in ENGINES {
        let src = Endpoint::new(from);
        let source = src.db().await;
        load(&source).await;
        for to in ENGINES.iter().filter(|t| **t != from) {
            let what = format!("{from} -> {to}");
            let dst = Endpoint::new(to);
            let target = datalayer::connect(dst.url.clone()).await.unwrap();
            let m = Migration::new(&source, &target).options(small());
            let copied = m.copy().await.unwrap_or_else(|e| panic!("{what}: {e}"));
            let rows: u64 = copied.tables.iter().map(|t| t.rows).sum();
            assert_eq!(
                rows,
                60 + ACCOUNTS as u64 + 80 + TYPED as u64,
                "{what}: {copied:?}"
            );
            assert!(copied.tables.iter().any(|t| t.chunks > 5), "{what}: chunks");
            let report = m.verify().await.unwrap();
            assert!(report.is_equal(), "{what}: {report:#?}");
            let accounts = report
                .tables
                .iter()
                .find(|t| t.table == "accounts")
                .unwrap();
            assert!(
                accounts.buckets >= 10,
                "{what}: {} buckets",
                accounts.buckets
            );
            assert_eq!(
                accounts
                    .indexes
                    .iter()
                    .find(|i| i.index == "active_by_age")
                    .unwrap()
                    .target,
                (0..ACCOUNTS).filter(|i| i % 3 != 0).count() as u64,
                "{what}: the conditional index"
            );
            // The target, opened with the application's types, answers as the source.
            target.close().await.unwrap();
            drop((m, target));
            let typed = dst.db().await;
            assert_same_rows(&source, &typed, &what).await;
            let by_email = typed
                .repo::<Account>()
                .find("by_email")
                .eq("user77@example.org")
                .all()
                .await
                .unwrap();
            assert_eq!(by_email, vec![account(77)], "{what}: unique index");
            typed.close().await.unwrap();
        }
        source.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_target_names_the_range_and_repair_mends_it() {
    for (from, to) in [("etch", "sqlite"), ("sqlite", "pg"), ("pg", "redis")] {
        let what = format!("{from} -> {to}");
        let (src, dst) = (Endpoint::new(from), Endpoint::new(to));
        let (source, target) = (src.db().await, dst.db().await);
        load(&source).await;
        let m = Migration::new(&source, &target).options(small());
        m.copy().await.unwrap();
        assert!(m.verify().await.unwrap().is_equal(), "{what}");
        // One changed value, one missing row, one extra row.
        let mut a = account(1_000);
        a.name.push('!');
        target.repo::<Account>().update(&a).await.unwrap();
        target.repo::<Account>().delete(2_000).await.unwrap();
        let mut extra = account(ACCOUNTS + 5);
        extra.email = "extra@example.org".into();
        target.repo::<Account>().insert(&extra).await.unwrap();
        let report = m.verify().await.unwrap();
        assert!(!report.is_equal(), "{what}");
        let bad = &report
            .tables
            .iter()
            .find(|t| t.table == "accounts")
            .unwrap()
            .mismatched;
        assert_eq!(bad.len(), 3, "{what}: {bad:#?}");
        let holds = |id: i64| {
            bad.iter().any(|r| {
                r.after.as_ref().is_none_or(|k| k[0].as_i64().unwrap() < id)
                    && r.upto.as_ref().is_none_or(|k| id <= k[0].as_i64().unwrap())
            })
        };
        assert!(
            holds(1_000) && holds(2_000) && holds(ACCOUNTS + 5),
            "{what}: {bad:#?}"
        );
        assert!(m.repair(&report).await.unwrap() > 0);
        assert!(m.verify().await.unwrap().is_equal(), "{what}: after repair");
        assert_same_rows(&source, &target, &what).await;
    }
}

/// A write's result: fine, or a row that is gone or a unique email taken by an earlier
/// write of the same loop; any other error fails the test.
fn expected(r: datalayer::Result<()>) {
    if let Err(e) = r {
        assert!(e.is_not_found() || e.is_already_exists(), "{e}");
    }
}

/// A writer through `db` until `stop`: inserts past the end, updates and deletes across
/// the key space, and an email moved from one row to another (the unique index).
/// Returns the stop flag, the count of writes and the task.
fn concurrent_writer(
    db: &Db,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    Arc<AtomicU64>,
    tokio::task::JoinHandle<()>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn({
        let (db, stop, writes) = (db.clone(), stop.clone(), writes.clone());
        async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let accounts = db.repo::<Account>();
                let id = (i * 37) % ACCOUNTS;
                match i % 4 {
                    0 => accounts.insert(&account(ACCOUNTS + 10 + i)).await.unwrap(),
                    1 => {
                        let mut a = account(id);
                        a.age = 99;
                        a.active = !a.active;
                        expected(accounts.update(&a).await);
                    }
                    2 => {
                        let _ = accounts.delete(id).await.unwrap();
                    }
                    _ => {
                        let _ = accounts.delete(id + 1).await.unwrap();
                        let mut a = account(ACCOUNTS + 10 + i - 3);
                        a.email = format!("user{}@example.org", id + 1);
                        expected(accounts.upsert(&a).await);
                    }
                }
                writes.fetch_add(1, Ordering::Relaxed);
                i += 1;
                // Paced (at most ~2,000 writes/s): a writer free to outrun the
                // copy on a loaded machine would keep it from ever reaching the
                // table's end.
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
    });
    (stop, writes, writer)
}

/// Follows `m` until caught up, stops the [`concurrent_writer`], follows the rest and
/// checks the two sides equal (checksums and every row).
async fn finish_under_writes(
    m: &Migration,
    (stop, writes, writer): (
        Arc<std::sync::atomic::AtomicBool>,
        Arc<AtomicU64>,
        tokio::task::JoinHandle<()>,
    ),
    what: &str,
) {
    m.follow_until_caught_up().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(
        writes.load(Ordering::Relaxed) > 20,
        "{what}: too few concurrent writes"
    );
    m.follow_until_caught_up().await.unwrap();
    let report = m.verify().await.unwrap();
    assert!(report.is_equal(), "{what}: {report:#?}");
    assert_same_rows(m.source(), m.target(), what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_under_concurrent_writes_then_follow_ends_equal() {
    for (from, to) in [
        ("etch", "pg"),
        ("sqlite", "redis"),
        ("pg", "sqlite"),
        ("redis", "etch"),
    ] {
        let what = format!("{from} -> {to}");
        let (src, dst) = (Endpoint::new(from), Endpoint::new(to));
        let (source, target) = (src.db().await, dst.db().await);
        load(&source).await;
        let (stop, writes, writer) = concurrent_writer(&source);
        let m = Migration::new(&source, &target).options(small());
        m.copy().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        finish_under_writes(&m, (stop, writes, writer), &what).await;
    }
}

/// A table over the split threshold is copied in parallel key ranges while a writer
/// inserts past its end, updates, deletes and moves unique emails between rows; a copy
/// cut off mid-way resumes every range; the result verifies equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_table_is_copied_in_parallel_key_ranges() {
    let split = || Options {
        split_rows: 1_000,
        parallel_ranges: 3,
        ..small()
    };
    for (from, to) in [("sqlite", "pg"), ("redis", "etch"), ("etch", "redis")] {
        let what = format!("{from} -> {to}");
        let (src, dst) = (Endpoint::new(from), Endpoint::new(to));
        let (source, target) = (src.db().await, dst.db().await);
        load(&source).await;
        let (stop, writes, writer) = concurrent_writer(&source);
        // Cut off after the first round of the accounts' spans, then resumed.
        let notify = Arc::new(tokio::sync::Notify::new());
        let began = std::time::Instant::now();
        let seen = Arc::new(std::sync::Mutex::new(None));
        let m = Migration::new(&source, &target)
            .options(split())
            .on_progress({
                let (notify, seen) = (notify.clone(), seen.clone());
                move |p| {
                    if p.table == "accounts" {
                        *seen.lock().unwrap() = Some((p.total, p.rows, p.rate, p.eta, p.lag));
                        notify.notify_one();
                    }
                }
            });
        tokio::select! {
            biased;
            () = notify.notified() => {}
            r = m.copy() => panic!("{what}: the copy ended before its cut: {r:?}"),
        }
        // The progress report: the table's size when its copy began, a rate, an ETA
        // from them, and a lag no longer than the run.
        let (total, rows, rate, eta, lag) = seen.lock().unwrap().expect("a report");
        assert!(
            total >= ACCOUNTS as u64 - 100 && rows > 0,
            "{what}: {total} {rows}"
        );
        assert!(rate > 0.0 && eta.is_some(), "{what}: {rate} {eta:?}");
        assert!(lag <= began.elapsed(), "{what}: {lag:?}");
        let status = m.status().await.unwrap();
        let accounts = status.iter().find(|(t, _)| t == "accounts").unwrap();
        assert!(
            accounts
                .1
                .is_some_and(|s| !s.copied && s.rows > 0 && s.ranges == 3),
            "{what}: a split copy under way shows its progress: {status:?}"
        );
        let m = Migration::new(&source, &target).options(split());
        let copied = m.copy().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let accounts = copied
            .tables
            .iter()
            .find(|t| t.table == "accounts")
            .unwrap();
        assert!(
            accounts.rows < ACCOUNTS as u64,
            "{what}: resumed, not restarted: {accounts:?}"
        );
        finish_under_writes(&m, (stop, writes, writer), &what).await;
        let status = m.status().await.unwrap();
        assert!(
            status.iter().all(|(_, s)| s.is_some_and(|s| s.copied)),
            "{what}: {status:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_cut_off_anywhere_resumes_to_the_same_result() {
    for (from, to) in [("sqlite", "etch"), ("etch", "pg"), ("pg", "redis")] {
        let what = format!("{from} -> {to}");
        let (src, dst) = (Endpoint::new(from), Endpoint::new(to));
        let source = src.db().await;
        load(&source).await;
        // Cut the copy off after 1, 3 and 2 chunks (the future dropped mid-way, as a
        // kill would), each time from a fresh target connection.
        for cut in [1u64, 3, 2] {
            let target = datalayer::connect(dst.url.clone()).await.unwrap();
            let chunks = Arc::new(AtomicU64::new(0));
            let notify = Arc::new(tokio::sync::Notify::new());
            let m = Migration::new(&source, &target)
                .options(small())
                .on_progress({
                    let (chunks, notify) = (chunks.clone(), notify.clone());
                    move |_| {
                        if chunks.fetch_add(1, Ordering::SeqCst) + 1 == cut {
                            notify.notify_one();
                        }
                    }
                });
            tokio::select! {
                biased;
                () = notify.notified() => {}
                r = m.copy() => panic!("{what}: the copy ended before its cut: {r:?}"),
            }
            target.close().await.unwrap();
        }
        let target = dst.db().await;
        let m = Migration::new(&source, &target).options(small());
        let resumed = m.copy().await.unwrap();
        let accounts = resumed
            .tables
            .iter()
            .find(|t| t.table == "accounts")
            .unwrap();
        assert!(
            accounts.rows < ACCOUNTS as u64,
            "{what}: resumed, not restarted: {accounts:?}"
        );
        assert!(m.verify().await.unwrap().is_equal(), "{what}");
        assert_same_rows(&source, &target, &what).await;
        // A finished copy run again copies nothing.
        let again = m.copy().await.unwrap();
        assert!(
            again.tables.iter().all(|t| t.already_copied && t.rows == 0),
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_holding_another_schema_is_refused_and_the_source_untouched() {
    /// `accounts` with one column less.
    #[derive(Table, Clone, Debug, PartialEq)]
    #[table(name = "accounts")]
    struct OtherAccount {
        #[pk]
        id: i64,
        email: String,
    }
    let (src, dst) = (Endpoint::new("etch"), Endpoint::new("sqlite"));
    let source = src.db().await;
    load(&source).await;
    let target = datalayer::builder(dst.url.clone())
        .table::<OtherAccount>()
        .connect()
        .await
        .unwrap();
    let e = Migration::new(&source, &target).copy().await.unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    assert!(e.to_string().contains("accounts"), "{e}");
    assert_eq!(target.repo::<OtherAccount>().count().await.unwrap(), 0);
    assert_eq!(
        source.repo::<Account>().count().await.unwrap(),
        ACCOUNTS as u64
    );
    // An unknown table is named.
    let e = Migration::new(&source, &target)
        .tables(["nope"])
        .copy()
        .await
        .unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("nope"), "{e}");
    // A row over the target's value limit (Redis with max_value_bytes=100000; the
    // kinds table holds a 200,000-byte value): a clear error naming the limit, and
    // the source untouched.
    let small_redis = Endpoint::new("redis");
    let url = datalayer::with_params(&small_redis.url, "max_value_bytes=100000");
    let target = datalayer::connect(url).await.unwrap();
    let e = Migration::new(&source, &target)
        .tables(["kinds"])
        .copy()
        .await
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    assert!(e.to_string().contains("exceeds the engine's limit"), "{e}");
    assert_eq!(source.repo::<Kinds>().count().await.unwrap(), 60);
    assert_eq!(
        source.repo::<Kinds>().get(5 * 7 - 500).await.unwrap(),
        Some(kinds(5))
    );
    // An unreachable target: a connection error, before anything is read.
    let e = datalayer::connect("postgres://postgres@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert!(
        e.is_retryable() || e.kind() == datalayer::ErrorKind::ConnectionLost,
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_fences_the_source_and_every_acknowledged_write_is_on_the_target() {
    use datalayer::migrate::CutoverOptions;
    for (from, to) in [
        ("etch", "sqlite"),
        ("sqlite", "pg"),
        ("pg", "redis"),
        ("redis", "etch"),
    ] {
        let what = format!("{from} -> {to}");
        let (src, dst) = (Endpoint::new(from), Endpoint::new(to));
        let (source, target) = (src.db().await, dst.db().await);
        load(&source).await;
        // A writer through the source `Db` until the fence turns it away: every write
        // it saw acknowledged must be on the target after the cut-over.
        let acked = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
        let writer = tokio::spawn({
            let (db, acked) = (source.clone(), acked.clone());
            async move {
                for i in 0.. {
                    let id = ACCOUNTS + 100 + i;
                    match db.repo::<Account>().insert(&account(id)).await {
                        Ok(()) => acked.lock().unwrap().push(id),
                        Err(e) => return e,
                    }
                    if i % 2 == 0 {
                        let _ = db.repo::<Account>().delete(i * 7).await;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                unreachable!()
            }
        });
        let m = Migration::new(&source, &target).options(small());
        m.copy().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        m.follow_until_caught_up().await.unwrap();
        let cut = m
            .cutover(CutoverOptions {
                writer_wait: Duration::from_millis(200),
                ..CutoverOptions::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let refused = tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .unwrap_or_else(|_| panic!("{what}: the fenced source still takes writes"))
            .unwrap();
        assert_eq!(
            refused.kind(),
            datalayer::ErrorKind::Timeout,
            "{what}: {refused}"
        );
        assert!(refused.to_string().contains("fenced"), "{what}: {refused}");
        assert!(cut.checked_before > 0, "{what}: {cut:?}");
        eprintln!("{what}: {cut:?}");
        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() > 5, "{what}: {} writes", acked.len());
        let on_target = target
            .repo::<Account>()
            .get_many(acked.iter().copied())
            .await
            .unwrap();
        assert!(
            on_target.iter().all(Option::is_some),
            "{what}: an acknowledged write is missing"
        );
        let report = m.verify().await.unwrap();
        assert!(report.is_equal(), "{what}: {report:#?}");
        // Reads of the fenced source go on. Dropping the fence (a cut-over rolled
        // back) lets writes in again; sealing it (finished) refuses them for good.
        assert!(source.repo::<Account>().count().await.unwrap() > 0);
        if from == "etch" || from == "pg" {
            drop(cut);
            source.repo::<Account>().insert(&account(-1)).await.unwrap();
        } else {
            // A writer waiting on the fence when it is sealed is refused, not let in.
            let waiting = tokio::spawn({
                let db = source.clone();
                async move { db.repo::<Account>().insert(&account(-2)).await }
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            cut.fence.seal();
            let e = waiting.await.unwrap().unwrap_err();
            assert_eq!(e.code(), Some(datalayer::fence::SEALED), "{what}: {e}");
            assert!(e.is_retryable(), "{what}: nothing applied: {e}");
            let e = source
                .repo::<Account>()
                .insert(&account(-1))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Some(datalayer::fence::SEALED), "{what}: {e}");
            assert_eq!(
                source.repo::<Account>().get(-2).await.unwrap(),
                None,
                "{what}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_rolls_back_by_following_the_target_in_reverse() {
    use datalayer::migrate::CutoverOptions;
    for (from, to) in [("etch", "pg"), ("sqlite", "redis"), ("redis", "sqlite")] {
        let what = format!("{from} -> {to} -> back");
        let (src, dst) = (Endpoint::new(from), Endpoint::new(to));
        let (source, target) = (src.db().await, dst.db().await);
        load(&source).await;
        let m = Migration::new(&source, &target).options(small());
        m.copy().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let cut = m
            .cutover(CutoverOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let back = m.reverse().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        // The application has moved: the source is sealed for it.
        cut.fence.seal();
        // It writes to the target: inserts, updates, deletes, while the way back
        // follows.
        let writes = async {
            for i in 0..300 {
                let accounts = target.repo::<Account>();
                accounts.insert(&account(ACCOUNTS + i)).await.unwrap();
                let mut a = account(i);
                a.age = -(i as i32);
                accounts.upsert(&a).await.unwrap();
                accounts.delete(ACCOUNTS - 1 - i).await.unwrap();
                if i == 150 {
                    back.follow_until_caught_up().await.unwrap();
                }
            }
        };
        writes.await;
        back.follow_until_caught_up()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let report = back.verify().await.unwrap();
        assert!(report.is_equal(), "{what}: {report:#?}");
        assert_same_rows(&source, &target, &what).await;
        // Roll back: the target is fenced and drained into the source, through the
        // way back's own handle, which the sealed fence does not hold.
        let writer = target.clone();
        let rollback = back
            .cutover(CutoverOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{what}: rollback: {e}"));
        let e = tokio::time::timeout(Duration::from_secs(30), async {
            writer.repo::<Account>().insert(&account(-5)).await
        })
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(e.kind(), datalayer::ErrorKind::Timeout, "{what}: {e}");
        let app = back.target();
        app.repo::<Account>().insert(&account(-6)).await.unwrap();
        assert_eq!(
            source.repo::<Account>().get(-6).await.unwrap(),
            Some(account(-6)),
            "{what}: the source's own handle reads what the way back wrote"
        );
        assert_eq!(
            source.repo::<Account>().get(ACCOUNTS + 299).await.unwrap(),
            Some(account(ACCOUNTS + 299))
        );
        drop(rollback);
    }
}

/// Past `max_touched_keys` distinct changed rows, a cut-over compares the table whole:
/// a target row changed behind the migration's back (no change touched it) fails the
/// cut-over, and after a repair the cut-over goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_past_the_touched_key_cap_compares_whole_tables() {
    use datalayer::migrate::CutoverOptions;
    let (src, dst) = (Endpoint::new("etch"), Endpoint::new("sqlite"));
    let (source, target) = (src.db().await, dst.db().await);
    load(&source).await;
    let m = Migration::new(&source, &target).options(Options {
        max_touched_keys: 10,
        ..small()
    });
    m.copy().await.unwrap();
    for i in 0..50 {
        let mut a = account(i * 11);
        a.age = 77;
        source.repo::<Account>().update(&a).await.unwrap();
    }
    let mut behind = account(ACCOUNTS - 2);
    behind.name = "changed on the target".into();
    target.repo::<Account>().update(&behind).await.unwrap();
    let e = m.cutover(CutoverOptions::default()).await.unwrap_err();
    assert!(
        e.is_corrupted() && e.to_string().contains("accounts"),
        "{e}"
    );
    // The fence fell with the error; mend the target and cut over again.
    source.repo::<Account>().insert(&account(-3)).await.unwrap();
    let report = m.verify().await.unwrap();
    assert!(!report.is_equal());
    m.repair(&report).await.unwrap();
    for i in 0..20 {
        let mut a = account(i * 13);
        a.active = !a.active;
        source.repo::<Account>().update(&a).await.unwrap();
    }
    let cut = m.cutover(CutoverOptions::default()).await.unwrap();
    assert!(cut.verified_rows >= ACCOUNTS as u64 - 10, "{cut:?}");
    assert!(m.verify().await.unwrap().is_equal());
}

/// Starts a consumer of group `g` on `topic` that records every payload it handles;
/// returns its stop signal and task.
fn consume(
    db: &Db,
    topic: &str,
    log: &Arc<std::sync::Mutex<Vec<String>>>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<datalayer::Result<()>>,
) {
    use datalayer::outbox::DbOutbox;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let log = log.clone();
    let task = tokio::spawn(
        db.consumer("g", topic)
            .poll_interval(Duration::from_millis(10))
            .lease_ttl(Duration::from_millis(300))
            .run(
                move |ev: datalayer::Event| {
                    let log = log.clone();
                    async move {
                        log.lock()
                            .unwrap()
                            .push(String::from_utf8(ev.payload).unwrap());
                        Ok(())
                    }
                },
                async move {
                    let _ = rx.await;
                },
            ),
    );
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_moves_with_the_data_and_a_consumer_goes_on_on_the_target() {
    use datalayer::migrate::CutoverOptions;
    use datalayer::outbox::TxOutbox;
    for (from, to) in [
        ("etch", "pg"),
        ("sqlite", "redis"),
        ("pg", "etch"),
        ("redis", "sqlite"),
    ] {
        let what = format!("{from} -> {to}");
        let (src, dst) = (Endpoint::new(from), Endpoint::new(to));
        let (source, target) = (src.db().await, dst.db().await);
        load(&source).await;
        datalayer::outbox::create_topic(&source, "moves", 4)
            .await
            .unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        // A consumer on the source handles (and checkpoints) part of the events.
        let (stop, consumer) = consume(&source, "moves", &log);
        // Emits, in transactions with row writes, during the copy and the follow.
        let emitted = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let emitter = tokio::spawn({
            let (db, emitted, done) = (source.clone(), emitted.clone(), done.clone());
            async move {
                for i in 0.. {
                    if done.load(Ordering::Relaxed) {
                        return;
                    }
                    let p = format!("e{i}");
                    // Retried on `Conflict`, as an application does (optimistic
                    // engines: the consumer's checkpoints touch the same rows).
                    let mut r = Err(datalayer::Error::conflict("not run"));
                    for _ in 0..10 {
                        r = db
                            .tx(async |tx| {
                                tx.repo::<Account>().upsert(&account(ACCOUNTS + i)).await?;
                                tx.emit("moves", format!("k{}", i % 7), p.clone()).await?;
                                Ok(())
                            })
                            .await;
                        if !r.as_ref().is_err_and(datalayer::Error::is_conflict) {
                            break;
                        }
                    }
                    match r {
                        Ok(()) => emitted.lock().unwrap().push(p),
                        // The cut-over's fence: the emitter stops.
                        Err(e) if e.kind() == datalayer::ErrorKind::Timeout => return,
                        Err(e) => panic!("emit: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
        let m = Migration::new(&source, &target).options(small());
        m.copy().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        m.follow_until_caught_up().await.unwrap();
        // The source's consumer stops before the cut-over (its checkpoints move too).
        let _ = stop.send(());
        consumer.await.unwrap().unwrap();
        let cut = m
            .cutover(CutoverOptions {
                writer_wait: Duration::from_millis(100),
                ..CutoverOptions::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        done.store(true, Ordering::Relaxed);
        emitter.await.unwrap();
        assert!(m.verify().await.unwrap().is_equal(), "{what}");
        let before = log.lock().unwrap().len();
        // The same group on the target delivers every event the source acknowledged.
        let (stop, consumer) = consume(&target, "moves", &log);
        let want: std::collections::HashSet<String> =
            emitted.lock().unwrap().iter().cloned().collect();
        assert!(want.len() > 10, "{what}: {} events", want.len());
        let t0 = std::time::Instant::now();
        loop {
            let got: std::collections::HashSet<String> =
                log.lock().unwrap().iter().cloned().collect();
            if want.is_subset(&got) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{what}: {} of {} events delivered",
                want.intersection(&got).count(),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop.send(());
        consumer.await.unwrap().unwrap();
        let after = log.lock().unwrap().len() - before;
        eprintln!("{what}: {before} events on the source, {after} on the target; {cut:?}");
        assert!(after > 0, "{what}: the target's consumer delivered nothing");
    }
}
