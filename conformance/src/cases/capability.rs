//! The engine's declared capabilities are what it really does.

use crate::Ctx;
use crate::model::User;
use anyhow::ensure;
use datalayer::{ErrorKind, Isolation, TxOptions};

fn unsupported<T>(r: datalayer::Result<T>, what: &str) -> anyhow::Result<()> {
    match r {
        Err(e) if e.kind() == ErrorKind::Unsupported => Ok(()),
        Err(e) => anyhow::bail!("{what}: expected Unsupported, got {e}"),
        Ok(_) => anyhow::bail!("{what}: undeclared but it worked (a silent no-op?)"),
    }
}

/// Case: Declared matches behaviour.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn declared_matches_behaviour(cx: &mut Ctx) -> anyhow::Result<()> {
    let cap = cx.cap();
    for level in [
        Isolation::ReadCommitted,
        Isolation::RepeatableRead,
        Isolation::Snapshot,
        Isolation::Serializable,
    ] {
        let r = cx
            .db
            .begin_with(TxOptions {
                isolation: Some(level),
                read_only: false,
            })
            .await;
        if cap.supports_isolation(level) {
            let tx = r.map_err(|e| anyhow::anyhow!("{level:?} declared but failed: {e}"))?;
            tx.repo::<User>().count().await?;
            tx.rollback().await?;
        } else {
            unsupported(r, &format!("{level:?}"))?;
        }
    }
    let tx = cx.db.begin().await?;
    if cap.savepoints {
        tx.savepoint("s1").await?;
        tx.release("s1").await?;
    } else {
        unsupported(tx.savepoint("s1").await, "savepoints")?;
    }
    tx.rollback().await?;
    let r = cx
        .db
        .begin_with(TxOptions {
            isolation: None,
            read_only: true,
        })
        .await;
    if cap.read_only_tx {
        r?.rollback().await?;
    } else {
        unsupported(r, "read-only transactions")?;
    }
    if cap.change_feed {
        cx.db.enable_changes("users").await?;
        ensure!(cx.db.read_changes("users", 0, 10).await?.is_empty());
    } else {
        unsupported(cx.db.enable_changes("users").await, "change feed")?;
        unsupported(cx.db.read_changes("users", 0, 10).await, "change feed read")?;
    }
    Ok(())
}
