//! Change data capture: raw-SQL writes from a separate client are captured, and a
//! transaction that commits late is never skipped by a reader that read past it.

mod common;

use common::*;
use datalayer::{ChangeKind, Value};

#[tokio::test]
async fn captures_raw_sql_writes_from_another_client() {
    let ns = Ns::new();
    let db = ns.db("").await;
    db.enable_changes("accounts").await.unwrap();
    let mut a = Account::new(1, "alice", 7);
    a.blob = Some(vec![0, 1, 254, 255]);
    a.ratio = 0.1;
    db.repo::<Account>().insert(&a).await.unwrap();
    // A plain client with the default search_path writes schema-qualified SQL.
    let raw = ns.raw().await;
    let t = format!("\"{}\".accounts", ns.schema);
    raw.batch_execute(&format!(
        "INSERT INTO {t} (id, owner, balance, on_call, blob, ratio) VALUES (2, 'bob', 3, false, '\\x00ff'::bytea, 1e300);
         UPDATE {t} SET balance = balance + 1 WHERE id = 2;
         DELETE FROM {t} WHERE id = 1;"
    ))
    .await
    .unwrap();
    let ch = db.read_changes("accounts", 0, 100).await.unwrap();
    let kinds: Vec<ChangeKind> = ch.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ChangeKind::Insert,
            ChangeKind::Insert,
            ChangeKind::Update,
            ChangeKind::Delete
        ]
    );
    assert!(ch.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(ch[0].get("blob"), Some(&Value::Bytes(vec![0, 1, 254, 255])));
    assert_eq!(ch[0].get("ratio"), Some(&Value::F64(0.1)));
    assert_eq!(ch[0].get("on_call"), Some(&Value::Bool(true)));
    assert_eq!(ch[1].get("owner"), Some(&Value::String("bob".into())));
    assert_eq!(ch[1].get("blob"), Some(&Value::Bytes(vec![0, 255])));
    assert_eq!(ch[1].get("ratio"), Some(&Value::F64(1e300)));
    assert_eq!(ch[2].get("balance"), Some(&Value::I64(4)));
    assert_eq!(ch[3].get("id"), Some(&Value::I64(1)));
    assert_eq!(ch[3].kind, ChangeKind::Delete);
    // Trim, then nothing before the trimmed position comes back.
    assert_eq!(
        db.trim_changes("accounts", ch[1].position).await.unwrap(),
        2
    );
    let rest = db.read_changes("accounts", 0, 100).await.unwrap();
    assert_eq!(rest, ch[2..].to_vec());
    assert!(
        db.enable_changes("no_such_table")
            .await
            .unwrap_err()
            .is_not_found()
    );
    ns.drop_schema().await;
}

/// A writes first (lower insertion id) but commits after B; the reader reads B,
/// resumes after B's position, and must still get A.
#[tokio::test]
async fn late_commit_is_not_skipped() {
    let ns = Ns::new();
    let db = ns.db("").await;
    db.enable_changes("accounts").await.unwrap();
    let t = format!("\"{}\".accounts", ns.schema);
    let ins = |id: i64| {
        format!(
            "INSERT INTO {t} (id, owner, balance, on_call, ratio) VALUES ({id}, 'w', 0, true, 0)"
        )
    };
    let a = ns.raw().await;
    let b = ns.raw().await;

    // Case 1: A inserts first (smaller log id), B commits first.
    a.batch_execute(&format!("BEGIN; {}", ins(10)))
        .await
        .unwrap();
    b.batch_execute(&ins(11)).await.unwrap();
    let first = db.read_changes("accounts", 0, 100).await.unwrap();
    assert_eq!(
        first
            .iter()
            .map(|c| c.get("id").cloned())
            .collect::<Vec<_>>(),
        vec![Some(Value::I64(11))],
        "A is not committed yet"
    );
    let seen = first[0].position;
    a.batch_execute("COMMIT").await.unwrap();
    let next = db.read_changes("accounts", seen, 100).await.unwrap();
    assert_eq!(
        next.iter()
            .map(|c| c.get("id").cloned())
            .collect::<Vec<_>>(),
        vec![Some(Value::I64(10))],
        "the late commit comes after what was already read"
    );
    assert!(next[0].position > seen);

    // Case 2: transaction ids out of write order. A takes its xid first, B writes
    // its entry first, A writes and commits, then B commits.
    a.batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .await
        .unwrap();
    b.batch_execute(&format!("BEGIN; {}", ins(20)))
        .await
        .unwrap();
    a.batch_execute(&format!("{}; COMMIT", ins(21)))
        .await
        .unwrap();
    let got = db
        .read_changes("accounts", next[0].position, 100)
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|c| c.get("id").cloned()).collect::<Vec<_>>(),
        vec![Some(Value::I64(21))]
    );
    b.batch_execute("COMMIT").await.unwrap();
    let last = db
        .read_changes("accounts", got[0].position, 100)
        .await
        .unwrap();
    assert_eq!(
        last.iter()
            .map(|c| c.get("id").cloned())
            .collect::<Vec<_>>(),
        vec![Some(Value::I64(20))]
    );
    // A rolled-back write never appears.
    a.batch_execute(&format!("BEGIN; {}; ROLLBACK", ins(30)))
        .await
        .unwrap();
    assert!(
        db.read_changes("accounts", last[0].position, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // The whole log, read from the start, has strictly increasing positions.
    let all = db.read_changes("accounts", 0, 100).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    ns.drop_schema().await;
}
