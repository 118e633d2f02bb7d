//! `bank`: Jepsen's bank test. 16 workers transfer random amounts between 10 accounts,
//! each transfer in one transaction under the library's retry (`tx_with().retry(n)`)
//! that also inserts a row with the transfer's unique id; readers sum the balances
//! concurrently. On PostgreSQL a private instance is crashed and restarted
//! (`pg_ctl -m immediate`) and a proxy cuts connections, also right around `COMMIT`.
//!
//! On TiKV an in-process test cluster (2 stores, 5 regions) gets region errors on
//! every RPC kind, live splits between the rows, leader transfers and bursts of lost
//! or refused commit responses (`CommitUnknown`, resolved by the transfer row as on
//! the other engines) while the transfers run.
//!
//! Invariants: every read sees the initial total; every acknowledged transfer has its
//! row (0 lost); every balance equals its initial value plus the effects of the stored
//! transfer rows (0 double-applied).

use crate::common::{self, Ctx, Outcome, PgSchema};
use crate::pg::PrivatePg;
use crate::proxy::{CutRates, Proxy};
use crate::redis::{PrivateRedis, RedisNs};
use crate::tikv::{FaultCounts, TikvCluster};
use datalayer::prelude::*;
use datalayer::{Capability, TxOptions};
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Accounts in the bank.
const ACCOUNTS: i64 = 10;
/// Each account's opening balance.
const OPENING: i64 = 1_000;
/// Concurrent transfer workers.
const WORKERS: u64 = 16;
/// Concurrent readers.
const READERS: u64 = 4;

/// Arguments of `bank`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Args {
    /// Engine URLs to run on (repeatable). Default: etch and SQLite in temporary
    /// locations, PostgreSQL on the shared server (private schema) and on a private
    /// instance with faults.
    #[arg(long)]
    pub url: Vec<String>,
    /// Run only the default targets of this engine (`etch`, `sqlite`, `postgres`,
    /// `redis`, `tikv`); ignored with `--url`.
    #[arg(long)]
    pub only: Option<String>,
}

/// An account.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "torture_accounts")]
pub struct Account {
    /// Account number.
    #[pk]
    pub id: i64,
    /// Balance.
    pub balance: i64,
}

#[query_group]
impl Account {
    fn add(id: i64, by: i64) -> u64 {
        Self::filter(|a| a.id == id).update(|a| a.balance = a.balance + by)
    }
}

/// One transfer: its row is inserted in the transaction that moves the money.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "torture_transfers")]
pub struct Transfer {
    /// Unique transfer id (worker × 10⁹ + counter).
    #[pk]
    pub id: i64,
    /// Debited account.
    pub src: i64,
    /// Credited account.
    pub dst: i64,
    /// Amount moved.
    pub amount: i64,
}

/// What the final check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BankCheck {
    /// Acknowledged transfers without their row, or with a different row.
    pub lost: Vec<String>,
    /// Accounts whose balance differs from opening + the stored rows' effects.
    pub misapplied: Vec<String>,
}

/// Checks the final state: `acked` transfers must all be stored as acknowledged, and
/// each balance must equal its opening balance plus the effects of the stored
/// transfers (a transfer applied twice, or applied without its row, breaks it).
pub fn check_bank(
    opening: &BTreeMap<i64, i64>,
    balances: &BTreeMap<i64, i64>,
    rows: &[Transfer],
    acked: &[Transfer],
) -> BankCheck {
    let mut out = BankCheck::default();
    let stored: HashMap<i64, &Transfer> = rows.iter().map(|t| (t.id, t)).collect();
    for t in acked {
        match stored.get(&t.id) {
            None => out
                .lost
                .push(format!("transfer {} acknowledged, row missing", t.id)),
            Some(r) if *r != t => out.lost.push(format!(
                "transfer {} acknowledged as {t:?}, stored as {r:?}",
                t.id
            )),
            Some(_) => {}
        }
    }
    let mut expected = opening.clone();
    for t in rows {
        *expected.entry(t.src).or_default() -= t.amount;
        *expected.entry(t.dst).or_default() += t.amount;
    }
    for (id, want) in &expected {
        let got = balances.get(id).copied();
        if got != Some(*want) {
            out.misapplied.push(format!(
                "account {id}: balance {got:?}, expected {want} (opening + stored transfers)"
            ));
        }
    }
    for id in balances.keys().filter(|id| !expected.contains_key(id)) {
        out.misapplied
            .push(format!("account {id} should not exist"));
    }
    out
}

/// A target: the URL the workload uses, the URL the final check uses (bypassing the
/// proxy), and the faults to inject.
struct Target {
    label: String,
    url: String,
    check_url: String,
    faults: Option<Faults>,
    /// The in-process TiKV test cluster the target runs on, with its faults.
    tikv: Option<TikvCluster>,
    note: String,
}

struct Faults {
    server: PrivateServer,
    proxy: Proxy,
}

/// Starts a private server.
type StartServer = fn() -> anyhow::Result<PrivateServer>;

/// A private server instance the run may crash and restart.
enum PrivateServer {
    Pg(PrivatePg),
    Redis(PrivateRedis),
}

impl PrivateServer {
    fn port(&self) -> u16 {
        match self {
            PrivateServer::Pg(s) => s.port(),
            PrivateServer::Redis(s) => s.port(),
        }
    }

    /// pg: `pg_ctl -m immediate stop` + start; Redis: `kill -9` + start.
    fn crash_restart(&self) -> anyhow::Result<()> {
        match self {
            PrivateServer::Pg(s) => s.crash_restart(),
            PrivateServer::Redis(s) => s.crash_restart(),
        }
    }

    /// The engine URL of the server at `port` (the proxy's or its own).
    fn url(&self, port: u16) -> String {
        match self {
            PrivateServer::Pg(_) => format!(
                "postgres://postgres@127.0.0.1:{port}/postgres?pool_size=24&connect_timeout_ms=2000\
                 &wait_timeout_ms=10000"
            ),
            PrivateServer::Redis(_) => format!(
                "redis://127.0.0.1:{port}?namespace=bank&response_timeout_ms=2000\
                 &connect_timeout_ms=500"
            ),
        }
    }

    /// The bytes of a commit on the wire, for the proxy.
    fn commit_marker(&self) -> &'static [u8] {
        match self {
            PrivateServer::Pg(_) => crate::proxy::PG_COMMIT,
            PrivateServer::Redis(_) => crate::proxy::REDIS_COMMIT,
        }
    }
}

/// The target of a private `server` behind a connection-cutting proxy.
async fn fault_target(ctx: Ctx, label: &str, server: PrivateServer) -> anyhow::Result<Target> {
    let upstream = ([127, 0, 0, 1], server.port()).into();
    let rates = CutRates {
        chunk: ctx.pick(0.002, 0.001),
        commit: 0.02,
    };
    let proxy = Proxy::start(upstream, rates, ctx.seed, server.commit_marker()).await?;
    Ok(Target {
        label: label.to_owned(),
        url: server.url(proxy.addr().port()),
        check_url: server.url(server.port()),
        faults: Some(Faults { server, proxy }),
        tikv: None,
        note: String::new(),
    })
}

/// Runs `bank` on every URL of `args` (or the default engines).
///
/// # Errors
/// Only for failures to set up a temporary directory; broken invariants and
/// unreachable engines are reported in the [`Outcome`].
pub async fn run(ctx: Ctx, args: Args) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let tmp = tempfile::tempdir()?;
    let mut rng = ctx.rng(0xBA4C);
    let mut schemas = Vec::new();
    let mut namespaces = Vec::new();
    let mut targets = Vec::new();
    let want = |engine: &str| args.only.as_deref().is_none_or(|o| o == engine);
    if args.url.is_empty() {
        let etch = format!("etch://{}/bank-etch", tmp.path().display());
        let sqlite = format!("sqlite://{}/bank.db", tmp.path().display());
        for url in [etch, sqlite] {
            if !want(common::engine_of(&url)) {
                continue;
            }
            targets.push(Target {
                label: common::engine_of(&url).to_owned(),
                check_url: url.clone(),
                url,
                faults: None,
                tikv: None,
                note: String::new(),
            });
        }
        let shared = common::shared_pg_url();
        match common::pg_reachable(&shared).await {
            _ if !want("postgres") => {}
            Ok(()) => {
                let s = PgSchema::new(&shared, &mut rng);
                let url = s.url("pool_size=24");
                schemas.push(s);
                targets.push(Target {
                    label: "postgres (shared server)".into(),
                    check_url: url.clone(),
                    url,
                    faults: None,
                    tikv: None,
                    note: String::new(),
                });
            }
            Err(e) => out.figure(format!(
                "bank postgres (shared server): NOT RUN: cannot reach {} ({e})",
                datalayer::redact(&shared)
            )),
        }
        let redis = crate::redis::shared_url();
        match crate::redis::reachable(&redis).await {
            _ if !want("redis") => {}
            Ok(()) => {
                let ns = RedisNs::new(&redis, &mut rng);
                let url = ns.url("pool_size=8");
                namespaces.push(ns);
                targets.push(Target {
                    label: "redis (shared server)".into(),
                    check_url: url.clone(),
                    url,
                    faults: None,
                    tikv: None,
                    note: String::new(),
                });
            }
            Err(e) => out.figure(format!(
                "bank redis (shared server): NOT RUN: cannot reach {} ({e})",
                datalayer::redact(&redis)
            )),
        }
        let private: [(&str, StartServer); 2] = [
            ("postgres", || PrivatePg::start().map(PrivateServer::Pg)),
            ("redis", || PrivateRedis::start().map(PrivateServer::Redis)),
        ];
        for (engine, start) in private {
            if !want(engine) {
                continue;
            }
            let label = format!("{engine} (private instance, faults)");
            match start() {
                Ok(server) => targets.push(fault_target(ctx, &label, server).await?),
                Err(e) => out.figure(format!(
                    "bank {label}: NOT RUN: no private instance ({e:#}); the fault-free run \
                     above still ran"
                )),
            }
        }
        if want("tikv") {
            let cluster = TikvCluster::start().await?;
            let url = cluster.url();
            targets.push(Target {
                label: format!(
                    "tikv (in-process test cluster, 2 stores, {} regions at start, faults)",
                    cluster.regions()
                ),
                check_url: url.clone(),
                url,
                faults: None,
                tikv: Some(cluster),
                note: String::new(),
            });
        }
    } else {
        for url in &args.url {
            targets.push(Target {
                label: common::engine_of(url).to_owned(),
                url: url.clone(),
                check_url: url.clone(),
                faults: None,
                tikv: None,
                note: " (no faults: a given URL)".into(),
            });
        }
    }
    for (i, t) in targets.into_iter().enumerate() {
        eprintln!("-- bank {}", t.label);
        if let Err(e) = run_one(ctx, i as u64, &t, &mut out).await {
            out.fail(format!("bank {}: {e:#}", t.label));
        }
    }
    drop(schemas);
    drop(namespaces);
    Ok(out)
}

async fn open(url: &str) -> Result<Db> {
    datalayer::builder(url)
        .table::<Account>()
        .table::<Transfer>()
        .queries::<Account>()
        .connect()
        .await
}

/// Opens `url`, retrying while a restarting server refuses (up to 60 s).
async fn open_patiently(url: &str) -> anyhow::Result<Db> {
    let start = Instant::now();
    loop {
        match open(url).await {
            Ok(db) => return Ok(db),
            Err(_) if start.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

struct Shared {
    stop: AtomicBool,
    reads: AtomicU64,
    bad_reads: AtomicU64,
    first_bad: slot::Slot,
    first_error: slot::Slot,
    errors: AtomicU64,
    unknown: AtomicU64,
    unknown_applied: AtomicU64,
    acked: std::sync::Mutex<Vec<Transfer>>,
}

/// A slot keeping the first message written to it.
mod slot {
    /// Keeps the first message written.
    #[derive(Default)]
    pub struct Slot(std::sync::Mutex<Option<String>>);
    impl Slot {
        /// Keeps `s` if nothing was kept yet.
        pub fn set(&self, s: String) {
            let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if g.is_none() {
                *g = Some(s);
            }
        }
        /// What was kept.
        pub fn get(&self) -> Option<String> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }
}

async fn run_one(ctx: Ctx, n: u64, t: &Target, out: &mut Outcome) -> anyhow::Result<()> {
    let db = open_patiently(&t.url).await?;
    // Opening balances (created once; a re-run on a given URL starts from its state).
    let opening: BTreeMap<i64, i64> = {
        let existing = db.repo::<Account>().scan().all().await?;
        if existing.is_empty() {
            let accounts: Vec<Account> = (0..ACCOUNTS)
                .map(|id| Account {
                    id,
                    balance: OPENING,
                })
                .collect();
            seed(&db, &accounts).await?;
            accounts.into_iter().map(|a| (a.id, a.balance)).collect()
        } else {
            // Opening = current balances minus the effects of stored transfers.
            let rows = db.repo::<Transfer>().scan().all().await?;
            let mut m: BTreeMap<i64, i64> = existing.iter().map(|a| (a.id, a.balance)).collect();
            for r in &rows {
                *m.entry(r.src).or_default() += r.amount;
                *m.entry(r.dst).or_default() -= r.amount;
            }
            m
        }
    };
    let total: i64 = opening.values().sum();
    let cap = db.capability();
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        reads: AtomicU64::new(0),
        bad_reads: AtomicU64::new(0),
        first_bad: Default::default(),
        first_error: Default::default(),
        errors: AtomicU64::new(0),
        unknown: AtomicU64::new(0),
        unknown_applied: AtomicU64::new(0),
        acked: Default::default(),
    });
    // TiKV: long enough in quick mode for both bursts of commit faults to be spent.
    let duration = if t.tikv.is_some() {
        ctx.pick(Duration::from_secs(6), Duration::from_secs(60))
    } else {
        ctx.pick(Duration::from_secs(3), Duration::from_secs(60))
    };
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (db, shared) = (db.clone(), shared.clone());
        let rng = ctx.rng(n * 1000 + w);
        // Ids unique across runs on one URL: a time base plus the worker.
        let base = (common::clock_seed() / 1_000_000 % 1_000_000) as i64 * 1_000_000_000_000
            + w as i64 * 1_000_000_000;
        tasks.push(tokio::spawn(worker(db, shared, rng, base)));
    }
    for r in 0..READERS {
        let (db, shared) = (db.clone(), shared.clone());
        tasks.push(tokio::spawn(reader(db, shared, cap, total, r)));
    }
    let mut restarts = 0u64;
    let started = Instant::now();
    let tikv_stop = Arc::new(AtomicBool::new(false));
    let tikv_counts = Arc::new(FaultCounts::default());
    let tikv_faults = t.tikv.as_ref().map(|c| {
        tokio::spawn(crate::tikv::inject_faults(
            c.cluster.clone(),
            ctx.rng(n * 1000 + 999),
            Duration::from_millis(ctx.pick(100, 200)),
            b"r".to_vec(),
            tikv_stop.clone(),
            tikv_counts.clone(),
        ))
    });
    if let Some(f) = &t.faults {
        let count = ctx.pick(2, 6);
        let gap = duration / (count + 1);
        for _ in 0..count {
            tokio::time::sleep(gap).await;
            let server = &f.server;
            tokio::task::block_in_place(|| server.crash_restart())?;
            restarts += 1;
        }
    }
    if let Some(rest) = duration.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    shared.stop.store(true, Ordering::SeqCst);
    tikv_stop.store(true, Ordering::SeqCst);
    if let Some(task) = tikv_faults {
        task.await?;
    }
    for task in tasks {
        task.await?;
    }
    if let Some(f) = &t.faults {
        f.proxy.set_cutting(false);
    }
    let cuts = t.faults.as_ref().map_or(0, |f| f.proxy.stats.total_cuts());
    let faults = restarts + cuts + tikv_counts.total();
    let _ = db.close().await;
    drop(db);

    // The check reads directly (not through the proxy).
    let check = open_patiently(&t.check_url).await?;
    let balances: BTreeMap<i64, i64> = check
        .repo::<Account>()
        .scan()
        .all()
        .await?
        .into_iter()
        .map(|a| (a.id, a.balance))
        .collect();
    let rows = check.repo::<Transfer>().scan().all().await?;
    check.close().await?;
    let acked = std::mem::take(&mut *shared.acked.lock().unwrap_or_else(|e| e.into_inner()));
    let result = check_bank(&opening, &balances, &rows, &acked);
    let reads = shared.reads.load(Ordering::SeqCst);
    let bad = shared.bad_reads.load(Ordering::SeqCst);
    let fault_note = match &t.faults {
        Some(f) => format!(
            " ({restarts} crash restarts, {} connection cuts, {} after COMMIT, {} instead of COMMIT; \
             CommitUnknown resolved by the transfer row: {} applied, {} not applied and re-run; {} errors retried)",
            f.proxy.stats.cuts.load(Ordering::Relaxed),
            f.proxy.stats.commit_cuts_after.load(Ordering::Relaxed),
            f.proxy.stats.commit_cuts_before.load(Ordering::Relaxed),
            shared.unknown_applied.load(Ordering::Relaxed),
            shared.unknown.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed),
        ),
        None if t.tikv.is_some() => format!(
            " ({}; {} regions at the end; CommitUnknown resolved by the transfer row: {} applied, \
             {} not applied and re-run; {} errors retried)",
            tikv_counts.describe(),
            t.tikv.as_ref().map_or(0, TikvCluster::regions),
            shared.unknown_applied.load(Ordering::Relaxed),
            shared.unknown.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed),
        ),
        None => format!(
            "{} ({} errors retried)",
            t.note,
            shared.errors.load(Ordering::Relaxed)
        ),
    };
    if let Some(e) = shared.first_error.get() {
        eprintln!("   (first transfer error: {e})");
    }
    out.figure(format!(
        "bank {}: {} transfers, {faults} faults: total held in {} of {reads} reads, {} double-applied, {} lost{fault_note}",
        t.label,
        acked.len(),
        common::percent(reads - bad, reads),
        result.misapplied.len(),
        result.lost.len(),
    ));
    if bad > 0 {
        out.fail(format!(
            "bank {}: {bad} of {reads} reads saw a wrong total (first: {})",
            t.label,
            shared.first_bad.get().unwrap_or_default()
        ));
    }
    if reads == 0 {
        out.fail(format!("bank {}: no read succeeded", t.label));
    }
    if acked.is_empty() {
        out.fail(format!("bank {}: no transfer was acknowledged", t.label));
    }
    if t.tikv.is_some()
        && shared.unknown_applied.load(Ordering::Relaxed) + shared.unknown.load(Ordering::Relaxed)
            == 0
    {
        out.fail(format!(
            "bank {}: the bursts of commit faults provoked no CommitUnknown (the resolution \
             path was not exercised)",
            t.label
        ));
    }
    for l in result.lost.iter().chain(&result.misapplied).take(10) {
        out.fail(format!("bank {}: {l}", t.label));
    }
    Ok(())
}

/// The outcome of one attempt to apply a transfer.
enum Applied {
    /// Committed (acknowledged).
    Yes,
    /// The commit's outcome was unknown; the transfer's row shows it was applied.
    YesAfterUnknown,
    /// The commit's outcome was unknown; the row is absent, so it was not applied.
    No,
}

async fn worker(db: Db, shared: Arc<Shared>, mut rng: rand::rngs::StdRng, base: i64) {
    let mut k = 0i64;
    while !shared.stop.load(Ordering::Relaxed) {
        k += 1;
        let src = rng.random_range(0..ACCOUNTS);
        let dst = (src + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
        let t = Transfer {
            id: base + k,
            src,
            dst,
            amount: rng.random_range(1..=100),
        };
        // Until the transfer is known applied (acknowledged) or the run ends.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match transfer(&db, &t).await {
                Ok(a @ (Applied::Yes | Applied::YesAfterUnknown)) => {
                    if matches!(a, Applied::YesAfterUnknown) {
                        shared.unknown_applied.fetch_add(1, Ordering::Relaxed);
                    }
                    shared
                        .acked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(t.clone());
                    break;
                }
                Ok(Applied::No) => shared.unknown.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    shared.first_error.set(e.to_string());
                    shared.errors.fetch_add(1, Ordering::Relaxed)
                }
            };
            if shared.stop.load(Ordering::Relaxed) && attempts > 3 {
                break; // not acknowledged: whatever happened is checked by the rows
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Writes the opening balances in one transaction. The fault proxy may cut the
/// connection around its commit too: `CommitUnknown` is resolved by reading the
/// accounts back (all there: applied; none: written again), as a transfer's is.
async fn seed(db: &Db, accounts: &[Account]) -> Result<()> {
    let mut last = None;
    for _ in 0..20 {
        let rows = accounts.to_vec();
        let r = db
            .tx_with()
            .retry(20)
            .run(async move |tx| {
                tx.repo::<Account>().insert_many(&rows).await?;
                Ok(())
            })
            .await;
        match r {
            Ok(()) => return Ok(()),
            Err(e) if e.is_commit_unknown() || e.is_already_exists() || e.is_retryable() => {
                match db.repo::<Account>().count().await {
                    Ok(n) if n as usize == accounts.len() => return Ok(()),
                    Ok(0) | Err(_) => {}
                    Ok(n) => {
                        return Err(Error::invalid_input(format!(
                            "{n} of {} opening accounts after a failed commit: not atomic",
                            accounts.len()
                        )));
                    }
                }
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::invalid_input("seeding never ran")))
}

/// Runs the transfer under `retry`. `CommitUnknown` is resolved by reading the
/// transfer's row: present means applied; absent means the transfer is re-run with the
/// same id (the row's primary key makes a late first commit fail the re-run with
/// `AlreadyExists`, which also means applied).
async fn transfer(db: &Db, t: &Transfer) -> Result<Applied> {
    let row = t.clone();
    let r = db
        .tx_with()
        .retry(8)
        .run(async move |tx| {
            tx.repo::<Transfer>().insert(&row).await?;
            // In account order, so two opposite transfers cannot deadlock.
            let mut moves = [(row.src, -row.amount), (row.dst, row.amount)];
            moves.sort_unstable();
            for (id, by) in moves {
                let n = Account::add(tx, id, by).await?;
                if n != 1 {
                    return Err(Error::invalid_input(format!(
                        "account {id}: {n} rows updated"
                    )));
                }
            }
            Ok(())
        })
        .await;
    match r {
        Ok(()) => Ok(Applied::Yes),
        Err(e) if e.is_already_exists() => Ok(Applied::Yes),
        Err(e) if e.is_commit_unknown() => {
            // Resolve: read the row (retrying reads until one succeeds).
            for _ in 0..600 {
                match db.repo::<Transfer>().get(t.id).await {
                    Ok(Some(_)) => return Ok(Applied::YesAfterUnknown),
                    Ok(None) => return Ok(Applied::No),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

async fn reader(db: Db, shared: Arc<Shared>, cap: Capability, total: i64, r: u64) {
    // One statement reads every balance, so any isolation gives one snapshot; ask for
    // repeatable read and read-only where the engine declares them.
    let opts = TxOptions {
        read_only: cap.read_only_tx,
        isolation: cap
            .repeatable_read
            .then_some(datalayer::Isolation::RepeatableRead),
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let res: Result<i64> = async {
            let tx = db.begin_with(opts).await?;
            let accounts = tx.repo::<Account>().scan().all().await?;
            tx.rollback().await?;
            if accounts.len() as i64 != ACCOUNTS {
                return Err(Error::invalid_input(format!(
                    "{} accounts read",
                    accounts.len()
                )));
            }
            Ok(accounts.iter().map(|a| a.balance).sum())
        }
        .await;
        match res {
            Ok(sum) => {
                shared.reads.fetch_add(1, Ordering::Relaxed);
                if sum != total {
                    shared.bad_reads.fetch_add(1, Ordering::Relaxed);
                    shared
                        .first_bad
                        .set(format!("reader {r}: sum {sum}, expected {total}"));
                }
            }
            Err(e) if e.is_invalid_input() => {
                shared.reads.fetch_add(1, Ordering::Relaxed);
                shared.bad_reads.fetch_add(1, Ordering::Relaxed);
                shared.first_bad.set(format!("reader {r}: {e}"));
            }
            Err(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: i64, src: i64, dst: i64, amount: i64) -> Transfer {
        Transfer {
            id,
            src,
            dst,
            amount,
        }
    }

    fn opening() -> BTreeMap<i64, i64> {
        (0..3).map(|i| (i, 100)).collect()
    }

    #[test]
    fn a_consistent_bank_passes() {
        let rows = vec![t(1, 0, 1, 10), t(2, 1, 2, 5)];
        let balances = [(0, 90), (1, 105), (2, 105)].into_iter().collect();
        assert_eq!(
            check_bank(&opening(), &balances, &rows, &rows),
            BankCheck::default()
        );
    }

    #[test]
    fn a_doctored_balance_is_detected() {
        let rows = vec![t(1, 0, 1, 10)];
        // Applied twice: account 0 debited 20, account 1 credited 20.
        let balances = [(0, 80), (1, 120), (2, 100)].into_iter().collect();
        let c = check_bank(&opening(), &balances, &rows, &rows);
        assert_eq!(c.misapplied.len(), 2, "{c:?}");
        assert!(c.lost.is_empty());
    }

    #[test]
    fn a_lost_acknowledged_transfer_is_detected() {
        let acked = vec![t(1, 0, 1, 10), t(2, 1, 2, 5)];
        let rows = vec![t(1, 0, 1, 10), t(2, 1, 2, 6)];
        let balances = [(0, 90), (1, 104), (2, 106)].into_iter().collect();
        let c = check_bank(&opening(), &balances, &rows, &acked);
        assert_eq!(c.lost.len(), 1, "{c:?}");
        assert!(c.misapplied.is_empty(), "{c:?}");
        // Row 2 is gone but its effect stayed.
        let c = check_bank(&opening(), &balances, &rows[..1], &acked);
        assert_eq!(c.lost.len(), 1, "{c:?}");
        assert_eq!(
            c.misapplied.len(),
            2,
            "row 2 is gone but its effect stayed: {c:?}"
        );
    }
}
