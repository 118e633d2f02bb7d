//! [`KvEngine`]: the [`Engine`] of every KV-family store.

use super::KvStore;
use super::txn::{KvTx, point_get, point_query};
use async_trait::async_trait;
use datalayer_core::capability::Capability;
use datalayer_core::engine::{Engine, EngineTx, Op, Output, TxOptions};
use datalayer_core::error::{Error, Result};
use datalayer_core::plan::{Access, Plan, plan};
use datalayer_core::query::{QueryDef, QueryId};
use datalayer_core::schema::TableSchema;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

type Plans = Arc<RwLock<HashMap<QueryId, Arc<Plan>>>>;

/// Autocommit ops re-run this many times on a retryable `Conflict` (they are atomic
/// and have no client-side effects, so re-running is safe).
const AUTOCOMMIT_RETRIES: u32 = 3;

/// An [`Engine`] over any [`KvStore`]: the whole data model of datalayer (rows, indexes,
/// queries, transactions, savepoints, catalog) on an ordered transactional KV store.
#[derive(Clone)]
pub struct KvEngine {
    store: Arc<dyn KvStore>,
    plans: Plans,
}

impl KvEngine {
    /// Wraps a store.
    pub fn new(store: impl KvStore) -> Self {
        KvEngine {
            store: Arc::new(store),
            plans: Arc::default(),
        }
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

    async fn run_once(&self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        let read_only = ops.iter().all(Op::is_read);
        let txn = self
            .store
            .begin(TxOptions {
                isolation: None,
                read_only,
            })
            .await?;
        let mut tx = KvTx::new(txn, read_only, self.store.capability(), false);
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let plan = match &op {
                Op::Query { query, .. } => Some(Self::plan_for(&self.plans, query)),
                _ => None,
            };
            match tx.exec(op, plan.as_deref()).await {
                Ok(o) => out.push(o),
                Err(e) => {
                    let _ = tx.rollback().await;
                    return Err(e);
                }
            }
        }
        if tx.has_writes() {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(out)
    }

    /// Runs `ops` atomically; re-runs them on a `Conflict` where the store has
    /// concurrent writers (a single-writer store never conflicts, so its ops are not
    /// copied for a retry).
    async fn run_retrying(&self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        if !self.store.capability().concurrent_writers {
            return self.run_once(ops).await;
        }
        let mut attempt = 0;
        loop {
            match self.run_once(ops.clone()).await {
                Err(e) if e.is_conflict() && attempt < AUTOCOMMIT_RETRIES => attempt += 1,
                r => return r,
            }
        }
    }
}

#[async_trait]
impl Engine for KvEngine {
    fn name(&self) -> &'static str {
        self.store.name()
    }

    fn capability(&self) -> Capability {
        self.store.capability()
    }

    async fn register(&self, tables: &[&TableSchema], queries: &[&QueryDef]) -> Result<()> {
        let txn = self.store.begin(TxOptions::default()).await?;
        let mut tx = KvTx::new(txn, false, self.store.capability(), false);
        for t in tables {
            t.validate()?;
            let bytes =
                postcard::to_allocvec(*t).map_err(|e| Error::engine("postcard", e.to_string()))?;
            match tx.catalog_get(&t.name).await? {
                None => tx.catalog_put(&t.name, bytes),
                Some(stored) if stored == bytes => {}
                Some(stored) => {
                    let old: Option<TableSchema> = postcard::from_bytes(&stored).ok();
                    let _ = tx.rollback().await;
                    return Err(Error::invalid_input(format!(
                        "table {} is stored with a different schema ({}); migrate it first",
                        t.name,
                        match old {
                            Some(o) => format!(
                                "stored columns {:?}",
                                o.columns.iter().map(|c| &c.name).collect::<Vec<_>>()
                            ),
                            None => "undecodable".into(),
                        }
                    )));
                }
            }
        }
        if tx.has_writes() {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        for q in queries {
            Self::plan_for(&self.plans, q);
        }
        Ok(())
    }

    async fn run(&self, op: Op<'_>) -> Result<Output> {
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
        let mut v = self.run_retrying(vec![op]).await?;
        Ok(v.pop().expect("one output per op"))
    }

    async fn run_batch(&self, ops: Vec<Op<'_>>) -> Result<Vec<Output>> {
        self.run_retrying(ops).await
    }

    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn EngineTx>> {
        let cap = self.store.capability();
        if let Some(l) = opts.isolation
            && !cap.supports_isolation(l)
        {
            return Err(Error::unsupported(
                self.store.name(),
                format!("isolation level {l:?}"),
            ));
        }
        let txn = self.store.begin(opts).await?;
        Ok(Box::new(KvEngineTx {
            tx: Some(KvTx::new(txn, opts.read_only, cap, true)),
            plans: self.plans.clone(),
        }))
    }

    async fn catalog(&self) -> Result<Vec<TableSchema>> {
        let txn = self
            .store
            .begin(TxOptions {
                isolation: None,
                read_only: true,
            })
            .await?;
        let mut tx = KvTx::new(txn, true, self.store.capability(), false);
        let raw = tx.catalog_all().await;
        let _ = tx.rollback().await;
        raw?.iter()
            .map(|b| {
                postcard::from_bytes(b).map_err(|e| Error::corrupted(format!("catalog entry: {e}")))
            })
            .collect()
    }

    async fn close(&self) -> Result<()> {
        self.store.close().await
    }
}

/// A transaction of a [`KvEngine`].
struct KvEngineTx {
    tx: Option<KvTx>,
    plans: Plans,
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
        let plan = match &op {
            Op::Query { query, .. } => Some(KvEngine::plan_for(&self.plans, query)),
            _ => None,
        };
        self.tx()?.exec(op, plan.as_deref()).await
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
        self.tx.take().expect("open").commit().await
    }
    async fn rollback(mut self: Box<Self>) -> Result<()> {
        self.tx.take().expect("open").rollback().await
    }
}
