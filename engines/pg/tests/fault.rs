//! Fault test: a private PostgreSQL instance (initdb + pg_ctl from the installed
//! binaries, its own port and directory) is restarted in the middle of a workload.
//! Transactions in flight fail with `ConnectionLost`, later ones succeed, and no
//! committed row is lost.
//!
//! Binaries: `$DATALAYER_PG_BIN` or `/usr/lib/postgresql/15/bin`. When the test runs
//! as root, the server commands run as the `postgres` user (`runuser`), since
//! `initdb` refuses to run as root.

mod common;

use common::Account;
use datalayer::{Db, ErrorKind};
use datalayer_pg::PgEngine;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Instance {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(bin: &Path, tool: &str, args: &[&str]) {
    let exe = bin.join(tool);
    let out = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&exe)
            .args(args)
            .output()
    } else {
        Command::new(&exe).args(args).output()
    }
    .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Instance {
    fn start() -> Instance {
        let bin = PathBuf::from(
            std::env::var("DATALAYER_PG_BIN")
                .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_owned()),
        );
        assert!(
            bin.join("initdb").exists(),
            "PostgreSQL server binaries not found in {} (install postgresql-15 or set DATALAYER_PG_BIN)",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("dl-pg-fault-")
            .tempdir()
            .unwrap();
        if is_root() {
            let st = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "chown of the instance directory failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.path().join("data");
        run(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let i = Instance { bin, dir, port };
        i.pg_ctl_start();
        i
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg_ctl_start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=30",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        run(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        );
    }

    /// Stops the server abruptly (`immediate`: no checkpoint, crash recovery on the
    /// next start) and starts it again on the same port.
    fn restart(&self) {
        run(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        self.pg_ctl_start();
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?pool_size=4&connect_timeout_ms=2000&wait_timeout_ms=5000",
            self.port
        )
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
    }
}

async fn insert_pair(db: &Db, id: i64) -> datalayer::Result<()> {
    db.tx(async |tx| {
        let r = tx.repo::<Account>();
        r.insert(&Account::new(id, "w", id)).await?;
        r.insert(&Account::new(id + 1, "w", id)).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_workload_loses_no_committed_row() {
    let pg = Arc::new(Instance::start());
    let db = Db::with_engine(Arc::new(PgEngine::open(&pg.url()).await.unwrap()))
        .table::<Account>()
        .queries::<Account>()
        .connect()
        .await
        .unwrap();
    let mut acked: Vec<i64> = Vec::new();
    for k in 0..20 {
        insert_pair(&db, k * 2).await.unwrap();
        acked.extend([k * 2, k * 2 + 1]);
    }

    // A transaction in flight across the restart.
    let inflight = db.begin().await.unwrap();
    inflight
        .repo::<Account>()
        .insert(&Account::new(1_000_000, "inflight", 0))
        .await
        .unwrap();

    // A background writer keeps committing pairs through the restart.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut errs) = (Vec::new(), Vec::new());
            let mut id = 10_000i64;
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match insert_pair(&db, id).await {
                    Ok(()) => ok.extend([id, id + 1]),
                    Err(e) => {
                        errs.push(e.kind());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                id += 2;
            }
            (ok, errs)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.restart())
            .await
            .unwrap();
    }

    // The in-flight transaction is gone with the old server process.
    let err = inflight
        .repo::<Account>()
        .insert(&Account::new(1_000_001, "inflight", 0))
        .await
        .expect_err("the server restarted under this transaction");
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
    assert!(err.is_retryable());
    let err = inflight.commit().await.expect_err("cannot commit");
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");

    // Later transactions succeed (after the pool replaced its dead connections).
    let settle = Instant::now() + Duration::from_secs(10);
    let mut next = 100_000i64;
    loop {
        match insert_pair(&db, next).await {
            Ok(()) => {
                acked.extend([next, next + 1]);
                next += 2;
                break;
            }
            Err(e) => {
                assert!(
                    e.is_retryable() || e.is_commit_unknown(),
                    "only retryable errors (or a commit cut off) while reconnecting: {e}"
                );
                assert!(Instant::now() < settle, "no success after the restart: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    for _ in 0..20 {
        insert_pair(&db, next)
            .await
            .expect("after the restart every transaction succeeds");
        acked.extend([next, next + 1]);
        next += 2;
    }
    stop.store(true, Ordering::SeqCst);
    let (ok, errs) = writer.await.unwrap();
    assert!(
        errs.iter().all(|k| matches!(
            k,
            ErrorKind::ConnectionLost | ErrorKind::Timeout | ErrorKind::CommitUnknown
        )),
        "writer errors during the restart: {errs:?}"
    );
    acked.extend(ok);

    // No acknowledged row is lost; the in-flight one never appeared.
    let got = db
        .repo::<Account>()
        .get_many(acked.iter().copied())
        .await
        .unwrap();
    let missing: Vec<i64> = acked
        .iter()
        .zip(&got)
        .filter(|(_, r)| r.is_none())
        .map(|(id, _)| *id)
        .collect();
    assert!(missing.is_empty(), "committed rows lost: {missing:?}");
    assert_eq!(db.repo::<Account>().get(1_000_000i64).await.unwrap(), None);
    db.close().await.unwrap();
    drop(pg);
}
