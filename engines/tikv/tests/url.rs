//! `tikv://` URLs through the engine registry, and namespaces sharing one cluster.

use datalayer_tikv_testkit::{ClusterConfig, TestCluster};
use std::ops::Bound;

#[tokio::test]
async fn a_url_opens_the_engine_and_namespaces_are_isolated() {
    let cluster = TestCluster::start(ClusterConfig::default()).await.unwrap();
    datalayer_tikv::register();
    let url = format!(
        "tikv://{}?namespace=app&mode=pessimistic",
        cluster.pd_addr()
    );
    let db = datalayer_core::Db::builder(url.clone())
        .connect()
        .await
        .unwrap();
    assert_eq!(db.engine().name(), "tikv");
    let cap = db.engine().capability();
    assert!(cap.snapshot && cap.concurrent_writers && !cap.serializable);
    // Two namespaces on one cluster see only their own keys.
    let a = datalayer_tikv::open_url(&format!("tikv://{}?namespace=a", cluster.pd_addr()))
        .await
        .unwrap();
    let ab = datalayer_tikv::open_url(&format!("tikv://{}?namespace=ab", cluster.pd_addr()))
        .await
        .unwrap();
    for (engine, v) in [(&a, "in a"), (&ab, "in ab")] {
        let t = engine.store().begin(Default::default()).await.unwrap();
        t.commit(vec![(b"k".to_vec(), Some(v.as_bytes().to_vec()))])
            .await
            .unwrap();
    }
    let mut t = a.store().begin(Default::default()).await.unwrap();
    let all = t
        .scan(Bound::Unbounded, Bound::Unbounded, 100, false)
        .await
        .unwrap();
    let mine: Vec<&(Vec<u8>, Vec<u8>)> = all.iter().filter(|(k, _)| k == b"k").collect();
    assert_eq!(mine, vec![&(b"k".to_vec(), b"in a".to_vec())]);
    assert_eq!(t.get(b"k").await.unwrap(), Some(b"in a".to_vec()));
    t.rollback().await.unwrap();
    let deleted = datalayer_tikv::clear_namespace(
        datalayer_tikv::parse_url(&format!("tikv://{}?namespace=ab", cluster.pd_addr())).unwrap(),
    )
    .await
    .unwrap();
    assert!(deleted >= 1);
    let mut t = ab.store().begin(Default::default()).await.unwrap();
    assert_eq!(t.get(b"k").await.unwrap(), None);
    let mut t = a.store().begin(Default::default()).await.unwrap();
    assert_eq!(t.get(b"k").await.unwrap(), Some(b"in a".to_vec()));
    drop(db);
}

#[tokio::test]
async fn an_unreachable_pd_is_connection_lost() {
    let Err(e) = datalayer_tikv::open_url("tikv://127.0.0.1:1?timeout_ms=200").await else {
        panic!("opened a cluster at port 1");
    };
    assert_eq!(e.kind(), datalayer_core::ErrorKind::ConnectionLost, "{e}");
}
