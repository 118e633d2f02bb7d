//! The KvStore contract on the in-memory reference store, and proof that the contract
//! catches broken stores.

use async_trait::async_trait;
use datalayer_core::{Capability, Result, TxOptions};
use datalayer_kv::contract::{self, StoreUnderTest};
use datalayer_kv::mem::MemKv;
use datalayer_kv::{Bytes, KvStore, KvTxn, WriteSet};
use std::ops::Bound;

// Every case, one test each, on a fresh MemKv.
datalayer_kv::kv_contract_tests!(async { MemKv::new() });

mod via_engine {
    // The same through `mem::engine()` (a KvEngine is a StoreUnderTest too).
    datalayer_kv::kv_contract_tests!(async { datalayer_kv::mem::engine() });
}

#[tokio::test]
async fn cases_list_runs_every_case() {
    let cases = contract::cases();
    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "snapshot_reads",
            "committed_writes_visible",
            "atomic_commit",
            "write_conflict",
            "scan_bounds",
            "scan_limit",
            "scan_reverse",
            "empty_key_and_value",
            "large_value",
            "count_ranges",
            "batch_get_order",
            "rollback_discards",
            "drop_discards",
        ]
    );
    for case in cases {
        let store = MemKv::new();
        (case.run)(store.kv())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    }
}

// ---- broken stores: each must fail the case that covers its fault ----------------------

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Reads the latest committed state on every read (no snapshot).
    NoSnapshot,
    /// Ignores `limit` in scans.
    IgnoreLimit,
    /// Ignores `reverse` in scans.
    IgnoreReverse,
    /// Commits blindly (last writer wins) while declaring concurrent writers and
    /// serializable isolation.
    NoConflicts,
    /// Applies only the first entry of the write set.
    FirstWriteOnly,
}

/// MemKv with one fault.
struct Faulty {
    inner: MemKv,
    fault: Fault,
}

struct FaultyTxn {
    inner: Box<dyn KvTxn>,
    store: MemKv,
    fault: Fault,
}

#[async_trait]
impl KvStore for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    fn capability(&self) -> Capability {
        self.inner.capability()
    }
    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn KvTxn>> {
        Ok(Box::new(FaultyTxn {
            inner: self.inner.begin(opts).await?,
            store: self.inner.clone(),
            fault: self.fault,
        }))
    }
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

impl FaultyTxn {
    /// The transaction to read from: a fresh one (the latest state) under `NoSnapshot`.
    async fn reader(&mut self) -> Result<Option<Box<dyn KvTxn>>> {
        Ok(match self.fault {
            Fault::NoSnapshot => Some(self.store.begin(TxOptions::default()).await?),
            _ => None,
        })
    }
}

#[async_trait]
impl KvTxn for FaultyTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        match self.reader().await? {
            Some(mut t) => t.get(key).await,
            None => self.inner.get(key).await,
        }
    }
    async fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let limit = match self.fault {
            Fault::IgnoreLimit => usize::MAX,
            _ => limit,
        };
        let reverse = match self.fault {
            Fault::IgnoreReverse => false,
            _ => reverse,
        };
        match self.reader().await? {
            Some(mut t) => t.scan(start, end, limit, reverse).await,
            None => self.inner.scan(start, end, limit, reverse).await,
        }
    }
    async fn commit(self: Box<Self>, mut writes: WriteSet) -> Result<()> {
        match self.fault {
            Fault::NoConflicts => {
                // A fresh transaction has nothing to conflict with.
                let t = self.store.begin(TxOptions::default()).await?;
                t.commit(writes).await
            }
            Fault::FirstWriteOnly => {
                writes.truncate(1);
                self.inner.commit(writes).await
            }
            _ => self.inner.commit(writes).await,
        }
    }
    async fn rollback(self: Box<Self>) -> Result<()> {
        self.inner.rollback().await
    }
}

/// Runs `case` on a fresh store with `fault` and returns the panic message (the case
/// must panic: a contract violation).
async fn violation(fault: Fault, case: &str) -> String {
    let run = contract::cases()
        .into_iter()
        .find(|c| c.name == case)
        .unwrap_or_else(|| panic!("no case {case}"))
        .run;
    let outcome = tokio::spawn(async move {
        let store = Faulty {
            inner: MemKv::new(),
            fault,
        };
        run(&store).await
    })
    .await;
    match outcome {
        Ok(r) => panic!("case {case} did not detect {fault:?} (returned {r:?})"),
        Err(e) => {
            let p = e.into_panic();
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        }
    }
}

#[tokio::test]
async fn contract_catches_missing_snapshots() {
    let m = violation(Fault::NoSnapshot, "snapshot_reads").await;
    assert!(
        m.contains("store faulty") && m.contains("saw (get) a commit made after its first read"),
        "{m}"
    );
}

#[tokio::test]
async fn contract_catches_ignored_limit() {
    let m = violation(Fault::IgnoreLimit, "scan_limit").await;
    assert!(m.contains("limit = 0"), "{m}");
}

#[tokio::test]
async fn contract_catches_ignored_reverse() {
    let m = violation(Fault::IgnoreReverse, "scan_reverse").await;
    assert!(m.contains("reverse = true"), "{m}");
    let m = violation(Fault::IgnoreReverse, "scan_bounds").await;
    assert!(m.contains("reverse = true"), "{m}");
}

#[tokio::test]
async fn contract_catches_lost_updates() {
    let m = violation(Fault::NoConflicts, "write_conflict").await;
    assert!(m.contains("lost update"), "{m}");
}

#[tokio::test]
async fn contract_catches_partial_commits() {
    let m = violation(Fault::FirstWriteOnly, "atomic_commit").await;
    assert!(m.contains("kv contract violated by store faulty"), "{m}");
    let m = violation(Fault::FirstWriteOnly, "committed_writes_visible").await;
    assert!(m.contains("a committed put, read by get"), "{m}");
}
