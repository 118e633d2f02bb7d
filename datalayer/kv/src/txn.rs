//! A KV-family transaction: the store's snapshot plus a write overlay, and every data
//! operation (queries, repository ops, index maintenance) on top of it.

use super::codec::{
    self, TableKeys, decode_row, encode_row, encode_values, index_key, index_prefix, prefix_end,
    row_prefix,
};
use super::fence::Admitted;
use super::{Bytes, EntryLayout, KvCapability, KvTxn, WriteSet};
use datalayer_core::ChangeKind;
use datalayer_core::capability::Capability;
use datalayer_core::engine::{Op, Output, ScanRequest, WriteMode};
use datalayer_core::error::{Error, Result};
use datalayer_core::eval::{compare, eval, matches};
use datalayer_core::plan::{Access, Plan, PlanBound};
use datalayer_core::query::{Expr, Limit, QueryDef, QueryKind};
use datalayer_core::schema::TableSchema;
use datalayer_core::value::{Row, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

type Overlay = BTreeMap<Bytes, Option<Bytes>>;
type KeyRange = (Bound<Bytes>, Bound<Bytes>);

/// Largest number of entries read per scan round trip.
const MAX_CHUNK: usize = 4096;
/// Entries read by the first scan of a walk that takes every row of its range.
const FIRST_CHUNK: usize = 1024;

/// What a [`KvTx`] needs to know about its engine and store.
#[derive(Clone, Copy)]
pub(crate) struct Caps {
    /// The store's name, for messages.
    pub(crate) store: &'static str,
    /// The engine's capability (key and value limits).
    pub(crate) engine: Capability,
    /// The store's capability (locks, snapshot reads, write-set limit).
    pub(crate) kv: KvCapability,
    /// The lowest change position of this open epoch (`FORMAT.md`).
    pub(crate) position_base: u64,
    /// Read keys ahead in batches (server stores, where each read is a round trip);
    /// off for stores with synchronous snapshots, whose reads cost no round trip.
    pub(crate) read_ahead: bool,
}

pub(crate) struct KvTx {
    txn: Box<dyn KvTxn>,
    writes: Overlay,
    undo: Option<Vec<(Bytes, Option<Option<Bytes>>)>>,
    /// Keep an undo log per write op (explicit transactions only: an autocommit op that
    /// fails discards its whole store transaction anyway).
    undo_enabled: bool,
    savepoints: Vec<(String, Overlay)>,
    read_only: bool,
    cap: Capability,
    kv: KvCapability,
    store: &'static str,
    /// Keys locked in the store ([`KvCapability::pessimistic_locks`]), so each is
    /// locked once.
    locked: BTreeSet<Bytes>,
    /// The lowest change position of the engine's open epoch.
    position_base: u64,
    /// Change-capture state of each table written in this transaction (read once per
    /// transaction from the table's `'f'` key).
    capture: Vec<Captured>,
    /// Values a multi-row write read ahead from the store in one `batch_get` (row keys,
    /// unique entries), so that its per-row checks do not each go to the store. Read
    /// after the overlay: a key this transaction wrote is never answered from here.
    /// Sound on every store: the store recorded (or snapshotted) these reads, so
    /// answering a later `get` of the key with them is what re-reading would give or
    /// the commit would refuse.
    prefetched: HashMap<Bytes, Option<Bytes>>,
    /// [`Caps::read_ahead`].
    read_ahead: bool,
    /// Set by [`KvEngine`](crate::KvEngine) for the first attempt of autocommit work:
    /// an insert assumes its keys free ([`KvTxn::assume_absent`]) instead of reading
    /// them, and change capture off for tables not in [`KvTx::captured_hint`].
    assume: bool,
    /// The engine's tables seen with change capture on, so that an assuming
    /// transaction reads their flag rather than assume it off (a hint: a wrong one
    /// costs a re-run, never correctness). Updated by every transaction that has it.
    captured_hint: Option<CapturedHint>,
    /// What the schema fence admitted this transaction's writes with: leases held
    /// until it ends, and the index builds its rows maintain ([`crate::fence`]).
    pub(crate) admitted: Admitted,
}

/// Tables seen with change capture on (see [`KvTx::captured_hint`]).
pub(crate) type CapturedHint = std::sync::Arc<parking_lot::RwLock<BTreeSet<String>>>;

/// One stored change record: its key, position and encoded bytes.
pub(crate) struct ChangeRecord {
    key: Bytes,
    pub(crate) position: u64,
    pub(crate) bytes: Bytes,
}

/// A table's change-capture state: `keys` is `None` when capture is off, else the
/// table's sequence key `'s' <table>` and its record prefix `'h' <table>`, encoded once
/// per transaction rather than once per row.
struct Captured {
    table: String,
    keys: Option<(Bytes, Bytes)>,
}

/// Whether the range's start lies after its end (empty; `BTreeMap::range` panics on it).
fn inverted(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => s > e,
        _ => false,
    }
}

fn as_slice(b: &Bound<Bytes>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl KvTx {
    pub(crate) fn new(
        txn: Box<dyn KvTxn>,
        read_only: bool,
        caps: Caps,
        undo_enabled: bool,
    ) -> Self {
        KvTx {
            txn,
            writes: Overlay::new(),
            undo: None,
            undo_enabled,
            savepoints: Vec::new(),
            read_only,
            cap: caps.engine,
            kv: caps.kv,
            store: caps.store,
            locked: BTreeSet::new(),
            prefetched: HashMap::new(),
            read_ahead: caps.read_ahead,
            assume: false,
            captured_hint: None,
            position_base: caps.position_base,
            capture: Vec::new(),
            admitted: Admitted::default(),
        }
    }

    /// Commits the write set. A transaction without writes is rolled back on a store
    /// with snapshot reads (there is nothing to apply or check); without snapshot reads
    /// it is committed with an empty write set, so the store validates what it read.
    ///
    /// # Errors
    /// `InvalidInput` for a write set over the store's `max_txn_bytes` (checked here,
    /// before the store sees it; the store transaction is rolled back); the store's
    /// commit errors (`Conflict`, ...).
    pub(crate) async fn commit(self) -> Result<()> {
        if self.writes.is_empty() && self.kv.snapshot_reads {
            return self.txn.rollback().await;
        }
        let writes: WriteSet = self.writes.into_iter().collect();
        if let Err(e) = self.kv.check_write_set(self.store, &writes) {
            let _ = self.txn.rollback().await;
            return Err(e);
        }
        self.txn.commit(writes).await
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        self.txn.rollback().await
    }

    // ---- savepoints -------------------------------------------------------------

    pub(crate) fn savepoint(&mut self, name: &str) {
        self.savepoints.push((name.to_owned(), self.writes.clone()));
    }

    fn savepoint_pos(&self, name: &str) -> Result<usize> {
        self.savepoints
            .iter()
            .rposition(|(n, _)| n == name)
            .ok_or_else(|| Error::not_found(format!("no savepoint named {name}")))
    }

    pub(crate) fn rollback_to(&mut self, name: &str) -> Result<()> {
        let i = self.savepoint_pos(name)?;
        self.writes = self.savepoints[i].1.clone();
        self.savepoints.truncate(i + 1);
        Ok(())
    }

    pub(crate) fn release(&mut self, name: &str) -> Result<()> {
        let i = self.savepoint_pos(name)?;
        self.savepoints.truncate(i);
        Ok(())
    }

    // ---- key-value access through the overlay -------------------------------------

    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.prefetched.get(key) {
            return Ok(v.clone());
        }
        self.txn.get(key).await
    }

    /// Gives this (autocommit) transaction the engine's hint, and lets it assume
    /// instead of read when `assume`; see [`KvTx::assume`].
    pub(crate) fn set_assume(&mut self, hint: CapturedHint, assume: bool) {
        self.captured_hint = Some(hint);
        self.assume = assume;
    }

    /// Assumes `key` absent in the store ([`KvTxn::assume_absent`]) unless this
    /// transaction wrote or read it; true when the store recorded the assumption.
    fn assume_absent(&mut self, key: &[u8]) -> bool {
        if self.writes.contains_key(key) || self.prefetched.contains_key(key) {
            return false;
        }
        if self.txn.assume_absent(key) {
            self.prefetched.insert(key.to_vec(), None);
            return true;
        }
        false
    }

    /// Reads `keys` ahead in one `batch_get` (those neither written by this
    /// transaction nor read ahead already) into [`KvTx::prefetched`], for a write op:
    /// its row keys, unique entries and change-capture keys in one round trip instead
    /// of one each. Nothing to do for fewer than two keys.
    async fn prefetch(&mut self, keys: Vec<Bytes>) -> Result<()> {
        let missing: Vec<Bytes> = keys
            .into_iter()
            .filter(|k| !self.writes.contains_key(k) && !self.prefetched.contains_key(k))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if missing.len() < 2 {
            return Ok(());
        }
        let vals = self.txn.batch_get(&missing).await?;
        self.prefetched.extend(missing.into_iter().zip(vals));
        Ok(())
    }

    /// Adds the keys change capture reads for `table` (whether it is on, and the last
    /// position) unless this transaction knows them already.
    /// On an assuming transaction, a table not known to capture changes is assumed
    /// not to (its flag key absent), and nothing is added.
    fn capture_keys(&mut self, table: &TableSchema, ahead: &mut Vec<Bytes>) {
        if self.capture.iter().any(|c| c.table == table.name) {
            return;
        }
        let flag = codec::table_prefix(codec::CAPTURE, &table.name);
        let off = self.assume
            && self
                .captured_hint
                .as_ref()
                .is_some_and(|h| !h.read().contains(&table.name));
        if off && self.assume_absent(&flag) {
            return;
        }
        ahead.push(flag);
        ahead.push(codec::table_prefix(codec::CHANGE_SEQ, &table.name));
    }

    /// The row keys of `rows` and the unique entries they would take.
    fn keys_to_prefetch(table: &TableSchema, keys: &TableKeys, rows: &[Row]) -> Result<Vec<Bytes>> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key = keys.row_key(table, row);
            let pk = &key[keys.row.len()..];
            for (ix, prefix) in table.indexes.iter().zip(&keys.indexes) {
                if ix.unique && matches(ix.when.as_ref(), row, &[])? {
                    out.push(index_key(prefix, table, ix, row, pk));
                }
            }
            out.push(key);
        }
        Ok(out)
    }

    /// What a write op on `table` reads key by key, read ahead in one round trip:
    /// `ahead` (its row keys and unique entries) and the change-capture keys. With
    /// `assume_free` (an insert) on an assuming transaction, the keys are assumed
    /// absent instead where the store can.
    async fn read_ahead_write(
        &mut self,
        table: &TableSchema,
        mut ahead: Vec<Bytes>,
        assume_free: bool,
    ) -> Result<()> {
        if assume_free && self.assume {
            ahead.retain(|k| !self.assume_absent(k));
        }
        self.capture_keys(table, &mut ahead);
        self.prefetch(ahead).await
    }

    async fn batch_get(&mut self, keys: Vec<Bytes>) -> Result<Vec<Option<Bytes>>> {
        let mut out: Vec<Option<Option<Bytes>>> =
            keys.iter().map(|k| self.writes.get(k).cloned()).collect();
        let missing: Vec<Bytes> = keys
            .iter()
            .zip(&out)
            .filter(|(_, o)| o.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if !missing.is_empty() {
            let mut fetched = self.txn.batch_get(&missing).await?.into_iter();
            for slot in out.iter_mut().filter(|o| o.is_none()) {
                *slot = Some(fetched.next().flatten());
            }
        }
        Ok(out.into_iter().map(Option::flatten).collect())
    }

    async fn scan(
        &mut self,
        range: &KeyRange,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let (start, end) = (as_slice(&range.0), as_slice(&range.1));
        if inverted(start, end) || limit == 0 {
            return Ok(Vec::new());
        }
        let over: Vec<(Bytes, Option<Bytes>)> = self
            .writes
            .range::<[u8], _>((start, end))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if over.is_empty() {
            return self.txn.scan(start, end, limit, reverse).await;
        }
        let dels = over.iter().filter(|(_, v)| v.is_none()).count();
        let base = self
            .txn
            .scan(start, end, limit.saturating_add(dels), reverse)
            .await?;
        let mut over = over;
        if reverse {
            over.reverse();
        }
        // Merge two sorted lists; the overlay wins on equal keys.
        let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
        let mut out = Vec::with_capacity(limit.min(base.len() + over.len()));
        let (mut bi, mut oi) = (base.into_iter().peekable(), over.into_iter().peekable());
        while out.len() < limit {
            let take_overlay = match (bi.peek(), oi.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((bk, _)), Some((ok, _))) => {
                    if bk == ok {
                        bi.next();
                        true
                    } else {
                        !before(bk, ok)
                    }
                }
            };
            if take_overlay {
                let (k, v) = oi.next().expect("peeked");
                if let Some(v) = v {
                    out.push((k, v));
                }
            } else {
                out.push(bi.next().expect("peeked"));
            }
        }
        Ok(out)
    }

    /// Locks `keys` in the store before they are written, where the store declares
    /// [`KvCapability::pessimistic_locks`] (a no-op otherwise); keys this transaction
    /// has locked already are not sent again. Nothing is copied on other stores.
    async fn lock(&mut self, keys: &[&[u8]]) -> Result<()> {
        if !self.kv.pessimistic_locks {
            return Ok(());
        }
        let mut fresh: Vec<Bytes> = keys
            .iter()
            .filter(|k| !self.locked.contains(**k))
            .map(|k| k.to_vec())
            .collect();
        fresh.sort();
        fresh.dedup();
        if fresh.is_empty() {
            return Ok(());
        }
        self.txn.lock(&fresh).await?;
        self.locked.extend(fresh);
        Ok(())
    }

    fn set(&mut self, key: Bytes, value: Option<Bytes>) {
        match &mut self.undo {
            Some(u) => {
                let prev = self.writes.insert(key.clone(), value);
                u.push((key, prev));
            }
            None => {
                self.writes.insert(key, value);
            }
        }
    }

    // ---- op dispatch ------------------------------------------------------------------

    /// Runs one op. A failing write op leaves no trace in the transaction (undo log), so
    /// the transaction stays usable.
    /// Runs `ops` in order (each with its plan, for queries), stopping at the first
    /// error: a batch. The row keys that its primary-key point queries and `Get`s read
    /// are read ahead in one `batch_get` first, so that a batch of point reads is one
    /// round trip on a server store.
    pub(crate) async fn exec_all(
        &mut self,
        ops: Vec<(Op<'_>, Option<std::sync::Arc<Plan>>)>,
    ) -> Result<Vec<Output>> {
        if self.read_ahead && ops.len() > 1 {
            let mut ahead = Vec::new();
            for (op, plan) in &ops {
                match (op, plan) {
                    (Op::Query { query, params }, Some(plan)) if op.is_read() => {
                        if let Access::PkPoint(exprs) = &plan.access
                            && let Some(key) = pk_point_key(query.table, exprs, params)?
                        {
                            ahead.push(key);
                        }
                    }
                    (Op::Get { table, keys }, _) => {
                        let prefix = row_prefix(table);
                        ahead.extend(keys.iter().map(|k| encode_key(&prefix, k)));
                    }
                    _ => {}
                }
            }
            self.prefetch(ahead).await?;
        }
        let mut out = Vec::with_capacity(ops.len());
        for (op, plan) in ops {
            out.push(self.exec(op, plan.as_deref()).await?);
        }
        Ok(out)
    }

    pub(crate) async fn exec(&mut self, op: Op<'_>, plan: Option<&Plan>) -> Result<Output> {
        if !op.is_read() {
            if self.read_only {
                return Err(Error::invalid_input("write in a read-only transaction"));
            }
            if !self.undo_enabled {
                return self.exec_inner(op, plan).await;
            }
            self.undo = Some(Vec::new());
            let r = self.exec_inner(op, plan).await;
            let undo = self.undo.take().unwrap_or_default();
            if r.is_err() {
                for (k, prev) in undo.into_iter().rev() {
                    match prev {
                        Some(v) => self.writes.insert(k, v),
                        None => self.writes.remove(&k),
                    };
                }
            }
            return r;
        }
        self.exec_inner(op, plan).await
    }

    async fn exec_inner(&mut self, op: Op<'_>, plan: Option<&Plan>) -> Result<Output> {
        match op {
            Op::Query { query, params } => {
                let plan = plan.ok_or_else(|| Error::engine("plan", "query without a plan"))?;
                self.query(query, params, plan).await
            }
            Op::Insert { table, rows, mode } => {
                let n = rows.len() as u64;
                let keys = TableKeys::new(table);
                if self.read_ahead {
                    let ahead = Self::keys_to_prefetch(table, &keys, &rows)?;
                    self.read_ahead_write(table, ahead, mode == WriteMode::Insert)
                        .await?;
                }
                for row in rows {
                    self.insert_row(table, &keys, row, mode).await?;
                }
                Ok(Output::Count(n))
            }
            Op::Update { table, rows } => {
                let mut n = 0;
                let keys = TableKeys::new(table);
                if self.read_ahead {
                    let ahead = Self::keys_to_prefetch(table, &keys, &rows)?;
                    self.read_ahead_write(table, ahead, false).await?;
                }
                for mut row in rows {
                    let key = keys.row_key(table, &row);
                    if let Some(old) = self.get(&key).await? {
                        let old = decode_row(table, &old)?;
                        if let Some(v) = table.version {
                            // Optimistic locking: only over the version the caller read.
                            let seen = table.version_of(&row);
                            if seen.is_none() || seen != table.version_of(&old) {
                                continue;
                            }
                            row[v] = Value::I64(seen.unwrap_or_default().saturating_add(1));
                        }
                        self.write_row(table, &keys, &key, Some(&old), Some(&row))
                            .await?;
                        n += 1;
                    }
                }
                Ok(Output::Count(n))
            }
            Op::Delete { table, keys } => {
                let mut n = 0;
                let tk = TableKeys::new(table);
                if self.read_ahead {
                    let ahead = keys.iter().map(|k| encode_key(&tk.row, k)).collect();
                    self.read_ahead_write(table, ahead, false).await?;
                }
                for k in keys {
                    let key = encode_key(&tk.row, &k);
                    if let Some(old) = self.get(&key).await? {
                        let old = decode_row(table, &old)?;
                        self.write_row(table, &tk, &key, Some(&old), None).await?;
                        n += 1;
                    }
                }
                Ok(Output::Count(n))
            }
            Op::Get { table, keys } => {
                let prefix = row_prefix(table);
                let keys = keys.into_iter().map(|k| encode_key(&prefix, &k)).collect();
                let vals = self.batch_get(keys).await?;
                let rows = vals
                    .into_iter()
                    .map(|v| v.map(|b| decode_row(table, &b)).transpose())
                    .collect::<Result<_>>()?;
                Ok(Output::Optional(rows))
            }
            Op::Scan(req) => self.scan_request(req).await.map(Output::Rows),
            Op::Count { table } => {
                let p = row_prefix(table);
                let range = (Bound::Included(p.clone()), end_of(&p));
                self.count_range(&range).await.map(Output::Count)
            }
            other => Err(Error::unsupported(
                "key-value",
                format!("the {} operation", other.name()),
            )),
        }
    }

    /// Counts the entries in `range` without decoding them.
    async fn count_range(&mut self, range: &KeyRange) -> Result<u64> {
        let (start, end) = (as_slice(&range.0), as_slice(&range.1));
        if inverted(start, end) {
            return Ok(0);
        }
        if self.writes.range::<[u8], _>((start, end)).next().is_none() {
            return self.txn.count(start, end).await;
        }
        let mut range = range.clone();
        let mut n = 0u64;
        loop {
            let entries = self.scan(&range, MAX_CHUNK, false).await?;
            n += entries.len() as u64;
            match entries.last() {
                Some((k, _)) if entries.len() == MAX_CHUNK => range.0 = Bound::Excluded(k.clone()),
                _ => return Ok(n),
            }
        }
    }

    // ---- writes -------------------------------------------------------------------------

    async fn insert_row(
        &mut self,
        table: &TableSchema,
        keys: &TableKeys,
        row: Row,
        mode: WriteMode,
    ) -> Result<()> {
        let key = keys.row_key(table, &row);
        let old = match self.get(&key).await? {
            Some(_) if mode == WriteMode::Insert => {
                return Err(Error::already_exists(format!(
                    "{}: a row with primary key {:?} exists",
                    table.name,
                    table.key_of(&row)
                )));
            }
            Some(b) => Some(decode_row(table, &b)?),
            None => None,
        };
        self.write_row(table, keys, &key, old.as_ref(), Some(&row))
            .await
    }

    /// Replaces `old` by `new` (either may be absent) at row key `key` and maintains
    /// every index.
    async fn write_row(
        &mut self,
        table: &TableSchema,
        keys: &TableKeys,
        key: &[u8],
        old: Option<&Row>,
        new: Option<&Row>,
    ) -> Result<()> {
        let pk = &key[keys.row.len()..];
        if let Some(max) = self.cap.max_key_bytes
            && key.len() > max
        {
            return Err(Error::invalid_input(format!(
                "{}: key of {} bytes exceeds the engine's limit of {max} bytes",
                table.name,
                key.len()
            )));
        }
        let bytes = new.map(encode_row);
        if let Some(b) = &bytes
            && let Some(max) = self.cap.max_value_bytes
            && b.len() > max
        {
            return Err(Error::invalid_input(format!(
                "{}: row of {} bytes exceeds the engine's limit of {max} bytes",
                table.name,
                b.len()
            )));
        }
        // The index entries that change: (index, its values in the new row, old
        // entry, new entry), over the declaration's indexes and those being built
        // (computed on the rows in the declared layout; see `crate::fence`).
        let builds: Vec<_> = (self.admitted.builds.iter())
            .filter(|b| b.plan.from.name == table.name)
            .cloned()
            .collect();
        let declared: Vec<(Option<Row>, Option<Row>)> = builds
            .iter()
            .map(|b| (old.map(|r| b.declared(r)), new.map(|r| b.declared(r))))
            .collect();
        let mut changed = Vec::new();
        let own = table
            .indexes
            .iter()
            .zip(&keys.indexes)
            .map(|(ix, p)| (ix, p.as_slice(), table, old, new));
        let built = builds.iter().zip(&declared).flat_map(|(b, (o, n))| {
            b.extra(table)
                .map(move |(ix, p)| (ix, p, &b.plan.to, o.as_ref(), n.as_ref()))
        });
        for (ix, prefix, t, old, new) in own.chain(built) {
            let entry = |r: Option<&Row>| -> Result<Option<Bytes>> {
                match r {
                    Some(r) if matches(ix.when.as_ref(), r, &[])? => {
                        Ok(Some(index_key(prefix, t, ix, r, pk)))
                    }
                    _ => Ok(None),
                }
            };
            let (before, after) = (entry(old)?, entry(new)?);
            if before != after {
                changed.push((ix, new, before, after));
            }
        }
        // Pessimistic stores: lock the row key and every index entry written (the new
        // unique entries before they are checked) in one call.
        if self.kv.pessimistic_locks {
            let entries = changed.iter().flat_map(|(_, _, b, a)| b.iter().chain(a));
            let all: Vec<&[u8]> = std::iter::once(key)
                .chain(entries.map(Vec::as_slice))
                .collect();
            self.lock(&all).await?;
        }
        for (ix, new, before, after) in changed {
            if let Some(k) = before {
                self.set(k, None);
            }
            if let Some(k) = after {
                if ix.unique
                    && let Some(owner) = self.get(&k).await?
                    && owner != pk
                {
                    let vals: Row = ix
                        .columns
                        .iter()
                        .map(|&c| new.expect("new row")[c].clone())
                        .collect();
                    return Err(Error::already_exists(format!(
                        "{}: unique index {} already has {:?}",
                        table.name, ix.name, vals
                    )));
                }
                self.set(k, Some(pk.to_vec()));
            }
        }
        self.capture(table, old, bytes.as_deref()).await?;
        self.set(key.to_vec(), bytes);
        Ok(())
    }

    // ---- reads ----------------------------------------------------------------------------

    /// Visits rows of `table` in `range` (over the primary key when `index` is `None`,
    /// else over the index's entries) in key order; `visit` returns false to stop.
    /// `wanted` is how many rows the caller expects to take at most (a limit), which
    /// sizes the first chunk; `None` reads a large first chunk (the caller takes all).
    async fn walk(
        &mut self,
        table: &TableSchema,
        index: Option<usize>,
        mut range: KeyRange,
        reverse: bool,
        wanted: Option<usize>,
        mut visit: impl FnMut(Row) -> Result<bool>,
    ) -> Result<()> {
        // One chunk per round trip on a server store: a caller that takes everything
        // gets up to FIRST_CHUNK rows from the first one; a limit asks for no more than
        // it needs (a filter may still reject rows: later chunks grow).
        let mut chunk = wanted.map_or(FIRST_CHUNK, |w| w.clamp(1, MAX_CHUNK));
        let rp = row_prefix(table);
        loop {
            let (n, last, rows): (usize, Option<Bytes>, Vec<Row>) = match index {
                None => {
                    let entries = self.scan(&range, chunk, reverse).await?;
                    let rows = entries
                        .iter()
                        .map(|(_, v)| decode_row(table, v))
                        .collect::<Result<_>>()?;
                    (entries.len(), entries.last().map(|(k, _)| k.clone()), rows)
                }
                Some(i) => {
                    let layout = EntryLayout::of(table, &table.indexes[i]);
                    let joined = self
                        .scan_rows(&range, chunk, reverse, &rp, layout.as_ref())
                        .await?;
                    let last = joined.last().map(|(k, _, _)| k.clone());
                    let n = joined.len();
                    let rows = joined
                        .into_iter()
                        .map(|(_, _, row)| {
                            row.ok_or_else(|| self.missing_row(table))
                                .and_then(|b| decode_row(table, &b))
                        })
                        .collect::<Result<_>>()?;
                    (n, last, rows)
                }
            };
            let Some(last) = last else {
                return Ok(());
            };
            for r in rows {
                if !visit(r)? {
                    return Ok(());
                }
            }
            if n < chunk {
                return Ok(());
            }
            if reverse {
                range.1 = Bound::Excluded(last);
            } else {
                range.0 = Bound::Excluded(last);
            }
            chunk = (chunk * 4).min(MAX_CHUNK);
        }
    }

    /// Index entries in `range` with the rows they point at (`row_prefix ‖ entry
    /// value`), through the overlay: straight from the store in one call
    /// ([`KvTxn::scan_with_targets`]) when this transaction has written nothing in
    /// the range or the table, else a scan and a batch get through the overlay.
    async fn scan_rows(
        &mut self,
        range: &KeyRange,
        limit: usize,
        reverse: bool,
        row_prefix: &[u8],
        layout: Option<&EntryLayout>,
    ) -> Result<Vec<(Bytes, Bytes, Option<Bytes>)>> {
        let (start, end) = (as_slice(&range.0), as_slice(&range.1));
        if inverted(start, end) || limit == 0 {
            return Ok(Vec::new());
        }
        let rows = (Bound::Included(row_prefix.to_vec()), end_of(row_prefix));
        let rows_written = self.writes.range(rows).next().is_some();
        if !rows_written && self.writes.range::<[u8], _>((start, end)).next().is_none() {
            return self
                .txn
                .scan_with_targets(start, end, limit, reverse, row_prefix, layout)
                .await;
        }
        let entries = self.scan(range, limit, reverse).await?;
        let keys = entries
            .iter()
            .map(|(_, pk)| [row_prefix, pk].concat())
            .collect();
        let rows = self.batch_get(keys).await?;
        Ok(entries
            .into_iter()
            .zip(rows)
            .map(|((k, v), r)| (k, v, r))
            .collect())
    }

    /// The error for an index entry whose row is missing. On a store with snapshot
    /// reads the entry and the row were read from one state, in which every index
    /// entry has its row: the data is `Corrupted`. Without snapshot reads the row was
    /// read from a later state than the entry — a concurrent transaction deleted it or
    /// moved it to another key — which the store cannot vouch for and would refuse at
    /// commit: a retryable `Conflict`.
    fn missing_row(&self, table: &TableSchema) -> Error {
        if self.kv.snapshot_reads {
            Error::corrupted(format!("{}: index entry without a row", table.name))
        } else {
            Error::conflict(format!(
                "{}: index entry without a row: the row changed after the index was read \
                 (the {} store has no snapshot reads); re-run the transaction",
                table.name, self.store
            ))
        }
    }

    /// A keyset scan; `req` is coerced by core ([`Op::checked`]).
    async fn scan_request(&mut self, req: ScanRequest<'_>) -> Result<Vec<Row>> {
        let t = req.table;
        let (prefix, lower, upper) = (&req.prefix, &req.lower, &req.upper);
        let mut range = key_range(t, req.index, prefix, lower.as_ref(), upper.as_ref());
        if let Some(after) = req.after {
            // The cursor only ever narrows the range: a cursor outside the bounds (made by
            // hand, or from another scan) cannot widen it.
            let k = position_key(t, req.index, after)?;
            if req.reverse {
                let tighter = match &range.1 {
                    Bound::Included(e) | Bound::Excluded(e) => k <= *e,
                    Bound::Unbounded => true,
                };
                if tighter {
                    range.1 = Bound::Excluded(k);
                }
            } else {
                let tighter = match &range.0 {
                    Bound::Included(s) => k >= *s,
                    Bound::Excluded(s) => k > *s,
                    Bound::Unbounded => true,
                };
                if tighter {
                    range.0 = Bound::Excluded(k);
                }
            }
        }
        let limit = req.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.walk(t, req.index, range, req.reverse, req.limit, |r| {
            out.push(r);
            Ok(out.len() < limit)
        })
        .await?;
        Ok(out)
    }

    async fn candidates(
        &mut self,
        q: &QueryDef,
        params: &[Value],
        plan: &Plan,
        stop_at: Option<usize>,
    ) -> Result<Vec<Row>> {
        let t = q.table;
        let filter = if plan.covered {
            None
        } else {
            q.filter.as_ref()
        };
        let mut out = Vec::new();
        if stop_at == Some(0) {
            return Ok(out);
        }
        match &plan.access {
            Access::PkPoint(exprs) => {
                let Some(key) = pk_point_key(t, exprs, params)? else {
                    return Ok(out);
                };
                if let Some(b) = self.get(&key).await? {
                    let row = decode_row(t, &b)?;
                    if matches(filter, &row, params)? {
                        out.push(row);
                    }
                }
            }
            Access::Range { index, .. } => {
                let Some((range, exact)) = access_range(t, &plan.access, params)? else {
                    return Ok(out);
                };
                // An inexact range (a bound that did not fit its column) is wider than
                // the filter: re-check every row even when the plan is covered.
                let filter = if exact { filter } else { q.filter.as_ref() };
                let limit = stop_at.unwrap_or(usize::MAX);
                self.walk(t, *index, range, plan.reverse, stop_at, |r| {
                    if matches(filter, &r, params)? {
                        out.push(r);
                    }
                    Ok(out.len() < limit)
                })
                .await?;
            }
        }
        Ok(out)
    }

    /// Runs a registered query; its parameters are checked by core
    /// ([`QueryDef::check_params`]).
    async fn query(&mut self, q: &QueryDef, params: &[Value], plan: &Plan) -> Result<Output> {
        let limit = resolve_limit(q, params);
        let stop_at = if plan.ordered { limit } else { None };
        match &q.kind {
            QueryKind::Select { projection, .. } => {
                let mut rows = self.candidates(q, params, plan, stop_at).await?;
                if !plan.ordered {
                    sort_rows(&mut rows, &q.order_by);
                }
                if let Some(l) = limit {
                    rows.truncate(l);
                }
                if let Some(c) = projection {
                    rows = rows
                        .into_iter()
                        .map(|mut r| vec![std::mem::take(&mut r[*c])])
                        .collect();
                }
                Ok(Output::Rows(rows))
            }
            QueryKind::Count => {
                // A covered range is counted from its keys alone (index entries or row
                // keys), without reading or decoding rows.
                if plan.covered && matches!(plan.access, Access::Range { .. }) {
                    return match access_range(q.table, &plan.access, params)? {
                        None => Ok(Output::Count(0)),
                        Some((range, true)) => self.count_range(&range).await.map(Output::Count),
                        Some((_, false)) => {
                            let rows = self
                                .candidates(
                                    q,
                                    params,
                                    &Plan {
                                        covered: false,
                                        ..plan.clone()
                                    },
                                    None,
                                )
                                .await?;
                            Ok(Output::Count(rows.len() as u64))
                        }
                    };
                }
                let rows = self.candidates(q, params, plan, None).await?;
                Ok(Output::Count(rows.len() as u64))
            }
            QueryKind::Update { assignments } => {
                let mut rows = self.candidates(q, params, plan, stop_at).await?;
                if let Some(l) = limit {
                    if !plan.ordered {
                        sort_rows(&mut rows, &q.order_by);
                    }
                    rows.truncate(l);
                }
                let t = q.table;
                let keys = TableKeys::new(t);
                let n = rows.len() as u64;
                for old in rows {
                    let mut new = old.clone();
                    for (c, e) in assignments {
                        let v = eval(e, &old, params)?;
                        new[*c] = v.coerce(t.columns[*c].ty).map_err(|e| {
                            Error::invalid_input(format!(
                                "query {}: column {}: {}",
                                q.name,
                                t.columns[*c].name,
                                e.message()
                            ))
                        })?;
                    }
                    if let Some(v) = t
                        .version
                        .filter(|v| !assignments.iter().any(|(c, _)| c == v))
                    {
                        let next = t.version_of(&old).unwrap_or_default().saturating_add(1);
                        new[v] = Value::I64(next);
                    }
                    let new = t.check_row(new)?;
                    let key = keys.row_key(t, &old);
                    self.write_row(t, &keys, &key, Some(&old), Some(&new))
                        .await?;
                }
                Ok(Output::Count(n))
            }
            QueryKind::Delete => {
                let mut rows = self.candidates(q, params, plan, stop_at).await?;
                if let Some(l) = limit {
                    if !plan.ordered {
                        sort_rows(&mut rows, &q.order_by);
                    }
                    rows.truncate(l);
                }
                let t = q.table;
                let keys = TableKeys::new(t);
                let n = rows.len() as u64;
                for old in rows {
                    let key = keys.row_key(t, &old);
                    self.write_row(t, &keys, &key, Some(&old), None).await?;
                }
                Ok(Output::Count(n))
            }
        }
    }

    // ---- change capture ----------------------------------------------------------------

    /// Appends the change record of a row write when capture is on for `table`: the
    /// next position comes from the table's sequence key, which every capturing
    /// transaction reads and writes. Stores with concurrent writers therefore see a
    /// write-write conflict between two capturing transactions, so positions follow
    /// commit order and none can appear below one a reader has passed (the late-commit
    /// case); single-writer stores serialise them anyway. Both keys go through the
    /// overlay, so savepoints and failed ops undo them with the row.
    ///
    /// `new` is the new row already encoded (`None` for a delete).
    async fn capture(
        &mut self,
        table: &TableSchema,
        old: Option<&Row>,
        new: Option<&[u8]>,
    ) -> Result<()> {
        let Some(i) = self.captured(&table.name).await? else {
            return Ok(());
        };
        let record = match (old, new) {
            (None, Some(n)) => codec::encode_change(ChangeKind::Insert, n),
            (Some(_), Some(n)) => codec::encode_change(ChangeKind::Update, n),
            (Some(o), None) => codec::encode_change(ChangeKind::Delete, &encode_row(o)),
            (None, None) => return Ok(()),
        };
        let seq_key = self.capture[i].keys.as_ref().expect("captured").0.clone();
        // Pessimistic stores: the sequence key is locked before it is read (once per
        // transaction), the record's key once its position is known.
        self.lock(&[&seq_key]).await?;
        let position = (self.change_seq(&seq_key, &table.name).await? + 1).max(self.position_base);
        let prefix = &self.capture[i].keys.as_ref().expect("captured").1;
        let change_key = codec::change_key_at(prefix, position);
        self.lock(&[&change_key]).await?;
        self.set(seq_key, Some(position.to_be_bytes().to_vec()));
        self.set(change_key, Some(record));
        Ok(())
    }

    /// The position in `self.capture` of `table` when change capture is on for it
    /// (read once per transaction), else `None`.
    async fn captured(&mut self, table: &str) -> Result<Option<usize>> {
        let i = match self.capture.iter().position(|c| c.table == table) {
            Some(i) => i,
            None => {
                let on = self
                    .get(&codec::table_prefix(codec::CAPTURE, table))
                    .await?
                    .is_some();
                if on && let Some(h) = &self.captured_hint {
                    h.write().insert(table.to_owned());
                }
                let keys = on.then(|| {
                    (
                        codec::table_prefix(codec::CHANGE_SEQ, table),
                        codec::table_prefix(codec::CHANGE, table),
                    )
                });
                self.capture.push(Captured {
                    table: table.to_owned(),
                    keys,
                });
                self.capture.len() - 1
            }
        };
        Ok(self.capture[i].keys.as_ref().map(|_| i))
    }

    /// The last change position of a table (0 before the first change).
    async fn change_seq(&mut self, seq_key: &[u8], table: &str) -> Result<u64> {
        match self.get(seq_key).await? {
            None => Ok(0),
            Some(b) => <[u8; 8]>::try_from(b.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    Error::corrupted(format!(
                        "table {table}: change sequence of {} bytes",
                        b.len()
                    ))
                }),
        }
    }

    /// Reads the open epoch and writes it incremented (see `FORMAT.md`); returns the
    /// value read (0 on the first open).
    ///
    /// # Errors
    /// `Corrupted` when the stored epoch is not 8 bytes; the store's read errors.
    pub(crate) async fn bump_epoch(&mut self) -> Result<u64> {
        let key = vec![codec::EPOCH];
        self.lock(&[&key]).await?;
        let epoch = match self.get(&key).await? {
            None => 0,
            Some(b) => <[u8; 8]>::try_from(b.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| Error::corrupted(format!("open epoch of {} bytes", b.len())))?,
        };
        self.set(key, Some((epoch + 1).to_be_bytes().to_vec()));
        Ok(epoch)
    }

    /// Turns change capture on for `table` (idempotent).
    pub(crate) async fn enable_capture(&mut self, table: &str) -> Result<()> {
        let key = codec::table_prefix(codec::CAPTURE, table);
        if self.get(&key).await?.is_none() {
            self.lock(&[&key]).await?;
            self.set(key, Some(Vec::new()));
        }
        Ok(())
    }

    /// Up to `limit` change records of `table` after `after` (and up to `upto`).
    pub(crate) async fn change_records(
        &mut self,
        table: &str,
        after: u64,
        upto: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChangeRecord>> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let prefix = codec::table_prefix(codec::CHANGE, table);
        let end = match upto {
            Some(u) => Bound::Included(codec::change_key_at(&prefix, u)),
            None => end_of(&prefix),
        };
        let range = (Bound::Included(codec::change_key_at(&prefix, first)), end);
        self.scan(&range, limit, false)
            .await?
            .into_iter()
            .map(|(k, v)| {
                let pos = <[u8; 8]>::try_from(&k[prefix.len()..])
                    .map(u64::from_be_bytes)
                    .map_err(|_| Error::corrupted(format!("table {table}: change key")))?;
                Ok(ChangeRecord {
                    key: k,
                    position: pos,
                    bytes: v,
                })
            })
            .collect()
    }

    /// Deletes change records read by [`KvTx::change_records`] (locking their keys
    /// first on a pessimistic store).
    pub(crate) async fn delete_changes(&mut self, recs: Vec<ChangeRecord>) -> Result<()> {
        let keys: Vec<&[u8]> = recs.iter().map(|r| r.key.as_slice()).collect();
        self.lock(&keys).await?;
        for rec in recs {
            self.set(rec.key, None);
        }
        Ok(())
    }

    /// Reads the catalog entry of `name`.
    pub(crate) async fn catalog_get(&mut self, name: &str) -> Result<Option<Bytes>> {
        self.get(&codec::catalog_key(name)).await
    }

    /// Writes the catalog entry of `name` (locking its key first on a pessimistic
    /// store).
    pub(crate) async fn catalog_put(&mut self, name: &str, bytes: Bytes) -> Result<()> {
        let key = codec::catalog_key(name);
        self.lock(&[&key]).await?;
        self.set(key, Some(bytes));
        Ok(())
    }

    /// Reads one key (for schema changes, [`crate::alter`]).
    pub(crate) async fn raw_get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        self.get(key).await
    }

    /// Reads `keys` ahead in one store call, so that the [`KvTx::raw_get`]s of them
    /// that follow need no round trip (for schema changes).
    pub(crate) async fn raw_prefetch(&mut self, keys: Vec<Bytes>) -> Result<()> {
        self.prefetch(keys).await
    }

    /// Up to `limit` pairs of `[start, end)` in key order (for schema changes).
    pub(crate) async fn raw_scan(
        &mut self,
        start: Bound<Bytes>,
        end: Bound<Bytes>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        self.scan(&(start, end), limit, false).await
    }

    /// The last pair under `prefix`, if any (for schema changes).
    pub(crate) async fn raw_last(&mut self, prefix: &[u8]) -> Result<Option<Bytes>> {
        let range = (Bound::Included(prefix.to_vec()), end_of(prefix));
        Ok(self.scan(&range, 1, true).await?.pop().map(|(k, _)| k))
    }

    /// Locks `keys` on a pessimistic store (which checks that they still hold what
    /// this transaction's snapshot read); nothing elsewhere (for schema changes).
    pub(crate) async fn raw_lock<'k>(
        &mut self,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<()> {
        if !self.kv.pessimistic_locks {
            return Ok(());
        }
        let keys: Vec<&[u8]> = keys.into_iter().collect();
        self.lock(&keys).await
    }

    /// Writes (`Some`) or deletes (`None`) keys, locking them first on a pessimistic
    /// store (for schema changes).
    pub(crate) async fn raw_write(&mut self, pairs: Vec<(Bytes, Option<Bytes>)>) -> Result<()> {
        let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| k.as_slice()).collect();
        self.lock(&keys).await?;
        for (k, v) in pairs {
            self.set(k, v);
        }
        Ok(())
    }

    /// Every catalog entry.
    pub(crate) async fn catalog_all(&mut self) -> Result<Vec<Bytes>> {
        let p = vec![codec::CATALOG];
        let range = (Bound::Included(p.clone()), end_of(&p));
        Ok(self
            .scan(&range, usize::MAX, false)
            .await?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }
}

/// The key range of a range access path with its parameters bound, and whether the
/// range is exact (every bound fit its column; otherwise an open bound stands in and the
/// filter must decide). `None` when nothing can match (a NULL equality or bound).
fn access_range(
    t: &TableSchema,
    access: &Access,
    params: &[Value],
) -> Result<Option<(KeyRange, bool)>> {
    let Access::Range {
        index,
        prefix,
        lower,
        upper,
    } = access
    else {
        return Err(Error::engine("plan", "not a range access path"));
    };
    let cols = match index {
        Some(i) => &t.indexes[*i].columns,
        None => &t.primary_key,
    };
    let Some(vals) = eval_key(t, cols, prefix, params)? else {
        return Ok(None);
    };
    let ty = cols.get(vals.len()).map(|&c| t.columns[c].ty);
    let mut exact = true;
    let mut bound = |b: &Option<PlanBound>| -> Result<Option<Bound<Value>>> {
        Ok(Some(match (b, ty) {
            (Some(b), Some(ty)) => {
                let v = eval(&b.value, &[], params)?;
                if v.is_null() {
                    return Ok(None);
                }
                let Ok(v) = v.coerce(ty) else {
                    // Out of the column's range: an open bound; the filter decides.
                    exact = false;
                    return Ok(Some(Bound::Unbounded));
                };
                if b.inclusive {
                    Bound::Included(v)
                } else {
                    Bound::Excluded(v)
                }
            }
            _ => Bound::Unbounded,
        }))
    };
    let (Some(lo), Some(hi)) = (bound(lower)?, bound(upper)?) else {
        return Ok(None);
    };
    Ok(Some((
        key_range(t, *index, &vals, lo.as_ref(), hi.as_ref()),
        exact,
    )))
}

/// The query's row limit with its parameter bound (a non-negative integer: checked by
/// core, [`QueryDef::check_params`]).
fn resolve_limit(q: &QueryDef, params: &[Value]) -> Option<usize> {
    match q.limit {
        None => None,
        Some(Limit::Const(n)) => Some(n as usize),
        Some(Limit::Param(i)) => {
            let n = params.get(i).and_then(Value::as_i64).unwrap_or(0);
            Some(usize::try_from(n).unwrap_or(0))
        }
    }
}

/// Runs a select or count whose plan is a primary-key point read against a synchronous
/// snapshot (the fast path of in-process stores). `None` when the query is not of that
/// shape.
pub(crate) fn point_query(
    snap: &dyn super::KvSnapshot,
    q: &QueryDef,
    params: &[Value],
    plan: &Plan,
) -> Result<Option<Output>> {
    let Access::PkPoint(exprs) = &plan.access else {
        return Ok(None);
    };
    if params.len() != q.params.len() {
        return Ok(None); // the general path reports the error
    }
    let t = q.table;
    let limit = resolve_limit(q, params);
    let mut rows = Vec::new();
    if limit != Some(0)
        && let Some(key) = pk_point_key(t, exprs, params)?
        && let Some(b) = snap.get(&key)
    {
        let row = decode_row(t, b)?;
        let filter = if plan.covered {
            None
        } else {
            q.filter.as_ref()
        };
        if matches(filter, &row, params)? {
            rows.push(row);
        }
    }
    Ok(Some(match &q.kind {
        QueryKind::Select { projection, .. } => match projection {
            Some(c) => Output::Rows(
                rows.into_iter()
                    .map(|mut r| vec![std::mem::take(&mut r[*c])])
                    .collect(),
            ),
            None => Output::Rows(rows),
        },
        QueryKind::Count => Output::Count(rows.len() as u64),
        _ => return Ok(None),
    }))
}

/// `Op::Get` against a synchronous snapshot.
pub(crate) fn point_get(
    snap: &dyn super::KvSnapshot,
    table: &TableSchema,
    keys: Vec<Row>,
) -> Result<Output> {
    let prefix = row_prefix(table);
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let key = encode_key(&prefix, &k);
        out.push(snap.get(&key).map(|b| decode_row(table, b)).transpose()?);
    }
    Ok(Output::Optional(out))
}

/// The row key a primary-key point query reads, `None` when a key expression is NULL
/// (no row can match).
fn pk_point_key(t: &TableSchema, exprs: &[Expr], params: &[Value]) -> Result<Option<Bytes>> {
    Ok(eval_key(t, &t.primary_key, exprs, params)?.map(|vals| {
        let mut key = row_prefix(t);
        encode_values(&mut key, &vals);
        key
    }))
}

fn end_of(prefix: &[u8]) -> Bound<Bytes> {
    match prefix_end(prefix) {
        Some(e) => Bound::Excluded(e),
        None => Bound::Unbounded,
    }
}

/// `prefix` followed by a primary key given by value: a full key of the key columns'
/// types, as core's [`Op::checked`] (and [`ScanRequest::coerce`] for cursors) made it.
fn encode_key(prefix: &[u8], key: &[Value]) -> Bytes {
    let mut b = prefix.to_vec();
    encode_values(&mut b, key);
    b
}

/// Evaluates equality values for key columns; `None` when one is NULL or does not fit
/// the column (then nothing can match).
fn eval_key(
    t: &TableSchema,
    cols: &[usize],
    exprs: &[Expr],
    params: &[Value],
) -> Result<Option<Row>> {
    let mut out = Vec::with_capacity(exprs.len());
    for (e, &c) in exprs.iter().zip(cols) {
        let v = eval(e, &[], params)?;
        if v.is_null() {
            return Ok(None);
        }
        match v.coerce(t.columns[c].ty) {
            Ok(v) => out.push(v),
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// The key range of a scan with an equality prefix and bounds on the next column.
fn key_range(
    t: &TableSchema,
    index: Option<usize>,
    prefix: &[Value],
    lower: Bound<&Value>,
    upper: Bound<&Value>,
) -> KeyRange {
    let mut p = match index {
        None => row_prefix(t),
        Some(i) => index_prefix(t, &t.indexes[i]),
    };
    encode_values(&mut p, prefix);
    let with = |v: &Value| {
        let mut k = p.clone();
        codec::encode_value(&mut k, v);
        k
    };
    let start = match lower {
        Bound::Included(v) => Bound::Included(with(v)),
        Bound::Excluded(v) => match prefix_end(&with(v)) {
            Some(e) => Bound::Included(e),
            None => Bound::Excluded(with(v)),
        },
        // `col < x` never matches NULL (which sorts first): with an upper bound only,
        // start after the NULL entries (tag 0x00) at the first non-NULL tag (0x01).
        Bound::Unbounded if matches!(upper, Bound::Included(v) | Bound::Excluded(v) if !v.is_null()) => {
            Bound::Included([p.as_slice(), &[1u8]].concat())
        }
        Bound::Unbounded => Bound::Included(p.clone()),
    };
    let end = match upper {
        Bound::Included(v) => end_of(&with(v)),
        Bound::Excluded(v) => Bound::Excluded(with(v)),
        Bound::Unbounded => end_of(&p),
    };
    (start, end)
}

/// The key of a scan position (index columns then primary key, as in a cursor), coerced
/// by [`ScanRequest::coerce`].
fn position_key(t: &TableSchema, index: Option<usize>, pos: Row) -> Result<Bytes> {
    match index {
        None => Ok(encode_key(&row_prefix(t), &pos)),
        Some(i) => {
            let ix = &t.indexes[i];
            let n = ix.columns.len();
            if pos.len() != n + t.primary_key.len() {
                return Err(Error::invalid_input("cursor does not belong to this index"));
            }
            let (cols, pk) = pos.split_at(n);
            let mut k = index_prefix(t, ix);
            encode_values(&mut k, cols);
            if !ix.unique || cols.iter().any(Value::is_null) {
                encode_values(&mut k, pk);
            }
            Ok(k)
        }
    }
}

/// Sorts rows by `ORDER BY` terms; NULL sorts first ascending (as in the key order).
pub(crate) fn sort_rows(rows: &mut [Row], order: &[datalayer_core::query::OrderBy]) {
    if order.is_empty() {
        return;
    }
    rows.sort_by(|a, b| {
        for o in order {
            let (x, y) = (&a[o.column], &b[o.column]);
            let ord = match (x.is_null(), y.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                _ => compare(x, y).unwrap_or(Ordering::Equal),
            };
            let ord = if o.desc { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
}
