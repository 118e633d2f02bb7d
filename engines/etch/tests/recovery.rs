//! Recovery, limits, close and compaction on the real file system (`OsDir`).

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::Duration;

use datalayer_etch::storage::{FlushPolicy, Snapshot, Store, StoreError, StoreOptions};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn contents(s: &Snapshot) -> Model {
    s.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

async fn put(store: &Store, k: &[u8], v: &[u8]) -> u64 {
    let txn = store.begin_write().await;
    txn.commit(vec![(k.to_vec(), Some(v.to_vec()))])
        .await
        .unwrap()
}

/// Commit `n` records `k{i}` -> `v{i}`; returns the byte offset where each record starts.
async fn fill(dir: &Path, n: usize) -> Vec<u64> {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let mut offsets = Vec::new();
    for i in 0..n {
        offsets.push(std::fs::metadata(&wal_files(dir)[0]).unwrap().len());
        put(
            &store,
            format!("k{i}").as_bytes(),
            format!("v{i}").as_bytes(),
        )
        .await;
    }
    store.close().unwrap();
    offsets
}

#[tokio::test]
async fn reopen_keeps_every_commit() {
    let tmp = tempfile::tempdir().unwrap();
    fill(tmp.path(), 20).await;
    let store = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    let snap = store.snapshot();
    assert_eq!(snap.len(), 20);
    assert_eq!(snap.seq(), 20);
    assert_eq!(snap.get(b"k7"), Some(&b"v7"[..]));
    let txn = store.begin_write().await;
    assert_eq!(txn.commit(vec![(b"k7".to_vec(), None)]).await.unwrap(), 21);
    drop(store);
    let store = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.snapshot().get(b"k7"), None);
    assert_eq!(store.snapshot().len(), 19);
}

#[tokio::test]
async fn torn_tail_is_cut_and_the_store_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    let offsets = fill(tmp.path(), 5).await;
    let wal = wal_files(tmp.path())[0].clone();
    let full = std::fs::read(&wal).unwrap();
    let last = offsets[4] as usize;
    // Every possible torn append of the last record (and garbage after a cut).
    for cut in last..full.len() {
        for garbage in [&b""[..], &[0u8; 3][..], &[0xff; 40][..]] {
            let mut data = full[..cut].to_vec();
            data.extend_from_slice(garbage);
            std::fs::write(&wal, &data).unwrap();
            let store = Store::open(tmp.path(), StoreOptions::default())
                .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert_eq!(store.snapshot().seq(), 4, "cut {cut}");
            assert_eq!(store.snapshot().get(b"k4"), None);
            drop(store);
            assert_eq!(
                std::fs::metadata(&wal).unwrap().len(),
                last as u64,
                "truncated"
            );
        }
    }
    // The store keeps working after the cut, and the new commit survives a reopen.
    let store = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    assert_eq!(put(&store, b"new", b"x").await, 5);
    drop(store);
    let store = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.snapshot().seq(), 5);
    assert_eq!(store.snapshot().get(b"new"), Some(&b"x"[..]));
    assert_eq!(store.snapshot().get(b"k3"), Some(&b"v3"[..]));
}

#[tokio::test]
async fn flipped_byte_in_a_middle_record_is_corruption_at_its_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let offsets = fill(tmp.path(), 6).await;
    let wal = wal_files(tmp.path())[0].clone();
    let full = std::fs::read(&wal).unwrap();
    let (start, end) = (offsets[2] as usize, offsets[3] as usize);
    // Every byte of record 3: length field, CRC field and payload.
    for i in start..end {
        let mut data = full.clone();
        data[i] ^= 0x10;
        std::fs::write(&wal, &data).unwrap();
        match Store::open(tmp.path(), StoreOptions::default()) {
            Err(StoreError::Corrupted {
                file,
                offset,
                reason,
            }) => {
                assert_eq!(file, wal, "byte {i}");
                assert_eq!(offset, start as u64, "byte {i}: {reason}");
            }
            Err(e) => panic!("byte {i}: wrong error {e}"),
            Ok(s) => panic!("byte {i}: opened with {} commits", s.snapshot().seq()),
        }
    }
    // The failed opens did not cut the file.
    assert_eq!(std::fs::read(&wal).unwrap().len(), full.len());
    std::fs::write(&wal, &full).unwrap();
    assert_eq!(
        Store::open(tmp.path(), StoreOptions::default())
            .unwrap()
            .snapshot()
            .len(),
        6
    );
}

#[tokio::test]
async fn corrupt_snapshot_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = Store::open(tmp.path(), StoreOptions::default()).unwrap();
        for i in 0..10 {
            put(&store, format!("k{i}").as_bytes(), b"v").await;
        }
        store.checkpoint().unwrap();
    }
    let snap = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "etch"))
        .expect("a snapshot file");
    let good = std::fs::read(&snap).unwrap();
    for (what, bytes) in [
        ("flipped byte", {
            let mut b = good.clone();
            b[40] ^= 1;
            b
        }),
        ("truncated", good[..good.len() - 7].to_vec()),
        ("empty", Vec::new()),
    ] {
        std::fs::write(&snap, &bytes).unwrap();
        match Store::open(tmp.path(), StoreOptions::default()) {
            Err(StoreError::Corrupted { file, .. }) => assert_eq!(file, snap, "{what}"),
            Err(e) => panic!("{what}: wrong error {e}"),
            Ok(_) => panic!("{what}: opened a corrupt snapshot"),
        }
    }
    std::fs::write(&snap, &good).unwrap();
    let store = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.snapshot().len(), 10);
}

#[tokio::test]
async fn leftover_temp_snapshot_is_ignored_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    fill(tmp.path(), 3).await;
    let tmp_name = tmp.path().join("snap-00000000000000000099.etch.tmp");
    std::fs::File::create(&tmp_name)
        .unwrap()
        .write_all(b"ETCHSNAP half")
        .unwrap();
    let store = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.snapshot().len(), 3);
    assert!(!tmp_name.exists());
}

#[tokio::test]
async fn value_over_the_limit_is_too_large_and_nothing_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        max_value_bytes: 100,
        ..StoreOptions::default()
    };
    let store = Store::open(tmp.path(), opts.clone()).unwrap();
    let txn = store.begin_write().await;
    let err = txn
        .commit(vec![
            (b"ok".to_vec(), Some(vec![0; 100])),
            (b"big".to_vec(), Some(vec![0; 101])),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooLarge {
                size_bytes: 101,
                limit_bytes: 100,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(store.snapshot().len(), 0);
    // Not poisoned: the next commit works.
    assert_eq!(put(&store, b"ok", &[0; 100]).await, 1);
    drop(store);
    assert_eq!(Store::open(tmp.path(), opts).unwrap().snapshot().len(), 1);
}

#[tokio::test]
async fn close_flushes_and_refuses_later_commits() {
    for flush in [
        FlushPolicy::EveryCommit,
        FlushPolicy::Interval(Duration::from_secs(3600)),
        FlushPolicy::Never,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            flush,
            ..StoreOptions::default()
        };
        let store = Store::open(tmp.path(), opts.clone()).unwrap();
        put(&store, b"a", b"1").await;
        // Visible right after commit under every policy.
        assert_eq!(store.snapshot().get(b"a"), Some(&b"1"[..]), "{flush:?}");
        store.close().unwrap();
        store.close().unwrap();
        let txn = store.begin_write().await;
        let err = txn.commit(vec![(b"b".to_vec(), None)]).await.unwrap_err();
        assert!(err.is_closed(), "{flush:?}: {err}");
        assert_eq!(store.snapshot().get(b"a"), Some(&b"1"[..]));
        assert!(store.checkpoint().unwrap_err().is_closed());
        drop(store);
        let store = Store::open(tmp.path(), opts).unwrap();
        assert_eq!(store.snapshot().get(b"a"), Some(&b"1"[..]), "{flush:?}");
    }
}

#[tokio::test]
async fn a_directory_is_open_in_one_store_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    let clone = store.clone();
    match Store::open(tmp.path(), StoreOptions::default()) {
        Err(StoreError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        other => panic!("second open: {other:?}"),
    }
    drop(store);
    assert!(Store::open(tmp.path(), StoreOptions::default()).is_err());
    drop(clone);
    let again = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    // `close` releases the lock even while clones of the closed store are alive.
    let kept = again.clone();
    again.close().unwrap();
    let reopened = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    assert!(
        kept.begin_write()
            .await
            .commit(vec![(b"x".to_vec(), Some(b"1".to_vec()))])
            .await
            .unwrap_err()
            .is_closed()
    );
    drop(reopened);
}

#[tokio::test]
async fn dropped_write_txn_changes_nothing_and_frees_the_lock() {
    let store = Store::memory();
    put(&store, b"a", b"1").await;
    {
        let txn = store.begin_write().await;
        assert_eq!(txn.base().get(b"a"), Some(&b"1"[..]));
    }
    let txn = store.begin_write().await;
    assert_eq!(txn.base().seq(), 1);
    assert_eq!(txn.commit(vec![]).await.unwrap(), 1, "empty commit");
    assert_eq!(put(&store, b"b", b"2").await, 2);
}

#[tokio::test]
async fn range_reads_forward_and_reverse() {
    let store = Store::memory();
    let txn = store.begin_write().await;
    let mut writes = Vec::new();
    for k in [&b"a"[..], b"ab", b"b", b"ba", b"c", b"\xff"] {
        writes.push((k.to_vec(), Some(k.to_vec())));
    }
    txn.commit(writes).await.unwrap();
    let snap = store.snapshot();
    let keys = |start, end, rev| -> Vec<Vec<u8>> {
        snap.range(start, end, rev)
            .map(|(k, _)| k.to_vec())
            .collect()
    };
    assert_eq!(
        keys(
            Bound::Included(&b"ab"[..]),
            Bound::Excluded(&b"c"[..]),
            false
        ),
        vec![b"ab".to_vec(), b"b".to_vec(), b"ba".to_vec()]
    );
    assert_eq!(
        keys(
            Bound::Excluded(&b"ab"[..]),
            Bound::Included(&b"c"[..]),
            true
        ),
        vec![b"c".to_vec(), b"ba".to_vec(), b"b".to_vec()]
    );
    assert_eq!(keys(Bound::Unbounded, Bound::Unbounded, true).len(), 6);
    assert!(
        keys(
            Bound::Included(&b"c"[..]),
            Bound::Excluded(&b"a"[..]),
            false
        )
        .is_empty()
    );
    assert!(
        keys(
            Bound::Excluded(&b"c"[..]),
            Bound::Excluded(&b"c"[..]),
            false
        )
        .is_empty()
    );
    assert_eq!(snap.get(b"\xff"), Some(&b"\xff"[..]));
}

/// After many commits with a small `compact_after_bytes`, the directory holds a bounded
/// number of files and reopening gives the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_bounds_the_files_and_keeps_the_state() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        flush: FlushPolicy::Never,
        compact_after_bytes: 8 * 1024,
        ..StoreOptions::default()
    };
    let store = Store::open(tmp.path(), opts.clone()).unwrap();
    let mut model = Model::new();
    let mut max_files = 0;
    for i in 0..3_000u32 {
        let k = format!("key{:04}", (i * 7919) % 500).into_bytes();
        let txn = store.begin_write().await;
        if i % 5 == 4 {
            model.remove(&k);
            txn.commit(vec![(k, None)]).await.unwrap();
        } else {
            let v = vec![(i % 251) as u8; 40];
            model.insert(k.clone(), v.clone());
            txn.commit(vec![(k, Some(v))]).await.unwrap();
        }
        if i % 100 == 0 {
            max_files = max_files.max(file_names(tmp.path()).len());
        }
    }
    let total_wal = 3_000 * 60;
    store.close().unwrap();
    drop(store);
    let names = file_names(tmp.path());
    // LOCK + the newest snapshot + its segment, plus at most one checkpoint in flight.
    assert!(names.len() <= 4, "{names:?}");
    assert!(max_files <= 6, "up to {max_files} files during the run");
    assert!(
        names.iter().any(|n| n.starts_with("snap-")),
        "no snapshot was written: {names:?}"
    );
    let wal_bytes: u64 = wal_files(tmp.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    // Covered segments were deleted. (How much is left depends on how far the
    // background checkpointer lagged behind the writer, so no tighter bound here.)
    assert!(wal_bytes < total_wal, "{wal_bytes} bytes of WAL left");
    let store = Store::open(tmp.path(), opts).unwrap();
    assert_eq!(contents(&store.snapshot()), model);
    assert_eq!(store.snapshot().seq(), 3_000);
}
