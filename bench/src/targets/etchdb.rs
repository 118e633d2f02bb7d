//! Peer: raw `etchdb` 0.6 — in-memory `BTreeMap`s behind an `RwLock`, persisted
//! by a write-ahead log.
//!
//! Durability: `Store::open_wal` opens in `FlushPolicy::Immediate` (the
//! default), and every write here goes through `Store::write_durable`, which
//! appends the transaction's ops to `wal.bin` and calls `File::sync_all`
//! before returning (etchdb `src/store/persist.rs`, `append_durable` →
//! `src/wal/format.rs`, `WalFile::sync`). That is fsync per commit. etchdb
//! has no group commit: writers are serialised by a write gate that is held
//! across the fsync. Every 1,000 WAL entries (the default snapshot threshold)
//! a write also rewrites the full snapshot; that cost is part of what a user
//! gets and is left in.
//!
//! The age index is a second persisted collection, `(age, id) -> ()`,
//! maintained in the same transaction as the row, the way a user of etchdb
//! would; its in-memory `BTreeMap` orders tuples correctly for range scans.

use std::collections::BTreeMap;

use etchdb::{Replayable, Store, Transactable, WalBackend};
use serde::{Deserialize, Serialize};

use super::{Place, Target, UsersTable};
use crate::workloads::{User, Workload};

/// The whole database state, as etchdb wants it: one struct of collections.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Replayable, Transactable)]
struct State {
    #[etch(collection = 0)]
    users: BTreeMap<i64, User>,
    #[etch(collection = 1)]
    by_age: BTreeMap<(i32, i64), ()>,
}

/// etchdb with a WAL in the place's directory, fsync per commit; runs the
/// embedded `users` workloads (point read, range scan, commits, one batch).
pub struct Etchdb;

impl Target for Etchdb {
    fn name(&self) -> &str {
        "etchdb"
    }

    fn supports(&self, w: Workload) -> bool {
        matches!(
            w,
            Workload::PointRead
                | Workload::RangeScan
                | Workload::Commit1
                | Workload::Commit8
                | Workload::Batch
        )
    }

    fn open(&self, place: &Place, rows: &[User]) -> anyhow::Result<Box<dyn UsersTable>> {
        let store = Store::<State, WalBackend<State>>::open_wal(place.dir().to_path_buf())?;
        let this = EtchdbUsers { store };
        for chunk in rows.chunks(10_000) {
            this.insert_all(chunk);
        }
        Ok(Box::new(this))
    }
}

/// The open etchdb store.
struct EtchdbUsers {
    store: Store<State, WalBackend<State>>,
}

impl EtchdbUsers {
    fn insert_all(&self, rows: &[User]) {
        self.store
            .write_durable(|tx| {
                for u in rows {
                    tx.users.put(u.id, u.clone())?;
                    tx.by_age.put((u.age, u.id), ())?;
                }
                Ok(())
            })
            .expect("etchdb write_durable");
    }
}

impl UsersTable for EtchdbUsers {
    fn point_read(&self, id: i64) -> Option<User> {
        self.store.read_with(|s| s.users.get(&id).cloned())
    }

    fn commit_one(&self, u: &User) {
        self.insert_all(std::slice::from_ref(u));
    }

    fn insert_many(&self, rows: &[User]) {
        self.insert_all(rows);
    }

    fn range_by_age(&self, lo: i32, hi: i32) -> usize {
        let rows: Vec<User> = self.store.read_with(|s| {
            s.by_age
                .range((lo, i64::MIN)..=(hi, i64::MAX))
                .map(|(&(_, id), ())| s.users[&id].clone())
                .collect()
        });
        rows.len()
    }

    fn count(&self) -> i64 {
        self.store.read_with(|s| s.users.len()) as i64
    }
}
