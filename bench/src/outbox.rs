//! Workload "outbox end to end" (`--outbox`; part of the default run unless
//! `--no-outbox`): N events produced with `tx.emit(..)` in transactions of
//! [`EMITS_PER_TX`] emits each (every event its own key, so they spread over the
//! topic's [`PARTITIONS`] partitions), while one consumer (group `bench`,
//! concurrency [`CONSUMER_CONCURRENCY`], poll interval [`POLL_INTERVAL`]) runs
//! from the start and counts handled events in an `AtomicU64`.
//!
//! Two figures per engine, from the first emit: events/s produced (until the last
//! commit) and events/s end to end (until the consumer has handled all N). The
//! wait is bounded by [`TIMEOUT`]; a consumer that falls short fails the run.
//! One repetition per engine (the run is long enough to average itself); nothing
//! asserts on timing: the etch figures are printed against the
//! [`AIM_EVENTS_PER_S`] aim as "met" / "NOT met".

use datalayer::prelude::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use datalayer::Db;

/// Emits per producing transaction.
pub const EMITS_PER_TX: usize = 100;
/// Partitions of the benchmark topic.
pub const PARTITIONS: u32 = 16;
/// The consumer's `concurrency`.
pub const CONSUMER_CONCURRENCY: usize = 4;
/// The consumer's `poll_interval`.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Longest wait for the consumer after the last commit.
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// The aim for datalayer-etch, in events per second.
pub const AIM_EVENTS_PER_S: f64 = 100_000.0;
/// The consumer group.
pub const GROUP: &str = "bench";
/// Bytes of each event's payload.
const PAYLOAD_BYTES: usize = 64;

/// Events per run: 20,000 (full) or 5,000 (`--quick`).
pub fn events(quick: bool) -> usize {
    if quick { 5_000 } else { 20_000 }
}

/// One engine's figures.
#[derive(Debug, Clone)]
pub struct OutboxResult {
    /// Display name.
    pub name: &'static str,
    /// Events produced (and consumed).
    pub events: usize,
    /// First emit to last commit.
    pub produce: Duration,
    /// First emit to the consumer having handled every event.
    pub end_to_end: Duration,
}

impl OutboxResult {
    /// Events per second produced.
    pub fn produced_per_s(&self) -> f64 {
        self.events as f64 / self.produce.as_secs_f64().max(1e-9)
    }

    /// Events per second end to end.
    pub fn end_to_end_per_s(&self) -> f64 {
        self.events as f64 / self.end_to_end.as_secs_f64().max(1e-9)
    }
}

/// The partition key of event `i` (distinct per event).
pub fn key(i: usize) -> String {
    format!("k{i:08}")
}

/// The payload of event `i` ([`PAYLOAD_BYTES`] bytes).
pub fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("event {i:08} ").into_bytes();
    p.resize(PAYLOAD_BYTES, b'.');
    p
}

/// Waits until `done` reaches `n` (polling every millisecond), at most [`TIMEOUT`]
/// after `since`; fails naming `name` otherwise.
pub async fn wait_for(
    name: &str,
    done: &AtomicU64,
    n: usize,
    since: Instant,
) -> anyhow::Result<Duration> {
    loop {
        let got = done.load(Ordering::Acquire);
        if got >= n as u64 {
            return Ok(since.elapsed());
        }
        if since.elapsed() > TIMEOUT {
            bail!(
                "{name}: the consumer handled {got} of {n} events within {} s",
                TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs the workload on `db` (opened with `.outbox()`): creates a fresh topic,
/// starts the consumer, produces `n` events, waits for all of them, stops the
/// consumer.
///
/// # Errors
/// Engine errors, or the consumer not handling every event within [`TIMEOUT`].
pub async fn run_datalayer(db: &Db, name: &'static str, n: usize) -> anyhow::Result<OutboxResult> {
    let topic = "bench_events";
    datalayer::outbox::create_topic(db, topic, PARTITIONS)
        .await
        .with_context(|| format!("{name}: create_topic"))?;
    let handled = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let counter = handled.clone();
    let consumer = tokio::spawn(
        db.consumer(GROUP, topic)
            .concurrency(CONSUMER_CONCURRENCY)
            .poll_interval(POLL_INTERVAL)
            .run(
                move |_ev| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::AcqRel);
                        Ok(())
                    }
                },
                async move {
                    let _ = stopped.await;
                },
            ),
    );
    let events: Vec<(String, Vec<u8>)> = (0..n).map(|i| (key(i), payload(i))).collect();
    let t0 = Instant::now();
    for chunk in events.chunks(EMITS_PER_TX) {
        let tx = db.begin().await?;
        for (k, p) in chunk {
            tx.emit(topic, k, p.clone()).await?;
        }
        tx.commit().await?;
    }
    let produce = t0.elapsed();
    let waited = wait_for(name, &handled, n, t0).await;
    let _ = stop.send(());
    let end_to_end = waited?;
    consumer
        .await
        .context("consumer task")?
        .with_context(|| format!("{name}: consumer"))?;
    let got = handled.load(Ordering::Acquire);
    if got != n as u64 {
        eprintln!("  {name}: {got} deliveries for {n} events (at least once: redeliveries)");
    }
    let r = OutboxResult {
        name,
        events: n,
        produce,
        end_to_end,
    };
    eprintln!(
        "  {name}: outbox {n} events, produced {:.0}/s, end to end {:.0}/s",
        r.produced_per_s(),
        r.end_to_end_per_s()
    );
    Ok(r)
}

/// Runs the workload on datalayer-etch (`etch://<tmpdir>`, fsync per commit) and
/// datalayer-sqlite (`sqlite://<tmpdir>/o.db`, `synchronous=full`), each in its own
/// temporary directory under `parent`.
///
/// # Errors
/// See [`run_datalayer`].
pub fn run_embedded(parent: &Path, n: usize) -> anyhow::Result<Vec<OutboxResult>> {
    let rt = crate::peers::datalayer_etch::runtime();
    let mut out = Vec::new();
    for (name, url) in [("datalayer-etch", "etch"), ("datalayer-sqlite", "sqlite")] {
        let dir = tempfile::Builder::new()
            .prefix("datalayer-bench-outbox-")
            .tempdir_in(parent)
            .context("creating outbox temp dir")?;
        let url = if url == "etch" {
            format!("etch://{}", dir.path().join("etch").display())
        } else {
            format!(
                "sqlite://{}?synchronous=full",
                dir.path().join("o.db").display()
            )
        };
        let r = rt.block_on(async {
            let db = datalayer::builder(url).outbox().connect().await?;
            let r = run_datalayer(&db, name, n).await;
            db.close().await?;
            r
        })?;
        out.push(r);
        dir.close()?;
    }
    Ok(out)
}

/// The outbox table: one line per target, then the ratio datalayer-pg / plain
/// queue (when both ran) and datalayer-etch against the aim.
pub fn outbox_table(results: &[OutboxResult]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let n = results.first().map_or(0, |r| r.events);
    let _ = writeln!(
        s,
        "Outbox end to end: {n} events, {EMITS_PER_TX} emits per tx, {PARTITIONS} partitions, consumer group {GROUP:?} concurrency {CONSUMER_CONCURRENCY}, poll {} ms",
        POLL_INTERVAL.as_millis()
    );
    let _ = writeln!(
        s,
        "{:<28} {:>16} {:>18} {:>10} {:>10}",
        "target", "produced ev/s", "end-to-end ev/s", "produce s", "e2e s"
    );
    for r in results {
        let _ = writeln!(
            s,
            "{:<28} {:>16.0} {:>18.0} {:>10.2} {:>10.2}",
            r.name,
            r.produced_per_s(),
            r.end_to_end_per_s(),
            r.produce.as_secs_f64(),
            r.end_to_end.as_secs_f64()
        );
    }
    let find = |name: &str| results.iter().find(|r| r.name == name);
    if let (Some(dl), Some(q)) = (find("datalayer-pg"), find(PLAIN_QUEUE)) {
        let _ = writeln!(
            s,
            "datalayer-pg / plain queue: produced {:.2}x, end to end {:.2}x (> 1 = datalayer-pg is faster)",
            dl.produced_per_s() / q.produced_per_s(),
            dl.end_to_end_per_s() / q.end_to_end_per_s()
        );
    }
    if let Some(e) = find("datalayer-etch") {
        let verdict = |x: f64| {
            if x >= AIM_EVENTS_PER_S {
                "met"
            } else {
                "NOT met"
            }
        };
        let _ = writeln!(
            s,
            "datalayer-etch vs the {:.0} events/s aim: produced {:.0}/s {}, end to end {:.0}/s {}",
            AIM_EVENTS_PER_S,
            e.produced_per_s(),
            verdict(e.produced_per_s()),
            e.end_to_end_per_s(),
            verdict(e.end_to_end_per_s())
        );
    }
    s
}

/// Display name of the plain `SKIP LOCKED` queue peer (PostgreSQL section).
pub const PLAIN_QUEUE: &str = "plain SKIP LOCKED queue (pg)";
