//! Bad input and failures, each a clear typed error: a server that is down, a wrong
//! password, an oversize value, a transaction over the cap, a read-only replica,
//! `maxmemory`, `BUSY`, and the function library lost by the server.

mod common;

use common::{PrivateServer, fresh};
use datalayer_core::{ErrorKind, TxOptions};
use datalayer_kv::KvStore;
use std::time::Duration;

fn rw() -> TxOptions {
    TxOptions {
        isolation: None,
        read_only: false,
    }
}

async fn put(store: &dyn KvStore, k: &str, v: Vec<u8>) -> datalayer_core::Result<()> {
    let t = store.begin(rw()).await?;
    t.commit(vec![(k.as_bytes().to_vec(), Some(v))]).await
}

async fn get(store: &dyn KvStore, k: &str) -> datalayer_core::Result<Option<Vec<u8>>> {
    let mut t = store.begin(rw()).await?;
    let v = t.get(k.as_bytes()).await?;
    t.rollback().await?;
    Ok(v)
}

#[tokio::test]
async fn server_down_is_connection_lost() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = datalayer_redis::open_url(&format!("redis://127.0.0.1:{port}?connect_timeout_ms=500"))
        .await
        .err()
        .expect("no server");
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    assert!(e.is_retryable());
    assert!(e.message().contains(&port.to_string()), "{e}");
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error() {
    let server = PrivateServer::start(&["--requirepass", "right-one"]);
    for url in [
        server.url(""),
        format!("redis://:wrong@127.0.0.1:{}", server.port),
        format!("redis://default:wrong@127.0.0.1:{}", server.port),
    ] {
        let e = datalayer_redis::open_url(&url)
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code(), Some("AUTH"), "{url}: {e}");
        assert!(e.message().contains("authentication failed"), "{url}: {e}");
        assert!(!e.message().contains("wrong"), "password leaked: {e}");
    }
    let ok = datalayer_redis::open_url(&format!("redis://:right-one@127.0.0.1:{}", server.port))
        .await
        .expect("the right password");
    put(ok.store().as_ref(), "k", b"v".to_vec()).await.unwrap();
    assert_eq!(
        get(ok.store().as_ref(), "k").await.unwrap(),
        Some(b"v".to_vec())
    );
}

#[tokio::test]
async fn oversize_value_and_write_set_are_refused_before_sending() {
    let (engine, _guard) = fresh("max_value_bytes=1000&max_txn_bytes=3000").await;
    let store = engine.store().as_ref();
    let e = put(store, "big", vec![7; 1001]).await.unwrap_err();
    assert!(
        e.is_invalid_input() && e.message().contains("max_value_bytes"),
        "{e}"
    );
    let t = store.begin(rw()).await.unwrap();
    let writes: Vec<_> = (0..4)
        .map(|i| (format!("k{i}").into_bytes(), Some(vec![1u8; 900])))
        .collect();
    let e = t.commit(writes).await.unwrap_err();
    assert!(
        e.is_invalid_input() && e.message().contains("max_txn_bytes"),
        "{e}"
    );
    for k in ["big", "k0", "k3"] {
        assert_eq!(get(store, k).await.unwrap(), None, "{k} was applied");
    }
    // At the limits: accepted.
    put(store, "big", vec![7; 1000]).await.unwrap();
    assert_eq!(
        get(store, "big").await.unwrap().map(|v| v.len()),
        Some(1000)
    );
}

#[tokio::test]
async fn replica_is_read_only_connection_lost() {
    // A replica of a master that does not exist: reads work, writes get READONLY.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = PrivateServer::start(&["--replicaof", "127.0.0.1", &dead.to_string()]);
    // Loading the function library is a write: opening fails, READONLY →
    // ConnectionLost, saying to connect to the primary.
    let e = datalayer_redis::open_url(&server.url("namespace=ro"))
        .await
        .err()
        .expect("a replica refuses FUNCTION LOAD");
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    assert!(e.message().contains("read-only replica"), "{e}");

    // A primary demoted to a replica while the engine is open: the commit is refused
    // (READONLY), so it is ConnectionLost (retryable), not CommitUnknown.
    let primary = PrivateServer::start(&[]);
    let engine = datalayer_redis::open_url(&primary.url("namespace=demoted"))
        .await
        .unwrap();
    put(engine.store().as_ref(), "k", b"v".to_vec())
        .await
        .unwrap();
    primary.cli(&["REPLICAOF", "127.0.0.1", &dead.to_string()]);
    let e = put(engine.store().as_ref(), "k", b"w".to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
    assert!(
        e.is_retryable() && e.message().contains("read-only replica"),
        "{e}"
    );
}

#[tokio::test]
async fn maxmemory_is_a_clear_engine_error() {
    let server = PrivateServer::start(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let engine = datalayer_redis::open_url(&server.url("namespace=oom"))
        .await
        .unwrap();
    let store = engine.store().as_ref();
    let mut err = None;
    for i in 0..100 {
        if let Err(e) = put(store, &format!("k{i}"), vec![b'x'; 200_000]).await {
            err = Some(e);
            break;
        }
    }
    let e = err.expect("maxmemory was never reached");
    assert_eq!(e.kind(), ErrorKind::Engine, "{e}");
    assert_eq!(e.code(), Some("OOM"), "{e}");
    assert!(e.message().contains("maxmemory"), "{e}");
}

#[tokio::test]
async fn busy_server_is_retryable() {
    let server = PrivateServer::start(&["--busy-reply-threshold", "50"]);
    let engine = datalayer_redis::open_url(&server.url("namespace=busy"))
        .await
        .unwrap();
    // A script that spins for 1.5 s (read-only, so SCRIPT KILL is not even needed).
    let port = server.port;
    let spin = std::thread::spawn(move || {
        std::process::Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .arg("EVAL")
            .arg("local t = redis.call('TIME'); while true do local n = redis.call('TIME'); if (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > 1500000 then break end end return 1")
            .arg("0")
            .output()
            .expect("redis-cli")
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = put(engine.store().as_ref(), "k", b"v".to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("BUSY"), "{e}");
    assert!(e.is_retryable(), "{e}");
    spin.join().unwrap();
    put(engine.store().as_ref(), "k", b"v".to_vec())
        .await
        .unwrap();
}

#[tokio::test]
async fn lost_function_library_is_loaded_again() {
    let (engine, _guard) = fresh("").await;
    let store = engine.store().as_ref();
    put(store, "a", b"1".to_vec()).await.unwrap();
    let server = common::base_url();
    let opts = datalayer_redis::RedisOptions::from_url(&server).unwrap();
    let client =
        redis::Client::open(format!("redis://{}:{}/{}", opts.host, opts.port, opts.db)).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("datalayer_v1")
        .query_async(&mut c)
        .await
        .unwrap();
    // The next commit finds the function missing, loads the library and commits.
    put(store, "b", b"2".to_vec()).await.unwrap();
    assert_eq!(get(store, "b").await.unwrap(), Some(b"2".to_vec()));
}
