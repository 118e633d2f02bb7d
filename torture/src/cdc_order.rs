//! `cdc-order`: the change feed under concurrency and across crashes.
//!
//! 1. **Concurrent writers** (every engine declaring `Capability::concurrent_writers`
//!    and `change_feed`; TiKV on an in-process test cluster of 2 stores and 5 regions,
//!    so rows, change records and the change sequence live in different regions): 16
//!    writers bump random keys with random delays inside their
//!    transactions; each bump sets the row's `version` to the next value under the row
//!    lock, so per key the versions follow commit order. 4 readers follow the feed,
//!    each restarting its stream from its saved position at random, while the log is
//!    trimmed up to the slowest reader. Every reader must see each acknowledged
//!    `(key, version)` exactly once, per key in increasing version order, at positions
//!    that increase; two readers must agree on what each position holds.
//! 2. **Crash-restart** (etch, SQLite): a child writes rows and outbox events and
//!    prints each change's position and event id once committed; the parent kills it
//!    (SIGKILL), reopens, writes more, and checks that no position and no event id
//!    holds content other than what was acknowledged for it (0 reused), and nothing
//!    acknowledged is missing.
//! 3. **Power loss at the last sync** (etch with `flush=never`, SQLite with
//!    `synchronous=normal`, where acknowledged commits may be lost by design): the
//!    directory is copied at an idle moment (a valid crash image), commits are made,
//!    the copy is reopened and written to; positions and event ids of the lost commits
//!    must not be handed out again for different content.

use crate::common::{self, Ctx, Outcome, PgSchema};
use datalayer::outbox::stored_events;
use datalayer::prelude::*;
use datalayer::{ChangeOptions, Value};
use futures::StreamExt;
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Arguments of `cdc-order`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Args {
    /// Engine URLs for the concurrent part (repeatable). Default: etch, SQLite and the
    /// shared PostgreSQL server (private schema); engines without concurrent writers
    /// are reported and skipped by capability.
    #[arg(long)]
    pub url: Vec<String>,
    /// Run only the default targets of this engine (`etch`, `sqlite`, `postgres`,
    /// `redis`, `tikv`), concurrent and crash parts alike; ignored with `--url` for the
    /// concurrent part.
    #[arg(long)]
    pub only: Option<String>,
}

/// Arguments of the hidden child.
#[derive(clap::Args, Debug, Clone)]
pub struct ChildArgs {
    /// The store.
    #[arg(long)]
    pub url: String,
    /// First row id.
    #[arg(long)]
    pub base: i64,
}

/// Writers in the concurrent part.
const WRITERS: u64 = 16;
/// Readers in the concurrent part.
const READERS: usize = 4;
/// Keys the writers bump.
const KEYS: i64 = 24;
/// The topic of the crash-restart events.
const TOPIC: &str = "torture_cdc";

/// A key whose version each transaction bumps.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "torture_cdc_keys")]
pub struct CdcKey {
    /// Key.
    #[pk]
    pub id: i64,
    /// Number of committed bumps.
    pub version: i64,
    /// The transaction of the last bump.
    pub txn: i64,
}

#[query_group]
impl CdcKey {
    fn bump(id: i64, txn: i64) -> u64 {
        Self::filter(|k| k.id == id).update(|k| {
            k.version = k.version + 1;
            k.txn = txn;
        })
    }
}

/// A row of the crash-restart part.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "torture_cdc_rows")]
pub struct CdcRow {
    /// Id.
    #[pk]
    pub id: i64,
    /// Random content (a reused position or event id shows other content).
    pub content: String,
}

/// Runs every part of `cdc-order`.
///
/// # Errors
/// A failure to create temporary directories or spawn children.
pub async fn run(ctx: Ctx, args: Args) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let tmp = tempfile::tempdir()?;
    let mut rng = ctx.rng(0xCDC);
    let mut schemas = Vec::new();
    let mut namespaces = Vec::new();
    let mut urls = args.url.clone();
    let want = |engine: &str| args.only.as_deref().is_none_or(|o| o == engine);
    let mut tikv = None;
    if urls.is_empty() {
        urls.push(format!("etch://{}/cdc-etch", tmp.path().display()));
        urls.push(format!("sqlite://{}/cdc.db", tmp.path().display()));
        urls.retain(|u| want(common::engine_of(u)));
        let shared = common::shared_pg_url();
        match common::pg_reachable(&shared).await {
            _ if !want("postgres") => {}
            Ok(()) => {
                let s = PgSchema::new(&shared, &mut rng);
                urls.push(s.url("pool_size=24"));
                schemas.push(s);
            }
            Err(e) => out.figure(format!(
                "cdc-order postgres: NOT RUN: cannot reach {} ({e})",
                datalayer::redact(&shared)
            )),
        }
        let redis = crate::redis::shared_url();
        match crate::redis::reachable(&redis).await {
            _ if !want("redis") => {}
            Ok(()) => {
                let ns = crate::redis::RedisNs::new(&redis, &mut rng);
                urls.push(ns.url("pool_size=8"));
                namespaces.push(ns);
            }
            Err(e) => out.figure(format!(
                "cdc-order redis: NOT RUN: cannot reach {} ({e})",
                datalayer::redact(&redis)
            )),
        }
        if want("tikv") {
            let cluster = crate::tikv::TikvCluster::start().await?;
            urls.push(cluster.url());
            tikv = Some(cluster);
        }
    }
    for (i, url) in urls.iter().enumerate() {
        let engine = common::engine_of(url);
        eprintln!("-- cdc-order {engine} (concurrent writers)");
        if let Err(e) = concurrent(ctx, i as u64, url, &mut out).await {
            out.fail(format!("cdc-order {engine}: {e:#}"));
        }
    }
    drop(schemas);
    drop(namespaces);
    if let Some(c) = tikv {
        out.figure(format!(
            "cdc-order tikv: the in-process test cluster ended with {} regions",
            c.regions()
        ));
    }
    for (engine, durable, lossy) in [
        ("etch", "", "flush=never"),
        ("sqlite", "synchronous=full", "synchronous=normal"),
    ] {
        if !want(engine) {
            continue;
        }
        eprintln!("-- cdc-order {engine} (crash-restart)");
        let dir = tmp.path().join(format!("crash-{engine}"));
        let url = store_url(engine, &dir, durable);
        if let Err(e) = crash_restart(ctx, engine, &url, &mut out).await {
            out.fail(format!("cdc-order {engine} crash-restart: {e:#}"));
        }
        eprintln!("-- cdc-order {engine} (power loss at the last sync, {lossy})");
        let base = tmp.path().join(format!("loss-{engine}"));
        if let Err(e) = power_loss(ctx, engine, &base, lossy, &mut out).await {
            out.fail(format!("cdc-order {engine} power loss: {e:#}"));
        }
    }
    Ok(out)
}

fn store_url(engine: &str, dir: &std::path::Path, params: &str) -> String {
    let url = match engine {
        "etch" => format!("etch://{}", dir.display()),
        _ => format!("sqlite://{}/cdc.db", dir.display()),
    };
    if engine != "etch" {
        let _ = std::fs::create_dir_all(dir);
    }
    common::with_params(&url, params)
}

// ---------------------------------------------------------------------------------
// 1. Concurrent writers

/// What one reader saw: per position, the (key, version, txn) it held, in feed order.
#[derive(Debug, Default, Clone)]
pub struct ReaderLog {
    /// `(position, key, version, txn)` in the order read.
    pub seen: Vec<(u64, i64, i64, i64)>,
}

/// The counts of [`check_feed`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FeedCheck {
    /// Acknowledged `(key, version)` a reader never saw (summed over readers).
    pub missed: u64,
    /// `(key, version)` a reader saw more than once.
    pub duplicated: u64,
    /// Positions that two readers saw with different content, or content not
    /// matching the acknowledged transaction.
    pub reused: u64,
    /// Per key, a version not above the previous one; or a position not above the
    /// previous one.
    pub out_of_order: u64,
    /// Up to 10 examples.
    pub examples: Vec<String>,
}

/// Checks the readers' logs against the acknowledged bumps `acked`
/// (`(key, version) → txn`).
pub fn check_feed(acked: &HashMap<(i64, i64), i64>, readers: &[ReaderLog]) -> FeedCheck {
    let mut c = FeedCheck::default();
    let example = |c: &mut FeedCheck, s: String| {
        if c.examples.len() < 10 {
            c.examples.push(s);
        }
    };
    let mut at: HashMap<u64, (i64, i64, i64)> = HashMap::new();
    for (r, log) in readers.iter().enumerate() {
        let mut count: HashMap<(i64, i64), u64> = HashMap::new();
        let mut last_version: HashMap<i64, i64> = HashMap::new();
        let mut last_pos = 0u64;
        for &(pos, key, version, txn) in &log.seen {
            if pos <= last_pos {
                c.out_of_order += 1;
                example(
                    &mut c,
                    format!("reader {r}: position {pos} after {last_pos}"),
                );
            }
            last_pos = last_pos.max(pos);
            if let Some(&prev) = last_version.get(&key)
                && version <= prev
            {
                c.out_of_order += 1;
                example(
                    &mut c,
                    format!("reader {r}: key {key} version {version} after {prev}"),
                );
            }
            last_version.insert(key, version);
            *count.entry((key, version)).or_default() += 1;
            match at.insert(pos, (key, version, txn)) {
                Some(prev) if prev != (key, version, txn) => {
                    c.reused += 1;
                    example(
                        &mut c,
                        format!(
                            "position {pos}: reader {r} saw {:?}, another reader {prev:?}",
                            (key, version, txn)
                        ),
                    );
                }
                _ => {}
            }
            if let Some(&want) = acked.get(&(key, version))
                && want != txn
            {
                c.reused += 1;
                example(
                    &mut c,
                    format!(
                        "reader {r}: key {key} version {version} from txn {txn}, acknowledged by txn {want}"
                    ),
                );
            }
        }
        for (kv, n) in &count {
            if *n > 1 {
                c.duplicated += n - 1;
                example(&mut c, format!("reader {r}: {kv:?} seen {n} times"));
            }
        }
        for kv in acked.keys() {
            if !count.contains_key(kv) {
                c.missed += 1;
                example(
                    &mut c,
                    format!("reader {r}: acknowledged {kv:?} never seen"),
                );
            }
        }
    }
    c
}

/// One writer transaction: bump each key (sleeping a random delay after each bump)
/// and read back the version it got.
async fn bump_txn(db: &Db, ks: Vec<i64>, delays: Vec<u64>, txn: i64) -> Result<Vec<(i64, i64)>> {
    db.tx_with()
        .retry(20)
        .run(async move |tx| {
            let mut got = Vec::new();
            for i in 0..ks.len() {
                let (key, d) = (ks[i], delays[i]);
                if CdcKey::bump(tx, key, txn).await? != 1 {
                    return Err(Error::invalid_input("key missing"));
                }
                tokio::time::sleep(Duration::from_millis(d)).await;
                let row = tx
                    .repo::<CdcKey>()
                    .get(key)
                    .await?
                    .ok_or_else(|| Error::not_found("key"))?;
                got.push((key, row.version));
            }
            Ok(got)
        })
        .await
}

async fn open_keys(url: &str) -> Result<Db> {
    datalayer::builder(url)
        .table::<CdcKey>()
        .queries::<CdcKey>()
        .connect()
        .await
}

async fn concurrent(ctx: Ctx, n: u64, url: &str, out: &mut Outcome) -> anyhow::Result<()> {
    let engine = common::engine_of(url);
    let db = open_keys(url).await?;
    let cap = db.capability();
    if !cap.change_feed || !cap.concurrent_writers {
        out.figure(format!(
            "cdc-order {engine}: concurrent part not applicable (capability: concurrent_writers={}, change_feed={}); crash-restart below",
            cap.concurrent_writers, cap.change_feed
        ));
        db.close().await?;
        return Ok(());
    }
    let keys: Vec<CdcKey> = (0..KEYS)
        .map(|id| CdcKey {
            id,
            version: 0,
            txn: 0,
        })
        .collect();
    db.repo::<CdcKey>().insert_many(&keys).await?;
    db.enable_changes("torture_cdc_keys").await?;

    let duration = ctx.pick(Duration::from_secs(4), Duration::from_secs(60));
    let writers_done = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(HashMap::<(i64, i64), i64>::new()));
    let txns = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (db, acked, txns, errors) = (db.clone(), acked.clone(), txns.clone(), errors.clone());
        let mut rng = ctx.rng(n * 100 + w);
        writers.push(tokio::spawn(async move {
            let mut k = 0i64;
            while Instant::now() < deadline {
                k += 1;
                let txn = (w as i64 + 1) * 1_000_000_000 + k;
                let mut ks: Vec<i64> = (0..rng.random_range(1..=3))
                    .map(|_| rng.random_range(0..KEYS))
                    .collect();
                ks.sort_unstable();
                ks.dedup();
                let delays: Vec<u64> = ks.iter().map(|_| rng.random_range(0..5)).collect();
                let r = bump_txn(&db, ks, delays, txn).await;
                match r {
                    Ok(got) => {
                        txns.fetch_add(1, Ordering::Relaxed);
                        let mut a = acked.lock().unwrap_or_else(|e| e.into_inner());
                        for kv in got {
                            a.insert(kv, txn);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let saved: Arc<Vec<AtomicU64>> = Arc::new((0..READERS).map(|_| AtomicU64::new(0)).collect());
    let mut readers = Vec::new();
    for r in 0..READERS {
        let (db, saved, done) = (db.clone(), saved.clone(), writers_done.clone());
        let mut rng = ctx.rng(n * 100 + 50 + r as u64);
        readers.push(tokio::spawn(async move {
            let mut log = ReaderLog::default();
            let mut idle = 0;
            let mut restarts = 0u64;
            loop {
                let after = saved[r].load(Ordering::SeqCst);
                let opts = ChangeOptions {
                    after,
                    batch: rng.random_range(1..=64),
                    poll_interval: Duration::from_millis(10),
                };
                let take = rng.random_range(1..=200);
                let mut feed = std::pin::pin!(db.changes("torture_cdc_keys", opts));
                let mut got = 0;
                while got < take {
                    match tokio::time::timeout(Duration::from_millis(300), feed.next()).await {
                        Ok(Some(Ok(c))) => {
                            got += 1;
                            idle = 0;
                            let int = |n: &str| match c.get(n) {
                                Some(Value::I64(v)) => *v,
                                _ => -1,
                            };
                            log.seen
                                .push((c.position, int("id"), int("version"), int("txn")));
                            saved[r].store(c.position, Ordering::SeqCst);
                        }
                        Ok(Some(Err(_))) | Ok(None) => break,
                        Err(_) => {
                            idle += 1;
                            break;
                        }
                    }
                }
                restarts += 1;
                // Done only when the writers are, and a read that starts after that
                // finds nothing past this reader's position (timeouts alone could
                // come from a slow read while changes remain).
                if done.load(Ordering::SeqCst) && idle >= 2 {
                    let after = saved[r].load(Ordering::SeqCst);
                    match db.read_changes("torture_cdc_keys", after, 1).await {
                        Ok(rest) if rest.is_empty() => return (log, restarts),
                        _ => idle = 0,
                    }
                }
            }
        }));
    }
    // Trimmer: up to the slowest reader's saved position.
    let trimmed = Arc::new(AtomicU64::new(0));
    let trimmer = {
        let (db, saved, done, trimmed) = (
            db.clone(),
            saved.clone(),
            writers_done.clone(),
            trimmed.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let upto = saved
                    .iter()
                    .map(|s| s.load(Ordering::SeqCst))
                    .min()
                    .unwrap_or(0);
                if upto > 0
                    && let Ok(n) = db.trim_changes("torture_cdc_keys", upto).await
                {
                    trimmed.fetch_add(n, Ordering::Relaxed);
                }
            }
        })
    };
    for w in writers {
        w.await?;
    }
    writers_done.store(true, Ordering::SeqCst);
    trimmer.await?;
    let mut logs = Vec::new();
    let mut restarts = 0;
    for r in readers {
        let (log, n) = r.await?;
        logs.push(log);
        restarts += n;
    }
    // The table's final state agrees with the acknowledged bumps.
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|e| e.into_inner()));
    let finals = db.repo::<CdcKey>().scan().all().await?;
    for k in &finals {
        let max = acked
            .keys()
            .filter(|(key, _)| *key == k.id)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0);
        if k.version != max {
            out.fail(format!(
                "cdc-order {engine}: key {} has version {}, the highest acknowledged is {max}",
                k.id, k.version
            ));
        }
    }
    db.close().await?;
    let c = check_feed(&acked, &logs);
    let n_txns = txns.load(Ordering::Relaxed);
    out.figure(format!(
        "cdc-order {engine}: {n_txns} transactions: {} missed, {} duplicated, {} reused, {} out of order \
         ({WRITERS} writers, {READERS} readers, {restarts} reader restarts, {} changes trimmed, {} failed transactions)",
        c.missed,
        c.duplicated,
        c.reused,
        c.out_of_order,
        trimmed.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    ));
    if n_txns == 0 {
        out.fail(format!("cdc-order {engine}: no transaction committed"));
    }
    if c.missed + c.duplicated + c.reused + c.out_of_order > 0 {
        for e in &c.examples {
            out.fail(format!("cdc-order {engine}: {e}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// 2. and 3. Crash-restart and power loss

async fn open_rows(url: &str) -> Result<Db> {
    let db = datalayer::builder(url)
        .table::<CdcRow>()
        .outbox()
        .connect()
        .await?;
    db.enable_changes("torture_cdc_rows").await?;
    Ok(db)
}

/// Distinct findings (an audit repeated after every round reports each once).
type Findings = std::collections::BTreeSet<String>;

/// What was acknowledged for each position and event id (content = the row's).
#[derive(Debug, Default)]
struct Acks {
    /// position → content.
    positions: BTreeMap<u64, String>,
    /// event id → payload.
    events: BTreeMap<String, String>,
}

/// Writes one row and one event in a transaction; returns (position, event id,
/// content) as read back after the commit.
async fn write_one(
    db: &Db,
    id: i64,
    last_pos: &mut u64,
    rng: &mut impl Rng,
) -> Result<(u64, String, String)> {
    let content = format!("{id}-{}", rng.random::<u64>());
    let row = CdcRow {
        id,
        content: content.clone(),
    };
    let c = content.clone();
    let ev = db
        .tx(async |tx| {
            tx.repo::<CdcRow>().insert(&row).await?;
            tx.emit(TOPIC, "k", c.clone().into_bytes()).await
        })
        .await?;
    // This process is the only writer: the new change is the one after `last_pos`.
    let changes = db
        .read_changes("torture_cdc_rows", *last_pos, 1_000)
        .await?;
    let mine = changes
        .iter()
        .find(|ch| ch.get("id") == Some(&Value::I64(id)))
        .ok_or_else(|| Error::not_found(format!("the change of row {id} is not in the feed")))?;
    *last_pos = changes.last().map_or(*last_pos, |c| c.position);
    Ok((mine.position, ev.id(), content))
}

/// The child of the crash-restart part: one row + event per transaction, printed as
/// `P <position> <content>` and `E <event id> <content>` once committed.
///
/// # Errors
/// A failed open or write.
pub async fn child(args: ChildArgs) -> anyhow::Result<()> {
    let db = open_rows(&args.url).await?;
    let mut last = db
        .read_changes("torture_cdc_rows", 0, usize::MAX)
        .await?
        .last()
        .map_or(0, |c| c.position);
    let mut out = std::io::stdout().lock();
    let mut rng = rand::rng();
    for k in 0.. {
        let (pos, ev, content) = write_one(&db, args.base + k, &mut last, &mut rng).await?;
        writeln!(out, "P {pos} {content}\nE {ev} {content}")?;
        out.flush()?;
    }
    Ok(())
}

/// Records `(pos, ev, content)`; a position or event id already acknowledged with
/// other content is a reuse.
fn record(acks: &mut Acks, pos: u64, ev: &str, content: &str, reused: &mut Findings) {
    if let Some(prev) = acks.positions.insert(pos, content.to_owned())
        && prev != content
    {
        reused.insert(format!(
            "position {pos}: acknowledged for {prev:?}, then for {content:?}"
        ));
    }
    if let Some(prev) = acks.events.insert(ev.to_owned(), content.to_owned())
        && prev != content
    {
        reused.insert(format!(
            "event id {ev}: acknowledged for {prev:?}, then for {content:?}"
        ));
    }
}

/// Compares `stored` (name → content; `what` names the kind, "position" or "event")
/// with `acked`: a content stored under two names is `duplicated`, an acknowledged
/// name that is gone is `missed` (unless losses are allowed), one that holds other
/// content is `reused`.
fn compare(
    what: &str,
    stored: &HashMap<String, String>,
    acked: &BTreeMap<String, String>,
    allow_loss: bool,
    (missed, reused, duplicated): (&mut Findings, &mut Findings, &mut Findings),
) {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (name, content) in stored {
        if let Some(other) = seen.insert(content, name) {
            duplicated.insert(format!("{content:?} under {what}s {other} and {name}"));
        }
    }
    for (name, content) in acked {
        match stored.get(name) {
            None if !allow_loss => {
                missed.insert(format!("{what} {name} ({content:?}) is gone"));
            }
            Some(c) if c != content => {
                reused.insert(format!(
                    "{what} {name}: acknowledged for {content:?}, the store holds {c:?}"
                ));
            }
            _ => {}
        }
    }
}

/// Compares the store with what was acknowledged: a missing position or event is
/// `missed` (unless losses are allowed), one with other content is `reused`.
async fn audit(
    db: &Db,
    acks: &Acks,
    allow_loss: bool,
    missed: &mut Findings,
    reused: &mut Findings,
    duplicated: &mut Findings,
) -> Result<()> {
    let log: HashMap<u64, String> = db
        .read_changes("torture_cdc_rows", 0, usize::MAX)
        .await?
        .into_iter()
        .map(|c| {
            let s = match c.get("content") {
                Some(Value::String(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            (c.position, s)
        })
        .collect();
    let log: HashMap<String, String> = log.into_iter().map(|(p, c)| (p.to_string(), c)).collect();
    let positions: BTreeMap<String, String> = acks
        .positions
        .iter()
        .map(|(p, c)| (p.to_string(), c.clone()))
        .collect();
    let findings = (&mut *missed, &mut *reused, &mut *duplicated);
    compare("position", &log, &positions, allow_loss, findings);
    let events: HashMap<String, String> = stored_events(db, TOPIC)
        .await?
        .into_iter()
        .map(|e| (e.id, String::from_utf8_lossy(&e.payload).into_owned()))
        .collect();
    compare(
        "event",
        &events,
        &acks.events,
        allow_loss,
        (missed, reused, duplicated),
    );
    Ok(())
}

async fn crash_restart(ctx: Ctx, engine: &str, url: &str, out: &mut Outcome) -> anyhow::Result<()> {
    let rounds = ctx.pick(5, 50);
    let mut rng = ctx.rng(0xC4A5 + engine.len() as u64);
    let mut acks = Acks::default();
    let (mut missed, mut reused, mut duplicated) =
        (Findings::new(), Findings::new(), Findings::new());
    let mut txns = 0u64;
    let mut refused = 0u64;
    for round in 0..rounds {
        let base = round as i64 * 10_000_000;
        let delay = Duration::from_millis(rng.random_range(50..=500));
        let args = ["cdc-child", "--url", url, "--base", &base.to_string()];
        let lines = common::kill_child_after(&args, delay).await?.lines;
        let mut pending: Option<(u64, String)> = None;
        for l in lines {
            let mut parts = l.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("P"), Some(p), Some(c)) => {
                    pending = p.parse().ok().map(|p| (p, c.to_owned()))
                }
                (Some("E"), Some(ev), Some(c)) => {
                    if let Some((p, pc)) = pending.take()
                        && pc == c
                    {
                        txns += 1;
                        record(&mut acks, p, ev, c, &mut reused);
                    }
                }
                _ => {}
            }
        }
        // Reopen, check, write a few more in this process, then drop without close.
        let db = match open_rows(url).await {
            Ok(db) => db,
            Err(e) => {
                refused += 1;
                out.fail(format!(
                    "cdc-order {engine}: reopening after kill -9 failed: {e}"
                ));
                continue;
            }
        };
        audit(&db, &acks, false, &mut missed, &mut reused, &mut duplicated).await?;
        let mut last = db
            .read_changes("torture_cdc_rows", 0, usize::MAX)
            .await?
            .last()
            .map_or(0, |c| c.position);
        for k in 0..3 {
            let (p, ev, c) = write_one(&db, base + 5_000_000 + k, &mut last, &mut rng).await?;
            txns += 1;
            record(&mut acks, p, &ev, &c, &mut reused);
        }
        db.close().await?;
    }
    let db = open_rows(url).await?;
    audit(&db, &acks, false, &mut missed, &mut reused, &mut duplicated).await?;
    db.close().await?;
    out.figure(format!(
        "cdc-order {engine} (crash-restart): {txns} transactions: {} missed, {} duplicated, {} ({rounds} kill -9, {refused} refused opens)",
        missed.len(),
        duplicated.len(),
        reuse_counts(&reused)
    ));
    for e in missed.iter().chain(&duplicated).chain(&reused).take(10) {
        out.fail(format!("cdc-order {engine} (crash-restart): {e}"));
    }
    if txns == 0 {
        out.fail(format!(
            "cdc-order {engine} (crash-restart): nothing was acknowledged"
        ));
    }
    Ok(())
}

/// "N reused (P positions, E event ids)" from the reuse messages.
fn reuse_counts(reused: &Findings) -> String {
    let p = reused.iter().filter(|r| r.starts_with("position")).count();
    let e = reused.len() - p;
    if reused.is_empty() {
        "0 reused".to_owned()
    } else {
        format!("{} reused ({p} positions, {e} event ids)", reused.len())
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

async fn power_loss(
    ctx: Ctx,
    engine: &str,
    base: &std::path::Path,
    params: &str,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let rounds = ctx.pick(3, 20);
    let mut rng = ctx.rng(0x9055 + engine.len() as u64);
    let mut acks = Acks::default();
    let (mut missed, mut reused, mut duplicated) =
        (Findings::new(), Findings::new(), Findings::new());
    let (mut txns, mut lost) = (0u64, 0u64);
    let mut dir = base.join("r0");
    for round in 0..rounds {
        let url = store_url(engine, &dir, params);
        let db = open_rows(&url).await?;
        let mut last = db
            .read_changes("torture_cdc_rows", 0, usize::MAX)
            .await?
            .last()
            .map_or(0, |c| c.position);
        // The crash image is taken now, at an idle moment: as if every byte written so
        // far persisted and nothing written after it does (a power loss before the
        // next sync, which this durability setting allows).
        let next = base.join(format!("r{}", round + 1));
        copy_dir(&dir, &next)?;
        // Acknowledged, then lost with the power (allowed by this durability setting).
        let n = rng.random_range(2..=5);
        for k in 0..n {
            let (p, ev, c) = write_one(&db, round as i64 * 1_000 + k, &mut last, &mut rng).await?;
            txns += 1;
            lost += 1;
            record(&mut acks, p, &ev, &c, &mut reused);
        }
        db.close().await?;
        dir = next;
        // After the power loss: reopen the image and write more.
        let url = store_url(engine, &dir, params);
        let db = open_rows(&url).await?;
        let mut last = db
            .read_changes("torture_cdc_rows", 0, usize::MAX)
            .await?
            .last()
            .map_or(0, |c| c.position);
        for k in 0..n {
            let (p, ev, c) =
                write_one(&db, round as i64 * 1_000 + 500 + k, &mut last, &mut rng).await?;
            txns += 1;
            record(&mut acks, p, &ev, &c, &mut reused);
        }
        audit(&db, &acks, true, &mut missed, &mut reused, &mut duplicated).await?;
        db.close().await?;
    }
    out.figure(format!(
        "cdc-order {engine} (power loss, {params}): {txns} transactions: {lost} acknowledged commits lost by design (allowed), {} duplicated, {} ({rounds} power losses)",
        duplicated.len(),
        reuse_counts(&reused)
    ));
    for e in duplicated.iter().chain(&reused).take(10) {
        out.fail(format!("cdc-order {engine} (power loss, {params}): {e}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_feed_passes_and_a_doctored_one_fails() {
        let acked: HashMap<(i64, i64), i64> = [((1, 1), 10), ((1, 2), 11), ((2, 1), 11)].into();
        let good = ReaderLog {
            seen: vec![(1, 1, 1, 10), (2, 1, 2, 11), (3, 2, 1, 11)],
        };
        assert_eq!(
            check_feed(&acked, &[good.clone(), good.clone()]).examples,
            Vec::<String>::new()
        );
        // Missing one, a duplicate, versions out of order, another reader disagreeing.
        let bad = ReaderLog {
            seen: vec![(1, 1, 2, 11), (2, 1, 1, 10), (3, 1, 1, 10)],
        };
        let c = check_feed(&acked, &[good, bad]);
        assert_eq!(c.missed, 1, "{c:?}");
        assert_eq!(c.duplicated, 1, "{c:?}");
        assert!(c.out_of_order >= 2, "{c:?}");
        assert!(c.reused >= 2, "{c:?}");
    }

    #[test]
    fn record_detects_reuse() {
        let mut acks = Acks::default();
        let mut reused = Findings::new();
        record(&mut acks, 5, "t/1/5", "a", &mut reused);
        record(&mut acks, 5, "t/1/5", "a", &mut reused);
        assert!(reused.is_empty());
        record(&mut acks, 5, "t/1/6", "b", &mut reused);
        assert_eq!(reused.len(), 1);
        record(&mut acks, 6, "t/1/5", "c", &mut reused);
        assert_eq!(reused.len(), 2);
    }
}
