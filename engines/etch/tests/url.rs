//! `datalayer_etch::register()` and the `etch:` URL forms, through `Db::builder`.

use datalayer_core::Db;

#[tokio::test]
async fn register_opens_etch_urls() {
    datalayer_etch::register();
    let db = Db::builder("etch::memory:").connect().await.unwrap();
    assert_eq!(db.engine().name(), "etch");
    assert!(!db.engine().capability().durable);
    db.close().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "etch://{}?flush=never&lock_timeout_ms=500",
        dir.path().join("store").display()
    );
    let db = Db::builder(url).connect().await.unwrap();
    assert!(db.engine().capability().durable);
    db.close().await.unwrap();
    assert!(dir.path().join("store").join("LOCK").exists());

    let e = Db::builder("etch://x?cache=1")
        .connect()
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
}
