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

pub use datalayer_core::with_params;

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

/// A `redis-server` of the test's own, on a free loopback port in a temporary
/// directory; killed (by its process id) when dropped.
pub struct PrivateServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl PrivateServer {
    /// Starts `redis-server` with `args` (e.g. `["--requirepass", "pw"]`) and waits
    /// until it answers. Panics when `redis-server` cannot be started.
    pub fn start(args: &[&str]) -> Self {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("dl-redis-")
            .tempdir()
            .expect("temp dir");
        let mut s = PrivateServer {
            port,
            dir,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `kill -9` of the server.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `redis://127.0.0.1:<port>` with `params`.
    pub fn url(&self, params: &str) -> String {
        with_params(&format!("redis://127.0.0.1:{}", self.port), params)
    }

    /// Runs `redis-cli` against the server with `args`; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `redis-server` processes of a test's own, on loopback `ports`, each with a
/// temporary directory: killed (by process id) when dropped, then the directories
/// removed.
pub struct ServerProcs {
    pub ports: Vec<u16>,
    pub children: Vec<std::process::Child>,
    pub dirs: Vec<tempfile::TempDir>,
}

impl ServerProcs {
    /// None yet.
    pub fn new() -> Self {
        ServerProcs {
            ports: Vec::new(),
            children: Vec::new(),
            dirs: Vec::new(),
        }
    }
}

impl Drop for ServerProcs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The temporary directories are removed as `dirs` drops.
        self.dirs.clear();
    }
}

/// Payloads an outbox consumer delivered, with when.
pub type Log = std::sync::Arc<std::sync::Mutex<Vec<(Vec<u8>, std::time::Instant)>>>;

/// Creates topic `jobs` on `db`, starts an idle consumer on it (poll interval a
/// minute), then emits three events and asserts each is delivered within two seconds
/// of its commit (woken, not polled), within five at the most; stops the consumer.
/// `context` ends the failure message of a slow delivery.
pub async fn assert_idle_consumer_wakes(db: &datalayer_core::Db, context: &str) {
    use datalayer_outbox::DbOutbox;
    use std::time::{Duration, Instant};
    datalayer_outbox::create_topic(db, "jobs", 1).await.unwrap();
    let got: Log = std::sync::Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let log = got.clone();
    let consumer = tokio::spawn(
        db.consumer("g", "jobs")
            .poll_interval(Duration::from_secs(60))
            .run(
                move |ev| {
                    let log = log.clone();
                    async move {
                        log.lock()
                            .unwrap()
                            .push((ev.payload.clone(), Instant::now()));
                        Ok(())
                    }
                },
                async move {
                    let _ = stop_rx.await;
                },
            ),
    );
    // Let the consumer start, find nothing, and go idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..3 {
        let payload = format!("e{i}").into_bytes();
        let sent = Instant::now();
        db.emit("jobs", "k", payload.clone()).await.unwrap();
        loop {
            if let Some((_, at)) = got.lock().unwrap().iter().find(|(p, _)| *p == payload) {
                assert!(
                    at.duration_since(sent) < Duration::from_secs(2),
                    "event e{i} took {:?} (polled, not woken{context})",
                    at.duration_since(sent)
                );
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(5),
                "event e{i} not delivered within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Idle again before the next one.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = stop_tx.send(());
    consumer.await.unwrap().unwrap();
}
