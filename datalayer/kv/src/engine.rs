//! [`KvEngine`]: the [`Engine`] of every KV-family store.

use super::codec;
use super::fence::{Admitted, Fence};
use super::txn::{Caps, CapturedHint, KvTx, point_get, point_query};
use super::{KvCapability, KvStore};
use async_trait::async_trait;
use datalayer_core::Change;
use datalayer_core::capability::Capability;
use datalayer_core::engine::{Engine, EngineTx, Isolation, Op, Output, TxOptions};
use datalayer_core::error::{Error, Result};
use datalayer_core::plan::{Access, Plan, plan};
use datalayer_core::query::{QueryDef, QueryId};
use datalayer_core::retry_autocommit;
use datalayer_core::schema::TableSchema;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

type Plans = Arc<RwLock<HashMap<QueryId, Arc<Plan>>>>;

/// An [`Engine`] over any [`KvStore`]: the whole data model of datalayer (rows, indexes,
/// queries, transactions, savepoints, catalog) on an ordered transactional KV store.
///
/// It adapts to the store's [`KvCapability`] (read once, with the store's
/// [`Capability`], in [`KvEngine::new`]):
/// - `pessimistic_locks`: every key about to be written (row key, old and new index
///   and unique entries, change-capture keys, catalog entries) is locked with
///   [`KvTxn::lock`](crate::KvTxn::lock) before it enters the write set — a row's keys
///   in one call, before its unique entries are checked. There is no per-transaction
///   switch: on a store that declares locks, every read-write transaction locks.
/// - `max_txn_bytes`: a write set over the limit fails the commit with `InvalidInput`
///   naming the limit, before the store sees it (the store transaction is rolled back).
/// - `snapshot_reads`: without it, a transaction that only read is committed (not
///   rolled back) so the store validates its reads, and an index entry whose row is
///   missing is a `Conflict` (retryable), not `Corrupted`.
/// - `concurrent_writers`: reported as [`Capability::concurrent_writers`];
///   autocommit operations are re-run on `Conflict` only with it.
#[derive(Clone)]
pub struct KvEngine {
    store: Arc<dyn KvStore>,
    /// The store's name, the engine's capability and the store's, as every
    /// transaction needs them.
    caps: Caps,
    /// The lowest change position of the current open epoch (set by `register`).
    position_base: Arc<AtomicU64>,
    plans: Plans,
    /// Tables seen with change capture on (autocommit inserts assume it off for the
    /// others; see `KvTx::set_assume`).
    captured: CapturedHint,
    /// The schema fence ([`crate::fence`]): the declaration each table registered or
    /// altered here is stored with, and what writers maintain during a change.
    fence: Arc<Fence>,
}

impl KvEngine {
    /// Wraps a store.
    pub fn new(store: impl KvStore) -> Self {
        let kv = store.kv_capability();
        let caps = Caps {
            store: store.name(),
            engine: engine_capability(store.capability(), kv),
            kv,
            position_base: 0,
            read_ahead: store.snapshot().is_none(),
        };
        KvEngine {
            store: Arc::new(store),
            caps,
            position_base: Arc::default(),
            plans: Arc::default(),
            captured: CapturedHint::default(),
            fence: Arc::default(),
        }
    }

    /// A read-write transaction (for schema changes).
    pub(crate) async fn open_rw(&self) -> Result<KvTx> {
        self.open(false).await
    }

    /// The store's name.
    pub(crate) fn store_name(&self) -> &'static str {
        self.store.name()
    }

    /// The engine's `Caps` with the current open epoch's lowest change position.
    fn caps(&self) -> Caps {
        Caps {
            position_base: self.position_base.load(Ordering::Acquire),
            ..self.caps
        }
    }

    /// Starts a new open epoch: increments the stored epoch in its own transaction,
    /// makes it durable, and only then lets positions use it (`FORMAT.md`, "Positions
    /// survive lost commits").
    async fn start_epoch(&self) -> Result<()> {
        let epoch = retry_autocommit(|| async {
            let mut tx = self.open(false).await?;
            match tx.bump_epoch().await {
                Ok(e) => tx.commit().await.map(|()| e),
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        })
        .await?;
        self.store.sync().await?;
        let base = epoch
            .checked_shl(codec::EPOCH_SHIFT)
            .filter(|b| b >> codec::EPOCH_SHIFT == epoch)
            .ok_or_else(|| Error::corrupted(format!("open epoch {epoch} is out of range")))?;
        self.position_base.fetch_max(base, Ordering::AcqRel);
        Ok(())
    }

    /// The store's capability, as read when the engine was made.
    pub fn kv_capability(&self) -> KvCapability {
        self.caps.kv
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    fn plan_for(plans: &Plans, q: &QueryDef) -> Arc<Plan> {
        if let Some(p) = plans.read().get(&q.id) {
            return p.clone();
        }
        let p = Arc::new(plan(q));
        plans.write().insert(q.id, p.clone());
        p
    }

    /// Runs `ops` in one store transaction; with `assume`, inserts assume their keys
    /// free instead of reading them (a wrong assumption fails the commit with
    /// `Conflict`, and the caller's re-run reads).
    async fn run_once(
        &self,
        ops: Vec<Op<'_>>,
        assume: bool,
        admitted: &Admitted,
    ) -> Result<Vec<Output>> {
        let mut tx = self.open(ops.iter().all(Op::is_read)).await?;
        tx.set_assume(self.captured.clone(), assume);
        tx.admitted.builds.clone_from(&admitted.builds);
        let planned = Self::with_plans(&self.plans, ops);
        let r = tx.exec_all(planned).await;
        finish(tx, r).await
    }

    /// Pairs each op with its plan (queries only).
    #[allow(clippy::type_complexity)]
    fn with_plans<'a>(plans: &Plans, ops: Vec<Op<'a>>) -> Vec<(Op<'a>, Option<Arc<Plan>>)> {
        ops.into_iter()
            .map(|op| {
                let plan = match &op {
                    Op::Query { query, .. } => Some(Self::plan_for(plans, query)),
                    _ => None,
                };
                (op, plan)
            })
            .collect()
    }

    /// Opens a store transaction for an engine-level autocommit call.
    async fn open(&self, read_only: bool) -> Result<KvTx> {
        let txn = self
            .store
            .begin(TxOptions {
                isolation: None,
                read_only,
            })
            .await?;
        Ok(KvTx::new(txn, read_only, self.caps(), false))
    }

    /// Runs `ops` atomically; re-runs them on a `Conflict` where the store has
    /// concurrent writers (a single-writer store never conflicts, so its ops are not
    /// copied for a retry).
    async fn run_retrying(&self, ops: Vec<Op<'_>>, admitted: &Admitted) -> Result<Vec<Output>> {
        if !self.caps.kv.concurrent_writers {
            return self.run_once(ops, false, admitted).await;
        }
        // The first attempt may assume (one round trip for an insert on a store that
        // validates reads); a re-run after its `Conflict` reads.
        let mut first = true;
        retry_autocommit(|| {
            let assume = std::mem::replace(&mut first, false);
            self.run_once(ops.clone(), assume, admitted)
        })
        .await
    }
}

#[async_trait]
impl Engine for KvEngine {
    fn name(&self) -> &'static str {
        self.store.name()
    }

    /// The store's capability, plus the change feed (written by this family for every
    /// store), `concurrent_writers` from the store's [`KvCapability`], and the
    /// `Snapshot` and `RepeatableRead` levels only with snapshot reads. Computed once,
    /// in [`KvEngine::new`].
    fn capability(&self) -> Capability {
        self.caps.engine
    }

    async fn register(&self, tables: &[&TableSchema], queries: &[&QueryDef]) -> Result<()> {
        self.start_epoch().await?;
        for t in tables {
            t.validate()?;
        }
        // Re-run on `Conflict`: on a store with concurrent writers two processes may
        // register the same new table at once (both read it missing; one commit
        // fails validation), and the retry then finds it stored.
        retry_autocommit(|| async {
            let mut tx = self.open(false).await?;
            for t in tables {
                let r = match tx.catalog_get(&t.name).await {
                    Ok(None) => match t.catalog_bytes() {
                        Ok(b) => tx.catalog_put(&t.name, b).await,
                        Err(e) => Err(e),
                    },
                    Ok(Some(stored)) => t.check_stored(&stored),
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    let _ = tx.rollback().await;
                    return Err(e);
                }
            }
            tx.commit().await
        })
        .await?;
        for q in queries {
            Self::plan_for(&self.plans, q);
        }
        for t in tables {
            self.fence.set_live(t);
        }
        Ok(())
    }

    /// See `datalayer_kv::alter` (private): chunked, resumable backfills; this
    /// engine's writers of the table keep going while new indexes are built, and wait
    /// (`Conflict`) while rows are rewritten.
    async fn alter_table(&self, plan: &datalayer_core::TablePlan) -> Result<()> {
        crate::alter::alter(self, &self.fence, plan).await
    }

    /// Deletes every key of the table (rows, index entries, change capture, a
    /// schema-change marker), a chunk per transaction, then its catalog entry.
    async fn drop_table(&self, name: &str) -> Result<()> {
        datalayer_core::validate_table_name(name)?;
        self.fence.hold(name).await;
        let r = crate::alter::drop_table(self, name).await;
        self.fence.forget(name);
        r
    }

    async fn run(&self, op: Op<'_>) -> Result<Output> {
        // Held until the op's transaction ends (see `crate::fence`).
        let admitted = self.fence.admit(std::slice::from_ref(&op))?;
        // Fast path: point reads on a store with synchronous snapshots.
        match &op {
            Op::Query { query, params } if op.is_read() => {
                let plan = Self::plan_for(&self.plans, query);
                if matches!(plan.access, Access::PkPoint(_))
                    && let Some(snap) = self.store.snapshot()
                    && let Some(out) = point_query(snap.as_ref(), query, params, &plan)?
                {
                    return Ok(out);
                }
            }
            Op::Get { .. } => {
                if let Some(snap) = self.store.snapshot()
                    && let Op::Get { table, keys } = op
                {
                    return point_get(snap.as_ref(), table, keys);
                }
            }
            _ => {}
        }
        let mut v = self.run_retrying(vec![op], &admitted).await?;
        Ok(v.pop().expect("one output per op"))
    }

    async fn run_batch(&self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        let admitted = self.fence.admit(&ops)?;
        self.run_retrying(ops, &admitted).await
    }

    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn EngineTx>> {
        let txn = self.store.begin(opts).await?;
        Ok(Box::new(KvEngineTx {
            tx: Some(KvTx::new(txn, opts.read_only, self.caps(), true)),
            plans: self.plans.clone(),
            fence: self.fence.clone(),
            unvalidated: opts.read_only && opts.isolation == Some(Isolation::ReadCommitted),
        }))
    }

    async fn catalog(&self) -> Result<Vec<TableSchema>> {
        let mut tx = self.open(true).await?;
        let raw = tx.catalog_all().await;
        let raw = finish(tx, raw).await?;
        raw.iter()
            .map(|b| TableSchema::from_catalog_bytes(b))
            .collect()
    }

    async fn close(&self) -> Result<()> {
        self.store.close().await
    }

    /// The store's extension ([`KvStore::extension`]).
    fn extension(&self, ty: std::any::TypeId) -> Option<Box<dyn std::any::Any + Send>> {
        self.store.extension(ty)
    }

    async fn enable_changes(&self, table: &str) -> Result<()> {
        retry_autocommit(|| async {
            let mut tx = self.open(false).await?;
            let r = match table_schema(&mut tx, table).await {
                Ok(_) => tx.enable_capture(table).await,
                Err(e) => Err(e),
            };
            finish(tx, r).await
        })
        .await
    }

    async fn read_changes(&self, table: &str, after: u64, limit: usize) -> Result<Vec<Change>> {
        // Rolled back, not validated: the store's atomic commit numbers change records
        // in commit order, so a scan after `after` reads a prefix of the log whatever
        // commits meanwhile (a record committed later lands after every record read).
        // Validating would fail every read of a log that grows while it is read (its
        // tail range gains keys), as a live migration's follow does.
        let mut tx = self.open(true).await?;
        let r = read_changes_in(&mut tx, table, after, limit).await;
        let _ = tx.rollback().await;
        r
    }

    async fn trim_changes(&self, table: &str, upto: u64) -> Result<u64> {
        let mut total = 0u64;
        loop {
            // Bounded chunks keep each transaction's write set small.
            let n = retry_autocommit(|| async {
                let mut tx = self.open(false).await?;
                let r = match tx.change_records(table, 0, Some(upto), TRIM_CHUNK).await {
                    Ok(recs) => {
                        let n = recs.len();
                        tx.delete_changes(recs).await.map(|()| n)
                    }
                    Err(e) => Err(e),
                };
                finish(tx, r).await
            })
            .await?;
            total += n as u64;
            if n < TRIM_CHUNK {
                return Ok(total);
            }
        }
    }
}

/// The engine's capability: the store's, plus what the family implements for every
/// store (the change feed: change records written in the same transaction as the
/// rows), and what follows from the store's [`KvCapability`]: `concurrent_writers` as
/// the store declares it there; the `Snapshot` and `RepeatableRead` isolation levels
/// only with snapshot reads (without them two reads of a transaction may see different
/// states).
fn engine_capability(store: Capability, kv: KvCapability) -> Capability {
    Capability {
        change_feed: true,
        concurrent_writers: kv.concurrent_writers,
        snapshot: store.snapshot && kv.snapshot_reads,
        repeatable_read: store.repeatable_read && kv.snapshot_reads,
        ..store
    }
}

/// Commits `tx` when `r` is `Ok` ([`KvTx::commit`] rolls a transaction without writes
/// back where the store has snapshot reads), or rolls back on `Err`.
async fn finish<T>(tx: KvTx, r: Result<T>) -> Result<T> {
    match r {
        Ok(v) => tx.commit().await.map(|()| v),
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// The changes of `table` after `after` (at most `limit`), decoded with its schema.
async fn read_changes_in(
    tx: &mut KvTx,
    table: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<Change>> {
    let schema = table_schema(tx, table).await?;
    let columns: Vec<String> = schema.columns.iter().map(|c| c.name.clone()).collect();
    tx.change_records(table, after, None, limit)
        .await?
        .into_iter()
        .map(|rec| {
            let (kind, values) = codec::decode_change(&schema, &rec.bytes)?;
            Ok(Change {
                position: rec.position,
                table: table.to_owned(),
                kind,
                columns: columns.clone(),
                values,
            })
        })
        .collect()
}

/// Change records deleted per transaction by `trim_changes`.
const TRIM_CHUNK: usize = 4096;

/// The stored schema of `table`.
///
/// # Errors
/// `NotFound` for a table that is not in the catalog; `Corrupted` for an undecodable entry.
async fn table_schema(tx: &mut KvTx, table: &str) -> Result<TableSchema> {
    let bytes = tx
        .catalog_get(table)
        .await?
        .ok_or_else(|| Error::not_found(format!("no table named {table}")))?;
    TableSchema::from_catalog_bytes(&bytes)
}

/// A transaction of a [`KvEngine`].
struct KvEngineTx {
    tx: Option<KvTx>,
    plans: Plans,
    fence: Arc<Fence>,
    /// A read-only transaction at `ReadCommitted`: its commit ends it without
    /// validating its reads (each read saw committed data, which is all read committed
    /// promises: ANSI SQL-92, no dirty reads), so that a long reader (a migration's
    /// chunks) never fails with `Conflict` on a store that validates.
    unvalidated: bool,
}

impl KvEngineTx {
    fn tx(&mut self) -> Result<&mut KvTx> {
        self.tx
            .as_mut()
            .ok_or_else(|| Error::invalid_input("transaction finished"))
    }
}

#[async_trait]
impl EngineTx for KvEngineTx {
    async fn run(&mut self, op: Op<'_>) -> Result<Output> {
        let admitted = self.fence.admit(std::slice::from_ref(&op))?;
        let plan = match &op {
            Op::Query { query, .. } => Some(KvEngine::plan_for(&self.plans, query)),
            _ => None,
        };
        let tx = self.tx()?;
        tx.admitted.merge(admitted);
        tx.exec(op, plan.as_deref()).await
    }
    /// The ops in order, their point reads read ahead in one store call
    /// ([`KvTxn::batch_get`](crate::KvTxn::batch_get)).
    async fn run_batch(&mut self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        let admitted = self.fence.admit(&ops)?;
        let planned = KvEngine::with_plans(&self.plans, ops);
        let tx = self.tx()?;
        tx.admitted.merge(admitted);
        tx.exec_all(planned).await
    }
    async fn savepoint(&mut self, name: &str) -> Result<()> {
        self.tx()?.savepoint(name);
        Ok(())
    }
    async fn rollback_to(&mut self, name: &str) -> Result<()> {
        self.tx()?.rollback_to(name)
    }
    async fn release(&mut self, name: &str) -> Result<()> {
        self.tx()?.release(name)
    }
    async fn commit(mut self: Box<Self>) -> Result<()> {
        let tx = self.tx.take().expect("open");
        if self.unvalidated {
            return tx.rollback().await;
        }
        tx.commit().await
    }
    async fn rollback(mut self: Box<Self>) -> Result<()> {
        self.tx.take().expect("open").rollback().await
    }
}
