//! Change data capture through the layer.

use crate::Ctx;
use crate::model::User;
use datalayer::{ChangeKind, ChangeOptions, Value};
use futures::StreamExt;

/// Case: Captures in commit order.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn captures_in_commit_order(cx: &mut Ctx) -> anyhow::Result<()> {
    cx.db.enable_changes("users").await?;
    cx.db.enable_changes("users").await?; // idempotent
    let repo = cx.db.repo::<User>();
    repo.insert(&User::sample(1)).await?;
    User::birthday(&cx.db, 1, 5).await?;
    repo.delete(1i64).await?;
    let changes = cx.db.read_changes("users", 0, 100).await?;
    let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        vec![ChangeKind::Insert, ChangeKind::Update, ChangeKind::Delete]
    );
    assert!(changes.windows(2).all(|w| w[0].position < w[1].position));
    let age = User::sample(1).age;
    assert_eq!(changes[0].get("age"), Some(&Value::I32(age)));
    assert_eq!(changes[1].get("age"), Some(&Value::I32(age + 5)));
    assert_eq!(changes[2].get("id"), Some(&Value::I64(1)));
    assert!(changes.iter().all(|c| c.table == "users"));
    // A rolled-back transaction leaves no change.
    {
        let tx = cx.db.begin().await?;
        tx.repo::<User>().insert(&User::sample(2)).await?;
    }
    assert_eq!(
        cx.db
            .read_changes("users", changes[2].position, 100)
            .await?,
        vec![]
    );
    Ok(())
}

/// Case: Resume and trim.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn resume_and_trim(cx: &mut Ctx) -> anyhow::Result<()> {
    cx.db.enable_changes("users").await?;
    let repo = cx.db.repo::<User>();
    for id in 1..=5 {
        repo.insert(&User::sample(id)).await?;
    }
    let first = cx.db.read_changes("users", 0, 2).await?;
    assert_eq!(first.len(), 2);
    let rest = cx.db.read_changes("users", first[1].position, 100).await?;
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[0].get("id"), Some(&Value::I64(3)));
    assert_eq!(cx.db.trim_changes("users", first[1].position).await?, 2);
    assert_eq!(cx.db.read_changes("users", 0, 100).await?.len(), 3);
    let mut stream = Box::pin(cx.db.changes(
        "users",
        ChangeOptions {
            after: first[1].position,
            ..Default::default()
        },
    ));
    let next = stream.next().await.expect("a change")?;
    assert_eq!(next.position, rest[0].position);
    Ok(())
}

/// Case: A savepoint rolled back, or a failed write, leaves no change (and no gap in
/// the positions a later commit gets).
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn undone_writes_leave_no_change(cx: &mut Ctx) -> anyhow::Result<()> {
    cx.db.enable_changes("users").await?;
    let repo = cx.db.repo::<User>();
    repo.insert(&User::sample(1)).await?;
    cx.db
        .tx(async |tx| {
            tx.repo::<User>().insert(&User::sample(2)).await?;
            tx.savepoint("s").await?;
            tx.repo::<User>().insert(&User::sample(3)).await?;
            tx.rollback_to("s").await?;
            // A failed insert (duplicate primary key) inside the transaction.
            let dup = tx.repo::<User>().insert(&User::sample(1)).await;
            assert!(dup.is_err_and(|e| e.is_already_exists()));
            tx.repo::<User>().insert(&User::sample(4)).await
        })
        .await?;
    let changes = cx.db.read_changes("users", 0, 100).await?;
    let ids: Vec<Option<&Value>> = changes.iter().map(|c| c.get("id")).collect();
    assert_eq!(
        ids,
        vec![
            Some(&Value::I64(1)),
            Some(&Value::I64(2)),
            Some(&Value::I64(4))
        ]
    );
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Insert));
    assert!(changes.windows(2).all(|w| w[0].position < w[1].position));
    Ok(())
}

/// Case: Changes survive reopening, and positions go on increasing after it.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn changes_survive_reopen(cx: &mut Ctx) -> anyhow::Result<()> {
    cx.db.enable_changes("users").await?;
    let repo = cx.db.repo::<User>();
    repo.insert(&User::sample(1)).await?;
    repo.insert(&User::sample(2)).await?;
    let before = cx.db.read_changes("users", 0, 100).await?;
    assert_eq!(before.len(), 2);
    cx.reopen().await?;
    let again = cx.db.read_changes("users", 0, 100).await?;
    assert_eq!(again, before, "the change log is durable");
    // Capture stays on across the reopen.
    cx.db.repo::<User>().delete(1i64).await?;
    let after = cx.db.read_changes("users", before[1].position, 100).await?;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].kind, ChangeKind::Delete);
    assert!(after[0].position > before[1].position);
    Ok(())
}
