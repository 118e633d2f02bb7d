//! Bad input gets a clear, typed error, and nothing committed is lost.

use super::seed_users;
use crate::Ctx;
use crate::model::{Kinds, User};
use datalayer::{Cursor, ErrorKind, Executor, Op, Table, Value, WriteMode};

/// Case: Bad identifiers and keys.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn bad_identifiers_and_keys(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 3).await?;
    let repo = cx.db.repo::<User>();
    let err = repo
        .find("no_such_index")
        .all()
        .await
        .expect_err("unknown index");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = repo
        .scan()
        .after(&Cursor::from_text("%%%not-base64"))
        .all()
        .await
        .expect_err("bad cursor");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = repo.get((1i64, 2i64)).await.expect_err("key arity");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let tx = cx.db.begin().await?;
    let err = tx
        .savepoint("x; DROP TABLE users")
        .await
        .expect_err("bad savepoint name");
    assert!(
        matches!(err.kind(), ErrorKind::InvalidInput | ErrorKind::Unsupported),
        "{err}"
    );
    tx.rollback().await?;
    assert_eq!(repo.count().await?, 3);
    Ok(())
}

/// Case: Oversize value.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn oversize_value(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<User>();
    repo.insert(&User::sample(1)).await?;
    match cx.cap().max_value_bytes {
        Some(max) if max <= 64 << 20 => {
            let mut big = User::sample(2);
            big.name = "x".repeat(max + 1);
            let err = repo.insert(&big).await.expect_err("oversize");
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            let mut ok = User::sample(3);
            ok.name = "y".repeat(max / 2);
            repo.insert(&ok).await?;
            assert_eq!(repo.get(3i64).await?.map(|u| u.name.len()), Some(max / 2));
        }
        _ => {
            let mut big = User::sample(2);
            big.name = "z".repeat(1 << 20);
            repo.insert(&big).await?;
            assert_eq!(repo.get(2i64).await?.map(|u| u.name.len()), Some(1 << 20));
        }
    }
    assert_eq!(
        repo.get(1i64).await?,
        Some(User::sample(1)),
        "committed data intact"
    );
    Ok(())
}

/// Case: Wrong types rejected.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn wrong_types_rejected(cx: &mut Ctx) -> anyhow::Result<()> {
    let mut row = User::sample(1).to_row();
    row[3] = Value::String("not an age".into());
    let op = Op::Insert {
        table: User::schema(),
        rows: vec![row],
        mode: WriteMode::Insert,
    };
    assert_eq!(
        cx.db.run(op).await.expect_err("type").kind(),
        ErrorKind::InvalidInput
    );
    let mut row = User::sample(1).to_row();
    row[1] = Value::Null;
    let op = Op::Insert {
        table: User::schema(),
        rows: vec![row],
        mode: WriteMode::Insert,
    };
    assert_eq!(
        cx.db.run(op).await.expect_err("null").kind(),
        ErrorKind::InvalidInput
    );
    let mut row = Kinds {
        id: 1,
        b: true,
        small: 1,
        medium: 1,
        single: 1.0,
        double: 1.0,
        text: String::new(),
        bytes: vec![],
        maybe_int: None,
        maybe_text: None,
        maybe_bytes: None,
    }
    .to_row();
    row[2] = Value::I64(70_000);
    let op = Op::Insert {
        table: Kinds::schema(),
        rows: vec![row],
        mode: WriteMode::Insert,
    };
    assert_eq!(
        cx.db.run(op).await.expect_err("i16 range").kind(),
        ErrorKind::InvalidInput
    );
    let op = Op::Insert {
        table: User::schema(),
        rows: vec![vec![Value::I64(1)]],
        mode: WriteMode::Insert,
    };
    assert_eq!(
        cx.db.run(op).await.expect_err("arity").kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(cx.db.repo::<User>().count().await?, 0);
    Ok(())
}
