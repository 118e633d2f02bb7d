//! The engine on a Redis Cluster (`redis+cluster://`).
//!
//! The test starts its own three-primary cluster: three `redis-server --cluster-enabled
//! yes` on free loopback ports, each in its own temporary directory (no persistence),
//! joined with `redis-cli --cluster create … --cluster-replicas 0`. The shared servers
//! are never touched. [`Cluster`] kills the servers (by process id) and removes the
//! directories when it drops, also when a case panics. Without `redis-server` or
//! `redis-cli` every case fails with a message saying how to install them: nothing is
//! skipped.
//!
//! Cases (`cargo test -p datalayer-redis --test cluster`):
//! - `redis-cluster::<area>::<case>`: every case of the shared conformance suite
//!   (CRUD, queries, unique indexes, range scans and keyset cursors, transactions with
//!   conflicts and savepoints, batches, the change feed, the outbox…), run by the
//!   conformance harness itself on `redis+cluster://` namespaces (a few seconds; the
//!   durability cases are listed as ignored: the test cluster has no persistence).
//! - `cluster::…`: a namespace written through one node is read through a URL naming
//!   another; the function library is on every primary, and is loaded again after a
//!   primary lost it; `destroy_namespace` removes the keys on the namespace's node; an
//!   idle outbox consumer wakes on a commit on another node; `Db` opens
//!   `redis+cluster://` URLs; the persistence settings are read; a commit that timed
//!   out is `CommitUnknown` and applied once (never sent twice); a commit follows a
//!   `MOVED` after its slot moved; opening fails clearly (nothing listening, a seed
//!   without cluster support, a wrong password). The fault cases start clusters of
//!   their own.

mod common;

use async_trait::async_trait;
use common::{ServerProcs as Cluster, free_port};
use datalayer_conformance::{Namespace, Target};
use datalayer_core::{Capability, Engine};
use datalayer_redis::RedisOptions;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to get the server binaries, for a failed start.
const INSTALL: &str = "the cluster test needs redis-server and redis-cli 7.0 or later \
                       (Debian: apt-get install redis-server)";

fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .map_err(|e| format!("cannot run redis-cli ({e}): {INSTALL}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A private three-primary Redis Cluster on loopback ports (a [`Cluster`]: killed and
/// removed when dropped).
impl Cluster {
    /// Starts three nodes (with `extra` server options), joins them and waits until
    /// every node reports `cluster_state:ok` and knows the other two.
    fn start(extra: &[&str]) -> Result<Cluster, String> {
        let mut c = Cluster::new();
        for _ in 0..3 {
            // A free port can be taken by another test before the server binds it:
            // the server then exits at once, and the node starts again on new ports.
            let mut tries = 0;
            loop {
                let (port, bus) = (free_port(), free_port());
                let dir = tempfile::Builder::new()
                    .prefix("dl-redis-cluster-")
                    .tempdir()
                    .map_err(|e| format!("temp dir: {e}"))?;
                let mut child = Command::new("redis-server")
                    .args(["--port", &port.to_string()])
                    .args(["--cluster-port", &bus.to_string()])
                    .args(["--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", "nodes.conf"])
                    .args(["--cluster-node-timeout", "2000"])
                    .args(["--appendonly", "no", "--save", ""])
                    .args(extra)
                    .arg("--dir")
                    .arg(dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("cannot start redis-server ({e}): {INSTALL}"))?;
                let deadline = Instant::now() + Duration::from_secs(30);
                let up = loop {
                    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                        break true;
                    }
                    if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                        break false;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                if up {
                    c.children.push(child);
                    c.dirs.push(dir);
                    c.ports.push(port);
                    break;
                }
                let _ = child.kill();
                let _ = child.wait();
                tries += 1;
                if tries == 5 {
                    return Err(format!("redis-server on port {port} did not start"));
                }
            }
        }
        let nodes: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run redis-cli ({e}): {INSTALL}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for &p in &c.ports {
            loop {
                let info = cli(p, &["CLUSTER", "INFO"])?;
                if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("node {p} never reached cluster_state:ok: {info}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(c)
    }

    /// `redis+cluster://` naming `ports`, with `params`.
    fn url(&self, ports: &[u16], params: &str) -> String {
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let sep = if params.is_empty() { "" } else { "?" };
        format!("redis+cluster://{}{sep}{params}", nodes.join(","))
    }

    /// The node that owns namespace `ns`' hash slot: the one that answers a read of
    /// one of its keys without redirecting (`MOVED`).
    fn owner(&self, ns: &str) -> u16 {
        let key = format!("{{{ns}}}:c");
        for &p in &self.ports {
            let out = cli(p, &["EXISTS", &key]).expect("redis-cli");
            if !out.contains("MOVED") {
                return p;
            }
        }
        panic!("no node owns the slot of {key}");
    }
}

/// Conformance namespaces on the cluster.
struct ClusterTarget {
    url: String,
    cap: Capability,
    down: Option<String>,
}

struct ClusterNs {
    opts: RedisOptions,
}

#[async_trait]
impl Namespace for ClusterNs {
    async fn open(&self) -> datalayer_core::Result<Arc<dyn Engine>> {
        Ok(Arc::new(datalayer_redis::open(self.opts.clone()).await?))
    }
    fn reopenable(&self) -> bool {
        true
    }
    async fn destroy(&self) -> datalayer_core::Result<()> {
        datalayer_redis::destroy_namespace(&self.opts)
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl Target for ClusterTarget {
    async fn namespace(&self) -> anyhow::Result<Box<dyn Namespace>> {
        if let Some(why) = &self.down {
            anyhow::bail!("{why}");
        }
        let ns = format!("dlc_{}", datalayer_conformance::random_suffix());
        Ok(Box::new(ClusterNs {
            opts: RedisOptions::from_url(&format!("{}&namespace={ns}", self.url))?,
        }))
    }
    fn capability(&self) -> Capability {
        self.cap
    }
    fn reopenable(&self) -> bool {
        true
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The engine's capability on the cluster (opened once in a throwaway namespace).
fn probe(url: &str) -> Result<Capability, String> {
    rt().block_on(async {
        let ns = format!("dlc_probe_{}", datalayer_conformance::random_suffix());
        let opts =
            RedisOptions::from_url(&format!("{url}&namespace={ns}")).map_err(|e| e.to_string())?;
        let engine = datalayer_redis::open(opts.clone())
            .await
            .map_err(|e| format!("cannot open the engine on the test cluster: {e}"))?;
        let cap = engine.capability();
        let _ = engine.close().await;
        let _ = datalayer_redis::destroy_namespace(&opts).await;
        Ok(cap)
    })
}

/// A fresh namespace name.
fn ns() -> String {
    format!("dlt_{}", datalayer_conformance::random_suffix())
}

/// Opens a `Db` with the conformance tables on `url` + `namespace=ns`.
async fn db(url: &str) -> datalayer_core::Db {
    let engine = datalayer_redis::open_url(url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    datalayer_conformance::model::register(datalayer_core::Db::with_engine(Arc::new(engine)))
        .connect()
        .await
        .expect("connect")
}

/// Namespaces, one owned by each node (found by trying random names).
fn one_namespace_per_node(c: &Cluster) -> Vec<(String, u16)> {
    let mut out: Vec<(String, u16)> = Vec::new();
    for _ in 0..500 {
        let n = ns();
        let owner = c.owner(&n);
        if !out.iter().any(|(_, p)| *p == owner) {
            out.push((n, owner));
        }
        if out.len() == c.ports.len() {
            return out;
        }
    }
    panic!("could not find a namespace on every node");
}

/// A namespace written through one node is read through a URL naming another, for a
/// namespace on each of the three primaries; the persistence settings are read.
fn read_through_another_node(c: &Cluster) {
    rt().block_on(async {
        for (n, owner) in one_namespace_per_node(c) {
            let writer_url = c.url(&c.ports[..1], &format!("namespace={n}"));
            let reader_url = c.url(&c.ports[2..], &format!("namespace={n}"));
            let opts = RedisOptions::from_url(&writer_url).unwrap();
            let w = db(&writer_url).await;
            let u = datalayer_conformance::model::User::sample(7);
            w.repo::<datalayer_conformance::model::User>()
                .insert(&u)
                .await
                .unwrap();
            w.close().await.unwrap();
            let r = db(&reader_url).await;
            let got = r
                .repo::<datalayer_conformance::model::User>()
                .get(7i64)
                .await
                .unwrap();
            assert_eq!(got.as_ref(), Some(&u), "namespace on node {owner}");
            r.close().await.unwrap();
            // The keys live on the owner only.
            let kv = datalayer_redis::RedisKv::connect(opts.clone())
                .await
                .unwrap();
            assert_eq!(kv.durability().appendonly, Some(false));
            let on_owner = cli(owner, &["--scan", "--pattern", &format!("{{{n}}}*")]).unwrap();
            assert!(on_owner.lines().count() >= 3, "{on_owner}");
            let removed = datalayer_redis::destroy_namespace(&opts).await.unwrap();
            assert_eq!(removed as usize, on_owner.lines().count());
            let left = cli(owner, &["--scan", "--pattern", &format!("{{{n}}}*")]).unwrap();
            assert!(left.trim().is_empty(), "left after destroy: {left}");
        }
    });
}

/// The library is on every primary after connect, and is loaded again (on every
/// primary) when the namespace's node has lost it. On a cluster of its own: on the
/// shared one, another case's connect could load the library again first.
fn function_on_every_primary(_: &Cluster) {
    let c = &Cluster::start(&[]).unwrap_or_else(|e| panic!("{e}"));
    rt().block_on(async {
        let n = ns();
        let url = c.url(&c.ports[1..2], &format!("namespace={n}"));
        let opts = RedisOptions::from_url(&url).unwrap();
        let has_library = |p: u16| {
            cli(p, &["FUNCTION", "LIST", "LIBRARYNAME", "datalayer_v1"])
                .unwrap()
                .contains("dl_v1_commit")
        };
        let d = db(&url).await;
        for &p in &c.ports {
            assert!(has_library(p), "no library on node {p}");
        }
        // The namespace's node loses the library (as after a failover to a node that
        // never had it): the next commit loads it again and succeeds.
        let owner = c.owner(&n);
        let out = cli(owner, &["FUNCTION", "DELETE", "datalayer_v1"]).unwrap();
        assert!(out.contains("OK"), "{out}");
        assert!(!has_library(owner));
        let u = datalayer_conformance::model::User::sample(1);
        d.repo::<datalayer_conformance::model::User>()
            .insert(&u)
            .await
            .unwrap();
        for &p in &c.ports {
            assert!(has_library(p), "library not reloaded on node {p}");
        }
        d.close().await.unwrap();
        datalayer_redis::destroy_namespace(&opts).await.unwrap();
    });
}

/// A cluster of the case's own whose nodes take `DEBUG` commands (from loopback) and
/// wait 10 s before they count a silent node as failed.
fn debug_cluster() -> Cluster {
    Cluster::start(&[
        "--enable-debug-command",
        "local",
        "--cluster-node-timeout",
        "10000",
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A fresh namespace on `c` (URL naming every node, `params` appended after its
/// `namespace=`): the namespace's node, a `Db` on it, and a transaction of that `Db`
/// that inserted `User::sample(id)` and is not committed yet.
async fn pending_insert(
    c: &Cluster,
    params: &str,
    id: i64,
) -> (u16, datalayer_core::Db, datalayer_core::Tx) {
    use datalayer_conformance::model::User;
    let n = ns();
    let owner = c.owner(&n);
    let d = db(&c.url(&c.ports, &format!("namespace={n}{params}"))).await;
    let tx = d.begin().await.unwrap();
    tx.repo::<User>().insert(&User::sample(id)).await.unwrap();
    (owner, d, tx)
}

/// A commit whose reply does not come within the response timeout is `CommitUnknown`,
/// and is applied once: the cluster client does not send the `FCALL` again (a second
/// call would fail validation and report `Conflict` for a commit that happened). The
/// namespace's node is made to stall with `DEBUG SLEEP` after the transaction's reads.
/// On a cluster of its own.
fn commit_timeout_is_unknown_not_conflict(_: &Cluster) {
    let c = &debug_cluster();
    rt().block_on(async {
        use datalayer_conformance::model::User;
        let (owner, d, tx) = pending_insert(c, "&pool_size=1&response_timeout_ms=400", 1).await;
        let sleeper = std::thread::spawn(move || cli(owner, &["DEBUG", "SLEEP", "1.5"]));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let e = tx.commit().await.expect_err("the commit must time out");
        assert!(e.is_commit_unknown(), "want CommitUnknown, got {e}");
        sleeper.join().unwrap().unwrap();
        // Applied once, after the node woke up.
        assert_eq!(
            d.repo::<User>().get(1i64).await.unwrap(),
            Some(User::sample(1))
        );
        assert_eq!(d.repo::<User>().count().await.unwrap(), 1);
        d.close().await.unwrap();
    });
}

/// A commit whose connection is closed after the server applied it, before the reply
/// reached the client, is `CommitUnknown`, never `Conflict`: the cluster client must
/// not send the `FCALL` again on a new connection (that second call would fail its
/// validation). The node stalls with `DEBUG SLEEP` while the commit and then a
/// `CLIENT KILL TYPE normal` queue up behind it; when it wakes it runs the commit,
/// then closes the engine's connections before the reply is written. On a cluster of
/// its own.
fn commit_not_sent_twice_after_connection_loss(_: &Cluster) {
    let c = &debug_cluster();
    rt().block_on(async {
        use datalayer_conformance::model::User;
        let (owner, d, tx) = pending_insert(c, "&pool_size=1", 3).await;
        // The killer's connection is accepted before the node stalls (a stalled node
        // accepts nothing), and its command is written while the node sleeps, after the
        // commit's: when the node wakes, both are read in one event-loop turn, the
        // commit first, and its reply is still unwritten when the kill runs.
        use std::io::{Read, Write};
        let mut killer = std::net::TcpStream::connect(("127.0.0.1", owner)).unwrap();
        killer.write_all(b"PING\r\n").unwrap();
        let mut pong = [0u8; 7];
        killer.read_exact(&mut pong).unwrap();
        let sleeper = std::thread::spawn(move || cli(owner, &["DEBUG", "SLEEP", "1.5"]));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let commit = tokio::spawn(tx.commit());
        tokio::time::sleep(Duration::from_millis(300)).await;
        killer
            .write_all(b"CLIENT KILL TYPE normal SKIPME yes\r\n")
            .unwrap();
        let r = commit.await.unwrap();
        sleeper.join().unwrap().unwrap();
        let mut killed = [0u8; 16];
        let k = killer.read(&mut killed).unwrap();
        assert!(
            killed[..k].starts_with(b":"),
            "CLIENT KILL: {:?}",
            &killed[..k]
        );
        // (Ok only if the reply got out before the kill.)
        if let Err(e) = r {
            assert!(e.is_commit_unknown(), "want CommitUnknown, got {e}");
        }
        // The commit ran (it was queued before the kill), and only once.
        assert_eq!(
            d.repo::<User>().get(3i64).await.unwrap(),
            Some(User::sample(3))
        );
        d.close().await.unwrap();
    });
}

/// A commit sent to a node that no longer owns the namespace's slot (the slot moved
/// after the engine learnt the slot map) follows the `MOVED` and is applied on the new
/// owner. On a cluster of its own.
fn commit_follows_moved(_: &Cluster) {
    let c = &Cluster::start(&[]).unwrap_or_else(|e| panic!("{e}"));
    rt().block_on(async {
        use datalayer_conformance::model::User;
        let n = ns();
        let from = c.owner(&n);
        let to = *c.ports.iter().find(|p| **p != from).unwrap();
        let url = c.url(&c.ports, &format!("namespace={n}&pool_size=1"));
        let d = db(&url).await;
        let tx = d.begin().await.unwrap();
        tx.repo::<User>().insert(&User::sample(5)).await.unwrap();
        // Reshard the namespace's slot (with its catalog keys) to `to`, as the
        // cluster specification describes: IMPORTING/MIGRATING, MIGRATE every key,
        // then SETSLOT NODE on the target, the source and the others.
        move_slot(c, &n, from, to).await;
        assert_eq!(c.owner(&n), to);
        tx.commit().await.unwrap();
        let keys = cli(to, &["--scan", "--pattern", &format!("{{{n}}}*")]).unwrap();
        assert!(keys.lines().count() >= 3, "keys on the new owner: {keys}");
        assert_eq!(
            d.repo::<User>().get(5i64).await.unwrap(),
            Some(User::sample(5))
        );
        d.close().await.unwrap();
    });
}

/// Moves namespace `ns`' slot, keys included, from node `from` to node `to`.
async fn move_slot(c: &Cluster, ns: &str, from: u16, to: u16) {
    async fn node(port: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
    async fn q<T: redis::FromRedisValue>(
        conn: &mut redis::aio::MultiplexedConnection,
        cmd: &mut redis::Cmd,
    ) -> T {
        cmd.query_async(conn).await.unwrap()
    }
    let (mut src, mut dst) = (node(from).await, node(to).await);
    let slot: u16 = q(
        &mut src,
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{{{ns}}}:c")),
    )
    .await;
    let src_id: String = q(&mut src, redis::cmd("CLUSTER").arg("MYID")).await;
    let dst_id: String = q(&mut dst, redis::cmd("CLUSTER").arg("MYID")).await;
    let _: () = q(
        &mut dst,
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("IMPORTING")
            .arg(&src_id),
    )
    .await;
    let _: () = q(
        &mut src,
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("MIGRATING")
            .arg(&dst_id),
    )
    .await;
    loop {
        let keys: Vec<Vec<u8>> = q(
            &mut src,
            redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(1000),
        )
        .await;
        if keys.is_empty() {
            break;
        }
        let _: redis::Value = q(
            &mut src,
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys),
        )
        .await;
    }
    let mut order = vec![to, from];
    order.extend(c.ports.iter().filter(|p| **p != to && **p != from));
    for p in order {
        let _: () = q(
            &mut node(p).await,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&dst_id),
        )
        .await;
    }
}

/// Opening fails clearly: no node reachable is `ConnectionLost` (retryable), within
/// the connect timeout's order of magnitude; a seed that is a server without cluster
/// support is `InvalidInput`, saying so; a wrong password is `AUTH`.
fn connect_errors(c: &Cluster) {
    rt().block_on(async {
        let started = Instant::now();
        let url = format!(
            "redis+cluster://127.0.0.1:{}?namespace=x&connect_timeout_ms=300",
            free_port()
        );
        let e = datalayer_redis::open_url(&url).await.err().unwrap();
        assert!(
            e.kind() == datalayer_core::ErrorKind::ConnectionLost && e.is_retryable(),
            "{e}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        // A standalone server of our own (never the shared one).
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("dl-redis-standalone-")
            .tempdir()
            .unwrap();
        let mut standalone = Cluster::new();
        standalone.ports.push(port);
        standalone.children.push(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): {INSTALL}")),
        );
        standalone.dirs.push(dir);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no standalone server"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let e = datalayer_redis::open_url(&format!("redis+cluster://127.0.0.1:{port}?namespace=x"))
            .await
            .err()
            .unwrap();
        assert!(
            e.is_invalid_input() && e.message().contains("not a Redis Cluster node"),
            "{e}"
        );
        drop(standalone);
        let url = c
            .url(&c.ports[..1], "namespace=x")
            .replace("redis+cluster://", "redis+cluster://:s3cr3tpw@");
        let e = datalayer_redis::open_url(&url).await.err().unwrap();
        assert!(
            e.code() == Some("AUTH") && e.message().contains("authentication failed"),
            "{e}"
        );
        assert!(
            !e.message().contains("s3cr3tpw"),
            "the password leaked: {e}"
        );
    });
}

/// `Db::builder` opens `redis+cluster://` once the engine is registered.
fn db_opens_a_cluster_url(c: &Cluster) {
    rt().block_on(async {
        datalayer_redis::register();
        let n = ns();
        let url = c.url(&c.ports, &format!("namespace={n}&pool_size=3"));
        let d = datalayer_core::Db::builder(url.clone())
            .connect()
            .await
            .unwrap();
        let cap = datalayer_core::Executor::capability(&d);
        assert!(cap.serializable && cap.concurrent_writers && !cap.durable);
        d.close().await.unwrap();
        datalayer_redis::destroy_namespace(&RedisOptions::from_url(&url).unwrap())
            .await
            .unwrap();
    });
}

/// An idle consumer (poll interval a minute) gets each event within two seconds of
/// its commit: the commit function `PUBLISH`es on the namespace's node and the driver
/// listens on another node (the URL's first seed).
fn outbox_wakeup_across_nodes(c: &Cluster) {
    rt().block_on(async {
        let (n, owner) = one_namespace_per_node(c)
            .into_iter()
            .find(|(_, p)| *p != c.ports[0])
            .unwrap();
        let url = c.url(&c.ports, &format!("namespace={n}"));
        let opts = RedisOptions::from_url(&url).unwrap();
        let engine = datalayer_redis::open(opts.clone()).await.unwrap();
        let db = datalayer_core::Db::with_engine(Arc::new(engine))
            .connect()
            .await
            .unwrap();
        common::assert_idle_consumer_wakes(&db, &format!("; namespace on {owner}")).await;
        db.close().await.unwrap();
        datalayer_redis::destroy_namespace(&opts).await.unwrap();
    });
}

fn main() -> std::process::ExitCode {
    let started = Instant::now();
    let cluster = Cluster::start(&[]);
    let (cluster, down) = match cluster {
        Ok(c) => (Some(Arc::new(c)), None),
        Err(why) => {
            eprintln!("{why}");
            (None, Some(why))
        }
    };
    if let Some(c) = &cluster {
        eprintln!(
            "test cluster on ports {:?} ready in {:?}",
            c.ports,
            started.elapsed()
        );
    }
    let url = cluster
        .as_ref()
        .map(|c| c.url(&c.ports[..1], "pool_size=2"))
        .unwrap_or_default();
    let (cap, down) = match (&down, &cluster) {
        (None, Some(_)) => match probe(&url) {
            Ok(cap) => (cap, None),
            Err(why) => (Capability::default(), Some(why)),
        },
        _ => (Capability::default(), down),
    };
    let mut trials: Vec<libtest_mimic::Trial> = datalayer_conformance::trials(
        "redis-cluster",
        Arc::new(ClusterTarget {
            url,
            cap,
            down: down.clone(),
        }),
    );
    type Case = fn(&Cluster);
    let own: [(&str, Case); 8] = [
        ("cluster::connect_errors", connect_errors),
        (
            "cluster::read_through_another_node",
            read_through_another_node,
        ),
        (
            "cluster::function_on_every_primary",
            function_on_every_primary,
        ),
        ("cluster::db_opens_a_cluster_url", db_opens_a_cluster_url),
        (
            "cluster::commit_timeout_is_unknown_not_conflict",
            commit_timeout_is_unknown_not_conflict,
        ),
        ("cluster::commit_follows_moved", commit_follows_moved),
        (
            "cluster::commit_not_sent_twice_after_connection_loss",
            commit_not_sent_twice_after_connection_loss,
        ),
        (
            "cluster::outbox_wakeup_across_nodes",
            outbox_wakeup_across_nodes,
        ),
    ];
    for (name, f) in own {
        let (cluster, down) = (cluster.clone(), down.clone());
        trials.push(libtest_mimic::Trial::test(name, move || {
            match (cluster, down) {
                (Some(c), None) => f(&c),
                (_, why) => return Err(why.unwrap_or_default().into()),
            }
            Ok(())
        }));
    }
    let code = datalayer_conformance::main(trials);
    drop(cluster);
    code
}
