//! The schema history table `_dl_schema_history`: one row per applied
//! schema-evolution step, written through the engine like any table, so that every
//! engine keeps it the same way and a migration between engines moves it along.
//!
//! Layout: `(tbl text, version i64, step i64) → (description text, applied_at i64 µs)`.
//! A table that was never migrated has no rows and is at version 1.

use crate::db::Executor;
use crate::engine::{Op, Output, ScanRequest, WriteMode};
use crate::error::{Error, Result};
use crate::evolve::HistoryEntry;
use crate::schema::internal::SCHEMA_HISTORY;
use crate::schema::{ColumnDef, TableSchema};
use crate::value::{ColumnType, Value};
use std::ops::Bound;
use std::sync::LazyLock;

/// The history table's schema.
pub static SCHEMA: LazyLock<TableSchema> = LazyLock::new(|| {
    let col = ColumnDef::new;
    TableSchema {
        version: None,
        name: SCHEMA_HISTORY.into(),
        columns: vec![
            col("tbl", ColumnType::String, false),
            col("version", ColumnType::I64, false),
            col("step", ColumnType::I64, false),
            col("description", ColumnType::String, false),
            col("applied_at", ColumnType::I64, false),
        ],
        primary_key: vec![0, 1, 2],
        indexes: Vec::new(),
    }
});

/// The insert recording `entries`.
pub(crate) fn record(entries: &[HistoryEntry]) -> Op<'static> {
    Op::Insert {
        table: &SCHEMA,
        rows: entries
            .iter()
            .map(|e| {
                vec![
                    Value::String(e.table.clone()),
                    Value::I64(e.version),
                    Value::I64(e.step),
                    Value::String(e.description.clone()),
                    Value::I64(e.applied_at_micros),
                ]
            })
            .collect(),
        mode: WriteMode::Insert,
    }
}

/// The recorded steps of `table` (every table when `None`), in (table, version,
/// step) order.
///
/// # Errors
/// The engine's read errors; `Corrupted` for a row of another shape.
pub(crate) async fn read(
    ex: &(impl Executor + ?Sized),
    table: Option<&str>,
) -> Result<Vec<HistoryEntry>> {
    let prefix = table.map_or_else(Vec::new, |t| vec![Value::String(t.into())]);
    let out = ex
        .run(Op::Scan(ScanRequest {
            table: &SCHEMA,
            index: None,
            prefix,
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
            after: None,
            reverse: false,
            limit: None,
        }))
        .await?;
    let Output::Rows(rows) = out else {
        return Err(Error::engine(
            "history",
            format!("unexpected output of a scan: {out:?}"),
        ));
    };
    rows.into_iter()
        .map(|r| match r.as_slice() {
            [
                Value::String(t),
                Value::I64(v),
                Value::I64(s),
                Value::String(d),
                Value::I64(at),
            ] => Ok(HistoryEntry {
                table: t.clone(),
                version: *v,
                step: *s,
                description: d.clone(),
                applied_at_micros: *at,
            }),
            other => Err(Error::corrupted(format!(
                "{SCHEMA_HISTORY}: undecodable row {other:?}"
            ))),
        })
        .collect()
}

/// The current schema version of `table` given its `history` (1 when never migrated).
pub(crate) fn version_of(history: &[HistoryEntry], table: &str) -> i64 {
    history
        .iter()
        .filter(|e| e.table == table)
        .map(|e| e.version)
        .max()
        .unwrap_or(1)
}
