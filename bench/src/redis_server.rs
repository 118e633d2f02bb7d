//! The run's Redis server (cargo feature `redis`): where the Redis section's
//! targets connect, server facts for the report, and one fresh namespace per
//! place, all removed again (also after a panic).
//!
//! The server is named by `DATALAYER_REDIS_URL` (default [`DEFAULT_URL`]; a
//! `?namespace=..` or other engine parameter in it is dropped: every place gets its
//! own namespace). Every namespace is `dlbench_<run>_<target>_<n>`, with one random
//! `<run>` per process; every key of a namespace starts with the hash tag
//! `{<namespace>}` (the engine's layout, and the raw target's too), so removing a
//! namespace is `SCAN MATCH \{<namespace>\}*` + `UNLINK`, which never touches a key
//! of anyone else on a shared server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use tokio::runtime::Runtime;

use crate::leftovers::{self, Leftovers};
use crate::targets::Namespaces;

/// Default server when `DATALAYER_REDIS_URL` is not set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The run's Redis server: where to connect, what it is, and the namespaces to
/// remove.
pub struct RedisServer {
    /// `DATALAYER_REDIS_URL` without its query string (`redis://host:port[/db]`).
    pub url: String,
    /// The engine parameters of `DATALAYER_REDIS_URL` (`pool_size=..&..`), without
    /// `namespace`: datalayer's target gets them.
    params: String,
    /// `redis_version` and the persistence settings (`appendonly`,
    /// `appendfsync`), for the report.
    pub info: String,
    client: redis::Client,
    run: String,
    rt: Arc<Runtime>,
    conn: MultiplexedConnection,
    namespaces: Leftovers,
}

impl RedisServer {
    /// Connects to `DATALAYER_REDIS_URL` (or [`DEFAULT_URL`]) and reads the server
    /// facts.
    ///
    /// # Errors
    /// The URL does not parse, or the server cannot be reached (the message says
    /// how to start one).
    pub fn connect() -> anyhow::Result<Arc<Self>> {
        let given = std::env::var("DATALAYER_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let (url, query) = given.split_once('?').unwrap_or((&given, ""));
        let url = url.to_owned();
        let params = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("namespace="))
            .collect::<Vec<_>>()
            .join("&");
        let client = redis::Client::open(url.as_str())
            .with_context(|| format!("DATALAYER_REDIS_URL {}", datalayer::redact(&url)))?;
        let rt = crate::targets::runtime();
        let (conn, info) = rt
            .block_on(async {
                let mut conn = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.get_multiplexed_async_connection(),
                )
                .await
                .map_err(|_| anyhow::anyhow!("connect timed out after 5 s"))??;
                let server: String = redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut conn)
                    .await?;
                let version = server
                    .lines()
                    .find_map(|l| l.strip_prefix("redis_version:"))
                    .unwrap_or("?")
                    .trim()
                    .to_owned();
                let mut get = async |name: &str| -> String {
                    let v: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
                        .arg("GET")
                        .arg(name)
                        .query_async(&mut conn)
                        .await;
                    v.ok()
                        .and_then(|v| v.into_iter().nth(1))
                        .unwrap_or_else(|| "?".into())
                };
                let info = format!(
                    "Redis {version}, appendonly={}, appendfsync={}",
                    get("appendonly").await,
                    get("appendfsync").await
                );
                anyhow::Ok((conn, info))
            })
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach Redis at {} ({e}).\n\
                     Start a server (`redis-server --daemonize yes`, Redis 7.0+ for the engine's \
                     Functions), or point DATALAYER_REDIS_URL at one.",
                    datalayer::redact(&url)
                )
            })?;
        let run = leftovers::run_id();
        eprintln!(
            "{info} at {}, namespaces dlbench_{run}_*",
            datalayer::redact(&url)
        );
        Ok(Arc::new(Self {
            url,
            params,
            info,
            client,
            namespaces: Leftovers::new(format!("dlbench_{run}_")),
            run,
            rt,
            conn,
        }))
    }

    /// datalayer's URL template on this server: the server, its engine
    /// parameters and `namespace={ns}` (a fresh namespace per place).
    pub fn datalayer_url(&self) -> String {
        if self.params.is_empty() {
            format!("{}?namespace={{ns}}", self.url)
        } else {
            format!("{}?{}&namespace={{ns}}", self.url, self.params)
        }
    }

    /// A new multiplexed connection to the server, on the current runtime.
    ///
    /// # Errors
    /// The server cannot be reached.
    pub async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        self.client.get_multiplexed_async_connection().await
    }

    /// Starts recording every command the server runs (`MONITOR` on its own
    /// connection, read on this server's runtime) until [`MonitorLog::stop`].
    ///
    /// # Errors
    /// The server refuses `MONITOR`.
    pub fn monitor(&self) -> anyhow::Result<MonitorLog> {
        use futures::StreamExt;
        let mon = self
            .rt
            .block_on(self.client.get_async_monitor())
            .context("MONITOR")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let task = self.rt.spawn(async move {
            let mut s = mon.into_on_message::<String>();
            while let Some(l) = s.next().await {
                sink.lock().expect("monitor lines").push(l);
            }
        });
        // A marker the log must reach before it is read: every command sent
        // before it has been recorded by then.
        let marker = format!("dlbench-monitor-marker-{}", self.run);
        Ok(MonitorLog {
            rt: self.rt.clone(),
            conn: self.conn.clone(),
            lines,
            task,
            marker,
        })
    }

    /// Removes every key `{ns}*` of the namespace `ns`; returns how many.
    fn remove(&self, ns: &str) -> anyhow::Result<u64> {
        let mut conn = self.conn.clone();
        let pattern = format!("\\{{{ns}\\}}*");
        self.rt.block_on(async {
            let mut cursor: u64 = 0;
            let mut removed = 0u64;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
                if !keys.is_empty() {
                    let n: u64 = redis::cmd("UNLINK")
                        .arg(&keys)
                        .query_async(&mut conn)
                        .await?;
                    removed += n;
                }
                if next == 0 {
                    return Ok(removed);
                }
                cursor = next;
            }
        })
    }
}

impl Namespaces for RedisServer {
    fn create(&self, tag: &str) -> anyhow::Result<String> {
        Ok(self.namespaces.add(tag))
    }

    fn destroy(&self, ns: &str) -> anyhow::Result<()> {
        self.remove(ns)
            .with_context(|| format!("removing the keys of namespace {ns}"))?;
        self.namespaces.forget(ns);
        Ok(())
    }
}

impl Drop for RedisServer {
    /// Removes the keys of every namespace still on the list (after an error or a
    /// panic).
    fn drop(&mut self) {
        for ns in self.namespaces.take() {
            match self.remove(&ns) {
                Ok(n) => eprintln!("  removed namespace {ns} ({n} keys)"),
                Err(e) => eprintln!(
                    "  WARNING: could not remove namespace {ns} ({e}); run \
                     `redis-cli --scan --pattern '\\{{{ns}\\}}*' | xargs redis-cli unlink`"
                ),
            }
        }
    }
}

/// The commands recorded by [`RedisServer::monitor`].
pub struct MonitorLog {
    rt: Arc<Runtime>,
    conn: MultiplexedConnection,
    lines: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
    marker: String,
}

impl MonitorLog {
    /// Stops recording; the lines (`<time> [<db> <client>] "CMD" "arg" ..`) of
    /// everything the server ran since the start.
    pub fn stop(self) -> Vec<String> {
        let mut conn = self.conn.clone();
        let _: redis::RedisResult<redis::Value> = self
            .rt
            .block_on(redis::cmd("ECHO").arg(&self.marker).query_async(&mut conn));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline
            && !self
                .lines
                .lock()
                .expect("monitor lines")
                .iter()
                .any(|l| l.contains(&self.marker))
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.task.abort();
        std::mem::take(&mut *self.lines.lock().expect("monitor lines"))
    }
}
