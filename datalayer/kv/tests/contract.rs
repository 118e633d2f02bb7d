//! The KvStore contract on the in-memory reference store, and proof that the contract
//! catches broken stores.

use async_trait::async_trait;
use datalayer_core::{Capability, Result, TxOptions};
use datalayer_kv::contract::{self, StoreUnderTest};
use datalayer_kv::mem::{MemKv, MemOptions};
use datalayer_kv::{Bytes, KvCapability, KvStore, KvTxn, WriteSet};
use std::ops::Bound;

// Every case, one test each, on a fresh MemKv.
datalayer_kv::kv_contract_tests!(async { MemKv::new() });

mod via_engine {
    // The same through `mem::engine()` (a KvEngine is a StoreUnderTest too).
    datalayer_kv::kv_contract_tests!(async { datalayer_kv::mem::engine() });
}

/// The other modes of MemKv: each optional part of the contract on and off.
mod no_snapshot_reads {
    datalayer_kv::kv_contract_tests!(async {
        datalayer_kv::mem::MemKv::with_options(datalayer_kv::mem::MemOptions {
            snapshot_reads: false,
            ..Default::default()
        })
    });
}

mod pessimistic_locks {
    datalayer_kv::kv_contract_tests!(async {
        datalayer_kv::mem::MemKv::with_options(datalayer_kv::mem::MemOptions {
            pessimistic_locks: true,
            ..Default::default()
        })
    });
}

mod max_txn_bytes {
    datalayer_kv::kv_contract_tests!(async {
        datalayer_kv::mem::MemKv::with_options(datalayer_kv::mem::MemOptions {
            max_txn_bytes: Some(4096),
            ..Default::default()
        })
    });
}

mod every_option {
    // No snapshot reads, locks and a limit that is not a round number.
    datalayer_kv::kv_contract_tests!(async {
        datalayer_kv::mem::MemKv::with_options(datalayer_kv::mem::MemOptions {
            snapshot_reads: false,
            pessimistic_locks: true,
            max_txn_bytes: Some(3001),
        })
    });
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
            "scan_with_targets",
            "scan_with_targets_by_layout",
            "assume_absent",
            "rollback_discards",
            "drop_discards",
            "lock_keys",
            "max_txn_bytes",
            "concurrent_writers",
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
    /// Declares pessimistic locks, but `lock` locks nothing.
    LockIgnored,
    /// Does not declare pessimistic locks, but `lock` succeeds.
    LockUndeclared,
    /// Declares a write-set limit of 1000 bytes, but enforces none.
    TxnLimitIgnored,
    /// Declares a write-set limit of 1000 bytes, but refuses write sets over 999.
    TxnLimitTooLow,
    /// Has no snapshot reads, and commits without validating reads.
    NoReadValidation,
    /// Declares one writer at a time, but lets two read-write transactions open.
    ClaimsOneWriter,
}

impl Fault {
    /// The options of the MemKv under the fault.
    fn options(self) -> MemOptions {
        match self {
            Fault::LockIgnored => MemOptions {
                pessimistic_locks: true,
                ..MemOptions::default()
            },
            Fault::TxnLimitTooLow => MemOptions {
                max_txn_bytes: Some(999),
                ..MemOptions::default()
            },
            Fault::NoReadValidation => MemOptions {
                snapshot_reads: false,
                ..MemOptions::default()
            },
            _ => MemOptions::default(),
        }
    }

    /// What the faulty store declares, given what its MemKv declares.
    fn declared(self, inner: KvCapability) -> KvCapability {
        match self {
            Fault::TxnLimitIgnored | Fault::TxnLimitTooLow => KvCapability {
                max_txn_bytes: Some(1000),
                ..inner
            },
            Fault::ClaimsOneWriter => KvCapability {
                concurrent_writers: false,
                ..inner
            },
            _ => inner,
        }
    }
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
    fn kv_capability(&self) -> KvCapability {
        self.fault.declared(self.inner.kv_capability())
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
    async fn lock(&mut self, keys: &[Bytes]) -> Result<()> {
        match self.fault {
            Fault::LockIgnored | Fault::LockUndeclared => Ok(()),
            _ => self.inner.lock(keys).await,
        }
    }
    async fn commit(self: Box<Self>, mut writes: WriteSet) -> Result<()> {
        match self.fault {
            Fault::NoConflicts | Fault::NoReadValidation | Fault::TxnLimitIgnored => {
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
            inner: MemKv::with_options(fault.options()),
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

#[tokio::test]
async fn contract_catches_ignored_locks() {
    let m = violation(Fault::LockIgnored, "lock_keys").await;
    assert!(
        m.contains("lock of a key another open transaction has locked: succeeded"),
        "{m}"
    );
}

#[tokio::test]
async fn contract_catches_undeclared_locks() {
    let m = violation(Fault::LockUndeclared, "lock_keys").await;
    assert!(
        m.contains(
            "does not declare pessimistic_locks: succeeded, expected an error of kind Unsupported"
        ),
        "{m}"
    );
}

#[tokio::test]
async fn contract_catches_an_unenforced_txn_limit() {
    let m = violation(Fault::TxnLimitIgnored, "max_txn_bytes").await;
    assert!(
        m.contains("1001 bytes, over max_txn_bytes: succeeded"),
        "{m}"
    );
}

#[tokio::test]
async fn contract_catches_a_txn_limit_below_the_declared_one() {
    let m = violation(Fault::TxnLimitTooLow, "max_txn_bytes").await;
    assert!(
        m.contains("a write set of exactly max_txn_bytes (1000) bytes failed"),
        "{m}"
    );
}

#[tokio::test]
async fn contract_catches_unvalidated_reads() {
    let m = violation(Fault::NoReadValidation, "snapshot_reads").await;
    assert!(
        m.contains("then a commit changed a, then it read zz: the commit succeeded"),
        "{m}"
    );
}

#[tokio::test]
async fn contract_catches_a_false_single_writer_claim() {
    let m = violation(Fault::ClaimsOneWriter, "concurrent_writers").await;
    assert!(
        m.contains("two read-write transactions were open at once"),
        "{m}"
    );
}
