//! `#[query_group]` queries: every shape, filter form and update form.

use super::seed_users;
use crate::Ctx;
use crate::model::User;
use anyhow::ensure;
use datalayer::ErrorKind;

fn ids(v: &[User]) -> Vec<i64> {
    v.iter().map(|u| u.id).collect()
}

/// What the model predicts for `filter` over `User::sample(1..=n)`.
fn expect(n: i64, filter: impl Fn(&User) -> bool) -> Vec<User> {
    (1..=n).map(User::sample).filter(|u| filter(u)).collect()
}

/// Case: One or not found.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn one_or_not_found(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 3).await?;
    assert_eq!(User::by_id(&cx.db, 2).await?, User::sample(2));
    let err = User::by_id(&cx.db, 9).await.expect_err("no row");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    Ok(())
}

/// Case: Optional and unique lookup.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn optional_and_unique_lookup(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 3).await?;
    assert_eq!(User::find_id(&cx.db, 3).await?, Some(User::sample(3)));
    assert_eq!(User::find_id(&cx.db, 4).await?, None);
    assert_eq!(
        User::by_email(&cx.db, "u1@example.com").await?,
        Some(User::sample(1))
    );
    assert_eq!(User::by_email(&cx.db, "nobody@example.com").await?, None);
    Ok(())
}

/// Case: Filter order limit.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn filter_order_limit(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 40).await?;
    let mut want = expect(40, |u| u.team_id == Some(1));
    want.sort_by_key(|u| (u.age, u.id));
    assert_eq!(User::in_team(&cx.db, 1).await?, want);
    let mut older = expect(40, |u| u.age > 40);
    older.sort_by_key(|u| std::cmp::Reverse((u.age, u.id)));
    older.truncate(4);
    assert_eq!(User::older_than(&cx.db, 40, 4).await?, older);
    assert_eq!(User::older_than(&cx.db, 40, 0).await?, vec![]);
    assert_eq!(ids(&User::first_n(&cx.db, 3).await?), vec![1, 2, 3]);
    let err = User::first_n(&cx.db, -1).await.expect_err("negative limit");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    Ok(())
}

/// Case: Range and condition.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn range_and_condition(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 60).await?;
    let mut want = expect(60, |u| u.active && (25..=30).contains(&u.age));
    want.sort_by_key(|u| (u.age, u.id));
    let got = User::active_between(&cx.db, 25, 30).await?;
    ensure!(!got.is_empty());
    assert_eq!(got, want);
    assert_eq!(
        User::active_between(&cx.db, 30, 25).await?,
        vec![],
        "empty range"
    );
    Ok(())
}

/// Case: Starts with and null checks.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn starts_with_and_null_checks(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 12).await?;
    let repo = cx.db.repo::<User>();
    let mut odd = User::sample(100);
    odd.name = "us%r_x".into();
    odd.email = None;
    repo.insert(&odd).await?;
    let mut odd2 = User::sample(101);
    odd2.name = "usXr".into();
    odd2.email = None;
    repo.insert(&odd2).await?;
    assert_eq!(
        ids(&User::name_prefix(&cx.db, "user01").await?),
        vec![10, 11, 12]
    );
    // LIKE wildcards in the parameter are literal characters.
    assert_eq!(ids(&User::name_prefix(&cx.db, "us%").await?), vec![100]);
    assert_eq!(ids(&User::name_prefix(&cx.db, "us%r_").await?), vec![100]);
    assert_eq!(ids(&User::name_prefix(&cx.db, "").await?).len(), 14);
    assert_eq!(ids(&User::without_email(&cx.db).await?), vec![100, 101]);
    assert_eq!(User::with_email_count(&cx.db).await?, 12);
    Ok(())
}

/// Case: Projection and scalar.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn projection_and_scalar(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 9).await?;
    let mut names: Vec<String> = expect(9, |u| u.team_id == Some(2))
        .into_iter()
        .map(|u| u.name)
        .collect();
    names.sort();
    assert_eq!(User::names_in_team(&cx.db, 2).await?, names);
    assert_eq!(User::age_of(&cx.db, 4).await?, User::sample(4).age);
    assert_eq!(
        User::age_of(&cx.db, 40).await.expect_err("no row").kind(),
        ErrorKind::NotFound
    );
    Ok(())
}

/// Case: Count queries.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn count_queries(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 25).await?;
    assert_eq!(
        User::count_active(&cx.db).await?,
        expect(25, |u| u.active).len() as u64
    );
    assert_eq!(User::count_all(&cx.db).await?, 25);
    Ok(())
}

/// Case: Update with arithmetic.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn update_with_arithmetic(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 9).await?;
    assert_eq!(User::birthday(&cx.db, 4, 3).await?, 1);
    assert_eq!(User::age_of(&cx.db, 4).await?, User::sample(4).age + 3);
    assert_eq!(
        User::birthday(&cx.db, 400, 3).await?,
        0,
        "no row, nothing affected"
    );
    let team1 = expect(9, |u| u.team_id == Some(1));
    assert_eq!(User::penalize(&cx.db, 1, 0.5).await?, team1.len() as u64);
    for u in team1 {
        let now = cx.db.repo::<User>().get(u.id).await?.expect("row");
        assert!((now.score - (u.score - 0.5)).abs() < 1e-9);
    }
    // The index on (team_id, age) follows the update of age.
    let u4 = User::sample(4);
    let in_team = User::in_team(&cx.db, u4.team_id.expect("team")).await?;
    assert!(in_team.iter().any(|u| u.id == 4 && u.age == u4.age + 3));
    Ok(())
}

/// Case: Update literals and nulls.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn update_literals_and_nulls(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 10).await?;
    let n = User::deactivate_younger(&cx.db, 26).await?;
    assert_eq!(n, expect(10, |u| u.age < 26).len() as u64);
    assert_eq!(
        User::count_active(&cx.db).await?,
        expect(10, |u| u.active && u.age >= 26).len() as u64
    );
    assert_eq!(User::clear_email(&cx.db, 3).await?, 1);
    assert_eq!(User::by_email(&cx.db, "u3@example.com").await?, None);
    assert_eq!(ids(&User::without_email(&cx.db).await?), vec![3]);
    assert_eq!(User::set_email(&cx.db, 3, "three@example.com").await?, 1);
    assert_eq!(
        User::by_email(&cx.db, "three@example.com")
            .await?
            .map(|u| u.id),
        Some(3)
    );
    let err = User::set_email(&cx.db, 4, "three@example.com")
        .await
        .expect_err("unique");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    Ok(())
}

/// Case: Delete query.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn delete_query(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 10).await?;
    let gone = expect(10, |u| u.team_id == Some(0));
    assert_eq!(User::delete_team(&cx.db, 0).await?, gone.len() as u64);
    assert_eq!(cx.db.repo::<User>().count().await?, 10 - gone.len() as u64);
    assert_eq!(User::in_team(&cx.db, 0).await?, vec![]);
    assert_eq!(User::delete_team(&cx.db, 0).await?, 0);
    Ok(())
}

/// Case: Or not and ne.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn or_not_and_ne(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 30).await?;
    let want = expect(30, |u| (u.age < 25 || u.age > 45) && u.active);
    assert_eq!(User::outside_active(&cx.db, 25, 45).await?, want);
    assert_eq!(
        User::not_age(&cx.db, 21).await?,
        expect(30, |u| u.age != 21).len() as u64
    );
    Ok(())
}

/// Case: Nulls never match comparisons.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn nulls_never_match_comparisons(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<User>();
    let mut u = User::sample(1);
    u.team_id = None;
    repo.insert(&u).await?;
    repo.insert(&User::sample(2)).await?;
    // team_id NULL: neither `== t` nor `!= t` style filters match it.
    for t in 0..3 {
        ensure!(User::in_team(&cx.db, t).await?.iter().all(|x| x.id != 1));
    }
    assert_eq!(
        User::delete_team(&cx.db, 0).await?
            + User::delete_team(&cx.db, 1).await?
            + User::delete_team(&cx.db, 2).await?,
        1
    );
    assert_eq!(repo.get(1i64).await?, Some(u), "the NULL row survives");
    Ok(())
}

/// Case: Order without index.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn order_without_index(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 20).await?;
    let mut want = expect(20, |_| true);
    want.sort_by(|a, b| b.score.total_cmp(&a.score));
    want.truncate(3);
    assert_eq!(User::top3(&cx.db).await?, want);
    Ok(())
}

/// Case: Small int params.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn small_int_params(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 5).await?;
    // i32 parameters against i32 columns, values at the type's edges.
    assert_eq!(User::older_than(&cx.db, i32::MIN, 100).await?.len(), 5);
    assert_eq!(User::older_than(&cx.db, i32::MAX, 100).await?.len(), 0);
    Ok(())
}
