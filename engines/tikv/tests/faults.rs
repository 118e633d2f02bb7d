//! Faults injected into the in-process test cluster, seen through the engine's
//! `KvStore`: region errors on every RPC kind, a cluster that stays busy, live splits
//! during scans, a commit whose response is lost after the primary committed, leader
//! transfers mid-transaction (between reads and commit, between prewrite and the
//! primary commit, between the primary and the secondaries) and a stopped store (with
//! and without a failover of its leaders, back within the client's retries or not).
//! (These need the test cluster: they do not run against `DATALAYER_TIKV_PD`.)

use datalayer_kv::{Bytes, KvStore, WriteSet};
use datalayer_tikv::TxnMode;
use datalayer_tikv_testkit::{ClusterConfig, Fault, HoldPoint, RegionFault, Rpc, TestCluster};
use std::ops::Bound;
use std::time::Duration;

async fn local(mode: TxnMode) -> (datalayer_kv::KvEngine, TestCluster) {
    let cluster = TestCluster::start(ClusterConfig::default()).await.unwrap();
    let mut opts = datalayer_tikv::TikvOptions::new(vec![cluster.pd_addr()]);
    opts.mode = mode;
    (datalayer_tikv::open(opts).await.unwrap(), cluster)
}

async fn put(store: &dyn KvStore, kvs: &[(&str, &str)]) -> datalayer_core::Result<()> {
    let t = store.begin(Default::default()).await?;
    let mut w: WriteSet = kvs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec())))
        .collect();
    w.sort();
    t.commit(w).await
}

fn b(s: &str) -> Bytes {
    s.as_bytes().to_vec()
}

const RETRIED: [RegionFault; 4] = [
    RegionFault::NotLeader,
    RegionFault::EpochNotMatch,
    RegionFault::RegionNotFound,
    RegionFault::StoreNotMatch,
];

#[tokio::test]
async fn region_errors_on_every_rpc_kind_are_invisible() {
    for mode in [TxnMode::Optimistic, TxnMode::Pessimistic] {
        let (engine, c) = local(mode).await;
        let store = engine.store().as_ref();
        put(store, &[("a", "0"), ("k", "0"), ("z", "0")])
            .await
            .unwrap();
        assert!(c.settle(Duration::from_secs(5)).await);
        let mut kinds = vec![
            Rpc::Get,
            Rpc::BatchGet,
            Rpc::Scan,
            Rpc::Prewrite,
            Rpc::Commit,
        ];
        if mode == TxnMode::Pessimistic {
            kinds.push(Rpc::PessimisticLock);
        }
        for fault in RETRIED.into_iter().chain([RegionFault::ServerIsBusy]) {
            for rpc in &kinds {
                c.inject(*rpc, Fault::Region(fault), 2);
            }
            let mut t = store.begin(Default::default()).await.unwrap();
            assert_eq!(
                t.get(b"k").await.unwrap(),
                Some(b("0")),
                "{mode:?} {fault:?}"
            );
            assert_eq!(
                t.batch_get(&[b("a"), b("z"), b("q")]).await.unwrap(),
                vec![Some(b("0")), Some(b("0")), None],
                "{mode:?} {fault:?}"
            );
            let all = t
                .scan(Bound::Unbounded, Bound::Unbounded, 100, false)
                .await
                .unwrap();
            assert_eq!(all.len(), 3, "{mode:?} {fault:?}");
            if mode == TxnMode::Pessimistic {
                t.lock(&[b("a"), b("z")]).await.unwrap();
            }
            t.commit(vec![(b("a"), Some(b("1"))), (b("z"), Some(b("1")))])
                .await
                .unwrap_or_else(|e| panic!("{mode:?} {fault:?}: {e}"));
            for rpc in &kinds {
                assert_eq!(
                    c.pending_faults(*rpc),
                    0,
                    "{mode:?} {fault:?} {rpc:?} not hit"
                );
            }
            assert_eq!(c.committed_value(b"a"), Some(b("1")), "{mode:?} {fault:?}");
            assert!(c.settle(Duration::from_secs(5)).await);
            put(store, &[("a", "0"), ("z", "0")]).await.unwrap();
            assert!(c.settle(Duration::from_secs(5)).await);
        }
    }
}

#[tokio::test]
async fn a_cluster_that_stays_busy_is_a_timeout() {
    let cluster = TestCluster::start(ClusterConfig::default()).await.unwrap();
    let mut opts = datalayer_tikv::TikvOptions::new(vec![cluster.pd_addr()]);
    opts.busy_retries = 2;
    let engine = datalayer_tikv::open(opts).await.unwrap();
    let store = engine.store().as_ref();
    cluster.inject(Rpc::Get, Fault::Region(RegionFault::ServerIsBusy), 3);
    let mut t = store.begin(Default::default()).await.unwrap();
    let e = t.get(b"k").await.unwrap_err();
    assert_eq!(e.kind(), datalayer_core::ErrorKind::Timeout, "{e}");
    assert!(e.is_retryable() && e.message().contains("3 tries"), "{e}");
    // A busy prewrite never applies: the commit fails retryably and leaves nothing.
    cluster.inject(Rpc::Prewrite, Fault::Region(RegionFault::ServerIsBusy), 10);
    let t = store.begin(Default::default()).await.unwrap();
    let e = t.commit(vec![(b("k"), Some(b("v")))]).await.unwrap_err();
    assert_eq!(e.kind(), datalayer_core::ErrorKind::Timeout, "{e}");
    cluster.clear_faults();
    assert_eq!(cluster.committed_value(b"k"), None);
    assert!(cluster.settle(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn splits_during_scans_return_every_key_once_in_order() {
    let (engine, c) = local(TxnMode::Optimistic).await;
    let store = engine.store().as_ref();
    let keys: Vec<String> = (0..3000).map(|i| format!("s{i:05}")).collect();
    for chunk in keys.chunks(500) {
        let kvs: Vec<(&str, &str)> = chunk.iter().map(|k| (k.as_str(), "v")).collect();
        put(store, &kvs).await.unwrap();
    }
    let want: Vec<Bytes> = keys.iter().map(|k| b(k)).collect();
    let mut t = store.begin(Default::default()).await.unwrap();
    // Between two pages of one transaction.
    let first = t
        .scan(Bound::Unbounded, Bound::Unbounded, 1500, false)
        .await
        .unwrap();
    assert!(c.split(b"s01000") && c.split(b"s02000") && c.split(b"s02500"));
    let last = first.last().unwrap().0.clone();
    let rest = t
        .scan(Bound::Excluded(&last), Bound::Unbounded, usize::MAX, false)
        .await
        .unwrap();
    let got: Vec<Bytes> = first.into_iter().chain(rest).map(|(k, _)| k).collect();
    assert_eq!(got, want);
    // Splits racing one large (paged) scan, both directions.
    for reverse in [false, true] {
        let splitter = {
            let c = &c;
            async move {
                for i in 0..20 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    c.split(format!("s{:05}", 100 + i * 137 + usize::from(reverse)).as_bytes());
                }
            }
        };
        let scan = t.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX, reverse);
        let (got, ()) = tokio::join!(scan, splitter);
        let mut got: Vec<Bytes> = got.unwrap().into_iter().map(|(k, _)| k).collect();
        if reverse {
            got.reverse();
        }
        assert_eq!(got, want, "reverse = {reverse}");
    }
    assert!(c.regions().len() >= 20, "{}", c.regions().len());
    t.rollback().await.unwrap();
}

#[tokio::test]
async fn one_lost_commit_response_is_retried_and_applied_once() {
    let (engine, c) = local(TxnMode::Optimistic).await;
    let store = engine.store().as_ref();
    c.inject(Rpc::Commit, Fault::DropResponse, 1);
    put(store, &[("a", "1"), ("z", "1")]).await.unwrap();
    assert_eq!(c.commit_count(b"a"), 1);
    assert!(c.settle(Duration::from_secs(5)).await);
    assert_eq!(c.commit_count(b"z"), 1);
}

#[tokio::test]
async fn lost_commit_responses_are_commit_unknown_never_a_double_apply() {
    let (engine, c) = local(TxnMode::Optimistic).await;
    let store = engine.store().as_ref();
    // Every answer to the primary's commit is lost, past the client's 10 tries; the
    // first one applied.
    c.inject(Rpc::Commit, Fault::DropResponse, 30);
    let e = put(store, &[("a", "1"), ("z", "1")]).await.unwrap_err();
    assert!(e.is_commit_unknown(), "{e}");
    assert!(!e.is_retryable());
    c.clear_faults();
    assert_eq!(c.commit_count(b"a"), 1, "the primary committed once");
    // The secondary is resolved from the primary: the transaction is all there.
    let mut t = store.begin(Default::default()).await.unwrap();
    assert_eq!(
        t.batch_get(&[b("a"), b("z")]).await.unwrap(),
        vec![Some(b("1")), Some(b("1"))]
    );
    t.rollback().await.unwrap();
    assert!(c.settle(Duration::from_secs(5)).await);
    assert_eq!(c.commit_count(b"z"), 1);
}

#[tokio::test]
async fn a_dropped_pessimistic_transaction_releases_its_locks() {
    let (engine, c) = local(TxnMode::Pessimistic).await;
    let store = engine.store().as_ref();
    let mut t = store.begin(Default::default()).await.unwrap();
    t.lock(&[b("a"), b("k")]).await.unwrap();
    assert_eq!(c.lock_count(), 2);
    drop(t);
    assert!(
        c.settle(Duration::from_secs(2)).await,
        "locks left after drop"
    );
    let mut t2 = store.begin(Default::default()).await.unwrap();
    t2.lock(&[b("a")]).await.unwrap();
    t2.rollback().await.unwrap();
}

#[tokio::test]
async fn abandoned_locks_are_resolved_by_engine_readers() {
    let (engine, c) = local(TxnMode::Optimistic).await;
    let store = engine.store().as_ref();
    put(store, &[("a", "old"), ("k", "old")]).await.unwrap();
    assert!(c.settle(Duration::from_secs(5)).await);
    c.orphan_locks(&[(b("a"), Some(b("new"))), (b("k"), None)], 0);
    let mut t = store.begin(Default::default()).await.unwrap();
    assert_eq!(
        t.scan(Bound::Unbounded, Bound::Unbounded, 10, false)
            .await
            .unwrap(),
        vec![(b("a"), b("old")), (b("k"), b("old"))]
    );
    t.rollback().await.unwrap();
    assert!(c.settle(Duration::from_secs(5)).await);
}

/// An engine on a fresh two-store cluster (leaders on store 1).
async fn two_stores(mode: TxnMode) -> (datalayer_kv::KvEngine, TestCluster) {
    let cluster = TestCluster::start(ClusterConfig {
        stores: 2,
        ..ClusterConfig::default()
    })
    .await
    .unwrap();
    assert_ne!(cluster.store_addr(1), cluster.store_addr(2));
    let mut opts = datalayer_tikv::TikvOptions::new(vec![cluster.pd_addr()]);
    opts.mode = mode;
    (datalayer_tikv::open(opts).await.unwrap(), cluster)
}

/// The keys of the multi-region transactions below: one in each of the 4 regions.
const KEYS: [&str; 4] = ["a", "d", "k", "t"];

/// What a new transaction reads for [`KEYS`].
async fn read_all(store: &dyn KvStore) -> Vec<Option<Bytes>> {
    let keys: Vec<Bytes> = KEYS.iter().map(|k| b(k)).collect();
    let mut t = store.begin(Default::default()).await.unwrap();
    let got = t.batch_get(&keys).await.unwrap();
    t.rollback().await.unwrap();
    got
}

/// Every key of [`KEYS`] holding `v`.
fn all(v: &str) -> Vec<Option<Bytes>> {
    KEYS.iter().map(|_| Some(b(v))).collect()
}

/// The write set putting `v` at every key of [`KEYS`].
fn writes(v: &str) -> WriteSet {
    KEYS.iter().map(|k| (b(k), Some(b(v)))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_transfer_mid_transaction_is_invisible() {
    for mode in [TxnMode::Optimistic, TxnMode::Pessimistic] {
        let (engine, c) = two_stores(mode).await;
        let store = engine.store().clone();
        let kvs: Vec<(&str, &str)> = KEYS.iter().map(|k| (*k, "0")).collect();
        put(store.as_ref(), &kvs).await.unwrap();
        assert!(c.settle(Duration::from_secs(5)).await);
        let regions = c.regions().len();
        assert!(regions >= 4, "{regions} regions");

        // 1. Between the transaction's reads (and pessimistic locks) and its commit.
        let mut t = store.begin(Default::default()).await.unwrap();
        assert_eq!(t.get(b"k").await.unwrap(), Some(b("0")), "{mode:?}");
        if mode == TxnMode::Pessimistic {
            t.lock(&[b("a"), b("t")]).await.unwrap();
        }
        assert_eq!(c.transfer_all_leaders(2), regions, "{mode:?}");
        t.commit(writes("1"))
            .await
            .unwrap_or_else(|e| panic!("{mode:?} after a leader transfer: {e}"));
        assert_eq!(read_all(store.as_ref()).await, all("1"), "{mode:?}");
        assert!(KEYS.iter().all(|k| c.leader_store(k.as_bytes()) == 2));
        assert!(c.settle(Duration::from_secs(5)).await);

        // 2. Between prewrite and the primary commit: the held commit reaches the old
        // leader after the transfer, is refused with NotLeader and retried on the new
        // leader by the client.
        let hold = c.hold(Rpc::Commit, 1, HoldPoint::BeforeApply);
        let t = store.begin(Default::default()).await.unwrap();
        let commit = tokio::spawn(async move { t.commit(writes("2")).await });
        assert!(hold.reached(Duration::from_secs(5)).await, "{mode:?}");
        assert_eq!(c.lock_count(), KEYS.len(), "{mode:?}: prewritten");
        assert_eq!(c.transfer_all_leaders(1), regions, "{mode:?}");
        hold.release();
        commit
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{mode:?} transfer before the primary commit: {e}"));
        assert_eq!(read_all(store.as_ref()).await, all("2"), "{mode:?}");
        assert!(c.settle(Duration::from_secs(5)).await);

        // 3. Between the primary commit and the secondaries: a secondary's commit is
        // held, the leaders move, the client retries it on the new leader (and readers
        // resolve from the primary meanwhile).
        let hold = c.hold(Rpc::Commit, 2, HoldPoint::BeforeApply);
        let t = store.begin(Default::default()).await.unwrap();
        t.commit(writes("3")).await.unwrap();
        assert!(hold.reached(Duration::from_secs(5)).await, "{mode:?}");
        assert!(c.lock_count() >= 1, "{mode:?}: a secondary is still locked");
        assert_eq!(c.transfer_all_leaders(2), regions, "{mode:?}");
        assert_eq!(read_all(store.as_ref()).await, all("3"), "{mode:?}");
        hold.release();
        assert!(c.settle(Duration::from_secs(5)).await, "{mode:?}");
        for k in KEYS {
            assert_eq!(
                c.commit_count(k.as_bytes()),
                4,
                "{mode:?} {k}: applied once"
            );
        }
    }
}

/// Starts a commit of `writes(v)` in a new transaction of `store`, and stops store 2
/// between its prewrite and its primary commit (held before it applies, then
/// released): the running commit.
async fn commit_as_store_2_stops(
    c: &TestCluster,
    store: &dyn KvStore,
    v: &str,
) -> tokio::task::JoinHandle<datalayer_core::Result<()>> {
    let hold = c.hold(Rpc::Commit, 1, HoldPoint::BeforeApply);
    let t = store.begin(Default::default()).await.unwrap();
    let w = writes(v);
    let commit = tokio::spawn(async move { t.commit(w).await });
    assert!(hold.reached(Duration::from_secs(5)).await);
    c.stop_store(2);
    hold.release();
    commit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_store_fails_over_or_fails_typed_and_nothing_partial_is_visible() {
    let (engine, c) = two_stores(TxnMode::Optimistic).await;
    let store = engine.store().clone();
    let kvs: Vec<(&str, &str)> = KEYS.iter().map(|k| (*k, "0")).collect();
    put(store.as_ref(), &kvs).await.unwrap();
    assert!(c.settle(Duration::from_secs(5)).await);
    let regions = c.regions().len();

    // 1. The leaders' store stops mid-transaction and its leaders fail over to the
    // other store (an election): the transaction completes.
    let mut t = store.begin(Default::default()).await.unwrap();
    assert_eq!(t.get(b"d").await.unwrap(), Some(b("0")));
    c.stop_store(1);
    assert_eq!(c.transfer_all_leaders(2), regions);
    t.commit(writes("1"))
        .await
        .unwrap_or_else(|e| panic!("commit after a failover: {e}"));
    assert_eq!(read_all(store.as_ref()).await, all("1"));
    c.restart_store(1);
    assert!(c.settle(Duration::from_secs(5)).await);

    // 2. The store holding every leader stops, no failover: a read fails with a
    // typed, retryable `ConnectionLost` once the client's retries are spent. A commit
    // fails with `CommitUnknown` (typed, never retried blindly): tikv-client 0.4 gives
    // the same gRPC error for a failed prewrite as for a primary commit whose answer
    // was lost, so the engine cannot tell them apart. Nothing was applied here.
    c.stop_store(2);
    let mut t = store.begin(Default::default()).await.unwrap();
    let started = std::time::Instant::now();
    let e = t.get(b"k").await.unwrap_err();
    assert_eq!(e.kind(), datalayer_core::ErrorKind::ConnectionLost, "{e}");
    assert!(e.is_retryable(), "{e}");
    eprintln!(
        "read against a stopped store failed after {:?}",
        started.elapsed()
    );
    let e = t.commit(writes("2")).await.unwrap_err();
    assert!(e.is_commit_unknown(), "{e}");
    assert!(!e.is_retryable(), "{e}");
    c.restart_store(2);
    assert_eq!(c.lock_count(), 0, "the prewrite never reached the store");
    assert_eq!(read_all(store.as_ref()).await, all("1"), "nothing partial");
    assert!(c.settle(Duration::from_secs(5)).await);

    // 3. The store stops between prewrite and the primary commit and is back within
    // the client's retries: the commit completes.
    let commit = commit_as_store_2_stops(&c, store.as_ref(), "3").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    c.restart_store(2);
    commit
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("commit across a store restart: {e}"));
    assert_eq!(read_all(store.as_ref()).await, all("3"));
    assert!(c.settle(Duration::from_secs(5)).await);

    // 4. The store stops between prewrite and the primary commit and stays down past
    // the client's retries: CommitUnknown (never retried blindly). The primary never
    // committed, so once the store is back readers roll the locks back after their
    // TTL: nothing of the transaction is ever visible.
    let commit = commit_as_store_2_stops(&c, store.as_ref(), "4").await;
    let e = commit.await.unwrap().unwrap_err();
    assert!(e.is_commit_unknown(), "{e}");
    assert!(!e.is_retryable(), "{e}");
    c.restart_store(2);
    assert_eq!(c.lock_count(), KEYS.len());
    assert_eq!(read_all(store.as_ref()).await, all("3"), "nothing partial");
    assert!(c.settle(Duration::from_secs(5)).await);
    for k in KEYS {
        assert_eq!(c.commit_count(k.as_bytes()), 3, "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_cancelled_inside_the_commit_leaves_no_lock_behind() {
    // The caller's future is dropped while the primary's prewrite is held: the commit
    // runs on to its end in its own task, so the write lands and no prewrite lock is
    // left to block readers for its TTL (a reader would wait it out and roll the
    // transaction back, reading "0").
    for mode in [TxnMode::Optimistic, TxnMode::Pessimistic] {
        let (engine, c) = local(mode).await;
        let store = engine.store().clone();
        let kvs: Vec<(&str, &str)> = KEYS.iter().map(|k| (*k, "0")).collect();
        put(store.as_ref(), &kvs).await.unwrap();
        let hold = c.hold(Rpc::Prewrite, 1, HoldPoint::BeforeApply);
        let t = store.begin(Default::default()).await.unwrap();
        let caller = tokio::spawn(async move { t.commit(writes("1")).await });
        assert!(hold.reached(Duration::from_secs(5)).await, "{mode:?}");
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled(), "{mode:?}");
        hold.release();
        // The released prewrite and the commit after it land in the background.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while read_all(store.as_ref()).await != all("1") {
            assert!(
                std::time::Instant::now() < deadline,
                "{mode:?}: the cancelled caller's commit never landed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            c.settle(Duration::from_secs(5)).await,
            "{mode:?}: locks left"
        );
    }
}
