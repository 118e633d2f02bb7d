//! Large tables copied in parallel key ranges (as pgcopydb splits a table by ranges of
//! an integer primary key, `--split-tables-larger-than`).
//!
//! A table of at least [`crate::Options::split_rows`] rows whose primary key is one
//! integer column is cut into [`crate::Options::parallel_ranges`] spans of that
//! column, from its smallest to its largest value. Each span is copied at once with
//! the others, by the chunked, watermarked copy of `copy.rs` restricted to its keys:
//! its scans stay inside the span and it replays only the changes of keys inside it,
//! so every key's changes are applied by one span, in commit order. Each span keeps
//! its own progress row (`<table>\u{1}<i>`), next to the plan (`<table>\u{1}plan`:
//! the bounds), so a run cut off anywhere resumes every span where it stopped.
//!
//! The spans advance together: each round reads a chunk of every span at once between
//! the same two watermarks, and one target batch writes them all with the round's
//! changes and every span's progress at one feed position. The target thus holds a
//! subset of one source state, as with one range, so a unique value that moves from a
//! row of one span to a row of another never meets itself. The batch that finishes the
//! last span writes the table's own progress (copied) and removes the plan and span
//! rows.

use crate::copy::{self, TableCopy, copy_table, rows_of};
use crate::progress::{self, SCHEMA, TableProgress};
use crate::{Migration, TableStatus};
use datalayer_core::{ColumnType, Error, Executor, Op, Result, TableSchema, Value};
use std::ops::Bound;

/// The half-open span `[lo, hi)` of a table's integer primary key (`None`: unbounded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub lo: Option<i64>,
    pub hi: Option<i64>,
}

impl Span {
    /// The scan bounds of the span on `table`'s key column (of its integer type).
    pub fn bounds(&self, table: &TableSchema) -> (Bound<Value>, Bound<Value>) {
        let ty = table.columns[table.primary_key[0]].ty;
        let v = |x: i64| match ty {
            ColumnType::I16 => Value::I16(x as i16),
            ColumnType::I32 => Value::I32(x as i32),
            _ => Value::I64(x),
        };
        (
            self.lo.map_or(Bound::Unbounded, |x| Bound::Included(v(x))),
            self.hi.map_or(Bound::Unbounded, |x| Bound::Excluded(v(x))),
        )
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::I16(x) => Some(i64::from(*x)),
        Value::I32(x) => Some(i64::from(*x)),
        Value::I64(x) => Some(*x),
        _ => None,
    }
}

fn plan_name(table: &str) -> String {
    format!("{table}\u{1}plan")
}

fn span_name(table: &str, i: usize) -> String {
    format!("{table}\u{1}{i}")
}

/// `bounds` (the inner cut points, ascending) as spans covering every key.
fn spans(bounds: &[i64]) -> Vec<Span> {
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut lo = None;
    for &b in bounds {
        out.push(Span { lo, hi: Some(b) });
        lo = Some(b);
    }
    out.push(Span { lo, hi: None });
    out
}

/// `n` spans of equal width over `[min, max]`: the inner cut points.
fn cut(min: i64, max: i64, n: usize) -> Vec<i64> {
    let width = (i128::from(max) - i128::from(min) + 1) / n.max(1) as i128;
    if width < 1 {
        return Vec::new();
    }
    (1..n)
        .map(|i| (i128::from(min) + width * i as i128) as i64)
        .collect()
}

/// The stored plan of `table`: its inner cut points, if a split copy began.
async fn load_plan(m: &Migration, table: &str) -> Result<Option<Vec<i64>>> {
    let Some(p) = progress::load(&m.target, &plan_name(table)).await? else {
        return Ok(None);
    };
    p.last_key
        .unwrap_or_default()
        .iter()
        .map(|v| int(v).ok_or_else(|| Error::corrupted(format!("{}: bad split plan", SCHEMA.name))))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The key column's smallest or largest value (`None`: an empty table).
async fn end_key(m: &Migration, table: &TableSchema, reverse: bool) -> Result<Option<i64>> {
    let mut scan = copy::page_scan(table, None, None, 1);
    if let Op::Scan(req) = &mut scan {
        req.reverse = reverse;
    }
    let rows = rows_of(copy::read(&m.source, scan).await?)?;
    Ok(rows.first().and_then(|r| int(&r[table.primary_key[0]])))
}

/// The plan for a table not copied yet: cut points when it is worth splitting (an
/// integer key, enough rows), else `None` (copied as one range). Written with every
/// span's starting progress, at the feed position `p.position`.
async fn new_plan(
    m: &Migration,
    table: &TableSchema,
    p: &TableProgress,
) -> Result<Option<Vec<i64>>> {
    let o = &m.opts;
    let integer_key =
        table.primary_key.len() == 1 && table.columns[table.primary_key[0]].ty.is_integer();
    if !integer_key || o.parallel_ranges < 2 || p.last_key.is_some() || p.rows > 0 {
        return Ok(None);
    }
    let rows = copy::count(&m.source, table).await?;
    if rows < o.split_rows {
        return Ok(None);
    }
    let (Some(min), Some(max)) = (
        end_key(m, table, false).await?,
        end_key(m, table, true).await?,
    ) else {
        return Ok(None);
    };
    let bounds = cut(min, max, o.parallel_ranges);
    if bounds.is_empty() {
        return Ok(None);
    }
    let mut ops = vec![
        TableProgress {
            last_key: Some(bounds.iter().map(|&b| Value::I64(b)).collect()),
            ..TableProgress::start(&plan_name(&table.name), p.position)
        }
        .upsert()?,
    ];
    for i in 0..=bounds.len() {
        ops.push(TableProgress::start(&span_name(&table.name, i), p.position).upsert()?);
    }
    m.target.run_batch(ops).await?;
    Ok(Some(bounds))
}

/// The key ranges of one table's copy: the whole key space, or the spans of a split.
#[derive(Clone, Debug)]
pub(crate) struct Ranges {
    pub spans: Vec<Span>,
    split: bool,
}

impl Ranges {
    /// One range over every key, whose progress is the table's own row.
    pub fn whole() -> Self {
        Ranges {
            spans: vec![Span { lo: None, hi: None }],
            split: false,
        }
    }

    fn split(bounds: &[i64]) -> Self {
        Ranges {
            spans: spans(bounds),
            split: true,
        }
    }

    /// Every range's progress: the table's `p` itself, or each span's stored row (a
    /// span without one starts at `p`'s position).
    ///
    /// # Errors
    /// The target's read errors.
    pub async fn load(&self, m: &Migration, p: &TableProgress) -> Result<Vec<TableProgress>> {
        if !self.split {
            return Ok(vec![p.clone()]);
        }
        let mut out = Vec::with_capacity(self.spans.len());
        for i in 0..self.spans.len() {
            let name = span_name(&p.name, i);
            out.push(
                progress::load(&m.target, &name)
                    .await?
                    .unwrap_or_else(|| TableProgress::start(&name, p.position)),
            );
        }
        Ok(out)
    }

    /// The progress writes of a round that reaches `next`: every range's row; once a
    /// split copy is done, the table's own row instead, and the plan and span rows
    /// removed.
    ///
    /// # Errors
    /// As [`TableProgress::upsert`].
    pub fn progress_ops(
        &self,
        table: &TableSchema,
        next: &[TableProgress],
    ) -> Result<Vec<Op<'static>>> {
        if self.split && next.iter().all(|p| p.copied) {
            let mut names = vec![vec![Value::String(plan_name(&table.name))]];
            names.extend(
                (0..self.spans.len()).map(|i| vec![Value::String(span_name(&table.name, i))]),
            );
            return Ok(vec![
                self.finished(table, next).upsert()?,
                Op::Delete {
                    table: &SCHEMA,
                    keys: names,
                },
            ]);
        }
        next.iter().map(TableProgress::upsert).collect()
    }

    /// The table's progress when its ranges stand at `at`.
    pub fn finished(&self, table: &TableSchema, at: &[TableProgress]) -> TableProgress {
        if !self.split {
            return at[0].clone();
        }
        TableProgress {
            rows: at.iter().map(|p| p.rows).sum(),
            copied: at.iter().all(|p| p.copied),
            ..TableProgress::start(&table.name, at.first().map_or(0, |p| p.position))
        }
    }
}

/// Copies `table` from where it stands: in spans when a split copy began or the table
/// is worth splitting, else as one range.
///
/// # Errors
/// As [`copy_table`].
pub(crate) async fn copy_any(
    m: &Migration,
    table: &TableSchema,
    p: &mut TableProgress,
) -> Result<TableCopy> {
    let ranges = if p.copied {
        Ranges::whole()
    } else if let Some(b) = load_plan(m, &table.name).await? {
        Ranges::split(&b)
    } else if let Some(b) = new_plan(m, table, p).await? {
        Ranges::split(&b)
    } else {
        Ranges::whole()
    };
    copy_table(m, table, p, ranges).await
}

/// Where a split copy of `table` stands (the sum of its spans), if one began.
///
/// # Errors
/// The target's read errors.
pub(crate) async fn status(m: &Migration, table: &str) -> Result<Option<TableStatus>> {
    let Some(bounds) = load_plan(m, table).await? else {
        return Ok(None);
    };
    let mut st = TableStatus {
        rows: 0,
        copied: false,
        position: 0,
        ranges: bounds.len() + 1,
    };
    for i in 0..=bounds.len() {
        if let Some(s) = progress::load(&m.target, &span_name(table, i)).await? {
            // Every span stands at one position (see the module docs).
            st.rows += s.rows;
            st.position = s.position;
        }
    }
    Ok(Some(st))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalayer_core::Row;

    /// Whether the primary key `key` (one integer) lies in `span`.
    fn holds(span: &Span, key: &Row) -> bool {
        match key.first().and_then(int) {
            Some(k) => span.lo.is_none_or(|lo| k >= lo) && span.hi.is_none_or(|hi| k < hi),
            None => false,
        }
    }

    #[test]
    fn spans_cover_every_key_once() {
        let b = cut(-10, 109, 4);
        assert_eq!(b, vec![20, 50, 80]);
        let s = spans(&b);
        for k in [i64::MIN, -11, -10, 19, 20, 79, 80, 109, 110, i64::MAX] {
            let n = s
                .iter()
                .filter(|sp| holds(sp, &vec![Value::I64(k)]))
                .count();
            assert_eq!(n, 1, "key {k}");
        }
        assert!(cut(5, 6, 4).is_empty());
        assert!(!holds(&s[0], &vec![Value::String("x".into())]));
    }
}
