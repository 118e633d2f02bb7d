//! The write fence of a [`Db`](crate::Db): what a cut-over closes so that no write
//! reaches the old engine while the last changes drain to the new one.
//!
//! Every write through a `Db` (a write op, a batch with a write, a read-write
//! transaction from `begin` to its commit or rollback) holds a shared permit of the
//! gate; [`Db::fence_writes`](crate::Db::fence_writes) takes it exclusively, which waits
//! for the writes in flight to finish, and holds it until the [`WriteFence`] is
//! dropped. Meanwhile new writes wait, at most the fence's `writer_wait`, then fail
//! with `Timeout`. Reads are never fenced. The gate is tokio's fair `RwLock`: once a
//! fence waits, later writers queue behind it, so the drain cannot starve.

use crate::error::{Error, ErrorKind, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// The gate every write of one `Db` passes.
#[derive(Debug, Default)]
pub(crate) struct WriteGate {
    lock: Arc<RwLock<()>>,
    /// How long a writer waits on a fence, in milliseconds (set by the fence).
    writer_wait_ms: AtomicU64,
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
            return Ok(p);
        }
        let wait = Duration::from_millis(self.writer_wait_ms.load(Ordering::Relaxed));
        tokio::time::timeout(wait, self.lock.clone().read_owned())
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
            })
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
        Ok(WriteFence { _guard: guard })
    }
}

/// Writes through the `Db` that raised it are held while this lives (see the module
/// docs); dropping it lets them in again.
#[derive(Debug)]
#[must_use = "the fence falls when this is dropped"]
pub struct WriteFence {
    _guard: OwnedRwLockWriteGuard<()>,
}
