//! The PostgreSQL outbox [`Driver`]: consumers wake on `LISTEN`/`NOTIFY` instead of
//! polling, and claim partition leases with `FOR UPDATE SKIP LOCKED`.
//!
//! ```text
//!   producer tx ── INSERT INTO _dl_outbox ──► trigger _dl_outbox_notify (per statement)
//!                                              └─ pg_notify(channel of (schema, topic))
//!                                                 delivered at COMMIT, dropped at ROLLBACK
//!   PgDriver ── dedicated connection (not pooled) ── LISTEN channel ──► wakes `wait`
//! ```
//!
//! - **Notifying**: a statement-level `AFTER INSERT` trigger on `_dl_outbox`, installed
//!   once per schema (under an advisory lock, so concurrent workers do not race),
//!   sends one notification per topic written by the statement. `NOTIFY` is
//!   transactional: delivered when the producing transaction commits, never when it
//!   rolls back. Being a trigger, it also covers events inserted by raw SQL.
//! - **Channels**: `dl_outbox_` followed by the first 20 hex digits of
//!   `md5(<schema> || '/' || <topic>)`, computed by the server on both sides (so the
//!   name is a plain identifier of 30 bytes whatever the schema and topic).
//! - **Waiting** ([`Driver::wait`]): returns when a notification for the topic arrived
//!   since the previous `wait` returned, or after the poll interval at most: the
//!   interval stays as a fallback, since notifications sent while the listening
//!   connection is down are lost. The listening connection is opened on first use,
//!   re-opened after errors (with backoff), and closed when the driver is dropped;
//!   after every (re)connection waiters are woken once, in case something was missed.
//! - **Claiming** ([`Driver::claim`]): one statement, so one transaction: select the
//!   group's free or expired lease rows `FOR UPDATE SKIP LOCKED LIMIT n`, then set the
//!   owner and expiry and increment the fencing token of exactly those rows. Workers
//!   claiming at the same time skip each other's locked rows instead of waiting for
//!   them, and never take the same partition. The semantics are those of the generic
//!   claim: a row is free when `lease_until_us < now`; the token returned is the one
//!   stored (previous plus one). A successful claim also wakes this driver's waiters,
//!   so newly owned partitions are looked at at once.
//!
//! [`crate::PgEngine`] hands a new `PgDriver` to every consumer
//! ([`Engine::extension`](datalayer_core::Engine::extension) for
//! `Arc<dyn datalayer_outbox::Driver>`), so each
//! consumer has its own listening connection.

use crate::PgEngine;
use crate::config::PgOptions;
use crate::error::map_err;
use async_trait::async_trait;
use datalayer_core::{Db, Error, Result};
use datalayer_outbox::{Claim, Driver};
use datalayer_sql::Dialect;
use datalayer_sql::StmtKey;
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, Client, Connection};

/// The claim: free or expired rows of the group, locked without waiting for rows other
/// workers hold, then taken in the same statement (so the same transaction).
const CLAIM_SQL: &str = "WITH c AS (\
     SELECT part FROM _dl_outbox_groups \
     WHERE grp = $1 AND topic = $2 AND lease_until_us < $3 \
     ORDER BY part LIMIT $4 FOR UPDATE SKIP LOCKED) \
     UPDATE _dl_outbox_groups g \
     SET lease_owner = $5, lease_until_us = $6, fencing = g.fencing + 1 \
     FROM c WHERE g.grp = $1 AND g.topic = $2 AND g.part = c.part \
     RETURNING g.part, g.fencing";

const CLAIM_TYPES: [Type; 6] = [
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
];

/// The channel of a topic in the connection's current schema (the trigger computes
/// the same from `TG_TABLE_SCHEMA`).
const CHANNEL_SQL: &str =
    "SELECT 'dl_outbox_' || left(md5(current_schema() || '/' || $1::text), 20)";

/// Installs the notifying trigger on `_dl_outbox` of the current schema, once: a
/// no-op when it exists or when the table does not exist yet.
const INSTALL_SQL: &str = r#"DO $dl$
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '/_dl_outbox_notify'));
  IF to_regclass('_dl_outbox') IS NULL THEN
    RETURN;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_trigger
             WHERE tgrelid = to_regclass('_dl_outbox') AND tgname = '_dl_outbox_notify') THEN
    RETURN;
  END IF;
  CREATE OR REPLACE FUNCTION _dl_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $f$
  BEGIN
    PERFORM pg_notify('dl_outbox_' || left(md5(TG_TABLE_SCHEMA || '/' || t.topic), 20), '')
      FROM (SELECT DISTINCT topic FROM dl_new_events) t;
    RETURN NULL;
  END
  $f$;
  CREATE TRIGGER _dl_outbox_notify AFTER INSERT ON _dl_outbox
    REFERENCING NEW TABLE AS dl_new_events
    FOR EACH STATEMENT EXECUTE FUNCTION _dl_outbox_notify();
END
$dl$"#;

/// Longest pause between two attempts to re-open the listening connection.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The outbox [`Driver`] of PostgreSQL: `LISTEN`/`NOTIFY` wake-ups and
/// `SKIP LOCKED` claims (see the module docs).
///
/// Consumers on a [`PgEngine`] get one automatically; build one with
/// [`PgDriver::new`] to pass it explicitly with
/// [`ConsumerBuilder::driver`](datalayer_outbox::ConsumerBuilder::driver). It
/// works on the engine it was built from, whatever `Db` the consumer runs on.
pub struct PgDriver {
    engine: PgEngine,
    shared: Arc<Shared>,
    /// Topics to listen to, for the listening task; `None` until it is started.
    /// Dropping the driver drops the sender, which ends the task.
    cmd: Mutex<Option<mpsc::UnboundedSender<String>>>,
}

impl std::fmt::Debug for PgDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let topics: Vec<String> = self.shared.topics.lock().keys().cloned().collect();
        f.debug_struct("PgDriver")
            .field("schema", &self.engine.options().schema)
            .field("topics", &topics)
            .finish()
    }
}

/// State shared with the listening task.
#[derive(Default)]
struct Shared {
    topics: Mutex<HashMap<String, TopicState>>,
}

struct TopicState {
    /// Counts wake-ups (notifications, reconnections, claims).
    tx: watch::Sender<u64>,
    /// The count when the previous `wait` on this topic returned.
    seen: u64,
}

impl Shared {
    fn bump(&self, topic: &str) {
        if let Some(t) = self.topics.lock().get(topic) {
            t.tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn bump_all(&self) {
        for t in self.topics.lock().values() {
            t.tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

impl PgDriver {
    /// A driver working on `engine`'s schema. Opens nothing yet: the listening
    /// connection opens at the first [`Driver::wait`].
    pub fn new(engine: &PgEngine) -> PgDriver {
        PgDriver {
            engine: engine.clone(),
            shared: Arc::new(Shared::default()),
            cmd: Mutex::new(None),
        }
    }

    /// Registers `topic` (listened to from now on) and returns a receiver of its
    /// wake-up count and the count the previous `wait` saw.
    fn subscribe(&self, topic: &str) -> (watch::Receiver<u64>, u64) {
        let (rx, seen, new) = {
            let mut topics = self.shared.topics.lock();
            match topics.get(topic) {
                Some(t) => (t.tx.subscribe(), t.seen, false),
                None => {
                    let (tx, rx) = watch::channel(0);
                    topics.insert(topic.to_owned(), TopicState { tx, seen: 0 });
                    (rx, 0, true)
                }
            }
        };
        let mut cmd = self.cmd.lock();
        let started = cmd.as_ref().is_some_and(|c| !c.is_closed());
        if !started {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(listen_loop(
                self.engine.backend().options.clone(),
                self.shared.clone(),
                rx,
            ));
            *cmd = Some(tx);
        } else if new && let Some(c) = cmd.as_ref() {
            let _ = c.send(topic.to_owned());
        }
        (rx, seen)
    }
}

#[async_trait]
impl Driver for PgDriver {
    async fn wait(&self, _db: &Db, topic: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (mut rx, seen) = self.subscribe(topic);
        let closed = matches!(
            tokio::time::timeout_at(deadline, rx.wait_for(|n| *n != seen)).await,
            Ok(Err(_))
        );
        if closed {
            // The sender is gone (cannot happen while the driver lives): fall back.
            tokio::time::sleep_until(deadline).await;
        }
        let now = *rx.borrow();
        if let Some(t) = self.shared.topics.lock().get_mut(topic) {
            t.seen = now;
        }
    }

    async fn claim(&self, _db: &Db, req: &Claim<'_>) -> Result<Vec<(u32, i64)>> {
        if req.want == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.engine.backend().pool.get().await?;
        let stmt = c
            .stmt(StmtKey::Fixed(CLAIM_SQL), CLAIM_SQL, &CLAIM_TYPES)
            .await?;
        let want = i64::try_from(req.want).unwrap_or(i64::MAX);
        let rows = c
            .client
            .query(
                &stmt,
                &[
                    &req.group,
                    &req.topic,
                    &req.now_us,
                    &want,
                    &req.worker,
                    &req.until_us,
                ],
            )
            .await
            .map_err(|e| c.lost(map_err(e)))?;
        let mut got = Vec::with_capacity(rows.len());
        for r in &rows {
            let part: i32 = r.try_get(0).map_err(map_err)?;
            let fencing: i64 = r.try_get(1).map_err(map_err)?;
            got.push((part as u32, fencing));
        }
        got.sort_unstable();
        if !got.is_empty() {
            // Newly owned partitions may hold events already: look now.
            self.shared.bump(req.topic);
        }
        Ok(got)
    }
}

/// The listening task: one session after another until the driver is dropped.
async fn listen_loop(
    opts: Arc<PgOptions>,
    shared: Arc<Shared>,
    mut cmd: mpsc::UnboundedReceiver<String>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(&opts, &shared, &mut cmd, &mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "postgres outbox: listening connection failed; reconnecting");
            }
        }
        let pause = tokio::time::sleep(backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                // Topics sent meanwhile are in `shared` already: listened to on reconnect.
                c = cmd.recv() => if c.is_none() { return },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One listening connection: listens to every known topic, then forwards
/// notifications as wake-ups. `Ok` when the driver was dropped, `Err` when the
/// connection failed.
async fn session(
    opts: &PgOptions,
    shared: &Shared,
    cmd: &mut mpsc::UnboundedReceiver<String>,
    backoff: &mut Duration,
) -> Result<()> {
    let (client, mut notes) = connect(opts).await?;
    if let Some(schema) = &opts.schema {
        client
            .batch_execute(&format!(
                "SET search_path TO {}",
                crate::dialect::PgDialect.quote_ident(schema)
            ))
            .await
            .map_err(map_err)?;
    }
    let mut channels: HashMap<String, String> = HashMap::new();
    let topics: Vec<String> = shared.topics.lock().keys().cloned().collect();
    for t in &topics {
        listen(&client, &mut channels, t).await?;
    }
    install_trigger(&client).await?;
    *backoff = Duration::from_millis(100);
    // Notifications sent while nobody listened are lost: have every waiter look once.
    shared.bump_all();
    loop {
        tokio::select! {
            n = notes.recv() => match n {
                Some(channel) => {
                    if let Some(t) = channels.get(&channel) {
                        shared.bump(t);
                    }
                }
                None => return Err(Error::connection_lost("postgres outbox: the listening connection closed")),
            },
            c = cmd.recv() => match c {
                None => return Ok(()),
                Some(t) => {
                    if !channels.values().any(|x| *x == t) {
                        listen(&client, &mut channels, &t).await?;
                        install_trigger(&client).await?;
                    }
                    shared.bump(&t);
                }
            },
        }
    }
}

async fn listen(
    client: &Client,
    channels: &mut HashMap<String, String>,
    topic: &str,
) -> Result<()> {
    let row = client
        .query_one(CHANNEL_SQL, &[&topic])
        .await
        .map_err(map_err)?;
    let channel: String = row.try_get(0).map_err(map_err)?;
    // `dl_outbox_` and hex digits: a plain identifier, nothing to quote.
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .map_err(map_err)?;
    channels.insert(channel, topic.to_owned());
    Ok(())
}

async fn install_trigger(client: &Client) -> Result<()> {
    client.batch_execute(INSTALL_SQL).await.map_err(map_err)
}

/// Opens the dedicated listening connection (not pooled): its connection task
/// forwards the channel of each notification.
async fn connect(o: &PgOptions) -> Result<(Client, mpsc::UnboundedReceiver<String>)> {
    let mut config = o.config.clone();
    config.connect_timeout(o.connect_timeout);
    #[cfg(feature = "tls")]
    if config.get_ssl_mode() != tokio_postgres::config::SslMode::Disable {
        let (client, conn) = config
            .connect(crate::tls::connector()?)
            .await
            .map_err(map_err)?;
        return Ok((client, forward(conn)));
    }
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(map_err)?;
    Ok((client, forward(conn)))
}

/// Drives `conn` on a task, sending the channel of every notification; the receiver
/// sees the end of the stream when the connection ends.
fn forward<S, T>(mut conn: Connection<S, T>) -> mpsc::UnboundedReceiver<String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.channel().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "postgres outbox: listening connection ended with an error");
                    break;
                }
            }
        }
    });
    rx
}
