//! TiKV for the torture tests: the in-process test cluster of
//! `datalayer-tikv-testkit` (PD + two TiKV stores speaking the real gRPC protocol to
//! the real `tikv-client`; Percolator MVCC), started by the torture binary itself, and
//! the faults it can inject while a test runs.
//!
//! The cluster is split at `b`, `i`, `r` and `s` (5 regions): datalayer's catalog
//! (`c…`), change records (`h…`), index (`i…`, `u…`), row (`r…`) and change sequence
//! (`s…`) keys live in different regions, so every transaction that writes a row and
//! its change is a multi-region commit. Live splits during a run add more.

use datalayer_tikv_testkit::{ClusterConfig, Fault, RegionFault, Rpc, TestCluster};
use rand::Rng;
use rand::rngs::StdRng;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A private in-process TiKV test cluster (2 stores, 5 regions), stopped when
/// dropped.
pub struct TikvCluster {
    /// The cluster (shared with the fault task).
    pub cluster: Arc<TestCluster>,
}

impl TikvCluster {
    /// Starts a cluster on a free loopback port, on the current tokio runtime.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start() -> std::io::Result<TikvCluster> {
        let cluster = TestCluster::start(ClusterConfig {
            split_keys: ["b", "i", "r", "s"]
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
            stores: 2,
            ..ClusterConfig::default()
        })
        .await?;
        Ok(TikvCluster {
            cluster: Arc::new(cluster),
        })
    }

    /// The engine URL of the cluster, `tikv://127.0.0.1:PORT` (no namespace: the
    /// cluster is the test's own, and its keys are the KV family's raw keys).
    pub fn url(&self) -> String {
        format!("tikv://{}", self.cluster.pd_addr())
    }

    /// The number of regions now.
    pub fn regions(&self) -> usize {
        self.cluster.regions().len()
    }
}

/// What the fault task injected, by kind.
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// Region errors queued (shots), over every RPC kind and error.
    pub region_errors: AtomicU64,
    /// Live splits made.
    pub splits: AtomicU64,
    /// Leader transfers (every region's leader moved to the other store).
    pub leader_moves: AtomicU64,
    /// Bursts of commit responses dropped after the commit applied (enough shots to
    /// outlast the client's retries: the primary's commit is `CommitUnknown`).
    pub dropped_commit_bursts: AtomicU64,
    /// Bursts of commits refused with gRPC `Unavailable` before they applied (as
    /// many shots: `CommitUnknown` of transactions that did not commit).
    pub unavailable_commit_bursts: AtomicU64,
}

impl FaultCounts {
    /// All faults injected (a burst counts once).
    pub fn total(&self) -> u64 {
        [
            &self.region_errors,
            &self.splits,
            &self.leader_moves,
            &self.dropped_commit_bursts,
            &self.unavailable_commit_bursts,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    /// One line for a figure.
    pub fn describe(&self) -> String {
        format!(
            "{} region errors, {} live splits, {} leader transfers, {} bursts of dropped \
             commit responses, {} bursts of unavailable commits",
            self.region_errors.load(Ordering::Relaxed),
            self.splits.load(Ordering::Relaxed),
            self.leader_moves.load(Ordering::Relaxed),
            self.dropped_commit_bursts.load(Ordering::Relaxed),
            self.unavailable_commit_bursts.load(Ordering::Relaxed),
        )
    }
}

/// Region errors the fault task injects (each retried by the client, or by the engine
/// for `ServerIsBusy`).
const REGION_FAULTS: [RegionFault; 5] = [
    RegionFault::NotLeader,
    RegionFault::EpochNotMatch,
    RegionFault::ServerIsBusy,
    RegionFault::RegionNotFound,
    RegionFault::StoreNotMatch,
];

/// RPCs the fault task injects region errors into.
const FAULT_RPCS: [Rpc; 6] = [
    Rpc::Get,
    Rpc::BatchGet,
    Rpc::Scan,
    Rpc::Prewrite,
    Rpc::Commit,
    Rpc::CheckTxnStatus,
];

/// Shots of a commit burst: more than the client's 10 tries of one primary commit.
const BURST: u32 = 150;

/// Injects faults every `every` until `stop`: one step in a seeded order of 1–3 region
/// errors on a random RPC, a live split at a random existing key under `split_prefix`
/// (between two of the test's rows), a transfer of every leader to the other store, or
/// (steps 3 and 6 of every 8) a burst of [`BURST`] lost commit responses
/// or refused commits, cleared once spent (at most 3 s later).
pub async fn inject_faults(
    cluster: Arc<TestCluster>,
    mut rng: StdRng,
    every: Duration,
    split_prefix: Vec<u8>,
    stop: Arc<AtomicBool>,
    counts: Arc<FaultCounts>,
) {
    let mut step = 0u64;
    let mut leader = 1;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(every).await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        step += 1;
        if step % 8 == 3 || step % 8 == 6 {
            let burst = tokio::time::Instant::now();
            let fault = if step % 8 == 3 {
                counts.dropped_commit_bursts.fetch_add(1, Ordering::Relaxed);
                Fault::DropResponse
            } else {
                counts
                    .unavailable_commit_bursts
                    .fetch_add(1, Ordering::Relaxed);
                Fault::Unavailable
            };
            cluster.inject(Rpc::Commit, fault, BURST);
            // Until the shots are spent (some primary commit ran out of retries: its
            // transaction is CommitUnknown), at most 3 s.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            while cluster.pending_faults(Rpc::Commit) > 0
                && tokio::time::Instant::now() < deadline
                && !stop.load(Ordering::SeqCst)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if std::env::var_os("TORTURE_VERBOSE").is_some() {
                eprintln!(
                    "   tikv: burst of {fault:?} on KvCommit: {} of {BURST} shots left unspent after {:?}",
                    cluster.pending_faults(Rpc::Commit),
                    burst.elapsed()
                );
            }
            cluster.clear_faults();
            continue;
        }
        match rng.random_range(0..4) {
            0 | 1 => {
                let rpc = FAULT_RPCS[rng.random_range(0..FAULT_RPCS.len())];
                let fault = REGION_FAULTS[rng.random_range(0..REGION_FAULTS.len())];
                let n = rng.random_range(1..=3);
                cluster.inject(rpc, Fault::Region(fault), n);
                counts
                    .region_errors
                    .fetch_add(u64::from(n), Ordering::Relaxed);
            }
            2 => {
                let keys = cluster.keys(&split_prefix);
                if !keys.is_empty() && cluster.split(&keys[rng.random_range(0..keys.len())]) {
                    counts.splits.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                leader = 3 - leader;
                cluster.transfer_all_leaders(leader);
                counts.leader_moves.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    cluster.clear_faults();
}
