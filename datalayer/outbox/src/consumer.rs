//! Consuming: `db.consumer(group, topic)` and the worker loop.
//!
//! A worker runs two loops in one task: the lease loop (heartbeat, renewal, fair-share
//! claiming and releasing, every `lease_ttl / 3`) and the delivery loop (find owned
//! partitions with new or due events, deliver them, checkpoint under the lease's
//! fencing token).

use super::emit::{NewEvent, emit_in, topic_partitions};
use super::tables::{EventRow, GroupRow, MemberRow, SeqRow};
use super::window::Window;
use super::{
    DEAD_LETTER_SUFFIX, check_capability, install, now_us, purge_partitions, validate_topic,
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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// One delivered event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Stable id, `"<topic>/<partition>/<seq>"`: the same on every redelivery, so
    /// handlers can be idempotent.
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
    /// Delivery attempt by this worker, from 1.
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
    /// The handler's last error.
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
    let params: Vec<[Value; 6]> = free
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
            ]
        })
        .collect();
    // One batch: each update is conditional on the fencing value read, so a partition
    // another worker took in between is simply not acquired (count 0).
    let ops = params
        .iter()
        .map(|p| Op::Query {
            query: GroupRow::acquire_query(),
            params: p,
        })
        .collect();
    let mut got = Vec::new();
    for (r, o) in free.iter().zip(db.run_batch(ops).await?) {
        if decode::count(GroupRow::acquire_query(), o)? == 1 {
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
    fixed: Option<Range<u32>>,
    poll_interval: Duration,
    worker_id: String,
    batch_size: usize,
    retention_interval: Duration,
    driver: Arc<dyn Driver>,
}

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
            fixed: None,
            poll_interval: Duration::from_millis(100),
            worker_id: default_worker_id(),
            batch_size: 256,
            retention_interval: Duration::from_secs(30),
            driver: engine_driver(db).unwrap_or_else(|| Arc::new(Polling)),
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
    /// Asked to stop while waiting to retry: not processed, delivered again later.
    Abandoned,
}

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
    /// How long a partition lease lasts without renewal; renewed every `ttl / 3`. A
    /// worker that dies has its partitions taken over after at most this long.
    /// Default: 10 s.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(30));
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

    /// Runs the worker until `shutdown` resolves: calls `handler` once per event (at
    /// least once; retried with backoff on `Err` or panic, then dead-lettered), then
    /// finishes the events in flight, checkpoints, releases its leases and returns.
    ///
    /// # Errors
    /// At start: `Unsupported` without `Capability::outbox`, `InvalidInput` for a bad
    /// name or a partition range outside the topic, the engine's errors. Errors while
    /// running are logged (`tracing`) and retried; they do not stop the worker.
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

struct Worker {
    b: ConsumerBuilder,
    partitions: u32,
    /// Partitions this worker holds → the fencing token of its lease.
    owned: Mutex<HashMap<u32, i64>>,
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

    /// Creates the group's missing rows for `range`, in one transaction (read and
    /// insert under the same snapshot / writer lock); retried when a concurrent worker
    /// created some of them first.
    async fn ensure_rows(&self, range: Range<u32>) -> Result<()> {
        let mut last = None;
        for attempt in 0..10u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
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
            match r {
                Ok(_) => return tx.commit().await,
                Err(e) => {
                    let _ = tx.rollback().await;
                    if !(e.is_already_exists() || e.is_retryable()) {
                        return Err(e);
                    }
                    last = Some(e);
                }
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
                    self.owned.lock().insert(part, r.fencing + 1);
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

    async fn release_all(&self) {
        let owned: Vec<(u32, i64)> = self.owned.lock().drain().collect();
        if let Err(e) = self.set_until_many(&owned, 0).await {
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
        let tick = self.b.lease_ttl / 3;
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
        let owned: Vec<(u32, i64)> = self.owned.lock().iter().map(|(&p, &f)| (p, f)).collect();
        for ((part, _), kept) in owned.iter().zip(self.set_until_many(&owned, until).await?) {
            if !kept {
                tracing::info!(part, worker = %self.b.worker_id, "outbox: lease lost");
                self.owned.lock().remove(part);
            }
        }
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
        let held = self.owned.lock().len();
        if held > share {
            let mut extra: Vec<(u32, i64)> =
                self.owned.lock().iter().map(|(&p, &f)| (p, f)).collect();
            extra.sort_unstable();
            let extra = extra.split_off(share);
            for (part, _) in &extra {
                self.owned.lock().remove(part);
            }
            self.set_until_many(&extra, 0).await?;
        } else if held < share {
            let got = self
                .b
                .driver
                .claim(
                    self.db(),
                    &Claim {
                        group: &self.b.group,
                        topic: &self.b.topic,
                        worker: &self.b.worker_id,
                        want: share - held,
                        now_us: now,
                        until_us: until,
                    },
                )
                .await?;
            let mut o = self.owned.lock();
            for (part, fencing) in got {
                o.insert(part, fencing);
            }
        }
        Ok(())
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
                let parts: Vec<u32> = self.owned.lock().keys().copied().collect();
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
        let owned: HashMap<u32, i64> = self.owned.lock().clone();
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
                self.owned.lock().remove(&part);
                continue;
            }
            let w = Window::decode(r.high, &r.pending)?;
            let new = last.get(&r.part).is_some_and(|&l| l > w.high);
            if new || w.next_due().is_some_and(|d| d <= now) {
                work.push((part, fencing, w));
            }
        }
        let n = work.len();
        futures::stream::iter(work)
            .for_each_concurrent(self.b.concurrency, |(part, fencing, w)| async move {
                if let Err(e) = self.partition_round(handler, part, fencing, w).await {
                    tracing::warn!(part, error = %e, "outbox: partition round failed");
                }
            })
            .await;
        Ok(n)
    }

    fn still_owned(&self, part: u32, fencing: i64) -> bool {
        self.owned.lock().get(&part) == Some(&fencing)
    }

    /// Delivers the due events of one partition and checkpoints.
    async fn partition_round<H, F>(
        &self,
        handler: &H,
        part: u32,
        fencing: i64,
        w: Window,
    ) -> Result<()>
    where
        H: Fn(Event) -> F + Send + Sync,
        F: Future<Output = Result<()>> + Send,
    {
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
        let due_pending = w.due(now);
        let mut processed: HashSet<i64> = HashSet::new();
        let mut due: Vec<EventRow> = Vec::new();
        if !due_pending.is_empty() {
            let keys: Vec<(&str, i32, i64)> = due_pending
                .iter()
                .map(|&s| (self.b.topic.as_str(), part as i32, s))
                .collect();
            for (seq, row) in due_pending.iter().zip(events.get_many(keys).await?) {
                match row {
                    Some(r) => due.push(r),
                    // Gone (deleted by hand): nothing to deliver.
                    None => {
                        processed.insert(*seq);
                    }
                }
            }
        }
        due.extend(fetched_rows.into_iter().filter(|r| r.deliver_at_us <= now));
        due.sort_by_key(|r| (r.deliver_at_us, r.seq));
        let mut dead: Vec<NewEvent> = Vec::new();
        for row in due {
            if self.stopping() || !self.still_owned(part, fencing) {
                break;
            }
            let seq = row.seq;
            match self.deliver(handler, &row).await {
                Outcome::Done => {}
                Outcome::Dead { attempts, error } => {
                    tracing::warn!(id = %row.id, attempts, error = %error, "outbox: event dead-lettered");
                    dead.push(NewEvent {
                        topic: format!("{}{DEAD_LETTER_SUFFIX}", self.b.topic),
                        key: row.key,
                        payload: row.payload,
                        deliver_at_us: None,
                        origin: Some(row.id),
                        attempts: attempts as i32,
                        error: Some(error),
                        partitions: Some(self.partitions),
                    });
                }
                Outcome::Abandoned => break,
            }
            processed.insert(seq);
        }
        let next = w.advance(&fetched, now, &processed);
        if next == w && dead.is_empty() {
            return Ok(());
        }
        self.checkpoint(part, fencing, &next, dead).await
    }

    /// Stores the window (and emits the dead letters) in one transaction, only if this
    /// worker still holds the lease with this fencing token.
    async fn checkpoint(
        &self,
        part: u32,
        fencing: i64,
        w: &Window,
        dead: Vec<NewEvent>,
    ) -> Result<()> {
        let tx = self.db().begin().await?;
        let [g, t, p] = group_key(&self.b.group, &self.b.topic, part as i32);
        let params = [
            Value::I64(w.high),
            Value::Bytes(w.encode_pending()),
            g,
            t,
            p,
            Value::String(self.b.worker_id.clone()),
            Value::I64(fencing),
        ];
        let op = Op::Query {
            query: GroupRow::checkpoint_query(),
            params: &params,
        };
        let r = async {
            if decode::count(GroupRow::checkpoint_query(), tx.run(op).await?)? != 1 {
                return Err(Error::conflict(format!(
                    "outbox: lease on partition {part} lost (fencing {fencing}); checkpoint refused"
                )));
            }
            for d in dead {
                emit_in(&tx, d).await?;
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) => tx.commit().await,
            Err(e) => {
                let _ = tx.rollback().await;
                if e.is_conflict() {
                    self.owned.lock().remove(&part);
                }
                Err(e)
            }
        }
    }

    async fn deliver<H, F>(&self, handler: &H, row: &EventRow) -> Outcome
    where
        H: Fn(Event) -> F + Send + Sync,
        F: Future<Output = Result<()>> + Send,
    {
        let mut attempt = 1u32;
        loop {
            let ev = Event::from_row(row.clone(), attempt);
            let err = match AssertUnwindSafe(handler(ev)).catch_unwind().await {
                Ok(Ok(())) => return Outcome::Done,
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
            tracing::debug!(id = %row.id, attempt, error = %err, "outbox: handler failed, retrying");
            let wait = self
                .b
                .backoff_first
                .saturating_mul(1u32 << (attempt - 1).min(16))
                .min(self.b.backoff_max);
            if !self.sleep(wait).await {
                return Outcome::Abandoned;
            }
            attempt += 1;
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
