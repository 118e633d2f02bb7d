//! Optimistic locking: a `#[version]` column that every update checks and increments.

use crate::Ctx;
use crate::model::Doc;
use anyhow::ensure;
use datalayer::ErrorKind;

fn doc(id: i64, title: &str) -> Doc {
    Doc {
        id,
        title: title.into(),
        body: format!("body of {title}"),
        version: 42, // whatever the caller says, an insert stores 1
    }
}

/// Case: an insert stores version 1; an update over the version read stores it + 1.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn insert_sets_one_update_increments(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<Doc>();
    repo.insert(&doc(1, "a")).await?;
    let mut d = repo.get(1i64).await?.expect("inserted");
    ensure!(
        d.version == 1,
        "an insert stores version 1, got {}",
        d.version
    );
    d.body = "edited".into();
    repo.update(&d).await?;
    let now = repo.get(1i64).await?.expect("updated");
    ensure!(now.version == 2 && now.body == "edited", "{now:?}");
    repo.insert_many(&[doc(2, "b"), doc(3, "c")]).await?;
    for id in [2i64, 3] {
        let v = repo.get(id).await?.expect("inserted").version;
        ensure!(v == 1, "insert_many stores version 1, got {v}");
    }
    Ok(())
}

/// Case: two writers read version 1; the first update wins, the second fails with
/// a stale-version `Conflict` and writes nothing.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn two_writers_one_wins(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<Doc>();
    repo.insert(&doc(1, "a")).await?;
    let mut first = repo.get(1i64).await?.expect("inserted");
    let mut second = first.clone();
    first.body = "first".into();
    second.body = "second".into();
    repo.update(&first).await?;
    let err = repo.update(&second).await.expect_err("a stale version");
    ensure!(err.kind() == ErrorKind::Conflict, "{err}");
    ensure!(err.is_stale_version(), "{err}");
    let now = repo.get(1i64).await?.expect("still there");
    ensure!(now.body == "first" && now.version == 2, "{now:?}");
    // Read again, then the update goes through.
    let mut again = now.clone();
    again.body = "second".into();
    repo.update(&again).await?;
    ensure!(repo.get(1i64).await?.expect("there").version == 3);
    // Inside a transaction too, and the failed update rolls the transaction back.
    let stale = now;
    let r = cx
        .db
        .tx(async |tx| {
            tx.repo::<Doc>().insert(&doc(9, "z")).await?;
            tx.repo::<Doc>().update(&stale).await
        })
        .await;
    ensure!(r.as_ref().is_err_and(|e| e.is_stale_version()), "{r:?}");
    ensure!(
        repo.get(9i64).await?.is_none(),
        "the transaction rolled back"
    );
    Ok(())
}

/// Case: an update of a missing row is `NotFound`, not a stale version; an upsert on
/// a versioned table is refused (it would reset the version).
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn missing_row_and_upsert_refused(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<Doc>();
    let err = repo.update(&doc(5, "e")).await.expect_err("no such row");
    ensure!(err.kind() == ErrorKind::NotFound, "{err}");
    let err = repo.upsert(&doc(5, "e")).await.expect_err("upsert refused");
    ensure!(err.kind() == ErrorKind::InvalidInput, "{err}");
    let err = repo.upsert_many(&[doc(5, "e")]).await.expect_err("refused");
    ensure!(err.kind() == ErrorKind::InvalidInput, "{err}");
    ensure!(repo.get(5i64).await?.is_none(), "nothing written");
    Ok(())
}

/// Case: a query-group update increments the version, so an update over the version
/// read before it is stale.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn query_update_increments(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<Doc>();
    repo.insert(&doc(1, "a")).await?;
    let read = repo.get(1i64).await?.expect("inserted");
    ensure!(Doc::retitle(&cx.db, 1, "renamed").await? == 1);
    ensure!(Doc::version_of(&cx.db, 1).await? == 2);
    ensure!(Doc::retitle(&cx.db, 404, "none").await? == 0);
    let err = repo.update(&read).await.expect_err("stale");
    ensure!(err.is_stale_version(), "{err}");
    let now = repo.get(1i64).await?.expect("there");
    ensure!(now.title == "renamed" && now.version == 2, "{now:?}");
    // A unique violation in a versioned update is still `AlreadyExists`.
    repo.insert(&doc(2, "b")).await?;
    let mut clash = now;
    clash.title = "b".into();
    let err = repo.update(&clash).await.expect_err("unique");
    ensure!(err.kind() == ErrorKind::AlreadyExists, "{err}");
    Ok(())
}
