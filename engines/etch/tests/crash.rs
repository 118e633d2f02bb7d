//! Crash consistency, group commit and durability-before-visibility, on the
//! [`CrashFs`] backend (written bytes kept apart from durable bytes).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::CrashFs;
use datalayer_etch::storage::{FlushPolicy, Snapshot, Store, StoreError, StoreOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;
type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn contents(s: &Snapshot) -> Model {
    s.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

fn opts(compact_after_bytes: u64) -> StoreOptions {
    StoreOptions {
        flush: FlushPolicy::EveryCommit,
        compact_after_bytes,
        ..StoreOptions::default()
    }
}

/// The model redb's crash_consistency test follows: run concurrent committers, cut the
/// power at a random moment (keeping only durable bytes plus a random prefix of the
/// unsynced tails), recover, and check that the state is exactly the state after some
/// commit k, with k at least the last commit acknowledged before the crash.
#[test]
fn acknowledged_commits_survive_a_crash_and_none_appears_partially() {
    for round in 0..24u64 {
        let mut rng = StdRng::seed_from_u64(0xE7C4 + round);
        let fs = CrashFs::new();
        if round % 3 == 0 {
            fs.set_sync_delay(Duration::from_micros(300));
        }
        // Small segments in some rounds, so checkpoints and segment switches race with
        // the crash too.
        let compact = if round % 2 == 0 { 2_000 } else { 64 << 20 };
        let store = Store::open_dir(fs.dir(), opts(compact)).unwrap();
        // history[seq] = the writes of commit `seq` (seq 0 = nothing).
        let history: Arc<Mutex<BTreeMap<u64, Writes>>> = Arc::default();
        let acked = Arc::new(AtomicU64::new(0));

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let crashed = rt.block_on(async {
            let mut tasks = Vec::new();
            for w in 0..4u64 {
                let store = store.clone();
                let history = history.clone();
                let acked = acked.clone();
                let mut trng = StdRng::seed_from_u64(round * 100 + w);
                tasks.push(tokio::spawn(async move {
                    loop {
                        let txn = store.begin_write().await;
                        let n = trng.random_range(1..6);
                        let mut writes = Vec::new();
                        for _ in 0..n {
                            let key = format!("k{:02}", trng.random_range(0..30)).into_bytes();
                            let value = if trng.random_bool(0.2) {
                                None
                            } else {
                                let len = trng.random_range(0..200);
                                Some(vec![trng.random::<u8>(); len])
                            };
                            writes.push((key, value));
                        }
                        let seq = txn.base().seq() + 1;
                        history.lock().unwrap().insert(seq, writes.clone());
                        match txn.commit(writes).await {
                            Ok(s) => {
                                assert_eq!(s, seq);
                                acked.fetch_max(s, Ordering::SeqCst);
                            }
                            Err(e) => panic!("commit failed: {e}"),
                        }
                    }
                }));
            }
            // Let at least one commit be acknowledged, then cut the power at a random
            // moment.
            for _ in 0..10_000 {
                if acked.load(Ordering::SeqCst) > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..50))).await;
            // Read `acked` first: everything acknowledged by now must be durable now.
            let must_survive = acked.load(Ordering::SeqCst);
            let image = fs.crash(Some(&mut rng));
            for t in &tasks {
                t.abort();
            }
            (must_survive, image)
        });
        drop(rt);
        drop(store);
        let (must_survive, image) = crashed;
        assert!(
            must_survive > 0,
            "round {round}: no commit was acknowledged"
        );

        let recovered = Store::open_dir(image.dir(), opts(compact))
            .unwrap_or_else(|e| panic!("round {round}: recovery failed: {e}"));
        let snap = recovered.snapshot();
        let k = snap.seq();
        assert!(
            k >= must_survive,
            "round {round}: recovered seq {k} but commit {must_survive} was acknowledged"
        );
        let history = history.lock().unwrap();
        let mut model = Model::new();
        for seq in 1..=k {
            let writes = history
                .get(&seq)
                .unwrap_or_else(|| panic!("round {round}: recovered unknown commit {seq}"));
            for (key, v) in writes {
                match v {
                    Some(v) => model.insert(key.clone(), v.clone()),
                    None => model.remove(key),
                };
            }
        }
        assert_eq!(
            contents(&snap),
            model,
            "round {round}: state after commit {k}"
        );

        // The recovered store keeps working and its new commits survive the next crash.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let txn = recovered.begin_write().await;
            let s = txn
                .commit(vec![(b"after".to_vec(), Some(b"crash".to_vec()))])
                .await
                .unwrap();
            assert_eq!(s, k + 1);
        });
        let again = Store::open_dir(image.crash(None).dir(), opts(compact)).unwrap();
        assert_eq!(again.snapshot().get(b"after"), Some(&b"crash"[..]));
        assert_eq!(again.snapshot().seq(), k + 1);
    }
}

/// Under EveryCommit, a commit whose fsync has not completed is invisible to readers,
/// yet the writer lock is already free and the next writer's base includes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_commit_before_its_fsync() {
    let fs = CrashFs::new();
    let store = Store::open_dir(fs.dir(), opts(64 << 20)).unwrap();
    let txn = store.begin_write().await;
    txn.commit(vec![(b"a".to_vec(), Some(b"1".to_vec()))])
        .await
        .unwrap();

    fs.hold_syncs();
    let s2 = store.clone();
    let pending = tokio::spawn(async move {
        let txn = s2.begin_write().await;
        txn.commit(vec![(b"b".to_vec(), Some(b"2".to_vec()))]).await
    });
    for _ in 0..5_000 {
        if fs.syncs_waiting_at_gate() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        fs.syncs_waiting_at_gate() > 0,
        "the commit never asked for an fsync"
    );
    // The group commit lets the next writer in as soon as the record is appended,
    // while the fsync is still held.
    let next = store.begin_write().await;
    assert_eq!(
        next.base().get(b"b"),
        Some(&b"2"[..]),
        "base includes the append"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let snap = store.snapshot();
    assert_eq!(
        snap.get(b"b"),
        None,
        "reader saw a commit that is not durable"
    );
    assert_eq!(snap.get(b"a"), Some(&b"1"[..]));
    assert_eq!(snap.seq(), 1);
    assert!(
        !pending.is_finished(),
        "commit acknowledged before its fsync"
    );
    // A crash now loses the unacknowledged commit, entirely.
    let image = fs.crash(None);

    fs.release_syncs();
    assert_eq!(pending.await.unwrap().unwrap(), 2);
    assert_eq!(store.snapshot().get(b"b"), Some(&b"2"[..]));
    drop(next);

    let recovered = Store::open_dir(image.dir(), opts(64 << 20)).unwrap();
    assert_eq!(recovered.snapshot().seq(), 1);
    assert_eq!(recovered.snapshot().get(b"b"), None);
}

/// With 8 concurrent committers, commits share fsyncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_fsyncs_between_concurrent_committers() {
    let fs = CrashFs::new();
    fs.set_sync_delay(Duration::from_millis(2));
    let store = Store::open_dir(fs.dir(), opts(64 << 20)).unwrap();
    let syncs_before = fs.file_syncs();
    const WRITERS: u64 = 8;
    const PER_WRITER: u64 = 25;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let txn = store.begin_write().await;
                let key = format!("w{w}-{i}").into_bytes();
                txn.commit(vec![(key, Some(vec![1; 16]))]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let commits = WRITERS * PER_WRITER;
    let syncs = fs.file_syncs() - syncs_before;
    assert_eq!(store.snapshot().len() as u64, commits);
    assert!(
        syncs < commits,
        "{syncs} fsyncs for {commits} commits: no group commit"
    );
    eprintln!("group commit: {commits} commits, {syncs} fsyncs");
}

/// A failed append leaves the state unchanged and poisons the store; the log has no
/// hole (the torn bytes are cut on reopen).
#[tokio::test]
async fn failed_append_poisons_and_changes_nothing() {
    let fs = CrashFs::new();
    let store = Store::open_dir(fs.dir(), opts(64 << 20)).unwrap();
    let txn = store.begin_write().await;
    txn.commit(vec![(b"a".to_vec(), Some(b"1".to_vec()))])
        .await
        .unwrap();

    fs.set_fail_writes(true);
    let txn = store.begin_write().await;
    let err = txn
        .commit(vec![(b"b".to_vec(), Some(b"2".to_vec()))])
        .await
        .unwrap_err();
    assert!(err.is_io(), "{err}");
    fs.set_fail_writes(false);
    let txn = store.begin_write().await;
    assert_eq!(txn.base().seq(), 1, "state moved ahead of the log");
    assert_eq!(txn.base().get(b"b"), None);
    let err = txn
        .commit(vec![(b"c".to_vec(), Some(b"3".to_vec()))])
        .await
        .unwrap_err();
    assert!(err.is_poisoned(), "{err}");
    assert_eq!(store.snapshot().get(b"b"), None);
    drop(store);

    let reopened = Store::open_dir(fs.restart().dir(), opts(64 << 20)).unwrap();
    assert_eq!(contents(&reopened.snapshot()).len(), 1);
    let txn = reopened.begin_write().await;
    assert_eq!(
        txn.commit(vec![(b"c".to_vec(), Some(b"3".to_vec()))])
            .await
            .unwrap(),
        2
    );
}

/// A failed fsync fails the waiting commit and poisons the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_poisons() {
    let fs = CrashFs::new();
    let store = Store::open_dir(fs.dir(), opts(64 << 20)).unwrap();
    fs.set_fail_syncs(true);
    let txn = store.begin_write().await;
    let err = txn
        .commit(vec![(b"a".to_vec(), Some(b"1".to_vec()))])
        .await
        .unwrap_err();
    assert!(err.is_poisoned(), "{err}");
    assert_eq!(store.snapshot().get(b"a"), None);
    let txn = store.begin_write().await;
    assert!(matches!(
        txn.commit(vec![(b"b".to_vec(), None)]).await,
        Err(StoreError::Poisoned { .. })
    ));
}

/// Checkpoints are crash-safe at every step: crash images taken right after a
/// checkpoint (durable state only) recover to the same state.
#[tokio::test]
async fn checkpoint_then_crash_recovers_everything() {
    let fs = CrashFs::new();
    let store = Store::open_dir(fs.dir(), opts(64 << 20)).unwrap();
    let mut model = Model::new();
    for i in 0..50u32 {
        let txn = store.begin_write().await;
        let k = format!("k{}", i % 17).into_bytes();
        let v = i.to_le_bytes().to_vec();
        model.insert(k.clone(), v.clone());
        txn.commit(vec![(k, Some(v))]).await.unwrap();
        if i % 10 == 9 {
            store.checkpoint().unwrap();
            let image = fs.crash(None);
            let r = Store::open_dir(image.dir(), opts(64 << 20)).unwrap();
            assert_eq!(contents(&r.snapshot()), model);
            assert_eq!(r.snapshot().seq(), u64::from(i) + 1);
        }
    }
}

async fn put(store: &Store, k: &[u8], v: &[u8]) -> Result<u64, StoreError> {
    let txn = store.begin_write().await;
    txn.commit(vec![(k.to_vec(), Some(v.to_vec()))]).await
}

/// Linux reports a writeback error to one fsync and then forgets it (the dirty pages
/// are dropped, the next fsync succeeds). After a failed fsync, `close()` must not
/// fsync again and publish the commits whose fsync failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_after_a_failed_fsync_is_an_error_and_publishes_nothing() {
    let fs = CrashFs::new();
    let store = Store::open_dir(fs.dir(), opts(64 << 20)).unwrap();
    put(&store, b"a", b"1").await.unwrap();

    fs.fail_next_sync(None);
    let err = put(&store, b"b", b"2").await;
    assert!(err.is_err(), "commit acknowledged after its fsync failed");
    assert!(
        !fs.sync_failure_pending(),
        "the fsync failure never happened"
    );
    assert!(
        put(&store, b"c", b"3").await.is_err(),
        "commit acknowledged after a failed fsync"
    );

    let closed = store.close();
    assert_eq!(
        store.snapshot().get(b"b"),
        None,
        "close() published a commit whose fsync failed"
    );
    assert!(closed.is_err(), "close() returned Ok after a failed fsync");

    let recovered = Store::open_dir(fs.crash(None).dir(), opts(64 << 20)).unwrap();
    assert_eq!(recovered.snapshot().get(b"a"), Some(&b"1"[..]));
}

/// The checkpoint's pre-sync fsyncs the WAL file next to the flusher; when it is the
/// one that receives the writeback error, the flusher's later fsync succeeds without
/// having written the dropped record. No commit may be acknowledged on that fsync:
/// after a power loss, every acknowledged commit is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fsync_failure_seen_by_a_checkpoint_acknowledges_nothing_it_dropped() {
    let fs = CrashFs::new();
    let store = Store::open_dir(fs.dir(), opts(64 << 20)).unwrap();
    put(&store, b"a", b"1").await.unwrap();

    fs.hold_syncs();
    let s2 = store.clone();
    let pending = tokio::spawn(async move { put(&s2, b"b", b"2").await });
    for _ in 0..5_000 {
        if fs.syncs_waiting_at_gate() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        fs.syncs_waiting_at_gate() > 0,
        "commit 2 never asked for an fsync"
    );
    // A checkpoint on another thread: its fsync of the same WAL file fails and drops
    // the unsynced bytes (commit 2's record) while the flusher's fsync is held.
    fs.fail_next_sync(Some("ckpt-caller"));
    fs.let_syncs_through("ckpt-caller");
    let s3 = store.clone();
    let ck = std::thread::Builder::new()
        .name("ckpt-caller".into())
        .spawn(move || s3.checkpoint())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    fs.release_syncs();
    let commit2 = pending.await.unwrap();
    let ck = ck.join().unwrap();
    assert!(
        !fs.sync_failure_pending(),
        "the fsync failure never happened"
    );
    assert!(ck.is_err(), "checkpoint Ok after its fsync failed");
    // Let the held flusher finish its fsync.
    for _ in 0..1_000 {
        if fs.syncs_waiting_at_gate() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let seen = store.snapshot().get(b"b").is_some();

    // Power loss: every acknowledged commit must be there.
    let recovered = Store::open_dir(fs.crash(None).dir(), opts(64 << 20)).unwrap();
    assert_eq!(recovered.snapshot().get(b"a"), Some(&b"1"[..]));
    if commit2.is_ok() || seen {
        assert_eq!(
            recovered.snapshot().get(b"b"),
            Some(&b"2"[..]),
            "commit 2 was acknowledged (Ok: {}) or shown to readers (seen: {seen}) \
             after a failed fsync, and lost in a power loss",
            commit2.is_ok()
        );
    }
    assert!(
        put(&store, b"c", b"3").await.is_err(),
        "commit acknowledged after a failed fsync"
    );
    assert!(
        store.close().is_err(),
        "close() returned Ok after a failed fsync"
    );
}

/// After `kill -9` between an append and its fsync, the record is only in the page
/// cache. Reopening must make what it keeps durable before serving it: a power loss
/// right after the reopen keeps everything the reopened store showed.
#[tokio::test]
async fn reopen_fsyncs_the_unsynced_tail_before_serving_it() {
    let fs = CrashFs::new();
    let never = StoreOptions {
        flush: FlushPolicy::Never,
        ..opts(64 << 20)
    };
    let store = Store::open_dir(fs.dir(), never).unwrap();
    put(&store, b"a", b"1").await.unwrap();
    put(&store, b"b", b"2").await.unwrap();
    // kill -9: the appends are in the OS, not on the disk.
    let killed = fs.kill();
    drop(store);

    let reopened = Store::open_dir(killed.dir(), opts(64 << 20)).unwrap();
    let served = contents(&reopened.snapshot());
    assert_eq!(
        served.len(),
        2,
        "the reopened store lost the killed process's appends"
    );
    // The operation log: recovery fsynced the segment it kept, all of it.
    let wal = "wal-00000000000000000001.log";
    let written = killed.contents(wal).len();
    assert!(
        killed.sync_log().contains(&(wal.to_string(), written)),
        "recovery never fsynced the {written} bytes of {wal} it serves: {:?}",
        killed.sync_log()
    );

    let after_power_loss = Store::open_dir(killed.crash(None).dir(), opts(64 << 20)).unwrap();
    assert_eq!(
        contents(&after_power_loss.snapshot()),
        served,
        "the reopened store served a WAL tail that was never fsynced, and a power loss erased it"
    );
}

mod engine {
    //! Through the engine: what a read-write transaction reports must rest on durable
    //! data, even when it commits no writes.

    use super::*;
    use datalayer_core::{
        ColumnDef, ColumnType, Engine, ErrorKind, IndexDef, Op, Output, TableSchema, TxOptions,
        Value, WriteMode,
    };

    /// `users(id i64 primary key, email string unique)`.
    fn users() -> &'static TableSchema {
        let col = |name: &str, ty| ColumnDef {
            name: name.into(),
            field: name.into(),
            ty,
            nullable: false,
        };
        Box::leak(Box::new(TableSchema {
            version: None,
            name: "users".into(),
            columns: vec![col("id", ColumnType::I64), col("email", ColumnType::String)],
            primary_key: vec![0],
            indexes: vec![IndexDef {
                name: "users_email".into(),
                columns: vec![1],
                unique: true,
                when: None,
            }],
        }))
    }

    fn row(id: i64, email: &str) -> Vec<Value> {
        vec![Value::I64(id), Value::String(email.into())]
    }

    fn insert(t: &TableSchema, r: Vec<Value>) -> Op<'_> {
        Op::Insert {
            table: t,
            rows: vec![r],
            mode: WriteMode::Insert,
        }
    }

    /// A unique violation and a 0-row update, both decided on a commit whose fsync has
    /// not completed: neither may be reported before that commit is durable (a power
    /// loss before it would make both answers false).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_write_transaction_without_writes_waits_for_what_it_read_to_be_durable() {
        let fs = CrashFs::new();
        let engine = Arc::new(
            datalayer_etch::open_dir(fs.dir(), Default::default())
                .await
                .unwrap(),
        );
        let t = users();
        engine.register(&[t], &[]).await.unwrap();
        engine.run(insert(t, row(1, "a@x"))).await.unwrap();

        // Commit 2 (insert user 2, delete user 1) is appended, its fsync held.
        fs.hold_syncs();
        let e = engine.clone();
        let pending = tokio::spawn(async move {
            let mut tx = e.begin(TxOptions::default()).await?;
            tx.run(insert(t, row(2, "b@x"))).await?;
            tx.run(Op::Delete {
                table: t,
                keys: vec![vec![Value::I64(1)]],
            })
            .await?;
            tx.commit().await
        });
        for _ in 0..5_000 {
            if fs.syncs_waiting_at_gate() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            fs.syncs_waiting_at_gate() > 0,
            "commit 2 never asked for an fsync"
        );

        let e = engine.clone();
        let duplicate = tokio::spawn(async move { e.run(insert(t, row(3, "b@x"))).await });
        let e = engine.clone();
        let update = tokio::spawn(async move {
            e.run(Op::Update {
                table: t,
                rows: vec![row(1, "a2@x")],
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let early_duplicate = duplicate.is_finished();
        let early_update = update.is_finished();
        fs.release_syncs();
        pending.await.unwrap().unwrap();
        let duplicate = duplicate.await.unwrap();
        let update = update.await.unwrap();
        assert_eq!(
            duplicate.as_ref().map_err(|e| e.kind()).err(),
            Some(ErrorKind::AlreadyExists),
            "{duplicate:?}"
        );
        assert!(matches!(update, Ok(Output::Count(0))), "{update:?}");
        assert!(
            !early_duplicate,
            "a unique violation was reported before the row it collides with was durable"
        );
        assert!(
            !early_update,
            "a 0-row update was reported before the delete it rests on was durable"
        );
    }
}
