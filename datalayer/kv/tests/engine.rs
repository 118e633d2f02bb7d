//! How `KvEngine` adapts to a store's `KvCapability`: the write-set limit checked
//! before commit, pessimistic locks taken before every write, the engine capability
//! derived from the store's, and an index entry without its row reported as
//! `Conflict` (no snapshot reads) or `Corrupted` (snapshot reads).

use async_trait::async_trait;
use datalayer_core::{
    Capability, ColumnDef, ColumnType, Engine, ErrorKind, IndexDef, Op, Output, Result,
    ScanRequest, TableSchema, TxOptions, Value, WriteMode,
};
use datalayer_kv::mem::{MemKv, MemOptions};
use datalayer_kv::{Bytes, KvCapability, KvEngine, KvStore, KvTxn, WriteSet, codec};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

/// `users(id i64 primary key, email string unique, note string)`.
fn users() -> TableSchema {
    let col = |name: &str, ty| ColumnDef {
        name: name.into(),
        field: name.into(),
        ty,
        nullable: false,
    };
    TableSchema {
        version: None,
        name: "users".into(),
        columns: vec![
            col("id", ColumnType::I64),
            col("email", ColumnType::String),
            col("note", ColumnType::String),
        ],
        primary_key: vec![0],
        indexes: vec![IndexDef {
            name: "users_email".into(),
            columns: vec![1],
            unique: true,
            when: None,
        }],
    }
}

fn row(id: i64, email: &str, note: &str) -> Vec<Value> {
    vec![
        Value::I64(id),
        Value::String(email.into()),
        Value::String(note.into()),
    ]
}

fn insert(t: &TableSchema, r: Vec<Value>) -> Op<'_> {
    Op::Insert {
        table: t,
        rows: vec![r],
        mode: WriteMode::Insert,
    }
}

fn get(t: &TableSchema, id: i64) -> Op<'_> {
    Op::Get {
        table: t,
        keys: vec![vec![Value::I64(id)]],
    }
}

/// Every row, through the email index.
fn by_email(t: &TableSchema) -> Op<'_> {
    Op::Scan(ScanRequest {
        table: t,
        index: Some(0),
        prefix: vec![],
        lower: Bound::Unbounded,
        upper: Bound::Unbounded,
        after: None,
        reverse: false,
        limit: None,
    })
}

fn rw() -> TxOptions {
    TxOptions::default()
}

// ---- a store that records what the engine does ---------------------------------------

#[derive(Default)]
struct Log {
    /// Commits of a non-empty write set that reached the store.
    commits: usize,
    /// Every key locked, in any transaction.
    locked: BTreeSet<Bytes>,
    /// Keys committed without having been locked by their transaction first.
    unlocked_writes: Vec<String>,
}

/// A MemKv that declares `declared` (which may differ from what the MemKv does) and
/// logs commits and locks.
#[derive(Clone)]
struct Spy {
    inner: MemKv,
    declared: KvCapability,
    log: Arc<Mutex<Log>>,
}

impl Spy {
    fn new(inner: MemKv, declared: KvCapability) -> Self {
        Spy {
            inner,
            declared,
            log: Arc::default(),
        }
    }
}

struct SpyTxn {
    inner: Box<dyn KvTxn>,
    locked: BTreeSet<Bytes>,
    log: Arc<Mutex<Log>>,
}

#[async_trait]
impl KvStore for Spy {
    fn name(&self) -> &'static str {
        "spy"
    }
    fn capability(&self) -> Capability {
        self.inner.capability()
    }
    fn kv_capability(&self) -> KvCapability {
        self.declared
    }
    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn KvTxn>> {
        Ok(Box::new(SpyTxn {
            inner: self.inner.begin(opts).await?,
            locked: BTreeSet::new(),
            log: self.log.clone(),
        }))
    }
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl KvTxn for SpyTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        self.inner.get(key).await
    }
    async fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        self.inner.scan(start, end, limit, reverse).await
    }
    async fn lock(&mut self, keys: &[Bytes]) -> Result<()> {
        self.inner.lock(keys).await?;
        self.locked.extend(keys.iter().cloned());
        self.log.lock().locked.extend(keys.iter().cloned());
        Ok(())
    }
    async fn commit(self: Box<Self>, writes: WriteSet) -> Result<()> {
        {
            let mut log = self.log.lock();
            if !writes.is_empty() {
                log.commits += 1;
            }
            for (k, _) in &writes {
                if !self.locked.contains(k) {
                    log.unlocked_writes.push(k.escape_ascii().to_string());
                }
            }
        }
        self.inner.commit(writes).await
    }
    async fn rollback(self: Box<Self>) -> Result<()> {
        self.inner.rollback().await
    }
}

// ---- max_txn_bytes ------------------------------------------------------------------------

#[tokio::test]
async fn write_set_over_max_txn_bytes_fails_before_the_store_sees_it() {
    let t = users();
    // The store declares a limit but does not enforce it: only the engine can refuse.
    let spy = Spy::new(
        MemKv::new(),
        KvCapability {
            max_txn_bytes: Some(300),
            ..MemKv::new().kv_capability()
        },
    );
    let engine = KvEngine::new(spy.clone());
    engine.register(&[&t], &[]).await.unwrap();
    let commits = spy.log.lock().commits;

    let big = "x".repeat(400);
    // Autocommit.
    let e = engine
        .run(insert(&t, row(1, "a@x", &big)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        e.message().contains("max_txn_bytes limit of 300 bytes") && e.message().contains("spy"),
        "the message names the limit and the store: {e}"
    );
    // An explicit transaction: the op succeeds, the commit fails.
    let mut tx = engine.begin(rw()).await.unwrap();
    tx.run(insert(&t, row(2, "b@x", &big))).await.unwrap();
    let e = tx.commit().await.unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    assert!(!e.is_retryable());
    assert_eq!(
        spy.log.lock().commits,
        commits,
        "no commit reached the store"
    );
    assert_eq!(
        engine.run(Op::Count { table: &t }).await.unwrap(),
        Output::Count(0)
    );

    // A small write set still commits.
    engine
        .run(insert(&t, row(3, "c@x", "small")))
        .await
        .unwrap();
    assert_eq!(spy.log.lock().commits, commits + 1);
}

// ---- pessimistic locks -----------------------------------------------------------------------

fn locking() -> MemKv {
    MemKv::with_options(MemOptions {
        pessimistic_locks: true,
        ..MemOptions::default()
    })
}

#[tokio::test]
async fn a_locked_row_or_unique_entry_fails_a_concurrent_writer_at_its_op() {
    let t = users();
    let engine = KvEngine::new(locking());
    engine.register(&[&t], &[]).await.unwrap();
    engine.run(insert(&t, row(1, "one@x", ""))).await.unwrap();

    let mut a = engine.begin(rw()).await.unwrap();
    a.run(insert(&t, row(2, "two@x", "a"))).await.unwrap();
    a.run(Op::Update {
        table: &t,
        rows: vec![row(1, "one@x", "a")],
    })
    .await
    .unwrap();

    let mut b = engine.begin(rw()).await.unwrap();
    // The unique entry A wrote (not committed yet): a conflict at the op, not at commit.
    let e = b.run(insert(&t, row(3, "two@x", "b"))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.message().contains("locked by another transaction"), "{e}");
    // The row A updated.
    let e = b
        .run(Op::Update {
            table: &t,
            rows: vec![row(1, "one@x", "b")],
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    b.rollback().await.unwrap();

    a.commit().await.unwrap();
    // Locks are gone with A: the unique entry is now a committed duplicate.
    let e = engine
        .run(insert(&t, row(3, "two@x", "c")))
        .await
        .unwrap_err();
    assert!(e.is_already_exists(), "{e}");
    engine
        .run(Op::Update {
            table: &t,
            rows: vec![row(1, "one@x", "c")],
        })
        .await
        .unwrap();
    assert_eq!(
        engine.run(get(&t, 1)).await.unwrap(),
        Output::Optional(vec![Some(row(1, "one@x", "c"))])
    );
}

#[tokio::test]
async fn every_key_written_is_locked_first_on_a_pessimistic_store() {
    let t = users();
    let spy = Spy::new(locking(), locking().kv_capability());
    let engine = KvEngine::new(spy.clone());
    engine.register(&[&t], &[]).await.unwrap();
    engine.enable_changes("users").await.unwrap();
    engine.run(insert(&t, row(1, "one@x", ""))).await.unwrap();
    let mut tx = engine.begin(rw()).await.unwrap();
    tx.run(insert(&t, row(2, "two@x", ""))).await.unwrap();
    tx.run(Op::Update {
        table: &t,
        rows: vec![row(1, "uno@x", "renamed")],
    })
    .await
    .unwrap();
    tx.run(Op::Delete {
        table: &t,
        keys: vec![vec![Value::I64(2)]],
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(engine.trim_changes("users", 2).await.unwrap(), 2);

    let log = spy.log.lock();
    assert!(log.commits >= 5, "commits: {}", log.commits);
    assert!(
        log.unlocked_writes.is_empty(),
        "keys written without a lock: {:?}",
        log.unlocked_writes
    );
    // The row key, the unique entry and the change sequence were among them.
    let rk = codec::TableKeys::new(&t).row_key(&t, &row(1, "", ""));
    assert!(log.locked.contains(&rk));
    assert!(
        log.locked
            .iter()
            .any(|k| k.starts_with(&codec::index_prefix(&t, &t.indexes[0])))
    );
    assert!(
        log.locked
            .contains(&codec::table_prefix(codec::CHANGE_SEQ, "users"))
    );
}

#[tokio::test]
async fn a_store_without_locks_is_never_asked_to_lock() {
    // MemKv's default `lock` is Unsupported: any call would fail these writes.
    let t = users();
    let spy = Spy::new(MemKv::new(), MemKv::new().kv_capability());
    let engine = KvEngine::new(spy.clone());
    engine.register(&[&t], &[]).await.unwrap();
    engine.enable_changes("users").await.unwrap();
    engine.run(insert(&t, row(1, "one@x", ""))).await.unwrap();
    assert!(spy.log.lock().locked.is_empty());
}

// ---- the engine capability -----------------------------------------------------------------

#[test]
fn engine_capability_follows_the_store_capability() {
    let snap = KvEngine::new(MemKv::new()).capability();
    assert!(snap.snapshot && snap.repeatable_read && snap.serializable);
    assert!(snap.concurrent_writers && snap.change_feed);

    let no_snap = KvEngine::new(MemKv::with_options(MemOptions {
        snapshot_reads: false,
        ..MemOptions::default()
    }))
    .capability();
    assert!(!no_snap.snapshot && !no_snap.repeatable_read, "{no_snap:?}");
    assert!(no_snap.serializable && no_snap.read_committed && no_snap.change_feed);

    // concurrent_writers comes from the KvCapability, whatever the store's own
    // Capability says.
    let one_writer = KvEngine::new(Spy::new(
        MemKv::new(),
        KvCapability {
            concurrent_writers: false,
            ..MemKv::new().kv_capability()
        },
    ));
    assert!(!one_writer.capability().concurrent_writers);
    assert!(one_writer.store().capability().concurrent_writers);
    assert!(!one_writer.kv_capability().concurrent_writers);
}

// ---- stores without snapshot reads ---------------------------------------------------------

/// A MemKv that, once armed, deletes a row through its own engine (a separate
/// committed transaction) right after a scan over the email index returns.
#[derive(Clone)]
struct DeleteAfterIndexScan {
    inner: MemKv,
    victim: Arc<Mutex<Option<i64>>>,
}

struct DeleteTxn {
    inner: Box<dyn KvTxn>,
    store: DeleteAfterIndexScan,
}

#[async_trait]
impl KvStore for DeleteAfterIndexScan {
    fn name(&self) -> &'static str {
        "delete-after-index-scan"
    }
    fn capability(&self) -> Capability {
        self.inner.capability()
    }
    fn kv_capability(&self) -> KvCapability {
        self.inner.kv_capability()
    }
    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn KvTxn>> {
        Ok(Box::new(DeleteTxn {
            inner: self.inner.begin(opts).await?,
            store: self.clone(),
        }))
    }
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl KvTxn for DeleteTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        self.inner.get(key).await
    }
    async fn batch_get(&mut self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>> {
        self.inner.batch_get(keys).await
    }
    async fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let out = self.inner.scan(start, end, limit, reverse).await?;
        let t = users();
        let ix = codec::index_prefix(&t, &t.indexes[0]);
        let on_index =
            matches!(start, Bound::Included(s) | Bound::Excluded(s) if s.starts_with(&ix));
        let victim = self.store.victim.lock().take_if(|_| on_index);
        if let Some(id) = victim {
            let n = KvEngine::new(self.store.inner.clone())
                .run(Op::Delete {
                    table: &t,
                    keys: vec![vec![Value::I64(id)]],
                })
                .await?;
            assert_eq!(n, Output::Count(1), "the victim row existed");
        }
        Ok(out)
    }
    async fn commit(self: Box<Self>, writes: WriteSet) -> Result<()> {
        self.inner.commit(writes).await
    }
    async fn rollback(self: Box<Self>) -> Result<()> {
        self.inner.rollback().await
    }
}

/// An engine over `inner` wrapped in [`DeleteAfterIndexScan`], with rows 1 and 2, and
/// the handle that arms the deletion.
async fn racing(inner: MemKv) -> (KvEngine, Arc<Mutex<Option<i64>>>) {
    let store = DeleteAfterIndexScan {
        inner,
        victim: Arc::default(),
    };
    let victim = store.victim.clone();
    let engine = KvEngine::new(store);
    let t = users();
    engine.register(&[&t], &[]).await.unwrap();
    engine.run(insert(&t, row(1, "a@x", ""))).await.unwrap();
    engine.run(insert(&t, row(2, "b@x", ""))).await.unwrap();
    (engine, victim)
}

#[tokio::test]
async fn row_deleted_after_its_index_entry_was_read_is_a_conflict_without_snapshot_reads() {
    let t = users();
    let (engine, victim) = racing(MemKv::with_options(MemOptions {
        snapshot_reads: false,
        ..MemOptions::default()
    }))
    .await;

    // In a transaction: the index says row 1 exists, the row read after it is gone.
    *victim.lock() = Some(1);
    let mut tx = engine.begin(rw()).await.unwrap();
    let e = tx.run(by_email(&t)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.is_retryable());
    assert!(e.message().contains("index entry without a row"), "{e}");
    tx.rollback().await.unwrap();

    // Autocommit re-runs the scan on the conflict and reads the new state.
    *victim.lock() = Some(2);
    assert_eq!(
        engine.run(by_email(&t)).await.unwrap(),
        Output::Rows(vec![])
    );
}

#[tokio::test]
async fn snapshot_reads_do_not_see_the_concurrent_delete() {
    let t = users();
    let (engine, victim) = racing(MemKv::new()).await;
    *victim.lock() = Some(1);
    let mut tx = engine.begin(rw()).await.unwrap();
    assert_eq!(
        tx.run(by_email(&t)).await.unwrap(),
        Output::Rows(vec![row(1, "a@x", ""), row(2, "b@x", "")]),
        "the transaction reads its snapshot"
    );
    tx.commit().await.unwrap();
    assert!(victim.lock().is_none(), "the delete ran");
    assert_eq!(
        engine.run(get(&t, 1)).await.unwrap(),
        Output::Optional(vec![None])
    );
}

#[tokio::test]
async fn index_entry_without_a_row_is_corrupted_with_snapshot_reads() {
    let t = users();
    let raw = MemKv::new();
    let engine = KvEngine::new(raw.clone());
    engine.register(&[&t], &[]).await.unwrap();
    engine.run(insert(&t, row(1, "a@x", ""))).await.unwrap();
    // Delete the row behind the engine's back: its index entry stays.
    let rk = codec::TableKeys::new(&t).row_key(&t, &row(1, "", ""));
    raw.begin(rw())
        .await
        .unwrap()
        .commit(vec![(rk, None)])
        .await
        .unwrap();

    let e = engine.run(by_email(&t)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupted, "{e}");
    assert!(e.message().contains("index entry without a row"), "{e}");
    let mut tx = engine.begin(rw()).await.unwrap();
    assert!(tx.run(by_email(&t)).await.unwrap_err().is_corrupted());
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_transaction_that_only_read_is_validated_without_snapshot_reads() {
    let t = users();
    for snapshot_reads in [true, false] {
        let engine = KvEngine::new(MemKv::with_options(MemOptions {
            snapshot_reads,
            ..MemOptions::default()
        }));
        engine.register(&[&t], &[]).await.unwrap();
        engine.run(insert(&t, row(1, "a@x", "v1"))).await.unwrap();

        let mut tx = engine
            .begin(TxOptions {
                read_only: true,
                ..TxOptions::default()
            })
            .await
            .unwrap();
        tx.run(get(&t, 1)).await.unwrap();
        engine
            .run(Op::Update {
                table: &t,
                rows: vec![row(1, "a@x", "v2")],
            })
            .await
            .unwrap();
        let r = tx.commit().await;
        if snapshot_reads {
            r.unwrap();
        } else {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        }
    }
}
