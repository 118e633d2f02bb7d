//! Reading the source's change feed and turning changes into target writes.

use datalayer_core::{
    Change, ChangeKind, Db, Error, ErrorKind, Op, Result, Row, TableSchema, Value, WriteMode,
};

/// Changes read per call of `read_changes`.
pub(crate) const PAGE: usize = 2_000;

/// Every change of `table` after `after`, up to the end of the feed at the time of the
/// last read (at most `max` changes; fewer = the end was reached).
///
/// # Errors
/// The source's `read_changes` errors.
pub(crate) async fn drain(source: &Db, table: &str, after: u64, max: usize) -> Result<Vec<Change>> {
    let mut out: Vec<Change> = Vec::new();
    let mut pos = after;
    while out.len() < max {
        let page = source
            .read_changes(table, pos, PAGE.min(max - out.len()))
            .await?;
        let n = page.len();
        if let Some(last) = page.last() {
            pos = last.position;
        }
        out.extend(page);
        if n < PAGE.min(max) {
            break;
        }
    }
    Ok(out)
}

/// The position of the last change of `table` now (0 for an empty feed), found by
/// reading forward from `from`, a position known to be at or before the end.
///
/// # Errors
/// The source's `read_changes` errors.
pub(crate) async fn head(source: &Db, table: &str, from: u64) -> Result<u64> {
    let mut pos = from;
    loop {
        let page = source.read_changes(table, pos, PAGE).await?;
        match page.last() {
            Some(last) => pos = last.position,
            None => return Ok(pos),
        }
        if page.len() < PAGE {
            return Ok(pos);
        }
    }
}

/// The row image of `c` in `table`'s column order (images name their columns; an
/// engine may list them in another order).
///
/// # Errors
/// `Corrupted` when the image lacks a column of the table.
pub(crate) fn image(table: &TableSchema, c: &Change) -> Result<Row> {
    if c.columns.len() == table.columns.len()
        && c.columns
            .iter()
            .zip(&table.columns)
            .all(|(a, b)| *a == b.name)
    {
        return Ok(c.values.clone());
    }
    table
        .columns
        .iter()
        .map(|col| column(table, c, &col.name).cloned())
        .collect()
}

/// The primary key of the row `c` changed, in key order (without copying the rest of
/// the image).
///
/// # Errors
/// `Corrupted` when the image lacks a key column.
pub(crate) fn key(table: &TableSchema, c: &Change) -> Result<Row> {
    table
        .primary_key
        .iter()
        .map(|&i| column(table, c, &table.columns[i].name).cloned())
        .collect()
}

/// The value of column `name` in the image of `c`.
fn column<'c>(table: &TableSchema, c: &'c Change, name: &str) -> Result<&'c Value> {
    c.get(name).ok_or_else(|| {
        Error::corrupted(format!(
            "change {} of table {}: the row image has no column {name}",
            c.position, table.name
        ))
    })
}

/// The target write replaying `c`: an upsert of the new image for an insert or an
/// update, a delete by primary key for a delete. Replayed in commit order, full images
/// make the replay idempotent.
///
/// # Errors
/// As [`image`].
pub(crate) fn replay<'a>(table: &'a TableSchema, c: &Change) -> Result<Op<'a>> {
    let row = image(table, c)?;
    Ok(match c.kind {
        ChangeKind::Insert | ChangeKind::Update => Op::Insert {
            table,
            rows: vec![row],
            mode: WriteMode::Upsert,
        },
        ChangeKind::Delete => Op::Delete {
            table,
            keys: vec![table.key_of(&row)],
        },
    })
}

/// Whether the source can feed changes: `Unsupported` is turned into a message that
/// says what a migration without a feed can and cannot do.
pub(crate) fn no_feed(source: &Db, e: Error) -> Error {
    if e.kind() == ErrorKind::Unsupported {
        Error::unsupported(
            source.engine().name(),
            "a change feed, which a live migration follows (copy with writes stopped instead)",
        )
    } else {
        e
    }
}
