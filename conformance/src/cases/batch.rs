//! `Batch`: same-shape calls sent together, results in order.

use super::seed_users;
use crate::Ctx;
use crate::model::User;
use datalayer::{Batch, ErrorKind};

/// Case: Results in order.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn results_in_order(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 10).await?;
    let ids = [7i64, 2, 9, 2];
    let batch: Batch<Option<User>> = ids.iter().map(|&id| User::find_id_stmt(id)).collect();
    assert_eq!(batch.len(), 4);
    let got = batch.run(&cx.db).await?;
    assert_eq!(
        got,
        ids.iter()
            .map(|&id| Some(User::sample(id)))
            .collect::<Vec<_>>()
    );
    let mut updates = Batch::new();
    for id in 1..=10 {
        updates.push(User::birthday_stmt(id, 1));
    }
    updates.push(User::birthday_stmt(99, 1));
    assert_eq!(
        updates.run(&cx.db).await?,
        [vec![1u64; 10], vec![0]].concat()
    );
    assert_eq!(User::age_of(&cx.db, 3).await?, User::sample(3).age + 1);
    Ok(())
}

/// Case: Batch is atomic.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn batch_is_atomic(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 3).await?;
    let mut b = Batch::new();
    b.push(User::set_email_stmt(1, "a@example.com"));
    b.push(User::set_email_stmt(2, "b@example.com"));
    b.push(User::set_email_stmt(3, "a@example.com")); // unique violation
    let err = b.run(&cx.db).await.expect_err("unique");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        User::by_email(&cx.db, "a@example.com").await?,
        None,
        "nothing of the batch kept"
    );
    assert_eq!(
        User::by_email(&cx.db, "u1@example.com")
            .await?
            .map(|u| u.id),
        Some(1)
    );
    Ok(())
}

/// Case: Batch in tx.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn batch_in_tx(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 3).await?;
    let tx = cx.db.begin().await?;
    let mut b = Batch::new();
    b.push(User::birthday_stmt(1, 10));
    b.push(User::birthday_stmt(2, 10));
    assert_eq!(b.run(&tx).await?, vec![1, 1]);
    assert_eq!(User::age_of(&tx, 1).await?, User::sample(1).age + 10);
    tx.rollback().await?;
    assert_eq!(User::age_of(&cx.db, 1).await?, User::sample(1).age);
    Ok(())
}
