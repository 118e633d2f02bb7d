//! How long an immediate event waits behind a backlog of scheduled events (issue 9,
//! defect 4): for each N given (default 1000 100000 1000000), N events scheduled an
//! hour ahead on one partition of an in-memory etch store, then one immediate event;
//! prints the time from the consumer's start to the immediate event's delivery.
//!
//! ```sh
//! cargo run --release -p datalayer-outbox --example scheduled_backlog -- 1000 100000 1000000
//! ```

use datalayer_core::Db;
use datalayer_outbox::{BuilderOutbox, DbOutbox, TxOutbox};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[tokio::main]
async fn main() -> datalayer_core::Result<()> {
    let ns: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a count"))
        .collect();
    let ns = if ns.is_empty() {
        vec![1_000, 100_000, 1_000_000]
    } else {
        ns
    };
    println!("| scheduled ahead | emit (s) | immediate delivered after (s) |");
    println!("|---:|---:|---:|");
    for n in ns {
        let engine = Arc::new(datalayer_etch::memory());
        let db = Db::with_engine(engine).outbox().connect().await?;
        datalayer_outbox::create_topic(&db, "t", 1).await?;
        let later = SystemTime::now() + Duration::from_secs(3600);
        let t0 = Instant::now();
        let mut left = n;
        while left > 0 {
            let tx = db.begin().await?;
            for _ in 0..left.min(10_000) {
                tx.emit("t", "k", b"later".to_vec())
                    .deliver_at(later)
                    .await?;
            }
            tx.commit().await?;
            left -= left.min(10_000);
        }
        db.emit("t", "k", b"now".to_vec()).await?;
        let emitted = t0.elapsed();
        let (got_tx, got) = tokio::sync::oneshot::channel::<Instant>();
        let got_tx = Arc::new(parking_lot::Mutex::new(Some(got_tx)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let start = Instant::now();
        let run = tokio::spawn(
            db.consumer("g", "t")
                .poll_interval(Duration::from_millis(10))
                .partitions(0..1)
                .run(
                    move |ev| {
                        let got_tx = got_tx.clone();
                        async move {
                            if ev.payload == b"now"
                                && let Some(s) = got_tx.lock().take()
                            {
                                let _ = s.send(Instant::now());
                            }
                            Ok(())
                        }
                    },
                    async move {
                        let _ = stopped.await;
                    },
                ),
        );
        let at = tokio::time::timeout(Duration::from_secs(120), got)
            .await
            .expect("delivered within 120 s")
            .expect("the handler reports");
        let _ = stop.send(());
        run.await.expect("consumer task")?;
        println!(
            "| {n} | {:.2} | {:.3} |",
            emitted.as_secs_f64(),
            at.duration_since(start).as_secs_f64()
        );
    }
    Ok(())
}
