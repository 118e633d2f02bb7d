//! The transactional outbox: events exist iff their transaction commits, FIFO per
//! partition, scheduled delivery, independent groups, leases with take-over, the
//! late-commit case, dead letters, table events.
//!
//! Every case first checks `Capability::outbox`: without it, the outbox must answer
//! `Unsupported` (and the case ends there).

use crate::Ctx;
use crate::model::User;
use anyhow::{Context, bail, ensure};
use datalayer::outbox::{self, Event, TableEvent};
use datalayer::prelude::*;
use datalayer::{ChangeKind, Db, ErrorKind};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a case waits for an expected delivery before failing: a liveness bound,
/// not a speed figure. 30 s, past the 20 s TTL of a pessimistic TiKV lock: on a loaded
/// 2-core machine the TiKV pessimistic cases were seen to wait out such a lock (left by
/// a transaction dropped mid-flight; cause not found yet) past the earlier 10 s.
const WAIT: Duration = Duration::from_secs(30);

type Log = Arc<Mutex<Vec<(String, Event, SystemTime)>>>;

/// A running consumer: its task and the sender that stops it gracefully.
struct Running {
    task: JoinHandle<datalayer::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Running {
    /// Fails with the consumer's outcome when it has ended (it should run until stopped).
    async fn check_alive(&mut self, name: &str) -> anyhow::Result<()> {
        if self.task.is_finished() {
            let r = (&mut self.task).await;
            bail!("consumer {name} ended early: {r:?}");
        }
        Ok(())
    }
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(WAIT, self.task)
            .await
            .with_context(|| format!("consumer did not stop within {WAIT:?}"))???;
        Ok(())
    }
}

/// Starts `b` with a handler that records `(worker, event, received_at)` in `log` and
/// fails for payloads starting with `poison` (except on dead letters).
fn start(b: outbox::ConsumerBuilder, worker: &str, log: &Log) -> Running {
    let (tx, rx) = oneshot::channel::<()>();
    let log = log.clone();
    let worker = worker.to_owned();
    let task = tokio::spawn(b.run(
        move |ev: Event| {
            let log = log.clone();
            let worker = worker.clone();
            async move {
                let poison = ev.payload.starts_with(b"poison") && ev.dead_letter.is_none();
                log.lock()
                    .unwrap()
                    .push((worker, ev.clone(), SystemTime::now()));
                if poison {
                    return Err(datalayer::Error::invalid_input("poison event"));
                }
                Ok(())
            }
        },
        async move {
            let _ = rx.await;
        },
    ));
    Running {
        task,
        stop: Some(tx),
    }
}

/// Polls `cond` until it holds, failing with `what` after [`WAIT`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > WAIT {
            bail!("timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn payloads(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .map(|(_, e, _)| String::from_utf8_lossy(&e.payload).into_owned())
        .collect()
}

fn fast(db: &Db, group: &str, topic: &str) -> outbox::ConsumerBuilder {
    db.consumer(group, topic)
        .poll_interval(Duration::from_millis(10))
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
}

fn expect_unsupported<T>(r: datalayer::Result<T>, what: &str) -> anyhow::Result<()> {
    match r {
        Err(e) if e.kind() == ErrorKind::Unsupported => Ok(()),
        Err(e) => bail!("{what}: expected Unsupported, got {e}"),
        Ok(_) => bail!("{what}: the outbox is not declared but it worked"),
    }
}

/// When the engine does not declare the outbox: checks that it says so. Returns
/// whether the case should go on.
async fn declared(cx: &Ctx) -> anyhow::Result<bool> {
    if cx.cap().outbox {
        return Ok(true);
    }
    expect_unsupported(cx.db.emit("t", "k", b"x".to_vec()).await, "Db::emit")?;
    let tx = cx.db.begin().await?;
    expect_unsupported(tx.emit("t", "k", b"x".to_vec()).await, "Tx::emit")?;
    tx.rollback().await?;
    expect_unsupported(
        cx.db
            .consumer("g", "t")
            .run(|_| async { Ok(()) }, async {})
            .await,
        "Db::consumer",
    )?;
    Ok(false)
}

/// Case: the capability matches behaviour (emit works iff declared).
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn capability_matches(cx: &mut Ctx) -> anyhow::Result<()> {
    if !declared(cx).await? {
        return Ok(());
    }
    let id = cx.db.emit("cap", "k", b"x".to_vec()).await?;
    assert_eq!(id.seq, 1);
    assert_eq!(
        outbox::topic_partitions(&cx.db, "cap").await?,
        Some(outbox::DEFAULT_PARTITIONS)
    );
    let err = cx
        .db
        .emit("bad topic", "k", b"x".to_vec())
        .await
        .expect_err("bad name");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    Ok(())
}

/// Case: nothing from a rolled-back transaction is stored or delivered.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn rollback_leaves_no_event(cx: &mut Ctx) -> anyhow::Result<()> {
    if !declared(cx).await? {
        return Ok(());
    }
    // Explicit rollback, an Err closure, and a dropped guard.
    let tx = cx.db.begin().await?;
    tx.repo::<User>().insert(&User::sample(1)).await?;
    tx.emit("rb", "k", b"rolled back".to_vec()).await?;
    tx.rollback().await?;
    let r: datalayer::Result<()> = cx
        .db
        .tx(async |tx| {
            tx.emit("rb", "k", b"err closure".to_vec()).await?;
            Err(datalayer::Error::invalid_input("business rule"))
        })
        .await;
    ensure!(r.is_err());
    {
        let tx = cx.db.begin().await?;
        tx.emit("rb", "k", b"dropped".to_vec()).await?;
    }
    let tx = cx.db.begin().await?;
    tx.repo::<User>().insert(&User::sample(2)).await?;
    let id = tx.emit("rb", "k", b"committed".to_vec()).await?;
    tx.commit().await?;
    assert_eq!(id.seq, 1, "rolled-back transactions give their seq back");
    let stored: Vec<String> = outbox::stored_events(&cx.db, "rb")
        .await?
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect();
    assert_eq!(stored, vec!["committed"]);
    let log = Log::default();
    let c = start(fast(&cx.db, "g", "rb"), "w", &log);
    wait_until("the committed event", || !payloads(&log).is_empty()).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.stop().await?;
    assert_eq!(payloads(&log), vec!["committed"]);
    Ok(())
}

/// Case: events of one partition are delivered in commit order.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn fifo_per_partition(cx: &mut Ctx) -> anyhow::Result<()> {
    if !declared(cx).await? {
        return Ok(());
    }
    outbox::create_topic(&cx.db, "fifo", 4).await?;
    let keys = ["a", "b", "c", "d", "e", "f"];
    let mut n = 0;
    for round in 0..5 {
        // Several events per transaction, several transactions.
        let tx = cx.db.begin().await?;
        for k in keys {
            for j in 0..2 {
                tx.emit("fifo", k, format!("{k}:{:03}", round * 2 + j))
                    .await?;
                n += 1;
            }
        }
        tx.commit().await?;
    }
    let log = Log::default();
    let c = start(fast(&cx.db, "g", "fifo").concurrency(4), "w", &log);
    wait_until("every event", || log.lock().unwrap().len() >= n).await?;
    c.stop().await?;
    let log = log.lock().unwrap();
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut per_part: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for (_, e, _) in log.iter() {
        if !seen.insert(e.id.clone()) {
            continue;
        }
        let p = String::from_utf8_lossy(&e.payload).into_owned();
        per_key.entry(e.key_str().into_owned()).or_default().push(p);
        per_part.entry(e.partition).or_default().push(e.seq);
        ensure!(
            e.partition == outbox::partition_of(&e.key, 4),
            "partition is the key's hash"
        );
    }
    assert_eq!(seen.len(), n, "every event delivered");
    for (k, v) in per_key {
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(v, sorted, "events of key {k} in commit order");
        assert_eq!(v.len(), 10);
    }
    for (p, v) in per_part {
        let expect: Vec<i64> = (1..=v.len() as i64).collect();
        assert_eq!(v, expect, "partition {p} delivered in seq order");
    }
    Ok(())
}

/// Case: a scheduled event is never delivered before its time; later immediate
/// events of its partition are not held back by it.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn scheduled_not_early(cx: &mut Ctx) -> anyhow::Result<()> {
    if !declared(cx).await? {
        return Ok(());
    }
    outbox::create_topic(&cx.db, "sched", 1).await?;
    let log = Log::default();
    let c = start(fast(&cx.db, "g", "sched"), "w", &log);
    let at = SystemTime::now() + Duration::from_millis(300);
    let tx = cx.db.begin().await?;
    tx.emit("sched", "k", b"later".to_vec())
        .deliver_at(at)
        .await?;
    tx.emit("sched", "k", b"now".to_vec()).await?;
    tx.commit().await?;
    cx.db.emit("sched", "k", b"now2".to_vec()).await?;
    wait_until("the scheduled event", || {
        payloads(&log).contains(&"later".into())
    })
    .await?;
    c.stop().await?;
    let log = log.lock().unwrap();
    let order: Vec<String> = log
        .iter()
        .map(|(_, e, _)| String::from_utf8_lossy(&e.payload).into_owned())
        .collect();
    // FIFO by delivery time, then commit order. Normally `now2` is committed well
    // before `at` and comes second; on a slow machine it may be committed after `at`,
    // and then `later` rightly comes first.
    let mut by_time: Vec<_> = log.iter().map(|(_, e, _)| e.clone()).collect();
    by_time.sort_by_key(|e| (e.deliver_at, e.seq));
    let expected: Vec<String> = by_time
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect();
    assert_eq!(order, expected, "delivered out of (deliver_at, seq) order");
    assert_eq!(order.len(), 3);
    // `now` precedes `later` whenever it was emitted before `at` (its delivery time is
    // its emit time); on a very slow machine the emit itself may take longer than the
    // delay, and then `later` rightly comes first (checked by the FIFO assertion above).
    let now_event = by_time.iter().find(|e| e.payload == b"now").unwrap();
    if now_event.deliver_at < at {
        assert_eq!(
            order[0], "now",
            "the due event of the first transaction comes first"
        );
    }
    let (_, e, got) = log.iter().find(|(_, e, _)| e.payload == b"later").unwrap();
    ensure!(*got >= at, "delivered {got:?}, before its time {at:?}");
    let micros = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    };
    assert_eq!(micros(e.deliver_at), micros(at));
    Ok(())
}

/// Case: two consumer groups both see every event; retention waits for both.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn two_groups_see_everything(cx: &mut Ctx) -> anyhow::Result<()> {
    if !declared(cx).await? {
        return Ok(());
    }
    outbox::create_topic(&cx.db, "groups", 4).await?;
    let (l1, l2) = (Log::default(), Log::default());
    // Group 2 is gated: it cannot finish an event until the gate opens.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (tx2, rx2) = oneshot::channel::<()>();
    let g = gate.clone();
    let l = l2.clone();
    let c2 = Running {
        task: tokio::spawn(fast(&cx.db, "g2", "groups").concurrency(4).run(
            move |ev: Event| {
                let (g, l) = (g.clone(), l.clone());
                async move {
                    let _permit = g.acquire().await.expect("gate open");
                    l.lock().unwrap().push(("w2".into(), ev, SystemTime::now()));
                    Ok(())
                }
            },
            async move {
                let _ = rx2.await;
            },
        )),
        stop: Some(tx2),
    };
    let c1 = start(fast(&cx.db, "g1", "groups").concurrency(2), "w1", &l1);
    for i in 0..20 {
        cx.db
            .emit("groups", format!("k{i}"), format!("e{i}"))
            .await?;
    }
    wait_until("group 1 to get every event", || {
        l1.lock().unwrap().len() >= 20
    })
    .await?;
    // Group 2 has passed nothing: nothing may be deleted.
    assert_eq!(outbox::purge(&cx.db, "groups").await?, 0);
    assert_eq!(outbox::stored_events(&cx.db, "groups").await?.len(), 20);
    gate.add_permits(1_000);
    wait_until("group 2 to get every event", || {
        l2.lock().unwrap().len() >= 20
    })
    .await?;
    let ids = |l: &Log| -> HashSet<String> {
        l.lock()
            .unwrap()
            .iter()
            .map(|(_, e, _)| e.id.clone())
            .collect()
    };
    assert_eq!(ids(&l1).len(), 20);
    assert_eq!(ids(&l1), ids(&l2));
    // Once both groups checkpoint, retention deletes everything.
    let start_t = Instant::now();
    loop {
        outbox::purge(&cx.db, "groups").await?;
        if outbox::stored_events(&cx.db, "groups").await?.is_empty() {
            break;
        }
        ensure!(
            start_t.elapsed() < WAIT,
            "retention never deleted the events"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c1.stop().await?;
    c2.stop().await?;
    Ok(())
}

/// Case: three workers share the partitions through leases; a killed worker's
/// partitions are taken over after the TTL and no event is lost.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn workers_share_and_take_over(cx: &mut Ctx) -> anyhow::Result<()> {
    if !declared(cx).await? {
        return Ok(());
    }
    outbox::create_topic(&cx.db, "share", 8).await?;
    let log = Log::default();
    let worker = |name: &str| {
        start(
            fast(&cx.db, "g", "share")
                .concurrency(2)
                .lease_ttl(Duration::from_millis(300))
                .worker_id(name),
            name,
            &log,
        )
    };
    let (mut w1, mut w2, mut w3) = (worker("w1"), worker("w2"), worker("w3"));
    let workers_seen = |log: &Log| -> HashSet<String> {
        log.lock()
            .unwrap()
            .iter()
            .map(|(w, _, _)| w.clone())
            .collect()
    };
    // Emit until every worker has received something (the lease shares settle).
    let mut emitted: Vec<String> = Vec::new();
    let t0 = Instant::now();
    while workers_seen(&log).len() < 3 {
        w1.check_alive("w1").await?;
        w2.check_alive("w2").await?;
        w3.check_alive("w3").await?;
        ensure!(
            t0.elapsed() < WAIT,
            "the three workers never all received events: {:?}",
            workers_seen(&log)
        );
        for k in 0..16 {
            let p = format!("a{}", emitted.len());
            cx.db.emit("share", format!("k{k}"), p.clone()).await?;
            emitted.push(p);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let w3_parts: HashSet<u32> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(w, _, _)| w == "w3")
        .map(|(_, e, _)| e.partition)
        .collect();
    // Kill w3 without any release: its leases stay until they expire.
    w3.task.abort();
    let _ = w3.task.await;
    let cut = log.lock().unwrap().len();
    for k in 0..64 {
        let p = format!("b{k}");
        cx.db.emit("share", format!("k{k}"), p.clone()).await?;
        emitted.push(p);
    }
    let want: HashSet<String> = emitted.iter().cloned().collect();
    wait_until("every event, after the take-over", || {
        let got: HashSet<String> = payloads(&log).into_iter().collect();
        want.is_subset(&got)
    })
    .await?;
    w1.stop().await?;
    w2.stop().await?;
    let log = log.lock().unwrap();
    let after: Vec<&(String, Event, SystemTime)> = log[cut..].iter().collect();
    ensure!(
        after.iter().all(|(w, _, _)| w != "w3"),
        "the killed worker delivered after it was killed"
    );
    let taken: HashSet<u32> = after
        .iter()
        .filter(|(_, e, _)| w3_parts.contains(&e.partition))
        .map(|(_, e, _)| e.partition)
        .collect();
    ensure!(
        !w3_parts.is_empty() && taken == w3_parts,
        "w3's partitions {w3_parts:?} taken over: {taken:?}"
    );
    Ok(())
}

/// Case: the hard case. Transaction A emits into partition p and stays open; B emits
/// into p and commits; a consumer delivers and checkpoints whatever is visible; then
/// A commits. A's event must still be delivered.
///
/// On single-writer engines B waits for A; on engines with concurrent writers B's
/// seq waits for A's (the seq row lock) or conflicts; on optimistic engines (Redis)
/// B commits first and A's commit fails with `Conflict`, and A is re-run. Whatever the
/// engine does, A's event must arrive, and the order must be the commit order of the
/// seqs.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn late_commit_is_delivered(cx: &mut Ctx) -> anyhow::Result<()> {
    if !declared(cx).await? {
        return Ok(());
    }
    outbox::create_topic(&cx.db, "late", 1).await?;
    let log = Log::default();
    let c = start(fast(&cx.db, "g", "late").partitions(0..1), "w", &log);
    cx.db.emit("late", "k", b"warm-up".to_vec()).await?;
    wait_until("the warm-up event", || !payloads(&log).is_empty()).await?;

    let a = cx.db.begin().await?;
    a.emit("late", "k", b"A".to_vec()).await?;
    let db = cx.db.clone();
    let b: JoinHandle<datalayer::Result<datalayer::outbox::EventId>> = tokio::spawn(async move {
        db.tx_with()
            .retry(20)
            .run(async |tx| tx.emit("late", "k2", b"B".to_vec()).await)
            .await
    });
    // Let B commit and the consumer deliver and checkpoint it, where the engine allows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // On an optimistic engine (Redis; TiKV optimistic) B commits first and A's commit
    // fails validation on the partition's seq key with `Conflict`: nothing of A was
    // applied, so it is re-run and its event goes after B's.
    let a_first = match a.commit().await {
        Ok(()) => true,
        Err(e) if e.is_conflict() => {
            cx.db
                .tx_with()
                .retry(20)
                .run(async |tx| tx.emit("late", "k", b"A".to_vec()).await)
                .await?;
            false
        }
        Err(e) => return Err(e.into()),
    };
    let b_id = tokio::time::timeout(WAIT, b)
        .await
        .context("B never committed")???;
    wait_until("A's and B's events", || {
        let p = payloads(&log);
        p.contains(&"A".into()) && p.contains(&"B".into())
    })
    .await
    .context("the late-committed event A was lost")?;
    // Give a redelivery a chance to show up, then check order and uniqueness.
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.stop().await?;
    let log = log.lock().unwrap();
    let seq_of = |p: &str| {
        log.iter()
            .find(|(_, e, _)| e.payload == p.as_bytes())
            .map(|(_, e, _)| e.seq)
    };
    let (sa, sb) = (seq_of("A").unwrap(), seq_of("B").unwrap());
    assert_eq!(sb, b_id.seq);
    let order: Vec<String> = payloads_of(&log);
    if a_first {
        ensure!(
            sa < sb,
            "A committed first, so its seq ({sa}) is below B's ({sb})"
        );
        assert_eq!(order, vec!["warm-up", "A", "B"]);
    } else {
        ensure!(
            sb < sa,
            "B committed first (A conflicted and was re-run), so its seq ({sb}) is below A's ({sa})"
        );
        assert_eq!(order, vec!["warm-up", "B", "A"]);
    }
    Ok(())
}

fn payloads_of(log: &[(String, Event, SystemTime)]) -> Vec<String> {
    log.iter()
        .map(|(_, e, _)| String::from_utf8_lossy(&e.payload).into_owned())
        .collect()
}

/// Case: an event whose handler always fails is retried, then goes to the dead-letter
/// topic after `max_attempts`, and its partition goes on.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn poison_event_dead_lettered(cx: &mut Ctx) -> anyhow::Result<()> {
    if !declared(cx).await? {
        return Ok(());
    }
    outbox::create_topic(&cx.db, "jobs", 2).await?;
    let (log, dead) = (Log::default(), Log::default());
    let c = start(fast(&cx.db, "g", "jobs").max_attempts(3), "w", &log);
    let d = start(fast(&cx.db, "dlq", "jobs.dead"), "d", &dead);
    cx.db.emit("jobs", "k", b"ok1".to_vec()).await?;
    let poison = cx.db.emit("jobs", "k", b"poison!".to_vec()).await?;
    cx.db.emit("jobs", "k", b"ok2".to_vec()).await?;
    wait_until("ok2 after the poison event", || {
        payloads(&log).contains(&"ok2".into())
    })
    .await?;
    wait_until("the dead letter", || !dead.lock().unwrap().is_empty()).await?;
    c.stop().await?;
    d.stop().await?;
    let got = payloads(&log);
    assert_eq!(
        got,
        vec!["ok1", "poison!", "poison!", "poison!", "ok2"],
        "three attempts, then the partition goes on"
    );
    let attempts: Vec<u32> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, e, _)| e.payload == b"poison!")
        .map(|(_, e, _)| e.attempt)
        .collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    let dead = dead.lock().unwrap();
    let dead_ids: Vec<(&str, &str)> = dead
        .iter()
        .map(|(_, e, _)| {
            (
                e.id.as_str(),
                e.dead_letter.as_ref().map_or("", |d| d.origin.as_str()),
            )
        })
        .collect();
    assert_eq!(dead.len(), 1, "one dead letter: {dead_ids:?}");
    let (_, e, _) = &dead[0];
    assert_eq!(e.topic, "jobs.dead");
    assert_eq!(e.payload, b"poison!");
    assert_eq!(e.key, b"k");
    let dl = e.dead_letter.as_ref().context("dead-letter details")?;
    assert_eq!(dl.origin, poison.id());
    assert_eq!(dl.attempts, 3);
    ensure!(
        dl.error.contains("poison event"),
        "last error kept: {}",
        dl.error
    );
    Ok(())
}

/// Case: repository writes with events emit Insert / Update / Delete with the key, in
/// the same transaction.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn table_events_in_tx(cx: &mut Ctx) -> anyhow::Result<()> {
    if !declared(cx).await? {
        return Ok(());
    }
    outbox::create_topic(&cx.db, "users", 8).await?;
    cx.db
        .tx(async |tx| {
            let users = tx.with_events::<User>("users");
            users.insert(&User::sample(1)).await?;
            let mut u = User::sample(1);
            u.age += 1;
            users.update(&u).await?;
            users.upsert(&User::sample(2)).await?;
            users.delete(1i64).await?;
            assert!(users.delete(99i64).await?.is_none());
            Ok(())
        })
        .await?;
    let r: datalayer::Result<()> = cx
        .db
        .tx(async |tx| {
            tx.with_events::<User>("users")
                .insert(&User::sample(3))
                .await?;
            Err(datalayer::Error::invalid_input("roll back"))
        })
        .await;
    ensure!(r.is_err());
    let mut got: Vec<(ChangeKind, i64, i64)> = outbox::stored_events(&cx.db, "users")
        .await?
        .iter()
        .map(|e| {
            let t = TableEvent::decode(&e.payload).expect("table event");
            assert_eq!(t.table, "users");
            assert_eq!(e.key, TableEvent::partition_key(&t.key));
            (t.op, t.key[0].as_i64().unwrap(), e.seq)
        })
        .collect();
    // Per key, in commit order (keys may share a partition).
    got.sort_by_key(|&(_, k, s)| (k, s));
    let ops: Vec<(ChangeKind, i64)> = got.iter().map(|&(o, k, _)| (o, k)).collect();
    assert_eq!(
        ops,
        vec![
            (ChangeKind::Insert, 1),
            (ChangeKind::Update, 1),
            (ChangeKind::Delete, 1),
            (ChangeKind::Insert, 2),
        ]
    );
    let counts: HashMap<i64, usize> = ops.iter().fold(HashMap::new(), |mut m, &(_, k)| {
        *m.entry(k).or_default() += 1;
        m
    });
    ensure!(
        !counts.contains_key(&3),
        "nothing from the rolled-back transaction"
    );
    Ok(())
}

/// Case: a handler that never returns because its worker dies mid-call (the consumer
/// task is aborted, then started again) is dead-lettered after `max_attempts` such
/// crashes: attempts are stored before the handler runs. The partition then goes on.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn crashing_handler_dead_lettered(cx: &mut Ctx) -> anyhow::Result<()> {
    if !declared(cx).await? {
        return Ok(());
    }
    outbox::create_topic(&cx.db, "crash", 1).await?;
    cx.db.emit("crash", "k", b"ok1".to_vec()).await?;
    let poison = cx.db.emit("crash", "k", b"crash".to_vec()).await?;
    cx.db.emit("crash", "k", b"ok2".to_vec()).await?;
    let calls = Arc::new(Mutex::new(0usize));
    let ok2 = Arc::new(Mutex::new(false));
    let max_attempts = 2u32;
    for restart in 0.. {
        ensure!(
            restart <= 6,
            "after {restart} crashes the event was not dead-lettered (max_attempts {max_attempts})"
        );
        let before = *calls.lock().unwrap();
        let (c, o) = (calls.clone(), ok2.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(
            fast(&cx.db, "g", "crash")
                .max_attempts(max_attempts)
                .partitions(0..1)
                .run(
                    move |ev: Event| {
                        let (c, o) = (c.clone(), o.clone());
                        async move {
                            match &ev.payload[..] {
                                b"crash" => {
                                    *c.lock().unwrap() += 1;
                                    std::future::pending::<()>().await;
                                }
                                b"ok2" => *o.lock().unwrap() = true,
                                _ => {}
                            }
                            Ok(())
                        }
                    },
                    async move {
                        let _ = rx.await;
                    },
                ),
        );
        let t0 = Instant::now();
        while *calls.lock().unwrap() == before && !*ok2.lock().unwrap() && t0.elapsed() < WAIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if *ok2.lock().unwrap() {
            Running {
                task,
                stop: Some(tx),
            }
            .stop()
            .await?;
            break;
        }
        // The worker "crashes" in the handler.
        task.abort();
        let _ = task.await;
    }
    let n = *calls.lock().unwrap();
    ensure!(
        (max_attempts as usize..=max_attempts as usize + 1).contains(&n),
        "{n} handler calls for max_attempts {max_attempts}"
    );
    let dead = outbox::stored_events(&cx.db, "crash.dead").await?;
    assert_eq!(dead.len(), 1, "one dead letter");
    let dl = dead[0]
        .dead_letter
        .as_ref()
        .context("dead-letter details")?;
    assert_eq!(dl.origin, poison.id());
    ensure!(dl.attempts >= max_attempts, "{dl:?}");
    Ok(())
}

/// Case: a dead letter stores the handler's error cut to `MAX_ERROR_BYTES` (with a
/// marker), and event ids are unique strings with a random part.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn dead_letter_error_truncated(cx: &mut Ctx) -> anyhow::Result<()> {
    if !declared(cx).await? {
        return Ok(());
    }
    outbox::create_topic(&cx.db, "long", 1).await?;
    let id = cx.db.emit("long", "k", b"fails".to_vec()).await?;
    let text = id.id();
    ensure!(
        text.starts_with(&format!("long/0/{}/", id.seq)) && text.len() == "long/0/1/".len() + 16,
        "id {text}"
    );
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(fast(&cx.db, "g", "long").max_attempts(1).run(
        |_ev: Event| async move { Err(datalayer::Error::invalid_input("é".repeat(50_000))) },
        async move {
            let _ = rx.await;
        },
    ));
    let c = Running {
        task,
        stop: Some(tx),
    };
    let start_t = Instant::now();
    let dead = loop {
        let dead = outbox::stored_events(&cx.db, "long.dead").await?;
        if !dead.is_empty() {
            break dead;
        }
        ensure!(start_t.elapsed() < WAIT, "no dead letter");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    c.stop().await?;
    let dl = dead[0]
        .dead_letter
        .as_ref()
        .context("dead-letter details")?;
    assert_eq!(dl.origin, text);
    ensure!(
        dl.error.len() <= outbox::MAX_ERROR_BYTES && dl.error.contains("truncated"),
        "stored error of {} bytes: {}",
        dl.error.len(),
        &dl.error[dl.error.len().saturating_sub(60)..]
    );
    ensure!(dead[0].id != text, "the dead letter has an id of its own");
    Ok(())
}

/// Case: an immediate event behind 600 scheduled ones in its partition is delivered
/// promptly, the scheduled ones are not delivered early, and retention keeps them.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn immediate_behind_many_scheduled(cx: &mut Ctx) -> anyhow::Result<()> {
    if !declared(cx).await? {
        return Ok(());
    }
    outbox::create_topic(&cx.db, "many", 1).await?;
    let later = SystemTime::now() + Duration::from_secs(3600);
    let tx = cx.db.begin().await?;
    for i in 0..600 {
        tx.emit("many", "k", format!("later-{i}"))
            .deliver_at(later)
            .await?;
    }
    tx.commit().await?;
    cx.db.emit("many", "k", b"now".to_vec()).await?;
    let log = Log::default();
    let t0 = Instant::now();
    let c = start(fast(&cx.db, "g", "many"), "w", &log);
    wait_until("the immediate event", || !payloads(&log).is_empty()).await?;
    let took = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.stop().await?;
    ensure!(
        took < Duration::from_secs(2),
        "the immediate event took {took:?}"
    );
    assert_eq!(
        payloads(&log),
        vec!["now"],
        "nothing scheduled delivered early"
    );
    // Retention deletes the delivered immediate event (the scheduled ones do not hold
    // it back) and keeps every scheduled one.
    assert_eq!(outbox::purge(&cx.db, "many").await?, 1);
    let left = outbox::stored_events(&cx.db, "many").await?;
    assert_eq!(left.len(), 600);
    ensure!(
        left.iter().all(|e| e.payload.starts_with(b"later-")),
        "retention deleted a scheduled event"
    );
    Ok(())
}
