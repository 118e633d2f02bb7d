//! `datalayer migrate` and `datalayer verify` between stores made through the library
//! (SQLite, etch, and PostgreSQL on 127.0.0.1:5432 or `DATALAYER_PG_URL`, in a schema of
//! its own dropped at the end): a migration verified equal, a target changed behind
//! the migration's back found by `verify` (status 1), an unfinished run refused
//! without `--resume`, and kill -9 of the migrating process at random points followed
//! by `--resume`, verified equal every time.

mod common;
use common::run;

use datalayer::Table;
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "events")]
#[index(name = "by_kind", fields(kind, at))]
#[index(name = "by_ref", fields(reference), unique)]
struct Ev {
    #[pk]
    id: i64,
    kind: String,
    at: i64,
    reference: Option<String>,
    body: Vec<u8>,
}

fn ev(i: i64) -> Ev {
    Ev {
        id: i,
        kind: ["click", "view", "buy", "ünï"][(i % 4) as usize].into(),
        at: 1_700_000_000 + i * 13,
        reference: (i % 5 != 0).then(|| format!("ref-{i}")),
        body: vec![(i % 251) as u8; (i % 64) as usize],
    }
}

async fn source(url: &str, rows: i64) {
    let db = datalayer::builder(url)
        .table::<Ev>()
        .connect()
        .await
        .unwrap();
    let all: Vec<Ev> = (0..rows).map(ev).collect();
    for c in all.chunks(5_000) {
        db.repo::<Ev>().insert_many(c).await.unwrap();
    }
    db.close().await.unwrap();
}

/// A PostgreSQL URL in a fresh schema, dropped when the guard drops.
struct PgSchema {
    base: String,
    schema: String,
}

impl PgSchema {
    fn new() -> Self {
        use rand::Rng;
        let base = std::env::var("DATALAYER_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let mut r = rand::rng();
        let schema: String = (0..10)
            .map(|_| (b'a' + r.random_range(0..26)) as char)
            .collect();
        PgSchema {
            base,
            schema: format!("dl_cli_mig_{schema}"),
        }
    }
    fn url(&self) -> String {
        datalayer::with_params(&self.base, &format!("schema={}", self.schema))
    }
}

impl Drop for PgSchema {
    /// Drops the schema, also when the test failed; on a thread and runtime of its own
    /// because `Drop` cannot await.
    fn drop(&mut self) {
        let url = self.url();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let _ = rt.block_on(datalayer_conformance::url::drop_pg_schema(&url));
        })
        .join()
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_verifies_equal_and_verify_finds_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", dir.path().join("s.db").display());
    let to = format!("etch://{}", dir.path().join("e").display());
    source(&from, 3_000).await;
    let (ok, out, err) = run(&["migrate", "--from", &from, "--to", &to]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("copied 3000 rows"), "{out}");
    assert!(out.contains("verify: 1 table(s) equal"), "{out}");
    let (ok, out, err) = run(&["verify", "--from", &from, "--to", &to]);
    assert!(ok && out.contains("equal"), "{out}\n{err}");

    // Changed behind the migration's back: verify names the table and fails.
    {
        let db = datalayer::builder(to.clone())
            .table::<Ev>()
            .connect()
            .await
            .unwrap();
        let mut e = ev(1_234);
        e.body.push(1);
        db.repo::<Ev>().update(&e).await.unwrap();
        db.close().await.unwrap();
    }
    let (ok, out, err) = run(&["verify", "--from", &from, "--to", &to]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("DIFFERENT") && err.contains("events"),
        "{out}\n{err}"
    );

    // A second run into the same target: refused without --resume, a no-op with it.
    let (ok, _, err) = run(&["migrate", "--from", &from, "--to", &to]);
    assert!(!ok && err.contains("--resume"), "{err}");
    let (ok, out, err) = run(&["migrate", "--from", &from, "--to", &to, "--resume"]);
    assert!(!ok, "the changed row still differs: {out}\n{err}");
    assert!(out.contains("copied 0 rows"), "{out}");

    // An unreachable target: a clear error, status 1.
    let (ok, _, err) = run(&[
        "migrate",
        "--from",
        &from,
        "--to",
        "postgres://postgres@127.0.0.1:1/x",
    ]);
    assert!(!ok && err.contains("target"), "{err}");
}

/// Runs `datalayer migrate` and kills it with SIGKILL after `after`; true when the
/// process was still running (killed mid-way), false when it had finished.
fn kill_after(args: &[&str], after: Duration) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_datalayer"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn datalayer");
    std::thread::sleep(after);
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill(); // SIGKILL on Unix
    let _ = child.wait();
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_then_resume_verifies_equal() {
    use rand::Rng;
    let runs: usize = std::env::var("DATALAYER_KILL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("s.db").display());
    source(&sqlite, 40_000).await;
    let mut killed_mid_way = 0;
    for pair in ["sqlite->pg", "sqlite->etch"] {
        for run_no in 0..runs {
            let pg = PgSchema::new();
            let etch = format!("etch://{}", dir.path().join(format!("e{run_no}")).display());
            let to = if pair.ends_with("pg") { pg.url() } else { etch };
            let args = [
                "migrate",
                "--from",
                &sqlite,
                "--to",
                &to,
                "--chunk-ms",
                "5",
                "--resume",
            ];
            let after = Duration::from_millis(rand::rng().random_range(100..1_500));
            if kill_after(&args, after) {
                killed_mid_way += 1;
            }
            let (ok, out, err) = run(&args);
            assert!(
                ok,
                "{pair} run {run_no} killed after {after:?}:\n{out}\n{err}"
            );
            assert!(out.contains("verify: 1 table(s) equal"), "{pair}: {out}");
        }
    }
    assert!(
        killed_mid_way > 0,
        "no run was killed mid-way: the source is too small"
    );
}

/// `--cutover --follow-back`: after the cut-over the process replays what is written
/// to the target into the source until SIGTERM, then verifies the two equal.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_back_replays_target_writes_into_the_source_until_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", dir.path().join("s.db").display());
    let to = format!("sqlite://{}", dir.path().join("t.db").display());
    source(&from, 2_000).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_datalayer"))
        .args([
            "migrate",
            "--from",
            &from,
            "--to",
            &to,
            "--cutover",
            "--follow-back",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run datalayer");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    loop {
        let line = lines
            .next()
            .expect("the process ended before following back")
            .unwrap();
        out.push_str(&line);
        out.push('\n');
        if line.contains("following the target's changes back") {
            break;
        }
    }
    // The application, now on the target: inserts, updates and deletes.
    let target = datalayer::builder(to.clone())
        .table::<Ev>()
        .connect()
        .await
        .unwrap();
    let src = datalayer::builder(from.clone())
        .table::<Ev>()
        .connect()
        .await
        .unwrap();
    for i in 0..100 {
        target.repo::<Ev>().insert(&ev(10_000 + i)).await.unwrap();
        let mut e = ev(i);
        e.kind = "moved".into();
        target.repo::<Ev>().update(&e).await.unwrap();
        target.repo::<Ev>().delete(1_999 - i).await.unwrap();
    }
    // The source catches up while the process runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    while src.repo::<Ev>().get(10_099).await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the source never saw the target's writes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        src.repo::<Ev>().get(99).await.unwrap().unwrap().kind,
        "moved"
    );
    assert_eq!(src.repo::<Ev>().get(1_900).await.unwrap(), None);
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    for line in lines {
        out.push_str(&line.unwrap());
        out.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{out}");
    assert!(out.contains("followed back: "), "{out}");
    assert!(out.contains("verify: 1 table(s) equal"), "{out}");
    target.close().await.unwrap();
    src.close().await.unwrap();
}
