//! Peer of the outbox workload on PostgreSQL: a plain `SKIP LOCKED` queue on raw
//! tokio-postgres doing the same work as datalayer's outbox, in the place's
//! schema:
//!
//! - table `queue(id bigserial primary key, k text, payload bytea)`;
//! - one producer: `BEGIN`, 100 `INSERT INTO queue (k, payload)` (prepared, each
//!   awaited before the next, like the 100 awaited `emit`s), `COMMIT`;
//! - 4 consumer tasks, each on its own connection, running from the start:
//!   `DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id FOR UPDATE
//!   SKIP LOCKED LIMIT 100) RETURNING id` in a loop, sleeping the same poll
//!   interval when it returns nothing, until N rows are consumed.
//!
//! It is a floor for what an outbox on PostgreSQL costs: no partitions, no
//! per-partition order, no consumer groups, leases, retries or retention; an
//! event is gone once deleted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use tokio_postgres::types::Type;

use super::{Place, Target, runtime};
use crate::outbox::{
    CONSUMER_CONCURRENCY, EMITS_PER_TX, OutboxRun, POLL_INTERVAL, key, payload, wait_for,
};
use crate::pg::connect;
use crate::workloads::Workload;

/// The plain `SKIP LOCKED` queue; runs the outbox workload only.
pub struct PlainQueue;

impl Target for PlainQueue {
    fn name(&self) -> &str {
        crate::outbox::PLAIN_QUEUE
    }

    fn supports(&self, w: Workload) -> bool {
        w == Workload::Outbox
    }

    fn outbox(&self, place: &Place, n: usize) -> anyhow::Result<OutboxRun> {
        let (config, schema) = (place.server()?.config.clone(), place.schema()?);
        runtime().block_on(run(&config, &schema, n, self.name()))
    }
}

/// Produces and consumes `n` events through the queue in `schema`.
async fn run(
    config: &tokio_postgres::Config,
    schema: &str,
    n: usize,
    name: &str,
) -> anyhow::Result<OutboxRun> {
    let producer = connect(config, Some(schema)).await?;
    producer
        .batch_execute(
            "CREATE TABLE queue (id bigserial PRIMARY KEY, k text NOT NULL, payload bytea NOT NULL)",
        )
        .await
        .context("creating queue")?;
    let insert = producer
        .prepare_typed(
            "INSERT INTO queue (k, payload) VALUES ($1, $2)",
            &[Type::TEXT, Type::BYTEA],
        )
        .await?;
    let consumed = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    for _ in 0..CONSUMER_CONCURRENCY {
        let client = connect(config, Some(schema)).await?;
        let delete = client
            .prepare(
                "DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id \
                 FOR UPDATE SKIP LOCKED LIMIT 100) RETURNING id",
            )
            .await?;
        let consumed = consumed.clone();
        consumers.push(tokio::spawn(async move {
            while consumed.load(Ordering::Acquire) < n as u64 {
                let rows = client.query(&delete, &[]).await?;
                if rows.is_empty() {
                    tokio::time::sleep(POLL_INTERVAL).await;
                } else {
                    consumed.fetch_add(rows.len() as u64, Ordering::AcqRel);
                }
            }
            anyhow::Ok(())
        }));
    }
    let events: Vec<(String, Vec<u8>)> = (0..n).map(|i| (key(i), payload(i))).collect();
    let t0 = Instant::now();
    for chunk in events.chunks(EMITS_PER_TX) {
        producer.batch_execute("BEGIN").await?;
        for (k, p) in chunk {
            producer.execute(&insert, &[k, p]).await?;
        }
        producer.batch_execute("COMMIT").await?;
    }
    let produce = t0.elapsed();
    let waited = wait_for(name, &consumed, n, t0).await;
    if waited.is_err() {
        for c in &consumers {
            c.abort();
        }
    }
    let end_to_end = waited?;
    for c in consumers {
        c.await.context("queue consumer task")??;
    }
    Ok(OutboxRun {
        produce,
        end_to_end,
    })
}
