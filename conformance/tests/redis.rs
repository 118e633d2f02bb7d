//! The shared conformance suite on Redis.
//!
//! Runs against the server named by `DATALAYER_REDIS_URL` (default
//! `redis://127.0.0.1:6379`). Every case works in its own namespace `dlc_<random>`
//! (the engine's `namespace=` option: the hash tag of every key), whose keys are
//! removed at the end of the case (the harness removes it also when the case panics).
//! When the server cannot be reached, every case fails with a message saying how to
//! start it; nothing is skipped.

use async_trait::async_trait;
use datalayer::{Capability, Engine};
use datalayer_conformance::{Namespace, Target, trials};
use datalayer_redis::RedisOptions;
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

fn ns_options(url: &str, ns: &str) -> datalayer::Result<RedisOptions> {
    let sep = if url.contains('?') { '&' } else { '?' };
    RedisOptions::from_url(&format!("{url}{sep}namespace={ns}"))
}

struct Redis {
    url: String,
    cap: Capability,
    /// Why the server is unusable, when it is.
    down: Option<String>,
}

struct RedisNs {
    opts: RedisOptions,
}

#[async_trait]
impl Namespace for RedisNs {
    async fn open(&self) -> datalayer::Result<Arc<dyn Engine>> {
        Ok(Arc::new(datalayer_redis::open(self.opts.clone()).await?))
    }
    fn reopenable(&self) -> bool {
        true
    }
    async fn destroy(&self) -> datalayer::Result<()> {
        datalayer_redis::destroy_namespace(&self.opts)
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl Target for Redis {
    async fn namespace(&self) -> anyhow::Result<Box<dyn Namespace>> {
        if let Some(why) = &self.down {
            anyhow::bail!("{why}");
        }
        let ns = format!("dlc_{}", datalayer_conformance::random_suffix());
        Ok(Box::new(RedisNs {
            opts: ns_options(&self.url, &ns)?,
        }))
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
        let ns = format!("dlc_probe_{}", datalayer_conformance::random_suffix());
        let opts = match ns_options(url, &ns) {
            Ok(o) => o,
            Err(e) => return (Capability::default(), Some(format!("bad URL: {e}"))),
        };
        let ns = RedisNs { opts };
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

fn main() -> std::process::ExitCode {
    let url = base_url();
    let (cap, down) = probe(&url);
    if let Some(why) = &down {
        eprintln!("{why}");
    }
    datalayer_conformance::main(trials("redis", Arc::new(Redis { url, cap, down })))
}
