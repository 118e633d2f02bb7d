//! The run's TiKV cluster (cargo feature `tikv`): an in-process
//! `datalayer_tikv_testkit::TestCluster` started here (PD + one TiKV store serving
//! the real gRPC protocol on 127.0.0.1), or the real cluster whose PD
//! `DATALAYER_TIKV_PD` names (`host:port[,host:port..]`); one fresh namespace per
//! place (key prefix `<namespace>` + `00`, the engine's `namespace=`), cleared
//! again on a real cluster (also after a panic; the in-process one goes away with
//! the process).
//!
//! The test cluster starts with its default 4 regions (split at `b`, `i`, `r`),
//! and every namespace adds two splits, at `<ns>\0i` and `<ns>\0r`: in every
//! namespace the catalog, the index entries (`i…`) and the rows (`r…`) live in
//! different regions (datalayer's layout and the raw target's alike), so a range
//! scan reads the index in one region and fetches the rows from another.

use std::sync::Arc;

use anyhow::Context;
use datalayer_tikv_testkit::{ClusterConfig, Rpc, TestCluster};
use tokio::runtime::Runtime;

use crate::leftovers::{self, Leftovers};
use crate::targets::Namespaces;

/// The run's TiKV cluster.
pub struct TikvCluster {
    /// The PD endpoints, comma-separated (what `tikv://` takes).
    pub pd: String,
    /// What the cluster is, for the report.
    pub info: String,
    cluster: Option<TestCluster>,
    rt: Arc<Runtime>,
    namespaces: Leftovers,
}

impl TikvCluster {
    /// Starts the in-process test cluster, or uses `DATALAYER_TIKV_PD` when set.
    ///
    /// # Errors
    /// The test cluster cannot bind a port.
    pub fn start() -> anyhow::Result<Arc<Self>> {
        let rt = crate::targets::runtime();
        let (pd, cluster, info) = match std::env::var("DATALAYER_TIKV_PD") {
            Ok(pd) if !pd.is_empty() => {
                let info = format!("TiKV cluster with PD at {pd} (DATALAYER_TIKV_PD)");
                (pd, None, info)
            }
            _ => {
                let c = rt
                    .block_on(TestCluster::start(ClusterConfig::default()))
                    .context("starting the in-process TiKV test cluster")?;
                let pd = c.pd_addr();
                let info = format!(
                    "in-process TiKV test cluster (datalayer-tikv-testkit: PD + 1 store, Percolator MVCC in memory, no Raft) at {pd}"
                );
                (pd, Some(c), info)
            }
        };
        let run = leftovers::run_id();
        eprintln!("{info}, namespaces dlbench_{run}_*");
        Ok(Arc::new(Self {
            pd,
            info,
            cluster,
            rt,
            namespaces: Leftovers::new(format!("dlbench_{run}_")),
        }))
    }

    /// The number of regions of the in-process cluster (`None` on a real one).
    pub fn regions(&self) -> Option<usize> {
        self.cluster.as_ref().map(|c| c.regions().len())
    }

    /// How many times the in-process cluster served each RPC so far, by name
    /// (`KvGet`, ..), in [`Rpc::ALL`] order (`None` on a real cluster).
    pub fn rpc_counts(&self) -> Option<Vec<(String, u64)>> {
        self.cluster.as_ref().map(|c| {
            Rpc::ALL
                .iter()
                .map(|&r| (format!("Kv{r:?}"), c.rpc_count(r)))
                .collect()
        })
    }

    /// Deletes every key of the namespace `ns` (on a real cluster).
    fn clear(&self, ns: &str) -> anyhow::Result<u64> {
        if self.cluster.is_some() {
            return Ok(0);
        }
        let mut opts =
            datalayer::tikv::TikvOptions::new(self.pd.split(',').map(str::to_owned).collect());
        opts.namespace = ns.to_owned();
        Ok(self.rt.block_on(datalayer::tikv::clear_namespace(opts))?)
    }
}

impl Namespaces for TikvCluster {
    /// `dlbench_<run>_<tag>`; on the in-process cluster also splits its regions at
    /// `<ns>\0i` and `<ns>\0r`.
    fn create(&self, tag: &str) -> anyhow::Result<String> {
        let name = self.namespaces.add(tag);
        if let Some(c) = &self.cluster {
            for kind in [b'i', b'r'] {
                let mut k = name.as_bytes().to_vec();
                k.push(0);
                k.push(kind);
                c.split(&k);
            }
        }
        Ok(name)
    }

    fn destroy(&self, ns: &str) -> anyhow::Result<()> {
        self.clear(ns)
            .with_context(|| format!("clearing namespace {ns}"))?;
        self.namespaces.forget(ns);
        Ok(())
    }
}

impl Drop for TikvCluster {
    /// Clears every namespace still on the list (real cluster; after an error or a
    /// panic), then stops the in-process cluster.
    fn drop(&mut self) {
        for ns in self.namespaces.take() {
            match self.clear(&ns) {
                Ok(0) => {}
                Ok(n) => eprintln!("  cleared namespace {ns} ({n} keys)"),
                Err(e) => eprintln!("  WARNING: could not clear TiKV namespace {ns} ({e})"),
            }
        }
    }
}
