//! Issue 9, defects 2 and 9: recovery after a power loss that keeps a later unsynced
//! record but not an earlier one, and the error paths of a checkpoint (failed segment
//! creation, directory fsync, snapshot write).

mod common;

use std::io::ErrorKind;

use common::CrashFs;
use datalayer_etch::storage::crashfs::{Damage, Op};
use datalayer_etch::storage::{FlushPolicy, Store, StoreError, StoreOptions};
use rand::SeedableRng;
use rand::rngs::StdRng;

const WAL1: &str = "wal-00000000000000000001.log";

fn opts(compact_after_bytes: u64) -> StoreOptions {
    StoreOptions {
        flush: FlushPolicy::EveryCommit,
        compact_after_bytes,
        ..StoreOptions::default()
    }
}

/// The start of a record whose append was cut short: a header announcing 50 payload
/// bytes, and 3 of them.
fn torn_record() -> Vec<u8> {
    let mut v = 50u32.to_le_bytes().to_vec();
    v.extend([0xab; 4]);
    v.extend([1, 2, 3]);
    v
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn put(store: &Store, key: &str) -> Result<u64, StoreError> {
    let txn = store.begin_write().await;
    txn.commit(vec![(key.as_bytes().to_vec(), Some(vec![b'v'; 40]))])
        .await
}

/// Commits `k1`, `k2` durably, then `k3`..`k5` while their fsync is held, and returns
/// the file system a power loss that kept every byte would leave, plus the durable
/// length of the WAL (where record 3 starts).
fn two_durable_three_pending() -> (CrashFs, usize) {
    let fs = CrashFs::new();
    let store = Store::open_dir(fs.dir(), opts(64 << 20)).unwrap();
    let rt = rt();
    let image = rt.block_on(async {
        put(&store, "k1").await.unwrap();
        put(&store, "k2").await.unwrap();
        let durable = fs.sync_log().last().unwrap().1;
        fs.hold_syncs();
        let mut pending = Vec::new();
        for k in ["k3", "k4", "k5"] {
            let store = store.clone();
            pending.push(tokio::spawn(async move { put(&store, k).await }));
        }
        // All three appended (the writer lock is free and the base is at seq 5).
        loop {
            let txn = store.begin_write().await;
            if txn.base().seq() == 5 {
                break;
            }
            drop(txn);
            tokio::task::yield_now().await;
        }
        let image = fs.power_loss(Damage::AllKept, &mut StdRng::seed_from_u64(1));
        fs.release_syncs();
        for p in pending {
            p.await.unwrap().unwrap();
        }
        (image, durable)
    });
    drop(store);
    image
}

#[test]
fn damage_to_an_unsynced_record_before_intact_later_ones_is_cut_not_corrupted() {
    let (image, durable) = two_durable_three_pending();
    // Record 3 lost a byte; records 4 and 5 reached the disk intact. None of them was
    // acknowledged, and each says that only seq 2 was durable when it was appended.
    image.poke(WAL1, durable + 9, |b| b ^ 0x55);
    let store = Store::open_dir(image.dir(), opts(64 << 20))
        .unwrap_or_else(|e| panic!("an ordinary power loss must open: {e}"));
    let snap = store.snapshot();
    assert_eq!(snap.seq(), 2);
    assert!(snap.get(b"k2").is_some() && snap.get(b"k3").is_none());
    // The log was cut at record 3: the next commit takes seq 3 and survives reopening.
    let rt = rt();
    assert_eq!(rt.block_on(put(&store, "k3b")).unwrap(), 3);
    store.close().unwrap();
    drop(store);
    let again = Store::open_dir(image.restart().dir(), opts(64 << 20)).unwrap();
    assert_eq!(again.snapshot().seq(), 3);
}

#[test]
fn damage_to_an_acknowledged_record_is_still_corrupted() {
    let (image, durable) = two_durable_three_pending();
    // A byte of record 2 (fsynced and acknowledged): record 3 says seq 2 was durable.
    image.poke(WAL1, durable - 3, |b| b ^ 0x55);
    match Store::open_dir(image.dir(), opts(64 << 20)) {
        Err(StoreError::Corrupted { reason, .. }) => {
            assert!(reason.contains("acknowledged"), "{reason}");
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

/// Fail each I/O operation of a checkpoint in turn: the checkpoint fails, no `.tmp`
/// file is left, commits go on (only a failed WAL fsync poisons the store), and after
/// a kill -9 that tears the last append, every acknowledged commit is recovered.
#[test]
fn every_failing_operation_of_a_checkpoint_leaves_a_recoverable_store() {
    let rt = rt();
    let mut failed_kinds = std::collections::BTreeSet::new();
    for n in 1..=12u64 {
        let fs = CrashFs::new();
        let store = Store::open_dir(fs.dir(), opts(64 << 20)).unwrap();
        let mut acked = Vec::new();
        rt.block_on(async {
            for i in 0..3 {
                let k = format!("a{i}");
                put(&store, &k).await.unwrap();
                acked.push(k);
            }
        });
        fs.fail_op(fs.ops() + n, ErrorKind::StorageFull);
        let res = store.checkpoint();
        let failed = fs.failed_ops();
        if let Some((_, op, _)) = failed.first() {
            failed_kinds.insert(format!("{op:?}"));
            assert!(
                res.is_err(),
                "n={n}: {op:?} failed but checkpoint returned Ok"
            );
        } else {
            res.unwrap();
        }
        let leftovers: Vec<_> = fs
            .listing()
            .into_iter()
            .filter(|(name, _)| name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "n={n}: {leftovers:?} left behind");
        let poisoned = failed
            .iter()
            .any(|(_, op, file)| *op == Op::Sync && file.starts_with("wal-"));
        rt.block_on(async {
            for i in 0..3 {
                let k = format!("b{i}");
                match put(&store, &k).await {
                    Ok(_) => {
                        assert!(!poisoned, "n={n}: Ok after a failed WAL fsync");
                        acked.push(k);
                    }
                    Err(e) => assert!(poisoned, "n={n}: commit failed: {e}"),
                }
            }
        });
        // One more append is torn (half of it written), then kill -9.
        fs.set_fail_writes(true);
        assert!(rt.block_on(put(&store, "torn")).is_err());
        let image = fs.kill();
        drop(store);
        let reopened = Store::open_dir(image.dir(), opts(64 << 20))
            .unwrap_or_else(|e| panic!("n={n} ({failed:?}): reopen failed: {e}"));
        let snap = reopened.snapshot();
        for k in &acked {
            assert!(snap.get(k.as_bytes()).is_some(), "n={n}: lost {k}");
        }
    }
    for kind in ["Sync", "Create", "SyncDir", "Write", "Rename"] {
        assert!(
            failed_kinds.contains(kind),
            "no {kind} failure exercised: {failed_kinds:?}"
        );
    }
}

/// A segment switch whose directory fsync failed, with the removal of the new file
/// lost too: recovery treats the previous segment as the newest and cuts its torn tail.
#[test]
fn a_leftover_empty_segment_does_not_turn_a_torn_tail_into_corruption() {
    let fs = CrashFs::new();
    let store = Store::open_dir(fs.dir(), opts(64 << 20)).unwrap();
    rt().block_on(async {
        for k in ["a", "b", "c"] {
            put(&store, k).await.unwrap();
        }
    });
    let image = fs.kill();
    drop(store);
    let dir = image.dir();
    dir.open_append(WAL1)
        .unwrap()
        .write_all(&torn_record())
        .unwrap();
    dir.create("wal-00000000000000000003.log").unwrap();
    let store = Store::open_dir(dir, opts(64 << 20)).unwrap();
    assert_eq!(store.snapshot().seq(), 3);
}

/// A lasting failure to create the next segment costs O(log size) checkpoint
/// attempts, not one (with its fsyncs) per commit.
#[test]
fn a_failing_segment_switch_is_not_retried_on_every_commit() {
    let fs = CrashFs::new();
    let store = Store::open_dir(fs.dir(), opts(100)).unwrap();
    fs.set_fail_creates(true);
    rt().block_on(async {
        for i in 0..60 {
            put(&store, &format!("k{i}")).await.unwrap();
            // Let the background checkpointer run between commits.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    let attempts = fs.failed_ops().len();
    assert!(attempts >= 1, "the checkpoint was never attempted");
    assert!(
        attempts <= 8,
        "{attempts} checkpoint attempts for 60 commits"
    );
}
