//! Transactions: commit, rollback on error / panic / drop, savepoints, retries.

use super::seed_users;
use crate::Ctx;
use crate::model::User;
use anyhow::ensure;
use datalayer::{Error, ErrorKind, Isolation};
use futures::FutureExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Case: Commit makes visible.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn commit_makes_visible(cx: &mut Ctx) -> anyhow::Result<()> {
    let n = cx
        .db
        .tx(async |tx| {
            tx.repo::<User>().insert(&User::sample(1)).await?;
            tx.repo::<User>().insert(&User::sample(2)).await?;
            User::count_all(tx).await
        })
        .await?;
    assert_eq!(n, 2);
    assert_eq!(cx.db.repo::<User>().count().await?, 2);
    Ok(())
}

/// Case: Err rolls back.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn err_rolls_back(cx: &mut Ctx) -> anyhow::Result<()> {
    let r: datalayer::Result<()> = cx
        .db
        .tx(async |tx| {
            tx.repo::<User>().insert(&User::sample(1)).await?;
            Err(Error::invalid_input("business rule failed"))
        })
        .await;
    assert_eq!(
        r.expect_err("closure error").kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(cx.db.repo::<User>().count().await?, 0);
    Ok(())
}

/// Case: Panic rolls back.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn panic_rolls_back(cx: &mut Ctx) -> anyhow::Result<()> {
    let db = cx.db.clone();
    let r = std::panic::AssertUnwindSafe(async move {
        db.tx(async |tx| {
            tx.repo::<User>().insert(&User::sample(1)).await?;
            if tx.repo::<User>().count().await? == 1 {
                panic!(
                    "intentional panic: this case checks that a panicking transaction rolls back"
                );
            }
            Ok(())
        })
        .await
    })
    .catch_unwind()
    .await;
    ensure!(r.is_err(), "the panic propagates");
    assert_eq!(cx.db.repo::<User>().count().await?, 0);
    // The engine is still usable for writes (no writer lock left behind).
    cx.db.repo::<User>().insert(&User::sample(2)).await?;
    Ok(())
}

/// Case: Dropped guard rolls back.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn dropped_guard_rolls_back(cx: &mut Ctx) -> anyhow::Result<()> {
    {
        let tx = cx.db.begin().await?;
        tx.repo::<User>().insert(&User::sample(1)).await?;
        // dropped here without commit
    }
    assert_eq!(cx.db.repo::<User>().count().await?, 0);
    cx.db.repo::<User>().insert(&User::sample(3)).await?;
    assert_eq!(cx.db.repo::<User>().count().await?, 1);
    Ok(())
}

/// Case: Guard commit and rollback.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn guard_commit_and_rollback(cx: &mut Ctx) -> anyhow::Result<()> {
    let tx = cx.db.begin().await?;
    tx.repo::<User>().insert(&User::sample(1)).await?;
    tx.commit().await?;
    let tx = cx.db.begin().await?;
    tx.repo::<User>().insert(&User::sample(2)).await?;
    tx.rollback().await?;
    let ids: Vec<i64> = cx
        .db
        .repo::<User>()
        .scan()
        .all()
        .await?
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, vec![1]);
    Ok(())
}

/// Case: Read your writes.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn read_your_writes(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 5).await?;
    let tx = cx.db.begin().await?;
    let mut u = User::sample(6);
    u.team_id = Some(1);
    tx.repo::<User>().insert(&u).await?;
    tx.repo::<User>().delete(1i64).await?;
    let in_team: Vec<i64> = User::in_team(&tx, 1).await?.iter().map(|u| u.id).collect();
    ensure!(
        in_team.contains(&6) && !in_team.contains(&1),
        "index scan sees own writes: {in_team:?}"
    );
    assert_eq!(tx.repo::<User>().count().await?, 5);
    assert_eq!(
        User::by_email(&tx, "u6@example.com").await?.map(|u| u.id),
        Some(6)
    );
    tx.commit().await?;
    assert_eq!(cx.db.repo::<User>().get(6i64).await?, Some(u));
    Ok(())
}

/// Case: Failed op keeps tx usable.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn failed_op_keeps_tx_usable(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 2).await?;
    let tx = cx.db.begin().await?;
    let repo = tx.repo::<User>();
    repo.insert(&User::sample(3)).await?;
    // A multi-row insert that fails half-way leaves nothing of itself behind.
    let err = repo
        .insert_many(&[User::sample(4), User::sample(1)])
        .await
        .expect_err("dup");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    // A single-row insert that conflicts, on the primary key and on a unique index.
    let err = repo.insert(&User::sample(2)).await.expect_err("dup key");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    let mut twin = User::sample(6);
    twin.email = User::sample(3).email;
    let err = repo.insert(&twin).await.expect_err("dup email");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    repo.insert(&User::sample(5)).await?;
    tx.commit().await?;
    let ids: Vec<i64> = cx
        .db
        .repo::<User>()
        .scan()
        .all()
        .await?
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 5]);
    Ok(())
}

/// Case: Retry reruns on retryable error.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn retry_reruns_on_retryable_error(cx: &mut Ctx) -> anyhow::Result<()> {
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = attempts.clone();
    let out = cx
        .db
        .tx_with()
        .retry(3)
        .run(async move |tx| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            tx.repo::<User>().insert(&User::sample(1)).await?;
            if n < 2 {
                return Err(Error::conflict("simulated serialization failure"));
            }
            Ok(n)
        })
        .await?;
    assert_eq!(out, 2);
    assert_eq!(
        cx.db.repo::<User>().count().await?,
        1,
        "failed attempts rolled back"
    );
    let err = cx
        .db
        .tx_with()
        .retry(1)
        .run(async |_tx| -> datalayer::Result<()> { Err(Error::conflict("always")) })
        .await
        .expect_err("gives up");
    ensure!(err.is_retryable());
    let non = Arc::new(AtomicU32::new(0));
    let counter = non.clone();
    let _ = cx
        .db
        .tx_with()
        .retry(5)
        .run(async move |_tx| -> datalayer::Result<()> {
            counter.fetch_add(1, Ordering::SeqCst);
            Err(Error::invalid_input("not retryable"))
        })
        .await;
    assert_eq!(
        non.load(Ordering::SeqCst),
        1,
        "non-retryable errors are not retried"
    );
    Ok(())
}

/// Case: Savepoints.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn savepoints(cx: &mut Ctx) -> anyhow::Result<()> {
    let tx = cx.db.begin().await?;
    let repo = tx.repo::<User>();
    repo.insert(&User::sample(1)).await?;
    tx.savepoint("a").await?;
    repo.insert(&User::sample(2)).await?;
    tx.savepoint("b").await?;
    repo.insert(&User::sample(3)).await?;
    tx.rollback_to("b").await?;
    assert_eq!(repo.count().await?, 2);
    repo.insert(&User::sample(4)).await?;
    tx.rollback_to("a").await?;
    assert_eq!(repo.count().await?, 1);
    assert_eq!(
        tx.rollback_to("b").await.expect_err("b went with a").kind(),
        ErrorKind::NotFound
    );
    repo.insert(&User::sample(5)).await?;
    tx.release("a").await?;
    tx.commit().await?;
    let ids: Vec<i64> = cx
        .db
        .repo::<User>()
        .scan()
        .all()
        .await?
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, vec![1, 5]);
    Ok(())
}

/// Case: Nested savepoint closure.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn nested_savepoint_closure(cx: &mut Ctx) -> anyhow::Result<()> {
    cx.db
        .tx(async |tx| {
            tx.repo::<User>().insert(&User::sample(1)).await?;
            let inner: datalayer::Result<()> = tx
                .nested("inner", async |tx| {
                    tx.repo::<User>().insert(&User::sample(2)).await?;
                    Err(Error::invalid_input("inner failure"))
                })
                .await;
            assert!(inner.is_err());
            tx.nested("ok", async |tx| {
                tx.repo::<User>().insert(&User::sample(3)).await
            })
            .await?;
            Ok(())
        })
        .await?;
    let ids: Vec<i64> = cx
        .db
        .repo::<User>()
        .scan()
        .all()
        .await?
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, vec![1, 3]);
    Ok(())
}

/// Case: Read only rejects writes.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn read_only_rejects_writes(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 2).await?;
    let n = cx
        .db
        .tx_with()
        .read_only()
        .run(async |tx| tx.repo::<User>().count().await)
        .await?;
    assert_eq!(n, 2);
    let err = cx
        .db
        .tx_with()
        .read_only()
        .run(async |tx| tx.repo::<User>().insert(&User::sample(9)).await)
        .await
        .expect_err("write in read-only tx");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(cx.db.repo::<User>().count().await?, 2);
    Ok(())
}

/// Case: Concurrent increments are serializable.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn concurrent_increments_are_serializable(cx: &mut Ctx) -> anyhow::Result<()> {
    let mut u = User::sample(1);
    u.age = 0;
    cx.db.repo::<User>().insert(&u).await?;
    let level = [
        Isolation::Serializable,
        Isolation::RepeatableRead,
        Isolation::Snapshot,
    ]
    .into_iter()
    .find(|l| cx.cap().supports_isolation(*l));
    let Some(level) = level else { return Ok(()) };
    let mut tasks: Vec<tokio::task::JoinHandle<datalayer::Result<()>>> = Vec::new();
    for _ in 0..4 {
        let db = cx.db.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                db.tx_with()
                    .isolation(level)
                    .retry(50)
                    .run(async |tx| {
                        let mut u = tx.repo::<User>().get(1i64).await?.expect("row");
                        u.age += 1;
                        tx.repo::<User>().update(&u).await
                    })
                    .await?;
            }
            datalayer::Result::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    assert_eq!(
        User::age_of(&cx.db, 1).await?,
        40,
        "no lost update under {level:?}"
    );
    Ok(())
}
