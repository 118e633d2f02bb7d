//! The copy of one table: rows in primary-key order, in chunks, each chunk reconciled
//! with the source's change feed by DBLog watermarks (Andreas Andreakis and Ioannis
//! Papapanagiotou, "DBLog: A Watermark Based Change-Data-Capture Framework", 2020).
//!
//! For each chunk: `L` = the feed's end (every change up to `L` is applied on the
//! target first); read the chunk; `H` = the feed's end again, reading the changes in
//! `(L, H]`. One atomic target batch then applies those changes in order, writes the
//! chunk's rows except those whose key changed in `(L, H]` (a row untouched in that
//! window is the row as of `H`), and records `{last key, position H}` in the progress
//! table. The target thus only ever holds a subset of one consistent source state (as
//! of its recorded position), so replaying later changes never trips a unique index,
//! and a copy killed at any moment resumes from its last commit with the same result.

use crate::feed::{self, drain, replay};
use crate::progress::TableProgress;
use crate::split::Ranges;
use crate::{Migration, Progress};
use datalayer_core::{
    Db, Error, Executor, Isolation, Op, Output, Result, Row, ScanRequest, TableSchema, TxOptions,
    WriteMode,
};
use std::collections::HashSet;
use std::ops::Bound;
use std::time::{Duration, Instant};

/// Rows of the first chunk; later chunks are sized by time ([`crate::Options::chunk_time`]).
const FIRST_CHUNK: usize = 1_000;

/// Most changes applied in one target batch while catching up.
pub(crate) const MAX_BATCH_CHANGES: usize = 5_000;

/// What copying one table did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableCopy {
    /// The table.
    pub table: String,
    /// Rows written by this run (a resumed run counts only its own).
    pub rows: u64,
    /// Bytes of those rows, in the canonical encoding of the checksums.
    pub bytes: u64,
    /// Source changes replayed on the target by this run.
    pub changes: u64,
    /// Chunks committed by this run.
    pub chunks: u64,
    /// Wall time of this run's copy of the table.
    pub elapsed: Duration,
    /// The copy had already finished in an earlier run: nothing was copied.
    pub already_copied: bool,
}

/// A scan of `limit` rows after `after`, in primary-key order (`index` `None`) or
/// the order of index `index` (then `after` is the index values, then the key).
pub(crate) fn page_scan(
    table: &TableSchema,
    index: Option<usize>,
    after: Option<Row>,
    limit: usize,
) -> Op<'_> {
    Op::Scan(ScanRequest {
        table,
        index,
        prefix: Vec::new(),
        lower: Bound::Unbounded,
        upper: Bound::Unbounded,
        after,
        reverse: false,
        limit: Some(limit),
    })
}

/// Runs the read `op` on `db` at read committed where the engine offers it (a
/// read-only transaction that commits without validating its reads on the KV
/// engines), else as an autocommit op. A migration needs each row as committed at
/// some moment inside its chunk's watermarks, not a serializable read: on a store
/// that validates (Redis), a chunk read at the table's growing tail would otherwise
/// fail with `Conflict` for as long as writes go on.
///
/// # Errors
/// The read errors of `db`.
pub(crate) async fn read(db: &Db, op: Op<'_>) -> Result<Output> {
    if !db.capability().read_committed {
        return db.run(op).await;
    }
    let tx = db
        .begin_with(TxOptions {
            isolation: Some(Isolation::ReadCommitted),
            read_only: true,
        })
        .await?;
    let out = tx.run(op).await?;
    tx.commit().await?;
    Ok(out)
}

/// The rows of `table` in `db` (a count).
///
/// # Errors
/// The read errors of `db`.
pub(crate) async fn count(db: &Db, table: &TableSchema) -> Result<u64> {
    match db.run(Op::Count { table }).await? {
        Output::Count(n) => Ok(n),
        other => Err(Error::engine(
            "migrate",
            format!("unexpected output of a count: {other:?}"),
        )),
    }
}

/// The rows of a `Rows` output.
pub(crate) fn rows_of(out: Output) -> Result<Vec<Row>> {
    match out {
        Output::Rows(r) => Ok(r),
        other => Err(Error::engine(
            "migrate",
            format!("unexpected output of a scan: {other:?}"),
        )),
    }
}

/// Applies the changes after the ranges' position on the target until the feed's end,
/// in batches of at most [`MAX_BATCH_CHANGES`], each committed with the progress of
/// every range in `ranges` at its new position. Returns how many changes were applied.
///
/// # Errors
/// The source's feed errors; the target's write errors.
pub(crate) async fn catch_up(
    m: &Migration,
    table: &TableSchema,
    ranges: &mut [TableProgress],
) -> Result<u64> {
    let Some(first) = ranges.first() else {
        return Ok(0);
    };
    let mut position = first.position;
    let mut applied = 0u64;
    loop {
        let changes = drain(&m.source, &table.name, position, MAX_BATCH_CHANGES).await?;
        let Some(last) = changes.last() else {
            return Ok(applied);
        };
        position = last.position;
        let mut ops = changes
            .iter()
            .map(|c| replay(table, c))
            .collect::<Result<Vec<_>>>()?;
        for p in ranges.iter_mut() {
            p.position = position;
            ops.push(p.upsert()?);
        }
        m.target.run_batch(ops).await?;
        m.touch(table, &changes)?;
        applied += changes.len() as u64;
        if changes.len() < MAX_BATCH_CHANGES {
            return Ok(applied);
        }
    }
}

/// One round read from the source and reconciled, ready to write.
struct Round<'t> {
    /// The window's changes, then the rows, then the progress it reaches.
    ops: Vec<Op<'t>>,
    /// The changes replayed (for `touch`).
    window: Vec<datalayer_core::Change>,
    /// Every range's progress once written.
    next: Vec<TableProgress>,
    /// Rows and canonical bytes written.
    rows: u64,
    bytes: u64,
    /// When the upper watermark was read.
    read_at: Instant,
}

/// The primary keys (in [`pk_bytes`] form) that this run's replays wrote on the
/// target, so that a chunk's rows can be plain inserts where none of them is among
/// them: cheaper than upserts on every engine (PostgreSQL's `ON CONFLICT` costs ~10%
/// of a bulk insert). `None`: every chunk upserts (a resumed copy, a target table
/// that held rows when the copy began, or more replayed keys than
/// [`crate::Options::max_touched_keys`]).
pub(crate) struct Replayed(Option<HashSet<Vec<u8>>>);

impl Replayed {
    /// Adds the keys of `changes`; gives up past `max` keys.
    fn add(
        &mut self,
        table: &TableSchema,
        changes: &[datalayer_core::Change],
        max: usize,
    ) -> Result<()> {
        if let Some(keys) = &mut self.0 {
            for c in changes {
                keys.insert(pk_bytes(&feed::key(table, c)?));
            }
            if keys.len() > max {
                self.0 = None;
            }
        }
        Ok(())
    }

    /// How to write `rows`: `Insert` when no replay of this run wrote any of their keys.
    fn mode(&self, table: &TableSchema, rows: &[Row]) -> WriteMode {
        match &self.0 {
            // No replays yet (a copy without concurrent writes): no key to encode.
            Some(keys)
                if keys.is_empty() || !rows.iter().any(|r| keys.contains(&key_bytes(table, r))) =>
            {
                WriteMode::Insert
            }
            _ => WriteMode::Upsert,
        }
    }
}

/// Reads one round after `at` (per range: its last key; all at one feed position):
/// the changes up to the feed's end `L`, a chunk of up to `limit` rows of every range
/// not copied yet (the reads at once), the changes in `(L, H]`; builds its batch:
/// every change after the position in order, then the rows whose key no change in
/// `(L, H]` touched (a row untouched in that window is the row as of `H`), then every
/// range's progress `{last key, H}` (or, once a split copy is done, the table's; see
/// `split.rs`). All ranges stay at one position, so the target holds a subset of one
/// source state. The rows are upserts where a replay of this run may have written one
/// of their keys first (see [`Replayed`]).
async fn read_round<'t>(
    m: &Migration,
    table: &'t TableSchema,
    ranges: &Ranges,
    at: &[TableProgress],
    limit: usize,
    replayed: &mut Replayed,
) -> Result<Round<'t>> {
    let feed = m.feed;
    let position = at.first().map_or(0, |p| p.position);
    let mut window = if feed {
        drain(&m.source, &table.name, position, usize::MAX).await?
    } else {
        Vec::new()
    };
    let low = window.last().map_or(position, |c| c.position);
    let reads = ranges
        .spans
        .iter()
        .zip(at)
        .filter(|(_, p)| !p.copied)
        .map(|(span, p)| {
            let mut scan = page_scan(table, None, p.last_key.clone(), limit);
            if let Op::Scan(req) = &mut scan {
                (req.lower, req.upper) = span.bounds(table);
            }
            read(&m.source, scan)
        });
    let mut chunks = futures::future::try_join_all(reads).await?.into_iter();
    let after_read = if feed {
        drain(&m.source, &table.name, low, usize::MAX).await?
    } else {
        Vec::new()
    };
    let read_at = Instant::now();
    let changed: HashSet<Vec<u8>> = after_read
        .iter()
        .map(|c| feed::key(table, c).map(|k| pk_bytes(&k)))
        .collect::<Result<_>>()?;
    window.extend(after_read);
    let high = window.last().map_or(position, |c| c.position);
    let mut next = at.to_vec();
    let mut keep: Vec<Row> = Vec::new();
    let (mut rows, mut bytes) = (0u64, 0u64);
    for p in next.iter_mut() {
        p.position = high;
        if p.copied {
            continue;
        }
        let out = chunks
            .next()
            .ok_or_else(|| Error::engine("migrate", "a range read went missing"))?;
        let got = rows_of(out)?;
        if let Some(last) = got.last() {
            p.last_key = Some(table.key_of(last));
        }
        p.rows += got.len() as u64;
        p.copied = got.len() < limit;
        for r in got {
            if changed.is_empty() || !changed.contains(&key_bytes(table, &r)) {
                bytes += crate::canonical::size(&r) as u64;
                rows += 1;
                keep.push(r);
            }
        }
    }
    let mut ops = window
        .iter()
        .map(|c| replay(table, c))
        .collect::<Result<Vec<_>>>()?;
    replayed.add(table, &window, m.opts.max_touched_keys)?;
    if !keep.is_empty() {
        // Upsert where a replay may have written the row already: written again as
        // of `H`, it is the same row.
        let mode = replayed.mode(table, &keep);
        ops.push(Op::Insert {
            table,
            rows: keep,
            mode,
        });
    }
    ops.extend(ranges.progress_ops(table, &next)?);
    Ok(Round {
        ops,
        window,
        next,
        rows,
        bytes,
        read_at,
    })
}

/// Copies `table` from where `p` stands to its end, in the key ranges of `ranges`
/// (see the module docs and `split.rs`). Reading round k+1 overlaps writing round k:
/// the source and the target work at once. On return `p` is the table's progress.
///
/// # Errors
/// The source's read and feed errors, the target's write errors (`AlreadyExists` when
/// the target table already holds a row being copied).
pub(crate) async fn copy_table(
    m: &Migration,
    table: &TableSchema,
    p: &mut TableProgress,
    ranges: Ranges,
) -> Result<TableCopy> {
    let started = Instant::now();
    let mut report = TableCopy {
        table: table.name.clone(),
        already_copied: p.copied,
        ..TableCopy::default()
    };
    if p.copied {
        return Ok(report);
    }
    let total = count(&m.source, table).await?;
    let mut at = ranges.load(m, p).await?;
    if m.feed {
        // A backlog of changes (a resumed copy) goes first, in bounded batches, so
        // that a round's batch holds only the changes made while it was read.
        report.changes += catch_up(m, table, &mut at).await?;
    }
    // Plain inserts only where this run knows every row on the target: nothing
    // copied yet and the target table empty (a backlog's replays leave rows), or no
    // replays at all (without a feed, a row already there is `AlreadyExists`).
    let fresh = !m.feed
        || (at.iter().all(|r| r.rows == 0 && r.last_key.is_none())
            && count(&m.target, table).await? == 0);
    let mut replayed = Replayed(fresh.then(HashSet::new));
    let mut limit = FIRST_CHUNK.min(m.opts.max_chunk_rows);
    let mut ready = read_round(m, table, &ranges, &at, limit, &mut replayed).await?;
    loop {
        let t0 = Instant::now();
        let Round {
            ops,
            window,
            next,
            rows,
            bytes,
            read_at,
        } = ready;
        let done = next.iter().all(|r| r.copied);
        let write = m.target.run_batch(ops);
        let (written, upcoming) = if done {
            (write.await, None)
        } else {
            let read = read_round(m, table, &ranges, &next, limit, &mut replayed);
            let (w, r) = tokio::join!(write, read);
            (w, Some(r))
        };
        written?;
        m.touch(table, &window)?;
        report.rows += rows;
        report.bytes += bytes;
        report.changes += window.len() as u64;
        report.chunks += 1;
        at = next;
        let copied: u64 = at.iter().map(|r| r.rows).sum();
        let rate = report.rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
        m.report(Progress {
            table: &table.name,
            rows: copied,
            bytes: report.bytes,
            done,
            total,
            rate,
            eta: (rate > 0.0)
                .then(|| Duration::from_secs_f64(total.saturating_sub(copied) as f64 / rate)),
            lag: read_at.elapsed(),
        });
        let Some(upcoming) = upcoming else {
            *p = ranges.finished(table, &at);
            report.elapsed = started.elapsed();
            return Ok(report);
        };
        ready = upcoming?;
        // A long copy on an engine whose calls complete without waiting must still let
        // other tasks of the runtime (and a caller's cancellation) in between chunks.
        tokio::task::yield_now().await;
        limit = next_chunk(limit, t0.elapsed(), bytes, &m.opts);
    }
}

/// The next chunk's row count: scaled so that a chunk takes about `chunk_time`, at
/// most doubling or halving at once, within `[64, max_chunk_rows]` and under
/// `max_chunk_bytes` (the target's transaction size limit leaves room for indexes).
fn next_chunk(rows: usize, took: Duration, bytes: u64, o: &crate::Options) -> usize {
    let by_time = rows as f64 * o.chunk_time.as_secs_f64() / took.as_secs_f64().max(1e-6);
    let by_bytes = if bytes == 0 {
        f64::MAX
    } else {
        rows as f64 * o.max_chunk_bytes as f64 / bytes as f64
    };
    let want = by_time
        .min(by_bytes)
        .clamp(rows as f64 / 2.0, rows as f64 * 2.0);
    (want as usize).clamp(64, o.max_chunk_rows.max(64))
}

/// A row's primary key in the KV family's order-preserving encoding: the order every
/// engine's primary-key scan follows, so it compares keys across engines.
pub(crate) fn key_bytes(table: &TableSchema, row: &Row) -> Vec<u8> {
    let mut out = Vec::new();
    datalayer_kv::codec::encode_values(&mut out, table.primary_key.iter().map(|&c| &row[c]));
    out
}

/// [`key_bytes`] of a primary key given as its values (key order).
pub(crate) fn pk_bytes(key: &Row) -> Vec<u8> {
    let mut out = Vec::new();
    datalayer_kv::codec::encode_values(&mut out, key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalayer_core::{Change, ChangeKind, ColumnDef, ColumnType, Value};

    fn table() -> TableSchema {
        TableSchema {
            version: None,
            name: "t".into(),
            columns: vec![
                ColumnDef::new("id", ColumnType::I64, false),
                ColumnDef::new("v", ColumnType::String, true),
            ],
            primary_key: vec![0],
            indexes: vec![],
        }
    }

    fn change(id: i64) -> Change {
        Change {
            position: id as u64,
            table: "t".into(),
            kind: ChangeKind::Insert,
            columns: vec!["id".into(), "v".into()],
            values: vec![Value::I64(id), Value::Null],
        }
    }

    fn row(id: i64) -> Row {
        vec![Value::I64(id), Value::String("x".into())]
    }

    #[test]
    fn rows_a_replay_wrote_are_upserted_the_others_inserted() {
        let t = table();
        let mut r = Replayed(Some(HashSet::new()));
        assert_eq!(r.mode(&t, &[row(1), row(2)]), WriteMode::Insert);
        r.add(&t, &[change(2)], 10).unwrap();
        assert_eq!(r.mode(&t, &[row(1), row(2)]), WriteMode::Upsert);
        assert_eq!(r.mode(&t, &[row(1), row(3)]), WriteMode::Insert);
        // Past the bound the keys are dropped: every row is upserted from then on.
        r.add(&t, &(10..30).map(change).collect::<Vec<_>>(), 10)
            .unwrap();
        assert_eq!(r.mode(&t, &[row(1)]), WriteMode::Upsert);
        assert_eq!(Replayed(None).mode(&t, &[row(1)]), WriteMode::Upsert);
    }
}
