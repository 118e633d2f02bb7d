//! `datalayer-torture`: the torture suite (issue 9). One subcommand per test; `all`
//! runs every test this machine can run. Each test ends with one line of figures per
//! engine, and the process exits non-zero if any invariant broke.
//!
//! Adding a test: one module, one [`Cmd`] variant, one arm in [`run`], and one entry
//! in [`ALL`].

mod bank;
mod cdc_order;
mod common;
mod etch_store;
mod kill;
mod outbox_chaos;
mod outbox_limits;
mod pg;
mod proxy;
mod redis;
mod tikv;

use clap::{Parser, Subcommand};
use common::{Ctx, Outcome};
use futures::future::BoxFuture;

/// The torture suite of datalayer: invariants under concurrency, crashes and faults.
#[derive(Parser, Debug)]
#[command(name = "datalayer-torture", version)]
struct Cli {
    /// Seconds-long runs (what CI runs); without it, each test runs for minutes.
    #[arg(long, global = true)]
    quick: bool,
    /// Seed of every random choice (default: from the clock; printed at start).
    #[arg(long, global = true)]
    seed: Option<u64>,
    /// The test to run.
    #[command(subcommand)]
    cmd: Cmd,
}

/// One subcommand per test.
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Jepsen-style bank: concurrent transfers under `retry`, readers check the total.
    Bank(bank::Args),
    /// kill -9 a writer child at random and check every acknowledged id survives.
    Kill(kill::Args),
    /// Change-feed order with concurrent writers, and no reuse after crash-restart.
    CdcOrder(cdc_order::Args),
    /// Outbox limits: a 15 MiB poison event, a 20 MiB handler error, an immediate
    /// event behind N scheduled ones (delivered within 1 s).
    OutboxLimits(outbox_limits::Args),
    /// Outbox consumers in worker processes under kill -9 at failpoints, SIGSTOP past
    /// the lease TTL and engine restarts.
    OutboxChaos(outbox_chaos::Args),
    /// etch: power loss at every sync point of seeded workloads, 8 damage variants.
    PowerLoss(etch_store::PowerLossArgs),
    /// etch: fail every I/O operation in turn (EIO, ENOSPC), then power loss.
    IoFaults(etch_store::IoFaultsArgs),
    /// etch: mutation fuzzing of WAL decoding, snapshot reading and recovery.
    Fuzz(etch_store::FuzzArgs),
    /// Every test this machine can run, with default arguments.
    All,
    /// The child process of `kill` (internal).
    #[command(hide = true)]
    KillChild(kill::ChildArgs),
    /// The child process of `cdc-order` (internal).
    #[command(hide = true)]
    CdcChild(cdc_order::ChildArgs),
    /// A worker process of `outbox-chaos` (internal).
    #[command(hide = true)]
    OutboxChaosChild(outbox_chaos::ChildArgs),
}

/// A test as `all` runs it: its name and its entry point with default arguments.
type Test = (
    &'static str,
    fn(Ctx) -> BoxFuture<'static, anyhow::Result<Outcome>>,
);

/// What `all` runs, in order.
const ALL: &[Test] = &[
    ("bank", |ctx| {
        Box::pin(bank::run(ctx, bank::Args::default()))
    }),
    ("kill", |ctx| {
        Box::pin(kill::run(ctx, kill::Args::default()))
    }),
    ("cdc-order", |ctx| {
        Box::pin(cdc_order::run(ctx, cdc_order::Args::default()))
    }),
    ("outbox-limits", |ctx| {
        Box::pin(outbox_limits::run(ctx, outbox_limits::Args::default()))
    }),
    ("outbox-chaos", |ctx| {
        Box::pin(outbox_chaos::run(ctx, outbox_chaos::Args::default()))
    }),
    ("power-loss", |ctx| {
        Box::pin(etch_store::power_loss(ctx, Default::default()))
    }),
    ("io-faults", |ctx| {
        Box::pin(etch_store::io_faults(ctx, Default::default()))
    }),
    ("fuzz", |ctx| {
        Box::pin(etch_store::fuzz(ctx, Default::default()))
    }),
];

async fn run(ctx: Ctx, cmd: Cmd) -> anyhow::Result<Outcome> {
    match cmd {
        Cmd::Bank(a) => bank::run(ctx, a).await,
        Cmd::Kill(a) => kill::run(ctx, a).await,
        Cmd::CdcOrder(a) => cdc_order::run(ctx, a).await,
        Cmd::OutboxLimits(a) => outbox_limits::run(ctx, a).await,
        Cmd::OutboxChaos(a) => outbox_chaos::run(ctx, a).await,
        Cmd::PowerLoss(a) => etch_store::power_loss(ctx, a).await,
        Cmd::IoFaults(a) => etch_store::io_faults(ctx, a).await,
        Cmd::Fuzz(a) => etch_store::fuzz(ctx, a).await,
        Cmd::KillChild(a) => kill::child(a).await.map(|()| Outcome::default()),
        Cmd::CdcChild(a) => cdc_order::child(a).await.map(|()| Outcome::default()),
        Cmd::OutboxChaosChild(a) => outbox_chaos::child(a).await.map(|()| Outcome::default()),
        Cmd::All => {
            let mut all = Outcome::default();
            for (name, test) in ALL {
                eprintln!("== {name}");
                match test(ctx).await {
                    Ok(o) => all.merge(o),
                    Err(e) => all.fail(format!("{name}: could not run: {e:#}")),
                }
            }
            Ok(all)
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let child = matches!(
        cli.cmd,
        Cmd::KillChild(_) | Cmd::CdcChild(_) | Cmd::OutboxChaosChild(_)
    );
    let seed = cli.seed.unwrap_or_else(common::clock_seed);
    let ctx = Ctx {
        quick: cli.quick,
        seed,
    };
    if !child {
        eprintln!(
            "datalayer-torture: seed {seed}{}",
            if cli.quick { " (quick)" } else { "" }
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = rt.block_on(run(ctx, cli.cmd));
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(outcome) => outcome.finish(child),
        Err(e) => {
            eprintln!("datalayer-torture: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
