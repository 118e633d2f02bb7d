//! Peer: raw `redb` 4 — a copy-on-write B-tree in one file.
//!
//! Durability: every write transaction calls
//! `WriteTransaction::set_durability(Durability::Immediate)` (also redb's
//! default; set explicitly so the intent is visible), which makes `commit`
//! fsync before it returns (redb `src/transactions.rs`, `Durability` and
//! `set_durability`). Two-phase commit and quick-repair stay at their
//! defaults (off). redb allows one write transaction at a time:
//! `begin_write` blocks until the previous one commits, so there is no group
//! commit.
//!
//! Rows are stored the redb-native way, as a tuple value `(name, email, age)`
//! keyed by `id`; the age index is a second table `(age, id) -> ()` written in
//! the same transaction.

use ::redb::{
    Database, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use super::{Place, Target, UsersTable};
use crate::workloads::{User, Workload};

const USERS: TableDefinition<i64, (&str, &str, i32)> = TableDefinition::new("users");
const BY_AGE: TableDefinition<(i32, i64), ()> = TableDefinition::new("users_by_age");

/// redb in `<dir>/bench.redb`, `Durability::Immediate` on every commit; runs the
/// embedded `users` workloads (point read, range scan, commits, one batch).
pub struct Redb;

impl Target for Redb {
    fn name(&self) -> &str {
        "redb"
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
        let db = Database::create(place.dir().join("bench.redb"))?;
        let this = RedbUsers { db };
        // Create both tables even when `rows` is empty.
        this.insert_all(&[]);
        for chunk in rows.chunks(10_000) {
            this.insert_all(chunk);
        }
        Ok(Box::new(this))
    }
}

/// The open redb database.
struct RedbUsers {
    db: Database,
}

impl RedbUsers {
    fn begin_durable(&self) -> WriteTransaction {
        let mut tx = self.db.begin_write().expect("redb begin_write");
        tx.set_durability(Durability::Immediate)
            .expect("redb set_durability");
        tx
    }

    fn insert_all(&self, rows: &[User]) {
        let tx = self.begin_durable();
        {
            let mut users = tx.open_table(USERS).expect("redb open users");
            let mut by_age = tx.open_table(BY_AGE).expect("redb open by_age");
            for u in rows {
                users
                    .insert(u.id, (u.name.as_str(), u.email.as_str(), u.age))
                    .expect("redb insert user");
                by_age.insert((u.age, u.id), ()).expect("redb insert index");
            }
        }
        tx.commit().expect("redb commit");
    }
}

fn decode(id: i64, (name, email, age): (&str, &str, i32)) -> User {
    User {
        id,
        name: name.to_owned(),
        email: email.to_owned(),
        age,
    }
}

impl UsersTable for RedbUsers {
    fn point_read(&self, id: i64) -> Option<User> {
        let tx = self.db.begin_read().expect("redb begin_read");
        let users = tx.open_table(USERS).expect("redb open users");
        users
            .get(id)
            .expect("redb get")
            .map(|v| decode(id, v.value()))
    }

    fn commit_one(&self, u: &User) {
        self.insert_all(std::slice::from_ref(u));
    }

    fn insert_many(&self, rows: &[User]) {
        self.insert_all(rows);
    }

    fn range_by_age(&self, lo: i32, hi: i32) -> usize {
        let tx = self.db.begin_read().expect("redb begin_read");
        let users = tx.open_table(USERS).expect("redb open users");
        let by_age = tx.open_table(BY_AGE).expect("redb open by_age");
        let rows: Vec<User> = by_age
            .range((lo, i64::MIN)..=(hi, i64::MAX))
            .expect("redb range")
            .map(|entry| {
                let (key, _) = entry.expect("redb range entry");
                let (_, id) = key.value();
                let row = users
                    .get(id)
                    .expect("redb get")
                    .expect("index points at a row");
                decode(id, row.value())
            })
            .collect();
        rows.len()
    }

    fn count(&self) -> i64 {
        let tx = self.db.begin_read().expect("redb begin_read");
        let users = tx.open_table(USERS).expect("redb open users");
        users.len().expect("redb len") as i64
    }
}
