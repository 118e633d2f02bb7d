//! What an engine can do, declared up front.
//!
//! Modelled on OpenDAL's `Capability`: a flat `Copy` struct of bools and limits. Each
//! engine fills in what it supports (`..Capability::default()` for the rest). Calling
//! something an engine lacks returns [`ErrorKind::Unsupported`](crate::ErrorKind), never a
//! silent no-op, and the conformance suite checks that every declaration matches the
//! behaviour.

use crate::engine::{Isolation, TxOptions};
use crate::error::{Error, Result};

/// The capabilities of one engine. `Default` is "supports nothing optional".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capability {
    /// `Isolation::ReadCommitted` can be requested.
    pub read_committed: bool,
    /// `Isolation::RepeatableRead` can be requested.
    pub repeatable_read: bool,
    /// `Isolation::Snapshot` can be requested.
    pub snapshot: bool,
    /// `Isolation::Serializable` can be requested.
    pub serializable: bool,
    /// Read-only transactions are enforced (writes in them fail with `InvalidInput`).
    pub read_only_tx: bool,
    /// `Tx::savepoint` / `rollback_to` / `release` work.
    pub savepoints: bool,
    /// Concurrent writers may run at the same time (false: one writer at a time).
    pub concurrent_writers: bool,
    /// Batches are pipelined to a server: at most this many statements in flight on
    /// one connection. `None`: batches run in one local pass.
    pub pipeline_depth: Option<usize>,
    /// Largest encoded row accepted, in bytes. `None`: no limit beyond memory.
    pub max_value_bytes: Option<usize>,
    /// Largest encoded key accepted, in bytes. `None`: no limit.
    pub max_key_bytes: Option<usize>,
    /// Committed data survives closing and reopening the engine.
    pub durable: bool,
    /// `Db::changes` streams row changes (change data capture).
    pub change_feed: bool,
    /// The change feed also captures writes made outside datalayer (raw SQL).
    pub change_feed_foreign_writes: bool,
    /// The transactional outbox (`Tx::emit`, `Db::consumer`) works.
    pub outbox: bool,
}

impl Capability {
    /// Checks transaction options against the declared capability: the one place this
    /// check is made ([`crate::Db::begin_with`] calls it before any engine sees the
    /// options, so engines need not repeat it).
    ///
    /// # Errors
    /// `Unsupported` naming `engine` for an isolation level the engine does not declare,
    /// or a read-only transaction without `read_only_tx`.
    pub fn check_tx(&self, engine: &str, opts: TxOptions) -> Result<()> {
        if let Some(level) = opts.isolation
            && !self.supports_isolation(level)
        {
            return Err(Error::unsupported(
                engine,
                format!("isolation level {level:?}"),
            ));
        }
        if opts.read_only && !self.read_only_tx {
            return Err(Error::unsupported(engine, "read-only transactions"));
        }
        Ok(())
    }

    /// Whether `level` can be requested on this engine.
    pub fn supports_isolation(&self, level: Isolation) -> bool {
        match level {
            Isolation::ReadCommitted => self.read_committed,
            Isolation::RepeatableRead => self.repeatable_read,
            Isolation::Snapshot => self.snapshot,
            Isolation::Serializable => self.serializable,
        }
    }
}
