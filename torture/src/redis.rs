//! Redis for the torture tests: a private `redis-server` (own port and temp dir,
//! `appendonly yes`, `appendfsync always`) that can be killed with SIGKILL and
//! restarted, and a private namespace on the shared server, removed when dropped.

use anyhow::{Context, bail};
use parking_lot::Mutex;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shared Redis server the tests use: `DATALAYER_REDIS_URL`, default
/// `redis://127.0.0.1:6379` (as the engine's own tests).
pub fn shared_url() -> String {
    std::env::var("DATALAYER_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Whether a Redis server accepts connections at `url` (3 s timeout).
///
/// # Errors
/// Why it cannot be reached.
pub async fn reachable(url: &str) -> anyhow::Result<()> {
    let opts = datalayer_redis::RedisOptions::from_url(url)?;
    let fut = tokio::net::TcpStream::connect((opts.host.as_str(), opts.port));
    match tokio::time::timeout(Duration::from_secs(3), fut).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("connection timed out"),
    }
}

/// A private namespace `torture_<random>` on a Redis server; every key of it is removed
/// when this guard drops (also after a panic).
pub struct RedisNs {
    url: String,
}

impl RedisNs {
    /// A fresh namespace on the server of `base`.
    pub fn new(base: &str, rng: &mut impl rand::Rng) -> RedisNs {
        let ns = format!("torture_{}", crate::common::random_suffix(rng));
        RedisNs {
            url: crate::common::with_params(base, &format!("namespace={ns}")),
        }
    }

    /// The engine URL for this namespace, with `params`.
    pub fn url(&self, params: &str) -> String {
        crate::common::with_params(&self.url, params)
    }
}

impl Drop for RedisNs {
    fn drop(&mut self) {
        let url = self.url.clone();
        // Drop may run inside the tests' runtime: remove the keys on a thread of its own.
        let removed = std::thread::spawn(move || -> anyhow::Result<u64> {
            let opts = datalayer_redis::RedisOptions::from_url(&url)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(datalayer_redis::destroy_namespace(&opts))?)
        })
        .join();
        if !matches!(removed, Ok(Ok(_))) {
            eprintln!(
                "warning: could not remove the Redis namespace of {}",
                self.url
            );
        }
    }
}

/// A private `redis-server` with `appendonly yes` and `appendfsync always` (every
/// acknowledged write is fsynced), stopped and removed when dropped.
pub struct PrivateRedis {
    dir: tempfile::TempDir,
    port: u16,
    child: Mutex<Option<Child>>,
}

impl PrivateRedis {
    /// Starts one on a free loopback port and waits until it accepts connections.
    ///
    /// # Errors
    /// `redis-server` missing or not starting within 10 s.
    pub fn start() -> anyhow::Result<PrivateRedis> {
        let dir = tempfile::Builder::new()
            .prefix("torture-redis-")
            .tempdir()?;
        let server = PrivateRedis {
            dir,
            port: crate::pg::free_port()?,
            child: Mutex::new(None),
        };
        server.spawn()?;
        Ok(server)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn spawn(&self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        *self.child.lock() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server on port {} did not start in 10 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn kill(&self) {
        if let Some(mut c) = self.child.lock().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `kill -9` of the server, then a start on the same port and directory (it
    /// replays its append-only file).
    ///
    /// # Errors
    /// The restart fails.
    pub fn crash_restart(&self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
