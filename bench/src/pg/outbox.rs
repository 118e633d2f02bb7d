//! The outbox end-to-end workload on PostgreSQL (see [`crate::outbox`]):
//! datalayer-pg (the engine's outbox in its own schema) next to a plain
//! `SKIP LOCKED` queue on raw tokio-postgres doing the same work:
//!
//! - table `queue(id bigserial primary key, k text, payload bytea)`;
//! - one producer: `BEGIN`, 100 `INSERT INTO queue (k, payload)` (prepared, each
//!   awaited before the next, like the 100 awaited `emit`s), `COMMIT`;
//! - 4 consumer tasks, each on its own connection, running from the start:
//!   `DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id FOR UPDATE
//!   SKIP LOCKED LIMIT 100) RETURNING id` in a loop, sleeping the same poll
//!   interval when it returns nothing, until N rows are consumed.
//!
//! Both run in schemas `dl_bench_<run>_obx_*`, dropped at the end by a
//! [`SchemaGuard`].

use datalayer::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};

use super::{SchemaGuard, base_url, run_id, unreachable, with_params};
use crate::outbox::{
    CONSUMER_CONCURRENCY, EMITS_PER_TX, OutboxResult, PLAIN_QUEUE, POLL_INTERVAL, key, payload,
    wait_for,
};

/// Runs datalayer-pg and the plain queue with `n` events each.
///
/// # Errors
/// The server cannot be reached, a schema cannot be created, or a consumer does
/// not handle every event in time.
pub fn run(n: usize) -> anyhow::Result<Vec<OutboxResult>> {
    let rt = crate::peers::datalayer_etch::runtime();
    let url = base_url();
    let opts = datalayer::pg::PgOptions::from_url(&url)
        .map_err(|e| anyhow::anyhow!("DATALAYER_PG_URL: {e}"))?;
    let config = opts.config;
    let connect = {
        let config = config.clone();
        let rt = rt.clone();
        move |schema: Option<String>| {
            let config = config.clone();
            let rt = rt.clone();
            async move {
                let (client, conn) =
                    tokio::time::timeout(Duration::from_secs(5), config.connect(NoTls))
                        .await
                        .map_err(|_| anyhow::anyhow!("connect timed out after 5 s"))??;
                rt.spawn(conn);
                if let Some(s) = schema {
                    client
                        .batch_execute(&format!("SET search_path TO \"{s}\""))
                        .await?;
                }
                anyhow::Ok(client)
            }
        }
    };
    let client = rt
        .block_on(connect(None))
        .map_err(|e| unreachable(&url, &e))?;
    let mut guard = SchemaGuard {
        rt: rt.clone(),
        client,
        schemas: Vec::new(),
    };
    let run = run_id();
    let dl_schema = format!("dl_bench_{run}_obx_dl");
    let q_schema = format!("dl_bench_{run}_obx_queue");
    guard.create(&dl_schema)?;
    guard.create(&q_schema)?;

    let dl = rt.block_on(async {
        let db = datalayer::builder(with_params(&url, &format!("schema={dl_schema}")))
            .outbox()
            .connect()
            .await?;
        let r = crate::outbox::run_datalayer(&db, "datalayer-pg", n).await;
        db.close().await?;
        r
    })?;
    let queue = rt.block_on(plain_queue(n, q_schema, &connect))?;
    drop(guard);
    Ok(vec![dl, queue])
}

/// The plain `SKIP LOCKED` queue peer.
async fn plain_queue<C, F>(n: usize, schema: String, connect: &C) -> anyhow::Result<OutboxResult>
where
    C: Fn(Option<String>) -> F,
    F: std::future::Future<Output = anyhow::Result<Client>>,
{
    let producer = connect(Some(schema.clone())).await?;
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
        let client = connect(Some(schema.clone())).await?;
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
    let waited = wait_for(PLAIN_QUEUE, &consumed, n, t0).await;
    if waited.is_err() {
        for c in &consumers {
            c.abort();
        }
    }
    let end_to_end = waited?;
    for c in consumers {
        c.await.context("queue consumer task")??;
    }
    let r = OutboxResult {
        name: PLAIN_QUEUE,
        events: n,
        produce,
        end_to_end,
    };
    eprintln!(
        "  {PLAIN_QUEUE}: {n} events, produced {:.0}/s, end to end {:.0}/s",
        r.produced_per_s(),
        r.end_to_end_per_s()
    );
    Ok(r)
}
