//! The transactional outbox: events written in the same transaction as the data, and
//! consumer groups that receive them at least once, per partition in order.
//!
//! ```
//! # use datalayer_core::Db;
//! use datalayer_outbox::{BuilderOutbox, DbOutbox, TxOutbox};
//! use std::time::Duration;
//! # #[tokio::main]
//! # async fn main() -> datalayer_core::Result<()> {
//! let engine = std::sync::Arc::new(datalayer_etch::memory());
//! let db = Db::with_engine(engine).outbox().connect().await?;
//!
//! // Producing: the event exists if and only if the transaction commits.
//! let tx = db.begin().await?;
//! // ... tx.repo::<Order>().insert(&order).await? ...
//! tx.emit("orders", "customer-42", b"order 7 placed".to_vec()).await?;
//! tx.emit("reminders", "customer-42", b"ping".to_vec())
//!     .deliver_after(Duration::from_secs(3600))
//!     .await?;
//! tx.commit().await?;
//! let rolled_back = db.begin().await?;
//! rolled_back.emit("orders", "customer-42", b"never sent".to_vec()).await?;
//! rolled_back.rollback().await?;
//!
//! // Consuming: one handler call per event; retries, dead letters, leases. This
//! // handler passes each payload on and the consumer stops after the first.
//! let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let consumer = db
//!     .consumer("billing", "orders")
//!     .concurrency(4)
//!     .max_attempts(5)
//!     .run(
//!         move |ev| {
//!             let seen_tx = seen_tx.clone();
//!             async move {
//!                 let _ = seen_tx.send(ev.payload.clone());
//!                 Ok(())
//!             }
//!         },
//!         async move {
//!             let _ = stopped.await;
//!         },
//!     );
//! let watcher = async move {
//!     let first = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await;
//!     let _ = stop.send(());
//!     first.ok().flatten()
//! };
//! let (ran, first) = tokio::join!(consumer, watcher);
//! ran?;
//! assert_eq!(first.as_deref(), Some(&b"order 7 placed"[..]));
//! # Ok(()) }
//! ```
//!
//! # Methods on `Db` and `Tx`
//! This crate sits above `datalayer-core`, so its methods on [`Db`] and [`Tx`] come
//! from two extension traits, [`DbOutbox`] and [`TxOutbox`]; bring them into scope
//! with `use datalayer::prelude::*` (or `use datalayer::outbox::{DbOutbox, TxOutbox}`).
//!
//! # Engines
//! Everything here is written against datalayer's own tables and queries (the normal
//! [`datalayer_core::Engine`] ops), so it runs on every engine with transactions: etch, SQLite,
//! and later PostgreSQL, Redis and TiKV, with no engine code. An engine declares it
//! with `Capability::outbox`; without it, [`TxOutbox::emit`] and
//! [`DbOutbox::consumer`] return `Unsupported`. An engine can replace how consumers
//! wait for events and claim partitions (LISTEN/NOTIFY, `SKIP LOCKED`) through
//! [`Driver`].
//!
//! # Tables
//! - `_dl_outbox_topics (topic) → partitions`: fixed when the topic is created
//!   (default [`DEFAULT_PARTITIONS`], or [`create_topic`]).
//! - `_dl_outbox_seq (topic, part) → last`: the partition's commit-order sequence.
//! - `_dl_outbox (topic, part, seq) → deliver_at_us, id, key, payload, origin,
//!   attempts, error`: the events due when emitted (the last three only for dead
//!   letters; `error` at most [`MAX_ERROR_BYTES`]). `id` is [`EventId::id`]: unique
//!   even when a lost commit lets a later event take the same seq.
//! - `_dl_outbox_scheduled (topic, part, seq) → deliver_at_us, id, key, payload`,
//!   indexed `by_due (topic, part, deliver_at_us, seq)`: the events emitted with a
//!   future delivery time (the scheduled lane, [`Sched`]). Their seq comes from the
//!   same counter; [`stored_events`] lists both tables.
//! - `_dl_outbox_groups (grp, topic, part) → high, pending, lease_owner,
//!   lease_until_us, fencing`: each group's position ([`Window`]: `high` and a state
//!   of at most [`MAX_STATE_BYTES`] in `pending`) and lease per partition.
//! - `_dl_outbox_pending (grp, topic, part, deliver_at_us, seq)`: one row per event
//!   of `_dl_outbox` a group read before it was due (stores written before the
//!   scheduled lane, or an emitter's clock ahead of the consumer's), so that no
//!   checkpoint grows with the number of scheduled events.
//! - `_dl_outbox_members (grp, topic, worker) → until_us`: worker heartbeats, to share
//!   partitions fairly.
//!
//! # Partitions and order
//! An event's partition is [`partition_of`]`(partition_key, partitions)`: FNV-1a 64
//! modulo the topic's partition count, stable across processes and Rust versions.
//! Within a partition, due events are delivered by delivery time, then commit order.
//!
//! # Why a late commit is never lost
//! The hard case: transaction A emits into partition p, transaction B emits into p
//! after A but commits first, a consumer delivers B's event and checkpoints; then A
//! commits. A checkpoint that is a position in time or in "what I have seen" would
//! skip A's event.
//!
//! `emit` assigns the event's `seq` inside the caller's transaction with
//! `UPDATE _dl_outbox_seq SET last = last + 1 WHERE (topic, part) = ..` and reads it
//! back. That update makes seq order equal commit order within a partition:
//! - single-writer engines (etch, SQLite) run write transactions one at a time, so B
//!   cannot even start until A has committed or rolled back;
//! - PostgreSQL holds the row lock taken by the UPDATE until A ends; B's UPDATE waits,
//!   then (READ COMMITTED) re-reads the committed row and takes the next value, or
//!   (REPEATABLE READ / SERIALIZABLE) fails with a retryable `Conflict`;
//! - optimistic KV stores (TiKV, Redis WATCH) see a write-write conflict on the seq
//!   key and abort one of the two (`Conflict`, retry).
//!
//! So B's seq is higher than A's only if A committed before B got it, and a rolled-back
//! transaction gives its seq back (no gaps). Hence whenever an event with seq `s` is
//! visible, every event with a lower seq in its partition is visible too, and a
//! group's position "every seq `<= high` has been seen" ([`Window`]) can never step over
//! an event that commits later: that event's seq is necessarily above `high`. The
//! conformance case `outbox::late_commit_is_delivered` checks this on every engine.
//!
//! # Consumers
//! See [`ConsumerBuilder`]: concurrency across partitions, retries with exponential
//! backoff, a dead-letter topic `<topic>.dead` after `max_attempts`, partition leases
//! (TTL, renewal, fencing: a worker that lost a lease cannot move the checkpoint) or
//! fixed partition ranges, graceful shutdown, and retention ([`purge`]: events every
//! group has passed are deleted).
//!
//! # Limits and liveness
//! - **Scheduled events cost nothing until due.** An event emitted with a future
//!   delivery time goes to the scheduled lane, ordered by delivery time: a round reads
//!   the due ones there directly and the seq lane never sees them, so an immediate
//!   event behind 10⁶ scheduled ones is delivered in the first round (the
//!   `scheduled_backlog` example measures it), and retention of the seq lane is not
//!   held back by them. Late commits are safe in both lanes (see [`Sched`]).
//! - **Bounded checkpoints.** A group's row holds `high` and at most
//!   [`MAX_STATE_BYTES`] of state, whatever the number of scheduled events (an event
//!   of `_dl_outbox` seen before it is due is one row of `_dl_outbox_pending`, keyed
//!   by delivery time so the due ones are a key range); a checkpoint writes at most `batch_size`
//!   pending rows and at most one dead letter, whose stored error is cut to
//!   [`MAX_ERROR_BYTES`] ([`truncate_error`]). A checkpoint that fails with a
//!   retryable error (`Conflict`) is retried with backoff; one that fails otherwise
//!   backs its partition off (logged), instead of redelivering the batch in a loop.
//! - **Attempts survive crashes.** A round records the events it delivers before the
//!   first handler call; a worker that finds such a record left by a worker that
//!   stopped mid-round delivers those events one at a time and stores each attempt
//!   before the handler runs, so a handler that aborts the process is dead-lettered
//!   after `max_attempts` crashes.
//! - **Self-fencing leases.** A worker stops delivering a partition (cancelling a
//!   handler call in progress) once `lease_ttl - lease_ttl / 5` has passed since it
//!   sent its last successful renewal: renewals that wait (on etch, behind the single
//!   writer lock of a long transaction) cannot let two workers deliver one partition
//!   at the same time. Renewals run every `lease_ttl / 3` at most.
//! - **A long transaction does not cost a healthy holder its lease.** On etch every
//!   write, renewals included, waits for the single writer lock, so a user transaction
//!   held past the TTL lets every lease expire in the store, and no worker can write
//!   meanwhile. A worker whose heartbeat and renewals took over `lease_ttl / 3` (it
//!   logs it) takes only free leases (released or never taken) until its writes have
//!   gone through promptly for a whole `lease_ttl`; by then a live holder has renewed
//!   (renewals compute their expiry when sent, after any wait), so only holders that
//!   are really gone are replaced, one TTL later than otherwise. Renewals still wait
//!   behind the transaction (at most etch's `lock_timeout`, 30 s by default, then
//!   retried) and the holder pauses its deliveries until one lands (self-fencing).
//!   Chosen over an in-process lease table for etch: it needs no engine-specific
//!   path and the same rule covers any engine whose writes stall.
//! - **Unique ids.** [`EventId::id`] and [`Event::id`] carry 64 random bits, so an
//!   event that reuses the seq of a commit lost in a crash (lazy flush policies) never
//!   has the id of the lost one.
//!
//! # Failpoints
//! With the cargo feature `failpoints` (off by default; the torture suite turns it on),
//! the worker evaluates the [`fail`](https://docs.rs/fail) failpoints named in
//! [`failpoints`] at the moments a crash is hardest to recover from: just before and
//! just after the handler call, between the last handler call of a round and its
//! checkpoint, and inside the checkpoint transaction just before its commit. Without
//! the feature they are not compiled in.

/// Evaluates the failpoint `$name` (a constant of [`failpoints`]) when the crate is
/// built with the `failpoints` feature; nothing otherwise.
macro_rules! failpoint {
    ($name:expr) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name);
    };
}

/// The names of the worker's failpoints (feature `failpoints`), for
/// [`fail::cfg`](https://docs.rs/fail/latest/fail/fn.cfg.html) and
/// `fail::cfg_callback`. A failpoint configured with a callback that blocks (print a
/// marker, then sleep) lets a test SIGKILL the worker exactly there.
pub mod failpoints {
    /// In a delivery, just before the handler is called (after the round's in-flight
    /// marker, and in careful mode the attempt, were stored).
    pub const BEFORE_HANDLER: &str = "outbox::before_handler";
    /// In a delivery, just after the handler returned `Ok` (its effects are done, the
    /// checkpoint is not).
    pub const AFTER_HANDLER: &str = "outbox::after_handler";
    /// After the last handler call of a round, before its checkpoint transaction
    /// begins.
    pub const BEFORE_CHECKPOINT: &str = "outbox::before_checkpoint";
    /// Inside the checkpoint transaction, after every write (fenced update, pending
    /// rows, dead letter), just before the commit.
    pub const CHECKPOINT_BEFORE_COMMIT: &str = "outbox::checkpoint_before_commit";
    /// Every failpoint above.
    pub const ALL: [&str; 4] = [
        BEFORE_HANDLER,
        AFTER_HANDLER,
        BEFORE_CHECKPOINT,
        CHECKPOINT_BEFORE_COMMIT,
    ];
}

mod consumer;
mod emit;
mod hash;
pub mod tables;
mod window;

pub use consumer::{
    CheckpointFault, Claim, ConsumerBuilder, DeadLetter, Driver, Event, MIN_LEASE_TTL, Polling,
};
pub use emit::{Emit, EventId, RepoEvents, TableEvent};

use datalayer_core::{Table, Tx};
pub use hash::{fnv1a64, partition_of};
pub use tables::is_internal_table;
pub use window::{Advance, Inflight, MAX_STATE_BYTES, Sched, Window};

use datalayer_core::db::{Db, Executor};
use datalayer_core::error::{Error, Result};
use datalayer_core::query::QueryDef;
use datalayer_core::repo::Repo;
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};
use tables::{EventRow, GroupRow, PendingRow, SchedRow};

/// The outbox on a transaction: `tx.emit(..)` and `tx.with_events::<T>(..)`.
pub trait TxOutbox {
    /// Emits an event to `topic` in this transaction: it exists if and only if the
    /// transaction commits. Events with the same `partition_key` go to the same
    /// partition and are delivered in commit order. Add `.deliver_at(t)` to schedule it;
    /// `.await` the returned [`Emit`] for the [`EventId`].
    ///
    /// # Errors
    /// (when awaited) `Unsupported` without `Capability::outbox`; `InvalidInput` for a
    /// bad topic name; the engine's errors (`Conflict` on engines with optimistic
    /// concurrency: retry the transaction).
    fn emit(
        &self,
        topic: &str,
        partition_key: impl AsRef<[u8]>,
        payload: impl Into<Vec<u8>>,
    ) -> Emit<'_, Tx>;

    /// A repository for `T` whose writes also emit a [`TableEvent`] to `topic` in this
    /// transaction (tito-style table events), partitioned by the row's primary key.
    fn with_events<T: Table>(&self, topic: &str) -> RepoEvents<'_, T>;
}

/// The outbox on a database handle: `db.emit(..)` and `db.consumer(..)`.
pub trait DbOutbox {
    /// Emits an event to `topic` in a transaction of its own (see [`TxOutbox::emit`]).
    ///
    /// # Errors
    /// (when awaited) as [`TxOutbox::emit`], plus the commit's errors.
    fn emit(
        &self,
        topic: &str,
        partition_key: impl AsRef<[u8]>,
        payload: impl Into<Vec<u8>>,
    ) -> Emit<'_, Db>;

    /// A consumer of `topic` in consumer group `group`. Groups are independent: every
    /// group receives every event, with its own per-partition position. Configure it,
    /// then `.run(handler, shutdown)`. Consumers use the engine's own [`Driver`] where
    /// it offers one (PostgreSQL: LISTEN/NOTIFY and `SKIP LOCKED`), else [`Polling`].
    fn consumer(&self, group: &str, topic: &str) -> ConsumerBuilder;
}

/// Partitions of a topic created without an explicit count (as in tito).
pub const DEFAULT_PARTITIONS: u32 = 1024;

/// Longest topic or group name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// The suffix of a topic's dead-letter topic (`orders` → `orders.dead`).
pub const DEAD_LETTER_SUFFIX: &str = ".dead";

/// The longest handler error stored in a dead letter ([`DeadLetter::error`]), in
/// bytes: longer errors are cut by [`truncate_error`].
pub const MAX_ERROR_BYTES: usize = 4096;

/// `error` cut to at most [`MAX_ERROR_BYTES`] bytes: when longer, its first bytes up
/// to a char boundary, then the marker `"… [truncated, <n> bytes in all]"` (the whole
/// result, marker included, fits the bound). Shorter errors are returned as they are.
pub fn truncate_error(error: &str) -> Cow<'_, str> {
    if error.len() <= MAX_ERROR_BYTES {
        return Cow::Borrowed(error);
    }
    let marker = format!("… [truncated, {} bytes in all]", error.len());
    let mut cut = MAX_ERROR_BYTES - marker.len();
    while !error.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}{marker}", &error[..cut]))
}

/// Checks a topic or consumer-group name: 1 to [`MAX_NAME_BYTES`] ASCII letters,
/// digits, `_`, `-` or `.`.
///
/// # Errors
/// `InvalidInput` naming the rule.
pub fn validate_topic(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "invalid outbox topic or group name {name:?}: use 1 to {MAX_NAME_BYTES} ASCII letters, digits, '_', '-' or '.'"
        )))
    }
}

pub(crate) fn check_capability<E: Executor + ?Sized>(ex: &E) -> Result<()> {
    if ex.capability().outbox {
        Ok(())
    } else {
        Err(Error::unsupported(
            ex.engine_name(),
            "the transactional outbox",
        ))
    }
}

pub(crate) fn system_time_us(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

pub(crate) fn now_us() -> i64 {
    system_time_us(SystemTime::now())
}

/// The outbox's queries, for [`datalayer_core::DbBuilder::queries`] (see [`install`]).
pub struct OutboxQueries;

impl datalayer_core::db::QueryGroup for OutboxQueries {
    fn queries() -> Vec<&'static QueryDef> {
        use tables::SeqRow;
        [
            SeqRow::queries(),
            GroupRow::queries(),
            EventRow::queries(),
            tables::SchedRow::queries(),
        ]
        .concat()
    }
}

impl TxOutbox for Tx {
    fn emit(
        &self,
        topic: &str,
        partition_key: impl AsRef<[u8]>,
        payload: impl Into<Vec<u8>>,
    ) -> Emit<'_, Tx> {
        Emit::new(self, topic, partition_key.as_ref(), payload.into())
    }

    fn with_events<T: Table>(&self, topic: &str) -> RepoEvents<'_, T> {
        RepoEvents::new(self, topic)
    }
}

impl DbOutbox for Db {
    fn emit(
        &self,
        topic: &str,
        partition_key: impl AsRef<[u8]>,
        payload: impl Into<Vec<u8>>,
    ) -> Emit<'_, Db> {
        Emit::new(self, topic, partition_key.as_ref(), payload.into())
    }

    fn consumer(&self, group: &str, topic: &str) -> ConsumerBuilder {
        ConsumerBuilder::new(self, group, topic)
    }
}

/// The outbox on a [`DbBuilder`](datalayer_core::DbBuilder): `.outbox()`.
pub trait BuilderOutbox {
    /// Registers the outbox's tables and queries at start-up, so engines create and
    /// prepare them once. Optional: consumers register them on start, and emitting
    /// into a database where they are missing creates them inside the transaction.
    fn outbox(self) -> Self;
}

impl BuilderOutbox for datalayer_core::db::DbBuilder {
    fn outbox(mut self) -> Self {
        for t in tables::schemas() {
            self = self.table_schema(t);
        }
        self.queries::<OutboxQueries>()
    }
}

/// Creates (if missing) the outbox's tables and prepares its queries on `db`'s engine.
/// Idempotent. Call it outside any open transaction (single-writer engines would wait
/// for that transaction).
///
/// # Errors
/// The engine's errors.
pub async fn install(db: &Db) -> Result<()> {
    let ts = tables::schemas();
    let qs = <OutboxQueries as datalayer_core::db::QueryGroup>::queries();
    db.engine().register(&ts, &qs).await
}

/// Creates `topic` with `partitions` partitions (fixed from then on) and returns its
/// partition count.
///
/// # Errors
/// `InvalidInput` when the topic exists with another partition count, or for a bad
/// name; `Unsupported` without `Capability::outbox`.
pub async fn create_topic(db: &Db, topic: &str, partitions: u32) -> Result<u32> {
    check_capability(db)?;
    validate_topic(topic)?;
    let partitions = partitions.max(1);
    let got = emit::topic_partitions(db, topic, Some(partitions)).await?;
    if got != partitions {
        return Err(Error::invalid_input(format!(
            "outbox topic {topic} exists with {got} partitions, not {partitions}"
        )));
    }
    Ok(got)
}

/// The partition count of `topic`, or `None` when it does not exist yet.
///
/// # Errors
/// The engine's errors.
pub async fn topic_partitions(db: &Db, topic: &str) -> Result<Option<u32>> {
    Ok(Repo::<tables::TopicRow, Db>::new(db)
        .get(topic)
        .await?
        .map(|t| t.partitions.max(1) as u32))
}

/// Retention: deletes the events of `topic` that every consumer group has passed (in
/// every partition some group has a position in; partitions no group reads keep their
/// events). Returns how many events were deleted. Consumers run it periodically on
/// their own partitions.
///
/// # Errors
/// The engine's errors; `Unsupported` without `Capability::outbox`.
pub async fn purge(db: &Db, topic: &str) -> Result<u64> {
    check_capability(db)?;
    purge_partitions(db, topic, None).await
}

/// Retention over `only` (all partitions when `None`).
pub(crate) async fn purge_partitions(db: &Db, topic: &str, only: Option<&[u32]>) -> Result<u64> {
    let rows = Repo::<GroupRow, Db>::new(db)
        .find("by_topic")
        .eq(topic)
        .all()
        .await?;
    let mut passed: HashMap<i32, i64> = HashMap::new();
    // Per partition, what every group processed in the scheduled lane: `(before, upto)`,
    // events due before `before` with seq `<= upto`.
    let mut sched_done: HashMap<i32, (i64, i64)> = HashMap::new();
    for r in rows {
        if only.is_some_and(|o| !o.contains(&(r.part as u32))) {
            continue;
        }
        let w = Window::decode(r.high, &r.pending)?;
        let done = match w.sched.done {
            // Strictly before the cursor's time: every event of an earlier time is done.
            Some((at, _)) => (at, w.sched.seen),
            None => (i64::MIN, 0),
        };
        sched_done
            .entry(r.part)
            .and_modify(|m| *m = (m.0.min(done.0), m.1.min(done.1)))
            .or_insert(done);
        // The lowest pending seq, when there are pending rows (one indexed lookup).
        let min_pending = if w.next_due_us.is_some() {
            Repo::<PendingRow, Db>::new(db)
                .find("by_seq")
                .eq(&r.grp)
                .eq(topic)
                .eq(r.part)
                .limit(1)
                .all()
                .await?
                .first()
                .map(|p| p.seq)
        } else {
            None
        };
        let p = w.passed(min_pending);
        passed
            .entry(r.part)
            .and_modify(|m| *m = (*m).min(p))
            .or_insert(p);
    }
    let q = EventRow::purge_query();
    let mut deleted = 0;
    for (part, upto) in passed {
        if upto <= 0 {
            continue;
        }
        let params = [
            datalayer_core::Value::String(topic.to_owned()),
            datalayer_core::Value::I32(part),
            datalayer_core::Value::I64(upto),
        ];
        if let datalayer_core::Output::Count(n) = db
            .run(datalayer_core::Op::Query {
                query: q,
                params: &params,
            })
            .await?
        {
            deleted += n;
        }
    }
    let q = SchedRow::purge_scheduled_query();
    for (part, (before, upto)) in sched_done {
        if before == i64::MIN || upto <= 0 {
            continue;
        }
        let params = [
            datalayer_core::Value::String(topic.to_owned()),
            datalayer_core::Value::I32(part),
            datalayer_core::Value::I64(before),
            datalayer_core::Value::I64(upto),
        ];
        if let datalayer_core::Output::Count(n) = db
            .run(datalayer_core::Op::Query {
                query: q,
                params: &params,
            })
            .await?
        {
            deleted += n;
        }
    }
    Ok(deleted)
}

/// Every event of `topic` still stored, in partition then seq order (inspection and
/// tests; consumers do not use it).
///
/// # Errors
/// The engine's errors.
pub async fn stored_events(db: &Db, topic: &str) -> Result<Vec<Event>> {
    let mut rows = Repo::<EventRow, Db>::new(db).scan().eq(topic).all().await?;
    let scheduled = Repo::<SchedRow, Db>::new(db).scan().eq(topic).all().await?;
    rows.extend(scheduled.into_iter().map(SchedRow::into_event));
    rows.sort_by_key(|r| (r.part, r.seq));
    Ok(rows.into_iter().map(|r| Event::from_row(r, 0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};

    #[test]
    fn errors_are_truncated_on_a_char_boundary() {
        assert_eq!(truncate_error("short"), "short");
        let exact = "a".repeat(MAX_ERROR_BYTES);
        assert_eq!(truncate_error(&exact), exact);
        let long = "é".repeat(MAX_ERROR_BYTES);
        let t = truncate_error(&long);
        assert!(t.len() <= MAX_ERROR_BYTES, "{}", t.len());
        assert!(t.starts_with("éé"));
        assert!(t.ends_with(&format!("… [truncated, {} bytes in all]", long.len())));
    }

    /// Issue 9, defect 4: events scheduled far ahead cost a consumer nothing per event.
    /// An immediate event and an event due in 300 ms, both behind 2,000 events
    /// scheduled an hour ahead on one partition, are delivered (the second not before
    /// its time) in rounds of 8 events, and no scheduled event was copied into
    /// `_dl_outbox_pending` on the way (before the scheduled lane, every one was: one
    /// write per scheduled event ahead of a due one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scheduled_events_are_not_walked_one_by_one() {
        let engine = Arc::new(datalayer_etch::memory());
        let db = Db::with_engine(engine).outbox().connect().await.unwrap();
        create_topic(&db, "lane", 1).await.unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        let tx = db.begin().await.unwrap();
        for _ in 0..2000 {
            tx.emit("lane", "k", b"later".to_vec())
                .deliver_at(later)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let soon = SystemTime::now() + Duration::from_millis(300);
        db.emit("lane", "k", b"soon".to_vec())
            .deliver_at(soon)
            .await
            .unwrap();
        db.emit("lane", "k", b"now".to_vec()).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(
            db.consumer("g", "lane")
                .poll_interval(Duration::from_millis(10))
                .batch_size(8)
                .partitions(0..1)
                .run(
                    move |ev| {
                        let s = s.clone();
                        async move {
                            s.lock().unwrap().push((ev.payload, SystemTime::now()));
                            Ok(())
                        }
                    },
                    async move {
                        let _ = stopped.await;
                    },
                ),
        );
        let t0 = std::time::Instant::now();
        while seen.lock().unwrap().len() < 2 && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(());
        run.await.unwrap().unwrap();
        let got = seen.lock().unwrap().clone();
        let names: Vec<&[u8]> = got.iter().map(|(p, _)| &p[..]).collect();
        assert_eq!(names, [&b"now"[..], b"soon"], "delivered: {names:?}");
        assert!(got[1].1 >= soon, "the scheduled event came early");
        let pending = Repo::<PendingRow, Db>::new(&db).scan().all().await.unwrap();
        assert!(
            pending.is_empty(),
            "{} scheduled events were walked into _dl_outbox_pending",
            pending.len()
        );
        let g = Repo::<GroupRow, Db>::new(&db)
            .get(("g", "lane", 0i32))
            .await
            .unwrap()
            .unwrap();
        assert!(g.pending.len() <= MAX_STATE_BYTES);
    }

    /// A group row written by an earlier version (its pending list inside the row) is
    /// read, the due event delivered and the others moved to `_dl_outbox_pending`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_old_pending_list_is_migrated() {
        let engine = Arc::new(datalayer_etch::memory());
        let db = Db::with_engine(engine).outbox().connect().await.unwrap();
        create_topic(&db, "old", 1).await.unwrap();
        for p in ["one", "later", "due"] {
            db.emit("old", "k", p.as_bytes().to_vec()).await.unwrap();
        }
        let far = now_us() + 3_600_000_000;
        let legacy: Vec<(i64, i64)> = vec![(3, now_us() - 1), (2, far)];
        Repo::<GroupRow, Db>::new(&db)
            .insert(&GroupRow {
                grp: "g".into(),
                topic: "old".into(),
                part: 0,
                high: 3,
                pending: postcard::to_allocvec(&legacy).unwrap(),
                lease_owner: String::new(),
                lease_until_us: 0,
                fencing: 0,
            })
            .await
            .unwrap();
        db.emit("old", "k", b"new".to_vec()).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(
            db.consumer("g", "old")
                .poll_interval(Duration::from_millis(10))
                .partitions(0..1)
                .run(
                    move |ev| {
                        let s = s.clone();
                        async move {
                            s.lock().unwrap().push(ev.payload);
                            Ok(())
                        }
                    },
                    async move {
                        let _ = stopped.await;
                    },
                ),
        );
        let t0 = std::time::Instant::now();
        while seen.lock().unwrap().len() < 2 && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = stop.send(());
        run.await.unwrap().unwrap();
        let mut got = seen.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, vec![b"due".to_vec(), b"new".to_vec()]);
        let rows = Repo::<PendingRow, Db>::new(&db).scan().all().await.unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.seq, r.deliver_at_us))
                .collect::<Vec<_>>(),
            vec![(2, far)]
        );
        let g = Repo::<GroupRow, Db>::new(&db)
            .get(("g", "old", 0i32))
            .await
            .unwrap()
            .unwrap();
        let w = Window::decode(g.high, &g.pending).unwrap();
        assert!(w.legacy.is_empty());
        assert_eq!((w.high, w.next_due_us, w.inflight), (4, Some(far), None));
        // Retention keeps seq 2 (still pending) and everything after it.
        assert_eq!(purge(&db, "old").await.unwrap(), 1);
    }
}
