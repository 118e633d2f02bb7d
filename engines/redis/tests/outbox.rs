//! The outbox driver: a consumer whose poll interval is a minute still gets an event
//! within a second of its commit (woken by the commit function's `PUBLISH`), and the
//! engine hands the driver out through `Engine::extension`.

mod common;

use common::fresh;
use datalayer_outbox::{DbOutbox, Driver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Payloads delivered, with when.
type Log = Arc<Mutex<Vec<(Vec<u8>, Instant)>>>;

#[tokio::test]
async fn idle_consumer_wakes_on_commit() {
    let (engine, _g) = fresh("").await;
    let ext = datalayer_core::Engine::extension(&engine, std::any::TypeId::of::<Arc<dyn Driver>>());
    assert!(ext.is_some(), "the engine offers no outbox driver");
    let db = datalayer_core::Db::with_engine(Arc::new(engine))
        .connect()
        .await
        .unwrap();
    datalayer_outbox::create_topic(&db, "jobs", 1)
        .await
        .unwrap();
    let got: Log = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let log = got.clone();
    let consumer = tokio::spawn(
        db.consumer("g", "jobs")
            .poll_interval(Duration::from_secs(60))
            .run(
                move |ev| {
                    let log = log.clone();
                    async move {
                        log.lock()
                            .unwrap()
                            .push((ev.payload.clone(), Instant::now()));
                        Ok(())
                    }
                },
                async move {
                    let _ = stop_rx.await;
                },
            ),
    );
    // Let the consumer start, find nothing, and go idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..3 {
        let sent = Instant::now();
        db.emit("jobs", "k", format!("e{i}").into_bytes())
            .await
            .unwrap();
        let deadline = sent + Duration::from_secs(5);
        loop {
            if let Some((_, at)) = got
                .lock()
                .unwrap()
                .iter()
                .find(|(p, _)| *p == format!("e{i}").into_bytes())
            {
                assert!(
                    at.duration_since(sent) < Duration::from_secs(2),
                    "event e{i} took {:?} (polling, not woken)",
                    at.duration_since(sent)
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "event e{i} not delivered within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Idle again before the next one.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = stop_tx.send(());
    consumer.await.unwrap().unwrap();
    db.close().await.unwrap();
}
