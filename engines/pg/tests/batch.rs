//! Pipelined batches: results in order, atomic, `insert_many`.

mod common;

use common::*;
use datalayer::{Batch, ErrorKind};

#[tokio::test]
async fn pipelined_batch_returns_results_in_order() {
    let ns = Ns::new();
    // A small depth so the 300 statements really are sent in several windows.
    let db = ns.db("pipeline_depth=8&pool_size=2").await;
    let rows: Vec<Account> = (1..=300)
        .map(|i| Account::new(i, &format!("o{}", i % 7), i * 10))
        .collect();
    assert_eq!(db.repo::<Account>().insert_many(&rows).await.unwrap(), 300);
    // Reads in a scrambled order come back in request order.
    let ids: Vec<i64> = (0..300).map(|k| (k * 97) % 300 + 1).collect();
    let batch: Batch<Option<Account>> = ids.iter().map(|&id| Account::by_id_stmt(id)).collect();
    let got = batch.run(&db).await.unwrap();
    assert_eq!(got.len(), ids.len());
    for (id, a) in ids.iter().zip(&got) {
        assert_eq!(a.as_ref().map(|a| a.id), Some(*id));
    }
    // Writes pipelined: each sees the previous one (send order = batch order).
    let mut b = Batch::new();
    for _ in 0..50 {
        b.push(Account::add_stmt(1, 1));
    }
    assert_eq!(b.run(&db).await.unwrap(), vec![1u64; 50]);
    assert_eq!(Account::balance_of(&db, 1).await.unwrap(), 10 + 50);
    // get_many is pipelined too, results aligned with the keys.
    let got = db.repo::<Account>().get_many([5i64, 999, 3]).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|a| a.as_ref().map(|a| a.id))
            .collect::<Vec<_>>(),
        vec![Some(5), None, Some(3)]
    );
    ns.drop_schema().await;
}

#[tokio::test]
async fn failing_batch_and_insert_many_leave_nothing() {
    let ns = Ns::new();
    let db = ns.db("pipeline_depth=4").await;
    db.repo::<Account>()
        .insert(&Account::new(50, "x", 0))
        .await
        .unwrap();
    let rows: Vec<Account> = (1..=100).map(|i| Account::new(i, "y", 0)).collect();
    let err = db
        .repo::<Account>()
        .insert_many(&rows)
        .await
        .expect_err("id 50 exists");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(db.repo::<Account>().count().await.unwrap(), 1);
    let mut b = Batch::new();
    b.push(Account::add_stmt(50, 1));
    b.push(Account::add_stmt(50, i64::MAX));
    let err = b.run(&db).await.expect_err("bigint overflow");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(err.code(), Some("22003"));
    assert_eq!(Account::balance_of(&db, 50).await.unwrap(), 0);
    // The pool is still healthy.
    assert_eq!(Account::add(&db, 50, 2).await.unwrap(), 1);
    ns.drop_schema().await;
}
