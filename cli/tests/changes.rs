//! `datalayer changes URL TABLE` on stores written through the library: etch and SQLite.

mod common;
use common::run;

use datalayer::Table;
use serde_json::{Value as Json, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A table with every kind of value the JSON lines carry.
#[derive(Table, Clone, Debug)]
#[table(name = "notes")]
struct Note {
    #[pk]
    id: i64,
    title: String,
    score: f64,
    done: bool,
    body: Option<Vec<u8>>,
}

fn note(id: i64, title: &str) -> Note {
    Note {
        id,
        title: title.into(),
        score: id as f64 + 0.5,
        done: id % 2 == 0,
        body: Some(vec![0, 1, 2, 255]),
    }
}

/// Turns capture on for `notes`, then writes four changes: insert 1, insert 2,
/// update 1, delete 2.
async fn make(url: &str) {
    let db = datalayer::builder(url)
        .table::<Note>()
        .connect()
        .await
        .expect("connect");
    db.enable_changes("notes").await.expect("enable changes");
    let notes = db.repo::<Note>();
    notes.insert(&note(1, "first")).await.unwrap();
    notes.insert(&note(2, "second")).await.unwrap();
    notes.update(&note(1, "first, again")).await.unwrap();
    notes.delete(2).await.unwrap();
    db.close().await.expect("close");
}

/// The JSON objects of the command's output, one per line.
fn parse(out: &str) -> Vec<Json> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

fn position(c: &Json) -> u64 {
    c["position"].as_u64().expect("a position")
}

/// Checks the four changes [`make`] writes.
fn check_all(changes: &[Json]) {
    assert_eq!(changes.len(), 4, "{changes:#?}");
    for w in changes.windows(2) {
        assert!(position(&w[0]) < position(&w[1]), "{changes:#?}");
    }
    let kinds: Vec<&str> = changes
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["insert", "insert", "update", "delete"]);
    assert!(changes.iter().all(|c| c["table"] == "notes"));
    assert_eq!(
        changes[0]["columns"],
        json!({"id": 1, "title": "first", "score": 1.5, "done": false, "body": "AAEC/w=="})
    );
    assert_eq!(changes[2]["columns"]["title"], "first, again");
    // A delete carries the removed row.
    assert_eq!(
        changes[3]["columns"],
        json!({"id": 2, "title": "second", "score": 2.5, "done": true, "body": "AAEC/w=="})
    );
}

/// The whole log, then what follows a position, then a limit.
async fn prints_the_log(url: &str) {
    make(url).await;
    let (ok, out, err) = run(&["changes", url, "notes"]);
    assert!(ok, "stderr: {err}");
    let all = parse(&out);
    check_all(&all);

    let after = position(&all[1]).to_string();
    let (ok, out, err) = run(&["changes", url, "notes", "--after", &after]);
    assert!(ok, "stderr: {err}");
    assert_eq!(parse(&out), all[2..], "after {after}");

    let (ok, out, err) = run(&["changes", url, "notes", "--after", &after, "--limit", "1"]);
    assert!(ok, "stderr: {err}");
    assert_eq!(parse(&out), all[2..3]);

    let last = position(&all[3]).to_string();
    let (ok, out, err) = run(&["changes", url, "notes", "--after", &last]);
    assert!(ok, "stderr: {err}");
    assert_eq!(out, "", "nothing after the last position");
}

#[tokio::test]
async fn prints_an_etch_log() {
    let dir = tempfile::tempdir().unwrap();
    prints_the_log(&format!("etch://{}", dir.path().join("etch").display())).await;
}

#[tokio::test]
async fn prints_a_sqlite_log() {
    let dir = tempfile::tempdir().unwrap();
    prints_the_log(&format!(
        "sqlite://{}",
        dir.path().join("db.sqlite").display()
    ))
    .await;
}

/// Makes the `notes` table on `url` and starts `datalayer changes URL notes --follow`
/// with its output piped.
async fn follow(url: &str) -> std::process::Child {
    make(url).await;
    Command::new(env!("CARGO_BIN_EXE_datalayer"))
        .args(["changes", url, "notes", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run datalayer")
}

/// `--follow` prints what is committed while it runs, and stops quietly on SIGTERM.
#[cfg(unix)]
#[tokio::test]
async fn follow_prints_new_changes_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let mut child = follow(&url).await;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(serde_json::from_str::<Json>(&lines.next().unwrap().unwrap()).unwrap());
    }
    check_all(&seen);

    let db = datalayer::builder(url.as_str())
        .table::<Note>()
        .connect()
        .await
        .unwrap();
    db.repo::<Note>().insert(&note(3, "third")).await.unwrap();
    db.close().await.unwrap();
    let next: Json = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(next["kind"], "insert");
    assert_eq!(next["columns"]["title"], "third");
    assert!(position(&next) > position(&seen[3]));

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// A closed output pipe ends `--follow` quietly, with status 0. (On SQLite: an etch
/// directory is open in one process at a time.)
#[tokio::test]
async fn a_closed_pipe_ends_follow_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let mut child = follow(&url).await;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("\"insert\""), "{first}");
    drop(out);
    // The next write finds the pipe closed.
    let db = datalayer::builder(url.as_str())
        .table::<Note>()
        .connect()
        .await
        .unwrap();
    db.repo::<Note>().insert(&note(3, "third")).await.unwrap();
    db.close().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running with its pipe closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert_eq!(err, "");
}

#[tokio::test]
async fn an_unknown_table_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        format!("etch://{}", dir.path().join("etch").display()),
        format!("sqlite://{}", dir.path().join("db.sqlite").display()),
    ] {
        make(&url).await;
        let (ok, out, err) = run(&["changes", &url, "nosuch"]);
        assert!(!ok, "succeeded: {out}");
        assert_eq!(out, "");
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains("no table named \"nosuch\""), "{err}");
    }
}

/// The engines read a table whose capture is off as an empty log: the command prints
/// nothing and says why on standard error.
#[tokio::test]
async fn a_table_without_capture_gets_a_note() {
    #[derive(Table, Clone, Debug)]
    #[table(name = "quiet")]
    struct Quiet {
        #[pk]
        id: i64,
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let db = datalayer::builder(url.as_str())
        .table::<Quiet>()
        .connect()
        .await
        .unwrap();
    db.repo::<Quiet>().insert(&Quiet { id: 1 }).await.unwrap();
    db.close().await.unwrap();
    let (ok, out, err) = run(&["changes", &url, "quiet"]);
    assert!(ok, "stderr: {err}");
    assert_eq!(out, "");
    assert!(err.contains("change capture is not enabled"), "{err}");
}

#[test]
fn a_bad_url_is_a_clear_error() {
    let (ok, out, err) = run(&["changes", "nosuch://x", "t"]);
    assert!(!ok, "succeeded: {out}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("nosuch"), "{err}");
}
