//! Where the engine's tests run: each test on its own in-process test cluster
//! (`datalayer-tikv-testkit`, 4 regions), or — when `DATALAYER_TIKV_PD` names a real
//! cluster's PD endpoints (`host:port[,host:port]`) — in its own random namespace there,
//! deleted when the test ends.

#![allow(dead_code)]

use datalayer_kv::KvEngine;
use datalayer_tikv::{TikvOptions, TxnMode};
use datalayer_tikv_testkit::{ClusterConfig, TestCluster};
use std::sync::atomic::{AtomicU64, Ordering};

/// Keeps a test's cluster (or namespace) alive; cleans the namespace of a real cluster
/// up when dropped.
pub enum Guard {
    /// The test's own in-process cluster.
    Local(TestCluster),
    /// A namespace on the real cluster of `DATALAYER_TIKV_PD`.
    Remote { opts: TikvOptions },
}

impl Guard {
    /// The in-process cluster, when the test runs on one.
    pub fn cluster(&self) -> Option<&TestCluster> {
        match self {
            Guard::Local(c) => Some(c),
            Guard::Remote { .. } => None,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Remote { opts } = self {
            let opts = opts.clone();
            // Delete every key of the namespace, on a thread with its own runtime (the
            // test's runtime may be shutting down).
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let _ = datalayer_tikv::clear_namespace(opts).await;
                });
            })
            .join();
        }
    }
}

/// A namespace no other test uses: `t<pid>_<nanos>_<n>`.
pub fn unique_namespace() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "t{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Options for a fresh test place: a new in-process cluster (empty namespace), or a new
/// namespace on the `DATALAYER_TIKV_PD` cluster.
pub async fn place(mode: TxnMode) -> (TikvOptions, Guard) {
    if let Ok(pd) = std::env::var("DATALAYER_TIKV_PD") {
        let mut opts = TikvOptions::new(pd.split(',').map(str::to_owned).collect());
        opts.namespace = unique_namespace();
        opts.mode = mode;
        return (opts.clone(), Guard::Remote { opts });
    }
    let cluster = TestCluster::start(ClusterConfig::default())
        .await
        .expect("start the test cluster");
    assert!(cluster.regions().len() >= 3);
    let mut opts = TikvOptions::new(vec![cluster.pd_addr()]);
    opts.mode = mode;
    (opts, Guard::Local(cluster))
}

/// An engine on a fresh test place, with `adjust` applied to its options.
pub async fn engine_with(
    mode: TxnMode,
    adjust: impl FnOnce(&mut TikvOptions),
) -> (KvEngine, Guard) {
    let (mut opts, guard) = place(mode).await;
    adjust(&mut opts);
    let engine = datalayer_tikv::open(opts)
        .await
        .expect("open the tikv engine");
    (engine, guard)
}

/// An engine on a fresh test place.
pub async fn engine(mode: TxnMode) -> (KvEngine, Guard) {
    engine_with(mode, |_| {}).await
}
