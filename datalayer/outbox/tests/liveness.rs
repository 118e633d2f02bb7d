//! Outbox liveness and limits on etch (issue 9, defects 4 and 7): a dead letter too
//! large for one value, many scheduled events ahead of an immediate one, a handler
//! that crashes its worker, a `Conflict` on checkpoint, and a lease that expires while
//! a long write transaction holds etch's writer lock.

use datalayer_core::{Db, Error, ErrorKind, Result};
use datalayer_outbox::{BuilderOutbox, DbOutbox, Event, TxOutbox};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

async fn db() -> Db {
    let engine = Arc::new(datalayer_etch::memory());
    Db::with_engine(engine).outbox().connect().await.unwrap()
}

fn fast(db: &Db, group: &str, topic: &str) -> datalayer_outbox::ConsumerBuilder {
    db.consumer(group, topic)
        .poll_interval(Duration::from_millis(10))
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
}

/// A consumer running on its own task; `stop` ends it gracefully, `abort` kills it.
struct Running {
    task: JoinHandle<Result<()>>,
    stop: oneshot::Sender<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the consumer stops within 10 s")
            .expect("the consumer task does not panic")
            .expect("the consumer ends with Ok");
    }
    async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn spawn<H, F>(b: datalayer_outbox::ConsumerBuilder, handler: H) -> Running
where
    H: Fn(Event) -> F + Send + Sync + 'static,
    F: Future<Output = Result<()>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(b.run(handler, async move {
        let _ = stopped.await;
    }));
    Running { task, stop }
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn stored(db: &Db, topic: &str) -> Vec<Event> {
    datalayer_outbox::stored_events(db, topic).await.unwrap()
}

/// Defect 4: a 2 MiB poison event whose handler fails with a 20 MiB error. Its dead
/// letter must not exceed etch's 16 MiB value limit (the error is truncated), the
/// partition goes on, and the handler is not called in a hot loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_error_is_truncated_and_the_partition_goes_on() {
    let db = db().await;
    datalayer_outbox::create_topic(&db, "big", 1).await.unwrap();
    let poison = vec![b'p'; 2 << 20];
    db.emit("big", "k", poison.clone()).await.unwrap();
    db.emit("big", "k", b"after".to_vec()).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let after = Arc::new(AtomicBool::new(false));
    let (c, a) = (calls.clone(), after.clone());
    let run = spawn(
        fast(&db, "g", "big").max_attempts(2).partitions(0..1),
        move |ev: Event| {
            let (c, a) = (c.clone(), a.clone());
            async move {
                if ev.payload == b"after" {
                    a.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                c.fetch_add(1, Ordering::SeqCst);
                Err(Error::invalid_input("x".repeat(20 << 20)))
            }
        },
    );
    // Three seconds: the time the probe of the issue measured 1,925 calls in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.stop().await;
    let n = calls.load(Ordering::SeqCst);
    assert!(
        n <= 3,
        "the poison handler ran {n} times in 3 s (max_attempts 2): a hot loop"
    );
    assert!(
        after.load(Ordering::SeqCst),
        "the event after the poison one was never delivered"
    );
    let dead = stored(&db, "big.dead").await;
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(dead[0].payload, poison);
    let dl = dead[0].dead_letter.as_ref().unwrap();
    assert!(
        dl.error.len() <= datalayer_outbox::MAX_ERROR_BYTES,
        "stored error of {} bytes",
        dl.error.len()
    );
    assert!(dl.error.starts_with("invalid input: xxx") || dl.error.contains("xxxx"));
    assert!(dl.error.contains("truncated"), "marked as truncated");
}

/// Defect 4: an immediate event behind 600 scheduled ones (far in the future) on one
/// partition is delivered within a second, on an etch store whose values are limited
/// to 4 KiB: the group's checkpoint row must not grow with the number of scheduled
/// events (600 pending entries would not fit in one value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_event_behind_600_scheduled_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "etch://{}?max_value_bytes=4096&flush=never",
        dir.path().display()
    );
    let engine = Arc::new(datalayer_etch::open_url(&url).await.unwrap());
    let db = Db::with_engine(engine).outbox().connect().await.unwrap();
    datalayer_outbox::create_topic(&db, "sched", 1)
        .await
        .unwrap();
    let later = SystemTime::now() + Duration::from_secs(3600);
    let tx = db.begin().await.unwrap();
    for i in 0..600 {
        tx.emit("sched", "k", format!("later-{i}").into_bytes())
            .deliver_at(later)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    db.emit("sched", "k", b"now".to_vec()).await.unwrap();
    let got = Arc::new(AtomicBool::new(false));
    let early = Arc::new(AtomicUsize::new(0));
    let (g, e) = (got.clone(), early.clone());
    let t0 = Instant::now();
    let run = spawn(
        fast(&db, "g", "sched").partitions(0..1),
        move |ev: Event| {
            let (g, e) = (g.clone(), e.clone());
            async move {
                if ev.payload == b"now" {
                    g.store(true, Ordering::SeqCst);
                } else {
                    e.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
        },
    );
    wait_until(
        "the immediate event behind 600 scheduled ones",
        Duration::from_secs(1),
        || got.load(Ordering::SeqCst),
    )
    .await;
    eprintln!("immediate event delivered after {:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.stop().await;
    assert_eq!(early.load(Ordering::SeqCst), 0, "nothing delivered early");
    // Retention deletes the delivered immediate event (the scheduled ones before it
    // do not hold it back) and keeps every scheduled event.
    assert_eq!(datalayer_outbox::purge(&db, "sched").await.unwrap(), 1);
    let left = stored(&db, "sched").await;
    assert_eq!(left.len(), 600);
    assert!(left.iter().all(|e| e.payload.starts_with(b"later-")));
}

/// Defect 7: a handler that never returns (its worker "crashes" mid-handler and is
/// restarted, over and over) is dead-lettered after `max_attempts` crashes, and the
/// partition goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_handler_is_dead_lettered() {
    let db = db().await;
    datalayer_outbox::create_topic(&db, "crash", 1)
        .await
        .unwrap();
    db.emit("crash", "k", b"ok1".to_vec()).await.unwrap();
    let poison = db.emit("crash", "k", b"crash".to_vec()).await.unwrap();
    db.emit("crash", "k", b"ok2".to_vec()).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let ok2 = Arc::new(AtomicBool::new(false));
    let max_attempts = 3;
    let mut restarts = 0;
    loop {
        let before = calls.load(Ordering::SeqCst);
        let (c, o) = (calls.clone(), ok2.clone());
        let run = spawn(
            fast(&db, "g", "crash")
                .max_attempts(max_attempts)
                .partitions(0..1),
            move |ev: Event| {
                let (c, o) = (c.clone(), o.clone());
                async move {
                    match &ev.payload[..] {
                        b"crash" => {
                            c.fetch_add(1, Ordering::SeqCst);
                            // The process dies here: the handler never returns.
                            std::future::pending::<()>().await;
                            Ok(())
                        }
                        b"ok2" => {
                            o.store(true, Ordering::SeqCst);
                            Ok(())
                        }
                        _ => Ok(()),
                    }
                }
            },
        );
        // Wait for the crash (a new call) or the partition to go on.
        let t0 = Instant::now();
        while calls.load(Ordering::SeqCst) == before
            && !ok2.load(Ordering::SeqCst)
            && t0.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if ok2.load(Ordering::SeqCst) {
            run.stop().await;
            break;
        }
        run.abort().await;
        restarts += 1;
        assert!(
            restarts <= 8,
            "after {restarts} crashes ({} handler calls, max_attempts {max_attempts}) the event \
             was still not dead-lettered and the partition is crash-looping",
            calls.load(Ordering::SeqCst)
        );
    }
    let n = calls.load(Ordering::SeqCst);
    assert!(
        n >= max_attempts as usize && n <= max_attempts as usize + 1,
        "{n} handler calls"
    );
    let dead = stored(&db, "crash.dead").await;
    assert_eq!(dead.len(), 1);
    let dl = dead[0].dead_letter.as_ref().unwrap();
    assert_eq!(dl.origin, poison.id());
    assert!(dl.attempts >= max_attempts, "{dl:?}");
}

/// Defect 7: a retryable `Conflict` during a checkpoint is retried: the partition
/// (here a fixed range) keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_on_checkpoint_keeps_the_partition() {
    let db = db().await;
    datalayer_outbox::create_topic(&db, "cf", 1).await.unwrap();
    let faults = Arc::new(AtomicUsize::new(0));
    let f = faults.clone();
    let fault: datalayer_outbox::CheckpointFault = Arc::new(move |_part| {
        if f.fetch_add(1, Ordering::SeqCst) < 3 {
            Err(Error::conflict("injected write conflict"))
        } else {
            Ok(())
        }
    });
    let seen = Arc::new(parking_lot_free::Seen::default());
    let s = seen.clone();
    let run = spawn(
        fast(&db, "g", "cf")
            .partitions(0..1)
            .checkpoint_fault(fault),
        move |ev: Event| {
            let s = s.clone();
            async move {
                s.add(ev.payload);
                Ok(())
            }
        },
    );
    db.emit("cf", "k", b"one".to_vec()).await.unwrap();
    wait_until("the first event", Duration::from_secs(5), || {
        seen.has(b"one")
    })
    .await;
    wait_until("the injected conflicts", Duration::from_secs(5), || {
        faults.load(Ordering::SeqCst) >= 3
    })
    .await;
    db.emit("cf", "k", b"two".to_vec()).await.unwrap();
    wait_until(
        "an event emitted after the conflicts (the partition was dropped)",
        Duration::from_secs(5),
        || seen.has(b"two"),
    )
    .await;
    run.stop().await;
}

/// Defect 7: a write transaction held past the lease TTL on etch (single writer:
/// renewals wait behind it) never lets two workers run the handler for one partition
/// at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_transaction_never_lets_two_workers_deliver_one_partition() {
    static W1_CALLS: AtomicU64 = AtomicU64::new(0);
    let db = db().await;
    datalayer_outbox::create_topic(&db, "lease", 1)
        .await
        .unwrap();
    let tx = db.begin().await.unwrap();
    for i in 0..400 {
        tx.emit("lease", "k", format!("e{i}").into_bytes())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let handler = |name: &'static str| {
        let (inside, most, calls) = (inside.clone(), most.clone(), calls.clone());
        move |_ev: Event| {
            let (inside, most, calls) = (inside.clone(), most.clone(), calls.clone());
            async move {
                struct Out(Arc<AtomicUsize>);
                impl Drop for Out {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                let _out = Out(inside.clone());
                most.fetch_max(n, Ordering::SeqCst);
                calls.fetch_add(1, Ordering::SeqCst);
                if name == "w1" {
                    W1_CALLS.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
                Ok(())
            }
        }
    };
    let ttl = Duration::from_millis(300);
    // w2 first: it holds the only partition. w1 sorts first, so once it is live its
    // fair share is the partition.
    let w2 = spawn(
        fast(&db, "g", "lease").lease_ttl(ttl).worker_id("w2"),
        handler("w2"),
    );
    wait_until("w2 delivering", Duration::from_secs(5), || {
        calls.load(Ordering::SeqCst) > 0
    })
    .await;
    // A user transaction holds the writer lock for 3 TTLs.
    let user = db.begin().await.unwrap();
    user.emit("other", "k", b"x".to_vec()).await.unwrap();
    let w1 = spawn(
        fast(&db, "g", "lease").lease_ttl(ttl).worker_id("w1"),
        handler("w1"),
    );
    tokio::time::sleep(ttl * 3).await;
    user.commit().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    w1.stop().await;
    w2.stop().await;
    assert!(
        W1_CALLS.load(Ordering::SeqCst) > 0,
        "w1 never took the partition over: the test did not exercise a hand-over"
    );
    let most = most.load(Ordering::SeqCst);
    assert_eq!(
        most, 1,
        "two workers ran the handler for one partition at the same time"
    );
}

/// Defect 7: a user transaction holding etch's writer lock for 3 TTLs does not cost a
/// healthy worker its lease. Its renewals wait behind the transaction (it pauses its
/// deliveries meanwhile: self-fencing); a worker that finds the lease expired right
/// after does not take it over until its own writes have gone through promptly for a
/// whole TTL, by which time the holder has renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_transaction_does_not_cost_the_holder_its_lease() {
    let db = db().await;
    datalayer_outbox::create_topic(&db, "keep", 1)
        .await
        .unwrap();
    let calls = |name: &'static str, seen: Arc<parking_lot_free::Seen>| {
        move |ev: Event| {
            let seen = seen.clone();
            async move {
                let mut p = name.as_bytes().to_vec();
                p.push(b':');
                p.extend(ev.payload);
                seen.add(p);
                Ok(())
            }
        }
    };
    let seen = Arc::new(parking_lot_free::Seen::default());
    let ttl = Duration::from_millis(300);
    // "a" sorts first: with both live, its fair share is the only partition.
    let a = spawn(
        fast(&db, "g", "keep").lease_ttl(ttl).worker_id("a"),
        calls("a", seen.clone()),
    );
    db.emit("keep", "k", b"e0".to_vec()).await.unwrap();
    wait_until("a delivering", Duration::from_secs(5), || seen.has(b"a:e0")).await;
    let user = db.begin().await.unwrap();
    user.emit("other", "k", b"x".to_vec()).await.unwrap();
    tokio::time::sleep(ttl * 3).await;
    user.commit().await.unwrap();
    // b starts as the store takes writes again: it finds a's heartbeat and lease
    // expired (a's writes waited behind the transaction too).
    let b = spawn(
        fast(&db, "g", "keep").lease_ttl(ttl).worker_id("b"),
        calls("b", seen.clone()),
    );
    for i in 1..20 {
        db.emit("keep", "k", format!("e{i}").into_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until("the last event", Duration::from_secs(5), || {
        seen.has(b"a:e19") || seen.has(b"b:e19")
    })
    .await;
    b.stop().await;
    a.stop().await;
    let by_b = seen.count_prefix(b"b:");
    assert_eq!(
        by_b, 0,
        "b delivered {by_b} events: the healthy holder a lost its lease to expiry while a \
         user transaction held the writer lock"
    );
    assert!(seen.has(b"a:e19"));
}

/// Defect 7: nonsensical lease settings are refused when the consumer starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_settings_are_validated() {
    let db = db().await;
    let r = db
        .consumer("g", "v")
        .lease_ttl(Duration::from_millis(10))
        .run(|_| async { Ok(()) }, async {})
        .await;
    assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput);
    let r = db
        .consumer("g", "v")
        .lease_ttl(Duration::from_secs(3))
        .lease_renewal(Duration::from_secs(2))
        .run(|_| async { Ok(()) }, async {})
        .await;
    assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput);
}

mod parking_lot_free {
    use std::sync::Mutex;

    /// Payloads seen by a handler.
    #[derive(Default)]
    pub struct Seen(Mutex<Vec<Vec<u8>>>);

    impl Seen {
        pub fn add(&self, p: Vec<u8>) {
            self.0.lock().unwrap().push(p);
        }
        pub fn has(&self, p: &[u8]) -> bool {
            self.0.lock().unwrap().iter().any(|x| x == p)
        }
        pub fn count_prefix(&self, p: &[u8]) -> usize {
            self.0
                .lock()
                .unwrap()
                .iter()
                .filter(|x| x.starts_with(p))
                .count()
        }
    }
}
