//! The Redis outbox [`Driver`]: idle consumers wake on a Pub/Sub message instead of
//! polling.
//!
//! ```text
//!   commit function ── PUBLISH {ns}:outbox <counter> ──► subscription task ──► wakes `wait`
//! ```
//!
//! - **Publishing**: a commit whose write set puts a row of the outbox's events table
//!   (`_dl_outbox`, an `emit`) asks the commit function to `PUBLISH` the new commit
//!   counter on the namespace's channel `{namespace}:outbox`, inside the same atomic
//!   call, so the message is sent only if the commit is applied (Redis Pub/Sub,
//!   redis.io/docs/latest/develop/interact/pubsub).
//! - **Waiting** ([`Driver::wait`]): returns when a message arrived since the previous
//!   `wait` returned, or after the timeout (the consumer's poll interval, which stays
//!   the fallback: Pub/Sub is at-most-once, a message sent while the subscription was
//!   reconnecting is lost). The subscription is one dedicated connection per driver,
//!   opened at the first `wait`; after it breaks it is opened again and every waiter is
//!   woken (events may have been missed).
//! - **Redis Cluster**: a classic `PUBLISH` is propagated to every node of the cluster
//!   over the cluster bus (redis.io/docs/latest/develop/interact/pubsub, "Pub/Sub and
//!   Redis Cluster"), so the driver subscribes on one node, the first seed node it can
//!   reach; after the subscription breaks it tries the next seed.
//! - **Claiming**: the generic conditional updates of the outbox (Redis serializes them
//!   through the commit function).
//!
//! [`RedisKv`](crate::RedisKv) hands a new `RedisDriver` to every consumer
//! ([`Engine::extension`](datalayer_core::Engine::extension) for
//! `Arc<dyn datalayer_outbox::Driver>`). Messages wake every consumer of the namespace,
//! whatever their topic: a wake-up only makes a consumer look.

use async_trait::async_trait;
use datalayer_core::Db;
use datalayer_outbox::Driver;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// The name of the outbox's events table (`datalayer_outbox::tables`).
pub(crate) const EVENTS_TABLE: &str = "_dl_outbox";

/// The outbox [`Driver`] of Redis: Pub/Sub wake-ups, generic claims. Made by
/// [`RedisKv::outbox_driver`](crate::RedisKv::outbox_driver), or handed to consumers
/// by the engine.
pub struct RedisDriver {
    /// The server, or the cluster's seed nodes (tried in turn).
    clients: Vec<redis::Client>,
    channel: String,
    /// Counts messages (and reconnections); waiters watch it.
    wakeups: watch::Sender<u64>,
    /// The count the previous `wait` returned at.
    seen: AtomicU64,
    /// The subscription task, once started.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDriver")
            .field("channel", &self.channel)
            .field("wakeups", &*self.wakeups.borrow())
            .finish()
    }
}

impl RedisDriver {
    /// A driver listening on `channel` through one of `clients` (not empty). Opens
    /// nothing yet.
    pub(crate) fn new(clients: Vec<redis::Client>, channel: String) -> Self {
        RedisDriver {
            clients,
            channel,
            wakeups: watch::channel(0).0,
            seen: AtomicU64::new(0),
            task: Mutex::new(None),
        }
    }

    /// Starts the subscription task if it is not running.
    fn start(&self) {
        let mut task = self.task.lock();
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let (clients, channel, tx) = (
            self.clients.clone(),
            self.channel.clone(),
            self.wakeups.clone(),
        );
        *task = Some(tokio::spawn(listen_loop(clients, channel, tx)));
    }
}

impl Drop for RedisDriver {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }
}

/// Subscribes to `channel` and bumps `tx` per message; after a broken connection
/// subscribes again, through the next of `clients` (after 100 ms, up to 2 s between
/// attempts), and bumps once, since messages may have been lost meanwhile. Ends when
/// every receiver is gone.
async fn listen_loop(clients: Vec<redis::Client>, channel: String, tx: watch::Sender<u64>) {
    use futures::StreamExt;
    let mut backoff = Duration::from_millis(100);
    let mut next = 0usize;
    loop {
        let client = &clients[next % clients.len()];
        next = next.wrapping_add(1);
        match client.get_async_pubsub().await {
            Ok(mut sub) => {
                if sub.subscribe(&channel).await.is_ok() {
                    backoff = Duration::from_millis(100);
                    // Anything may have been committed before the subscription.
                    tx.send_modify(|n| *n += 1);
                    let mut messages = sub.on_message();
                    while messages.next().await.is_some() {
                        tx.send_modify(|n| *n += 1);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "redis outbox driver: subscription failed"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        tx.send_modify(|n| *n += 1);
    }
}

#[async_trait]
impl Driver for RedisDriver {
    async fn wait(&self, _db: &Db, _topic: &str, timeout: Duration) {
        self.start();
        let mut rx = self.wakeups.subscribe();
        let seen = self.seen.load(Ordering::Acquire);
        let _ = tokio::time::timeout(timeout, rx.wait_for(|n| *n != seen)).await;
        let now = *rx.borrow();
        self.seen.store(now, Ordering::Release);
    }
}
