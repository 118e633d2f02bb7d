//! The connection to the server: one Redis server or a Redis Cluster, behind one type.
//!
//! [`Conn`] implements redis-rs' `aio::ConnectionLike`, so every command and pipeline
//! of the engine (`query_async(&mut conn)`) runs unchanged on either:
//! - **single server**: a redis-rs `ConnectionManager` (one multiplexed connection
//!   that reconnects by itself);
//! - **Redis Cluster**: a redis-rs `cluster_async::ClusterConnection`, which keeps one
//!   multiplexed connection per node, routes each command by the hash slot of its
//!   first key, follows `MOVED` and `ASK` redirections, refreshes the slot map and
//!   retries on `TRYAGAIN`/`CLUSTERDOWN` and lost connections (Redis Cluster
//!   specification, redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec).
//!   Every key of a namespace carries the hash tag `{namespace}`, so the engine's
//!   commands, `MULTI` pipelines and `FCALL`s all go to the one primary that owns the
//!   namespace's slot. `FUNCTION LOAD` goes to every primary (redis-rs routes it so).
//!
//! Commands without a key that must reach the namespace's node (`SCAN`, `CONFIG GET`,
//! `WAITAOF`) go through [`Conn::query_at`].
//!
//! **The commit is sent once.** redis-rs' cluster client sends a command again after a
//! lost connection or a response timeout, which is harmless for reads but not for the
//! commit `FCALL`: the first call may have been applied, and the second would then
//! fail its validation and report `Conflict` ("not applied, retry") for a commit that
//! happened. So an `FCALL` goes through a second cluster connection built with no
//! retries: a lost connection or a timeout is reported (the engine makes it
//! `CommitUnknown`), and a `MOVED` (the server did not run the call) is followed once
//! by sending the call to the node it names. Other redirections and cluster errors
//! are reported as they are (retryable `ConnectionLost`, the call did not run).

use crate::config::RedisOptions;
use crate::error::{map_cluster_connect_error, map_error};
use datalayer_core::{Error, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

/// One multiplexed connection to the server or the cluster. Cheap to clone (clones
/// share the connection).
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster {
        /// Every command but `FCALL`: redirections, retries and reconnection by
        /// redis-rs.
        conn: ClusterConnection,
        /// `FCALL` (the commit): never sent twice by the client.
        once: ClusterConnection,
    },
}

/// Whether `cmd` is an `FCALL` (a commit: not to be repeated blindly).
fn is_fcall(cmd: &Cmd) -> bool {
    matches!(cmd.args_iter().next(), Some(redis::Arg::Simple(name)) if name.eq_ignore_ascii_case(b"FCALL"))
}

/// Sends `cmd` (an `FCALL`) through `once` by the slot of its first key; after a
/// `MOVED` (the call did not run) sends it once more, to the node the error names.
async fn fcall_once(once: &mut ClusterConnection, cmd: &Cmd) -> RedisResult<Value> {
    match once.req_packed_command(cmd).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Moved) => {
            let Some((host, port)) = e
                .redirect_node()
                .and_then(|(addr, _slot)| addr.rsplit_once(':'))
                .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            else {
                return Err(e);
            };
            let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            once.route_command(cmd.clone(), to).await
        }
        r => r,
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conn::Single(c) => f.debug_tuple("Single").field(c).finish(),
            Conn::Cluster { .. } => f.write_str("Cluster"),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster { once, .. } if is_fcall(cmd) => Box::pin(fcall_once(once, cmd)),
            Conn::Cluster { conn, .. } => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster { once, .. } if pipeline.cmd_iter().any(is_fcall) => {
                once.req_packed_commands(pipeline, offset, count)
            }
            Conn::Cluster { conn, .. } => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster { conn, .. } => conn.get_db(),
        }
    }
}

impl Conn {
    /// Runs `cmd` on the node that owns the hash slot of `key` (its primary) on a
    /// cluster, or on the server: for commands without keys that must reach the
    /// namespace's node (`SCAN`, `CONFIG GET`, `WAITAOF`).
    pub(crate) async fn query_at<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        key: &[u8],
    ) -> RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster { conn: c, .. } => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                let v = c.route_command(cmd.clone(), route).await?;
                Ok(redis::from_redis_value(v)?)
            }
        }
    }
}

/// `InvalidInput` for settings redis-rs refuses.
fn bad_settings(addr: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid_input(format!("redis: bad connection settings for {addr}: {e}"))
}

/// The CA certificates of `opts.tls_ca_file`, for redis-rs.
#[cfg(feature = "tls")]
fn tls_certs(opts: &RedisOptions) -> Result<Option<redis::TlsCertificates>> {
    let Some(path) = &opts.tls_ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|e| {
        Error::invalid_input(format!(
            "redis: cannot read the CA file {} (ca_file=): {e}",
            path.display()
        ))
    })?;
    Ok(Some(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

/// A client of one server (`host:port` with `opts`' credentials, database and TLS).
pub(crate) fn client(opts: &RedisOptions, host: &str, port: u16) -> Result<redis::Client> {
    let url = opts.node_url(host, port);
    let addr = format!("{host}:{port}");
    #[cfg(feature = "tls")]
    if let Some(certs) = tls_certs(opts)? {
        return redis::Client::build_with_tls(url, certs).map_err(|e| bad_settings(&addr, e));
    }
    redis::Client::open(url).map_err(|e| bad_settings(&addr, e))
}

/// `opts.pool_size` connections to the server or the cluster that `opts` names.
///
/// # Errors
/// `InvalidInput` for settings the client refuses (or an unreadable `ca_file`);
/// otherwise the mapped error of the first connection that failed.
pub(crate) async fn connect(opts: &RedisOptions, addr: &str) -> Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(opts.pool_size);
    if opts.is_cluster() {
        let urls: Vec<String> = opts
            .cluster_nodes
            .iter()
            .map(|(h, p)| opts.node_url(h, *p))
            .collect();
        let build = |retries: u32| {
            #[allow(unused_mut)]
            let mut b = ClusterClientBuilder::new(urls.clone())
                .connection_timeout(opts.connect_timeout)
                .response_timeout(opts.response_timeout)
                .retries(retries);
            #[cfg(feature = "tls")]
            if let Some(certs) = tls_certs(opts)? {
                b = b.certs(certs);
            }
            b.build().map_err(|e| bad_settings(addr, e))
        };
        let (client, once_client) = (build(6)?, build(0)?);
        for _ in 0..opts.pool_size {
            let conn = client
                .get_async_connection()
                .await
                .map_err(|e| map_cluster_connect_error(e, addr))?;
            let once = once_client
                .get_async_connection()
                .await
                .map_err(|e| map_cluster_connect_error(e, addr))?;
            conns.push(Conn::Cluster { conn, once });
        }
    } else {
        let client = client(opts, &opts.host, opts.port)?;
        let cfg = ConnectionManagerConfig::new()
            .set_response_timeout(Some(opts.response_timeout))
            .set_connection_timeout(Some(opts.connect_timeout))
            .set_number_of_retries(3);
        for _ in 0..opts.pool_size {
            let c = ConnectionManager::new_with_config(client.clone(), cfg.clone())
                .await
                .map_err(|e| map_error(e, addr))?;
            conns.push(Conn::Single(c));
        }
    }
    Ok(conns)
}
