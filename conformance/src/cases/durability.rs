//! Data survives closing and reopening the engine.

use super::seed_users;
use crate::Ctx;
use crate::model::User;

/// Case: Reopen keeps committed.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn reopen_keeps_committed(cx: &mut Ctx) -> anyhow::Result<()> {
    let users = seed_users(&cx.db, 30).await?;
    cx.db
        .tx(async |tx| {
            User::birthday(tx, 5, 1).await?;
            tx.repo::<User>().delete(6i64).await.map(|_| ())
        })
        .await?;
    cx.reopen().await?;
    let repo = cx.db.repo::<User>();
    assert_eq!(repo.count().await?, 29);
    assert_eq!(repo.get(1i64).await?.as_ref(), Some(&users[0]));
    assert_eq!(User::age_of(&cx.db, 5).await?, users[4].age + 1);
    assert_eq!(repo.get(6i64).await?, None);
    // Indexes came back too.
    assert_eq!(
        User::by_email(&cx.db, "u7@example.com")
            .await?
            .map(|u| u.id),
        Some(7)
    );
    assert_eq!(User::by_email(&cx.db, "u6@example.com").await?, None);
    // And the reopened engine accepts writes.
    repo.insert(&User::sample(100)).await?;
    cx.reopen().await?;
    assert_eq!(cx.db.repo::<User>().count().await?, 30);
    Ok(())
}

/// Case: Reopen drops uncommitted.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn reopen_drops_uncommitted(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 2).await?;
    {
        let tx = cx.db.begin().await?;
        tx.repo::<User>().insert(&User::sample(3)).await?;
    }
    cx.reopen().await?;
    assert_eq!(cx.db.repo::<User>().count().await?, 2);
    assert_eq!(cx.db.repo::<User>().get(3i64).await?, None);
    Ok(())
}
