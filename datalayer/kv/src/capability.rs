//! [`KvCapability`]: what a KV *store* can do, as [`KvEngine`](crate::KvEngine) needs
//! to know it.
//!
//! Apart from the engine's [`Capability`](datalayer_core::Capability) (what an
//! application may ask of the engine): a store declares here how its transactions
//! behave, and [`KvEngine`](crate::KvEngine) adapts to it (locks keys, checks the write
//! set's size, classifies a missing row) and derives part of the engine's capability
//! from it. The contract suite ([`crate::contract`]) checks that every declaration
//! matches what the store does.

use crate::WriteSet;
use datalayer_core::error::{Error, Result};

/// What a [`KvStore`](crate::KvStore) can do: a flat `Copy` struct in the manner of
/// OpenDAL's `Capability`. A store fills in what it supports
/// (`..KvCapability::default()` for the rest). The declaration is constant for the
/// life of the store ([`KvEngine`](crate::KvEngine) reads it once, when it wraps the
/// store).
///
/// `Default`: no snapshot reads, no pessimistic locks, no write-set limit, one writer at
/// a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvCapability {
    /// Every read of a transaction (`get`, `batch_get`, `scan`, `count`) sees one
    /// consistent committed state, taken at `begin` or at the first read: a commit made
    /// after it is not seen (etch, TiKV).
    ///
    /// Without it (Redis), each read may see a later committed state, so two reads of
    /// one transaction can disagree. The store MUST then validate at commit every key and
    /// range the transaction read (backward validation, Redis `WATCH`): if any changed
    /// after it was read, the commit fails with `Conflict` and applies nothing — also
    /// for an empty write set. [`KvEngine`](crate::KvEngine) therefore commits (rather
    /// than rolls back) a transaction that only read, reports an index entry whose row
    /// is missing as `Conflict` (the row was deleted after the index was read) rather
    /// than `Corrupted`, and declares the `Snapshot` and `RepeatableRead` isolation
    /// levels only for stores with snapshot reads.
    pub snapshot_reads: bool,
    /// [`KvTxn::lock`](crate::KvTxn::lock) works: a transaction can lock keys before it
    /// writes them (pessimistic TiKV). [`KvEngine`](crate::KvEngine) then locks every key
    /// it is about to write — row keys, index and unique entries, change-capture keys —
    /// before the key enters the transaction's write set, so a concurrent writer of the
    /// same key fails with `Conflict` at its lock instead of at commit. Without it,
    /// `lock` returns `Unsupported`.
    pub pessimistic_locks: bool,
    /// The largest write set one commit accepts, in bytes: the sum over its entries of
    /// the key's length plus the value's length (a delete counts its key only; see
    /// [`write_set_bytes`]). `None`: no limit beyond memory.
    ///
    /// [`KvEngine`](crate::KvEngine) checks it before it hands a write set to the store
    /// and fails the commit with `InvalidInput` naming the limit
    /// ([`KvCapability::check_write_set`]); the store must accept every write set up to
    /// the limit and refuse a larger one with `InvalidInput`, applying nothing.
    pub max_txn_bytes: Option<usize>,
    /// More than one read-write transaction can be open at once: a second read-write
    /// `begin` does not wait for the first to finish, and a conflict between them
    /// surfaces as `Conflict` (at `lock` or `commit`). Without it the store runs one
    /// writer at a time: a second read-write `begin` waits for the first (or fails with
    /// `Timeout`). [`KvEngine`](crate::KvEngine) reports it as the engine's
    /// [`Capability::concurrent_writers`](datalayer_core::Capability::concurrent_writers)
    /// and re-runs autocommit operations on `Conflict` only with it.
    pub concurrent_writers: bool,
}

impl KvCapability {
    /// Checks a write set against [`KvCapability::max_txn_bytes`]; `store` names the
    /// store in the message.
    ///
    /// # Errors
    /// `InvalidInput` naming the write set's size and the limit, in bytes, when the
    /// write set is larger than the limit.
    pub fn check_write_set(&self, store: &str, writes: &WriteSet) -> Result<()> {
        let Some(max) = self.max_txn_bytes else {
            return Ok(());
        };
        let n = write_set_bytes(writes);
        if n > max {
            return Err(Error::invalid_input(format!(
                "{store}: a write set of {n} bytes exceeds the store's max_txn_bytes limit of \
                 {max} bytes (keys plus values); split the transaction"
            )));
        }
        Ok(())
    }
}

/// The size of a write set as [`KvCapability::max_txn_bytes`] counts it, in bytes: the
/// sum over its entries of the key's length plus the value's length (a delete counts its
/// key only). Saturates at `usize::MAX`.
pub fn write_set_bytes(writes: &WriteSet) -> usize {
    writes.iter().fold(0usize, |n, (k, v)| {
        n.saturating_add(k.len())
            .saturating_add(v.as_ref().map_or(0, Vec::len))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_set_size_counts_keys_and_values() {
        let w: WriteSet = vec![
            (b"ab".to_vec(), Some(b"xyz".to_vec())),
            (b"c".to_vec(), None),
            (Vec::new(), Some(Vec::new())),
        ];
        assert_eq!(write_set_bytes(&w), 6);
        let cap = KvCapability {
            max_txn_bytes: Some(6),
            ..KvCapability::default()
        };
        cap.check_write_set("s", &w).unwrap();
        let small = KvCapability {
            max_txn_bytes: Some(5),
            ..cap
        };
        let e = small.check_write_set("s", &w).unwrap_err();
        assert!(e.is_invalid_input(), "{e}");
        assert!(e.message().contains("6 bytes") && e.message().contains("limit of 5 bytes"));
        KvCapability::default().check_write_set("s", &w).unwrap();
    }
}
