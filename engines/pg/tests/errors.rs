//! SQLSTATE mapping, checked against a real server.

mod common;

use common::*;
use datalayer::{Engine, ErrorKind};
use datalayer_pg::PgEngine;

#[tokio::test]
async fn sqlstates_map_to_portable_kinds() {
    let ns = Ns::new();
    let db = ns.db("").await;
    let r = db.repo::<Account>();
    r.insert(&Account::new(1, "a", 0)).await.unwrap();
    let e = r.insert(&Account::new(1, "a", 0)).await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::AlreadyExists, Some("23505"))
    );
    // NUL cannot be stored in PostgreSQL text.
    let e = r.insert(&Account::new(2, "a\0b", 0)).await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::InvalidInput, Some("22021")),
        "{e}"
    );
    // Integer overflow in an update expression.
    let e = Account::add(&db, 1, i64::MAX).await.unwrap();
    assert_eq!(e, 1);
    let e = Account::add(&db, 1, 1).await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::InvalidInput, Some("22003")),
        "{e}"
    );
    // Unknown table for the change feed.
    let e = db.enable_changes("missing").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // Unknown database: Engine with the SQLSTATE kept.
    let e = PgEngine::open(&with_params(
        &ns.url.replace("/test", "/dl_no_such_database"),
        "connect_timeout_ms=2000",
    ))
    .await
    .unwrap_err();
    assert_eq!(e.code(), Some("3D000"), "{e}");
    ns.drop_schema().await;
}

#[tokio::test]
async fn unreachable_server_is_connection_lost() {
    // Port 1 on loopback: nothing listens there.
    let e = PgEngine::open("postgres://postgres@127.0.0.1:1/test?connect_timeout_ms=2000")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    assert!(e.is_retryable());
}

#[tokio::test]
async fn closed_engine_rejects_calls() {
    let ns = Ns::new();
    let e = ns.engine("").await;
    e.close().await.unwrap();
    let err = e.catalog().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    ns.drop_schema().await;
}
