//! Destructive schema changes ([`Db::migrate`] with `allow_destructive`): the table
//! copied into `<name>__new` in the declared schema, the stored table dropped, the
//! copy renamed; resumable.
//!
//! Each chunk of [`REBUILD_CHUNK`] rows is inserted in one transaction with the
//! table's progress row in `_dl_rebuild` (`name` → the copy's schema, the last source
//! primary key copied), so a run cut short (a crash, a lost connection, a value that
//! does not convert) resumes after the last chunk that committed, as long as the
//! declaration is the same; another declaration starts the copy over. A run cut
//! short between the drop and the rename is finished by the next plan (it renames the
//! copy). Writes to the table during the copy are not carried over: stop its writers
//! first.

use crate::db::Db;
use crate::engine::{Engine, Op, Output, ScanRequest, TxOptions, WriteMode};
use crate::error::{Error, ErrorKind, Result};
use crate::evolve::{Evolution, TablePlan};
use crate::schema::internal::REBUILD;
use crate::schema::{ColumnDef, TableSchema};
use crate::value::{ColumnType, Row, Value};
use std::ops::Bound;
use std::sync::LazyLock;

/// Rows per transaction of a destructive rebuild ([`Db::migrate`]).
pub const REBUILD_CHUNK: usize = 1_000;

/// The progress table: `(name text) → (target bytes: the copy's catalog bytes,
/// last_key bytes: the postcard of the last source primary key copied)`.
static SCHEMA: LazyLock<TableSchema> = LazyLock::new(|| TableSchema {
    version: None,
    name: REBUILD.into(),
    columns: vec![
        ColumnDef::new("name", ColumnType::String, false),
        ColumnDef::new("target", ColumnType::Bytes, false),
        ColumnDef::new("last_key", ColumnType::Bytes, false),
    ],
    primary_key: vec![0],
    indexes: Vec::new(),
});

/// The name of table `name`'s copy during a rebuild.
pub(crate) fn copy_name(name: &str) -> String {
    format!("{name}__new")
}

/// The progress of table `name`'s rebuild: the copy's catalog bytes and the last
/// source key copied.
async fn progress(engine: &dyn Engine, name: &str) -> Result<Option<(Vec<u8>, Row)>> {
    let out = engine
        .run(Op::Get {
            table: &SCHEMA,
            keys: vec![vec![Value::String(name.to_owned())]],
        })
        .await?;
    let row = match out {
        Output::Optional(mut rows) => rows.pop().flatten(),
        o => return Err(Error::engine("rebuild", format!("a get returned {o:?}"))),
    };
    let Some(row) = row else { return Ok(None) };
    match row.as_slice() {
        [_, Value::Bytes(target), Value::Bytes(key)] => {
            let key: Row = postcard::from_bytes(key)
                .map_err(|e| Error::corrupted(format!("{REBUILD}: row {name}: {e}")))?;
            Ok(Some((target.clone(), key)))
        }
        _ => Err(Error::corrupted(format!(
            "{REBUILD}: undecodable row {row:?}"
        ))),
    }
}

/// Deletes table `name`'s progress row, registering the progress table first (the
/// rename that finishes a rebuild cut short may run on a new handle).
pub(crate) async fn forget_progress(engine: &dyn Engine, name: &str) -> Result<()> {
    engine.register(&[&*SCHEMA], &[]).await?;
    delete_progress(engine, name).await
}

/// Deletes table `name`'s progress row (the progress table is registered).
async fn delete_progress(engine: &dyn Engine, name: &str) -> Result<()> {
    engine
        .run(Op::Delete {
            table: &SCHEMA,
            keys: vec![vec![Value::String(name.to_owned())]],
        })
        .await
        .map(drop)
}

impl Db {
    /// See the module docs.
    pub(crate) async fn rebuild(&self, t: &TablePlan) -> Result<()> {
        let engine = self.inner.engine.as_ref();
        let tmp_name = copy_name(&t.to.name);
        crate::schema::validate_identifier("table", &tmp_name)?;
        let mut tmp = t.to.clone();
        tmp.name = tmp_name;
        let target = tmp.catalog_bytes()?;
        // Ops take `&'static` schemas: one leak per destructive migration.
        let tmp: &'static TableSchema = Box::leak(Box::new(tmp));
        let from: &'static TableSchema = Box::leak(Box::new(t.from.clone()));
        engine.register(&[&*SCHEMA], &[]).await?;
        let stored = engine.catalog().await?;
        let resume = match progress(engine, &t.to.name).await? {
            Some((was, key)) if was == target && stored.contains(tmp) => Some(key),
            _ => None,
        };
        if resume.is_none() {
            engine.drop_table(&tmp.name).await?;
        }
        engine.register(&[from, tmp], &[]).await?;
        self.copy_rows(t, from, tmp, resume, target).await?;
        engine.drop_table(&from.name).await?;
        let rename = TablePlan {
            from: tmp.clone(),
            to: t.to.clone(),
            evolution: Evolution::default(),
            steps: vec![crate::SchemaStep::RenameTable {
                from: tmp.name.clone(),
                to: t.to.name.clone(),
            }],
        };
        engine.alter_table(&rename).await?;
        delete_progress(engine, &t.to.name).await
    }

    /// Copies the rows of `from` after `after` (every row for `None`) into `tmp` in the
    /// declared layout, each chunk with its progress row in one transaction.
    async fn copy_rows(
        &self,
        t: &TablePlan,
        from: &'static TableSchema,
        tmp: &'static TableSchema,
        mut after: Option<Row>,
        target: Vec<u8>,
    ) -> Result<()> {
        let engine = self.inner.engine.as_ref();
        let sources = t.column_sources();
        loop {
            let out = engine
                .run(Op::Scan(ScanRequest {
                    table: from,
                    index: None,
                    prefix: Vec::new(),
                    lower: Bound::Unbounded,
                    upper: Bound::Unbounded,
                    after: after.take(),
                    reverse: false,
                    limit: Some(REBUILD_CHUNK),
                }))
                .await?;
            let Output::Rows(rows) = out else {
                return Err(Error::engine("rebuild", format!("a scan returned {out:?}")));
            };
            let Some(last) = rows.last() else { break };
            let key = from.key_of(last);
            let n = rows.len();
            let copied = rows
                .iter()
                .map(|r| t.rebuild_row(&sources, r))
                .collect::<Result<Vec<_>>>()?;
            let mark = Op::Insert {
                table: &SCHEMA,
                rows: vec![vec![
                    Value::String(t.to.name.clone()),
                    Value::Bytes(target.clone()),
                    Value::Bytes(
                        postcard::to_allocvec(&key)
                            .map_err(|e| Error::engine("postcard", e.to_string()))?,
                    ),
                ]],
                mode: WriteMode::Upsert,
            };
            let insert = Op::Insert {
                table: tmp,
                rows: copied,
                mode: WriteMode::Insert,
            };
            let mut tx = engine.begin(TxOptions::default()).await?;
            let r = tx.run_batch(vec![insert, mark]).await;
            let r = match r {
                Ok(_) => tx.commit().await,
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            };
            r.map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => Error::already_exists(format!(
                    "table {}: the new primary key or a unique index has duplicates among the stored rows: {}",
                    t.to.name,
                    e.message()
                )),
                _ => e,
            })?;
            after = Some(key);
            if n < REBUILD_CHUNK {
                break;
            }
        }
        Ok(())
    }
}
