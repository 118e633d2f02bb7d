//! `kill`: a child process writes rows and prints each id after its commit returned
//! `Ok`; the parent kills it with SIGKILL after 1–500 ms, reopens the store and checks
//! that it opens and that every printed id is stored with its content. On etch and
//! SQLite (the engines whose files a process owns).

use crate::common::{Ctx, Outcome, kill_child_after};
use datalayer::prelude::*;
use rand::Rng;
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

/// Arguments of `kill`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Args {
    /// Kills per engine (default: 10 with --quick, else 200).
    #[arg(long)]
    pub kills: Option<u64>,
}

/// Arguments of the hidden child.
#[derive(clap::Args, Debug, Clone)]
pub struct ChildArgs {
    /// The store.
    #[arg(long)]
    pub url: String,
    /// First id to write.
    #[arg(long)]
    pub base: i64,
}

/// A row the child writes.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "torture_kill")]
pub struct KillRow {
    /// Id printed after its commit.
    #[pk]
    pub id: i64,
    /// Content derived from the id (checked after reopening).
    pub payload: String,
}

fn payload_of(id: i64) -> String {
    format!("row {id} {}", "x".repeat((id % 97) as usize))
}

async fn open(url: &str) -> Result<Db> {
    datalayer::builder(url).table::<KillRow>().connect().await
}

/// The child: writes 1–3 rows per transaction and prints their ids once committed,
/// until it is killed.
///
/// # Errors
/// A failed open or write (the parent reports the child's exit as a failure).
pub async fn child(args: ChildArgs) -> anyhow::Result<()> {
    let db = open(&args.url).await?;
    let mut out = std::io::stdout().lock();
    let mut next = args.base;
    let mut rng = rand::rng();
    loop {
        let n = rng.random_range(1..=3);
        let ids: Vec<i64> = (next..next + n).collect();
        next += n;
        let rows: Vec<KillRow> = ids
            .iter()
            .map(|&id| KillRow {
                id,
                payload: payload_of(id),
            })
            .collect();
        db.tx(async |tx| tx.repo::<KillRow>().insert_many(&rows).await)
            .await?;
        for id in ids {
            writeln!(out, "{id}")?;
        }
        out.flush()?;
    }
}

/// What one engine's kill loop found.
#[derive(Debug, Default)]
struct Tally {
    kills: u64,
    acked: u64,
    lost: Vec<String>,
    refused: Vec<String>,
    child_failed: Vec<String>,
}

/// Runs `kill` on etch and SQLite.
///
/// # Errors
/// A failure to create a temporary directory or to spawn the child.
pub async fn run(ctx: Ctx, args: Args) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let kills = args.kills.unwrap_or(ctx.pick(10, 200));
    let tmp = tempfile::tempdir()?;
    let urls = [
        format!("etch://{}/kill-etch", tmp.path().display()),
        format!("sqlite://{}/kill.db", tmp.path().display()),
    ];
    for (e, url) in urls.iter().enumerate() {
        let engine = crate::common::engine_of(url);
        eprintln!("-- kill {engine}");
        let mut rng = ctx.rng(0x4B11 + e as u64);
        let mut tally = Tally::default();
        for round in 0..kills {
            kill_round(url, round, &mut rng, &mut tally).await?;
        }
        out.figure(format!(
            "kill {engine}: {} kills: {} lost, {} refused opens ({} acknowledged ids checked)",
            tally.kills,
            tally.lost.len(),
            tally.refused.len(),
            tally.acked
        ));
        let broken = tally.lost.iter().chain(&tally.refused);
        for l in broken.chain(&tally.child_failed).take(10) {
            out.fail(format!("kill {engine}: {l}"));
        }
        if tally.acked == 0 {
            out.fail(format!(
                "kill {engine}: no commit was acknowledged in {kills} rounds (the test checked nothing)"
            ));
        }
    }
    Ok(out)
}

async fn kill_round(
    url: &str,
    round: u64,
    rng: &mut impl Rng,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let base = (round as i64 * 10_000_000).to_string();
    let delay = rng.random_range(1..=500);
    let child = kill_child_after(
        &["kill-child", "--url", url, "--base", &base],
        Duration::from_millis(delay),
    )
    .await?;
    if let Some((st, err)) = child.early_exit {
        tally.child_failed.push(format!(
            "round {round}: the child exited on its own ({st}) before the kill: {err}"
        ));
        return Ok(());
    }
    let ids: Vec<i64> = child
        .lines
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    tally.kills += 1;
    tally.acked += ids.len() as u64;
    let db = match open(url).await {
        Ok(db) => db,
        Err(e) => {
            tally.refused.push(format!(
                "round {round}: reopening after kill -9 at {delay} ms failed: {e}"
            ));
            return Ok(());
        }
    };
    let got = db.repo::<KillRow>().get_many(ids.iter().copied()).await?;
    let stored: HashMap<i64, String> = got
        .into_iter()
        .flatten()
        .map(|r| (r.id, r.payload))
        .collect();
    for id in ids {
        match stored.get(&id) {
            None => tally.lost.push(format!(
                "round {round}: id {id} was acknowledged before kill -9 at {delay} ms and is missing"
            )),
            Some(p) if *p != payload_of(id) => tally.lost.push(format!(
                "round {round}: id {id} is stored with other content: {p:?}"
            )),
            Some(_) => {}
        }
    }
    db.close().await?;
    Ok(())
}
