//! Faults injected into the in-process test cluster, seen through the engine's
//! `KvStore`: region errors on every RPC kind, a cluster that stays busy, live splits
//! during scans, and a commit whose response is lost after the primary committed.
//! (These need the test cluster: they do not run against `DATALAYER_TIKV_PD`.)

use datalayer_kv::{Bytes, KvStore, WriteSet};
use datalayer_tikv::TxnMode;
use datalayer_tikv_testkit::{ClusterConfig, Fault, RegionFault, Rpc, TestCluster};
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
