//! The shared conformance suite on Redis.
//!
//! Runs against the server named by `DATALAYER_REDIS_URL` (default
//! `redis://127.0.0.1:6379`). Every case works in its own namespace `dlc_<random>`
//! (the engine's `namespace=` option: the hash tag of every key), whose keys are
//! removed at the end of the case (the harness removes it also when the case panics).
//! When the server cannot be reached, every case fails with a message saying how to
//! start it; nothing is skipped.
//!
//! The cases also run (prefix `redis-aof`) on a private `redis-server` started here
//! on a free loopback port in a temporary directory with `appendonly yes`, so the
//! engine declares `durable` and the durability cases run too.

use async_trait::async_trait;
use datalayer::Capability;
use datalayer_conformance::url::UrlNamespace;
use datalayer_conformance::{Namespace, Target, trials};
use std::sync::Arc;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

fn base_url() -> String {
    std::env::var("DATALAYER_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn unreachable_help(url: &str, e: &dyn std::fmt::Display) -> String {
    format!(
        "cannot use the Redis server at {} ({e}). Start one (Debian: `apt-get install \
         redis-server && redis-server --daemonize yes`; Redis 7.0 or later), or point \
         DATALAYER_REDIS_URL at one.",
        datalayer::redact(url)
    )
}

struct Redis {
    url: String,
    cap: Capability,
    /// Why the server is unusable, when it is.
    down: Option<String>,
}

#[async_trait]
impl Target for Redis {
    async fn namespace(&self) -> anyhow::Result<Box<dyn Namespace>> {
        if let Some(why) = &self.down {
            anyhow::bail!("{why}");
        }
        let ns = format!("dlc_{}", datalayer_conformance::random_suffix());
        Ok(Box::new(UrlNamespace::redis(&self.url, &ns)))
    }
    fn capability(&self) -> Capability {
        self.cap
    }
    fn reopenable(&self) -> bool {
        true
    }
}

/// Opens the server once, in a throwaway namespace: its capability, or why it cannot
/// be used.
fn probe(url: &str) -> (Capability, Option<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ns = UrlNamespace::redis(
            url,
            &format!("dlc_probe_{}", datalayer_conformance::random_suffix()),
        );
        match ns.open().await {
            Ok(engine) => {
                let cap = engine.capability();
                let _ = engine.close().await;
                let _ = ns.destroy().await;
                (cap, None)
            }
            Err(e) => (Capability::default(), Some(unreachable_help(url, &e))),
        }
    })
}

/// A private `redis-server` with `appendonly yes`, killed when dropped.
struct AofServer {
    child: Option<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl Drop for AofServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts the private server: its URL, or why it could not start.
fn start_aof_server() -> (Option<AofServer>, Result<String, String>) {
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => return (None, Err(format!("no free port: {e}"))),
    };
    let dir = match tempfile::Builder::new().prefix("dl-redis-aof-").tempdir() {
        Ok(d) => d,
        Err(e) => return (None, Err(format!("no temp dir: {e}"))),
    };
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "everysec"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            return (
                None,
                Err(format!(
                    "cannot start redis-server ({e}): install it (Debian: apt-get install redis-server)"
                )),
            );
        }
    };
    let server = AofServer {
        child: Some(child),
        _dir: dir,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            return (
                Some(server),
                Err("the private redis-server did not start".into()),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (Some(server), Ok(format!("redis://127.0.0.1:{port}")))
}

fn main() -> std::process::ExitCode {
    let url = base_url();
    let (cap, down) = probe(&url);
    if let Some(why) = &down {
        eprintln!("{why}");
    }
    let mut all = trials("redis", Arc::new(Redis { url, cap, down }));
    let (server, aof) = start_aof_server();
    let (aof_url, cap, down) = match aof {
        Ok(u) => {
            let (cap, down) = probe(&u);
            (u, cap, down)
        }
        Err(why) => (String::new(), Capability::default(), Some(why)),
    };
    if let Some(why) = &down {
        eprintln!("{why}");
    } else {
        assert!(cap.durable, "appendonly yes must be declared durable");
    }
    all.extend(trials(
        "redis-aof",
        Arc::new(Redis {
            url: aof_url,
            cap,
            down,
        }),
    ));
    let code = datalayer_conformance::main(all);
    drop(server);
    code
}
