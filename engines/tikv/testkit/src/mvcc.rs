//! Percolator MVCC on one in-memory map: per key, at most one lock and a list of writes
//! (put, delete, lock, rollback) ordered by commit timestamp.
//!
//! The semantics follow tikv/tikv `src/storage/txn/actions/` (`prewrite.rs`,
//! `commit.rs`, `check_txn_status.rs`, `cleanup.rs`, `acquire_pessimistic_lock.rs`)
//! and the Percolator paper (Peng & Dabek, OSDI 2010): a transaction prewrites a lock on
//! every key it writes (one of them its *primary*), then commits the primary (the
//! commit point), then the secondaries. A reader at `ts` that meets a lock of a
//! transaction started at or before `ts` must resolve it (check the primary's status,
//! then commit or roll back the lock) before it can read the key.
//!
//! Values live in the write records (TiKV's "short value" form): no separate default
//! column family. Every function works on the whole map; the region checks are the
//! caller's ([`crate::server`]).

// Errors are the wire message `KeyError` itself (large, but built only on the error
// path and sent as is).
#![allow(clippy::result_large_err)]

use crate::proto::kvrpcpb::{self, KeyError, LockInfo};
use std::collections::BTreeMap;
use std::ops::Bound;

/// A timestamp from the TSO: `physical_ms << 18 | logical`.
pub type Ts = u64;

/// The physical part (milliseconds since the Unix epoch) of a TSO timestamp.
pub fn physical_ms(ts: Ts) -> u64 {
    ts >> 18
}

/// What a lock will write when its transaction commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// A prewritten put of this value.
    Put(Vec<u8>),
    /// A prewritten delete.
    Delete,
    /// A prewritten `Op::Lock`: commits a lock record, changes no value.
    Lock,
    /// A pessimistic lock, not yet prewritten (`acquire_pessimistic_lock.rs`).
    Pessimistic,
}

impl LockKind {
    fn op(&self) -> kvrpcpb::Op {
        match self {
            LockKind::Put(_) => kvrpcpb::Op::Put,
            LockKind::Delete => kvrpcpb::Op::Del,
            LockKind::Lock => kvrpcpb::Op::Lock,
            LockKind::Pessimistic => kvrpcpb::Op::PessimisticLock,
        }
    }
}

/// A lock on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    /// The transaction's primary key.
    pub primary: Vec<u8>,
    /// The transaction's start timestamp.
    pub start_ts: Ts,
    /// Time to live, in milliseconds after the physical time of `start_ts`.
    pub ttl_ms: u64,
    /// What the lock writes at commit.
    pub kind: LockKind,
    /// The pessimistic transaction's `for_update_ts` (0 for optimistic ones).
    pub for_update_ts: Ts,
    /// The smallest commit timestamp this lock accepts.
    pub min_commit_ts: Ts,
    /// The number of keys of the transaction (as the client sends it).
    pub txn_size: u64,
}

impl Lock {
    /// The `LockInfo` of this lock on `key`, as TiKV reports it in `KeyIsLocked`.
    pub fn info(&self, key: &[u8]) -> LockInfo {
        LockInfo {
            primary_lock: self.primary.clone(),
            lock_version: self.start_ts,
            key: key.to_vec(),
            lock_ttl: self.ttl_ms,
            txn_size: self.txn_size,
            lock_type: self.kind.op() as i32,
            lock_for_update_ts: self.for_update_ts,
            min_commit_ts: self.min_commit_ts,
            ..Default::default()
        }
    }

    /// Whether the lock has expired at `current_ts` (TiKV: `lock.ts.physical() + ttl <
    /// current_ts.physical()`, `check_txn_status.rs`).
    pub fn expired_at(&self, current_ts: Ts) -> bool {
        physical_ms(self.start_ts).saturating_add(self.ttl_ms) <= physical_ms(current_ts)
    }
}

/// What a write record wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// A committed value.
    Put(Vec<u8>),
    /// A committed delete.
    Delete,
    /// A committed `Op::Lock` (no change of value).
    Lock,
    /// The transaction was rolled back on this key (protects against a late prewrite).
    Rollback,
}

/// One write record: the transaction started at `start_ts` wrote `kind`, committed at
/// the key of the record in [`KeyState::writes`] (for a rollback: its `start_ts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The writing transaction's start timestamp.
    pub start_ts: Ts,
    /// What it wrote.
    pub kind: WriteKind,
}

/// The MVCC state of one key.
#[derive(Clone, Debug, Default)]
pub struct KeyState {
    /// The lock, if any.
    pub lock: Option<Lock>,
    /// Write records by commit timestamp.
    pub writes: BTreeMap<Ts, Write>,
}

impl KeyState {
    /// The value visible at `ts` (ignoring locks): the newest put or delete with
    /// commit timestamp ≤ `ts`.
    fn value_at(&self, ts: Ts) -> Option<&Vec<u8>> {
        for (_, w) in self.writes.range(..=ts).rev() {
            match &w.kind {
                WriteKind::Put(v) => return Some(v),
                WriteKind::Delete => return None,
                WriteKind::Lock | WriteKind::Rollback => {}
            }
        }
        None
    }

    /// The record of the transaction started at `start_ts`, with its commit timestamp.
    fn txn_record(&self, start_ts: Ts) -> Option<(Ts, &Write)> {
        // A rollback is keyed by its start_ts; a commit by a commit_ts > start_ts.
        self.writes
            .range(start_ts..)
            .find(|(_, w)| w.start_ts == start_ts)
            .map(|(ts, w)| (*ts, w))
    }

    /// The newest write that is not a rollback, with its commit timestamp.
    fn newest_commit(&self) -> Option<(Ts, &Write)> {
        self.writes
            .iter()
            .rev()
            .find(|(_, w)| w.kind != WriteKind::Rollback)
            .map(|(ts, w)| (*ts, w))
    }
}

/// A locked-key error (`KeyIsLocked`).
pub fn locked_error(key: &[u8], lock: &Lock) -> KeyError {
    KeyError {
        locked: Some(lock.info(key)),
        ..Default::default()
    }
}

fn abort(msg: String) -> KeyError {
    KeyError {
        abort: msg,
        ..Default::default()
    }
}

fn write_conflict(
    start_ts: Ts,
    conflict: (Ts, &Write),
    key: &[u8],
    primary: &[u8],
    reason: kvrpcpb::write_conflict::Reason,
) -> KeyError {
    KeyError {
        conflict: Some(kvrpcpb::WriteConflict {
            start_ts,
            conflict_ts: conflict.1.start_ts,
            conflict_commit_ts: conflict.0,
            key: key.to_vec(),
            primary: primary.to_vec(),
            reason: reason as i32,
        }),
        ..Default::default()
    }
}

/// The answer of [`Mvcc::check_txn_status`]: exactly one of the three shapes the client
/// accepts (`TransactionStatusKind` in tikv-client's `transaction/requests.rs`).
#[derive(Clone, Debug, PartialEq)]
pub enum TxnStatus {
    /// Rolled back (now or before): `(commit_version 0, lock_ttl 0, no lock_info)`.
    RolledBack(kvrpcpb::Action),
    /// Committed at this timestamp: `(commit_ts, 0, None)`.
    Committed(Ts),
    /// Still locked: `(0, ttl, Some(lock_info))`.
    Locked(LockInfo),
}

/// One prewrite mutation, as the request carries it.
#[derive(Clone, Debug)]
pub struct PrewriteMutation {
    /// The operation (`Op::Put`, `Del`, `Lock`, `Insert`, `CheckNotExists`).
    pub op: kvrpcpb::Op,
    /// The key.
    pub key: Vec<u8>,
    /// The value (puts and inserts).
    pub value: Vec<u8>,
    /// Whether the key must hold this transaction's pessimistic lock.
    pub pessimistic: bool,
}

/// The whole MVCC keyspace.
#[derive(Debug, Default)]
pub struct Mvcc {
    keys: BTreeMap<Vec<u8>, KeyState>,
}

/// A read's outcome for one key: a value, nothing, or a lock in the way.
pub type ReadResult = Result<Option<Vec<u8>>, KeyError>;

impl Mvcc {
    /// The state of `key`, if it has any.
    pub fn key_state(&self, key: &[u8]) -> Option<&KeyState> {
        self.keys.get(key)
    }

    /// Snapshot read of `key` at `ts` (TiKV `PointGetter`): a lock of another
    /// transaction that started at or before `ts` and will write a value (a prewritten
    /// put or delete; lock and pessimistic locks never block readers) is `KeyIsLocked`.
    pub fn get(&self, key: &[u8], ts: Ts) -> ReadResult {
        let Some(state) = self.keys.get(key) else {
            return Ok(None);
        };
        if let Some(lock) = &state.lock
            && lock.start_ts <= ts
            && matches!(lock.kind, LockKind::Put(_) | LockKind::Delete)
        {
            return Err(locked_error(key, lock));
        }
        Ok(state.value_at(ts).cloned())
    }

    /// Keys that have any state in `[start, end)` (per the bounds), ascending.
    pub fn keys_in(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Vec<Vec<u8>> {
        if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
            (start, end)
            && s > e
        {
            return Vec::new();
        }
        self.keys
            .range::<[u8], _>((start, end))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Prewrite (`actions/prewrite.rs`). Either every mutation is locked, or nothing
    /// is written and the errors are returned: `KeyIsLocked` per key locked by another
    /// transaction; otherwise the first `WriteConflict` (a commit at or after
    /// `start_ts`, or this transaction already rolled back on the key),
    /// `AlreadyExist` (an `Insert` of an existing key) or `PessimisticLockNotFound`.
    /// A repeated prewrite of the same transaction is harmless.
    #[allow(clippy::too_many_arguments)]
    pub fn prewrite(
        &mut self,
        mutations: &[PrewriteMutation],
        primary: &[u8],
        start_ts: Ts,
        ttl_ms: u64,
        for_update_ts: Ts,
        min_commit_ts: Ts,
        txn_size: u64,
    ) -> Vec<KeyError> {
        let mut locked = Vec::new();
        let mut to_write = Vec::new();
        for m in mutations {
            let state = self.keys.get(&m.key);
            let lock = state.and_then(|s| s.lock.as_ref());
            if let Some(lock) = lock {
                if lock.start_ts != start_ts {
                    locked.push(locked_error(&m.key, lock));
                    continue;
                }
                if lock.kind != LockKind::Pessimistic {
                    // A repeated prewrite: already done.
                    continue;
                }
            } else if let Some(state) = state {
                if let Some((commit_ts, w)) = state.txn_record(start_ts) {
                    if w.kind == WriteKind::Rollback {
                        return vec![write_conflict(
                            start_ts,
                            (commit_ts, w),
                            &m.key,
                            primary,
                            kvrpcpb::write_conflict::Reason::SelfRolledBack,
                        )];
                    }
                    // Already committed by this transaction: nothing to do.
                    continue;
                }
                if m.pessimistic {
                    return vec![abort(format!(
                        "PessimisticLockNotFound: key {:?} start_ts {start_ts}",
                        m.key
                    ))];
                }
                if let Some((commit_ts, w)) = state.newest_commit()
                    && commit_ts >= start_ts
                {
                    return vec![write_conflict(
                        start_ts,
                        (commit_ts, w),
                        &m.key,
                        primary,
                        kvrpcpb::write_conflict::Reason::Optimistic,
                    )];
                }
            } else if m.pessimistic {
                return vec![abort(format!(
                    "PessimisticLockNotFound: key {:?} start_ts {start_ts}",
                    m.key
                ))];
            }
            let exists = state.and_then(|s| s.value_at(Ts::MAX)).is_some();
            let kind = match m.op {
                kvrpcpb::Op::Put => LockKind::Put(m.value.clone()),
                kvrpcpb::Op::Insert if exists => {
                    return vec![KeyError {
                        already_exist: Some(kvrpcpb::AlreadyExist { key: m.key.clone() }),
                        ..Default::default()
                    }];
                }
                kvrpcpb::Op::Insert => LockKind::Put(m.value.clone()),
                kvrpcpb::Op::Del => LockKind::Delete,
                kvrpcpb::Op::Lock => LockKind::Lock,
                kvrpcpb::Op::CheckNotExists if exists => {
                    return vec![KeyError {
                        already_exist: Some(kvrpcpb::AlreadyExist { key: m.key.clone() }),
                        ..Default::default()
                    }];
                }
                kvrpcpb::Op::CheckNotExists => continue,
                op => return vec![abort(format!("prewrite: unexpected op {op:?}"))],
            };
            to_write.push((m.key.clone(), kind));
        }
        if !locked.is_empty() {
            return locked;
        }
        for (key, kind) in to_write {
            self.keys.entry(key).or_default().lock = Some(Lock {
                primary: primary.to_vec(),
                start_ts,
                ttl_ms,
                kind,
                for_update_ts,
                min_commit_ts: min_commit_ts.max(start_ts + 1),
                txn_size,
            });
        }
        Vec::new()
    }

    /// Commit (`actions/commit.rs`) of `keys` of the transaction `start_ts` at
    /// `commit_ts`. Idempotent: a key already committed by the transaction is fine.
    ///
    /// # Errors
    /// `TxnLockNotFound` (the `retryable` string) when a key has neither the lock nor a
    /// commit record (or was rolled back); `CommitTsExpired` when `commit_ts` is below
    /// the lock's `min_commit_ts`; an abort for a pessimistic lock never prewritten.
    pub fn commit(
        &mut self,
        keys: &[Vec<u8>],
        start_ts: Ts,
        commit_ts: Ts,
    ) -> Result<(), KeyError> {
        // Check every key first so that a failed commit changes nothing.
        for key in keys {
            let state = self.keys.get(key);
            match state.and_then(|s| s.lock.as_ref()) {
                Some(lock) if lock.start_ts == start_ts => {
                    if lock.kind == LockKind::Pessimistic {
                        return Err(abort(format!(
                            "commit of a pessimistic lock never prewritten: key {key:?}"
                        )));
                    }
                    if commit_ts < lock.min_commit_ts {
                        return Err(KeyError {
                            commit_ts_expired: Some(kvrpcpb::CommitTsExpired {
                                start_ts,
                                attempted_commit_ts: commit_ts,
                                key: key.clone(),
                                min_commit_ts: lock.min_commit_ts,
                            }),
                            ..Default::default()
                        });
                    }
                }
                _ => match state.and_then(|s| s.txn_record(start_ts)) {
                    Some((_, w)) if w.kind != WriteKind::Rollback => {}
                    _ => {
                        return Err(KeyError {
                            retryable: format!(
                                "TxnLockNotFound: txn {start_ts} commit_ts {commit_ts} key {key:?}"
                            ),
                            ..Default::default()
                        });
                    }
                },
            }
        }
        for key in keys {
            self.commit_key(key, start_ts, commit_ts);
        }
        Ok(())
    }

    /// Turns the lock of `start_ts` on `key` (if there) into a write at `commit_ts`.
    fn commit_key(&mut self, key: &[u8], start_ts: Ts, commit_ts: Ts) {
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        let Some(lock) = state.lock.take_if(|l| l.start_ts == start_ts) else {
            return;
        };
        let kind = match lock.kind {
            LockKind::Put(v) => WriteKind::Put(v),
            LockKind::Delete => WriteKind::Delete,
            LockKind::Lock => WriteKind::Lock,
            // A pessimistic lock without a prewrite commits nothing (TiKV refuses it).
            LockKind::Pessimistic => return,
        };
        state.writes.insert(commit_ts, Write { start_ts, kind });
    }

    /// Rolls back `key` for `start_ts` (`actions/cleanup.rs`): removes its lock and
    /// writes a rollback record so that a late prewrite fails. A key the transaction
    /// committed is left alone and reported.
    fn rollback_key(&mut self, key: &[u8], start_ts: Ts) -> Result<(), KeyError> {
        let state = self.keys.entry(key.to_vec()).or_default();
        if let Some((commit_ts, w)) = state.txn_record(start_ts)
            && w.kind != WriteKind::Rollback
        {
            return Err(abort(format!(
                "Committed: txn {start_ts} is already committed at {commit_ts} on key {key:?}"
            )));
        }
        if state.lock.as_ref().is_some_and(|l| l.start_ts == start_ts) {
            state.lock = None;
        }
        state.writes.entry(start_ts).or_insert(Write {
            start_ts,
            kind: WriteKind::Rollback,
        });
        Ok(())
    }

    /// Batch rollback (`commands/rollback.rs`) of `keys` of the transaction `start_ts`.
    ///
    /// # Errors
    /// An abort (`Committed`) when the transaction already committed one of the keys.
    pub fn batch_rollback(&mut self, keys: &[Vec<u8>], start_ts: Ts) -> Result<(), KeyError> {
        for key in keys {
            self.rollback_key(key, start_ts)?;
        }
        Ok(())
    }

    /// Check-txn-status on the primary (`actions/check_txn_status.rs`).
    ///
    /// # Errors
    /// `TxnNotFound` when the primary has neither the lock nor a record and
    /// `rollback_if_not_exist` is false.
    pub fn check_txn_status(
        &mut self,
        primary: &[u8],
        lock_ts: Ts,
        current_ts: Ts,
        rollback_if_not_exist: bool,
        resolving_pessimistic_lock: bool,
    ) -> Result<TxnStatus, KeyError> {
        let state = self.keys.get(primary);
        if let Some(lock) = state.and_then(|s| s.lock.as_ref())
            && lock.start_ts == lock_ts
        {
            if !lock.expired_at(current_ts) {
                return Ok(TxnStatus::Locked(lock.info(primary)));
            }
            if lock.kind == LockKind::Pessimistic && resolving_pessimistic_lock {
                // The pessimistic lock alone is released; no rollback record.
                self.keys.get_mut(primary).expect("key").lock = None;
                return Ok(TxnStatus::RolledBack(
                    kvrpcpb::Action::TtlExpirePessimisticRollback,
                ));
            }
            self.rollback_key(primary, lock_ts)?;
            return Ok(TxnStatus::RolledBack(kvrpcpb::Action::TtlExpireRollback));
        }
        match state.and_then(|s| s.txn_record(lock_ts)) {
            Some((_, w)) if w.kind == WriteKind::Rollback => {
                Ok(TxnStatus::RolledBack(kvrpcpb::Action::NoAction))
            }
            Some((commit_ts, _)) => Ok(TxnStatus::Committed(commit_ts)),
            None if rollback_if_not_exist => {
                self.rollback_key(primary, lock_ts)?;
                Ok(TxnStatus::RolledBack(kvrpcpb::Action::LockNotExistRollback))
            }
            None => Err(KeyError {
                txn_not_found: Some(kvrpcpb::TxnNotFound {
                    start_ts: lock_ts,
                    primary_key: primary.to_vec(),
                }),
                ..Default::default()
            }),
        }
    }

    /// Resolve-lock (`commands/resolve_lock.rs`): every lock in `[start, end)` (or on
    /// `keys` when given) of a transaction in `txns` (start ts → commit ts, 0 = rolled
    /// back) is committed or rolled back.
    ///
    /// # Errors
    /// An abort (`Committed`) when a rollback meets a key the transaction committed.
    pub fn resolve_locks(
        &mut self,
        txns: &[(Ts, Ts)],
        keys: &[Vec<u8>],
        start: &[u8],
        end: &[u8],
    ) -> Result<(), KeyError> {
        let candidates: Vec<Vec<u8>> = if keys.is_empty() {
            let hi = if end.is_empty() {
                Bound::Unbounded
            } else {
                Bound::Excluded(end)
            };
            self.keys
                .range::<[u8], _>((Bound::Included(start), hi))
                .filter(|(_, s)| s.lock.is_some())
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            keys.to_vec()
        };
        for key in candidates {
            let Some(lock) = self.keys.get(&key).and_then(|s| s.lock.as_ref()) else {
                continue;
            };
            let Some(&(start_ts, commit_ts)) = txns.iter().find(|(s, _)| *s == lock.start_ts)
            else {
                continue;
            };
            if commit_ts == 0 {
                if lock.kind == LockKind::Pessimistic {
                    self.keys.get_mut(&key).expect("key").lock = None;
                } else {
                    self.rollback_key(&key, start_ts)?;
                }
            } else {
                self.commit_key(&key, start_ts, commit_ts);
            }
        }
        Ok(())
    }

    /// Heartbeat (`commands/txn_heart_beat.rs`): raises the primary lock's TTL to
    /// `advise_ttl_ms` (never lowers it) and returns the TTL.
    ///
    /// # Errors
    /// `TxnNotFound` when the primary holds no lock of the transaction.
    pub fn heartbeat(
        &mut self,
        primary: &[u8],
        start_ts: Ts,
        advise_ttl_ms: u64,
    ) -> Result<u64, KeyError> {
        match self
            .keys
            .get_mut(primary)
            .and_then(|s| s.lock.as_mut())
            .filter(|l| l.start_ts == start_ts)
        {
            Some(lock) => {
                lock.ttl_ms = lock.ttl_ms.max(advise_ttl_ms);
                Ok(lock.ttl_ms)
            }
            None => Err(KeyError {
                txn_not_found: Some(kvrpcpb::TxnNotFound {
                    start_ts,
                    primary_key: primary.to_vec(),
                }),
                ..Default::default()
            }),
        }
    }

    /// Acquires pessimistic locks (`actions/acquire_pessimistic_lock.rs`, no waiting:
    /// `wait_timeout = 0`). Returns per key the latest committed value (for
    /// `return_values`), or the errors: `KeyIsLocked` per key locked by another
    /// transaction, else the first `WriteConflict` (a commit newer than
    /// `for_update_ts`) or `PessimisticLockRolledBack`. All keys are checked before any
    /// is locked, so a failed call locks nothing.
    ///
    /// # Errors
    /// The key errors above, in `Err`.
    #[allow(clippy::too_many_arguments)]
    pub fn pessimistic_lock(
        &mut self,
        keys: &[Vec<u8>],
        primary: &[u8],
        start_ts: Ts,
        ttl_ms: u64,
        for_update_ts: Ts,
        min_commit_ts: Ts,
    ) -> Result<Vec<Option<Vec<u8>>>, Vec<KeyError>> {
        let mut locked = Vec::new();
        for key in keys {
            let state = self.keys.get(key);
            if let Some(lock) = state.and_then(|s| s.lock.as_ref()) {
                if lock.start_ts != start_ts {
                    locked.push(locked_error(key, lock));
                }
                continue;
            }
            if let Some(state) = state {
                if let Some((_, w)) = state.txn_record(start_ts)
                    && w.kind == WriteKind::Rollback
                {
                    return Err(vec![abort(format!(
                        "PessimisticLockRolledBack: txn {start_ts} key {key:?}"
                    ))]);
                }
                if let Some((commit_ts, w)) = state.newest_commit()
                    && commit_ts > for_update_ts
                {
                    return Err(vec![write_conflict(
                        start_ts,
                        (commit_ts, w),
                        key,
                        primary,
                        kvrpcpb::write_conflict::Reason::PessimisticRetry,
                    )]);
                }
            }
        }
        if !locked.is_empty() {
            return Err(locked);
        }
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let state = self.keys.entry(key.clone()).or_default();
            match &mut state.lock {
                Some(lock) => lock.for_update_ts = lock.for_update_ts.max(for_update_ts),
                None => {
                    state.lock = Some(Lock {
                        primary: primary.to_vec(),
                        start_ts,
                        ttl_ms,
                        kind: LockKind::Pessimistic,
                        for_update_ts,
                        min_commit_ts: min_commit_ts.max(start_ts + 1),
                        txn_size: 0,
                    })
                }
            }
            values.push(state.value_at(Ts::MAX).cloned());
        }
        Ok(values)
    }

    /// Pessimistic rollback (`commands/pessimistic_rollback.rs`): releases the
    /// pessimistic (not yet prewritten) locks of `start_ts` on `keys` whose
    /// `for_update_ts` ≤ `for_update_ts`.
    pub fn pessimistic_rollback(&mut self, keys: &[Vec<u8>], start_ts: Ts, for_update_ts: Ts) {
        for key in keys {
            if let Some(state) = self.keys.get_mut(key) {
                state.lock.take_if(|l| {
                    l.start_ts == start_ts
                        && l.kind == LockKind::Pessimistic
                        && l.for_update_ts <= for_update_ts
                });
            }
        }
    }

    /// Writes a lock directly (fault injection: a transaction abandoned after its
    /// prewrite).
    pub fn put_lock(&mut self, key: &[u8], lock: Lock) {
        self.keys.entry(key.to_vec()).or_default().lock = Some(lock);
    }

    /// The keys starting with `prefix` that have a lock or a write, in key order.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        self.keys
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every lock in the keyspace, with its key.
    pub fn locks(&self) -> Vec<(Vec<u8>, Lock)> {
        self.keys
            .iter()
            .filter_map(|(k, s)| s.lock.clone().map(|l| (k.clone(), l)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &[u8], v: &[u8]) -> PrewriteMutation {
        PrewriteMutation {
            op: kvrpcpb::Op::Put,
            key: k.to_vec(),
            value: v.to_vec(),
            pessimistic: false,
        }
    }

    #[test]
    fn percolator_round_trip() {
        let mut m = Mvcc::default();
        assert!(
            m.prewrite(&[put(b"a", b"1"), put(b"b", b"2")], b"a", 10, 100, 0, 0, 2)
                .is_empty()
        );
        // A reader after the prewrite meets the lock.
        assert!(m.get(b"a", 11).unwrap_err().locked.is_some());
        // A reader before it does not.
        assert_eq!(m.get(b"a", 9).unwrap(), None);
        m.commit(&[b"a".to_vec()], 10, 12).unwrap();
        assert_eq!(m.get(b"a", 12).unwrap(), Some(b"1".to_vec()));
        assert_eq!(m.get(b"a", 11).unwrap(), None);
        // Re-commit is fine; the secondary is resolved as committed.
        m.commit(&[b"a".to_vec()], 10, 12).unwrap();
        assert_eq!(
            m.check_txn_status(b"a", 10, 13, false, false).unwrap(),
            TxnStatus::Committed(12)
        );
        m.resolve_locks(&[(10, 12)], &[], b"", b"").unwrap();
        assert_eq!(m.get(b"b", 13).unwrap(), Some(b"2".to_vec()));
        // A later writer that started before the commit conflicts.
        let e = m.prewrite(&[put(b"a", b"x")], b"a", 11, 100, 0, 0, 1);
        assert!(e[0].conflict.is_some(), "{e:?}");
        // Commit of a rolled-back transaction: TxnLockNotFound.
        m.batch_rollback(&[b"c".to_vec()], 20).unwrap();
        assert!(
            m.commit(&[b"c".to_vec()], 20, 21)
                .unwrap_err()
                .retryable
                .contains("TxnLockNotFound")
        );
        // A prewrite after its own rollback conflicts.
        assert!(
            m.prewrite(&[put(b"c", b"1")], b"c", 20, 100, 0, 0, 1)[0]
                .conflict
                .is_some()
        );
    }

    #[test]
    fn check_txn_status_shapes() {
        let mut m = Mvcc::default();
        let ts = 1000 << 18;
        assert!(
            m.prewrite(&[put(b"p", b"1")], b"p", ts, 50, 0, 0, 1)
                .is_empty()
        );
        match m
            .check_txn_status(b"p", ts, (1010 << 18) + 1, false, false)
            .unwrap()
        {
            TxnStatus::Locked(info) => assert_eq!(info.lock_ttl, 50),
            s => panic!("{s:?}"),
        }
        assert_eq!(
            m.check_txn_status(b"p", ts, 1051 << 18, false, false)
                .unwrap(),
            TxnStatus::RolledBack(kvrpcpb::Action::TtlExpireRollback)
        );
        assert!(
            m.check_txn_status(b"q", 5, 6, false, false)
                .unwrap_err()
                .txn_not_found
                .is_some()
        );
        assert_eq!(
            m.check_txn_status(b"q", 5, 6, true, false).unwrap(),
            TxnStatus::RolledBack(kvrpcpb::Action::LockNotExistRollback)
        );
    }

    #[test]
    fn pessimistic_locks_conflict() {
        let mut m = Mvcc::default();
        m.pessimistic_lock(&[b"k".to_vec()], b"k", 10, 100, 10, 0)
            .unwrap();
        assert!(
            m.pessimistic_lock(&[b"k".to_vec()], b"k", 11, 100, 11, 0)
                .unwrap_err()[0]
                .locked
                .is_some()
        );
        // Readers are not blocked by a pessimistic lock.
        assert_eq!(m.get(b"k", 12).unwrap(), None);
        m.pessimistic_rollback(&[b"k".to_vec()], 10, 10);
        assert!(m.locks().is_empty());
    }
}
