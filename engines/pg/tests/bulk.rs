//! Bulk inserts: an insert or upsert of at least `BULK_MIN_ROWS` rows goes as one
//! `INSERT ... SELECT * FROM UNNEST($1::int8[], ...)` statement. Every column type
//! with NULLs round-trips; a duplicate primary key in an insert is `AlreadyExists`
//! and writes nothing; an upsert naming one key twice goes row by row (the last row
//! wins); change capture sees every row; inside a transaction the statement is undone
//! with the transaction.

mod common;

use common::*;
use datalayer::{ChangeKind, ErrorKind};
use datalayer_sql::BULK_MIN_ROWS;

fn rows(n: i64, owner: &str) -> Vec<Account> {
    (0..n)
        .map(|i| {
            let mut a = Account::new(i, &format!("{owner} ✓ {i}"), i * 3 - 7);
            a.on_call = i % 2 == 0;
            a.blob = (i % 3 != 0).then(|| vec![i as u8, 0, 255]);
            a.ratio = i as f64 / 7.0;
            a
        })
        .collect()
}

#[tokio::test]
async fn bulk_inserts_round_trip_and_fail_whole() {
    let ns = Ns::new();
    let db = ns.db("").await;
    let n = (BULK_MIN_ROWS * 40) as i64;
    db.enable_changes("accounts").await.unwrap();
    let want = rows(n, "ann");
    assert_eq!(
        db.repo::<Account>().insert_many(&want).await.unwrap(),
        n as u64
    );
    let mut got = db.repo::<Account>().scan().all().await.unwrap();
    got.sort_by_key(|a| a.id);
    assert_eq!(got, want);
    let log = db.read_changes("accounts", 0, 10_000).await.unwrap();
    assert_eq!(log.len(), n as usize, "change capture sees every row");
    assert!(log.iter().all(|c| c.kind == ChangeKind::Insert));

    // A duplicate primary key: the whole statement fails, nothing of it is written.
    let mut dup = rows(20, "bob");
    for a in &mut dup {
        a.id += n;
    }
    dup[15].id = 3;
    let e = db.repo::<Account>().insert_many(&dup).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(db.repo::<Account>().count().await.unwrap(), n as u64);

    // An upsert: existing rows replaced, new ones added.
    let mut up = rows(30, "cy");
    for a in &mut up {
        a.id += n - 10;
    }
    assert_eq!(db.repo::<Account>().upsert_many(&up).await.unwrap(), 30);
    assert_eq!(db.repo::<Account>().count().await.unwrap(), n as u64 + 20);
    assert_eq!(
        db.repo::<Account>()
            .get(n - 1)
            .await
            .unwrap()
            .unwrap()
            .owner,
        format!("cy ✓ {}", 9)
    );

    // An upsert naming one key twice: row by row, the last one wins.
    let mut twice = rows(BULK_MIN_ROWS as i64 + 2, "dee");
    twice[1].id = 0;
    twice[1].owner = "last".into();
    db.repo::<Account>().upsert_many(&twice).await.unwrap();
    assert_eq!(
        db.repo::<Account>().get(0).await.unwrap().unwrap().owner,
        "last"
    );

    // Inside a transaction: rolled back with it.
    let tx = db.begin().await.unwrap();
    let mut more = rows(50, "eve");
    for a in &mut more {
        a.id += 10 * n;
    }
    tx.repo::<Account>().insert_many(&more).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(db.repo::<Account>().get(10 * n).await.unwrap(), None);
    ns.drop_schema().await;
}
