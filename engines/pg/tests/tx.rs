//! Transactions on a real server: isolation levels, write skew and retries,
//! read-only transactions, drop-rollback, savepoints after errors, lost connections.

mod common;

use common::*;
use datalayer::{ErrorKind, Isolation, TxOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

async fn doctors(db: &datalayer::Db) {
    let r = db.repo::<Account>();
    r.insert(&Account::new(1, "alice", 0)).await.unwrap();
    r.insert(&Account::new(2, "bob", 0)).await.unwrap();
}

fn opts(level: Isolation) -> TxOptions {
    TxOptions {
        isolation: Some(level),
        read_only: false,
    }
}

#[tokio::test]
async fn serializable_write_skew_is_a_conflict() {
    let ns = Ns::new();
    let db = ns.db("pool_size=4").await;
    doctors(&db).await;
    let t1 = db.begin_with(opts(Isolation::Serializable)).await.unwrap();
    let t2 = db.begin_with(opts(Isolation::Serializable)).await.unwrap();
    assert_eq!(Account::on_call_count(&t1).await.unwrap(), 2);
    assert_eq!(Account::on_call_count(&t2).await.unwrap(), 2);
    Account::set_on_call(&t1, 1, false).await.unwrap();
    let w2 = Account::set_on_call(&t2, 2, false).await;
    t1.commit().await.unwrap();
    let err = match w2 {
        Err(e) => e,
        Ok(_) => t2.commit().await.expect_err("write skew must not commit"),
    };
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(err.code(), Some("40001"));
    assert!(err.is_retryable());
    assert_eq!(Account::on_call_count(&db).await.unwrap(), 1);

    // The same interleaving under REPEATABLE READ (snapshot isolation) lets the skew
    // through: the levels really differ.
    Account::set_on_call(&db, 1, true).await.unwrap();
    let t1 = db.begin_with(opts(Isolation::Snapshot)).await.unwrap();
    let t2 = db
        .begin_with(opts(Isolation::RepeatableRead))
        .await
        .unwrap();
    assert_eq!(Account::on_call_count(&t1).await.unwrap(), 2);
    assert_eq!(Account::on_call_count(&t2).await.unwrap(), 2);
    Account::set_on_call(&t1, 1, false).await.unwrap();
    Account::set_on_call(&t2, 2, false).await.unwrap();
    t1.commit().await.unwrap();
    t2.commit().await.unwrap();
    assert_eq!(Account::on_call_count(&db).await.unwrap(), 0);
    ns.drop_schema().await;
}

#[tokio::test]
async fn retry_reruns_a_serialization_failure() {
    let ns = Ns::new();
    let db = ns.db("pool_size=4").await;
    doctors(&db).await;
    let attempts = Arc::new(AtomicU32::new(0));
    let (a, other) = (attempts.clone(), db.clone());
    db.tx_with()
        .isolation(Isolation::Serializable)
        .retry(3)
        .run(async move |tx| {
            let n = a.fetch_add(1, Ordering::SeqCst);
            let on_call = Account::on_call_count(tx).await?;
            if n == 0 {
                // A concurrent doctor goes off call and commits first.
                let t = other.begin_with(opts(Isolation::Serializable)).await?;
                assert_eq!(Account::on_call_count(&t).await?, 2);
                Account::set_on_call(&t, 2, false).await?;
                t.commit().await?;
            }
            if on_call >= 2 {
                Account::set_on_call(tx, 1, false).await?;
            }
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "re-run once after 40001"
    );
    assert_eq!(Account::on_call_count(&db).await.unwrap(), 1);
    ns.drop_schema().await;
}

#[tokio::test]
async fn read_committed_sees_new_commits_repeatable_read_does_not() {
    let ns = Ns::new();
    let db = ns.db("pool_size=4").await;
    doctors(&db).await;
    let rc = db.begin_with(opts(Isolation::ReadCommitted)).await.unwrap();
    let rr = db
        .begin_with(opts(Isolation::RepeatableRead))
        .await
        .unwrap();
    assert_eq!(Account::balance_of(&rc, 1).await.unwrap(), 0);
    assert_eq!(Account::balance_of(&rr, 1).await.unwrap(), 0);
    Account::add(&db, 1, 5).await.unwrap();
    assert_eq!(Account::balance_of(&rc, 1).await.unwrap(), 5);
    assert_eq!(Account::balance_of(&rr, 1).await.unwrap(), 0);
    // A write to the row changed under REPEATABLE READ is a conflict.
    let err = Account::add(&rr, 1, 1)
        .await
        .expect_err("concurrent update");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    rc.commit().await.unwrap();
    rr.rollback().await.unwrap();
    ns.drop_schema().await;
}

#[tokio::test]
async fn read_only_rejects_writes() {
    let ns = Ns::new();
    let db = ns.db("").await;
    doctors(&db).await;
    let tx = db
        .begin_with(TxOptions {
            isolation: None,
            read_only: true,
        })
        .await
        .unwrap();
    assert_eq!(tx.repo::<Account>().count().await.unwrap(), 2);
    let err = tx
        .repo::<Account>()
        .insert(&Account::new(3, "cid", 0))
        .await
        .expect_err("write in read-only tx");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = Account::add(&tx, 1, 1).await.expect_err("update query");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        Account::balance_of(&tx, 1).await.unwrap(),
        0,
        "still usable"
    );
    tx.commit().await.unwrap();
    assert_eq!(db.repo::<Account>().count().await.unwrap(), 2);
    ns.drop_schema().await;
}

#[tokio::test]
async fn dropped_tx_leaves_the_pooled_connection_clean() {
    let ns = Ns::new();
    // One connection: the next op must get the very connection the dropped
    // transaction used.
    let db = ns.db("pool_size=1").await;
    {
        let tx = db.begin().await.unwrap();
        tx.repo::<Account>()
            .insert(&Account::new(1, "ghost", 0))
            .await
            .unwrap();
    }
    // If the connection were still inside the dropped transaction, this autocommit
    // insert would be part of it and invisible to other sessions.
    db.repo::<Account>()
        .insert(&Account::new(2, "real", 0))
        .await
        .unwrap();
    let raw = ns.raw().await;
    let ids: Vec<i64> = raw
        .query(
            &format!("SELECT id FROM \"{}\".accounts ORDER BY id", ns.schema),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![2]);
    let idle_in_tx: i64 = raw
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%' AND query LIKE '%accounts%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(idle_in_tx, 0);
    ns.drop_schema().await;
}

#[tokio::test]
async fn failed_op_keeps_tx_usable_and_savepoints_nest() {
    let ns = Ns::new();
    let db = ns.db("").await;
    doctors(&db).await;
    let tx = db.begin().await.unwrap();
    let r = tx.repo::<Account>();
    let err = r.insert(&Account::new(1, "dup", 0)).await.expect_err("dup");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(err.code(), Some("23505"));
    tx.savepoint("s").await.unwrap();
    r.insert(&Account::new(3, "cid", 0)).await.unwrap();
    tx.rollback_to("s").await.unwrap();
    r.insert(&Account::new(4, "dan", 0)).await.unwrap();
    assert_eq!(
        tx.rollback_to("nope").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    tx.commit().await.unwrap();
    let ids: Vec<i64> = db
        .repo::<Account>()
        .scan()
        .all()
        .await
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, vec![1, 2, 4]);
    ns.drop_schema().await;
}

#[tokio::test]
async fn killed_backend_is_connection_lost_and_replaced() {
    let ns = Ns::new();
    let app = format!("dl_kill_{}", ns.schema);
    let db = ns.db(&format!("pool_size=2&application_name={app}")).await;
    doctors(&db).await;
    let tx = db.begin().await.unwrap();
    tx.repo::<Account>()
        .insert(&Account::new(3, "doomed", 0))
        .await
        .unwrap();
    let raw = ns.raw().await;
    raw.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        &[&app],
    )
    .await
    .unwrap();
    let err = tx
        .repo::<Account>()
        .insert(&Account::new(4, "doomed", 0))
        .await
        .expect_err("the backend is gone");
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
    assert!(err.is_retryable());
    let err = tx.commit().await.expect_err("cannot commit");
    assert_eq!(err.kind(), ErrorKind::ConnectionLost, "{err}");
    // The pool replaced the dead connections: later work succeeds.
    let mut ok = false;
    for _ in 0..3 {
        if db.repo::<Account>().count().await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "a fresh connection serves later calls");
    assert_eq!(db.repo::<Account>().count().await.unwrap(), 2);
    ns.drop_schema().await;
}

#[tokio::test]
async fn declared_capabilities() {
    let ns = Ns::new();
    let e = ns.engine("pipeline_depth=16").await;
    let cap = datalayer::Engine::capability(&e);
    assert!(cap.read_committed && cap.repeatable_read && cap.snapshot && cap.serializable);
    assert!(cap.read_only_tx && cap.savepoints && cap.durable && cap.concurrent_writers);
    assert!(cap.change_feed && cap.change_feed_foreign_writes);
    assert_eq!(cap.pipeline_depth, Some(16));
    assert_eq!(cap.max_value_bytes, Some(1 << 30));
    let dbg = format!("{e:?}");
    assert!(dbg.contains("pipeline_depth: 16"), "{dbg}");
    ns.drop_schema().await;
}
