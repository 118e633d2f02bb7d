//! A private `redis-server` (own port and temp dir, `appendonly yes`,
//! `appendfsync always`) killed with SIGKILL and restarted in the middle of a
//! concurrent load: transactions in flight fail with `ConnectionLost` or
//! `CommitUnknown` (never anything else, never a wrong success), later ones succeed,
//! no acknowledged commit is lost, and transfers between accounts stay atomic (the
//! total is unchanged).

mod common;

use common::PrivateServer;
use datalayer_core::{Error, ErrorKind, TxOptions};
use datalayer_kv::KvStore;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn rw() -> TxOptions {
    TxOptions {
        isolation: None,
        read_only: false,
    }
}

const ACCOUNTS: usize = 5;
const START: i64 = 1000;

fn account(i: usize) -> Vec<u8> {
    format!("acct{i}").into_bytes()
}

/// Moves 1 from account `from` to `to` (read-modify-write of both).
async fn transfer(store: &dyn KvStore, from: usize, to: usize) -> Result<(), Error> {
    let mut t = store.begin(rw()).await?;
    let got = t.batch_get(&[account(from), account(to)]).await?;
    let bal = |v: &Option<Vec<u8>>| -> i64 {
        String::from_utf8(v.clone().expect("account exists"))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (a, b) = (bal(&got[0]), bal(&got[1]));
    let mut w = vec![
        (account(from), Some((a - 1).to_string().into_bytes())),
        (account(to), Some((b + 1).to_string().into_bytes())),
    ];
    w.sort();
    t.commit(w).await
}

#[derive(Default)]
struct Tally {
    acked: BTreeMap<Vec<u8>, Vec<u8>>,
    unknown: usize,
    lost: usize,
    other: Vec<String>,
    after_restart: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_mid_load() {
    let mut server = PrivateServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let engine = datalayer_redis::open_url(
        &server.url("namespace=faults&response_timeout_ms=2000&connect_timeout_ms=300"),
    )
    .await
    .expect("open the private server");
    let store: Arc<dyn KvStore> = engine.store().clone();
    let cap = datalayer_core::Engine::capability(&engine);
    assert!(cap.durable, "appendonly yes must be declared durable");
    {
        let t = store.begin(rw()).await.unwrap();
        t.commit(
            (0..ACCOUNTS)
                .map(|i| (account(i), Some(START.to_string().into_bytes())))
                .collect(),
        )
        .await
        .unwrap();
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let restarted = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4usize {
        let (store, tally, restarted, stop) = (
            store.clone(),
            tally.clone(),
            restarted.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                n += 1;
                let key = format!("w{w}-{n:06}").into_bytes();
                let value = format!("{n}").into_bytes();
                let r = async {
                    let t = store.begin(rw()).await?;
                    t.commit(vec![(key.clone(), Some(value.clone()))]).await
                }
                .await;
                let (from, to) = (
                    w % ACCOUNTS,
                    (w + 1 + n as usize % (ACCOUNTS - 1)) % ACCOUNTS,
                );
                let r2 = transfer(store.as_ref(), from, to).await;
                {
                    let mut t = tally.lock().unwrap();
                    match r {
                        Ok(()) => {
                            t.acked.insert(key, value);
                            if restarted.load(Ordering::Acquire) {
                                t.after_restart += 1;
                            }
                        }
                        Err(e) => match e.kind() {
                            ErrorKind::CommitUnknown => t.unknown += 1,
                            ErrorKind::ConnectionLost => t.lost += 1,
                            _ => t.other.push(e.to_string()),
                        },
                    }
                    match r2 {
                        Ok(()) => {}
                        Err(e) => match e.kind() {
                            ErrorKind::CommitUnknown => t.unknown += 1,
                            ErrorKind::ConnectionLost => t.lost += 1,
                            // Two transfers of one account race: retryable, expected.
                            ErrorKind::Conflict => {}
                            _ => t.other.push(e.to_string()),
                        },
                    }
                }
                if n.is_multiple_of(50) {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = tally.lock().unwrap().acked.len();
    assert!(before > 0, "nothing was committed before the kill");
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    restarted.store(true, Ordering::Release);
    // Load goes on until every writer has committed after the restart.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tally.lock().unwrap().after_restart < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "no commits succeeded within 20 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }
    let tally = Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap();
    assert!(
        tally.other.is_empty(),
        "errors other than ConnectionLost/CommitUnknown: {:?}",
        &tally.other[..tally.other.len().min(5)]
    );
    assert!(
        tally.lost + tally.unknown > 0,
        "the kill failed no transaction (was the server killed?)"
    );
    // Every acknowledged commit is there, from a fresh engine after the restart.
    let engine2 = datalayer_redis::open_url(&server.url("namespace=faults"))
        .await
        .unwrap();
    let store2 = engine2.store().clone();
    let mut t = store2.begin(rw()).await.unwrap();
    let keys: Vec<Vec<u8>> = tally.acked.keys().cloned().collect();
    let got = t.batch_get(&keys).await.unwrap();
    let missing: Vec<String> = keys
        .iter()
        .zip(&got)
        .filter(|(k, v)| v.as_ref() != tally.acked.get(*k))
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged commits lost after kill -9 and restart: {missing:?} (of {})",
        keys.len()
    );
    let balances = t
        .batch_get(&(0..ACCOUNTS).map(account).collect::<Vec<_>>())
        .await
        .unwrap();
    let total: i64 = balances
        .iter()
        .map(|v| {
            String::from_utf8(v.clone().unwrap())
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        total,
        START * ACCOUNTS as i64,
        "a transfer was half applied"
    );
    t.rollback().await.unwrap();
    eprintln!(
        "acked {} ({} after the restart), connection lost {}, commit unknown {}",
        tally.acked.len(),
        tally.after_restart,
        tally.lost,
        tally.unknown
    );
}
