//! `outbox-limits` (issue 9, defect 4): the outbox at the edges of what one value and
//! one partition hold, on etch (temporary directory), SQLite (temporary file) and
//! PostgreSQL when reachable (private schema, dropped at the end).
//!
//! Per engine:
//! 1. a 15 MiB poison event whose handler always fails with a 20 MiB error: it is
//!    dead-lettered after `max_attempts` calls (no hot loop), the dead letter holds the
//!    whole payload and the error cut to `MAX_ERROR_BYTES` (marked truncated), and the
//!    event behind it in its partition is delivered. An engine whose declared
//!    `max_value_bytes` is under 15 MiB must refuse the emit with `InvalidInput` (the
//!    figure line says so);
//! 2. N events scheduled an hour ahead on one partition (`--quick`: 10,000; full:
//!    1,000,000), then one immediate event: it is delivered within 1 s of the
//!    consumer's start (measured and printed), and no scheduled event early.

use crate::common::{self, Ctx, Outcome, PgSchema};
use crate::redis::RedisNs;
use datalayer::outbox::{self, Event, MAX_ERROR_BYTES};
use datalayer::prelude::*;
use datalayer::{Db, Error, ErrorKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Arguments of `outbox-limits`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Args {
    /// Scheduled events ahead of the immediate one (default: 10,000 with `--quick`,
    /// 1,000,000 without).
    #[arg(long)]
    pub scheduled: Option<usize>,
    /// Engine URLs to test instead of the defaults (etch and SQLite in a temporary
    /// directory, PostgreSQL on `DATALAYER_PG_URL` when reachable).
    #[arg(long)]
    pub url: Vec<String>,
}

/// The poison event's payload size.
const POISON_BYTES: usize = 15 << 20;
/// The poison handler's error size.
const ERROR_BYTES: usize = 20 << 20;
/// The bound on the immediate event's delivery (the invariant the issue names).
const IMMEDIATE_WITHIN: Duration = Duration::from_secs(1);

/// Runs `outbox-limits` on every engine.
///
/// # Errors
/// When the temporary directory cannot be created; engine failures are recorded in the
/// outcome.
pub async fn run(ctx: Ctx, args: Args) -> anyhow::Result<Outcome> {
    let tmp = tempfile::tempdir()?;
    let n = args.scheduled.unwrap_or(ctx.pick(10_000, 1_000_000));
    let mut out = Outcome::default();
    let mut rng = ctx.rng(0x0b11);
    let mut targets: Vec<String> = Vec::new();
    let mut schemas: Vec<PgSchema> = Vec::new();
    let mut namespaces: Vec<RedisNs> = Vec::new();
    if args.url.is_empty() {
        targets.push(format!("etch://{}/limits-etch", tmp.path().display()));
        targets.push(format!("sqlite://{}/limits.db", tmp.path().display()));
        let shared = common::shared_pg_url();
        match common::pg_reachable(&shared).await {
            Ok(()) => {
                let s = PgSchema::new(&shared, &mut rng);
                targets.push(s.url(""));
                schemas.push(s);
            }
            Err(e) => out.figure(format!(
                "outbox-limits postgres: not run (server unreachable: {e:#})"
            )),
        }
        let redis = crate::redis::shared_url();
        match crate::redis::reachable(&redis).await {
            Ok(()) => {
                let ns = RedisNs::new(&redis, &mut rng);
                targets.push(ns.url(""));
                namespaces.push(ns);
            }
            Err(e) => out.figure(format!(
                "outbox-limits redis: not run (server unreachable: {e:#})"
            )),
        }
    } else {
        targets.extend(args.url.iter().cloned());
    }
    for url in &targets {
        let engine = common::engine_of(url);
        // Server engines emit one event per round trip or so (about 3 ms each on pg):
        // the quick run caps their backlog so that CI stays in seconds.
        let n = if ctx.quick && args.scheduled.is_none() && engine != "etch" && engine != "sqlite" {
            n.min(2_000)
        } else {
            n
        };
        if let Err(e) = run_one(engine, url, n, &mut out).await {
            out.fail(format!("outbox-limits {engine}: could not run: {e:#}"));
        }
    }
    drop((schemas, namespaces));
    Ok(out)
}

async fn run_one(engine: &str, url: &str, n: usize, out: &mut Outcome) -> anyhow::Result<()> {
    let db = datalayer::builder(url).outbox().connect().await?;
    let poison = poison(engine, &db, out).await?;
    let sched = scheduled(engine, &db, n, out).await?;
    out.figure(format!("outbox-limits {engine}: {poison}; {sched}"));
    Ok(())
}

/// Part 1: the 15 MiB poison event with a 20 MiB error. Returns the figure.
async fn poison(engine: &str, db: &Db, out: &mut Outcome) -> anyhow::Result<String> {
    outbox::create_topic(db, "poison", 1).await?;
    let payload = vec![b'p'; POISON_BYTES];
    let limit = db.capability().max_value_bytes;
    if let Err(e) = db.emit("poison", "k", payload.clone()).await {
        let declared_small = limit.is_some_and(|l| l < POISON_BYTES + 4096);
        if declared_small && e.kind() == ErrorKind::InvalidInput {
            return Ok(format!(
                "15 MiB event refused at emit with InvalidInput (declared max_value_bytes {limit:?}): {e}"
            ));
        }
        out.fail(format!(
            "outbox-limits {engine}: the 15 MiB emit failed (declared max_value_bytes {limit:?}): {e}"
        ));
        return Ok("15 MiB emit failed".into());
    }
    db.emit("poison", "k", b"after".to_vec()).await?;
    let max_attempts = 2u32;
    let calls = Arc::new(AtomicUsize::new(0));
    let after = Arc::new(AtomicBool::new(false));
    let (c, a) = (calls.clone(), after.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer = db
        .consumer("g", "poison")
        .partitions(0..1)
        .max_attempts(max_attempts)
        .poll_interval(Duration::from_millis(10))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .run(
            move |ev: Event| {
                let (c, a) = (c.clone(), a.clone());
                async move {
                    if ev.payload == b"after" {
                        a.store(true, Ordering::SeqCst);
                        return Ok(());
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                    Err(Error::invalid_input("e".repeat(ERROR_BYTES)))
                }
            },
            async move {
                let _ = stopped.await;
            },
        );
    let task = tokio::spawn(consumer);
    let t0 = Instant::now();
    while !after.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A hot loop would show as many more calls in this time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(());
    task.await??;
    let calls = calls.load(Ordering::SeqCst);
    if !after.load(Ordering::SeqCst) {
        out.fail(format!(
            "outbox-limits {engine}: the event behind the 15 MiB poison event was not delivered within 60 s ({calls} poison calls)"
        ));
    }
    if calls > max_attempts as usize + 1 {
        out.fail(format!(
            "outbox-limits {engine}: the poison handler ran {calls} times with max_attempts {max_attempts}"
        ));
    }
    let dead = outbox::stored_events(db, "poison.dead").await?;
    let Some(dl) = dead
        .first()
        .and_then(|d| d.dead_letter.clone().map(|l| (d, l)))
    else {
        out.fail(format!(
            "outbox-limits {engine}: no dead letter for the poison event"
        ));
        return Ok("no dead letter".into());
    };
    let (ev, letter) = dl;
    if dead.len() != 1 || ev.payload.len() != POISON_BYTES || ev.payload != payload {
        out.fail(format!(
            "outbox-limits {engine}: {} dead letters, payload of {} bytes (want 1 of {POISON_BYTES})",
            dead.len(),
            ev.payload.len()
        ));
    }
    if letter.error.len() > MAX_ERROR_BYTES || !letter.error.contains("truncated") {
        out.fail(format!(
            "outbox-limits {engine}: the 20 MiB error was stored as {} bytes (bound {MAX_ERROR_BYTES}, marked truncated: {})",
            letter.error.len(),
            letter.error.contains("truncated")
        ));
    }
    Ok(format!(
        "15 MiB poison dead-lettered after {calls} calls (max_attempts {max_attempts}), partition went on; \
         20 MiB error stored as {} bytes",
        letter.error.len()
    ))
}

/// Part 2: an immediate event behind `n` scheduled ones. Returns the figure.
async fn scheduled(engine: &str, db: &Db, n: usize, out: &mut Outcome) -> anyhow::Result<String> {
    outbox::create_topic(db, "sched", 1).await?;
    let later = SystemTime::now() + Duration::from_secs(3600);
    let t0 = Instant::now();
    let mut left = n;
    while left > 0 {
        let chunk = left.min(10_000);
        let tx = db.begin().await?;
        for _ in 0..chunk {
            tx.emit("sched", "k", b"later".to_vec())
                .deliver_at(later)
                .await?;
        }
        tx.commit().await?;
        left -= chunk;
    }
    db.emit("sched", "k", b"now".to_vec()).await?;
    let emitted = t0.elapsed();
    let early = Arc::new(AtomicUsize::new(0));
    let (got_tx, got) = tokio::sync::oneshot::channel::<Instant>();
    let got_tx = Arc::new(std::sync::Mutex::new(Some(got_tx)));
    let e = early.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let task = tokio::spawn(
        db.consumer("g", "sched")
            .partitions(0..1)
            .poll_interval(Duration::from_millis(10))
            .run(
                move |ev: Event| {
                    let (got_tx, e) = (got_tx.clone(), e.clone());
                    async move {
                        if ev.payload == b"now" {
                            if let Some(s) = got_tx.lock().unwrap().take() {
                                let _ = s.send(Instant::now());
                            }
                        } else {
                            e.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(())
                    }
                },
                async move {
                    let _ = stopped.await;
                },
            ),
    );
    let at = tokio::time::timeout(Duration::from_secs(120), got).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());
    task.await??;
    let early = early.load(Ordering::SeqCst);
    if early > 0 {
        out.fail(format!(
            "outbox-limits {engine}: {early} scheduled events delivered an hour early"
        ));
    }
    let took = match at {
        Ok(Ok(at)) => at.duration_since(start),
        _ => {
            out.fail(format!(
                "outbox-limits {engine}: the immediate event behind {n} scheduled ones was not delivered within 120 s"
            ));
            return Ok(format!(
                "immediate event behind {n} scheduled: not delivered"
            ));
        }
    };
    if took > IMMEDIATE_WITHIN {
        out.fail(format!(
            "outbox-limits {engine}: the immediate event behind {n} scheduled ones took {took:?} (bound {IMMEDIATE_WITHIN:?})"
        ));
    }
    Ok(format!(
        "immediate event behind {n} scheduled delivered in {} ms (emitting them took {:.1} s)",
        took.as_millis(),
        emitted.as_secs_f64()
    ))
}
