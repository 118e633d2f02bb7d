//! The shared conformance suite on TiKV.
//!
//! Every case gets its own in-process test cluster (`datalayer-tikv-testkit`: PD + one
//! TiKV store serving the real gRPC protocol, 4 regions), started on the case's runtime
//! and dropped with it. With `DATALAYER_TIKV_PD=host:port[,host:port]` the cases run on
//! that real cluster instead, each in its own namespace `c<random>`, deleted at the end.
//! Optimistic transactions; `tikv-pessimistic::*` runs the suite again with
//! `mode=pessimistic`.

use async_trait::async_trait;
use datalayer::{Capability, Engine};
use datalayer_conformance::{Namespace, Target, trials};
use datalayer_tikv::{TikvOptions, TxnMode};
use datalayer_tikv_testkit::{ClusterConfig, TestCluster};
use std::sync::Arc;

struct Tikv {
    /// PD endpoints of a real cluster (`DATALAYER_TIKV_PD`), or `None`: one test cluster
    /// per case.
    remote: Option<Vec<String>>,
    mode: TxnMode,
    cap: Capability,
}

struct TikvNs {
    opts: TikvOptions,
    /// The case's own cluster (kept alive as long as the namespace).
    _cluster: Option<TestCluster>,
}

#[async_trait]
impl Namespace for TikvNs {
    async fn open(&self) -> datalayer::Result<Arc<dyn Engine>> {
        Ok(Arc::new(datalayer_tikv::open(self.opts.clone()).await?))
    }
    fn reopenable(&self) -> bool {
        true
    }
    async fn destroy(&self) -> datalayer::Result<()> {
        datalayer_tikv::clear_namespace(self.opts.clone()).await?;
        Ok(())
    }
}

#[async_trait]
impl Target for Tikv {
    async fn namespace(&self) -> anyhow::Result<Box<dyn Namespace>> {
        let (mut opts, cluster) = match &self.remote {
            Some(pd) => {
                let mut o = TikvOptions::new(pd.clone());
                o.namespace = format!("c{}", datalayer_conformance::random_suffix());
                (o, None)
            }
            None => {
                let c = TestCluster::start(ClusterConfig::default()).await?;
                (TikvOptions::new(vec![c.pd_addr()]), Some(c))
            }
        };
        opts.mode = self.mode;
        Ok(Box::new(TikvNs {
            opts,
            _cluster: cluster,
        }))
    }
    fn capability(&self) -> Capability {
        self.cap
    }
    fn reopenable(&self) -> bool {
        true
    }
}

/// The engine's capability, from one engine opened on a throwaway cluster or namespace.
fn probe(remote: &Option<Vec<String>>, mode: TxnMode) -> Capability {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let target = Tikv {
            remote: remote.clone(),
            mode,
            cap: Capability::default(),
        };
        let ns = target.namespace().await.expect("a namespace to probe");
        let engine = ns.open().await.expect("open the tikv engine to probe it");
        let cap = engine.capability();
        let _ = engine.close().await;
        let _ = ns.destroy().await;
        cap
    })
}

fn main() -> std::process::ExitCode {
    let remote = std::env::var("DATALAYER_TIKV_PD")
        .ok()
        .map(|pd| pd.split(',').map(str::to_owned).collect::<Vec<_>>());
    let mut all = Vec::new();
    for (prefix, mode) in [
        ("tikv", TxnMode::Optimistic),
        ("tikv-pessimistic", TxnMode::Pessimistic),
    ] {
        let cap = probe(&remote, mode);
        all.extend(trials(
            prefix,
            Arc::new(Tikv {
                remote: remote.clone(),
                mode,
                cap,
            }),
        ));
    }
    datalayer_conformance::main(all)
}
