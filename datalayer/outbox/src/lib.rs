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
//!   attempts, error`: the events (the last three only for dead letters).
//! - `_dl_outbox_groups (grp, topic, part) → high, pending, lease_owner,
//!   lease_until_us, fencing`: each group's position ([`Window`]) and lease per
//!   partition.
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

mod consumer;
mod emit;
mod hash;
pub mod tables;
mod window;

pub use consumer::{Claim, ConsumerBuilder, DeadLetter, Driver, Event, Polling};
pub use emit::{Emit, EventId, RepoEvents, TableEvent};

use datalayer_core::{Table, Tx};
pub use hash::{fnv1a64, partition_of};
pub use tables::is_internal_table;
pub use window::Window;

use datalayer_core::db::{Db, Executor};
use datalayer_core::error::{Error, Result};
use datalayer_core::query::QueryDef;
use datalayer_core::repo::Repo;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};
use tables::{EventRow, GroupRow};

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
        [SeqRow::queries(), GroupRow::queries(), EventRow::queries()].concat()
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
    for r in rows {
        if only.is_some_and(|o| !o.contains(&(r.part as u32))) {
            continue;
        }
        let p = Window::decode(r.high, &r.pending)?.passed();
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
    Ok(deleted)
}

/// Every event of `topic` still stored, in partition then seq order (inspection and
/// tests; consumers do not use it).
///
/// # Errors
/// The engine's errors.
pub async fn stored_events(db: &Db, topic: &str) -> Result<Vec<Event>> {
    let rows = Repo::<EventRow, Db>::new(db).scan().eq(topic).all().await?;
    Ok(rows.into_iter().map(|r| Event::from_row(r, 0)).collect())
}
