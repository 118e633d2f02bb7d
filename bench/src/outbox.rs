//! Workload "outbox end to end" ([`Workload::Outbox`]; `--outbox` runs only this
//! one, `--no-outbox` skips it), on every target that supports it: datalayer on
//! any URL whose engine declares the outbox, and the plain `SKIP LOCKED` queue on
//! PostgreSQL (`targets::pg_queue`, with the `pg` feature).
//!
//! N events are produced in transactions of [`EMITS_PER_TX`] each (datalayer:
//! `tx.emit(..)`; every event its own key, so they spread over the topic's
//! [`PARTITIONS`] partitions), while one consumer (group [`GROUP`], concurrency
//! [`CONSUMER_CONCURRENCY`], poll interval [`POLL_INTERVAL`]) runs from the
//! start and counts handled events in an `AtomicU64`.
//!
//! Two figures per target, from the first emit: events/s produced (until the last
//! commit) and events/s end to end (until the consumer has handled all N). The
//! wait is bounded by [`TIMEOUT`]; a consumer that falls short fails the run.
//! One repetition per target (the run is long enough to average itself); nothing
//! asserts on timing: the report prints datalayer-etch against the
//! [`AIM_EVENTS_PER_S`] aim as "met" / "NOT met".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use datalayer::prelude::*;

use crate::stats::Stat;
use crate::targets::{Scratch, Target};
use crate::workloads::Workload;

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
/// Name of the plain `SKIP LOCKED` queue target (PostgreSQL), the outbox's peer.
pub const PLAIN_QUEUE: &str = "pg-skip-locked-queue";
/// Bytes of each event's payload.
const PAYLOAD_BYTES: usize = 64;

/// Events per run: 20,000 (full) or 5,000 (`--quick`).
pub fn events(quick: bool) -> usize {
    if quick { 5_000 } else { 20_000 }
}

/// What one run of the workload measured.
#[derive(Debug, Clone, Copy)]
pub struct OutboxRun {
    /// First emit to last commit.
    pub produce: Duration,
    /// First emit to the consumer having handled every event.
    pub end_to_end: Duration,
}

/// One target's figures.
#[derive(Debug, Clone)]
pub struct OutboxResult {
    /// Target name.
    pub name: String,
    /// Events produced (and consumed).
    pub events: usize,
    /// First emit to last commit.
    pub produce: Duration,
    /// First emit to the consumer having handled every event.
    pub end_to_end: Duration,
}

impl OutboxResult {
    /// Events per second produced, as a statistic of its one repetition.
    pub fn produced(&self) -> Stat {
        Stat::from_samples(self.events, &[self.produce])
    }

    /// Events per second end to end, as a statistic of its one repetition.
    pub fn end_to_end(&self) -> Stat {
        Stat::from_samples(self.events, &[self.end_to_end])
    }

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
///
/// # Errors
/// When [`TIMEOUT`] passes first: the error names the target and the count reached.
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
pub async fn run_datalayer(db: &Db, name: &str, n: usize) -> anyhow::Result<OutboxRun> {
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
    Ok(OutboxRun {
        produce,
        end_to_end,
    })
}

/// Runs the workload once on every target of `targets` that supports it, each in a
/// fresh place from `scratch`, with `n` events.
///
/// # Errors
/// A place cannot be made or cleaned up, a target fails, or a consumer does not
/// handle every event within [`TIMEOUT`].
pub fn run(
    scratch: &Scratch,
    targets: &[&dyn Target],
    n: usize,
) -> anyhow::Result<Vec<OutboxResult>> {
    let mut out = Vec::new();
    for &t in targets.iter().filter(|t| t.supports(Workload::Outbox)) {
        let place = scratch.place(t.name())?;
        let run = t
            .outbox(&place, n)
            .with_context(|| format!("{}: outbox", t.name()))?;
        place.close()?;
        let r = OutboxResult {
            name: t.name().to_owned(),
            events: n,
            produce: run.produce,
            end_to_end: run.end_to_end,
        };
        eprintln!(
            "  {}: outbox {n} events, produced {:.0}/s, end to end {:.0}/s",
            r.name,
            r.produced_per_s(),
            r.end_to_end_per_s()
        );
        out.push(r);
    }
    Ok(out)
}
