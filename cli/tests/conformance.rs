//! `datalayer conformance URL` on etch, SQLite, PostgreSQL and Redis with a filter, and
//! on a store that cannot be reached.

mod common;
use common::run;

use std::process::Command;

/// The cells of a row of the matrix.
fn cells(row: &str) -> Vec<&str> {
    row.split(['│', '┆']).map(str::trim).collect()
}

/// The matrix row of `case`: its result column.
fn result_of<'a>(out: &'a str, case: &str) -> &'a str {
    let row = out
        .lines()
        .find(|l| cells(l).get(1) == Some(&case))
        .unwrap_or_else(|| panic!("no row for {case} in\n{out}"));
    cells(row)[2]
}

/// Runs the `crud::insert` and `cdc::` cases (and `durability::` where the store is
/// durable), checks every one is listed with its result, and that no namespace is left.
fn runs_a_selection(url: &str, durable: bool) {
    let (ok, out, err) = run(&["conformance", url, "--filter", "crud::insert"]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    for case in [
        "crud::insert_get",
        "crud::insert_duplicate_key",
        "crud::insert_many_is_atomic",
    ] {
        assert_eq!(result_of(&out, case), "ok", "{out}");
    }
    assert!(
        !out.contains("crud::get_missing"),
        "the filter keeps only crud::insert*: {out}"
    );
    assert!(out.contains("ok: 3 passed, 0 failed, 0 skipped"), "{out}");

    let (ok, out, err) = run(&["conformance", url, "--filter", "durability::", "-j", "1"]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    let expected = if durable {
        "ok"
    } else {
        "skipped (needs [Durable])"
    };
    assert_eq!(
        result_of(&out, "durability::reopen_keeps_committed"),
        expected,
        "{out}"
    );
}

#[test]
fn runs_on_an_etch_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("etch");
    runs_a_selection(&format!("etch://{}", root.display()), true);
    // Every case's subdirectory is gone.
    let left: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn runs_on_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    runs_a_selection(
        &format!("sqlite://{}", dir.path().join("app.db").display()),
        true,
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn runs_in_memory() {
    runs_a_selection("sqlite::memory:", false);
}

#[test]
fn runs_on_postgres_in_fresh_schemas() {
    runs_a_selection("postgres://postgres@127.0.0.1:5432/test", true);
}

#[test]
fn runs_on_redis_in_fresh_namespaces() {
    let ns = format!("dlcli{}", std::process::id());
    let (ok, out, err) = run(&[
        "conformance",
        &format!("redis://127.0.0.1:6379?namespace={ns}"),
        "--filter",
        "cdc::captures",
    ]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        result_of(&out, "cdc::captures_in_commit_order"),
        "ok",
        "{out}"
    );
    // Every case's namespace (and the probe's) is gone.
    let left = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "--scan", "--pattern"])
        .arg(format!("*{ns}_*"))
        .output()
        .expect("run redis-cli");
    assert!(left.status.success(), "{left:?}");
    assert_eq!(
        String::from_utf8_lossy(&left.stdout),
        "",
        "keys left behind"
    );
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let (ok, out, err) = run(&["conformance", "postgres://postgres@127.0.0.1:1/x"]);
    assert!(!ok, "succeeded: {out}");
    assert_eq!(out, "");
    assert!(err.starts_with("error: cannot open postgres://"), "{err}");
}

#[test]
fn tikv_and_unknown_urls_are_refused() {
    let (ok, _, err) = run(&["conformance", "tikv://127.0.0.1:2379"]);
    assert!(!ok);
    assert!(err.contains("not supported"), "{err}");
    let (ok, _, err) = run(&["conformance", "nosuch://x"]);
    assert!(!ok);
    assert!(err.starts_with("error: no conformance namespace"), "{err}");
}

#[test]
fn a_filter_matching_nothing_is_an_error() {
    let (ok, _, err) = run(&["conformance", "etch::memory:", "--filter", "no such case"]);
    assert!(!ok);
    assert!(err.contains("no conformance case matches"), "{err}");
}
