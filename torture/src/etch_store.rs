//! `power-loss`, `io-faults` and `fuzz`: etch's storage under simulated power loss,
//! failing I/O and mutated files. The tests themselves live beside the store
//! (`datalayer_etch::storage::torture`, on its crash file system `CrashFs`), where
//! the crate's own tests run a few workloads of each; these subcommands run them at
//! scale and report the figures.

use crate::common::{Ctx, Outcome};
use datalayer_etch::storage::torture::{self, FuzzTarget};
use std::time::Duration;

/// Arguments of `power-loss`.
#[derive(clap::Args, Debug, Default)]
pub struct PowerLossArgs {
    /// Seeded workloads (default: 10 quick, 200 full).
    #[arg(long)]
    pub workloads: Option<u64>,
    /// Commits per workload (default: 16 quick, 24 full).
    #[arg(long)]
    pub commits: Option<u64>,
}

/// At every sync point of each workload, power loss with each of the 8 damage
/// variants; the store must open in the state of some commit `k`, acknowledged ≤ `k`
/// ≤ appended, and take a new commit that survives a restart.
///
/// # Errors
/// Only if the blocking task cannot run; broken invariants are in the outcome.
pub async fn power_loss(ctx: Ctx, a: PowerLossArgs) -> anyhow::Result<Outcome> {
    let workloads = a.workloads.unwrap_or(ctx.pick(10, 200));
    let commits = a.commits.unwrap_or(ctx.pick(16, 24));
    let seed = ctx.seed;
    let r =
        tokio::task::spawn_blocking(move || torture::power_loss(workloads, commits, seed)).await?;
    let mut out = Outcome::default();
    out.figure(format!("power-loss etch: {r}"));
    if !r.ok() {
        out.fail(format!("power-loss etch: {r}"));
        for f in &r.failures {
            out.fail(format!("power-loss etch: {f}"));
        }
    }
    Ok(out)
}

/// Arguments of `io-faults`.
#[derive(clap::Args, Debug, Default)]
pub struct IoFaultsArgs {
    /// Workloads, each with its checkpoint at another commit (default: 2 quick, 40
    /// full).
    #[arg(long)]
    pub workloads: Option<u64>,
    /// Commits per workload; every I/O operation of it is failed in turn (default: 10
    /// quick, 30 full).
    #[arg(long)]
    pub commits: Option<u64>,
}

/// Fail the N-th I/O operation, for every N, with EIO and ENOSPC; then a process
/// crash and a power loss.
///
/// # Errors
/// Only if the blocking task cannot run; broken invariants are in the outcome.
pub async fn io_faults(ctx: Ctx, a: IoFaultsArgs) -> anyhow::Result<Outcome> {
    let workloads = a.workloads.unwrap_or(ctx.pick(2, 40));
    let commits = a.commits.unwrap_or(ctx.pick(10, 30));
    let seed = ctx.seed;
    let r =
        tokio::task::spawn_blocking(move || torture::io_faults(workloads, commits, seed)).await?;
    let mut out = Outcome::default();
    out.figure(format!("io-faults etch: {r}"));
    if !r.ok() {
        out.fail(format!("io-faults etch: {r}"));
        for f in &r.failures {
            out.fail(format!("io-faults etch: {f}"));
        }
    }
    Ok(out)
}

/// Arguments of `fuzz`.
#[derive(clap::Args, Debug, Default)]
pub struct FuzzArgs {
    /// Seconds per target (default: 2 quick, 60 full).
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// Mutation fuzzing of WAL decoding, snapshot reading and recovery over a whole
/// directory, each for a bounded time; any panic breaks the run. (Coverage-guided
/// fuzzing of the same entry points: `fuzz/`, with `cargo fuzz` on nightly.)
///
/// # Errors
/// Only if the blocking task cannot run; panics found are in the outcome.
pub async fn fuzz(ctx: Ctx, a: FuzzArgs) -> anyhow::Result<Outcome> {
    let per_target = Duration::from_secs(a.seconds.unwrap_or(ctx.pick(2, 60)));
    let seed = ctx.seed;
    let mut out = Outcome::default();
    for target in FuzzTarget::ALL {
        let r = tokio::task::spawn_blocking(move || {
            // The store's own errors are expected; only panics matter, and each
            // caught one is reported below, not printed.
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let r = torture::fuzz(target, per_target, seed);
            std::panic::set_hook(hook);
            r
        })
        .await?;
        out.figure(format!(
            "fuzz etch {target:?}: {} runs in {}s ({} opened, {} refused): {} panics",
            r.runs,
            per_target.as_secs(),
            r.opened,
            r.refused,
            r.panics
        ));
        for input in &r.crashes {
            out.fail(format!("fuzz etch {target:?}: panic on input {input}"));
        }
        if r.panics > 0 && r.crashes.is_empty() {
            out.fail(format!("fuzz etch {target:?}: {} panics", r.panics));
        }
    }
    Ok(out)
}
