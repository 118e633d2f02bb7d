//! The PostgreSQL outbox driver: LISTEN/NOTIFY wake-ups (delivered at commit, never at
//! rollback) and `SKIP LOCKED` claims, against the server of `DATALAYER_PG_URL`.

mod common;

use common::Ns;
use datalayer::outbox::{self, Claim, ConsumerBuilder, Driver, Event};
use datalayer::prelude::*;
use datalayer::{Db, Result};
use datalayer_pg::{PgDriver, PgEngine};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Deliberately long: a consumer that reacts sooner was woken by a notification.
const LONG_POLL: Duration = Duration::from_secs(5);

type Log = Arc<Mutex<Vec<(Instant, String, Event)>>>;

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<()>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn start(b: ConsumerBuilder, worker: &str, log: &Log) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let log = log.clone();
    let name = worker.to_owned();
    let task = tokio::spawn(b.worker_id(worker).run(
        move |ev: Event| {
            let log = log.clone();
            let name = name.clone();
            async move {
                log.lock().unwrap().push((Instant::now(), name, ev));
                Ok(())
            }
        },
        async move {
            let _ = stopped.await;
        },
    ));
    Running { stop, task }
}

async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn plain_db(engine: &PgEngine) -> Db {
    Db::with_engine(Arc::new(engine.clone()))
        .outbox()
        .connect()
        .await
        .unwrap()
}

async fn emit_commit(db: &Db, topic: &str, key: &str, payload: &str) {
    let tx = db.begin().await.unwrap();
    tx.emit(topic, key, payload.to_owned()).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_consumer_is_woken_by_a_commit() {
    let ns = Ns::new();
    let db = ns.db("").await;
    outbox::create_topic(&db, "wake", 4).await.unwrap();
    let log = Log::default();
    let c = start(
        db.consumer("g", "wake").poll_interval(LONG_POLL),
        "w1",
        &log,
    );
    // Let it claim its partitions and go idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
        let t0 = Instant::now();
        emit_commit(&db, "wake", key, key).await;
        wait_until("the committed event", LONG_POLL * 2, || {
            log.lock().unwrap().len() > i
        })
        .await;
        let took = log.lock().unwrap()[i].0 - t0;
        assert!(
            took < Duration::from_millis(1500),
            "event {i} delivered after {took:?}: not woken by NOTIFY (poll interval {LONG_POLL:?})"
        );
        // Idle again between events.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    c.stop().await;
    ns.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_emit_wakes_nobody_and_delivers_nothing() {
    let ns = Ns::new();
    let engine = ns.engine("").await;
    let db = plain_db(&engine).await;
    outbox::create_topic(&db, "rb", 2).await.unwrap();

    // The driver alone: the first wait returns at once (listening just started).
    let d = PgDriver::new(&engine);
    let t = Instant::now();
    d.wait(&db, "rb", LONG_POLL).await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // A rolled-back emit: the wait runs to its timeout.
    let db2 = db.clone();
    let rollback = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let tx = db2.begin().await.unwrap();
        tx.emit("rb", "k", "never".to_owned()).await.unwrap();
        tx.rollback().await.unwrap();
    });
    let t = Instant::now();
    d.wait(&db, "rb", Duration::from_millis(1500)).await;
    rollback.await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "woken after {:?} by a rolled-back emit",
        t.elapsed()
    );

    // A committed emit: woken well before the timeout.
    let db2 = db.clone();
    let commit = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        emit_commit(&db2, "rb", "k", "kept").await;
    });
    let t = Instant::now();
    d.wait(&db, "rb", LONG_POLL).await;
    commit.await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "not woken by a commit: {:?}",
        t.elapsed()
    );

    // A consumer: the rolled-back event is never delivered, the committed one is.
    let log = Log::default();
    let c = start(db.consumer("g", "rb").poll_interval(LONG_POLL), "w1", &log);
    wait_until("the committed event", LONG_POLL * 2, || {
        !log.lock().unwrap().is_empty()
    })
    .await;
    let tx = db.begin().await.unwrap();
    tx.emit("rb", "k", "rolled back".to_owned()).await.unwrap();
    tx.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    c.stop().await;
    let got: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, e)| String::from_utf8_lossy(&e.payload).into_owned())
        .collect();
    assert_eq!(got, vec!["kept"]);
    let stored: Vec<Vec<u8>> = outbox::stored_events(&db, "rb")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload)
        .collect();
    assert_eq!(stored, vec![b"kept".to_vec()]);
    ns.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_skip_locked_rows_and_are_disjoint() {
    let ns = Ns::new();
    let engine = ns.engine("").await;
    let db = plain_db(&engine).await;
    let raw = ns.raw().await;
    let groups = format!("\"{}\"._dl_outbox_groups", ns.schema);
    raw.batch_execute(&format!(
        "INSERT INTO {groups} (grp, topic, part, high, pending, lease_owner, lease_until_us, fencing) \
         SELECT 'g', 't', p, 0, '\\x'::bytea, '', 0, 0 FROM generate_series(0, 63) p"
    ))
    .await
    .unwrap();
    let now = outbox_now_us();

    // Another transaction holds partitions 0..8 locked: claims skip them, without
    // waiting.
    let mut locker = ns.raw().await;
    let ltx = locker.transaction().await.unwrap();
    ltx.batch_execute(&format!(
        "SELECT 1 FROM {groups} WHERE grp = 'g' AND topic = 't' AND part < 8 FOR UPDATE"
    ))
    .await
    .unwrap();

    let drivers: Vec<Arc<PgDriver>> = (0..4).map(|_| Arc::new(PgDriver::new(&engine))).collect();
    let claims = drivers.iter().enumerate().map(|(i, d)| {
        let d = d.clone();
        let db = db.clone();
        async move {
            let worker = format!("w{i}");
            let req = Claim {
                group: "g",
                topic: "t",
                worker: &worker,
                want: 20,
                now_us: now,
                until_us: now + 60_000_000,
            };
            (worker.clone(), d.claim(&db, &req).await.unwrap())
        }
    });
    let got = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(claims))
        .await
        .expect("claims blocked on locked rows instead of skipping them");
    ltx.rollback().await.unwrap();

    let mut taken: BTreeMap<u32, String> = BTreeMap::new();
    for (worker, parts) in &got {
        for &(part, fencing) in parts {
            assert_eq!(fencing, 1, "first acquisition stores fencing 1");
            assert!(part >= 8, "{worker} took locked partition {part}");
            if let Some(other) = taken.insert(part, worker.clone()) {
                panic!("partition {part} claimed by both {other} and {worker}");
            }
        }
    }
    assert_eq!(taken.len(), 56, "every unlocked partition taken: {got:?}");
    // The stored leases are the returned ones.
    for row in raw
        .query(
            &format!("SELECT part, lease_owner, fencing FROM {groups} WHERE part >= 8"),
            &[],
        )
        .await
        .unwrap()
    {
        let part: i32 = row.get(0);
        let owner: String = row.get(1);
        let fencing: i64 = row.get(2);
        assert_eq!(Some(&owner), taken.get(&(part as u32)));
        assert_eq!(fencing, 1);
    }
    // Leases still valid are not taken again; the locked ones now are, fencing as the
    // generic claim (previous + 1).
    let again = drivers[0]
        .claim(
            &db,
            &Claim {
                group: "g",
                topic: "t",
                worker: "w9",
                want: 100,
                now_us: now + 1,
                until_us: now + 60_000_000,
            },
        )
        .await
        .unwrap();
    assert_eq!(again, (0..8).map(|p| (p, 1)).collect::<Vec<_>>());
    // Expired leases are taken over with the next fencing token.
    let later = drivers[1]
        .claim(
            &db,
            &Claim {
                group: "g",
                topic: "t",
                worker: "w8",
                want: 3,
                now_us: now + 61_000_000,
                until_us: now + 120_000_000,
            },
        )
        .await
        .unwrap();
    assert_eq!(later, vec![(0, 2), (1, 2), (2, 2)]);
    ns.drop_schema().await;
}

fn outbox_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_partitions_and_lose_nothing() {
    let ns = Ns::new();
    let db = ns.db("").await;
    outbox::create_topic(&db, "pair", 8).await.unwrap();
    let log = Log::default();
    let fast = |w: &str| {
        start(
            db.consumer("g", "pair")
                .poll_interval(LONG_POLL)
                .lease_ttl(Duration::from_millis(900))
                .concurrency(4),
            w,
            &log,
        )
    };
    let (c1, c2) = (fast("w1"), fast("w2"));
    let raw = ns.raw().await;
    let groups = format!("\"{}\"._dl_outbox_groups", ns.schema);
    let mut sent = HashSet::new();
    for round in 0..20 {
        let tx = db.begin().await.unwrap();
        for k in 0..10 {
            let p = format!("{round}:{k}");
            tx.emit("pair", format!("key-{k}"), p.clone())
                .await
                .unwrap();
            sent.insert(p);
        }
        tx.commit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until("every event", Duration::from_secs(20), || {
        let got: HashSet<String> = log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, e)| String::from_utf8_lossy(&e.payload).into_owned())
            .collect();
        got == sent
    })
    .await;
    // Both workers hold a share, and no partition has two owners.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = raw
            .query(
                &format!(
                    "SELECT lease_owner, count(*) FROM {groups} \
                     WHERE grp = 'g' AND topic = 'pair' GROUP BY 1 ORDER BY 1"
                ),
                &[],
            )
            .await
            .unwrap();
        let shares: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        if shares == vec![("w1".to_owned(), 4), ("w2".to_owned(), 4)] {
            break;
        }
        assert!(Instant::now() < end, "partitions not shared: {shares:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c1.stop().await;
    c2.stop().await;
    let log = log.lock().unwrap().clone();
    let workers: HashSet<&str> = log.iter().map(|(_, w, _)| w.as_str()).collect();
    assert!(!workers.is_empty());
    // At least once, and per partition in seq order for each worker's run.
    let mut per_part: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for (_, _, e) in log.iter() {
        if seen.insert(e.id.clone()) {
            per_part.entry(e.partition).or_default().push(e.seq);
        }
    }
    assert_eq!(seen.len(), sent.len());
    for (p, v) in per_part {
        let expect: Vec<i64> = (1..=v.len() as i64).collect();
        assert_eq!(v, expect, "partition {p} first deliveries in seq order");
    }
    ns.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_per_partition_with_the_pg_driver() {
    let ns = Ns::new();
    let db = ns.db("").await;
    outbox::create_topic(&db, "fifo", 4).await.unwrap();
    let keys = ["a", "b", "c", "d", "e", "f"];
    let mut n = 0;
    let produce = |round: usize| {
        let db = db.clone();
        async move {
            let tx = db.begin().await.unwrap();
            for k in keys {
                for j in 0..2 {
                    tx.emit("fifo", k, format!("{k}:{:03}", round * 2 + j))
                        .await
                        .unwrap();
                }
            }
            tx.commit().await.unwrap();
        }
    };
    // Half before the consumer starts, half while it idles on a long poll interval.
    for round in 0..3 {
        produce(round).await;
        n += keys.len() * 2;
    }
    let log = Log::default();
    let c = start(
        db.consumer("g", "fifo")
            .poll_interval(LONG_POLL)
            .concurrency(4),
        "w",
        &log,
    );
    wait_until("the first events", LONG_POLL, || {
        log.lock().unwrap().len() >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 3..6 {
        produce(round).await;
        n += keys.len() * 2;
    }
    wait_until("every event", LONG_POLL, || log.lock().unwrap().len() >= n).await;
    c.stop().await;
    let log = log.lock().unwrap().clone();
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut per_part: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for (_, _, e) in log.iter() {
        if !seen.insert(e.id.clone()) {
            continue;
        }
        let p = String::from_utf8_lossy(&e.payload).into_owned();
        per_key.entry(e.key_str().into_owned()).or_default().push(p);
        per_part.entry(e.partition).or_default().push(e.seq);
        assert_eq!(e.partition, outbox::partition_of(&e.key, 4));
    }
    assert_eq!(seen.len(), n, "every event delivered");
    for (k, v) in per_key {
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(v, sorted, "events of key {k} in commit order");
        assert_eq!(v.len(), 12);
    }
    for (p, v) in per_part {
        let expect: Vec<i64> = (1..=v.len() as i64).collect();
        assert_eq!(v, expect, "partition {p} delivered in seq order");
    }
    ns.drop_schema().await;
}
