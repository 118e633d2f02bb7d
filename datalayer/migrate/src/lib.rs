//! Live migration between any two datalayer engines, verified.
//!
//! [`Migration::copy`] copies every table of the source's catalog (or a chosen subset):
//! the schema first, then the rows in primary-key order in chunks sized by time, each
//! chunk reconciled with the source's change feed by DBLog watermarks (see `copy.rs`),
//! so that writes made to the source during the copy are neither lost nor applied out
//! of order. [`Migration::follow_until_caught_up`] then replays the feed until the
//! target has caught up. The progress of each table (the last key copied, the feed position applied) is
//! committed on the target in the same batch as the data it describes
//! (`_dl_migration`), so a migration killed at any moment and run again continues
//! where it stopped, with the same result. [`Migration::verify`] compares per-key-range
//! checksums of a typed, engine-neutral row encoding on both sides and names the key
//! ranges that differ; [`Migration::repair`] copies those ranges again.
//! [`Migration::cutover`] fences the source's writes, drains the feed and compares the
//! rows changed meanwhile; [`Migration::reverse`] then keeps a way back open by
//! following the target's changes into the source.
//!
//! ```no_run
//! # async fn demo(source: datalayer_core::Db, target: datalayer_core::Db) -> datalayer_core::Result<()> {
//! use datalayer_migrate::Migration;
//! let m = Migration::new(&source, &target);
//! let copied = m.copy().await?; // schema + rows; resumable
//! m.follow_until_caught_up().await?; // writes made meanwhile
//! let report = m.verify().await?;
//! assert!(report.is_equal());
//! # Ok(()) }
//! ```
//!
//! Anchors: pgcopydb (snapshot + COPY, then logical decoding; PostgreSQL only), AWS DMS
//! (full load + cached changes, validation with resync), Debezium's incremental
//! snapshots and Netflix's DBLog (watermarks, chunks interleaved with the stream).

mod canonical;
mod copy;
mod feed;
mod progress;
mod split;
mod verify;

pub use copy::TableCopy;
pub use verify::{IndexCount, KeyRange, TableCheck, VerifyReport};

use datalayer_core::schema::internal;
use datalayer_core::{Db, Error, Executor, Op, Result, Row, TableSchema, WriteMode};
use progress::TableProgress;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a migration runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The tables to migrate (`None`: every table of the source catalog except
    /// datalayer's internal ones).
    pub tables: Option<Vec<String>>,
    /// The wall time one chunk should take (read, reconcile, write); chunk sizes
    /// follow it. Default: 250 ms.
    pub chunk_time: Duration,
    /// The most rows in one chunk. Default: 50,000.
    pub max_chunk_rows: usize,
    /// The most row bytes (canonical encoding) in one chunk, to stay under a target's
    /// transaction size limit (Redis: 32 MiB with index entries). Default: 4 MiB.
    pub max_chunk_bytes: usize,
    /// Source rows per checksum bucket of [`Migration::verify`]. Default: 10,000.
    pub bucket_rows: usize,
    /// Tables of at least this many rows whose primary key is one integer column are
    /// copied in [`Options::parallel_ranges`] key ranges at once. Default: 1,000,000.
    pub split_rows: u64,
    /// Key ranges a large table is copied in, at once (1: never split). Default: 4.
    pub parallel_ranges: usize,
    /// Most distinct rows per table a migration remembers as changed during the copy
    /// and follow, for the cut-over to compare them one by one; past it the cut-over
    /// compares that table whole by checksums, under the fence (memory stays bounded,
    /// the write pause grows with the table). Default: 1,000,000.
    pub max_touched_keys: usize,
    /// Move the transactional outbox with the data (when `tables` is `None`): its
    /// topics, sequences, events (pending and scheduled) and consumer-group
    /// checkpoints, so that consumers started on the target go on from their
    /// checkpoints and every event emitted on the source is delivered once the
    /// target takes over. Live workers' heartbeats stay behind. Default: true.
    pub outbox: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tables: None,
            chunk_time: Duration::from_millis(250),
            max_chunk_rows: 50_000,
            max_chunk_bytes: 4 << 20,
            bucket_rows: 10_000,
            split_rows: 1_000_000,
            parallel_ranges: 4,
            max_touched_keys: 1_000_000,
            outbox: true,
        }
    }
}

/// A progress report, after every committed chunk.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// The table being copied.
    pub table: &'a str,
    /// Rows copied so far (earlier runs included).
    pub rows: u64,
    /// Bytes copied by this run (canonical encoding).
    pub bytes: u64,
    /// The table's copy is finished.
    pub done: bool,
    /// Rows the source table held when this run began copying it (a count).
    pub total: u64,
    /// Rows per second copied by this run (rows written / wall time since it began
    /// the table).
    pub rate: f64,
    /// The time left at `rate` for the rows still to copy of `total` (`None` before
    /// a rate is known).
    pub eta: Option<std::time::Duration>,
    /// How far the target trails the source once this chunk is committed: the time
    /// since the chunk's upper watermark (the feed's end it applied) was read.
    pub lag: std::time::Duration,
}

/// A callback receiving [`Progress`] reports.
pub type ProgressFn = Arc<dyn Fn(&Progress<'_>) + Send + Sync>;

/// What [`Migration::copy`] did, per table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CopyReport {
    /// The tables, in copy order.
    pub tables: Vec<TableCopy>,
}

/// What [`Migration::follow_until_caught_up`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FollowReport {
    /// Source changes replayed on the target.
    pub changes: u64,
}

/// The stored progress of one table ([`Migration::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableStatus {
    /// Rows copied.
    pub rows: u64,
    /// The copy reached the end of the table (changes may still be followed).
    pub copied: bool,
    /// The source change-feed position applied.
    pub position: u64,
    /// Key ranges the copy runs in at once: 1, or [`Options::parallel_ranges`] for a
    /// table split by its integer primary key (while the copy is under way).
    pub ranges: usize,
}

/// How [`Migration::cutover`] fences the source.
#[derive(Clone, Copy, Debug)]
pub struct CutoverOptions {
    /// How long to wait for the source's writes in flight to finish. Default: 5 s.
    pub drain: Duration,
    /// How long a write to the fenced source waits before it fails with `Timeout`.
    /// Default: 10 s.
    pub writer_wait: Duration,
}

impl Default for CutoverOptions {
    fn default() -> Self {
        CutoverOptions {
            drain: Duration::from_secs(5),
            writer_wait: Duration::from_secs(10),
        }
    }
}

/// A finished cut-over: the source is fenced while this lives.
#[derive(Debug)]
pub struct Cutover {
    /// How long writes to the source were held before this was returned (fence up to
    /// verified).
    pub pause: Duration,
    /// Changes replayed after the fence went up.
    pub drained: u64,
    /// Rows compared on both sides before the fence: every row a change touched since
    /// this `Migration` was made.
    pub checked_before: u64,
    /// Rows compared after the drain, under the fence: those touched again since the
    /// first comparison, or different then, and every row of a table with more touched
    /// rows than [`Options::max_touched_keys`] (compared whole).
    pub verified_rows: u64,
    /// The source's write fence: [`WriteFence::seal`](datalayer_core::WriteFence::seal)
    /// it once the application writes to the target (writes still waiting on it then
    /// fail instead of slipping into the source); dropping it lets writes into the
    /// source again (a cut-over rolled back).
    pub fence: datalayer_core::WriteFence,
}

/// The rows of one table changes touched during a migration.
#[derive(Debug)]
enum Touched {
    /// Their primary keys (order-preserving encoding → key values).
    Keys(BTreeMap<Vec<u8>, Row>),
    /// More than [`Options::max_touched_keys`]: the cut-over compares the whole table.
    All,
}

/// A migration from one engine to another (see the crate docs).
pub struct Migration {
    source: Db,
    target: Db,
    opts: Options,
    /// The source has a change feed (`Capability::change_feed`): the copy reconciles
    /// with it and [`Migration::follow_until_caught_up`] replays it.
    feed: bool,
    progress: Option<ProgressFn>,
    /// Per table, the primary keys of the rows changes touched since this value was
    /// made: what a cut-over verifies last.
    touched: Mutex<HashMap<String, Touched>>,
}

impl std::fmt::Debug for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migration")
            .field("source", &self.source.engine().name())
            .field("target", &self.target.engine().name())
            .field("opts", &self.opts)
            .finish()
    }
}

impl Migration {
    /// A migration from `source` to `target` with default [`Options`].
    pub fn new(source: &Db, target: &Db) -> Self {
        Migration {
            feed: source.engine().capability().change_feed,
            source: source.clone(),
            target: target.clone(),
            opts: Options::default(),
            progress: None,
            touched: Mutex::default(),
        }
    }

    /// Replaces the options.
    pub fn options(mut self, opts: Options) -> Self {
        self.opts = opts;
        self
    }

    /// Migrates only these tables.
    pub fn tables<S: Into<String>>(mut self, tables: impl IntoIterator<Item = S>) -> Self {
        self.opts.tables = Some(tables.into_iter().map(Into::into).collect());
        self
    }

    /// The database rows are read from.
    pub fn source(&self) -> &Db {
        &self.source
    }

    /// The database rows are written to.
    pub fn target(&self) -> &Db {
        &self.target
    }

    /// Calls `f` after every committed chunk.
    pub fn on_progress(mut self, f: impl Fn(&Progress<'_>) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Notes the keys `changes` touched (see `touched`).
    fn touch(&self, table: &TableSchema, changes: &[datalayer_core::Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let keys = changes
            .iter()
            .map(|c| feed::key(table, c))
            .collect::<Result<Vec<_>>>()?;
        self.remember(&table.name, keys);
        Ok(())
    }

    /// Adds `keys` to the touched rows of `table`, switching to the whole table past
    /// [`Options::max_touched_keys`].
    fn remember(&self, table: &str, keys: Vec<Row>) {
        let mut g = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        let t = g
            .entry(table.to_owned())
            .or_insert_with(|| Touched::Keys(BTreeMap::new()));
        if let Touched::Keys(set) = t {
            for k in keys {
                set.insert(copy::pk_bytes(&k), k);
            }
            if set.len() > self.opts.max_touched_keys {
                *t = Touched::All;
            }
        }
    }

    /// Takes the keys of `table` that changes touched (see `touched`); `None` when
    /// there were too many to keep: the whole table.
    fn touched_keys(&self, table: &str) -> Option<Vec<Row>> {
        let mut g = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        match g.remove(table) {
            None => Some(Vec::new()),
            Some(Touched::Keys(m)) => Some(m.into_values().collect()),
            Some(Touched::All) => None,
        }
    }

    fn report(&self, p: Progress<'_>) {
        if let Some(f) = &self.progress {
            f(&p);
        }
    }

    /// The source tables this migration moves, from the source's catalog, by name.
    ///
    /// # Errors
    /// `NotFound` for a requested table the source does not have; the source's
    /// catalog errors.
    pub async fn source_tables(&self) -> Result<Vec<TableSchema>> {
        let mut all = self.source.engine().catalog().await?;
        let outbox = self.opts.outbox && self.opts.tables.is_none();
        all.retain(|t| {
            !t.name.starts_with("_dl_")
                || (outbox
                    && internal::is_internal_table(&t.name)
                    && t.name != internal::OUTBOX_MEMBERS
                    && t.name != internal::MIGRATION)
        });
        all.sort_by(|a, b| a.name.cmp(&b.name));
        match &self.opts.tables {
            None => Ok(all),
            Some(want) => want
                .iter()
                .map(|name| {
                    all.iter()
                        .find(|t| &t.name == name)
                        .cloned()
                        .ok_or_else(|| Error::not_found(format!("the source has no table {name}")))
                })
                .collect(),
        }
    }

    /// Where the migration of each source table stands on the target: `None` for a
    /// table no run has started (or a target without the progress table).
    ///
    /// # Errors
    /// The source's catalog errors; the target's read errors.
    pub async fn status(&self) -> Result<Vec<(String, Option<TableStatus>)>> {
        let has_progress = self
            .target
            .engine()
            .catalog()
            .await?
            .iter()
            .any(|t| t.name == progress::SCHEMA.name);
        let mut out = Vec::new();
        for t in self.source_tables().await? {
            let p = if has_progress {
                progress::load(&self.target, &t.name).await?
            } else {
                None
            };
            let st = match p {
                Some(p) => Some(TableStatus {
                    rows: p.rows,
                    copied: p.copied,
                    position: p.position,
                    ranges: 1,
                }),
                // A split copy under way keeps its progress per span.
                None if has_progress => split::status(self, &t.name).await?,
                None => None,
            };
            out.push((t.name, st));
        }
        Ok(out)
    }

    /// Creates the tables on the target (and the progress table), refusing a target
    /// table stored with another schema; returns the tables.
    async fn prepare(&self) -> Result<Vec<TableSchema>> {
        let tables = self.source_tables().await?;
        let mut refs: Vec<&TableSchema> = tables.iter().collect();
        refs.push(&progress::SCHEMA);
        self.target.engine().register(&refs, &[]).await?;
        Ok(tables)
    }

    /// The progress of `table`, starting it (capturing the feed's end) if new.
    async fn progress_of(&self, table: &TableSchema) -> Result<TableProgress> {
        if let Some(p) = progress::load(&self.target, &table.name).await? {
            return Ok(p);
        }
        let position = if self.feed {
            self.source
                .enable_changes(&table.name)
                .await
                .map_err(|e| feed::no_feed(&self.source, e))?;
            feed::head(&self.source, &table.name, 0).await?
        } else {
            0
        };
        Ok(TableProgress::start(&table.name, position))
    }

    /// Copies every table (schema, then rows), resuming each where an earlier run
    /// stopped (see the crate docs).
    ///
    /// # Errors
    /// `InvalidInput` when a target table exists with another schema (nothing is
    /// written); `AlreadyExists` when the target table already holds rows being
    /// copied; `NotFound` for an unknown requested table; the read errors of the
    /// source and the write errors of the target. Whatever was committed before an
    /// error stays, and a new run continues from it.
    pub async fn copy(&self) -> Result<CopyReport> {
        let tables = self.prepare().await?;
        let mut report = CopyReport::default();
        for t in &tables {
            let mut p = self.progress_of(t).await?;
            report.tables.push(split::copy_any(self, t, &mut p).await?);
        }
        Ok(report)
    }

    /// Replays the source's changes on the target until, for every table, a read of
    /// the feed comes back empty (the lag is then under one read's time). A table that
    /// appeared in the source's catalog since the copy is copied first.
    ///
    /// # Errors
    /// `Unsupported` when the source has no change feed; the feed's read errors, the
    /// target's write errors, and for a new table those of [`Migration::copy`].
    pub async fn follow_until_caught_up(&self) -> Result<FollowReport> {
        if !self.feed {
            return Err(feed::no_feed(
                &self.source,
                Error::unsupported(self.source.engine().name(), "change data capture"),
            ));
        }
        let tables = self.source_tables().await?;
        let mut report = FollowReport::default();
        for t in &tables {
            let mut p = match progress::load(&self.target, &t.name).await? {
                Some(p) => p,
                None => {
                    // A table that appeared in the source's catalog since the copy
                    // began (the outbox's tables appear with their first use).
                    self.target
                        .engine()
                        .register(&[t, &progress::SCHEMA], &[])
                        .await?;
                    let mut p = self.progress_of(t).await?;
                    split::copy_any(self, t, &mut p).await?;
                    p
                }
            };
            report.changes += copy::catch_up(self, t, std::slice::from_mut(&mut p)).await?;
        }
        Ok(report)
    }

    /// Compares every table on both sides (see [`VerifyReport`]).
    ///
    /// # Errors
    /// `NotFound` for a requested table the source lacks; the read errors of either
    /// side.
    pub async fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for t in self.source_tables().await? {
            report.tables.push(
                verify::verify_table(&self.source, &self.target, &t, self.opts.bucket_rows).await?,
            );
        }
        Ok(report)
    }

    /// Copies the mismatched key ranges of `report` again: in each range, target rows
    /// the source lacks are deleted and the source's rows are written (upserted).
    /// Returns the rows written or deleted. Run it while the source takes no writes
    /// (or follow and verify again after it).
    ///
    /// # Errors
    /// The read errors of the source and the write errors of the target.
    pub async fn repair(&self, report: &VerifyReport) -> Result<u64> {
        let tables = self.source_tables().await?;
        let mut n = 0;
        for check in &report.tables {
            let Some(t) = tables.iter().find(|t| t.name == check.table) else {
                continue;
            };
            for range in &check.mismatched {
                n += self.repair_range(t, range).await?;
            }
        }
        Ok(n)
    }

    async fn repair_range(&self, t: &TableSchema, range: &KeyRange) -> Result<u64> {
        let upto = range.upto.as_ref().map(copy::pk_bytes);
        let source =
            verify::rows_in_range(&self.source, t, range.after.clone(), upto.as_deref()).await?;
        let target =
            verify::rows_in_range(&self.target, t, range.after.clone(), upto.as_deref()).await?;
        let keep: std::collections::HashSet<Vec<u8>> =
            source.iter().map(|r| copy::key_bytes(t, r)).collect();
        let gone: Vec<Row> = target
            .iter()
            .filter(|r| !keep.contains(&copy::key_bytes(t, r)))
            .map(|r| t.key_of(r))
            .collect();
        let n = (gone.len() + source.len()) as u64;
        let mut ops = Vec::new();
        if !gone.is_empty() {
            ops.push(Op::Delete {
                table: t,
                keys: gone,
            });
        }
        if !source.is_empty() {
            ops.push(Op::Insert {
                table: t,
                rows: source,
                mode: WriteMode::Upsert,
            });
        }
        if !ops.is_empty() {
            self.target.run_batch(ops).await?;
        }
        Ok(n)
    }

    /// The way back after a cut-over: a migration from the target to the source that
    /// follows what the application writes to the target, so that the move can be
    /// rolled back with nothing lost. Call it once the cut-over succeeded and before
    /// the application writes to the target: it turns on change capture for every
    /// migrated table of the target and records on the source (in its `_dl_migration`
    /// table) that each table is copied and in step up to the target's change-feed
    /// position now; target writes made before the call are not followed.
    ///
    /// The returned migration writes to the source through a handle of its own
    /// ([`Migration::target`]), which the cut-over's fence does not hold, also once
    /// sealed. Its [`Migration::follow_until_caught_up`] replays the target's changes
    /// into the source and [`Migration::verify`] compares the two; to roll back, its
    /// [`Migration::cutover`] fences the target and drains it into the source, and the
    /// application moves back through that handle (or a new one).
    ///
    /// # Errors
    /// `Unsupported` when the target has no change feed; the catalog and feed errors
    /// of the target and the write errors of the source.
    pub async fn reverse(&self) -> Result<Migration> {
        let tables = self.source_tables().await?;
        let back = Db::with_engine(self.source.engine().clone())
            .connect()
            .await?;
        back.engine().register(&[&progress::SCHEMA], &[]).await?;
        let mut ops = Vec::with_capacity(tables.len());
        for t in &tables {
            self.target
                .enable_changes(&t.name)
                .await
                .map_err(|e| feed::no_feed(&self.target, e))?;
            let rows = progress::load(&self.target, &t.name)
                .await?
                .map_or(0, |p| p.rows);
            ops.push(
                TableProgress {
                    rows,
                    copied: true,
                    ..TableProgress::start(&t.name, feed::head(&self.target, &t.name, 0).await?)
                }
                .upsert()?,
            );
        }
        back.run_batch(ops).await?;
        Ok(Migration {
            feed: self.target.engine().capability().change_feed,
            source: self.target.clone(),
            target: back,
            opts: Options {
                tables: Some(tables.into_iter().map(|t| t.name).collect()),
                ..self.opts.clone()
            },
            progress: None,
            touched: Mutex::default(),
        })
    }

    /// Cuts over from the source to the target: replays the feed until caught up,
    /// fences writes through the source `Db` ([`Db::fence_writes`]: writes in flight
    /// finish, new ones wait), replays the feed to its end, and compares every row
    /// that changes touched since this `Migration` was made on both sides. On success
    /// the source stays fenced while the returned [`Cutover`] lives: point the
    /// application at the target, then drop it (or keep the fence for good). On a
    /// mismatch the fence falls and the error names the rows. Seal the fence
    /// ([`Cutover::fence`]) once the application has moved.
    ///
    /// # Errors
    /// `Timeout` when the source's writes in flight do not finish within
    /// `opts.drain`; `Unsupported` without a source change feed; `Corrupted` naming
    /// the rows that differ after the drain; the read and write errors of both sides.
    pub async fn cutover(&self, opts: CutoverOptions) -> Result<Cutover> {
        self.follow_until_caught_up().await?;
        // Compare the touched rows before the fence, so that the pause only covers
        // rows touched again since, or still different (writes go on until the fence).
        let tables = self.source_tables().await?;
        let mut checked_before = 0u64;
        // Tables with more touched rows than remembered: compared whole, under the fence.
        let mut whole: Vec<&TableSchema> = Vec::new();
        for t in &tables {
            let Some(keys) = self.touched_keys(&t.name) else {
                whole.push(t);
                continue;
            };
            checked_before += keys.len() as u64;
            let bad = verify::differing_rows(&self.source, &self.target, t, keys).await?;
            self.remember(&t.name, bad);
        }
        let fenced_at = Instant::now();
        let fence = self
            .source
            .fence_writes(opts.drain, opts.writer_wait)
            .await?;
        let drained = self.follow_until_caught_up().await?;
        let mut checked = 0u64;
        for t in &tables {
            let bad = match self.touched_keys(&t.name) {
                Some(keys) if !whole.iter().any(|w| w.name == t.name) => {
                    checked += keys.len() as u64;
                    let bad = verify::differing_rows(&self.source, &self.target, t, keys).await?;
                    (!bad.is_empty()).then(|| {
                        format!(
                            "{} row(s) (first keys: {:?})",
                            bad.len(),
                            &bad[..bad.len().min(5)]
                        )
                    })
                }
                _ => {
                    let check =
                        verify::verify_table(&self.source, &self.target, t, self.opts.bucket_rows)
                            .await?;
                    checked += check.source_rows;
                    (!check.is_equal()).then(|| {
                        format!(
                            "{} vs {} rows, key ranges {:?}",
                            check.source_rows, check.target_rows, check.mismatched
                        )
                    })
                }
            };
            if let Some(what) = bad {
                drop(fence);
                return Err(Error::corrupted(format!(
                    "cut-over: table {} differs after the drain: {what}; the source's writes \
                     are open again",
                    t.name
                )));
            }
        }
        Ok(Cutover {
            pause: fenced_at.elapsed(),
            drained: drained.changes,
            checked_before,
            verified_rows: checked,
            fence,
        })
    }
}
