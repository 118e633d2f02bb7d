//! Transactions, savepoints, drop-rollback, read-only transactions, batches, the
//! reader/writer split, and the declared capabilities.

mod common;

use common::*;
use datalayer_core::{ErrorKind, Executor, Isolation, Op, Output, Table, TxOptions};
use datalayer_sqlite::{SqliteEngine, SqliteOptions};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn commit_and_rollback() {
    let db = memory().await;
    let tx = db.begin().await.unwrap();
    tx.repo::<User>()
        .insert(&User::new(1, "ann", None))
        .await
        .unwrap();
    assert_eq!(
        tx.repo::<User>().count().await.unwrap(),
        1,
        "reads its own writes"
    );
    tx.commit().await.unwrap();
    assert_eq!(db.repo::<User>().count().await.unwrap(), 1);

    let tx = db.begin().await.unwrap();
    tx.repo::<User>()
        .insert(&User::new(2, "bob", None))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(db.repo::<User>().get(2i64).await.unwrap(), None);

    let r: datalayer_core::Result<()> = db
        .tx(async |tx| {
            tx.repo::<User>().insert(&User::new(3, "cid", None)).await?;
            Err(datalayer_core::Error::invalid_input("boom"))
        })
        .await;
    assert!(r.is_err());
    assert_eq!(db.repo::<User>().get(3i64).await.unwrap(), None);
}

#[tokio::test]
async fn dropping_a_transaction_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    for db in [memory().await, file(dir.path()).await] {
        {
            let tx = db.begin().await.unwrap();
            tx.repo::<User>()
                .insert(&User::new(1, "ann", None))
                .await
                .unwrap();
            // dropped without commit
        }
        // The writer is free again (the rollback ran) and nothing is visible.
        assert_eq!(db.repo::<User>().get(1i64).await.unwrap(), None);
        db.repo::<User>()
            .insert(&User::new(1, "ann", None))
            .await
            .unwrap();
        assert_eq!(db.repo::<User>().count().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn savepoints() {
    let db = memory().await;
    let tx = db.begin().await.unwrap();
    let r = tx.repo::<User>();
    r.insert(&User::new(1, "ann", None)).await.unwrap();
    tx.savepoint("a").await.unwrap();
    r.insert(&User::new(2, "bob", None)).await.unwrap();
    tx.savepoint("b").await.unwrap();
    r.insert(&User::new(3, "cid", None)).await.unwrap();
    tx.rollback_to("a").await.unwrap();
    assert_eq!(r.count().await.unwrap(), 1);
    // The savepoint stays after rollback_to; "b" is gone.
    r.insert(&User::new(4, "dee", None)).await.unwrap();
    tx.rollback_to("a").await.unwrap();
    assert_eq!(
        tx.rollback_to("b").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        tx.release("nope").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        tx.savepoint("bad name").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    r.insert(&User::new(5, "eve", None)).await.unwrap();
    tx.release("a").await.unwrap();
    assert_eq!(
        tx.rollback_to("a").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let nested: datalayer_core::Result<()> = tx
        .nested("n", async |tx| {
            tx.repo::<User>().insert(&User::new(6, "fay", None)).await?;
            Err(datalayer_core::Error::invalid_input("undo me"))
        })
        .await;
    assert!(nested.is_err());
    tx.commit().await.unwrap();
    let ids: Vec<i64> = db
        .repo::<User>()
        .scan()
        .all()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, vec![1, 5]);
}

#[tokio::test]
async fn an_error_inside_a_transaction_keeps_it_usable() {
    let db = memory().await;
    let tx = db.begin().await.unwrap();
    let r = tx.repo::<User>();
    r.insert(&User::new(1, "ann", None)).await.unwrap();
    // A multi-row insert that fails half-way leaves nothing of itself behind.
    let batch = [User::new(2, "bob", None), User::new(1, "dup", None)];
    assert_eq!(
        r.insert_many(&batch).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(r.get(2i64).await.unwrap(), None);
    r.insert(&User::new(3, "cid", None)).await.unwrap();
    tx.commit().await.unwrap();
    let ids: Vec<i64> = db
        .repo::<User>()
        .scan()
        .all()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, vec![1, 3]);
}

#[tokio::test]
async fn batches_are_atomic() {
    let db = memory().await;
    let t = User::schema();
    let ops = vec![
        Op::Insert {
            table: t,
            rows: vec![User::new(1, "ann", None).to_row()],
            mode: datalayer_core::WriteMode::Insert,
        },
        Op::Insert {
            table: t,
            rows: vec![User::new(1, "dup", None).to_row()],
            mode: datalayer_core::WriteMode::Insert,
        },
    ];
    assert_eq!(
        db.run_batch(ops).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(db.repo::<User>().count().await.unwrap(), 0);
    let ops = vec![
        Op::Insert {
            table: t,
            rows: vec![User::new(1, "ann", None).to_row()],
            mode: datalayer_core::WriteMode::Insert,
        },
        Op::Count { table: t },
        Op::Get {
            table: t,
            keys: vec![vec![datalayer_core::Value::I64(1)]],
        },
    ];
    let out = db.run_batch(ops).await.unwrap();
    assert_eq!(out[1], Output::Count(1));
    assert!(matches!(&out[2], Output::Optional(v) if v[0].is_some()));
    // Inside a transaction, a batch stops at the first error; what ran before stays.
    let tx = db.begin().await.unwrap();
    let ops = vec![
        Op::Insert {
            table: t,
            rows: vec![User::new(2, "bob", None).to_row()],
            mode: datalayer_core::WriteMode::Insert,
        },
        Op::Insert {
            table: t,
            rows: vec![User::new(1, "dup", None).to_row()],
            mode: datalayer_core::WriteMode::Insert,
        },
    ];
    assert!(tx.run_batch(ops).await.is_err());
    tx.commit().await.unwrap();
    assert_eq!(db.repo::<User>().count().await.unwrap(), 2);
}

#[tokio::test]
async fn read_only_transactions_see_a_snapshot_and_reject_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = file(dir.path()).await;
    db.repo::<User>()
        .insert(&User::new(1, "ann", None))
        .await
        .unwrap();
    let tx = db
        .begin_with(TxOptions {
            isolation: Some(Isolation::Serializable),
            read_only: true,
        })
        .await
        .unwrap();
    // The writer is not blocked by the open read transaction (WAL).
    db.repo::<User>()
        .insert(&User::new(2, "bob", None))
        .await
        .unwrap();
    assert_eq!(
        tx.repo::<User>().count().await.unwrap(),
        1,
        "snapshot taken at begin"
    );
    let e = tx
        .repo::<User>()
        .insert(&User::new(3, "cid", None))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    tx.commit().await.unwrap();
    assert_eq!(db.repo::<User>().count().await.unwrap(), 2);
}

#[tokio::test]
async fn readers_see_committed_writes() {
    // File database: reads run on reader connections.
    let dir = tempfile::tempdir().unwrap();
    let db = file(dir.path()).await;
    for i in 1..=20 {
        db.repo::<User>()
            .insert(&User::new(i, "u", None))
            .await
            .unwrap();
        assert_eq!(db.repo::<User>().count().await.unwrap(), i as u64);
    }
    // In-memory database: one database shared by every read and write.
    let db = memory().await;
    let tx = db.begin().await.unwrap();
    tx.repo::<User>()
        .insert(&User::new(1, "ann", None))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        db.repo::<User>().get(1i64).await.unwrap().unwrap().name,
        "ann"
    );
    let ro = db
        .begin_with(TxOptions {
            isolation: None,
            read_only: true,
        })
        .await
        .unwrap();
    assert_eq!(ro.repo::<User>().count().await.unwrap(), 1);
    ro.rollback().await.unwrap();
}

#[tokio::test]
async fn concurrent_readers_and_writers() {
    let dir = tempfile::tempdir().unwrap();
    let db = file(dir.path()).await;
    let mut tasks = Vec::new();
    for w in 0..4i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                db.repo::<User>()
                    .insert(&User::new(w * 100 + i, "u", Some(i as i32)))
                    .await
                    .unwrap();
                let n = db
                    .repo::<User>()
                    .find("by_age")
                    .eq(i as i32)
                    .count()
                    .await
                    .unwrap();
                assert!(n >= 1);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(db.repo::<User>().count().await.unwrap(), 100);
}

#[tokio::test]
async fn waiting_for_a_busy_writer_times_out() {
    let engine =
        SqliteEngine::open_with(SqliteOptions::memory().busy_timeout(Duration::from_millis(100)))
            .await
            .unwrap();
    let db = datalayer_core::Db::with_engine(Arc::new(engine))
        .table::<User>()
        .connect()
        .await
        .unwrap();
    let tx = db.begin().await.unwrap();
    let e = db
        .repo::<User>()
        .insert(&User::new(1, "ann", None))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.is_retryable());
    tx.commit().await.unwrap();
    // The timed-out insert never ran.
    assert_eq!(db.repo::<User>().count().await.unwrap(), 0);
}

#[tokio::test]
async fn declared_capabilities_hold() {
    let dir = tempfile::tempdir().unwrap();
    let db = file(dir.path()).await;
    let cap = db.capability();
    assert!(cap.savepoints && cap.read_only_tx && cap.serializable && cap.durable);
    assert!(cap.change_feed && cap.change_feed_foreign_writes && cap.outbox);
    assert!(!cap.concurrent_writers);
    assert_eq!(cap.max_value_bytes, Some(1_000_000_000));
    for level in [
        Isolation::ReadCommitted,
        Isolation::RepeatableRead,
        Isolation::Snapshot,
        Isolation::Serializable,
    ] {
        assert!(cap.supports_isolation(level));
        let tx = db
            .begin_with(TxOptions {
                isolation: Some(level),
                read_only: false,
            })
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    }
    // Savepoints really work (checked in detail above); read-only is enforced.
    let tx = db
        .begin_with(TxOptions {
            isolation: None,
            read_only: true,
        })
        .await
        .unwrap();
    tx.savepoint("s").await.unwrap();
    assert!(
        tx.repo::<User>()
            .insert(&User::new(1, "a", None))
            .await
            .is_err()
    );
    tx.rollback().await.unwrap();
    assert_eq!(db.engine().name(), "sqlite");
    let mem = memory().await;
    assert!(!mem.capability().durable);
}

/// A table first used inside a read-only transaction (a process that opened the file
/// without declaring its tables, as the `datalayer` command does) is checked and its
/// statements prepared without waiting for the reader the transaction itself holds
/// (that wait ran into the 5 s connection timeout).
#[tokio::test]
async fn a_table_first_used_in_a_read_only_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = file(dir.path()).await;
    db.repo::<User>().insert_many(&users()).await.unwrap();
    db.close().await.unwrap();
    for readers in [1, 2] {
        let engine = SqliteEngine::open_with(
            SqliteOptions::file(dir.path().join("test.db")).readers(readers),
        )
        .await
        .unwrap();
        let db = datalayer_core::Db::with_engine(Arc::new(engine))
            .connect()
            .await
            .unwrap();
        let tx = db
            .begin_with(TxOptions {
                isolation: Some(Isolation::ReadCommitted),
                read_only: true,
            })
            .await
            .unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tx.run(Op::Count {
                table: User::schema(),
            }),
        )
        .await
        .expect("no deadlock")
        .unwrap();
        assert_eq!(
            out,
            Output::Count(users().len() as u64),
            "{readers} readers"
        );
        tx.commit().await.unwrap();
        db.close().await.unwrap();
    }
}
