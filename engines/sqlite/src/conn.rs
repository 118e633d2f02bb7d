//! Threads and channels: one writer connection and N reader connections, each owned
//! by its own OS thread; async callers reach them through crossbeam channels and get
//! results back on tokio oneshots.
//!
//! ```text
//!   async callers ──(Job)──► writer channel ──► writer thread (owns the writer conn)
//!                 ──(Job)──► shared reader channel ─┬─► reader thread 1 (owns conn 1)
//!                                                  └─► reader thread N
//!   broadcast (prepare, stop) ──► each thread's private channel
//! ```
//!
//! A job is a boxed closure run on the connection's thread with a [`Conn`]: the
//! connection and the statements prepared on it, keyed by [`StmtKey`] (a query id, a
//! table's repository op, or a scan shape). Statements are prepared once per
//! connection and reused: the hot path is a hash lookup, bind and step.
//!
//! An explicit transaction is a job that starts the transaction and then keeps its
//! connection, serving only that transaction's own channel until commit or rollback
//! ([`tx_loop`]). Dropping the transaction's sender (the `EngineTx` was dropped) ends
//! the loop with a rollback.
//!
//! Waiting for a connection is bounded by `busy_timeout`: a job still queued when the
//! time is up is cancelled (it will not run) and the caller gets `Timeout`. A job that
//! already started is always waited for. A caller whose future is dropped cancels its
//! job the same way when it has not started.

use crate::error::map_err;
use crossbeam_channel::{Receiver, Sender};
use datalayer_core::{Error, ErrorKind, Result};
use datalayer_sql::{StmtDef, StmtKey};
use rusqlite::{Connection, Statement};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// One connection and its prepared statements, owned by the connection's thread.
pub(crate) struct Conn<'c> {
    pub(crate) db: &'c Connection,
    stmts: HashMap<StmtKey, Statement<'c>>,
}

impl<'c> Conn<'c> {
    /// The statement for `key`, preparing `sql` on first use on this connection.
    pub(crate) fn stmt(&mut self, key: StmtKey, sql: &str) -> Result<&mut Statement<'c>> {
        let db = self.db;
        Ok(match self.stmts.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => v.insert(db.prepare(sql).map_err(map_err)?),
        })
    }

    /// The statement of `def`, preparing it on first use on this connection.
    pub(crate) fn prepared(&mut self, def: &StmtDef) -> Result<&mut Statement<'c>> {
        self.stmt(def.key, &def.sql)
    }

    /// Whether `key` is prepared on this connection.
    pub(crate) fn has(&self, key: &StmtKey) -> bool {
        self.stmts.contains_key(key)
    }

    /// Runs fixed SQL without parameters or results (`BEGIN IMMEDIATE`, ...).
    pub(crate) fn fixed(&mut self, sql: &'static str) -> Result<()> {
        self.stmt(StmtKey::Fixed(sql), sql)?
            .raw_execute()
            .map_err(map_err)?;
        Ok(())
    }

    /// Whether a transaction is open on the connection.
    pub(crate) fn in_tx(&self) -> bool {
        !self.db.is_autocommit()
    }

    /// Rolls back the open transaction, if any.
    pub(crate) fn rollback(&mut self) -> Result<()> {
        if self.in_tx() {
            self.fixed("ROLLBACK")?;
        }
        Ok(())
    }
}

pub(crate) type Job = Box<dyn FnOnce(&mut Conn<'_>) + Send>;

enum Msg {
    Job(Job),
    Stop(oneshot::Sender<()>),
}

/// Runs `f` in a transaction (`begin` = `BEGIN IMMEDIATE` or `BEGIN DEFERRED`),
/// committing on `Ok` and rolling back on `Err`.
pub(crate) fn atomically<R>(
    c: &mut Conn<'_>,
    begin: &'static str,
    f: impl FnOnce(&mut Conn<'_>) -> Result<R>,
) -> Result<R> {
    c.fixed(begin)?;
    match f(c) {
        Ok(v) => match c.fixed("COMMIT") {
            Ok(()) => Ok(v),
            Err(e) => {
                let _ = c.rollback();
                Err(e)
            }
        },
        Err(e) => {
            let _ = c.rollback();
            Err(e)
        }
    }
}

/// State of an explicit transaction, kept on its connection's thread.
#[derive(Debug, Default)]
pub(crate) struct TxState {
    /// SQLite rolled the transaction back by itself after an error (SQLITE_FULL,
    /// IOERR, BUSY, NOMEM): every later op fails.
    pub(crate) aborted: bool,
}

/// A job of an explicit transaction; returns true when the transaction is finished.
pub(crate) type TxJob = Box<dyn FnOnce(&mut Conn<'_>, &mut TxState) -> bool + Send>;

/// Serves one transaction on `c` until a job finishes it or its sender is dropped
/// (then: rollback).
fn tx_loop(c: &mut Conn<'_>, rx: Receiver<TxJob>, mut st: TxState) {
    loop {
        match rx.recv() {
            Ok(job) => {
                if job(c, &mut st) {
                    return;
                }
            }
            Err(_) => {
                if let Err(e) = c.rollback() {
                    tracing::warn!(error = %e, "sqlite: rollback of a dropped transaction failed");
                }
                return;
            }
        }
    }
}

fn worker(conn: Connection, private: Receiver<Msg>, shared: Option<Receiver<Msg>>) {
    let ack = {
        let mut c = Conn {
            db: &conn,
            stmts: HashMap::new(),
        };
        loop {
            let msg = match &shared {
                None => private.recv().ok(),
                Some(s) => crossbeam_channel::select_biased! {
                    recv(private) -> m => m.ok(),
                    recv(s) -> m => m.ok(),
                },
            };
            match msg {
                Some(Msg::Job(job)) => job(&mut c),
                Some(Msg::Stop(ack)) => break Some(ack),
                None => break None,
            }
        }
        // `c` (the statements) is dropped here, before the connection.
    };
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "sqlite: closing a connection failed");
    }
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
}

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const CANCELLED: u8 = 2;

/// Cancels a job that has not started when the waiting future goes away.
struct CancelOnDrop(Arc<AtomicU8>);
impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let _ = self
            .0
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire);
    }
}

pub(crate) fn closed() -> Error {
    Error::invalid_input("the sqlite engine is closed")
}

/// The connection threads of one engine.
pub(crate) struct Pool {
    writer: Sender<Msg>,
    /// `None` for an in-memory database: reads go to the writer.
    readers: Option<Sender<Msg>>,
    reader_private: Vec<Sender<Msg>>,
    wait: Duration,
    closed: Arc<AtomicBool>,
    /// Opens a read connection on a caller's thread ([`Pool::read_here`]); `None`:
    /// every read goes to the reader threads.
    local: Option<LocalOpen>,
    /// Tells this pool's caller-thread connections from other pools'.
    id: u64,
}

/// How [`Pool::read_here`] opens a thread's read connection.
pub(crate) type LocalOpen = Arc<dyn Fn() -> Result<Connection> + Send + Sync>;

self_cell::self_cell!(
    /// A read connection with its prepared statements, kept by a caller's thread.
    struct LocalConn {
        owner: Connection,
        #[covariant]
        dependent: Conn,
    }
);

/// A caller-thread connection of one pool ([`Pool::read_here`]).
struct Local {
    pool: u64,
    closed: Arc<AtomicBool>,
    conn: LocalConn,
}

impl Local {
    fn open(pool: &Pool, open: &LocalOpen) -> Result<Local> {
        let conn = LocalConn::new(open()?, |db| Conn {
            db,
            stmts: HashMap::new(),
        });
        Ok(Local {
            pool: pool.id,
            closed: pool.closed.clone(),
            conn,
        })
    }
}

thread_local! {
    /// This thread's read connections, one per open pool that read here.
    static LOCAL: std::cell::RefCell<Vec<Local>> = const { std::cell::RefCell::new(Vec::new()) };
}

static POOL_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Pool {
    /// Starts a thread per connection. `writer` first, then `readers` (empty for an
    /// in-memory database).
    pub(crate) fn start(
        writer: Connection,
        readers: Vec<Connection>,
        wait: Duration,
        local: Option<LocalOpen>,
    ) -> Result<Pool> {
        let (wtx, wrx) = crossbeam_channel::unbounded();
        spawn("datalayer-sqlite-writer".into(), move || {
            worker(writer, wrx, None)
        })?;
        let mut reader_private = Vec::new();
        let shared = if readers.is_empty() {
            None
        } else {
            let (stx, srx) = crossbeam_channel::unbounded();
            for (i, conn) in readers.into_iter().enumerate() {
                let (ptx, prx) = crossbeam_channel::unbounded();
                let srx = srx.clone();
                spawn(format!("datalayer-sqlite-reader-{i}"), move || {
                    worker(conn, prx, Some(srx))
                })?;
                reader_private.push(ptx);
            }
            Some(stx)
        };
        Ok(Pool {
            writer: wtx,
            readers: shared,
            reader_private,
            wait,
            closed: Arc::new(AtomicBool::new(false)),
            local,
            id: POOL_IDS.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Whether reads can run on the caller's thread ([`Pool::read_here`]).
    pub(crate) fn reads_here(&self) -> bool {
        self.local.is_some()
    }

    /// Runs `f` now, on the caller's thread, on this thread's read connection of the
    /// pool (opened at the thread's first read; its statements prepared at first use
    /// and kept): no hop to a reader thread and back, which costs more than a point
    /// read itself. SQLite's WAL lets it read beside the writer. The thread is busy
    /// for the read's length, which a long scan makes long (turn it off with the
    /// `caller_reads=false` URL parameter). Connections of a closed pool are closed
    /// at the thread's next read or when it exits.
    ///
    /// # Errors
    /// `InvalidInput` when the pool is closed or has no caller-thread reads; opening
    /// the connection's errors; `f`'s.
    pub(crate) fn read_here<R>(&self, f: impl FnOnce(&mut Conn<'_>) -> Result<R>) -> Result<R> {
        self.check_open()?;
        let open = self
            .local
            .as_ref()
            .ok_or_else(|| Error::invalid_input("sqlite: no caller-thread reads on this engine"))?;
        LOCAL.with(|cell| {
            let mut locals = cell.borrow_mut();
            locals.retain(|l| !l.closed.load(Ordering::Acquire));
            let i = match locals.iter().position(|l| l.pool == self.id) {
                Some(i) => i,
                None => {
                    locals.push(Local::open(self, open)?);
                    locals.len() - 1
                }
            };
            locals[i].conn.with_dependent_mut(|_, c| f(c))
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        Ok(())
    }

    /// Sends a job that gets a reply channel, and waits for the reply (bounded by
    /// `busy_timeout` while the job is queued).
    async fn submit_with<R: Send + 'static>(
        &self,
        chan: &Sender<Msg>,
        f: impl FnOnce(&mut Conn<'_>, oneshot::Sender<Result<R>>) + Send + 'static,
    ) -> Result<R> {
        self.check_open()?;
        let state = Arc::new(AtomicU8::new(PENDING));
        let (tx, mut rx) = oneshot::channel();
        let st = state.clone();
        let job: Job = Box::new(move |c: &mut Conn<'_>| {
            if st
                .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                f(c, tx);
            }
        });
        chan.send(Msg::Job(job)).map_err(|_| closed())?;
        let _cancel = CancelOnDrop(state.clone());
        match tokio::time::timeout(self.wait, &mut rx).await {
            Ok(r) => r.map_err(|_| closed())?,
            Err(_) => {
                if state
                    .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "waited {} ms for a sqlite connection (is a transaction holding the writer?)",
                            self.wait.as_millis()
                        ),
                    ));
                }
                rx.await.map_err(|_| closed())?
            }
        }
    }

    async fn submit<R: Send + 'static>(
        &self,
        chan: &Sender<Msg>,
        f: impl FnOnce(&mut Conn<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.submit_with(chan, move |c, reply| {
            let _ = reply.send(f(c));
        })
        .await
    }

    /// Runs `f` on the writer connection.
    pub(crate) async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.submit(&self.writer, f).await
    }

    /// Runs `f` on a free reader connection (the writer for in-memory databases).
    pub(crate) async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.submit(self.readers.as_ref().unwrap_or(&self.writer), f)
            .await
    }

    /// Runs `f` on every connection, e.g. to prepare statements: on the writer now
    /// (its error is returned), on each reader when it is next free, without waiting.
    /// A reader may be serving a read-only transaction, possibly the very caller's (a
    /// table first used inside one is created, then prepared): waiting for it would
    /// wait for ourselves until the timeout. A reader's error is dropped: a statement
    /// that did not prepare there is prepared again at first use and fails then.
    pub(crate) async fn each(
        &self,
        f: impl Fn(&mut Conn<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Result<()> {
        let f = Arc::new(f);
        let g = f.clone();
        self.submit(&self.writer, move |c| g(c)).await?;
        self.check_open()?;
        for chan in &self.reader_private {
            let g = f.clone();
            // A closed channel: the pool is closing; the next call says so.
            let _ = chan.send(Msg::Job(Box::new(move |c: &mut Conn<'_>| {
                let _ = g(c);
            })));
        }
        Ok(())
    }

    /// Starts an explicit transaction: on the writer (`read_only == false`), else on
    /// a reader. `begin` runs first; the connection then serves only the returned
    /// channel until a job finishes the transaction or the sender is dropped.
    pub(crate) async fn begin(
        &self,
        read_only: bool,
        begin: impl FnOnce(&mut Conn<'_>) -> Result<()> + Send + 'static,
    ) -> Result<Sender<TxJob>> {
        let (tx, rx) = crossbeam_channel::unbounded::<TxJob>();
        let chan = if read_only {
            self.readers.as_ref().unwrap_or(&self.writer)
        } else {
            &self.writer
        };
        self.submit_with(chan, move |c, reply| {
            if let Err(e) = begin(c) {
                let _ = c.rollback();
                let _ = reply.send(Err(e));
                return;
            }
            if reply.send(Ok(())).is_err() {
                // The caller went away before it got the transaction.
                let _ = c.rollback();
                return;
            }
            tx_loop(c, rx, TxState::default());
        })
        .await?;
        Ok(tx)
    }

    /// Stops every thread after the work queued before it; later calls fail.
    pub(crate) async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut acks = Vec::new();
        for chan in self.reader_private.iter().chain([&self.writer]) {
            let (tx, rx) = oneshot::channel();
            if chan.send(Msg::Stop(tx)).is_ok() {
                acks.push(rx);
            }
        }
        for a in acks {
            let _ = a.await;
        }
        Ok(())
    }
}

/// Sends one job to an explicit transaction's connection and waits for its result.
/// `f` returns the result and whether the transaction is finished.
pub(crate) async fn tx_call<R: Send + 'static>(
    chan: &Sender<TxJob>,
    f: impl FnOnce(&mut Conn<'_>, &mut TxState) -> (Result<R>, bool) + Send + 'static,
) -> Result<R> {
    let (tx, rx) = oneshot::channel();
    let job: TxJob = Box::new(move |c: &mut Conn<'_>, st: &mut TxState| {
        let (r, done) = f(c, st);
        let _ = tx.send(r);
        done
    });
    chan.send(job)
        .map_err(|_| Error::invalid_input("the transaction's connection is gone"))?;
    rx.await
        .map_err(|_| Error::invalid_input("the transaction's connection is gone"))?
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(Error::from)?;
    Ok(())
}
