//! The outbox driver: a consumer whose poll interval is a minute still gets an event
//! within a second of its commit (woken by the commit function's `PUBLISH`), and the
//! engine hands the driver out through `Engine::extension`.

mod common;

use common::{assert_idle_consumer_wakes, fresh};
use datalayer_outbox::Driver;
use std::sync::Arc;

#[tokio::test]
async fn idle_consumer_wakes_on_commit() {
    let (engine, _g) = fresh("").await;
    let ext = datalayer_core::Engine::extension(&engine, std::any::TypeId::of::<Arc<dyn Driver>>());
    assert!(ext.is_some(), "the engine offers no outbox driver");
    let db = datalayer_core::Db::with_engine(Arc::new(engine))
        .connect()
        .await
        .unwrap();
    assert_idle_consumer_wakes(&db, "").await;
    db.close().await.unwrap();
}
