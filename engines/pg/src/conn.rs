//! Connections: a deadpool pool of tokio-postgres clients, each with the statements
//! prepared on it.
//!
//! ```text
//!   callers ──get()──► deadpool (max pool_size) ──► PgConn { client, stmts: StmtKey → Statement }
//!                                                   └─ its Connection future runs on a tokio task
//! ```
//!
//! - **Opening** a connection ([`Manager::create`]): connect (TLS with the `tls`
//!   feature when `sslmode` asks for it), `SET search_path` to the engine's schema,
//!   then prepare every statement registered so far, all pipelined in one round trip.
//! - **Registered statements** ([`Eager`]): a list with a generation number. When the
//!   application registers more queries, the generation moves on, and each connection
//!   prepares what it lacks the next time it is checked out. Statements first seen
//!   later (a new scan shape) are prepared on first use per connection.
//! - **Recycling** ([`Manager::recycle`]): a connection goes back into service only if
//!   its socket is open and it is not `tainted`. A connection is tainted while a
//!   transaction is open on it; it is cleared only after `COMMIT`/`ROLLBACK` succeeded.
//!   So a connection whose transaction was abandoned (a cancelled future, a dropped
//!   transaction whose background rollback failed) or whose server went away is
//!   discarded, and the pool opens a fresh one.

use crate::config::PgOptions;
use crate::error::{map_err, map_pool_err};
use crate::value::pg_type;
use datalayer_core::{Error, Result};
use datalayer_sql::{Dialect, StmtDef, StmtKey};
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

/// The statements every connection prepares when it opens (or at its next checkout
/// after more were registered).
#[derive(Default)]
pub(crate) struct Eager {
    inner: RwLock<(u64, Arc<Vec<StmtDef>>)>,
}

impl Eager {
    /// Adds statements (keys already present are skipped) and moves the generation on.
    pub(crate) fn add(&self, defs: Vec<StmtDef>) {
        let mut w = self.inner.write();
        let mut list: Vec<StmtDef> = w.1.as_ref().clone();
        let before = list.len();
        for d in defs {
            if !list.iter().any(|x| x.key == d.key) {
                list.push(d);
            }
        }
        if list.len() != before {
            w.0 += 1;
            w.1 = Arc::new(list);
        }
    }

    fn snapshot(&self) -> (u64, Arc<Vec<StmtDef>>) {
        let r = self.inner.read();
        (r.0, r.1.clone())
    }
}

/// One connection and the statements prepared on it.
pub(crate) struct PgConn {
    pub(crate) client: Client,
    stmts: HashMap<StmtKey, Statement>,
    generation: u64,
    /// A transaction may be open, or the connection is otherwise unusable: recycling
    /// discards it. Cleared after a successful `COMMIT`/`ROLLBACK`.
    pub(crate) tainted: bool,
}

impl PgConn {
    /// The statement for `key`, preparing `sql` with parameter `types` on first use on
    /// this connection.
    pub(crate) async fn stmt(
        &mut self,
        key: StmtKey,
        sql: &str,
        types: &[Type],
    ) -> Result<Statement> {
        if let Some(s) = self.stmts.get(&key) {
            return Ok(s.clone());
        }
        let s = self
            .client
            .prepare_typed(sql, types)
            .await
            .map_err(|e| self.lost(map_err(e)))?;
        self.stmts.insert(key, s.clone());
        Ok(s)
    }

    /// The statement of `def`, preparing it on first use on this connection.
    pub(crate) async fn prepared(&mut self, def: &StmtDef) -> Result<Statement> {
        if let Some(s) = self.stmts.get(&def.key) {
            return Ok(s.clone());
        }
        let types: Vec<Type> = def.params.iter().map(|&t| pg_type(t)).collect();
        self.stmt(def.key, &def.sql, &types).await
    }

    /// Prepares every statement of `defs` not yet prepared, pipelined.
    async fn prepare_all(&mut self, defs: &[StmtDef]) -> Result<()> {
        let missing: Vec<&StmtDef> = defs
            .iter()
            .filter(|d| !self.stmts.contains_key(&d.key))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let client = &self.client;
        let prepared = futures::future::try_join_all(missing.iter().map(|d| {
            let types: Vec<Type> = d.params.iter().map(|&t| pg_type(t)).collect();
            async move { client.prepare_typed(&d.sql, &types).await }
        }))
        .await
        .map_err(map_err)?;
        for (d, s) in missing.into_iter().zip(prepared) {
            self.stmts.insert(d.key, s);
        }
        Ok(())
    }

    /// Marks the connection for discarding when `e` says it is gone; returns `e`.
    pub(crate) fn lost(&mut self, e: Error) -> Error {
        mark_lost(&mut self.tainted, e)
    }

    /// Runs `body` inside `begin` ... `COMMIT` (`ROLLBACK` on error). `BEGIN` is sent
    /// together with the body's first statements (pipelined). The connection is
    /// tainted until the transaction is over, so a cancelled call never returns a
    /// connection with an open transaction to the pool.
    pub(crate) async fn atomically<'c, T>(
        client: &'c Client,
        tainted: &mut bool,
        begin: &str,
        body: impl Future<Output = Result<T>> + 'c,
    ) -> Result<T> {
        *tainted = true;
        let (b, r) = futures::join!(client.batch_execute(begin), body);
        let r = match (b.map_err(map_err), r) {
            (Ok(()), Ok(v)) => match client.batch_execute("COMMIT").await {
                Ok(()) => {
                    *tainted = false;
                    return Ok(v);
                }
                // The COMMIT was sent: a lost connection leaves its outcome unknown.
                Err(e) => Err(map_err(e).at_commit()),
            },
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        };
        if client.batch_execute("ROLLBACK").await.is_ok() {
            *tainted = false;
        }
        r
    }
}

/// Sets `tainted` when `e` says the connection is gone; returns `e`.
pub(crate) fn mark_lost(tainted: &mut bool, e: Error) -> Error {
    if e.kind() == datalayer_core::ErrorKind::ConnectionLost {
        *tainted = true;
    }
    e
}

/// Runs `futs` in order with at most `depth` in flight on the connection, and returns
/// their outputs in order; stops at the first error.
///
/// Each future is polled once as soon as it is admitted, which sends its request
/// (tokio-postgres sends on the first poll), so requests reach the server in exactly
/// the order of `futs`; responses are then awaited front to back.
pub(crate) async fn pipeline<T, F>(futs: Vec<F>, depth: usize) -> Result<Vec<T>>
where
    F: Future<Output = Result<T>>,
{
    use futures::future::{MaybeDone, maybe_done};
    use std::collections::VecDeque;
    use std::pin::Pin;
    let mut out = Vec::with_capacity(futs.len());
    let mut todo = futs.into_iter();
    let mut inflight: VecDeque<Pin<Box<MaybeDone<F>>>> = VecDeque::new();
    loop {
        while inflight.len() < depth.max(1) {
            let Some(f) = todo.next() else { break };
            let mut f = Box::pin(maybe_done(f));
            let _ = futures::poll!(f.as_mut());
            inflight.push_back(f);
        }
        let Some(mut front) = inflight.pop_front() else {
            return Ok(out);
        };
        front.as_mut().await;
        match front.as_mut().take_output() {
            Some(r) => out.push(r?),
            None => return Err(Error::engine("internal", "a pipelined result went missing")),
        }
    }
}

/// Creates and recycles [`PgConn`]s for deadpool.
pub(crate) struct Manager {
    options: Arc<PgOptions>,
    eager: Arc<Eager>,
}

async fn connect(o: &PgOptions) -> Result<Client> {
    let mut config = o.config.clone();
    config.connect_timeout(o.connect_timeout);
    #[cfg(feature = "tls")]
    if config.get_ssl_mode() != tokio_postgres::config::SslMode::Disable {
        let (client, conn) = config
            .connect(crate::tls::connector()?)
            .await
            .map_err(map_err)?;
        spawn_connection(conn);
        return Ok(client);
    }
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(map_err)?;
    spawn_connection(conn);
    Ok(client)
}

fn spawn_connection<F>(conn: F)
where
    F: Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres: connection ended with an error");
        }
    });
}

impl managed::Manager for Manager {
    type Type = PgConn;
    type Error = Error;

    async fn create(&self) -> Result<PgConn> {
        let client = connect(&self.options).await?;
        if let Some(schema) = &self.options.schema {
            client
                .batch_execute(&format!(
                    "SET search_path TO {}",
                    crate::dialect::PgDialect.quote_ident(schema)
                ))
                .await
                .map_err(map_err)?;
        }
        let (generation, defs) = self.eager.snapshot();
        let mut c = PgConn {
            client,
            stmts: HashMap::new(),
            generation,
            tainted: false,
        };
        c.prepare_all(&defs).await?;
        Ok(c)
    }

    async fn recycle(&self, c: &mut PgConn, _: &Metrics) -> RecycleResult<Error> {
        if c.tainted {
            return Err(RecycleError::message(
                "a transaction may be open on this connection",
            ));
        }
        if c.client.is_closed() {
            return Err(RecycleError::message("the connection is closed"));
        }
        Ok(())
    }
}

/// A pooled connection.
pub(crate) type Conn = managed::Object<Manager>;

/// The connection pool of one engine.
pub(crate) struct Pool {
    pool: managed::Pool<Manager>,
    pub(crate) eager: Arc<Eager>,
    /// Most statements in flight per connection.
    pub(crate) depth: usize,
}

impl Pool {
    pub(crate) fn new(options: Arc<PgOptions>) -> Result<Pool> {
        let eager = Arc::new(Eager::default());
        let depth = options.pipeline_depth.max(1);
        let pool = managed::Pool::builder(Manager {
            options: options.clone(),
            eager: eager.clone(),
        })
        .max_size(options.pool_size.max(1))
        .wait_timeout(Some(options.wait_timeout))
        .create_timeout(Some(options.connect_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| Error::engine("deadpool", e.to_string()))?;
        Ok(Pool { pool, eager, depth })
    }

    /// A connection with every registered statement prepared on it.
    pub(crate) async fn get(&self) -> Result<Conn> {
        let mut c = self.pool.get().await.map_err(map_pool_err)?;
        let (generation, defs) = self.eager.snapshot();
        if c.generation != generation {
            if let Err(e) = c.prepare_all(&defs).await {
                return Err(c.lost(e));
            }
            c.generation = generation;
        }
        Ok(c)
    }

    /// Closes the pool: idle connections close now, others when they are returned;
    /// later `get`s fail.
    pub(crate) fn close(&self) {
        self.pool.close();
    }
}
