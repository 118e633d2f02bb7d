//! Producing: `tx.emit(..)`, `db.emit(..)` and table events (`tx.with_events::<T>(..)`).

use super::hash::partition_of;
use super::tables::{EventRow, SchedRow, SeqRow, TopicRow};
use super::{DEFAULT_PARTITIONS, check_capability, now_us, system_time_us, validate_topic};
use crate::TxOutbox;
use datalayer_core::ChangeKind;
use datalayer_core::db::{Db, Executor, Tx};
use datalayer_core::engine::{Op, Output};
use datalayer_core::error::{Error, Result};
use datalayer_core::repo::Repo;
use datalayer_core::schema::Table;
use datalayer_core::value::{Row, Value};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::IntoFuture;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

/// Where an event was stored: topic, partition and its commit-order sequence number,
/// plus a random component that makes its id unique.
///
/// `(topic, partition, seq)` is a position, not an identity: when a commit is lost
/// after it was acknowledged (an engine that flushes lazily — etch with
/// `FlushPolicy::Interval`/`Never`, SQLite with `synchronous=NORMAL` — then a crash),
/// the next emit takes the same seq for a different event. The `nonce` (64 random
/// bits drawn per emit) tells the two apart, so a handler that deduplicates by
/// [`EventId::id`] never drops the second one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventId {
    /// The topic.
    pub topic: String,
    /// The partition (`fnv1a64(partition_key) % partitions`).
    pub partition: u32,
    /// Position in the partition, in commit order (1, 2, 3, ... without gaps).
    pub seq: i64,
    /// 64 random bits drawn for this emit (unique with overwhelming probability).
    pub nonce: u64,
}

impl EventId {
    /// The stable, unique text id, `"<topic>/<partition>/<seq>/<nonce>"` with the nonce
    /// as 16 lowercase hex digits, e.g. `"orders/3/17/9f0c2e4d1a7b3c55"` (the same as
    /// [`super::Event::id`]). Stored in the event row, so it is the same on every
    /// redelivery. (Events stored by earlier versions have ids without the nonce part.)
    pub fn id(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{:016x}",
            self.topic, self.partition, self.seq, self.nonce
        )
    }
}

/// 64 bits that differ for every call, in every process: SipHash, keyed with the
/// per-process random keys of std's `RandomState`, over a process-wide counter and
/// the time.
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = KEYS
        .get_or_init(std::collections::hash_map::RandomState::new)
        .build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_i64(now_us());
    h.write_u32(std::process::id());
    h.finish()
}

/// What `emit` writes; the dead-letter fields are set only by the consumer.
#[derive(Clone)]
pub(crate) struct NewEvent {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub deliver_at_us: Option<i64>,
    pub origin: Option<String>,
    pub attempts: i32,
    pub error: Option<String>,
    /// Partition count used if the topic does not exist yet.
    pub partitions: Option<u32>,
}

/// The partition count of `topic`, creating the topic with `create_with` (default
/// [`DEFAULT_PARTITIONS`]) when it does not exist.
pub(crate) async fn topic_partitions<E: Executor + ?Sized>(
    ex: &E,
    topic: &str,
    create_with: Option<u32>,
) -> Result<u32> {
    let repo = Repo::<TopicRow, E>::new(ex);
    for _ in 0..3 {
        if let Some(t) = repo.get(topic).await? {
            return Ok(t.partitions.max(1) as u32);
        }
        let partitions = create_with.unwrap_or(DEFAULT_PARTITIONS);
        match repo
            .insert(&TopicRow {
                topic: topic.to_owned(),
                partitions: partitions as i32,
            })
            .await
        {
            Ok(()) => return Ok(partitions),
            // Created concurrently: read it again.
            Err(e) if e.is_already_exists() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::conflict(format!(
        "outbox topic {topic}: could not read or create it"
    )))
}

/// Assigns the next seq of `(topic, part)` inside `tx`: `UPDATE .. SET last = last + 1`
/// (which takes the row's write lock until commit on engines with concurrent writers),
/// then reads it back. The row is created on first use.
async fn next_seq(tx: &Tx, topic: &str, part: i32) -> Result<i64> {
    let params = [Value::String(topic.to_owned()), Value::I32(part)];
    let seqs = Repo::<SeqRow, Tx>::new(tx);
    for _ in 0..3 {
        let op = Op::Query {
            query: SeqRow::bump_seq_query(),
            params: &params,
        };
        match tx.run(op).await? {
            Output::Count(1) => {
                let row = seqs.get((topic, part)).await?.ok_or_else(|| {
                    Error::engine("outbox", "the seq row vanished inside the transaction")
                })?;
                return Ok(row.last);
            }
            Output::Count(0) => {}
            o => {
                return Err(Error::engine(
                    "outbox",
                    format!("unexpected output of the seq update: {o:?}"),
                ));
            }
        }
        let first = SeqRow {
            topic: topic.to_owned(),
            part,
            last: 1,
        };
        match seqs.insert(&first).await {
            Ok(()) => return Ok(1),
            Err(e) if e.is_already_exists() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::conflict(format!(
        "outbox {topic}/{part}: could not assign a sequence number"
    )))
}

/// Writes one event inside `tx`.
pub(crate) async fn emit_in(tx: &Tx, ev: NewEvent) -> Result<EventId> {
    check_capability(tx)?;
    validate_topic(&ev.topic)?;
    let partitions = topic_partitions(tx, &ev.topic, ev.partitions).await?;
    let partition = partition_of(&ev.key, partitions);
    let seq = next_seq(tx, &ev.topic, partition as i32).await?;
    let id = EventId {
        topic: ev.topic,
        partition,
        seq,
        nonce: nonce(),
    };
    let now = now_us();
    // A future delivery time puts the event in the scheduled lane (ordered by delivery
    // time), so that it never stands between a consumer and the due events behind it.
    if let Some(at) = ev
        .deliver_at_us
        .filter(|&at| at > now && ev.origin.is_none())
    {
        let row = SchedRow {
            topic: id.topic.clone(),
            part: partition as i32,
            seq,
            deliver_at_us: at,
            id: id.id(),
            key: ev.key,
            payload: ev.payload,
        };
        Repo::<SchedRow, Tx>::new(tx).insert(&row).await?;
        return Ok(id);
    }
    let row = EventRow {
        topic: id.topic.clone(),
        part: partition as i32,
        seq,
        deliver_at_us: ev.deliver_at_us.unwrap_or(now),
        id: id.id(),
        key: ev.key,
        payload: ev.payload,
        origin: ev.origin,
        attempts: ev.attempts,
        error: ev.error,
    };
    Repo::<EventRow, Tx>::new(tx).insert(&row).await?;
    Ok(id)
}

/// An event being emitted; `.await` it (on a [`Tx`]: part of that transaction; on a
/// [`Db`]: in a transaction of its own). Returned by [`TxOutbox::emit`](crate::TxOutbox::emit) and [`DbOutbox::emit`](crate::DbOutbox::emit).
#[must_use = "an Emit does nothing until awaited"]
pub struct Emit<'a, E> {
    ex: &'a E,
    ev: NewEvent,
}

impl<E> Emit<'_, E> {
    /// Delivers the event not before `at`. Default: now (the time of `emit`).
    pub fn deliver_at(mut self, at: SystemTime) -> Self {
        self.ev.deliver_at_us = Some(system_time_us(at));
        self
    }
    /// Delivers the event not before `delay` from now.
    pub fn deliver_after(self, delay: Duration) -> Self {
        self.deliver_at(SystemTime::now() + delay)
    }
    /// The partition count to create the topic with, if this emit creates it (a
    /// topic's count is fixed at creation). Default: [`DEFAULT_PARTITIONS`] (1024).
    pub fn partitions(mut self, n: u32) -> Self {
        self.ev.partitions = Some(n.max(1));
        self
    }
}

fn new_event(topic: &str, key: &[u8], payload: Vec<u8>) -> NewEvent {
    NewEvent {
        topic: topic.to_owned(),
        key: key.to_vec(),
        payload,
        deliver_at_us: None,
        origin: None,
        attempts: 0,
        error: None,
        partitions: None,
    }
}

impl<'a> IntoFuture for Emit<'a, Tx> {
    type Output = Result<EventId>;
    type IntoFuture = BoxFuture<'a, Result<EventId>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(emit_in(self.ex, self.ev))
    }
}

impl<'a> IntoFuture for Emit<'a, Db> {
    type Output = Result<EventId>;
    type IntoFuture = BoxFuture<'a, Result<EventId>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            check_capability(self.ex)?;
            let tx = self.ex.begin().await?;
            match emit_in(&tx, self.ev).await {
                Ok(id) => {
                    tx.commit().await?;
                    Ok(id)
                }
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        })
    }
}

impl<'a, E> Emit<'a, E> {
    /// An event to `topic` emitted through `ex` (a [`Tx`] or a [`Db`]).
    pub(crate) fn new(ex: &'a E, topic: &str, key: &[u8], payload: Vec<u8>) -> Self {
        Emit {
            ex,
            ev: new_event(topic, key, payload),
        }
    }
}

impl<'a, T: Table> RepoEvents<'a, T> {
    /// Writes of `T` in `tx` that also emit table events to `topic`.
    pub(crate) fn new(tx: &'a Tx, topic: &str) -> Self {
        RepoEvents {
            tx,
            topic: topic.to_owned(),
            _t: PhantomData,
        }
    }
}

/// The payload of a table event: which table, what happened, and the row's primary key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableEvent {
    /// The table name.
    pub table: String,
    /// What happened: the change feed's [`ChangeKind`] (insert, update or delete).
    pub op: ChangeKind,
    /// The primary-key values of the row.
    pub key: Row,
}

impl TableEvent {
    /// The payload bytes (postcard).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("postcard encodes a table event")
    }
    /// Reads a payload written by [`TableEvent::encode`].
    ///
    /// # Errors
    /// `InvalidInput` when the bytes are not a table event.
    pub fn decode(payload: &[u8]) -> Result<TableEvent> {
        postcard::from_bytes(payload)
            .map_err(|e| Error::invalid_input(format!("not a table event: {e}")))
    }
    /// The partition key used for a row with primary key `key` (postcard of the key
    /// values), so that every event of one row lands in one partition.
    pub fn partition_key(key: &Row) -> Vec<u8> {
        postcard::to_allocvec(key).expect("postcard encodes values")
    }
}

/// Writes to `T` that also emit [`TableEvent`]s in the same transaction
/// (see [`TxOutbox::with_events`](crate::TxOutbox::with_events)).
pub struct RepoEvents<'a, T> {
    tx: &'a Tx,
    topic: String,
    _t: PhantomData<fn() -> T>,
}

impl<T: Table> RepoEvents<'_, T> {
    async fn event(&self, op: ChangeKind, key: Row) -> Result<EventId> {
        let ev = TableEvent {
            table: T::schema().name.clone(),
            op,
            key,
        };
        let k = TableEvent::partition_key(&ev.key);
        self.tx.emit(&self.topic, k, ev.encode()).await
    }
    fn repo(&self) -> Repo<'_, T, Tx> {
        self.tx.repo::<T>()
    }
    /// [`Repo::insert`] plus an `Insert` event.
    ///
    /// # Errors
    /// As [`Repo::insert`] (`AlreadyExists` for a taken primary key), then as
    /// [`crate::TxOutbox::emit`]; the transaction should then be rolled back.
    pub async fn insert(&self, row: &T) -> Result<EventId> {
        self.repo().insert(row).await?;
        self.event(ChangeKind::Insert, row.key()).await
    }
    /// [`Repo::insert_many`] plus one `Insert` event per row.
    ///
    /// # Errors
    /// As [`Repo::insert_many`], then as [`crate::TxOutbox::emit`].
    pub async fn insert_many(&self, rows: &[T]) -> Result<Vec<EventId>> {
        self.repo().insert_many(rows).await?;
        let mut ids = Vec::with_capacity(rows.len());
        for r in rows {
            ids.push(self.event(ChangeKind::Insert, r.key()).await?);
        }
        Ok(ids)
    }
    /// [`Repo::update`] plus an `Update` event.
    ///
    /// # Errors
    /// As [`Repo::update`], then as [`crate::TxOutbox::emit`].
    pub async fn update(&self, row: &T) -> Result<EventId> {
        self.repo().update(row).await?;
        self.event(ChangeKind::Update, row.key()).await
    }
    /// [`Repo::upsert`] plus an `Insert` or `Update` event (whichever it was).
    ///
    /// # Errors
    /// As [`Repo::get`] and [`Repo::upsert`], then as [`crate::TxOutbox::emit`].
    pub async fn upsert(&self, row: &T) -> Result<EventId> {
        let key = row.key();
        let existed = self.repo().get(key.clone()).await?.is_some();
        self.repo().upsert(row).await?;
        let op = if existed {
            ChangeKind::Update
        } else {
            ChangeKind::Insert
        };
        self.event(op, key).await
    }
    /// [`Repo::delete`] plus a `Delete` event when the row existed.
    ///
    /// # Errors
    /// As [`Repo::delete`], then as [`crate::TxOutbox::emit`].
    pub async fn delete(&self, key: impl datalayer_core::value::Key) -> Result<Option<EventId>> {
        let key = key.into_key();
        if self.repo().delete(key.clone()).await? {
            Ok(Some(self.event(ChangeKind::Delete, key).await?))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DbOutbox;
    use crate::tables::EventRow;
    use std::sync::Arc;

    /// Defect 6 of issue 9: a commit carrying an emit is lost (the event row and the
    /// seq bump vanish, as after a power loss with a lazy flush policy); the next emit
    /// takes the same topic/partition/seq, but its id must differ, so a handler that
    /// deduplicates by id does not drop it.
    #[tokio::test]
    async fn ids_are_unique_after_a_lost_commit() {
        let engine = Arc::new(datalayer_etch::memory());
        let db = Db::with_engine(engine).connect().await.unwrap();
        crate::create_topic(&db, "lost", 1).await.unwrap();
        let first = db.emit("lost", "k", b"one".to_vec()).await.unwrap();
        // Simulate the loss: the event row and the seq bump are gone.
        let tx = db.begin().await.unwrap();
        assert!(
            Repo::<EventRow, Tx>::new(&tx)
                .delete(("lost", 0i32, first.seq))
                .await
                .unwrap()
        );
        Repo::<SeqRow, Tx>::new(&tx)
            .update(&SeqRow {
                topic: "lost".into(),
                part: 0,
                last: first.seq - 1,
            })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let second = db.emit("lost", "k", b"two".to_vec()).await.unwrap();
        assert_eq!(
            (second.partition, second.seq),
            (first.partition, first.seq),
            "the seq is reused"
        );
        assert_ne!(
            second.id(),
            first.id(),
            "a different event after a lost commit has the id of the lost one"
        );
        let stored = crate::stored_events(&db, "lost").await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].id, second.id());
    }
}
