//! Consuming: `db.consumer(group, topic)` and the worker loop.
//!
//! A worker runs two loops in one task: the lease loop (heartbeat, renewal, fair-share
//! claiming and releasing, every `lease_renewal`, by default `lease_ttl / 3`) and the
//! delivery loop (find owned partitions with new or due events, deliver them,
//! checkpoint under the lease's fencing token).
//!
//! A partition round: read up to `batch_size` events above `high` and the due pending
//! rows; store the round in flight ([`Inflight`]) in the group row; call the handler
//! per due event in (delivery time, seq) order, while the lease is live locally;
//! checkpoint (new `high`, pending rows added and removed, at most one dead letter,
//! the marker cleared) in one transaction fenced by the lease's token.

use super::emit::{NewEvent, emit_in, topic_partitions};
use super::tables::{EventRow, GroupRow, MemberRow, PendingRow, SchedRow, SeqRow};
use super::window::{Inflight, Sched, Window};
use super::{
    DEAD_LETTER_SUFFIX, check_capability, install, now_us, purge_partitions, truncate_error,
    validate_topic,
};
use async_trait::async_trait;
use datalayer_core::db::{Db, Executor};
use datalayer_core::decode;
use datalayer_core::engine::Op;
use datalayer_core::error::{Error, Result};
use datalayer_core::repo::Repo;
use datalayer_core::value::Value;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::ops::{Bound, Range};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::Instant;

/// One delivered event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Stable, unique id, `"<topic>/<partition>/<seq>/<nonce>"` ([`EventId::id`](crate::EventId::id)):
    /// the same on every redelivery, and never the id of another event (even when a
    /// lost commit lets a later event take the same seq), so handlers can deduplicate
    /// by it.
    pub id: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Commit-order position in the partition.
    pub seq: i64,
    /// The partition key given to `emit`.
    pub key: Vec<u8>,
    /// The payload given to `emit`.
    pub payload: Vec<u8>,
    /// Not delivered before this time.
    pub deliver_at: SystemTime,
    /// Delivery attempt, from 1. Counted in memory by the worker, and durably once a
    /// worker stopped while delivering the event's round (then attempts of earlier
    /// workers count too).
    pub attempt: u32,
    /// Set on events of a dead-letter topic: why the original event landed there.
    pub dead_letter: Option<DeadLetter>,
}

/// What a dead-letter event records about the event that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The failed event's id.
    pub origin: String,
    /// Delivery attempts made.
    pub attempts: u32,
    /// The handler's last error, at most [`MAX_ERROR_BYTES`](crate::MAX_ERROR_BYTES)
    /// bytes ([`truncate_error`](crate::truncate_error)).
    pub error: String,
}

impl Event {
    pub(crate) fn from_row(r: EventRow, attempt: u32) -> Event {
        let deliver_at = if r.deliver_at_us >= 0 {
            UNIX_EPOCH + Duration::from_micros(r.deliver_at_us as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(r.deliver_at_us.unsigned_abs())
        };
        Event {
            id: r.id,
            topic: r.topic,
            partition: r.part as u32,
            seq: r.seq,
            key: r.key,
            payload: r.payload,
            deliver_at,
            attempt,
            dead_letter: r.origin.map(|origin| DeadLetter {
                origin,
                attempts: r.attempts.max(0) as u32,
                error: r.error.unwrap_or_default(),
            }),
        }
    }
    /// The partition key as text (lossy for non-UTF-8 keys).
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }
}

/// The parts of a consumer an engine may replace: how a worker waits for new events
/// (default: sleep for the poll interval) and how it claims free partitions (default:
/// conditional updates of the group's lease rows). PostgreSQL can wait on
/// LISTEN/NOTIFY and claim with `SKIP LOCKED`; see [`ConsumerBuilder::driver`].
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Waits until new events may be available in `topic`, at most `timeout`.
    async fn wait(&self, db: &Db, topic: &str, timeout: Duration) {
        let _ = (db, topic);
        tokio::time::sleep(timeout).await;
    }
    /// Tries to take the leases of up to `req.want` partitions of `(req.group,
    /// req.topic)` whose lease is free or expired at `req.now_us`, for `req.worker`
    /// until `req.until_us`; returns `(partition, fencing)` of each lease taken. The
    /// fencing token must be the value stored by the acquisition (the previous one
    /// plus one).
    async fn claim(&self, db: &Db, req: &Claim<'_>) -> Result<Vec<(u32, i64)>> {
        claim_free(db, req).await
    }
}

/// What a worker asks of [`Driver::claim`].
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    /// The consumer group.
    pub group: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// The claiming worker's id.
    pub worker: &'a str,
    /// At most this many partitions.
    pub want: usize,
    /// Now, in microseconds since the Unix epoch: leases ending before are expired.
    pub now_us: i64,
    /// The new leases end then (microseconds since the Unix epoch).
    pub until_us: i64,
}

/// The default [`Driver`]: polling, and claiming through conditional updates.
#[derive(Clone, Copy, Debug, Default)]
pub struct Polling;

impl Driver for Polling {}

fn group_key(group: &str, topic: &str, part: i32) -> [Value; 3] {
    [
        Value::String(group.to_owned()),
        Value::String(topic.to_owned()),
        Value::I32(part),
    ]
}

/// The generic claim: read the group's rows, take free or expired ones with an update
/// conditional on the fencing value read (so two workers never both win).
async fn claim_free(db: &Db, req: &Claim<'_>) -> Result<Vec<(u32, i64)>> {
    let Claim {
        group,
        topic,
        worker,
        want,
        now_us,
        until_us,
    } = *req;
    if want == 0 {
        return Ok(Vec::new());
    }
    let rows = Repo::<GroupRow, Db>::new(db)
        .scan()
        .eq(group)
        .eq(topic)
        .all()
        .await?;
    let free: Vec<GroupRow> = rows
        .into_iter()
        .filter(|r| r.lease_until_us < now_us)
        .take(want)
        .collect();
    let params: Vec<[Value; 7]> = free
        .iter()
        .map(|r| {
            let [g, t, p] = group_key(group, topic, r.part);
            [
                Value::String(worker.to_owned()),
                Value::I64(until_us),
                g,
                t,
                p,
                Value::I64(r.fencing),
                Value::I64(now_us),
            ]
        })
        .collect();
    // One batch: each update is conditional on the fencing value read, so a partition
    // another worker took in between is simply not acquired (count 0), and on the lease
    // still being expired when the write runs, so a renewal that landed in between
    // (etch queues both behind its writer lock) keeps the lease with its holder.
    let ops = params
        .iter()
        .map(|p| Op::Query {
            query: GroupRow::acquire_expired_query(),
            params: p,
        })
        .collect();
    let mut got = Vec::new();
    for (r, o) in free.iter().zip(db.run_batch(ops).await?) {
        if decode::count(GroupRow::acquire_expired_query(), o)? == 1 {
            got.push((r.part as u32, r.fencing + 1));
        }
    }
    Ok(got)
}

/// Builds and runs a consumer; from [`DbOutbox::consumer`](crate::DbOutbox::consumer).
#[must_use = "call .run(handler, shutdown).await"]
pub struct ConsumerBuilder {
    db: Db,
    group: String,
    topic: String,
    concurrency: usize,
    max_attempts: u32,
    backoff_first: Duration,
    backoff_max: Duration,
    lease_ttl: Duration,
    lease_renewal: Option<Duration>,
    fixed: Option<Range<u32>>,
    poll_interval: Duration,
    worker_id: String,
    batch_size: usize,
    retention_interval: Duration,
    driver: Arc<dyn Driver>,
    checkpoint_fault: Option<CheckpointFault>,
}

/// A test seam: called inside every checkpoint transaction with the partition; an
/// `Err` fails that checkpoint (see `ConsumerBuilder::checkpoint_fault`).
#[doc(hidden)]
pub type CheckpointFault = Arc<dyn Fn(u32) -> Result<()> + Send + Sync>;

impl std::fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("group", &self.group)
            .field("topic", &self.topic)
            .field("worker_id", &self.worker_id)
            .field("concurrency", &self.concurrency)
            .field("max_attempts", &self.max_attempts)
            .field("lease_ttl", &self.lease_ttl)
            .field("partitions", &self.fixed)
            .finish_non_exhaustive()
    }
}

fn default_worker_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "w{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl ConsumerBuilder {
    /// A consumer of `topic` in `group` on `db`, with the defaults documented on each
    /// option.
    pub(crate) fn new(db: &Db, group: &str, topic: &str) -> Self {
        ConsumerBuilder {
            db: db.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            concurrency: 1,
            max_attempts: 5,
            backoff_first: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(10),
            lease_renewal: None,
            fixed: None,
            poll_interval: Duration::from_millis(100),
            worker_id: default_worker_id(),
            batch_size: 256,
            retention_interval: Duration::from_secs(30),
            driver: engine_driver(db).unwrap_or_else(|| Arc::new(Polling)),
            checkpoint_fault: None,
        }
    }
}

/// The engine's own [`Driver`], asked for through
/// [`Engine::extension`](datalayer_core::Engine::extension).
fn engine_driver(db: &Db) -> Option<Arc<dyn Driver>> {
    let ext = db
        .engine()
        .extension(std::any::TypeId::of::<Arc<dyn Driver>>())?;
    ext.downcast::<Arc<dyn Driver>>().ok().map(|b| *b)
}

enum Outcome {
    Done,
    Dead {
        attempts: u32,
        error: String,
    },
    /// Asked to stop, or the lease ended, before the event was processed: delivered
    /// again later.
    Abandoned,
}

/// The shortest lease TTL [`ConsumerBuilder::run`] accepts.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(30);

impl ConsumerBuilder {
    /// Partitions processed in parallel by this worker (events of one partition are
    /// always delivered one at a time, in order). Default: 1.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }
    /// Handler calls per event before it goes to the dead-letter topic
    /// `<topic>.dead`. Default: 5.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }
    /// Wait before the first retry, doubled per attempt up to `max`. Default: 100 ms,
    /// 5 s.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff_first = first;
        self.backoff_max = max.max(first);
        self
    }
    /// How long a partition lease lasts without renewal; renewed every
    /// [`lease_renewal`](Self::lease_renewal). A worker that dies has its partitions
    /// taken over after at most this long. At least [`MIN_LEASE_TTL`] (else
    /// [`run`](Self::run) fails with `InvalidInput`). Default: 10 s.
    ///
    /// A worker fences itself: it stops delivering a partition (and cancels a handler
    /// call in progress, by dropping its future) when `ttl - ttl / 5` has passed since
    /// it sent the last renewal that succeeded, so that even when renewals are late
    /// (etch runs them behind its single writer lock, after any long transaction) it
    /// has stopped before another worker can take the lease (clocks of the workers'
    /// machines must agree within `ttl / 5`). A worker whose lease writes were held
    /// up (over `ttl / 3`) takes no expired lease for one `ttl` after, so that a
    /// holder delayed by the same stall renews first (see the crate docs, "Limits and
    /// liveness").
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }
    /// How often leases are renewed (and the worker's heartbeat written). At most
    /// `lease_ttl / 3`, so that two renewals can be late before the lease is lost
    /// (else [`run`](Self::run) fails with `InvalidInput`). Default: `lease_ttl / 3`.
    pub fn lease_renewal(mut self, every: Duration) -> Self {
        self.lease_renewal = Some(every);
        self
    }
    /// Processes exactly the partitions in `range` (as tito's `PartitionConfig`)
    /// instead of sharing partitions through leases. The partitions are still fenced:
    /// another worker taking them stops this one from checkpointing them. Default:
    /// leases.
    pub fn partitions(mut self, range: Range<u32>) -> Self {
        self.fixed = Some(range);
        self
    }
    /// How often to look for new events when idle. Default: 100 ms.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }
    /// This worker's name in lease rows. Default: process id, time and a counter.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = id.into();
        self
    }
    /// Events read per partition per round (and per checkpoint). Default: 256.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }
    /// How often the worker deletes events of its partitions that every group has
    /// passed ([`super::purge`]). Default: 30 s.
    pub fn retention_interval(mut self, d: Duration) -> Self {
        self.retention_interval = d;
        self
    }
    /// Replaces how the worker waits and claims (see [`Driver`]). Default: the engine's
    /// [`Engine::extension`](datalayer_core::Engine::extension), else [`Polling`].
    pub fn driver(mut self, d: Arc<dyn Driver>) -> Self {
        self.driver = d;
        self
    }

    /// Test seam (fault injection): `f(partition)` runs inside every checkpoint
    /// transaction of this worker, after the fenced update; an `Err` fails that
    /// checkpoint as the engine's own error would. Not for production use.
    #[doc(hidden)]
    pub fn checkpoint_fault(mut self, f: CheckpointFault) -> Self {
        self.checkpoint_fault = Some(f);
        self
    }

    /// Runs the worker until `shutdown` resolves: calls `handler` once per event (at
    /// least once; retried with backoff on `Err` or panic, then dead-lettered), then
    /// finishes the events in flight, checkpoints, releases its leases and returns.
    ///
    /// Attempts are counted durably: the round records which events it delivers before
    /// the first handler call, and every retry before it runs; when a worker stops
    /// mid-round (crash, kill), the next round delivers those events one at a time,
    /// each attempt stored before the handler runs, so an event whose handler crashes
    /// the worker is dead-lettered after `max_attempts` crashes (its handler then ran
    /// at most `max_attempts + 1` times). A retryable error (`Conflict`) of a
    /// checkpoint is retried with backoff; another error backs the partition off
    /// (logged) instead of redelivering its events in a loop.
    ///
    /// # Errors
    /// At start: `Unsupported` without `Capability::outbox`, `InvalidInput` for a bad
    /// name, a partition range outside the topic, a `lease_ttl` under
    /// [`MIN_LEASE_TTL`] or a `lease_renewal` that is zero or over `lease_ttl / 3`;
    /// the engine's errors. Errors while running are logged (`tracing`) and retried;
    /// they do not stop the worker.
    pub async fn run<H, F>(
        self,
        handler: H,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<()>
    where
        H: Fn(Event) -> F + Send + Sync,
        F: Future<Output = Result<()>> + Send,
    {
        check_capability(&self.db)?;
        validate_topic(&self.group)?;
        validate_topic(&self.topic)?;
        self.validate_lease()?;
        install(&self.db).await?;
        let partitions = topic_partitions(&self.db, &self.topic, None).await?;
        let range = match &self.fixed {
            Some(r) if r.end > partitions || r.start >= r.end => {
                return Err(Error::invalid_input(format!(
                    "partition range {r:?} is empty or outside topic {} (0..{partitions})",
                    self.topic
                )));
            }
            Some(r) => r.clone(),
            None => 0..partitions,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let w = Worker {
            b: self,
            partitions,
            owned: Mutex::new(HashMap::new()),
            rounds: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
            prompt_since: Mutex::new(None),
            stop: stop_rx,
        };
        w.ensure_rows(range.clone()).await?;
        if w.b.fixed.is_some() {
            w.take_fixed(range).await?;
        }
        let work = async {
            futures::join!(w.lease_loop(), w.delivery_loop(&handler));
        };
        let sd = async {
            shutdown.await;
            let _ = stop_tx.send(true);
            futures::future::pending::<()>().await;
        };
        tokio::select! {
            () = work => {}
            () = sd => {}
        }
        w.release_all().await;
        Ok(())
    }
}

impl ConsumerBuilder {
    /// The renewal interval.
    fn renewal(&self) -> Duration {
        self.lease_renewal.unwrap_or(self.lease_ttl / 3)
    }

    /// Checks the lease settings (see [`ConsumerBuilder::lease_ttl`]).
    fn validate_lease(&self) -> Result<()> {
        if self.lease_ttl < MIN_LEASE_TTL {
            return Err(Error::invalid_input(format!(
                "outbox consumer: lease_ttl of {:?} is under the minimum of {MIN_LEASE_TTL:?}",
                self.lease_ttl
            )));
        }
        let r = self.renewal();
        if r.is_zero() || r > self.lease_ttl / 3 {
            return Err(Error::invalid_input(format!(
                "outbox consumer: lease_renewal of {r:?} must be above zero and at most \
                 lease_ttl / 3 ({:?}), so that a late renewal does not lose the lease",
                self.lease_ttl / 3
            )));
        }
        Ok(())
    }
}

/// Where a lease this worker holds ends, as seen locally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    /// Fixed partition ranges: no expiry (still fenced at checkpoint).
    Never,
    /// Deliveries stop then unless a renewal moved it.
    At(Instant),
}

/// A lease this worker holds on one partition.
struct Lease {
    /// The fencing token of the acquisition.
    fencing: i64,
    /// The local deadline, watched by the partition's deliveries; removing the lease
    /// (dropping the sender) revokes it at once.
    deadline: watch::Sender<Deadline>,
}

/// A partition's delivery backoff after a failed checkpoint.
#[derive(Clone, Copy, Debug)]
struct Backoff {
    until: Instant,
    failures: u32,
}

struct Worker {
    b: ConsumerBuilder,
    partitions: u32,
    /// Partitions this worker holds → its lease.
    owned: Mutex<HashMap<u32, Lease>>,
    /// Held by a partition's round while it delivers and checkpoints; a release waits
    /// for it, so that no handler of the partition runs once its lease is released.
    rounds: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
    /// Partitions backed off after a checkpoint failed with a non-retryable error.
    backoff: Mutex<HashMap<u32, Backoff>>,
    /// Since when every lease round's writes went through promptly (`None`: the last
    /// one was held up, e.g. behind etch's writer lock); see [`Worker::may_take_expired`].
    prompt_since: Mutex<Option<Instant>>,
    stop: watch::Receiver<bool>,
}

impl Worker {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `d`; returns false when asked to stop first.
    async fn sleep(&self, d: Duration) -> bool {
        let mut rx = self.stop.clone();
        if *rx.borrow() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = rx.wait_for(|s| *s) => false,
        }
    }

    fn db(&self) -> &Db {
        &self.b.db
    }

    fn ttl_us(&self) -> i64 {
        self.b.lease_ttl.as_micros() as i64
    }

    /// The local deadline of a lease renewed or acquired with a request sent at `sent`:
    /// the TTL minus a safety margin of a fifth of it.
    fn deadline_after(&self, sent: Instant) -> Deadline {
        Deadline::At(sent + self.b.lease_ttl - self.b.lease_ttl / 5)
    }

    fn insert_lease(&self, part: u32, fencing: i64, deadline: Deadline) {
        let (tx, _) = watch::channel(deadline);
        self.owned.lock().insert(
            part,
            Lease {
                fencing,
                deadline: tx,
            },
        );
    }

    /// The deadline watch of the lease `(part, fencing)`, if this worker holds it.
    fn lease(&self, part: u32, fencing: i64) -> Option<watch::Receiver<Deadline>> {
        self.owned
            .lock()
            .get(&part)
            .filter(|l| l.fencing == fencing)
            .map(|l| l.deadline.subscribe())
    }

    /// Whether this worker holds `(part, fencing)` and its local deadline has not passed.
    fn lease_valid(&self, part: u32, fencing: i64) -> bool {
        self.owned
            .lock()
            .get(&part)
            .is_some_and(|l| l.fencing == fencing && live(*l.deadline.borrow()))
    }

    /// The partitions owned with a live lease, and their fencing tokens.
    fn owned_live(&self) -> HashMap<u32, i64> {
        self.owned
            .lock()
            .iter()
            .filter(|(_, l)| live(*l.deadline.borrow()))
            .map(|(&p, l)| (p, l.fencing))
            .collect()
    }

    fn owned_all(&self) -> Vec<(u32, i64)> {
        self.owned
            .lock()
            .iter()
            .map(|(&p, l)| (p, l.fencing))
            .collect()
    }

    fn round_lock(&self, part: u32) -> Arc<tokio::sync::Mutex<()>> {
        self.rounds.lock().entry(part).or_default().clone()
    }

    /// Creates the group's missing rows for `range`, in one transaction (read and
    /// insert under the same snapshot / writer lock); retried when a concurrent worker
    /// created some of them first.
    async fn ensure_rows(&self, range: Range<u32>) -> Result<()> {
        let mut last = None;
        // Up to about 3 s in all: on a loaded machine a pessimistic store (TiKV) can
        // turn several attempts in a row away while other transactions commit rows of
        // the group (a clean CI run of the conformance suite once ran out of 10
        // attempts, 225 ms).
        for attempt in 0..40u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis((5 * u64::from(attempt)).min(100))).await;
            }
            let tx = self.db().begin().await?;
            let r = async {
                let have: HashSet<i32> = tx
                    .repo::<GroupRow>()
                    .scan()
                    .eq(&self.b.group)
                    .eq(&self.b.topic)
                    .all()
                    .await?
                    .into_iter()
                    .map(|r| r.part)
                    .collect();
                let missing: Vec<GroupRow> = range
                    .clone()
                    .map(|p| p as i32)
                    .filter(|p| !have.contains(p))
                    .map(|part| GroupRow {
                        grp: self.b.group.clone(),
                        topic: self.b.topic.clone(),
                        part,
                        high: 0,
                        pending: Vec::new(),
                        lease_owner: String::new(),
                        lease_until_us: 0,
                        fencing: 0,
                    })
                    .collect();
                tx.repo::<GroupRow>().insert_many(&missing).await
            }
            .await;
            // A commit can lose a race too (optimistic engines report it at commit):
            // the transaction re-reads what exists, so running it again is safe even
            // after a commit whose outcome is unknown.
            let r = match r {
                Ok(_) => tx.commit().await,
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) if e.is_already_exists() || e.is_retryable() || e.is_commit_unknown() => {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::conflict("outbox: could not create the group's rows")))
    }

    /// Fixed ranges: takes every partition of `range`, whatever its lease.
    async fn take_fixed(&self, range: Range<u32>) -> Result<()> {
        let repo = Repo::<GroupRow, Db>::new(self.db());
        for part in range {
            for attempt in 0.. {
                let key = (self.b.group.as_str(), self.b.topic.as_str(), part as i32);
                let r = repo
                    .get(key)
                    .await?
                    .ok_or_else(|| Error::engine("outbox", "group row missing after creation"))?;
                let [g, t, p] = group_key(&self.b.group, &self.b.topic, part as i32);
                let params = [
                    Value::String(self.b.worker_id.clone()),
                    Value::I64(i64::MAX),
                    g,
                    t,
                    p,
                    Value::I64(r.fencing),
                ];
                let op = Op::Query {
                    query: GroupRow::acquire_query(),
                    params: &params,
                };
                if decode::count(GroupRow::acquire_query(), self.db().run(op).await?)? == 1 {
                    self.insert_lease(part, r.fencing + 1, Deadline::Never);
                    break;
                }
                if attempt >= 10 {
                    return Err(Error::conflict(format!(
                        "outbox: could not take partition {part}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(5 * (attempt + 1))).await;
            }
        }
        Ok(())
    }

    /// Sets `lease_until_us` of owned partitions `(part, fencing)` in one batch; per
    /// partition, false when the lease was lost.
    async fn set_until_many(&self, parts: &[(u32, i64)], until_us: i64) -> Result<Vec<bool>> {
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let params: Vec<[Value; 6]> = parts
            .iter()
            .map(|&(part, fencing)| {
                let [g, t, p] = group_key(&self.b.group, &self.b.topic, part as i32);
                [
                    Value::I64(until_us),
                    g,
                    t,
                    p,
                    Value::String(self.b.worker_id.clone()),
                    Value::I64(fencing),
                ]
            })
            .collect();
        let ops = params
            .iter()
            .map(|p| Op::Query {
                query: GroupRow::renew_query(),
                params: p,
            })
            .collect();
        self.db()
            .run_batch(ops)
            .await?
            .into_iter()
            .map(|o| decode::count(GroupRow::renew_query(), o).map(|n| n == 1))
            .collect()
    }

    /// Gives up `parts`: revokes them locally (a handler call in progress is
    /// cancelled), waits for their rounds to end, then releases them in the store.
    async fn release(&self, parts: &[(u32, i64)]) -> Result<()> {
        if parts.is_empty() {
            return Ok(());
        }
        {
            let mut o = self.owned.lock();
            for (part, fencing) in parts {
                if o.get(part).is_some_and(|l| l.fencing == *fencing) {
                    o.remove(part);
                }
            }
        }
        let mut guards = Vec::with_capacity(parts.len());
        for (part, _) in parts {
            guards.push(self.round_lock(*part).lock_owned().await);
        }
        self.set_until_many(parts, 0).await?;
        Ok(())
    }

    async fn release_all(&self) {
        let owned = self.owned_all();
        if let Err(e) = self.release(&owned).await {
            tracing::warn!(error = %e, "outbox: releasing the leases failed");
        }
        if self.b.fixed.is_none() {
            let key = (
                self.b.group.as_str(),
                self.b.topic.as_str(),
                self.b.worker_id.as_str(),
            );
            if let Err(e) = self.db().repo::<MemberRow>().delete(key).await {
                tracing::warn!(error = %e, "outbox: removing the member row failed");
            }
        }
    }

    async fn lease_loop(&self) {
        if self.b.fixed.is_some() {
            return;
        }
        let tick = self.b.renewal();
        loop {
            if self.stopping() {
                return;
            }
            if let Err(e) = self.lease_round().await {
                tracing::warn!(group = %self.b.group, topic = %self.b.topic, error = %e, "outbox: lease round failed");
            }
            if !self.sleep(tick).await {
                return;
            }
        }
    }

    /// Heartbeat, renewal, then release or claim towards this worker's fair share.
    async fn lease_round(&self) -> Result<()> {
        // The local deadlines count from before anything is sent: whatever the
        // writes wait for, the stored expiry is never earlier than the local one.
        let started = Instant::now();
        let now = now_us();
        let until = now + self.ttl_us();
        let members = self.db().repo::<MemberRow>();
        members
            .upsert(&MemberRow {
                grp: self.b.group.clone(),
                topic: self.b.topic.clone(),
                worker: self.b.worker_id.clone(),
                until_us: until,
            })
            .await?;
        // The renewal's expiry counts from when it is sent: after a heartbeat that
        // waited (etch: behind a long transaction), not from before that wait.
        let sent = Instant::now();
        let until = now_us() + self.ttl_us();
        let owned = self.owned_all();
        for ((part, fencing), kept) in owned.iter().zip(self.set_until_many(&owned, until).await?) {
            let mut o = self.owned.lock();
            let Some(l) = o.get(part).filter(|l| l.fencing == *fencing) else {
                continue;
            };
            if kept {
                l.deadline.send_replace(self.deadline_after(sent));
            } else {
                tracing::info!(part, worker = %self.b.worker_id, "outbox: lease lost");
                o.remove(part);
            }
        }
        self.note_write_latency(started);
        let all = members
            .scan()
            .eq(&self.b.group)
            .eq(&self.b.topic)
            .all()
            .await?;
        let mut live: Vec<&str> = Vec::new();
        for m in &all {
            if m.until_us >= now {
                live.push(&m.worker);
            } else if m.until_us < now - 10 * self.ttl_us() {
                let _ = members
                    .delete((m.grp.as_str(), m.topic.as_str(), m.worker.as_str()))
                    .await;
            }
        }
        if !live.contains(&self.b.worker_id.as_str()) {
            live.push(&self.b.worker_id);
        }
        live.sort_unstable();
        let rank = live
            .iter()
            .position(|w| *w == self.b.worker_id)
            .unwrap_or(0);
        let share = fair_share(self.partitions as usize, live.len(), rank);
        let mut held = self.owned_all();
        if held.len() > share {
            held.sort_unstable();
            let extra = held.split_off(share);
            self.release(&extra).await?;
        } else if held.len() < share {
            let sent = Instant::now();
            let now = now_us();
            let got = self
                .b
                .driver
                .claim(
                    self.db(),
                    &Claim {
                        group: &self.b.group,
                        topic: &self.b.topic,
                        worker: &self.b.worker_id,
                        want: share - held.len(),
                        // Free leases only (ended at 0: released or never taken)
                        // until this worker's writes have gone through promptly for
                        // a whole TTL.
                        now_us: if self.may_take_expired() { now } else { 1 },
                        until_us: now + self.ttl_us(),
                    },
                )
                .await?;
            for (part, fencing) in got {
                self.insert_lease(part, fencing, self.deadline_after(sent));
            }
        }
        Ok(())
    }

    /// Records how long the heartbeat and renewals sent at `sent` took: longer than
    /// a third of the TTL means that the store held writes up (on etch, a user
    /// transaction holding the single writer lock), which ends the prompt streak.
    fn note_write_latency(&self, sent: Instant) {
        let took = sent.elapsed();
        let mut p = self.prompt_since.lock();
        if took > self.b.lease_ttl / 3 {
            tracing::warn!(
                worker = %self.b.worker_id, waited = ?took, lease_ttl = ?self.b.lease_ttl,
                "outbox: lease renewal was held up behind other writes; deliveries paused until \
                 it landed, expired leases not taken for one lease_ttl"
            );
            *p = None;
        } else if p.is_none() {
            *p = Some(sent);
        }
    }

    /// Whether this worker may take over leases that expired (not only free ones): its
    /// writes have gone through promptly for at least one TTL. A lease that expired
    /// while the store held every worker's writes up (etch: one long user transaction
    /// holds the writer lock, so the holder's renewal waits too) is then renewed by
    /// its holder before anyone takes it; a holder that is really gone has not renewed
    /// by then and is replaced one TTL later than it would be otherwise.
    fn may_take_expired(&self) -> bool {
        self.prompt_since
            .lock()
            .is_some_and(|t| t.elapsed() >= self.b.lease_ttl)
    }

    async fn delivery_loop<H, F>(&self, handler: &H)
    where
        H: Fn(Event) -> F + Send + Sync,
        F: Future<Output = Result<()>> + Send,
    {
        let mut last_purge = Instant::now();
        loop {
            if self.stopping() {
                return;
            }
            let busy = match self.delivery_round(handler).await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(group = %self.b.group, topic = %self.b.topic, error = %e, "outbox: delivery round failed");
                    false
                }
            };
            if last_purge.elapsed() >= self.b.retention_interval {
                last_purge = Instant::now();
                let parts: Vec<u32> = self.owned_live().into_keys().collect();
                if !parts.is_empty()
                    && let Err(e) = purge_partitions(self.db(), &self.b.topic, Some(&parts)).await
                {
                    tracing::warn!(topic = %self.b.topic, error = %e, "outbox: retention failed");
                }
            }
            if !busy {
                let mut rx = self.stop.clone();
                tokio::select! {
                    () = self.b.driver.wait(self.db(), &self.b.topic, self.b.poll_interval) => {}
                    _ = rx.wait_for(|s| *s) => return,
                }
            }
        }
    }

    /// One round over the owned partitions with work; returns how many had work.
    async fn delivery_round<H, F>(&self, handler: &H) -> Result<usize>
    where
        H: Fn(Event) -> F + Send + Sync,
        F: Future<Output = Result<()>> + Send,
    {
        let mut owned = self.owned_live();
        {
            let now = Instant::now();
            let mut b = self.backoff.lock();
            owned.retain(|p, _| b.get(p).is_none_or(|x| x.until <= now));
            b.retain(|p, _| self.owned.lock().contains_key(p));
        }
        if owned.is_empty() {
            return Ok(0);
        }
        let last: HashMap<i32, i64> = Repo::<SeqRow, Db>::new(self.db())
            .scan()
            .eq(&self.b.topic)
            .all()
            .await?
            .into_iter()
            .map(|s| (s.part, s.last))
            .collect();
        let rows = Repo::<GroupRow, Db>::new(self.db())
            .scan()
            .eq(&self.b.group)
            .eq(&self.b.topic)
            .all()
            .await?;
        let now = now_us();
        let mut work = Vec::new();
        for r in rows {
            let part = r.part as u32;
            let Some(&fencing) = owned.get(&part) else {
                continue;
            };
            if r.lease_owner != self.b.worker_id || r.fencing != fencing {
                let mut o = self.owned.lock();
                if o.get(&part).is_some_and(|l| l.fencing == fencing) {
                    o.remove(&part);
                }
                continue;
            }
            let w = Window::decode(r.high, &r.pending)?;
            let last = last.get(&r.part).copied().unwrap_or(0);
            if w.has_work(last, now) {
                work.push((part, fencing, w, last));
            }
        }
        let n = work.len();
        futures::stream::iter(work)
            .for_each_concurrent(self.b.concurrency, |(part, fencing, w, last)| async move {
                if let Err(e) = self.partition_round(handler, part, fencing, w, last).await {
                    tracing::warn!(part, error = %e, "outbox: partition round failed");
                }
            })
            .await;
        Ok(n)
    }

    /// Delivers the due events of one partition and checkpoints. `last` is the
    /// partition's last seq, read before any of its events: every seq up to it was
    /// committed then, so a lane that read everything above its mark may move it there.
    async fn partition_round<H, F>(
        &self,
        handler: &H,
        part: u32,
        fencing: i64,
        mut w: Window,
        last: i64,
    ) -> Result<()>
    where
        H: Fn(Event) -> F + Send + Sync,
        F: Future<Output = Result<()>> + Send,
    {
        let _round = self.round_lock(part).lock_owned().await;
        if !self.lease_valid(part, fencing) {
            return Ok(());
        }
        if !w.legacy.is_empty() {
            // A position of an earlier version: move its pending list to rows first.
            let moved = std::mem::take(&mut w.legacy);
            let ck = Checkpoint {
                high: w.high,
                add: moved,
                sched: w.sched,
                ..Checkpoint::default()
            };
            w.next_due_us = self.checkpoint(part, fencing, &w, ck).await?;
            return Ok(());
        }
        let events = Repo::<EventRow, Db>::new(self.db());
        let now = now_us();
        let fetched_rows = events
            .scan()
            .eq(&self.b.topic)
            .eq(part as i32)
            .range((Bound::Excluded(w.high), Bound::Unbounded))
            .limit(self.b.batch_size)
            .all()
            .await?;
        let fetched: Vec<(i64, i64)> = fetched_rows
            .iter()
            .map(|r| (r.seq, r.deliver_at_us))
            .collect();
        // Pending rows are keyed by delivery time: the due ones are a key range.
        let pending_due = if w.has_due(now) {
            Repo::<PendingRow, Db>::new(self.db())
                .scan()
                .eq(&self.b.group)
                .eq(&self.b.topic)
                .eq(part as i32)
                .range(..=now)
                .limit(self.b.batch_size)
                .all()
                .await?
        } else {
            Vec::new()
        };
        let mut processed: HashSet<i64> = HashSet::new();
        let mut due: Vec<EventRow> = Vec::new();
        if !pending_due.is_empty() {
            let keys: Vec<(&str, i32, i64)> = pending_due
                .iter()
                .map(|p| (self.b.topic.as_str(), part as i32, p.seq))
                .collect();
            for (p, row) in pending_due.iter().zip(events.get_many(keys).await?) {
                match row {
                    Some(r) => due.push(r),
                    // Gone (deleted by hand): nothing to deliver.
                    None => {
                        processed.insert(p.seq);
                    }
                }
            }
        }
        let read_all = fetched_rows.len() < self.b.batch_size;
        due.extend(fetched_rows.into_iter().filter(|r| r.deliver_at_us <= now));
        let lane = self.sched_lane(part, &w, last, now).await?;
        due.extend(lane.rows.iter().cloned());
        due.sort_by_key(|r| (r.deliver_at_us, r.seq));
        // A round found in flight: its worker stopped mid-round. Deliver its events one
        // at a time, counting each attempt before the handler runs.
        let careful = w.inflight;
        if let Some(m) = careful {
            due.retain(|r| (m.lo..=m.hi).contains(&r.seq));
        }
        let mut inflight = careful;
        if careful.is_none() && !due.is_empty() {
            let m = Inflight {
                lo: due.iter().map(|r| r.seq).min().unwrap_or(0),
                hi: due.iter().map(|r| r.seq).max().unwrap_or(0),
                seq: 0,
                attempts: 0,
            };
            self.mark(part, fencing, &w, m).await?;
            inflight = Some(m);
        }
        let mut dead: Option<NewEvent> = None;
        let mut finished = true;
        // In careful mode, the events before the one the marker counts returned before
        // (the marker moves on only then): delivered again without counting, so that
        // the count of the marker's event is kept.
        let mut counting = careful.is_some_and(|m| m.seq == 0);
        for row in due {
            if self.stopping() || !self.lease_valid(part, fencing) {
                finished = false;
                break;
            }
            let seq = row.seq;
            counting |= careful.is_some_and(|m| m.seq == seq);
            let outcome = self
                .deliver(handler, &row, part, fencing, &w, &mut inflight, counting)
                .await;
            match outcome {
                Outcome::Done => {}
                Outcome::Dead { attempts, error } => {
                    tracing::warn!(id = %row.id, attempts, error = %truncate_error(&error), "outbox: event dead-lettered");
                    dead = Some(NewEvent {
                        topic: format!("{}{DEAD_LETTER_SUFFIX}", self.b.topic),
                        key: row.key,
                        payload: row.payload,
                        deliver_at_us: None,
                        origin: Some(row.id),
                        attempts: attempts.min(i32::MAX as u32) as i32,
                        error: Some(truncate_error(&error).into_owned()),
                        partitions: Some(self.partitions),
                    });
                    processed.insert(seq);
                    // One dead letter per checkpoint: bounds what it holds.
                    finished = false;
                    break;
                }
                Outcome::Abandoned => {
                    finished = false;
                    break;
                }
            }
            processed.insert(seq);
        }
        let mut adv = w.advance(&fetched, now, &processed);
        // Everything above `high` was read and processed (or is pending): every seq up
        // to `last` was committed before the read, so none of them can appear later.
        if read_all && fetched.last().is_none_or(|&(s, _)| s == adv.high) {
            adv.high = adv.high.max(last);
        }
        let sched = lane.advance(&w.sched, &processed);
        // The marker stays only while it counts attempts of an event not processed.
        let keep = inflight.filter(|m| !finished && m.seq != 0 && !processed.contains(&m.seq));
        let remove: Vec<(i64, i64)> = pending_due
            .iter()
            .filter(|p| processed.contains(&p.seq))
            .map(|p| (p.deliver_at_us, p.seq))
            .collect();
        if adv.high == w.high
            && sched == w.sched
            && adv.pending.is_empty()
            && remove.is_empty()
            && dead.is_none()
            && keep == w.inflight
            && inflight == w.inflight
        {
            return Ok(());
        }
        failpoint!(crate::failpoints::BEFORE_CHECKPOINT);
        let ck = Checkpoint {
            high: adv.high,
            add: adv.pending,
            remove,
            inflight: keep,
            dead,
            sched,
        };
        self.checkpoint(part, fencing, &w, ck).await.map(|_| ())
    }

    /// Reads the partition's scheduled lane for a round (see [`Sched`]): the events
    /// committed since the last round (seq in `(seen, last]`) that are at or before the
    /// cursor (late commits), then the due events after the cursor in delivery order.
    /// Neither read touches events scheduled after `now`, whatever their number.
    async fn sched_lane(&self, part: u32, w: &Window, last: i64, now: i64) -> Result<Lane> {
        let repo = Repo::<SchedRow, Db>::new(self.db());
        let (topic, p, batch) = (self.b.topic.as_str(), part as i32, self.b.batch_size);
        let s = w.sched;
        let mut lane = Lane {
            seen: s.seen,
            ..Lane::default()
        };
        if last > s.seen {
            lane.seen = last;
            if s.done.is_some() {
                let got = repo
                    .scan()
                    .eq(topic)
                    .eq(p)
                    .range((Bound::Excluded(s.seen), Bound::Included(last)))
                    .limit(batch)
                    .all()
                    .await?;
                if got.len() >= batch {
                    lane.seen = got.last().map_or(last, |r| r.seq);
                }
                for r in got {
                    if s.is_done(r.deliver_at_us, r.seq) {
                        lane.late.push(r.seq);
                        lane.rows.push(r.into_event());
                    }
                }
            }
        }
        if last <= s.seen && s.next_due_us.is_none_or(|d| d > now) {
            return Ok(lane);
        }
        lane.looked = true;
        if s.done.is_some_and(|(at, _)| at > now) {
            // The clock went back: nothing after the cursor is due yet.
            lane.complete = true;
            lane.next_after = s.done.map(|(at, _)| at);
            return Ok(lane);
        }
        let mut got = Vec::new();
        if let Some((at, seq)) = s.done {
            got = repo
                .find("by_due")
                .eq(topic)
                .eq(p)
                .eq(at)
                .range((Bound::Excluded(seq), Bound::Unbounded))
                .limit(batch)
                .all()
                .await?;
        }
        if got.len() < batch {
            let lower = s
                .done
                .map_or(Bound::Unbounded, |(at, _)| Bound::Excluded(at));
            let want = batch - got.len();
            let more = repo
                .find("by_due")
                .eq(topic)
                .eq(p)
                .range((lower, Bound::Included(now)))
                .limit(want)
                .all()
                .await?;
            lane.complete = more.len() < want;
            got.extend(more);
        }
        if lane.complete {
            lane.next_after = repo
                .find("by_due")
                .eq(topic)
                .eq(p)
                .range((Bound::Excluded(now), Bound::Unbounded))
                .limit(1)
                .all()
                .await?
                .first()
                .map(|r| r.deliver_at_us);
        }
        for r in got {
            lane.due.push((r.deliver_at_us, r.seq));
            lane.rows.push(r.into_event());
        }
        Ok(lane)
    }

    /// Stores `m` as the partition's round in flight (a fenced update of the group
    /// row, position unchanged).
    ///
    /// # Errors
    /// The engine's; `Conflict` when the lease was lost (it is then dropped).
    async fn mark(&self, part: u32, fencing: i64, w: &Window, m: Inflight) -> Result<()> {
        let state = Window {
            inflight: Some(m),
            ..w.clone()
        };
        let params = self.checkpoint_params(part, fencing, w.high, &state);
        let op = Op::Query {
            query: GroupRow::checkpoint_query(),
            params: &params,
        };
        if decode::count(GroupRow::checkpoint_query(), self.db().run(op).await?)? == 1 {
            Ok(())
        } else {
            Err(self.lease_lost(part, fencing))
        }
    }

    /// Drops the lease `(part, fencing)` and returns the error saying so.
    fn lease_lost(&self, part: u32, fencing: i64) -> Error {
        let mut o = self.owned.lock();
        if o.get(&part).is_some_and(|l| l.fencing == fencing) {
            o.remove(&part);
        }
        Error::conflict(format!(
            "outbox: lease on partition {part} lost (fencing {fencing}); checkpoint refused"
        ))
    }

    fn checkpoint_params(&self, part: u32, fencing: i64, high: i64, w: &Window) -> [Value; 7] {
        let [g, t, p] = group_key(&self.b.group, &self.b.topic, part as i32);
        [
            Value::I64(high),
            Value::Bytes(w.encode_state()),
            g,
            t,
            p,
            Value::String(self.b.worker_id.clone()),
            Value::I64(fencing),
        ]
    }

    /// Stores the round's outcome in one transaction, only if this worker still holds
    /// the lease with this fencing token; a retryable error (`Conflict`) is retried
    /// with backoff (up to [`CHECKPOINT_RETRIES`] times), another one backs the
    /// partition off for `backoff_max`. Returns the new earliest pending delivery
    /// time.
    async fn checkpoint(
        &self,
        part: u32,
        fencing: i64,
        w: &Window,
        ck: Checkpoint,
    ) -> Result<Option<i64>> {
        let mut tries = 0u32;
        loop {
            match self.checkpoint_once(part, fencing, w, &ck).await {
                Ok(Some(next_due)) => {
                    self.backoff.lock().remove(&part);
                    return Ok(next_due);
                }
                Ok(None) => return Err(self.lease_lost(part, fencing)),
                Err(e) if e.is_retryable() && tries < CHECKPOINT_RETRIES => {
                    tries += 1;
                    tracing::debug!(part, error = %e, tries, "outbox: checkpoint failed, retrying");
                    tokio::time::sleep(self.backoff_for(tries)).await;
                }
                Err(e) => {
                    let mut b = self.backoff.lock();
                    let failures = b.get(&part).map_or(0, |x| x.failures) + 1;
                    let wait = self.b.backoff_max;
                    b.insert(
                        part,
                        Backoff {
                            until: Instant::now() + wait,
                            failures,
                        },
                    );
                    tracing::warn!(part, error = %e, failures, backoff = ?wait, "outbox: checkpoint failed; partition backed off");
                    return Err(e);
                }
            }
        }
    }

    /// `backoff_first` doubled per `n - 1`, at most `backoff_max`.
    fn backoff_for(&self, n: u32) -> Duration {
        self.b
            .backoff_first
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.b.backoff_max)
    }

    /// One checkpoint transaction; `Ok(None)` when the lease was lost.
    async fn checkpoint_once(
        &self,
        part: u32,
        fencing: i64,
        w: &Window,
        ck: &Checkpoint,
    ) -> Result<Option<Option<i64>>> {
        let tx = self.db().begin().await?;
        let r = async {
            let pending = tx.repo::<PendingRow>();
            for &(due, seq) in &ck.remove {
                pending
                    .delete((
                        self.b.group.as_str(),
                        self.b.topic.as_str(),
                        part as i32,
                        due,
                        seq,
                    ))
                    .await?;
            }
            let add: Vec<PendingRow> = ck
                .add
                .iter()
                .map(|&(seq, due)| PendingRow {
                    grp: self.b.group.clone(),
                    topic: self.b.topic.clone(),
                    part: part as i32,
                    deliver_at_us: due,
                    seq,
                })
                .collect();
            if !add.is_empty() {
                pending.upsert_many(&add).await?;
            }
            let next_due = if ck.add.is_empty() && ck.remove.is_empty() {
                w.next_due_us
            } else {
                pending
                    .scan()
                    .eq(&self.b.group)
                    .eq(&self.b.topic)
                    .eq(part as i32)
                    .limit(1)
                    .all()
                    .await?
                    .first()
                    .map(|p| p.deliver_at_us)
            };
            let state = Window {
                high: ck.high,
                next_due_us: next_due,
                inflight: ck.inflight,
                legacy: Vec::new(),
                sched: ck.sched,
            };
            let params = self.checkpoint_params(part, fencing, ck.high, &state);
            let op = Op::Query {
                query: GroupRow::checkpoint_query(),
                params: &params,
            };
            if decode::count(GroupRow::checkpoint_query(), tx.run(op).await?)? != 1 {
                return Ok(None);
            }
            if let Some(d) = &ck.dead {
                emit_in(&tx, d.clone()).await?;
            }
            if let Some(f) = &self.b.checkpoint_fault {
                f(part)?;
            }
            failpoint!(crate::failpoints::CHECKPOINT_BEFORE_COMMIT);
            Ok(Some(next_due))
        }
        .await;
        match r {
            Ok(Some(next)) => tx.commit().await.map(|()| Some(next)),
            Ok(None) => {
                let _ = tx.rollback().await;
                Ok(None)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Delivers one event: handler calls with retries and backoff, each retry (and in
    /// `careful` mode every call) counted in the round's marker before it runs.
    /// Handler calls are cancelled when the lease ends.
    #[allow(clippy::too_many_arguments)]
    async fn deliver<H, F>(
        &self,
        handler: &H,
        row: &EventRow,
        part: u32,
        fencing: i64,
        w: &Window,
        inflight: &mut Option<Inflight>,
        careful: bool,
    ) -> Outcome
    where
        H: Fn(Event) -> F + Send + Sync,
        F: Future<Output = Result<()>> + Send,
    {
        let Some(mut lease) = self.lease(part, fencing) else {
            return Outcome::Abandoned;
        };
        let prior = inflight
            .filter(|m| m.seq == row.seq)
            .map_or(0, |m| m.attempts);
        if prior >= self.b.max_attempts {
            return Outcome::Dead {
                attempts: prior,
                error: format!(
                    "the handler did not return: the worker stopped during each of its {prior} attempts"
                ),
            };
        }
        let mut attempt = prior + 1;
        loop {
            if careful || attempt > 1 {
                let m = Inflight {
                    seq: row.seq,
                    attempts: attempt,
                    ..inflight.unwrap_or_default()
                };
                if let Err(e) = self.mark(part, fencing, w, m).await {
                    tracing::warn!(id = %row.id, error = %e, "outbox: counting the attempt failed");
                    return Outcome::Abandoned;
                }
                *inflight = Some(m);
            }
            // The marker write (or the retry's backoff) may have ended after the lease's
            // local deadline: never start a call then (`select!` below may poll the
            // handler before noticing, and a handler that does not yield would run whole).
            if !live(*lease.borrow()) {
                return Outcome::Abandoned;
            }
            let ev = Event::from_row(row.clone(), attempt);
            failpoint!(crate::failpoints::BEFORE_HANDLER);
            let call = AssertUnwindSafe(handler(ev)).catch_unwind();
            let r = tokio::select! {
                r = call => r,
                () = ended(&mut lease) => {
                    tracing::info!(id = %row.id, part, "outbox: lease ended during the handler call; cancelled");
                    return Outcome::Abandoned;
                }
            };
            let err = match r {
                Ok(Ok(())) => {
                    failpoint!(crate::failpoints::AFTER_HANDLER);
                    return Outcome::Done;
                }
                Ok(Err(e)) => e.to_string(),
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic".into());
                    format!("handler panicked: {msg}")
                }
            };
            if attempt >= self.b.max_attempts {
                return Outcome::Dead {
                    attempts: attempt,
                    error: err,
                };
            }
            tracing::debug!(id = %row.id, attempt, error = %truncate_error(&err), "outbox: handler failed, retrying");
            let wait = self.backoff_for(attempt);
            let mut stop = self.stop.clone();
            let slept = tokio::select! {
                () = tokio::time::sleep(wait) => true,
                _ = stop.wait_for(|s| *s) => false,
                () = ended(&mut lease) => false,
            };
            if !slept {
                return Outcome::Abandoned;
            }
            attempt += 1;
        }
    }
}

/// What a round read from the scheduled lane ([`Worker::sched_lane`]).
#[derive(Default)]
struct Lane {
    /// The events to deliver: the late ones, then the due ones.
    rows: Vec<EventRow>,
    /// Seqs of the late events (at or before the cursor, committed since).
    late: Vec<i64>,
    /// The new `seen` once every late event is processed.
    seen: i64,
    /// Whether the due events after the cursor were read.
    looked: bool,
    /// `(deliver_at_us, seq)` of the due events after the cursor, in delivery order.
    due: Vec<(i64, i64)>,
    /// Whether `due` holds every due event after the cursor.
    complete: bool,
    /// The delivery time of the first event after the due ones (`complete` only).
    next_after: Option<i64>,
}

impl Lane {
    /// The lane's new position once `processed` are done.
    fn advance(&self, old: &Sched, processed: &HashSet<i64>) -> Sched {
        let mut s = *old;
        s.seen = match self.late.iter().filter(|q| !processed.contains(q)).min() {
            Some(&first) => (first - 1).clamp(old.seen, self.seen),
            None => self.seen,
        };
        if !self.looked {
            return s;
        }
        let done = self.due.iter().take_while(|(_, q)| processed.contains(q));
        if let Some(&last) = done.last() {
            s.done = Some(last);
        }
        s.next_due_us = match self.due.iter().find(|(_, q)| !processed.contains(q)) {
            Some(&(at, _)) => Some(at),
            None if self.complete => self.next_after,
            // More due events than one round reads: the next round goes on.
            None => self.due.last().map(|&(at, _)| at),
        };
        s
    }
}

/// Retries of a checkpoint that failed with a retryable error (`Conflict`).
const CHECKPOINT_RETRIES: u32 = 8;

/// What a checkpoint stores.
#[derive(Default)]
struct Checkpoint {
    /// The new `high`.
    high: i64,
    /// New pending rows, `(seq, deliver_at_us)`.
    add: Vec<(i64, i64)>,
    /// Pending rows processed, `(deliver_at_us, seq)`.
    remove: Vec<(i64, i64)>,
    /// The round in flight to keep (see [`Inflight`]).
    inflight: Option<Inflight>,
    /// At most one dead letter.
    dead: Option<NewEvent>,
    /// The new position in the scheduled lane.
    sched: Sched,
}

fn live(d: Deadline) -> bool {
    match d {
        Deadline::Never => true,
        Deadline::At(t) => Instant::now() < t,
    }
}

/// Resolves when the lease watched by `rx` ends: revoked (the sender dropped) or its
/// local deadline passed without a renewal.
async fn ended(rx: &mut watch::Receiver<Deadline>) {
    loop {
        let d = *rx.borrow_and_update();
        match d {
            Deadline::Never => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Deadline::At(t) => {
                if Instant::now() >= t {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(t) => {}
                    r = rx.changed() => if r.is_err() { return },
                }
            }
        }
    }
}

/// The number of partitions worker `rank` (of `workers` live ones, sorted by id)
/// should hold: an even split, the first `partitions % workers` workers taking one more.
fn fair_share(partitions: usize, workers: usize, rank: usize) -> usize {
    let workers = workers.max(1);
    partitions / workers + usize::from(rank < partitions % workers)
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn fair_shares_cover_every_partition() {
        for p in [1usize, 7, 8, 1024] {
            for w in 1..6 {
                let total: usize = (0..w).map(|r| fair_share(p, w, r)).sum();
                assert_eq!(total, p);
            }
        }
        assert_eq!(fair_share(8, 3, 0), 3);
        assert_eq!(fair_share(8, 3, 2), 2);
    }
}
