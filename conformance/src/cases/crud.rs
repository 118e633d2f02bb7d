//! Create, read, update, delete through `Repo`.

use super::seed_users;
use crate::Ctx;
use crate::model::{Kinds, Membership, User};
use anyhow::ensure;
use datalayer::ErrorKind;

/// Case: Insert get.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn insert_get(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<User>();
    let u = User::sample(7);
    repo.insert(&u).await?;
    assert_eq!(repo.get(7i64).await?, Some(u));
    Ok(())
}

/// Case: Insert duplicate key.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn insert_duplicate_key(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<User>();
    repo.insert(&User::sample(1)).await?;
    let mut dup = User::sample(1);
    dup.email = Some("other@example.com".into());
    let err = repo.insert(&dup).await.expect_err("duplicate primary key");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(
        repo.get(1i64).await?,
        Some(User::sample(1)),
        "the original row is untouched"
    );
    Ok(())
}

/// Case: Get missing.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn get_missing(cx: &mut Ctx) -> anyhow::Result<()> {
    assert_eq!(cx.db.repo::<User>().get(404i64).await?, None);
    Ok(())
}

/// Case: Update existing and missing.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn update_existing_and_missing(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<User>();
    seed_users(&cx.db, 3).await?;
    let mut u = User::sample(2);
    u.name = "renamed".into();
    u.age = 99;
    repo.update(&u).await?;
    assert_eq!(repo.get(2i64).await?, Some(u));
    let err = repo
        .update(&User::sample(50))
        .await
        .expect_err("missing row");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(repo.get(50i64).await?, None, "update must not insert");
    Ok(())
}

/// Case: Upsert inserts then replaces.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn upsert_inserts_then_replaces(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<User>();
    let mut u = User::sample(5);
    repo.upsert(&u).await?;
    assert_eq!(repo.get(5i64).await?, Some(u.clone()));
    u.age = 77;
    u.email = Some("new@example.com".into());
    repo.upsert(&u).await?;
    assert_eq!(repo.get(5i64).await?, Some(u));
    assert_eq!(repo.count().await?, 1);
    // The old unique value was released by the upsert.
    assert_eq!(User::by_email(&cx.db, "u5@example.com").await?, None);
    Ok(())
}

/// Case: Delete existing and missing.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn delete_existing_and_missing(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<User>();
    seed_users(&cx.db, 3).await?;
    ensure!(repo.delete(2i64).await?, "existing row reported deleted");
    ensure!(!repo.delete(2i64).await?, "second delete finds nothing");
    assert_eq!(repo.get(2i64).await?, None);
    assert_eq!(repo.count().await?, 2);
    assert_eq!(
        User::by_email(&cx.db, "u2@example.com").await?,
        None,
        "index entry removed"
    );
    Ok(())
}

/// Case: Insert many is atomic.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn insert_many_is_atomic(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<User>();
    repo.insert(&User::sample(3)).await?;
    let batch: Vec<User> = (1..=5).map(User::sample).collect(); // 3 collides
    let err = repo.insert_many(&batch).await.expect_err("collision");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        repo.count().await?,
        1,
        "nothing of the failed batch is kept"
    );
    assert_eq!(
        repo.insert_many(&[User::sample(1), User::sample(2)])
            .await?,
        2
    );
    assert_eq!(repo.count().await?, 3);
    Ok(())
}

/// Case: Get many in key order.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn get_many_in_key_order(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 5).await?;
    let got = cx.db.repo::<User>().get_many([4i64, 99, 1, 4]).await?;
    assert_eq!(
        got,
        vec![
            Some(User::sample(4)),
            None,
            Some(User::sample(1)),
            Some(User::sample(4))
        ]
    );
    Ok(())
}

fn kinds(id: i64) -> Kinds {
    Kinds {
        id,
        b: id % 2 == 0,
        small: -(id as i16) * 100,
        medium: i32::MAX - id as i32,
        single: 1.25 * id as f32,
        double: -1e300 / (id as f64 + 1.0),
        text: format!("héllo {id} ✓ \"quoted\" 'single' \\ %_"),
        bytes: vec![0, 255, id as u8, 0],
        maybe_int: (id % 2 == 0).then_some(i64::MIN + id),
        maybe_text: (id % 3 == 0).then(String::new),
        maybe_bytes: (id % 2 == 1).then(Vec::new),
    }
}

/// Case: Every column type round trips.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn every_column_type_round_trips(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<Kinds>();
    let rows: Vec<Kinds> = (1..=6).map(kinds).collect();
    repo.insert_many(&rows).await?;
    for r in &rows {
        assert_eq!(repo.get(r.id).await?.as_ref(), Some(r));
    }
    let below = Kinds::small_below(&cx.db, -300).await?;
    assert_eq!(
        below.iter().map(|k| k.id).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    let t = kinds(2).text;
    assert_eq!(Kinds::by_text(&cx.db, &t).await?, vec![kinds(2)]);
    Ok(())
}

/// Case: Count rows.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn count_rows(cx: &mut Ctx) -> anyhow::Result<()> {
    assert_eq!(cx.db.repo::<User>().count().await?, 0);
    seed_users(&cx.db, 42).await?;
    assert_eq!(cx.db.repo::<User>().count().await?, 42);
    Ok(())
}

fn member(org: &str, user_id: i64, role: &str, since: i64) -> Membership {
    Membership {
        org: org.into(),
        user_id,
        role: role.into(),
        since,
    }
}

/// Case: Composite primary key.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn composite_primary_key(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<Membership>();
    repo.insert_many(&[
        member("acme", 2, "dev", 10),
        member("acme", 1, "admin", 5),
        member("zeta", 1, "dev", 7),
    ])
    .await?;
    assert_eq!(
        repo.get(("acme", 1i64)).await?,
        Some(member("acme", 1, "admin", 5))
    );
    assert_eq!(repo.get(("zeta", 2i64)).await?, None);
    let err = repo
        .insert(&member("acme", 2, "x", 0))
        .await
        .expect_err("dup composite key");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    repo.insert(&member("zeta", 2, "dev", 0)).await?;
    let acme = Membership::of_org(&cx.db, "acme").await?;
    assert_eq!(
        acme.iter().map(|m| m.user_id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(
        Membership::one(&cx.db, "zeta", 1).await?,
        Some(member("zeta", 1, "dev", 7))
    );
    ensure!(repo.delete(("acme", 1i64)).await?);
    assert_eq!(repo.count().await?, 3);
    let bad = repo.get(7i64).await.expect_err("key arity");
    assert_eq!(bad.kind(), ErrorKind::InvalidInput);
    Ok(())
}
