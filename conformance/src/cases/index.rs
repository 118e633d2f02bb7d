//! Secondary indexes: unique, composite, conditional.

use super::seed_users;
use crate::Ctx;
use crate::model::User;
use datalayer::ErrorKind;

/// Case: Unique violation on insert and update.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn unique_violation_on_insert_and_update(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<User>();
    seed_users(&cx.db, 2).await?;
    let mut clash = User::sample(3);
    clash.email = Some("u1@example.com".into());
    assert_eq!(
        repo.insert(&clash).await.expect_err("unique").kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        repo.get(3i64).await?,
        None,
        "the failed insert left nothing"
    );
    let mut u2 = User::sample(2);
    u2.email = Some("u1@example.com".into());
    assert_eq!(
        repo.update(&u2).await.expect_err("unique").kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(repo.get(2i64).await?, Some(User::sample(2)));
    assert_eq!(
        repo.upsert(&u2).await.expect_err("unique").kind(),
        ErrorKind::AlreadyExists
    );
    Ok(())
}

/// Case: Unique allows many nulls.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn unique_allows_many_nulls(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<User>();
    for id in 1..=3 {
        let mut u = User::sample(id);
        u.email = None;
        repo.insert(&u).await?;
    }
    assert_eq!(repo.count().await?, 3);
    let page = repo.find("by_email").eq(None::<String>).all().await?;
    assert_eq!(page.iter().map(|u| u.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    Ok(())
}

/// Case: Unique value freed by update and delete.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn unique_value_freed_by_update_and_delete(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<User>();
    seed_users(&cx.db, 2).await?;
    let mut u1 = User::sample(1);
    u1.email = Some("moved@example.com".into());
    repo.update(&u1).await?;
    let mut u2 = User::sample(2);
    u2.email = Some("u1@example.com".into());
    repo.update(&u2).await?;
    repo.delete(2i64).await?;
    let mut u3 = User::sample(3);
    u3.email = Some("u1@example.com".into());
    repo.insert(&u3).await?;
    assert_eq!(
        User::by_email(&cx.db, "u1@example.com")
            .await?
            .map(|u| u.id),
        Some(3)
    );
    Ok(())
}

/// Case: Composite index prefix and range.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn composite_index_prefix_and_range(cx: &mut Ctx) -> anyhow::Result<()> {
    let all = seed_users(&cx.db, 90).await?;
    let repo = cx.db.repo::<User>();
    let got = repo
        .find("by_team_age")
        .eq(Some(2i64))
        .range(30..=35)
        .all()
        .await?;
    let mut want: Vec<&User> = all
        .iter()
        .filter(|u| u.team_id == Some(2) && (30..=35).contains(&u.age))
        .collect();
    want.sort_by_key(|u| (u.age, u.id));
    assert_eq!(got.iter().collect::<Vec<_>>(), want);
    let team_count = repo.find("by_team_age").eq(Some(1i64)).count().await?;
    assert_eq!(
        team_count,
        all.iter().filter(|u| u.team_id == Some(1)).count() as u64
    );
    let exact = repo.find("by_team_age").eq(Some(0i64)).eq(23).all().await?;
    assert!(exact.iter().all(|u| u.team_id == Some(0) && u.age == 23) && !exact.is_empty());
    Ok(())
}

/// Case: Conditional index holds only matching rows.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn conditional_index_holds_only_matching_rows(cx: &mut Ctx) -> anyhow::Result<()> {
    let all = seed_users(&cx.db, 20).await?;
    let repo = cx.db.repo::<User>();
    let got = repo.find("active_by_age").all().await?;
    let mut want: Vec<User> = all.iter().filter(|u| u.active).cloned().collect();
    want.sort_by_key(|u| (u.age, u.id));
    assert_eq!(got, want, "only active rows are in the conditional index");
    // A row leaving the condition leaves the index; one entering it enters.
    let mut u2 = User::sample(2);
    u2.active = false;
    repo.update(&u2).await?;
    let mut u3 = User::sample(3);
    u3.active = true;
    repo.update(&u3).await?;
    let ids: Vec<i64> = repo
        .find("active_by_age")
        .all()
        .await?
        .iter()
        .map(|u| u.id)
        .collect();
    assert!(!ids.contains(&2) && ids.contains(&3));
    // A query whose filter implies the condition may use it; results are the same.
    let between = User::active_between(&cx.db, 20, 60).await?;
    assert_eq!(between.len(), ids.len());
    Ok(())
}
