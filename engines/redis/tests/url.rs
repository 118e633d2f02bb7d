//! `Db` opens `redis://` URLs through the engine registry, with the URL's options.

mod common;

use common::{NsGuard, base_url, random_ns, with_params};
use datalayer_redis::RedisOptions;

#[tokio::test]
async fn db_opens_a_redis_url() {
    datalayer_redis::register();
    let ns = random_ns();
    let url = with_params(
        &base_url(),
        &format!("namespace={ns}&pool_size=3&pipeline_depth=7"),
    );
    let _guard = NsGuard {
        opts: RedisOptions::from_url(&url).unwrap(),
    };
    let db = datalayer_core::Db::builder(url.clone())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}", common::unreachable_help(&e)));
    let cap = datalayer_core::Executor::capability(&db);
    assert_eq!(cap.pipeline_depth, Some(7));
    assert!(cap.serializable && cap.concurrent_writers && !cap.snapshot);
    db.close().await.unwrap();
    // Another scheme and a bad option are refused with InvalidInput.
    let e = datalayer_redis::open_url("redis://127.0.0.1:6379?nope=1")
        .await
        .err()
        .unwrap();
    assert!(e.is_invalid_input(), "{e}");
}
