//! The test cluster against the real `tikv-client` 0.4.0: the Percolator cases of
//! `shared/notes/TIKV.md` (put/get, write conflicts, scans across regions, reverse scans,
//! lock resolution after an abandoned transaction, pessimistic locks) and the faults:
//! region errors, splits, lost responses, held RPCs, leader transfers to a second store
//! and stopped stores.

use datalayer_tikv_testkit::{ClusterConfig, Fault, HoldPoint, RegionFault, Rpc, TestCluster};
use std::time::{Duration, Instant};
use tikv_client::{CheckLevel, Transaction, TransactionClient, TransactionOptions};

async fn cluster() -> (TestCluster, TransactionClient) {
    let cluster = TestCluster::start(ClusterConfig::default())
        .await
        .expect("start the test cluster");
    assert_eq!(cluster.regions().len(), 4);
    let client = TransactionClient::new(vec![cluster.pd_addr()])
        .await
        .expect("connect the client");
    (cluster, client)
}

async fn begin(client: &TransactionClient) -> Transaction {
    client
        .begin_with_options(TransactionOptions::new_optimistic().drop_check(CheckLevel::None))
        .await
        .unwrap()
}

async fn put_all(client: &TransactionClient, kvs: &[(&str, &str)]) {
    let mut t = begin(client).await;
    for (k, v) in kvs {
        t.put(k.as_bytes().to_vec(), v.as_bytes().to_vec())
            .await
            .unwrap();
    }
    t.commit().await.unwrap();
}

fn s(v: Option<Vec<u8>>) -> Option<String> {
    v.map(|v| String::from_utf8(v).unwrap())
}

#[tokio::test]
async fn put_get_batch_get_across_regions() {
    let (_c, client) = cluster().await;
    put_all(&client, &[("a", "1"), ("c", "2"), ("k", "3"), ("z", "4")]).await;
    let mut t = begin(&client).await;
    assert_eq!(s(t.get(b"a".to_vec()).await.unwrap()).as_deref(), Some("1"));
    assert_eq!(s(t.get(b"z".to_vec()).await.unwrap()).as_deref(), Some("4"));
    assert_eq!(t.get(b"q".to_vec()).await.unwrap(), None);
    let mut got: Vec<(Vec<u8>, Vec<u8>)> = t
        .batch_get(vec![
            b"a".to_vec(),
            b"k".to_vec(),
            b"missing".to_vec(),
            b"z".to_vec(),
        ])
        .await
        .unwrap()
        .map(|p| (p.0.into(), p.1))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"k".to_vec(), b"3".to_vec()),
            (b"z".to_vec(), b"4".to_vec())
        ]
    );
    t.rollback().await.unwrap();
    // A delete is seen by later transactions; an earlier snapshot still sees the value.
    let mut old = begin(&client).await;
    let mut d = begin(&client).await;
    d.delete(b"k".to_vec()).await.unwrap();
    d.commit().await.unwrap();
    assert_eq!(begin(&client).await.get(b"k".to_vec()).await.unwrap(), None);
    assert_eq!(
        s(old.get(b"k".to_vec()).await.unwrap()).as_deref(),
        Some("3")
    );
}

#[tokio::test]
async fn write_conflict_is_an_error_and_applies_nothing() {
    let (c, client) = cluster().await;
    put_all(&client, &[("a", "0"), ("x", "0")]).await;
    let mut t1 = begin(&client).await;
    let mut t2 = begin(&client).await;
    t1.get(b"a".to_vec()).await.unwrap();
    t2.get(b"a".to_vec()).await.unwrap();
    t1.put(b"a".to_vec(), b"1".to_vec()).await.unwrap();
    t2.put(b"x".to_vec(), b"2".to_vec()).await.unwrap();
    t2.put(b"a".to_vec(), b"2".to_vec()).await.unwrap();
    t1.commit().await.unwrap();
    let e = t2.commit().await.unwrap_err();
    let msg = format!("{e:?}");
    assert!(msg.contains("conflict"), "{msg}");
    t2.rollback().await.unwrap();
    let mut r = begin(&client).await;
    assert_eq!(s(r.get(b"a".to_vec()).await.unwrap()).as_deref(), Some("1"));
    assert_eq!(s(r.get(b"x".to_vec()).await.unwrap()).as_deref(), Some("0"));
    assert_eq!(c.lock_count(), 0);
}

#[tokio::test]
async fn scans_cross_regions_in_order_both_ways() {
    let (c, client) = cluster().await;
    let keys = ["a", "aa", "b", "ba", "h", "i", "j", "q", "r", "s", "zz"];
    let kvs: Vec<(&str, &str)> = keys.iter().map(|k| (*k, *k)).collect();
    put_all(&client, &kvs).await;
    let mut t = begin(&client).await;
    let all: Vec<Vec<u8>> = t
        .scan(b"".to_vec().., 100)
        .await
        .unwrap()
        .map(|p| p.0.into())
        .collect();
    assert_eq!(
        all,
        keys.iter()
            .map(|k| k.as_bytes().to_vec())
            .collect::<Vec<_>>()
    );
    let rev: Vec<Vec<u8>> = t
        .scan_reverse(b"".to_vec().., 100)
        .await
        .unwrap()
        .map(|p| p.0.into())
        .collect();
    assert_eq!(
        rev,
        keys.iter()
            .rev()
            .map(|k| k.as_bytes().to_vec())
            .collect::<Vec<_>>()
    );
    // Bounded, limited, across a boundary.
    let part: Vec<Vec<u8>> = t
        .scan(b"ba".to_vec()..b"s".to_vec(), 4)
        .await
        .unwrap()
        .map(|p| p.0.into())
        .collect();
    assert_eq!(
        part,
        vec![b"ba".to_vec(), b"h".to_vec(), b"i".to_vec(), b"j".to_vec()]
    );
    let part: Vec<Vec<u8>> = t
        .scan_reverse(b"ba".to_vec()..b"s".to_vec(), 3)
        .await
        .unwrap()
        .map(|p| p.0.into())
        .collect();
    assert_eq!(part, vec![b"r".to_vec(), b"q".to_vec(), b"j".to_vec()]);
    assert!(c.rpc_count(Rpc::Scan) >= 4, "one KvScan per region");
}

#[tokio::test]
async fn abandoned_transaction_locks_are_resolved() {
    let (c, client) = cluster().await;
    put_all(&client, &[("a", "old"), ("m", "old")]).await;
    assert!(c.settle(Duration::from_secs(5)).await);
    // A transaction prewrote both keys, then died; its TTL has run out.
    c.orphan_locks(
        &[
            (b"a".to_vec(), Some(b"new".to_vec())),
            (b"m".to_vec(), None),
        ],
        0,
    );
    assert_eq!(c.lock_count(), 2);
    let mut t = begin(&client).await;
    assert_eq!(
        s(t.get(b"m".to_vec()).await.unwrap()).as_deref(),
        Some("old")
    );
    assert_eq!(
        s(t.get(b"a".to_vec()).await.unwrap()).as_deref(),
        Some("old")
    );
    assert!(c.rpc_count(Rpc::CheckTxnStatus) >= 1);
    assert!(c.rpc_count(Rpc::ResolveLock) >= 1);
    // A writer goes through too, and no lock is left behind.
    put_all(&client, &[("a", "w"), ("m", "w")]).await;
    assert_eq!(c.committed_value(b"a").as_deref(), Some(&b"w"[..]));
    assert!(c.settle(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn live_lock_makes_readers_wait_for_its_ttl() {
    let (c, client) = cluster().await;
    put_all(&client, &[("k", "old")]).await;
    assert!(c.settle(Duration::from_secs(5)).await);
    let started = Instant::now();
    c.orphan_locks(&[(b"k".to_vec(), Some(b"new".to_vec()))], 600);
    let mut t = begin(&client).await;
    assert_eq!(
        s(t.get(b"k".to_vec()).await.unwrap()).as_deref(),
        Some("old")
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "read before the TTL: {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

#[tokio::test]
async fn pessimistic_lock_blocks_a_second_locker() {
    let (c, client) = cluster().await;
    let opts = TransactionOptions::new_pessimistic().drop_check(CheckLevel::None);
    let mut t1 = client.begin_with_options(opts.clone()).await.unwrap();
    let mut t2 = client.begin_with_options(opts).await.unwrap();
    t1.lock_keys(vec![b"p".to_vec()]).await.unwrap();
    let started = Instant::now();
    assert!(t2.lock_keys(vec![b"p".to_vec()]).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(30));
    t2.rollback().await.unwrap();
    t1.put(b"p".to_vec(), b"1".to_vec()).await.unwrap();
    t1.commit().await.unwrap();
    assert_eq!(c.committed_value(b"p").as_deref(), Some(&b"1"[..]));
    assert!(c.rpc_count(Rpc::PessimisticLock) >= 2);
}

#[tokio::test]
async fn retried_region_errors_are_invisible() {
    let (c, client) = cluster().await;
    put_all(&client, &[("a", "1"), ("k", "2")]).await;
    for fault in [
        RegionFault::NotLeader,
        RegionFault::EpochNotMatch,
        RegionFault::RegionNotFound,
        RegionFault::StoreNotMatch,
    ] {
        c.inject(Rpc::Get, Fault::Region(fault), 2);
        let mut t = begin(&client).await;
        assert_eq!(
            s(t.get(b"k".to_vec()).await.unwrap()).as_deref(),
            Some("2"),
            "{fault:?}"
        );
        assert_eq!(c.pending_faults(Rpc::Get), 0, "{fault:?}");
        c.inject(Rpc::Prewrite, Fault::Region(fault), 1);
        c.inject(Rpc::Commit, Fault::Region(fault), 1);
        t.put(b"k".to_vec(), b"3".to_vec()).await.unwrap();
        t.commit().await.unwrap();
        assert_eq!(
            c.committed_value(b"k").as_deref(),
            Some(&b"3"[..]),
            "{fault:?}"
        );
        put_all(&client, &[("k", "2")]).await;
    }
}

#[tokio::test]
async fn server_is_busy_reaches_the_caller() {
    let (c, client) = cluster().await;
    c.inject(Rpc::Get, Fault::Region(RegionFault::ServerIsBusy), 1);
    let mut t = begin(&client).await;
    let e = t.get(b"k".to_vec()).await.unwrap_err();
    assert!(format!("{e:?}").contains("server_is_busy"), "{e:?}");
}

#[tokio::test]
async fn live_split_between_reads() {
    let (c, client) = cluster().await;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
    let kvs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
    put_all(&client, &kvs).await;
    let mut t = begin(&client).await;
    assert_eq!(
        t.scan(b"k".to_vec()..b"l".to_vec(), 100)
            .await
            .unwrap()
            .count(),
        20
    );
    assert!(c.split(b"k05"));
    assert!(c.split(b"k13"));
    let got: Vec<Vec<u8>> = t
        .scan(b"k".to_vec()..b"l".to_vec(), 100)
        .await
        .unwrap()
        .map(|p| p.0.into())
        .collect();
    assert_eq!(
        got,
        keys.iter()
            .map(|k| k.as_bytes().to_vec())
            .collect::<Vec<_>>()
    );
    assert_eq!(c.regions().len(), 6);
}

#[tokio::test]
async fn a_dropped_commit_response_is_never_applied_twice() {
    let (c, client) = cluster().await;
    c.inject(Rpc::Commit, Fault::DropResponse, 1);
    let mut t = begin(&client).await;
    t.put(b"a".to_vec(), b"1".to_vec()).await.unwrap();
    // The client retries the commit; the retry finds the transaction committed.
    t.commit().await.unwrap();
    assert_eq!(c.commit_count(b"a"), 1);
    assert_eq!(c.committed_value(b"a").as_deref(), Some(&b"1"[..]));
}

#[tokio::test]
async fn unavailable_and_slow_stores_are_retried_by_the_client() {
    let (c, client) = cluster().await;
    put_all(&client, &[("k", "1")]).await;
    c.inject(Rpc::Get, Fault::Unavailable, 2);
    let mut t = begin(&client).await;
    assert_eq!(s(t.get(b"k".to_vec()).await.unwrap()).as_deref(), Some("1"));
    assert_eq!(c.pending_faults(Rpc::Get), 0);
    // One answer later than the client's 2 s request timeout: it gives up on that
    // request and asks again.
    c.inject(Rpc::Get, Fault::Delay(Duration::from_millis(2500)), 1);
    let started = Instant::now();
    let mut t = begin(&client).await;
    assert_eq!(s(t.get(b"k".to_vec()).await.unwrap()).as_deref(), Some("1"));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(c.rpc_count(Rpc::Get) >= 5);
}

#[tokio::test]
async fn a_held_rpc_waits_for_the_test_and_can_be_failed() {
    let (c, client) = cluster().await;
    // Held before it applies, then released: the commit completes.
    let hold = c.hold(Rpc::Commit, 1, HoldPoint::BeforeApply);
    let mut t = begin(&client).await;
    t.put(b"a".to_vec(), b"1".to_vec()).await.unwrap();
    let commit = tokio::spawn(async move { t.commit().await });
    assert!(hold.reached(Duration::from_secs(5)).await);
    assert!(hold.is_parked());
    assert_eq!(c.lock_count(), 1, "prewritten, not committed");
    assert_eq!(c.commit_count(b"a"), 0);
    hold.release();
    commit.await.unwrap().unwrap();
    assert_eq!(c.commit_count(b"a"), 1);
    // Failed before it applies, every time: the primary never commits.
    let hold = c.hold(Rpc::Commit, 1, HoldPoint::BeforeApply);
    c.inject(Rpc::Commit, Fault::Unavailable, 30);
    let mut t = begin(&client).await;
    t.put(b"a".to_vec(), b"2".to_vec()).await.unwrap();
    let commit = tokio::spawn(async move { t.commit().await });
    // The injected faults come first: the hold catches the first call without one.
    assert!(!hold.reached(Duration::from_millis(300)).await);
    assert!(commit.await.unwrap().is_err());
    assert_eq!(c.commit_count(b"a"), 1);
    c.clear_faults();
    drop(hold);
    // Applied, response held, then dropped: committed once, the client retries.
    let hold = c.hold(Rpc::Commit, 1, HoldPoint::AfterApply);
    let mut t = begin(&client).await;
    t.put(b"k".to_vec(), b"1".to_vec()).await.unwrap();
    let commit = tokio::spawn(async move { t.commit().await });
    assert!(hold.reached(Duration::from_secs(5)).await);
    assert_eq!(c.commit_count(b"k"), 1, "applied while held");
    hold.fail();
    commit.await.unwrap().unwrap();
    assert_eq!(c.commit_count(b"k"), 1, "applied once");
}

#[tokio::test]
async fn leaders_move_between_two_stores_and_a_stopped_store_is_unavailable() {
    let c = TestCluster::start(ClusterConfig {
        stores: 2,
        ..ClusterConfig::default()
    })
    .await
    .unwrap();
    let client = TransactionClient::new(vec![c.pd_addr()]).await.unwrap();
    put_all(&client, &[("a", "1"), ("k", "1"), ("z", "1")]).await;
    assert_eq!(c.leader_store(b"k"), 1);
    // The client learns the new leader (from the old one's NotLeader).
    assert!(c.transfer_leader(b"k", 2));
    assert!(!c.transfer_leader(b"k", 2), "already there");
    let mut t = begin(&client).await;
    assert_eq!(s(t.get(b"k".to_vec()).await.unwrap()).as_deref(), Some("1"));
    // Store 2 stops: reads of its regions fail once the client's retries are spent
    // (so the client did route `k` to store 2); the other store still serves.
    // (A transaction caches what it read: each read below is a new transaction.)
    c.stop_store(2);
    let gets = c.rpc_count(Rpc::Get);
    assert!(begin(&client).await.get(b"k".to_vec()).await.is_err());
    assert_eq!(
        c.rpc_count(Rpc::Get),
        gets,
        "a stopped store serves nothing"
    );
    let got = begin(&client).await.get(b"a".to_vec()).await.unwrap();
    assert_eq!(s(got).as_deref(), Some("1"));
    // Its leader fails over to store 1: served again, before the restart.
    assert!(c.transfer_leader(b"k", 1));
    let got = begin(&client).await.get(b"k".to_vec()).await.unwrap();
    assert_eq!(s(got).as_deref(), Some("1"));
    c.restart_store(2);
    assert_eq!(c.transfer_all_leaders(2), c.regions().len());
    t.put(b"z".to_vec(), b"2".to_vec()).await.unwrap();
    t.commit().await.unwrap();
    let mut t = begin(&client).await;
    assert_eq!(s(t.get(b"z".to_vec()).await.unwrap()).as_deref(), Some("2"));
    t.rollback().await.unwrap();
    assert!(
        TestCluster::start(ClusterConfig {
            stores: 3,
            ..ClusterConfig::default()
        })
        .await
        .is_err()
    );
}
