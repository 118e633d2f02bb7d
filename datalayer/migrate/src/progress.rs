//! The progress table `_dl_migration` on the target: one row per copied table, written
//! in the same atomic batch as the rows (or changes) it describes, so that a migration
//! killed at any moment resumes exactly where its last commit left it.

use datalayer_core::schema::internal::MIGRATION;
use datalayer_core::{
    ColumnDef, ColumnType, Error, Executor, Op, Output, Result, Row, TableSchema, Value,
};
use std::sync::LazyLock;

/// The progress table's schema: `(name text pk, last_key bytes null, rows i64, copied
/// bool, position i64)`.
pub(crate) static SCHEMA: LazyLock<TableSchema> = LazyLock::new(|| {
    let col = ColumnDef::new;
    TableSchema {
        version: None,
        name: MIGRATION.into(),
        columns: vec![
            col("name", ColumnType::String, false),
            col("last_key", ColumnType::Bytes, true),
            col("rows", ColumnType::I64, false),
            col("copied", ColumnType::Bool, false),
            col("position", ColumnType::I64, false),
        ],
        primary_key: vec![0],
        indexes: Vec::new(),
    }
});

/// Where the migration of one table stands.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TableProgress {
    /// The table.
    pub name: String,
    /// The primary key of the last row copied (`None`: nothing copied yet).
    pub last_key: Option<Row>,
    /// Rows copied so far.
    pub rows: u64,
    /// The copy reached the end of the table.
    pub copied: bool,
    /// The source change-feed position applied: changes after it are still to follow.
    pub position: u64,
}

impl TableProgress {
    /// The progress of a table not copied yet, whose change feed is at `position`.
    pub fn start(name: &str, position: u64) -> Self {
        TableProgress {
            name: name.into(),
            last_key: None,
            rows: 0,
            copied: false,
            position,
        }
    }

    /// The upsert writing this progress: put it in the batch of the data it describes.
    pub fn upsert(&self) -> Result<Op<'static>> {
        let key = match &self.last_key {
            Some(k) => Value::Bytes(
                postcard::to_allocvec(k).map_err(|e| Error::engine("postcard", e.to_string()))?,
            ),
            None => Value::Null,
        };
        Ok(Op::Insert {
            table: &SCHEMA,
            rows: vec![vec![
                Value::String(self.name.clone()),
                key,
                Value::I64(self.rows as i64),
                Value::Bool(self.copied),
                // Positions are u64; the column is i64: stored bit for bit.
                Value::I64(self.position as i64),
            ]],
            mode: datalayer_core::WriteMode::Upsert,
        })
    }

    fn from_row(row: &Row) -> Result<Self> {
        let bad = || Error::corrupted(format!("{MIGRATION}: undecodable progress row {row:?}"));
        let [name, key, rows, copied, position] = row.as_slice() else {
            return Err(bad());
        };
        let (Value::String(name), Value::I64(rows), Value::Bool(copied), Value::I64(position)) =
            (name, rows, copied, position)
        else {
            return Err(bad());
        };
        let last_key = match key {
            Value::Null => None,
            Value::Bytes(b) => Some(postcard::from_bytes(b).map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        Ok(TableProgress {
            name: name.clone(),
            last_key,
            rows: *rows as u64,
            copied: *copied,
            position: *position as u64,
        })
    }
}

/// The stored progress of `table` on `target`, if any.
///
/// # Errors
/// The target's read errors; `Corrupted` for an undecodable progress row.
pub(crate) async fn load(target: &impl Executor, table: &str) -> Result<Option<TableProgress>> {
    let out = target
        .run(Op::Get {
            table: &SCHEMA,
            keys: vec![vec![Value::String(table.into())]],
        })
        .await?;
    match out {
        Output::Optional(mut v) => match v.pop().flatten() {
            Some(row) => TableProgress::from_row(&row).map(Some),
            None => Ok(None),
        },
        other => Err(Error::engine(
            "migrate",
            format!("unexpected output of a get: {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_row_round_trips() {
        let p = TableProgress {
            name: "t".into(),
            last_key: Some(vec![Value::I64(7), Value::String("é".into())]),
            rows: 12,
            copied: true,
            position: (3u64 << 40) + 5,
        };
        let Op::Insert { rows, .. } = p.upsert().unwrap() else {
            panic!("an insert")
        };
        assert_eq!(TableProgress::from_row(&rows[0]).unwrap(), p);
        let mut bad = rows[0].clone();
        bad[2] = Value::String("x".into());
        assert!(TableProgress::from_row(&bad).unwrap_err().is_corrupted());
    }
}
