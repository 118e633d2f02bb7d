//! Options of the Redis engine, and the URL forms that set them.

use datalayer_core::{Error, Result};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The largest value the engine accepts by default, in bytes (16 MiB): far below the
/// server's `proto-max-bulk-len` (512 MB), so a value never fails at the server.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 << 20;

/// The largest write set one commit accepts by default, in bytes (32 MiB, keys plus
/// values as `datalayer_kv::write_set_bytes` counts them). The commit is one Redis
/// Function call that blocks the server while it runs, and past the server's
/// `busy-reply-threshold` (5 s by default) other clients get `BUSY`; 32 MiB of writes
/// runs in well under a second.
pub const DEFAULT_MAX_TXN_BYTES: usize = 32 << 20;

/// The largest number of entries (writes plus recorded reads) one commit accepts: the
/// commit function receives every key in `KEYS` and walks them once. A key read by
/// `get`/`batch_get` is one entry; a scan is one entry (or, validated exactly, one per
/// key it returned, up to 65,536 per transaction); a larger transaction fails its
/// commit with `InvalidInput` before anything is sent.
pub const MAX_TXN_ENTRIES: usize = 250_000;

/// Options of the Redis engine ([`crate::open`]).
///
/// Built from a URL ([`RedisOptions::from_url`]) or directly (`RedisOptions::new` and
/// struct update syntax). `Debug` prints the password as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Server host name or address. Default `127.0.0.1`.
    pub host: String,
    /// Server TCP port. Default 6379.
    pub port: u16,
    /// Logical database number (`SELECT`). Default 0.
    pub db: i64,
    /// ACL user name (`AUTH user password`); `None` with a password: the `default` user.
    pub username: Option<String>,
    /// Password (`AUTH`). Never printed by `Debug`.
    pub password: Option<String>,
    /// The namespace: every key of the engine starts with the hash tag `{namespace}`,
    /// so a namespace lives in one cluster slot and several engines can share one
    /// server. Not empty; no `{`, `}` or whitespace. Default `datalayer`.
    pub namespace: String,
    /// Number of multiplexed connections (each a redis-rs `ConnectionManager`, which
    /// reconnects by itself); transactions are spread over them round-robin. Default 2.
    pub pool_size: usize,
    /// The most commands one pipeline carries (a `batch_get` of many keys goes out as
    /// `MGET`s of up to 512 keys each, at most `pipeline_depth` of them per round
    /// trip). Declared as the engine's `Capability::pipeline_depth`. Default 64.
    pub pipeline_depth: usize,
    /// The most bytes of a key that name its *bucket*, the unit of range validation:
    /// a transaction that scanned a range fails its commit with `Conflict` when a key
    /// of a bucket that intersects the range was written after the scan. A bucket is
    /// the key's entry kind and table name (and index name), so about one table's rows
    /// or one index (see `backend.rs`, `bucket`); this caps its length. Default 64, at
    /// least 1 (1: one bucket per entry kind).
    pub bucket_prefix_bytes: usize,
    /// A scan that returns at most this many keys is validated exactly at commit (each
    /// key's version, and that the range still holds as many keys), so only a real
    /// change of what it read fails the commit; a larger one is validated by the
    /// versions of the buckets it intersects (cheaper, but any write in those buckets
    /// fails it). 0: every scan by buckets. Default 1024.
    pub exact_scan_keys: usize,
    /// Largest value accepted, in bytes (declared as `Capability::max_value_bytes`).
    /// Default [`DEFAULT_MAX_VALUE_BYTES`].
    pub max_value_bytes: usize,
    /// Largest write set one commit accepts, in bytes (declared as
    /// `KvCapability::max_txn_bytes`). Default [`DEFAULT_MAX_TXN_BYTES`].
    pub max_txn_bytes: usize,
    /// How long a reply may take before the call fails (a commit then fails with
    /// `CommitUnknown`). Default 10 s.
    pub response_timeout: Duration,
    /// How long one connection attempt may take. Default 2 s.
    pub connect_timeout: Duration,
    /// Redis Cluster seed nodes (`host`, `port`); empty (the default) for one server
    /// at [`host`](RedisOptions::host):[`port`](RedisOptions::port), which are then
    /// ignored. With seeds the engine speaks the Redis Cluster protocol
    /// (redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec) through
    /// redis-rs' cluster client: it learns the slot map from any reachable seed and
    /// follows `MOVED`/`ASK` redirections by itself. A namespace lives in one slot
    /// (its hash tag), so one primary serves it. Only database 0 exists on a cluster.
    pub cluster_nodes: Vec<(String, u16)>,
    /// TLS (`rediss://`): every connection is encrypted with rustls and the server's
    /// certificate is verified against [`tls_ca_file`](RedisOptions::tls_ca_file), or
    /// the system's root certificates when that is `None`. Needs the crate's cargo
    /// feature `tls`. Default `false`.
    pub tls: bool,
    /// A PEM file of CA certificates to trust for TLS instead of the system's roots
    /// (URL parameter `ca_file=`, a percent-encoded path). Only with `tls`.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            host: "127.0.0.1".into(),
            port: 6379,
            db: 0,
            username: None,
            password: None,
            namespace: "datalayer".into(),
            pool_size: 2,
            pipeline_depth: 64,
            bucket_prefix_bytes: 64,
            exact_scan_keys: 1024,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_txn_bytes: DEFAULT_MAX_TXN_BYTES,
            response_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            cluster_nodes: Vec::new(),
            tls: false,
            tls_ca_file: None,
        }
    }
}

impl RedisOptions {
    /// Options for `host:port` with every other option at its default.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        RedisOptions {
            host: host.into(),
            port,
            ..RedisOptions::default()
        }
    }

    /// Parses a Redis URL. The forms:
    ///
    /// | URL | server |
    /// |-----|--------|
    /// | `redis://[user:password@]host[:port][/db][?params]` | one server (default port 6379, db 0) |
    /// | `rediss://[user:password@]host[:port][/db][?params]` | one server over TLS (cargo feature `tls`) |
    /// | `redis+cluster://[user:password@]h1:p1[,h2:p2…][?params]` | a Redis Cluster, through these seed nodes |
    /// | `rediss+cluster://[user:password@]h1:p1[,h2:p2…][?params]` | a Redis Cluster over TLS (cargo feature `tls`) |
    ///
    /// `params`: `namespace=`, `pool_size=`, `pipeline_depth=`, `bucket_prefix_bytes=`,
    /// `exact_scan_keys=`, `max_value_bytes=`, `max_txn_bytes=` (bytes),
    /// `response_timeout_ms=`, `connect_timeout_ms=` (milliseconds), and for TLS
    /// `ca_file=` (a PEM file of CA certificates to trust instead of the system's
    /// roots, percent-encoded path). User and password may be percent-encoded;
    /// `redis://:pw@host` authenticates the `default` user; on a cluster the same user
    /// and password go to every node. A cluster URL names at least one node (any node
    /// of the cluster: the others are learnt from it) and no database but 0. IPv6
    /// addresses are written in brackets (`[::1]:7000`).
    ///
    /// # Errors
    /// `InvalidInput` for another scheme, a port or number that does not parse, an
    /// unknown parameter, or options that fail [`RedisOptions::validate`];
    /// `Unsupported` for `rediss://` and `rediss+cluster://` when the crate is built
    /// without its `tls` feature (the message names the feature).
    pub fn from_url(url: &str) -> Result<Self> {
        let not_redis = || {
            Error::invalid_input(format!(
                "not a Redis URL: {:?} (use redis://[user:password@]host:port[/db]?namespace=... \
                 or redis+cluster://host1:port1,host2:port2?namespace=...)",
                datalayer_core::redact(url)
            ))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(not_redis)?;
        let (tls, cluster) = match scheme {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis+cluster" => (false, true),
            "rediss+cluster" => (true, true),
            _ => return Err(not_redis()),
        };
        if tls {
            check_tls_feature()?;
        }
        let mut o = RedisOptions {
            tls,
            ..RedisOptions::default()
        };
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = main.split_once('/').unwrap_or((main, ""));
        let hosts = match authority.rsplit_once('@') {
            Some((auth, hp)) => {
                let (user, pw) = auth.split_once(':').unwrap_or((auth, ""));
                if !user.is_empty() {
                    o.username = Some(percent_decode(user)?);
                }
                if !pw.is_empty() {
                    o.password = Some(percent_decode(pw)?);
                }
                hp
            }
            None => authority,
        };
        if cluster {
            for node in hosts.split(',') {
                let (host, port) = parse_host_port(node)?;
                if host.is_empty() {
                    return Err(Error::invalid_input(format!(
                        "Redis Cluster URL: empty node in {:?} (use redis+cluster://host1:port1,host2:port2)",
                        datalayer_core::redact(url)
                    )));
                }
                o.cluster_nodes
                    .push((host.to_owned(), port.unwrap_or(6379)));
            }
            // host/port are not used on a cluster; keep them naming the first seed.
            o.host.clone_from(&o.cluster_nodes[0].0);
            o.port = o.cluster_nodes[0].1;
        } else {
            let (host, port) = parse_host_port(hosts)?;
            if !host.is_empty() {
                o.host = host.to_owned();
            }
            if let Some(port) = port {
                o.port = port;
            }
        }
        if !path.is_empty() {
            o.db = path.parse().map_err(|_| {
                Error::invalid_input(format!("Redis URL: bad database number {path:?}"))
            })?;
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || Error::invalid_input(format!("Redis URL parameter {k}={v:?} is invalid"));
            let ms = |v: &str| {
                v.parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| bad())
            };
            match k {
                "namespace" => o.namespace = percent_decode(v)?,
                "pool_size" => o.pool_size = v.parse().map_err(|_| bad())?,
                "pipeline_depth" => o.pipeline_depth = v.parse().map_err(|_| bad())?,
                "bucket_prefix_bytes" => o.bucket_prefix_bytes = v.parse().map_err(|_| bad())?,
                "exact_scan_keys" => o.exact_scan_keys = v.parse().map_err(|_| bad())?,
                "max_value_bytes" => o.max_value_bytes = v.parse().map_err(|_| bad())?,
                "max_txn_bytes" => o.max_txn_bytes = v.parse().map_err(|_| bad())?,
                "response_timeout_ms" => o.response_timeout = ms(v)?,
                "connect_timeout_ms" => o.connect_timeout = ms(v)?,
                "ca_file" => o.tls_ca_file = Some(PathBuf::from(percent_decode(v)?)),
                _ => {
                    return Err(Error::invalid_input(format!(
                        "unknown Redis URL option {k:?} (known: namespace, pool_size, \
                         pipeline_depth, bucket_prefix_bytes, exact_scan_keys, max_value_bytes, max_txn_bytes, \
                         response_timeout_ms, connect_timeout_ms, ca_file)"
                    )));
                }
            }
        }
        o.validate()?;
        Ok(o)
    }

    /// Checks the options (the engine checks them when it opens).
    ///
    /// # Errors
    /// `InvalidInput` for an empty namespace or one with `{`, `}` or whitespace (it is
    /// the hash tag of every key), a zero `pool_size`, `pipeline_depth` or
    /// `bucket_prefix_bytes`, a zero `max_value_bytes`, a `max_txn_bytes` below
    /// `max_value_bytes`, a zero timeout, a database other than 0 on a cluster, or a
    /// `tls_ca_file` without `tls`; `Unsupported` for `tls` when the crate is built
    /// without its cargo feature `tls`.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid_input(format!("redis options: {m}")));
        if self.namespace.is_empty()
            || self
                .namespace
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace())
        {
            return bad(format!(
                "namespace {:?} must be non-empty, without braces or whitespace (it is the \
                 hash tag of every key)",
                self.namespace
            ));
        }
        if self.pool_size == 0 || self.pipeline_depth == 0 || self.bucket_prefix_bytes == 0 {
            return bad(
                "pool_size, pipeline_depth and bucket_prefix_bytes must be at least 1".into(),
            );
        }
        if self.max_value_bytes == 0 || self.max_txn_bytes < self.max_value_bytes {
            return bad(format!(
                "max_txn_bytes ({}) must be at least max_value_bytes ({}), which must be positive",
                self.max_txn_bytes, self.max_value_bytes
            ));
        }
        if self.response_timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("timeouts must be positive".into());
        }
        if self.is_cluster() && self.db != 0 {
            return bad(format!(
                "a Redis Cluster has only database 0 (got database {})",
                self.db
            ));
        }
        if self.tls_ca_file.is_some() && !self.tls {
            return bad("ca_file is for TLS: use a rediss:// URL (or set tls)".into());
        }
        if self.tls {
            check_tls_feature()?;
        }
        Ok(())
    }

    /// Whether the options name a Redis Cluster (non-empty
    /// [`cluster_nodes`](RedisOptions::cluster_nodes)).
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }

    /// The URL of one server for the redis-rs client (no engine parameters), with the
    /// password: never log it. `redis://` or `rediss://`; the database only for a
    /// single server.
    pub(crate) fn node_url(&self, host: &str, port: u16) -> String {
        let mut auth = String::new();
        if self.username.is_some() || self.password.is_some() {
            if let Some(u) = &self.username {
                auth.push_str(&percent_encode(u));
            }
            if let Some(p) = &self.password {
                auth.push(':');
                auth.push_str(&percent_encode(p));
            }
            auth.push('@');
        }
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{auth}{host}:{port}/{}", self.db)
    }

    /// [`RedisOptions::node_url`] of the single server.
    #[cfg(test)]
    pub(crate) fn client_url(&self) -> String {
        self.node_url(&self.host, self.port)
    }

    /// The servers to connect to: the cluster's seed nodes, or the single server.
    pub(crate) fn servers(&self) -> Vec<(String, u16)> {
        if self.is_cluster() {
            self.cluster_nodes.clone()
        } else {
            vec![(self.host.clone(), self.port)]
        }
    }

    /// `host:port/db`, or `cluster host1:port1,host2:port2`, for messages.
    pub(crate) fn address(&self) -> String {
        if self.is_cluster() {
            let nodes: Vec<String> = self
                .cluster_nodes
                .iter()
                .map(|(h, p)| format!("{h}:{p}"))
                .collect();
            format!("cluster {}", nodes.join(","))
        } else {
            format!("{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

/// `Unsupported`, naming the cargo feature, when the crate is built without `tls`.
fn check_tls_feature() -> Result<()> {
    if cfg!(feature = "tls") {
        Ok(())
    } else {
        Err(Error::unsupported(
            "redis",
            "TLS (rediss:// URLs) in this build: enable the cargo feature `tls` of \
             datalayer-redis (or `redis-tls` of datalayer)",
        ))
    }
}

/// `host[:port]` or `[v6][:port]`: the host (maybe empty) and the port, if any.
fn parse_host_port(hostport: &str) -> Result<(&str, Option<u16>)> {
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h
            .split_once(']')
            .ok_or_else(|| Error::invalid_input("Redis URL: unclosed [ in the host"))?;
        (h, p.strip_prefix(':').unwrap_or(""))
    } else {
        hostport.rsplit_once(':').unwrap_or((hostport, ""))
    };
    if port.is_empty() {
        return Ok((host, None));
    }
    let port = port
        .parse()
        .map_err(|_| Error::invalid_input(format!("Redis URL: bad port {port:?}")))?;
    Ok((host, Some(port)))
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("namespace", &self.namespace)
            .field("pool_size", &self.pool_size)
            .field("pipeline_depth", &self.pipeline_depth)
            .field("bucket_prefix_bytes", &self.bucket_prefix_bytes)
            .field("exact_scan_keys", &self.exact_scan_keys)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("max_txn_bytes", &self.max_txn_bytes)
            .field("response_timeout_ms", &self.response_timeout.as_millis())
            .field("connect_timeout_ms", &self.connect_timeout.as_millis())
            .field("cluster_nodes", &self.cluster_nodes)
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::invalid_input("Redis URL: bad percent-encoding"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::invalid_input("Redis URL: percent-encoding is not UTF-8"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url() {
        let o = RedisOptions::from_url(
            "redis://alice:s%40cret@db.example:6380/3?namespace=app1&pool_size=4&pipeline_depth=8&max_txn_bytes=4099&max_value_bytes=1000&response_timeout_ms=250&bucket_prefix_bytes=5&connect_timeout_ms=100&exact_scan_keys=7",
        )
        .unwrap();
        assert_eq!(o.host, "db.example");
        assert_eq!(o.port, 6380);
        assert_eq!(o.db, 3);
        assert_eq!(o.username.as_deref(), Some("alice"));
        assert_eq!(o.password.as_deref(), Some("s@cret"));
        assert_eq!(o.namespace, "app1");
        assert_eq!(o.pool_size, 4);
        assert_eq!(o.pipeline_depth, 8);
        assert_eq!(o.max_txn_bytes, 4099);
        assert_eq!(o.max_value_bytes, 1000);
        assert_eq!(o.bucket_prefix_bytes, 5);
        assert_eq!(o.exact_scan_keys, 7);
        assert_eq!(o.response_timeout, Duration::from_millis(250));
        assert_eq!(o.connect_timeout, Duration::from_millis(100));
        assert_eq!(o.client_url(), "redis://alice:s%40cret@db.example:6380/3");
    }

    #[test]
    fn defaults_and_password_only() {
        let o = RedisOptions::from_url("redis://127.0.0.1:6379").unwrap();
        assert_eq!(o, RedisOptions::default());
        let o = RedisOptions::from_url("redis://:pw@localhost").unwrap();
        assert_eq!((o.username, o.password.as_deref()), (None, Some("pw")));
        assert_eq!(o.port, 6379);
        let o = RedisOptions::from_url("redis://[::1]:7000").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("::1", 7000));
        assert_eq!(o.client_url(), "redis://[::1]:7000/0");
    }

    #[test]
    fn debug_redacts_the_password() {
        let o = RedisOptions::from_url("redis://u:hunter2@h:1").unwrap();
        let s = format!("{o:?}");
        assert!(!s.contains("hunter2") && s.contains("***"), "{s}");
        assert!(s.contains("response_timeout_ms: 10000"), "{s}");
    }

    #[test]
    fn bad_urls() {
        for bad in [
            "redis://h:notaport",
            "redis://h:1/x",
            "redis://h?namespace=",
            "redis://h?namespace=a{b}",
            "redis://h?pool_size=0",
            "redis://h?cache=1",
            "redis://h?max_txn_bytes=10&max_value_bytes=20",
            "etch://x",
        ] {
            let e = RedisOptions::from_url(bad).unwrap_err();
            assert!(e.is_invalid_input(), "{bad}: {e}");
        }
        for bad in [
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a:1,b:x",
            "redis+cluster://a:1/3",
            "redis://h:1?ca_file=%2Ftmp%2Fca.pem",
            "redis+unix://x",
        ] {
            let e = RedisOptions::from_url(bad).unwrap_err();
            assert!(e.is_invalid_input(), "{bad}: {e}");
        }
    }

    #[test]
    fn cluster_urls() {
        let o = RedisOptions::from_url(
            "redis+cluster://u:pw@10.0.0.1:7000,node2,[::1]:7002?namespace=app&pool_size=1",
        )
        .unwrap();
        assert!(o.is_cluster() && !o.tls);
        assert_eq!(
            o.cluster_nodes,
            vec![
                ("10.0.0.1".to_owned(), 7000),
                ("node2".to_owned(), 6379),
                ("::1".to_owned(), 7002)
            ]
        );
        assert_eq!((o.host.as_str(), o.port, o.db), ("10.0.0.1", 7000, 0));
        assert_eq!(o.namespace, "app");
        assert_eq!(o.node_url("::1", 7002), "redis://u:pw@[::1]:7002/0");
        assert_eq!(o.address(), "cluster 10.0.0.1:7000,node2:6379,::1:7002");
        let s = format!("{o:?}");
        assert!(
            !s.contains("pw\"") && s.contains("***") && s.contains("7002"),
            "{s}"
        );
        let one = RedisOptions::from_url("redis+cluster://h:1/0").unwrap();
        assert_eq!(one.cluster_nodes, vec![("h".to_owned(), 1)]);
        assert!(!RedisOptions::from_url("redis://h:1").unwrap().is_cluster());
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_needs_the_feature() {
        for url in ["rediss://h:1", "rediss+cluster://a:1,b:2?namespace=x"] {
            let e = RedisOptions::from_url(url).unwrap_err();
            assert!(e.is_unsupported(), "{url}: {e}");
            assert!(e.message().contains("`tls`"), "{url}: {e}");
        }
        let o = RedisOptions {
            tls: true,
            ..RedisOptions::default()
        };
        assert!(o.validate().unwrap_err().is_unsupported());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_urls() {
        let o =
            RedisOptions::from_url("rediss://:pw@h:6380/2?ca_file=%2Ftmp%2Fca%20x.pem").unwrap();
        assert!(o.tls && !o.is_cluster());
        assert_eq!(
            o.tls_ca_file.as_deref(),
            Some(std::path::Path::new("/tmp/ca x.pem"))
        );
        assert_eq!(o.client_url(), "rediss://:pw@h:6380/2");
        let o = RedisOptions::from_url("rediss+cluster://a:1,b:2").unwrap();
        assert!(o.tls && o.is_cluster());
        assert_eq!(o.node_url("b", 2), "rediss://b:2/0");
    }
}
