//! `datalayer tables URL` on stores made through the library: etch and SQLite.

mod common;
use common::run;

use datalayer::Table;

/// A table with a composite primary key, a unique and a conditional index.
#[derive(Table, Clone, Debug)]
#[table(name = "members")]
#[index(name = "by_email", fields(email), unique)]
#[index(name = "adults", fields(age), when = |m| m.age >= 18)]
#[allow(dead_code)]
struct Member {
    #[pk]
    team: String,
    #[pk]
    id: i64,
    email: Option<String>,
    age: i32,
}

async fn make(url: &str) {
    let db = datalayer::builder(url)
        .table::<Member>()
        .connect()
        .await
        .expect("connect");
    db.close().await.expect("close");
}

fn check_listing(out: &str) {
    assert!(out.contains("1 table"), "{out}");
    assert!(out.contains("members  (primary key: team, id)"), "{out}");
    for needle in [
        "email",
        "text",
        "pk#1",
        "pk#2",
        "by_email#1",
        "adults#1",
        "i32",
        "i64",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    assert!(out.contains("index by_email: (email) unique"), "{out}");
    assert!(out.contains("index adults: (age) conditional"), "{out}");
}

/// Makes the table on `url`, then lists it with the command.
async fn lists(url: &str) {
    make(url).await;
    let (ok, out, err) = run(&["tables", url]);
    assert!(ok, "stderr: {err}");
    check_listing(&out);
}

#[tokio::test]
async fn lists_an_etch_catalog() {
    let dir = tempfile::tempdir().unwrap();
    lists(&format!("etch://{}", dir.path().join("etch").display())).await;
}

#[tokio::test]
async fn lists_a_sqlite_catalog() {
    let dir = tempfile::tempdir().unwrap();
    lists(&format!(
        "sqlite://{}",
        dir.path().join("db.sqlite").display()
    ))
    .await;
}

/// `Member` with a defaulted column and an index more.
#[derive(Table, Clone, Debug)]
#[table(name = "members")]
#[index(name = "by_email", fields(email), unique)]
#[index(name = "adults", fields(age), when = |m| m.age >= 18)]
#[index(name = "by_level", fields(level))]
#[allow(dead_code)]
struct MemberV2 {
    #[pk]
    team: String,
    #[pk]
    id: i64,
    email: Option<String>,
    age: i32,
    #[column(default = 1)]
    level: i32,
}

#[tokio::test]
async fn shows_the_schema_history() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    make(&url).await;
    let (ok, out, err) = run(&["tables", &url]);
    assert!(ok, "stderr: {err}");
    assert!(out.contains("schema version 1"), "{out}");
    let db = datalayer::builder(&url)
        .table::<MemberV2>()
        .auto_migrate(true)
        .connect()
        .await
        .expect("migrated");
    db.close().await.expect("close");
    let (ok, out, err) = run(&["tables", &url]);
    assert!(ok, "stderr: {err}");
    assert!(out.contains("schema version 2"), "{out}");
    assert!(out.contains("v2 "), "{out}");
    assert!(
        out.contains("add column level I32 NOT NULL DEFAULT 1"),
        "{out}"
    );
    assert!(out.contains("add index by_level"), "{out}");
}

#[test]
fn a_bad_url_is_a_clear_error() {
    let (ok, out, err) = run(&["tables", "nosuch://x"]);
    assert!(!ok, "succeeded: {out}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("nosuch"), "{err}");
}
