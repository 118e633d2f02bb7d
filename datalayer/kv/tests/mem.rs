//! `datalayer_kv::mem::MemKv` beyond the shared contract: its conflict rules.

use datalayer_core::{ErrorKind, TxOptions};
use datalayer_kv::mem::MemKv;
use datalayer_kv::{Bytes, KvStore};
use std::ops::Bound;

fn rw() -> TxOptions {
    TxOptions::default()
}

fn ro() -> TxOptions {
    TxOptions {
        read_only: true,
        ..TxOptions::default()
    }
}

fn put(k: &str, v: &str) -> (Bytes, Option<Bytes>) {
    (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))
}

async fn commit(s: &MemKv, writes: Vec<(Bytes, Option<Bytes>)>) -> datalayer_core::Result<()> {
    s.begin(rw()).await?.commit(writes).await
}

async fn all(s: &MemKv) -> Vec<(Bytes, Bytes)> {
    let mut t = s.begin(ro()).await.unwrap();
    t.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX, false)
        .await
        .unwrap()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
    p.iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

#[tokio::test]
async fn blind_write_of_a_key_changed_since_begin_conflicts() {
    let s = MemKv::new();
    let t1 = s.begin(rw()).await.unwrap();
    commit(&s, vec![put("k", "other")]).await.unwrap();
    let e = t1
        .commit(vec![put("j", "1"), put("k", "mine")])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.message().contains("key \"k\""), "{e}");
    assert_eq!(all(&s).await, pairs(&[("k", "other")]), "nothing applied");
}

#[tokio::test]
async fn read_key_changed_since_begin_conflicts() {
    let s = MemKv::new();
    commit(&s, vec![put("a", "0")]).await.unwrap();
    let mut t1 = s.begin(rw()).await.unwrap();
    assert_eq!(t1.get(b"a").await.unwrap(), Some(b"0".to_vec()));
    commit(&s, vec![(b"a".to_vec(), None)]).await.unwrap();
    let e = t1.commit(vec![put("b", "from a")]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(all(&s).await.is_empty());
}

#[tokio::test]
async fn phantom_in_a_scanned_range_conflicts() {
    let s = MemKv::new();
    commit(&s, vec![put("a1", "x"), put("b", "x")])
        .await
        .unwrap();
    let mut t1 = s.begin(rw()).await.unwrap();
    let n = t1
        .count(Bound::Included(b"a"), Bound::Excluded(b"b"))
        .await
        .unwrap();
    assert_eq!(n, 1);
    commit(&s, vec![put("a2", "x")]).await.unwrap();
    let e = t1.commit(vec![put("count", "1")]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.message().contains("scanned range"), "{e}");
}

#[tokio::test]
async fn limited_scan_only_covers_what_it_returned() {
    let s = MemKv::new();
    commit(&s, vec![put("a", "x"), put("b", "x"), put("c", "x")])
        .await
        .unwrap();
    let mut t1 = s.begin(rw()).await.unwrap();
    let got = t1
        .scan(Bound::Unbounded, Bound::Unbounded, 1, false)
        .await
        .unwrap();
    assert_eq!(got, pairs(&[("a", "x")]));
    // A change past the last returned key is not something t1 read.
    commit(&s, vec![put("c", "y")]).await.unwrap();
    t1.commit(vec![put("seen", "a")]).await.unwrap();
    assert_eq!(
        all(&s).await,
        pairs(&[("a", "x"), ("b", "x"), ("c", "y"), ("seen", "a")])
    );
}

#[tokio::test]
async fn disjoint_writers_both_commit() {
    let s = MemKv::new();
    let mut t1 = s.begin(rw()).await.unwrap();
    let mut t2 = s.begin(rw()).await.unwrap();
    assert_eq!(t1.get(b"x").await.unwrap(), None);
    assert_eq!(t2.get(b"y").await.unwrap(), None);
    t1.commit(vec![put("x", "1")]).await.unwrap();
    t2.commit(vec![put("y", "2")]).await.unwrap();
    assert_eq!(all(&s).await, pairs(&[("x", "1"), ("y", "2")]));
}

#[tokio::test]
async fn read_only_transactions_refuse_writes_and_never_conflict() {
    let s = MemKv::new();
    let mut r = s.begin(ro()).await.unwrap();
    assert_eq!(r.get(b"k").await.unwrap(), None);
    commit(&s, vec![put("k", "1")]).await.unwrap();
    r.commit(Vec::new()).await.unwrap();
    let e = s
        .begin(ro())
        .await
        .unwrap()
        .commit(vec![put("k", "2")])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(all(&s).await, pairs(&[("k", "1")]));
}

#[tokio::test]
async fn clones_share_data_and_snapshot_reads_committed_state() {
    let s = MemKv::new();
    let other = s.clone();
    commit(&other, vec![put("k", "1")]).await.unwrap();
    let snap = s.snapshot().expect("MemKv offers synchronous snapshots");
    commit(&s, vec![put("k", "2")]).await.unwrap();
    assert_eq!(snap.get(b"k"), Some(&b"1"[..]), "a snapshot does not move");
    assert_eq!(s.snapshot().unwrap().get(b"k"), Some(&b"2"[..]));
    assert_eq!(s.name(), "memkv");
    let cap = s.capability();
    assert!(cap.concurrent_writers && cap.serializable && cap.snapshot && !cap.durable);
}
