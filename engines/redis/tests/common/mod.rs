//! Shared by the Redis tests: the server's URL, a random namespace per case, and a
//! guard that removes the namespace's keys when it drops (also when the case panics).
#![allow(dead_code)]

use datalayer_redis::{RedisOptions, destroy_namespace};

/// The default local server.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// `DATALAYER_REDIS_URL`, or the local server.
pub fn base_url() -> String {
    std::env::var("DATALAYER_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A random namespace name (`dlt_` and 12 lower-case letters).
pub fn random_ns() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    let s: String = (0..12)
        .map(|_| (b'a' + r.random_range(0..26)) as char)
        .collect();
    format!("dlt_{s}")
}

/// `url` with `params` appended to its query.
pub fn with_params(url: &str, params: &str) -> String {
    if url.contains('?') {
        format!("{url}&{params}")
    } else {
        format!("{url}?{params}")
    }
}

/// Removes every key of its namespace when dropped.
pub struct NsGuard {
    pub opts: RedisOptions,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        let opts = self.opts.clone();
        // Its own thread and runtime: drop may run inside (or outside) a runtime.
        let r = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(destroy_namespace(&opts))
        })
        .join();
        if let Ok(Err(e)) = r {
            eprintln!("could not remove namespace {}: {e}", self.opts.namespace);
        }
    }
}

/// A fresh namespace on the test server, with `params` added to the URL: the engine
/// and the guard that removes the namespace. Panics with a clear message when the
/// server cannot be reached (the tests never skip silently).
pub async fn fresh(params: &str) -> (datalayer_kv::KvEngine, NsGuard) {
    let ns = random_ns();
    let url = with_params(
        &with_params(&base_url(), &format!("namespace={ns}")),
        params,
    );
    let opts = RedisOptions::from_url(&url).expect("test URL");
    let guard = NsGuard { opts: opts.clone() };
    match datalayer_redis::open(opts).await {
        Ok(e) => (e, guard),
        Err(e) => panic!("{}", unreachable_help(&e)),
    }
}

/// How to get a server, for a failed connection.
pub fn unreachable_help(e: &dyn std::fmt::Display) -> String {
    format!(
        "cannot use the Redis server at {} ({e}). Start one (Debian: `apt-get install \
         redis-server && redis-server --daemonize yes`; Redis 7.0 or later), or point \
         DATALAYER_REDIS_URL at one.",
        datalayer_core::redact(&base_url())
    )
}
