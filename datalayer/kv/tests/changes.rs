//! The KV family's change feed under concurrent writers (the in-memory store detects
//! conflicts as Redis and TiKV do): two capturing transactions conflict on the table's
//! change sequence, so positions follow commit order and a transaction that commits
//! late can never place a change below a position a reader has already passed.

use datalayer_core::{ColumnDef, ColumnType, Engine, Op, TableSchema, TxOptions, Value, WriteMode};
use datalayer_kv::KvEngine;
use datalayer_kv::mem::MemKv;

fn table() -> TableSchema {
    let col = |name: &str, ty| ColumnDef {
        name: name.into(),
        field: name.into(),
        ty,
        nullable: false,
    };
    TableSchema {
        version: None,
        name: "items".into(),
        columns: vec![col("id", ColumnType::I64), col("v", ColumnType::String)],
        primary_key: vec![0],
        indexes: vec![],
    }
}

fn insert(t: &TableSchema, id: i64) -> Op<'_> {
    Op::Insert {
        table: t,
        rows: vec![vec![Value::I64(id), Value::String(format!("v{id}"))]],
        mode: WriteMode::Insert,
    }
}

#[tokio::test]
async fn late_commit_conflicts_instead_of_landing_below_a_read_position() {
    let t = table();
    let engine = KvEngine::new(MemKv::new());
    assert!(engine.capability().concurrent_writers);
    assert!(engine.capability().change_feed);
    engine.register(&[&t], &[]).await.unwrap();
    engine.enable_changes("items").await.unwrap();

    // A writes first but commits last; B commits in between.
    let mut a = engine.begin(TxOptions::default()).await.unwrap();
    a.run(insert(&t, 1)).await.unwrap();
    let mut b = engine.begin(TxOptions::default()).await.unwrap();
    b.run(insert(&t, 2)).await.unwrap();
    b.commit().await.unwrap();

    // A reader passes B's change.
    let seen = engine.read_changes("items", 0, 10).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].get("id"), Some(&Value::I64(2)));
    let passed = seen[0].position;

    // A's commit would put its change at the position B already took: it must fail
    // with a retryable conflict, not land at or below `passed`.
    let err = a
        .commit()
        .await
        .expect_err("A conflicts on the change sequence");
    assert!(err.is_conflict(), "{err}");
    assert!(err.is_retryable());
    assert!(
        engine
            .read_changes("items", passed, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing of A is visible"
    );

    // Re-run A: its change comes after everything the reader has seen.
    let mut a = engine.begin(TxOptions::default()).await.unwrap();
    a.run(insert(&t, 1)).await.unwrap();
    a.commit().await.unwrap();
    let next = engine.read_changes("items", passed, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert!(next[0].position > passed);
    assert_eq!(next[0].get("id"), Some(&Value::I64(1)));
}

#[tokio::test]
async fn writers_of_uncaptured_tables_do_not_contend() {
    let t = table();
    let engine = KvEngine::new(MemKv::new());
    engine.register(&[&t], &[]).await.unwrap();
    // No capture: two transactions writing different rows both commit.
    let mut a = engine.begin(TxOptions::default()).await.unwrap();
    a.run(insert(&t, 1)).await.unwrap();
    let mut b = engine.begin(TxOptions::default()).await.unwrap();
    b.run(insert(&t, 2)).await.unwrap();
    b.commit().await.unwrap();
    a.commit().await.unwrap();
    assert!(
        engine
            .read_changes("items", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
