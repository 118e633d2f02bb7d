//! Options of the PostgreSQL engine, and the URL forms that set them.

use datalayer_core::{Error, Result, validate_identifier};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};

/// Options of [`crate::PgEngine`].
///
/// Built from a URL ([`PgOptions::from_url`]) or from a `tokio_postgres::Config`
/// ([`PgOptions::new`]) and the builder methods.
#[derive(Clone)]
pub struct PgOptions {
    /// Server address, user, password, database, `sslmode`, `application_name`, ...:
    /// everything tokio-postgres understands. The password is never printed. Default:
    /// none, it is required (from the URL, or [`PgOptions::new`]).
    pub config: tokio_postgres::Config,
    /// The schema every connection works in (`SET search_path TO "<schema>"` when the
    /// connection opens; created if missing when the engine opens). `None`: the
    /// server's default `search_path` (usually `public`). Default: `None`.
    pub schema: Option<String>,
    /// Most connections the pool opens. Default: 10.
    pub pool_size: usize,
    /// Most statements in flight on one connection when a batch or a multi-row write
    /// is pipelined. Default: 32.
    pub pipeline_depth: usize,
    /// How long an operation waits for a free pooled connection before it fails with
    /// `Timeout`. Default: 30 s.
    pub wait_timeout: Duration,
    /// How long opening one connection may take before it fails with `Timeout`.
    /// Default: 10 s.
    pub connect_timeout: Duration,
}

const DEFAULT_POOL_SIZE: usize = 10;
const DEFAULT_PIPELINE_DEPTH: usize = 32;

impl PgOptions {
    /// Options for the server described by `config`, with defaults for the rest. A
    /// missing host becomes `localhost`, a missing user `postgres`.
    pub fn new(mut config: tokio_postgres::Config) -> Self {
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        if config.get_user().is_none() {
            config.user("postgres");
        }
        if config.get_ssl_mode() == SslMode::Prefer && !cfg!(feature = "tls") {
            // Without the `tls` feature there is nothing to prefer.
            config.ssl_mode(SslMode::Disable);
        }
        PgOptions {
            config,
            schema: None,
            pool_size: DEFAULT_POOL_SIZE,
            pipeline_depth: DEFAULT_PIPELINE_DEPTH,
            wait_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Parses a URL: `postgres://user[:password]@host[:port]/database[?params]`
    /// (`postgresql://` works too).
    ///
    /// Parameters of this engine: `pool_size=<n>`, `pipeline_depth=<n>`,
    /// `schema=<identifier>`, `wait_timeout_ms=<milliseconds>`,
    /// `connect_timeout_ms=<milliseconds>`. Every other parameter goes to
    /// tokio-postgres (`sslmode=disable|prefer|require`, `application_name=..`,
    /// `options=..`, ...). `sslmode=require` needs the `tls` cargo feature.
    ///
    /// # Errors
    /// `InvalidInput` for another scheme, a malformed URL or an unknown or invalid
    /// parameter.
    pub fn from_url(url: &str) -> Result<Self> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::invalid_input(format!(
                "not a postgres URL: {:?}",
                datalayer_core::redact(url)
            )));
        }
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut passthrough = Vec::new();
        let mut pool_size = None;
        let mut depth = None;
        let mut schema = None;
        let mut wait = None;
        let mut connect = None;
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let bad =
                || Error::invalid_input(format!("postgres URL parameter {k}={v:?} is invalid"));
            let num = |v: &str| v.parse::<u64>().map_err(|_| bad());
            match k {
                "pool_size" => pool_size = Some(num(v)? as usize),
                "pipeline_depth" => depth = Some(num(v)? as usize),
                "wait_timeout_ms" => wait = Some(Duration::from_millis(num(v)?)),
                "connect_timeout_ms" => connect = Some(Duration::from_millis(num(v)?)),
                "schema" => {
                    validate_identifier("schema", v)?;
                    schema = Some(v.to_owned());
                }
                _ => passthrough.push(kv),
            }
        }
        let pg_url = if passthrough.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", passthrough.join("&"))
        };
        let config = tokio_postgres::Config::from_str(&pg_url).map_err(|e| {
            Error::invalid_input(format!(
                "invalid postgres URL {:?}: {e}",
                datalayer_core::redact(url)
            ))
        })?;
        let mut o = PgOptions::new(config);
        if let Some(n) = pool_size {
            o = o.pool_size(n);
        }
        if let Some(n) = depth {
            o = o.pipeline_depth(n);
        }
        if let Some(s) = schema {
            o.schema = Some(s);
        }
        if let Some(d) = wait {
            o.wait_timeout = d;
        }
        if let Some(d) = connect {
            o.connect_timeout = d;
        }
        Ok(o)
    }

    /// Sets [`PgOptions::schema`].
    ///
    /// # Errors
    /// `InvalidInput` for a name that is not a valid identifier.
    pub fn schema(mut self, schema: &str) -> Result<Self> {
        validate_identifier("schema", schema)?;
        self.schema = Some(schema.to_owned());
        Ok(self)
    }
    /// Sets [`PgOptions::pool_size`] (at least 1 is used).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }
    /// Sets [`PgOptions::pipeline_depth`] (at least 1 is used).
    pub fn pipeline_depth(mut self, n: usize) -> Self {
        self.pipeline_depth = n.max(1);
        self
    }
    /// Sets [`PgOptions::wait_timeout`].
    pub fn wait_timeout(mut self, d: Duration) -> Self {
        self.wait_timeout = d;
        self
    }
    /// Sets [`PgOptions::connect_timeout`].
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(s) => s.clone(),
                Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        f.debug_struct("PgOptions")
            .field("hosts", &hosts)
            .field("ports", &c.get_ports())
            .field("user", &c.get_user())
            .field(
                "password",
                &c.get_password().map(|_| "***").unwrap_or("(none)"),
            )
            .field("dbname", &c.get_dbname())
            .field("ssl_mode", &c.get_ssl_mode())
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("pipeline_depth", &self.pipeline_depth)
            .field("wait_timeout_ms", &self.wait_timeout.as_millis())
            .field("connect_timeout_ms", &self.connect_timeout.as_millis())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = PgOptions::from_url(
            "postgres://alice:s3cret@db.example:6543/app?pool_size=3&pipeline_depth=8&schema=dl_x&wait_timeout_ms=250&application_name=t",
        )
        .unwrap();
        assert_eq!(o.pool_size, 3);
        assert_eq!(o.pipeline_depth, 8);
        assert_eq!(o.schema.as_deref(), Some("dl_x"));
        assert_eq!(o.wait_timeout, Duration::from_millis(250));
        assert_eq!(o.config.get_user(), Some("alice"));
        assert_eq!(o.config.get_dbname(), Some("app"));
        assert_eq!(o.config.get_ports(), &[6543]);
        let dbg = format!("{o:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("***"), "{dbg}");
        let d = PgOptions::from_url("postgresql://127.0.0.1/test").unwrap();
        assert_eq!(d.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(d.pipeline_depth, DEFAULT_PIPELINE_DEPTH);
        assert_eq!(d.config.get_user(), Some("postgres"));
        assert!(PgOptions::from_url("sqlite://x").is_err());
        assert!(PgOptions::from_url("postgres://h/db?pool_size=x").is_err());
        assert!(PgOptions::from_url("postgres://h/db?schema=a;b").is_err());
        assert!(PgOptions::from_url("postgres://h/db?bogus=1").is_err());
    }
}
