//! Self-fencing when a write of the delivery waits past the lease: a retry first
//! stores its attempt in the round's marker; when that write waits (here behind etch's
//! writer lock, held by a long transaction) until after the lease's local deadline,
//! the handler must not be called. Before the fix, `deliver` went on to the handler,
//! and `select!` (which picks its first branch at random) ran a handler that returns at
//! once in about a third of the trials, although the lease had ended locally.
//!
//! A renewal may land right after the lock is released (it is sent after the stalled
//! heartbeat) and legitimately extend the lease, so a call is "late" when, as the
//! handler reads the stored lease, less than the self-fencing margin (TTL/5) of it is
//! left: the worker's local deadline (renewal sent + TTL − TTL/5) had passed.

use datalayer_core::schema::internal::OUTBOX_GROUPS;
use datalayer_core::{Db, Error};
use datalayer_macros::Table;
use datalayer_outbox::{BuilderOutbox, DbOutbox, create_topic};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Lease TTL: renewals every 50 ms, local deadline 120 ms after a renewal is sent.
const TTL: Duration = Duration::from_millis(150);
/// How long the blocking transaction holds the writer lock.
const HOLD: Duration = Duration::from_millis(400);

/// A read-only mirror of the outbox's group row (same name and schema), to read the
/// stored lease from the handler.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core", name = OUTBOX_GROUPS)]
#[index(name = "by_topic", fields(topic, part))]
struct Group {
    #[pk]
    grp: String,
    #[pk]
    topic: String,
    #[pk]
    part: i32,
    high: i64,
    pending: Vec<u8>,
    lease_owner: String,
    lease_until_us: i64,
    fencing: i64,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// One trial: whether a retry was called when less than the self-fencing margin of
/// its stored lease was left (its local deadline had passed).
async fn late_call() -> bool {
    let engine = Arc::new(datalayer_etch::memory());
    let db = Db::with_engine(engine)
        .outbox()
        .table::<Group>()
        .connect()
        .await
        .unwrap();
    create_topic(&db, "t", 1).await.unwrap();
    db.emit("t", "k", b"x".to_vec()).await.unwrap();
    // (attempt, when, µs of the stored lease left at the call)
    let calls: Arc<Mutex<Vec<(u32, Instant, i64)>>> = Arc::default();
    let released: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (c, r, d) = (calls.clone(), released.clone(), db.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(
        db.consumer("g", "t")
            .lease_ttl(TTL)
            .poll_interval(Duration::from_millis(10))
            .backoff(Duration::from_millis(20), Duration::from_millis(20))
            .run(
                move |ev| {
                    let (c, r, d) = (c.clone(), r.clone(), d.clone());
                    async move {
                        let at = Instant::now();
                        let key = ("g".to_string(), "t".to_string(), 0i32);
                        let row = d.repo::<Group>().get(key).await.unwrap();
                        let left = row.map_or(i64::MIN, |g| g.lease_until_us - now_us());
                        c.lock().unwrap().push((ev.attempt, at, left));
                        if ev.attempt > 1 {
                            return Ok(());
                        }
                        // Fail once; meanwhile a long transaction takes the writer lock,
                        // so the retry's marker write and the renewals wait for it.
                        tokio::spawn(async move {
                            let tx = d.begin().await.unwrap();
                            tokio::time::sleep(HOLD).await;
                            tx.rollback().await.unwrap();
                            *r.lock().unwrap() = Some(Instant::now());
                        });
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        Err(Error::engine("test", "fail once"))
                    }
                },
                async move {
                    let _ = stopped.await;
                },
            ),
    );
    tokio::time::sleep(HOLD + Duration::from_millis(300)).await;
    let _ = stop.send(());
    run.await.unwrap().unwrap();
    let t1 = released
        .lock()
        .unwrap()
        .expect("the lock was taken and released");
    let calls = calls.lock().unwrap().clone();
    assert!(calls.len() >= 2, "the event was retried: {calls:?}");
    assert!(
        calls.iter().any(|&(_, t, _)| t >= t1),
        "no call after the release"
    );
    let margin = TTL.as_micros() as i64 / 5;
    calls.iter().any(|&(a, _, left)| a > 1 && left < margin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_handler_call_after_the_lease_ended_during_a_marker_write() {
    let mut late = 0;
    for _ in 0..8 {
        late += usize::from(late_call().await);
    }
    assert_eq!(
        late, 0,
        "a retry was called after its lease had ended locally"
    );
}
