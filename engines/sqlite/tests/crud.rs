//! Repository operations, unique violations, composite keys, DDL, catalog, reopen.

mod common;

use common::*;
use datalayer_core::{Engine, ErrorKind, Executor, Op, Table, TableSchema, Value};
use datalayer_sqlite::{SqliteEngine, SqliteOptions};
use std::sync::Arc;

#[tokio::test]
async fn insert_get_update_delete() {
    let db = memory().await;
    let repo = db.repo::<User>();
    let mut u = User::new(1, "ann", Some(30));
    u.avatar = Some(vec![0, 1, 255]);
    repo.insert(&u).await.unwrap();
    assert_eq!(repo.get(1i64).await.unwrap(), Some(u.clone()));
    assert_eq!(repo.get(2i64).await.unwrap(), None);

    u.name = "anne".into();
    u.age = None;
    repo.update(&u).await.unwrap();
    assert_eq!(repo.get(1i64).await.unwrap(), Some(u.clone()));
    let missing = User::new(99, "zed", None);
    assert_eq!(
        repo.update(&missing).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    assert!(repo.delete(1i64).await.unwrap());
    assert!(!repo.delete(1i64).await.unwrap());
    assert_eq!(repo.get(1i64).await.unwrap(), None);
    assert_eq!(repo.count().await.unwrap(), 0);
}

#[tokio::test]
async fn upsert_and_get_many() {
    let db = memory().await;
    let repo = db.repo::<User>();
    assert_eq!(repo.insert_many(&users()).await.unwrap(), 10);
    let mut u = User::new(3, "cid", Some(99));
    u.score = -1.5;
    repo.upsert(&u).await.unwrap();
    repo.upsert(&User::new(11, "kim", None)).await.unwrap();
    let got = repo.get_many([3i64, 42, 11, 3]).await.unwrap();
    assert_eq!(got[0], Some(u.clone()));
    assert_eq!(got[1], None);
    assert_eq!(got[2].as_ref().map(|u| u.name.as_str()), Some("kim"));
    assert_eq!(got[3], Some(u));
    assert_eq!(repo.count().await.unwrap(), 11);
    // Wrong key arity is rejected before reaching SQLite.
    let err = repo.get_many([(1i64, 2i64)]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn unique_violations_are_already_exists() {
    let db = memory().await;
    let repo = db.repo::<User>();
    repo.insert(&User::new(1, "ann", None)).await.unwrap();
    // Same primary key.
    let e = repo.insert(&User::new(1, "bob", None)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert!(!e.is_retryable());
    // Same email (unique index), different key.
    let mut dup = User::new(2, "bob", None);
    dup.email = "ann1@example.com".into();
    let e = repo.insert(&dup).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(e.code(), Some("2067"));
    // An upsert that collides on the unique index too.
    assert_eq!(
        repo.upsert(&dup).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    // insert_many is all or nothing, also for a duplicate inside the batch.
    let batch = vec![
        User::new(5, "eve", None),
        User::new(6, "fay", None),
        User::new(5, "eve", None),
    ];
    assert_eq!(
        repo.insert_many(&batch).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(repo.get(5i64).await.unwrap(), None);
    assert_eq!(repo.count().await.unwrap(), 1);
}

#[tokio::test]
async fn type_and_null_checks_are_invalid_input() {
    let db = memory().await;
    let t = User::schema();
    let mut row = User::new(1, "ann", None).to_row();
    row[1] = Value::Null; // email is NOT NULL
    let e = db
        .engine()
        .run(Op::Insert {
            table: t,
            rows: vec![row],
            mode: datalayer_core::WriteMode::Insert,
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let mut row = User::new(1, "ann", None).to_row();
    row[3] = Value::I64(1 << 40); // does not fit i32
    let e = db
        .engine()
        .run(Op::Insert {
            table: t,
            rows: vec![row],
            mode: datalayer_core::WriteMode::Insert,
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn composite_primary_key() {
    let db = memory().await;
    let repo = db.repo::<Flight>();
    let f1 = Flight::new("UA", 1, Some("EWR"), Some(600));
    let f2 = Flight::new("UA", 2, None, None);
    let f3 = Flight::new("AA", 1, Some("JFK"), Some(700));
    repo.insert_many(&[f1.clone(), f2.clone(), f3.clone()])
        .await
        .unwrap();
    assert_eq!(repo.get(("UA", 1i32)).await.unwrap(), Some(f1.clone()));
    assert_eq!(repo.get(("AA", 1i32)).await.unwrap(), Some(f3.clone()));
    assert_eq!(repo.get(("AA", 2i32)).await.unwrap(), None);
    assert_eq!(
        repo.insert(&Flight::new("UA", 1, None, None))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::AlreadyExists
    );
    // Primary-key order is (carrier, flight).
    let all = repo.scan().all().await.unwrap();
    assert_eq!(all, vec![f3.clone(), f1.clone(), f2.clone()]);
    let ua = repo.scan().eq("UA").all().await.unwrap();
    assert_eq!(ua, vec![f1.clone(), f2.clone()]);
    assert!(repo.delete(("UA", 2i32)).await.unwrap());
    assert_eq!(repo.count().await.unwrap(), 2);
}

#[tokio::test]
async fn ddl_has_partial_and_unique_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let db = file(dir.path()).await;
    drop(db);
    let c = raw(dir.path());
    let sql: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'users__active_by_name'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(sql.contains("WHERE (\"active\" = 1)"), "{sql}");
    let sql: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'users__by_email'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(sql.starts_with("CREATE UNIQUE INDEX"), "{sql}");
    let sql: String = c
        .query_row("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'flights__by_origin_dep'", [], |r| r.get(0))
        .unwrap();
    assert!(sql.contains("(\"origin\", \"dep\")"), "{sql}");
    let sql: String = c
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'flights'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        sql.contains("PRIMARY KEY (\"carrier\", \"flight\")") && sql.ends_with("STRICT"),
        "{sql}"
    );
    // The partial index is used for a matching query.
    let plan: String = c
        .query_row(
            "EXPLAIN QUERY PLAN SELECT * FROM users WHERE \"name\" = 'x' AND (\"active\" = 1)",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("users__active_by_name"), "{plan}");
    // A raw write that breaks a column's type range is rejected by the CHECK.
    let e = c.execute(
        "INSERT INTO flights VALUES ('XX', 1, 40000, NULL, NULL)",
        [],
    );
    assert!(e.is_err());
}

#[tokio::test]
async fn catalog_and_reopen_keep_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = file(dir.path()).await;
        db.repo::<User>().insert_many(&users()).await.unwrap();
        db.repo::<Flight>()
            .insert(&Flight::new("UA", 7, None, Some(5)))
            .await
            .unwrap();
        let mut names: Vec<String> = db
            .engine()
            .catalog()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        names.sort();
        assert_eq!(names, vec!["flights", "users"]);
        db.close().await.unwrap();
        assert!(
            db.repo::<User>().count().await.is_err(),
            "calls after close fail"
        );
    }
    let db = file(dir.path()).await;
    assert_eq!(db.repo::<User>().count().await.unwrap(), 10);
    assert_eq!(
        db.repo::<User>().get(3i64).await.unwrap(),
        Some(users()[2].clone())
    );
    let cat = db.engine().catalog().await.unwrap();
    assert!(cat.iter().any(|s| s == User::schema()));
    assert!(cat.iter().any(|s| s == Flight::schema()));
    assert!(db.capability().durable);

    // Registering a different schema under a stored name is rejected.
    let mut changed: TableSchema = User::schema().clone();
    changed.columns[2].name = "full_name".into();
    let changed: &'static TableSchema = Box::leak(Box::new(changed));
    let engine = SqliteEngine::open_with(SqliteOptions::file(dir.path().join("test.db")))
        .await
        .unwrap();
    let e = engine.register(&[changed], &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

#[tokio::test]
async fn opens_by_url() {
    datalayer_sqlite::register();
    let db = datalayer_core::Db::builder("sqlite::memory:")
        .table::<User>()
        .connect()
        .await
        .unwrap();
    db.repo::<User>()
        .insert(&User::new(1, "ann", None))
        .await
        .unwrap();
    assert_eq!(db.repo::<User>().count().await.unwrap(), 1);
    assert!(!db.capability().durable);
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?synchronous=full&readers=1",
        dir.path().join("u.db").display()
    );
    let db = datalayer_core::Db::builder(url)
        .table::<User>()
        .connect()
        .await
        .unwrap();
    db.repo::<User>()
        .insert(&User::new(1, "ann", None))
        .await
        .unwrap();
    assert_eq!(
        db.repo::<User>().get(1i64).await.unwrap().unwrap().name,
        "ann"
    );
    assert!(dir.path().join("u.db").exists());
}

#[tokio::test]
async fn tables_first_seen_later_are_created() {
    // Not registered: created on first use, like the KV family.
    let engine = Arc::new(SqliteEngine::open("sqlite::memory:").await.unwrap());
    let db = datalayer_core::Db::with_engine(engine)
        .connect()
        .await
        .unwrap();
    db.repo::<Flight>()
        .insert(&Flight::new("UA", 1, None, None))
        .await
        .unwrap();
    assert_eq!(db.repo::<Flight>().count().await.unwrap(), 1);
    // Inside a transaction too.
    let tx = db.begin().await.unwrap();
    tx.repo::<User>()
        .insert(&User::new(1, "ann", None))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(db.repo::<User>().count().await.unwrap(), 1);
}

/// A declared unique index replaced behind the engine's back by a non-unique one of
/// the same name: `CREATE UNIQUE INDEX IF NOT EXISTS` skips it, and the check after the
/// DDL fails the next open with a typed error naming the table and the index.
#[tokio::test]
async fn index_replaced_by_a_non_unique_one_fails_the_ddl() {
    let dir = tempfile::tempdir().unwrap();
    file(dir.path()).await.close().await.unwrap();
    raw(dir.path())
        .execute_batch("DROP INDEX users__by_email; CREATE INDEX users__by_email ON users (email);")
        .unwrap();
    let engine = SqliteEngine::open_with(SqliteOptions::file(dir.path().join("test.db")))
        .await
        .unwrap();
    let err = datalayer_core::Db::with_engine(Arc::new(engine))
        .table::<User>()
        .connect()
        .await
        .expect_err("a non-unique index where a unique one is declared");
    assert_eq!(err.kind(), ErrorKind::Engine, "{err}");
    assert!(
        err.message().contains("users") && err.message().contains("by_email"),
        "{err}"
    );
}

/// Autocommit reads of a file database run on the caller's thread, on a connection
/// per thread and engine: two engines read their own files from one thread, a read
/// sees the commit just before it, and a closed engine's reads fail (its
/// connections go at the thread's next read).
#[tokio::test]
async fn caller_thread_reads_follow_their_engine() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (file(a_dir.path()).await, file(b_dir.path()).await);
    a.repo::<User>()
        .insert(&User::new(1, "ann", None))
        .await
        .unwrap();
    b.repo::<User>()
        .insert(&User::new(1, "bob", None))
        .await
        .unwrap();
    let mut want = "ann".to_owned();
    for round in 0..3 {
        let name = |u: Option<User>| u.map(|u| u.name);
        assert_eq!(
            name(a.repo::<User>().get(1i64).await.unwrap()),
            Some(want.clone())
        );
        assert_eq!(
            name(b.repo::<User>().get(1i64).await.unwrap()).as_deref(),
            Some("bob")
        );
        let mut u = User::new(1, "ann", Some(round));
        u.name = format!("ann{round}");
        a.repo::<User>().update(&u).await.unwrap();
        let got = a.repo::<User>().get(1i64).await.unwrap().unwrap();
        assert_eq!(
            got.name,
            format!("ann{round}"),
            "reads the commit before it"
        );
        want = got.name;
    }
    a.engine().close().await.unwrap();
    let err = a.repo::<User>().get(1i64).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(b.repo::<User>().count().await.unwrap(), 1);
}
