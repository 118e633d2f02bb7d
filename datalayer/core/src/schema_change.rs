//! Schema evolution at the [`Db`] level: the plan for the declared tables, applying
//! it through [`Engine::alter_table`], the history, and refusing ops on a table whose
//! migration is pending.

use crate::db::Db;
use crate::db::Executor;
use crate::engine::{Engine, Op};
use crate::error::{Error, Result};
use crate::evolve::{Evolution, HistoryEntry, MigrationPlan, TablePlan, diff};
use crate::history;
use crate::query::QueryDef;
use crate::schema::TableSchema;
use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

/// The plan taking the stored schemas of `declared` tables to their declarations;
/// a table stored under its `renamed_from` name is found there. Tables not stored yet
/// are not in the plan (registering creates them).
///
/// # Errors
/// The engine's catalog errors; `InvalidInput` for a default that does not fit.
pub(crate) async fn plan(
    engine: &dyn Engine,
    declared: &[(&'static TableSchema, Evolution)],
) -> Result<MigrationPlan> {
    let stored = engine.catalog().await?;
    let mut tables = Vec::new();
    for (t, ev) in declared {
        let rebuilt = crate::rebuild::copy_name(&t.name);
        let found = stored
            .iter()
            .find(|s| s.name == t.name)
            .or_else(|| {
                ev.renamed_from
                    .as_deref()
                    .and_then(|old| stored.iter().find(|s| s.name == old))
            })
            // A destructive rebuild cut short between its drop and its rename.
            .or_else(|| stored.iter().find(|s| s.name == rebuilt));
        if let Some(s) = found {
            let p = diff(s, t, ev)?;
            if !p.steps.is_empty() {
                tables.push(p);
            }
        }
    }
    Ok(MigrationPlan { tables })
}

/// Tables whose stored schema differs from the declaration, until migrated.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    names: parking_lot::RwLock<HashSet<String>>,
    any: std::sync::atomic::AtomicBool,
}

impl Pending {
    pub(crate) fn new(plan: &MigrationPlan) -> Self {
        let names: HashSet<String> = plan.tables.iter().map(|t| t.to.name.clone()).collect();
        Pending {
            any: (!names.is_empty()).into(),
            names: parking_lot::RwLock::new(names),
        }
    }

    pub(crate) fn contains(&self, table: &str) -> bool {
        self.names.read().contains(table)
    }

    fn clear(&self, table: &str) {
        let mut n = self.names.write();
        n.remove(table);
        self.any
            .store(!n.is_empty(), std::sync::atomic::Ordering::Release);
    }

    /// `InvalidInput` for an op on a pending table.
    pub(crate) fn check(&self, op: &Op<'_>) -> Result<()> {
        if !self.any.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let t = &op.table().name;
        if self.contains(t) {
            return Err(Error::invalid_input(format!(
                "table {t} is stored with another schema: apply Db::plan_migration() with Db::migrate(), or connect with DbBuilder::auto_migrate(true)"
            )));
        }
        Ok(())
    }
}

/// One table of the catalog: its stored schema, its schema version and the steps
/// that led there ([`Db::catalog`]).
#[derive(Clone, Debug, PartialEq)]
pub struct CatalogEntry {
    /// The stored schema.
    pub schema: TableSchema,
    /// 1 for a table never migrated; each applied plan adds 1.
    pub version: i64,
    /// The applied steps, oldest first.
    pub history: Vec<HistoryEntry>,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Db {
    /// The steps that take every declared table from its stored schema to its
    /// declaration (empty when they match). See [`crate::evolve`] for the steps and
    /// which are safe.
    ///
    /// # Errors
    /// The engine's catalog errors; `InvalidInput` for a declared default that does
    /// not fit its column.
    pub async fn plan_migration(&self) -> Result<MigrationPlan> {
        plan(self.inner.engine.as_ref(), &self.inner.declared).await
    }

    /// Applies `plan` (from [`Db::plan_migration`]): each table is altered by its
    /// engine ([`Engine::alter_table`]: `ALTER TABLE`, `CREATE INDEX CONCURRENTLY` on
    /// PostgreSQL, chunked backfills on the KV engines), every step is recorded in the
    /// schema history with its time, and the table's ops are accepted from then on.
    ///
    /// # Errors
    /// `InvalidInput` naming the unsafe steps when the plan has any and
    /// [`crate::DbBuilder::allow_destructive`] is off (when it is on, such a table is
    /// copied to a new one in the declared schema, see [`TablePlan::rebuild_row`],
    /// and a value that does not convert is `InvalidInput` naming its row);
    /// `Conflict` when a table's stored
    /// schema is no longer the plan's `from` (re-plan); `AlreadyExists` when stored
    /// rows violate a new unique index (its values named; the table stays as it was);
    /// the engine's own errors.
    pub async fn migrate(&self, plan: &MigrationPlan) -> Result<()> {
        let bad = plan.unsafe_steps();
        if !bad.is_empty() && !self.inner.allow_destructive {
            let list: Vec<String> = bad.iter().map(|(t, s)| format!("{t}: {s}")).collect();
            return Err(Error::invalid_input(format!(
                "the schema migration has unsafe steps, refused (DbBuilder::allow_destructive): {}",
                list.join("; ")
            )));
        }
        if plan.is_empty() {
            return Ok(());
        }
        let engine = self.inner.engine.as_ref();
        engine.register(&[&*history::SCHEMA], &[]).await?;
        let stored = engine.catalog().await?;
        for t in &plan.tables {
            if !stored.contains(&t.from) {
                return Err(Error::conflict(format!(
                    "table {}: the stored schema changed since the plan was made; plan again",
                    t.from.name
                )));
            }
        }
        let past = history::read(&self.engine_executor(), None).await?;
        for t in &plan.tables {
            self.apply(t, &past).await?;
        }
        Ok(())
    }

    async fn apply(&self, t: &TablePlan, past: &[HistoryEntry]) -> Result<()> {
        let engine = self.inner.engine.as_ref();
        let version = history::version_of(past, &t.from.name) + 1;
        let start = now_micros();
        if t.is_safe() {
            engine.alter_table(t).await?;
            if t.from.name == crate::rebuild::copy_name(&t.to.name) {
                // The rename that finishes a rebuild cut short after its drop.
                crate::rebuild::forget_progress(engine, &t.to.name).await?;
            }
        } else {
            self.rebuild(t).await?;
        }
        let at = now_micros().max(start);
        let entries: Vec<HistoryEntry> = t
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| HistoryEntry {
                table: t.to.name.clone(),
                version,
                step: i as i64,
                description: s.to_string(),
                applied_at_micros: at,
            })
            .collect();
        engine.run(history::record(&entries)).await?;
        let declared: &'static TableSchema = self
            .inner
            .declared
            .iter()
            .map(|(d, _)| *d)
            .find(|d| d.name == t.to.name)
            .ok_or_else(|| Error::invalid_input(format!("table {} is not declared", t.to.name)))?;
        let queries: Vec<&'static QueryDef> = self
            .inner
            .queries
            .iter()
            .copied()
            .filter(|q| q.table.name == declared.name)
            .collect();
        engine.register(&[declared], &queries).await?;
        self.inner.pending.clear(&declared.name);
        tracing::info!(table = %declared.name, version, steps = t.steps.len(), "schema migrated");
        Ok(())
    }

    /// Every stored table with its schema version and history (tables of this
    /// engine, declared here or not; datalayer's own tables included).
    ///
    /// # Errors
    /// The engine's read errors.
    pub async fn catalog(&self) -> Result<Vec<CatalogEntry>> {
        let engine = self.inner.engine.as_ref();
        let schemas = engine.catalog().await?;
        let history = if schemas.iter().any(|s| s.name == history::SCHEMA.name) {
            engine.register(&[&*history::SCHEMA], &[]).await?;
            history::read(&self.engine_executor(), None).await?
        } else {
            Vec::new()
        };
        Ok(schemas
            .into_iter()
            .map(|schema| {
                let h: Vec<HistoryEntry> = history
                    .iter()
                    .filter(|e| e.table == schema.name)
                    .cloned()
                    .collect();
                CatalogEntry {
                    version: history::version_of(&h, &schema.name),
                    history: h,
                    schema,
                }
            })
            .collect())
    }

    /// The engine as an executor that bypasses this `Db`'s pending-table check (for
    /// datalayer's own tables).
    fn engine_executor(&self) -> EngineExec<'_> {
        EngineExec(self.inner.engine.as_ref())
    }
}

/// An engine as an [`Executor`], for datalayer's own tables.
pub(crate) struct EngineExec<'a>(&'a dyn Engine);

#[async_trait::async_trait]
impl Executor for EngineExec<'_> {
    async fn run(&self, op: Op<'_>) -> Result<crate::engine::Output> {
        self.0.run(op.checked()?).await
    }
    async fn run_batch(&self, ops: Vec<Op<'_>>) -> Result<Vec<crate::engine::Output>> {
        let ops = ops
            .into_iter()
            .map(Op::checked)
            .collect::<Result<Vec<_>>>()?;
        self.0.run_batch(ops).await
    }
    fn capability(&self) -> crate::Capability {
        self.0.capability()
    }
    fn engine_name(&self) -> &'static str {
        self.0.name()
    }
}
