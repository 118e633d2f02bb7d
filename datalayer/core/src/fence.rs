//! The write fence of a [`Db`](crate::Db): what a cut-over closes so that no write
//! reaches the old engine while the last changes drain to the new one.
//!
//! Every write through a `Db` (a write op, a batch with a write, a read-write
//! transaction from `begin` to its commit or rollback) holds a shared permit of the
//! gate; [`Db::fence_writes`](crate::Db::fence_writes) takes it exclusively, which waits
//! for the writes in flight to finish, and holds it until the [`WriteFence`] is
//! dropped. Meanwhile new writes wait, at most the fence's `writer_wait`, then fail
//! with `Timeout`. Sealing the fence ([`WriteFence::seal`]) refuses every later write
//! for good. Reads are never fenced. The gate is tokio's fair `RwLock`: once a
//! fence waits, later writers queue behind it, so the drain cannot starve.

use crate::error::{Error, ErrorKind, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// The gate every write of one `Db` passes.
#[derive(Debug, Default)]
pub(crate) struct WriteGate {
    lock: Arc<RwLock<()>>,
    /// How long a writer waits on a fence, in milliseconds (set by the fence).
    writer_wait_ms: AtomicU64,
    /// Writes are refused for good ([`WriteFence::seal`]).
    sealed: Arc<AtomicBool>,
}

/// The error code of a write refused by a sealed `Db` ([`WriteFence::seal`]).
pub const SEALED: &str = "DLSEALED";

fn sealed() -> Error {
    Error::connection_lost(
        "writes to this database are closed: it was cut over to another engine; \
         nothing was applied, write to the new one",
    )
    .with_code(SEALED)
}

/// A permit to write; dropping it ends the write's hold on the gate.
pub(crate) type WritePermit = OwnedRwLockReadGuard<()>;

impl WriteGate {
    /// A permit for one write: at once when no fence is up, else after waiting at
    /// most the fence's writer wait.
    ///
    /// # Errors
    /// `Timeout` when the fence is still up after the wait.
    pub(crate) async fn admit(&self) -> Result<WritePermit> {
        if let Ok(p) = self.lock.clone().try_read_owned() {
            return self.unsealed(p);
        }
        let wait = Duration::from_millis(self.writer_wait_ms.load(Ordering::Relaxed));
        let p = tokio::time::timeout(wait, self.lock.clone().read_owned())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "writes to this database are fenced (a cut-over to another engine); \
                         waited {} ms",
                        wait.as_millis()
                    ),
                )
            })?;
        self.unsealed(p)
    }

    /// `p`, unless the gate is sealed: then `ConnectionLost` with code [`SEALED`]
    /// (checked after the permit is granted, so that writers waiting on the fence
    /// when it is sealed are refused, not let in).
    fn unsealed(&self, p: WritePermit) -> Result<WritePermit> {
        if self.sealed.load(Ordering::Acquire) {
            return Err(sealed());
        }
        Ok(p)
    }

    /// Raises the fence once every write in flight has finished (waiting at most
    /// `drain`); writers arriving meanwhile wait at most `writer_wait` each.
    ///
    /// # Errors
    /// `Timeout` when writes are still in flight after `drain` (the fence is not up).
    pub(crate) async fn fence(&self, drain: Duration, writer_wait: Duration) -> Result<WriteFence> {
        self.writer_wait_ms
            .store(writer_wait.as_millis() as u64, Ordering::Relaxed);
        let guard = tokio::time::timeout(drain, self.lock.clone().write_owned())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "writes still in flight after {} ms: the fence was not raised",
                        drain.as_millis()
                    ),
                )
            })?;
        Ok(WriteFence {
            guard,
            sealed: self.sealed.clone(),
        })
    }
}

/// Writes through the `Db` that raised it are held while this lives (see the module
/// docs); dropping it lets them in again (a cut-over rolled back), [`WriteFence::seal`]
/// refuses them for good (a cut-over finished).
#[derive(Debug)]
#[must_use = "the fence falls when this is dropped"]
pub struct WriteFence {
    guard: OwnedRwLockWriteGuard<()>,
    sealed: Arc<AtomicBool>,
}

impl WriteFence {
    /// Closes the `Db` to writes for good: every write through it, those waiting on
    /// this fence included, fails at once with `ConnectionLost` (nothing applied) and
    /// the code [`SEALED`], so that an application retrying on retryable errors
    /// re-reads where to write. Reads go on.
    pub fn seal(self) {
        self.sealed.store(true, Ordering::Release);
        drop(self.guard);
    }
}
