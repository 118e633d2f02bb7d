//! Round trips per operation in the Redis and TiKV sections (`--round-trips`):
//! where the layer's time goes relative to the raw client, counted on the server.
//!
//! For every target of the section, in a fresh place with [`PROBE_ROWS`] preloaded
//! rows, each operation of the table runs [`PROBE_OPS`] times (the batch
//! [`PROBE_BATCHES`] times) while the server counts what arrives:
//! - Redis: a `MONITOR` connection records every command; the commands of the
//!   target's own connections (the client addresses that touched the place's
//!   namespace `{ns}` in that window; other clients of a shared server are left
//!   out) are counted as round trips, a `MULTI … EXEC` block as one. The commands
//!   that Redis Functions run server-side (`[0 lua]`) are counted apart.
//! - TiKV (in-process test cluster only): the cluster's per-RPC counters
//!   (`TestCluster::rpc_count`: `KvGet`, `KvBatchGet`, `KvScan`, `KvPrewrite`,
//!   `KvCommit`, ..), read 300 ms after each phase (the client commits secondary
//!   keys in the background). PD timestamp (TSO) requests are not counted: each
//!   transaction or snapshot takes one at its start, a committing one a second.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context;

use crate::report::{self, Record};
use crate::stats::Stat;
use crate::targets::{Scratch, Target, UsersTable};
use crate::workloads::{AGE_SPAN, User};

/// Rows preloaded in each probed place.
pub const PROBE_ROWS: usize = 1_000;
/// Operations per probed row (point reads, inserts, range scans).
pub const PROBE_OPS: usize = 20;
/// Batches of 1,000 point reads per probe.
pub const PROBE_BATCHES: usize = 3;
/// Point reads per batch.
const BATCH: usize = 1_000;
/// Pause before and after a counted TiKV phase.
#[cfg(feature = "tikv")]
const SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

/// Where the counts come from.
pub enum Counter<'a> {
    /// The Redis server (`MONITOR`).
    #[cfg(feature = "redis")]
    Redis(&'a crate::redis_server::RedisServer),
    /// The TiKV test cluster (RPC counters).
    #[cfg(feature = "tikv")]
    Tikv(&'a crate::tikv_cluster::TikvCluster),
}

/// What one operation cost one target.
#[derive(Debug, Clone)]
pub struct OpCount {
    /// The probed operation (a row of the section's table).
    pub op: &'static str,
    /// `--json` key of the operation.
    pub key: &'static str,
    /// Target name.
    pub target: String,
    /// Round trips (Redis) or TiKV RPCs per operation.
    pub per_op: f64,
    /// What they were, per operation: `GET 1, FCALL_RO dl_v1_validate 1`.
    pub detail: String,
}

/// The operations probed, in order: label, `--json` key, how many times.
const OPS: [(&str, &str, usize); 4] = [
    ("1 point read", "point_read", PROBE_OPS),
    ("2 insert 1 row + 2 idx", "insert_2idx", PROBE_OPS),
    ("3 age range ~100 rows", "range_scan", PROBE_OPS),
    ("4 batch of 1k point reads", "read_batch_1k", PROBE_BATCHES),
];

/// Runs `f` `n` times on `t` (operation `i` of `n` gets index `i`).
fn run_op(t: &dyn UsersTable, key: &str, n: usize) {
    match key {
        "point_read" => {
            for i in 0..n {
                let id = (i % PROBE_ROWS) as i64 + 1;
                assert_eq!(t.point_read(id), Some(User::synthetic(id)), "probe read");
            }
        }
        "insert_2idx" => {
            let first = PROBE_ROWS as i64 + 1;
            let rows: Vec<User> = (first..first + n as i64).map(User::synthetic).collect();
            t.commit_many(&rows);
        }
        "range_scan" => {
            // A window of a tenth of the ages holds about a tenth of the rows (~100).
            let w = AGE_SPAN / 10;
            for i in 0..n {
                let lo = (i as i32 * 17) % (AGE_SPAN - w);
                t.range_by_age(lo, lo + w - 1);
            }
        }
        _ => {
            let ids: Vec<i64> = (0..BATCH).map(|i| (i % PROBE_ROWS) as i64 + 1).collect();
            for _ in 0..n {
                let got = t.read_batch(&ids);
                assert_eq!(got.iter().flatten().count(), BATCH, "probe batch");
            }
        }
    }
}

/// Probes every target of `targets` (see the module doc).
///
/// # Errors
/// A place cannot be made or cleaned up, a target cannot open, or the counter
/// fails.
pub fn probe(
    counter: &Counter<'_>,
    scratch: &Scratch,
    targets: &[&dyn Target],
) -> anyhow::Result<Vec<OpCount>> {
    let rows: Vec<User> = (1..=PROBE_ROWS as i64).map(User::synthetic).collect();
    let mut out = Vec::new();
    for &target in targets {
        let place = scratch.place(target.name())?;
        let table = target
            .open(&place, &rows)
            .with_context(|| format!("{}: opening for the round-trip probe", target.name()))?;
        let ns = place.namespace()?;
        for (op, key, n) in OPS {
            let (total, detail) = match counter {
                #[cfg(feature = "redis")]
                Counter::Redis(server) => {
                    let mon = server.monitor()?;
                    run_op(table.as_ref(), key, n);
                    let lines = mon.stop();
                    redis_count(&lines, &ns)
                }
                #[cfg(feature = "tikv")]
                Counter::Tikv(cluster) => {
                    // The client commits secondary keys in the background: let the
                    // last phase's settle before counting, and this one's after.
                    std::thread::sleep(SETTLE);
                    let before = cluster
                        .rpc_counts()
                        .context("RPC counts need the in-process test cluster")?;
                    run_op(table.as_ref(), key, n);
                    std::thread::sleep(SETTLE);
                    let after = cluster.rpc_counts().context("RPC counts")?;
                    let mut per: BTreeMap<String, u64> = BTreeMap::new();
                    for ((name, a), (_, b)) in after.iter().zip(&before) {
                        if a > b {
                            per.insert(name.clone(), a - b);
                        }
                    }
                    (per.values().sum::<u64>(), per)
                }
            };
            let _ = &ns;
            let per_op = total as f64 / n as f64;
            let detail = detail
                .iter()
                .map(|(c, k)| format!("{c} {}", fmt_per(*k as f64 / n as f64)))
                .collect::<Vec<_>>()
                .join(", ");
            eprintln!(
                "  {:<16} {op:<26} {per_op:.2} per op ({detail})",
                target.name()
            );
            out.push(OpCount {
                op,
                key,
                target: target.name().to_owned(),
                per_op,
                detail,
            });
        }
        table.close();
        place.close()?;
    }
    Ok(out)
}

/// `1`, `2.5`, `0.33`.
fn fmt_per(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// Round trips of the clients that touched `{ns}` in `lines` (`MONITOR` output),
/// with a `MULTI … EXEC` block as one; the count per command (a Function call
/// with its function's name; commands run inside Functions as `lua: CMD`).
#[cfg(feature = "redis")]
fn redis_count(lines: &[String], ns: &str) -> (u64, BTreeMap<String, u64>) {
    let tag = format!("{{{ns}}}");
    // `<time> [<db> <addr>] "CMD" "arg" ..`
    let parse = |l: &str| -> Option<(String, String, String)> {
        let open = l.find('[')?;
        let close = l[open..].find(']')? + open;
        let who = l[open + 1..close].split_whitespace().nth(1)?.to_owned();
        let rest = l[close + 1..].trim();
        let mut args = rest.split("\" \"").map(|a| a.trim_matches('"'));
        let cmd = args.next()?.to_ascii_uppercase();
        let cmd = if cmd.starts_with("FCALL") {
            format!("{cmd} {}", args.next().unwrap_or(""))
        } else {
            cmd
        };
        Some((who, cmd, rest.to_owned()))
    };
    let parsed: Vec<(String, String, String)> = lines.iter().filter_map(|l| parse(l)).collect();
    let mine: std::collections::HashSet<&str> = parsed
        .iter()
        .filter(|(who, _, rest)| who != "lua" && rest.contains(&tag))
        .map(|(who, _, _)| who.as_str())
        .collect();
    let mut trips = 0u64;
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    let mut in_multi: BTreeMap<&str, bool> = BTreeMap::new();
    let mut last_was_mine = false;
    for (who, cmd, rest) in &parsed {
        if who == "lua" {
            // Commands a Function runs for the last client command.
            if last_was_mine && rest.contains(&tag) {
                *per.entry(format!("lua: {cmd}")).or_default() += 1;
            }
            continue;
        }
        last_was_mine = mine.contains(who.as_str());
        if !last_was_mine {
            continue;
        }
        let m = in_multi.entry(who.as_str()).or_default();
        match cmd.as_str() {
            "MULTI" => {
                *m = true;
                trips += 1;
                *per.entry("MULTI..EXEC".into()).or_default() += 1;
            }
            "EXEC" => *m = false,
            _ if *m => *per.entry(format!("(in MULTI) {cmd}")).or_default() += 1,
            _ => {
                trips += 1;
                *per.entry(cmd.clone()).or_default() += 1;
            }
        }
    }
    (trips, per)
}

/// The probe's table: one row per operation, per target its count per operation
/// and what it was. `unit` says what was counted.
pub fn table(unit: &str, counts: &[OpCount]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for c in counts {
        if !names.contains(&c.target.as_str()) {
            names.push(&c.target);
        }
    }
    let mut rows = vec![{
        let mut h = vec![format!("{unit} per op")];
        h.extend(names.iter().map(|n| n.to_string()));
        h
    }];
    for (op, _, _) in OPS {
        let mut row = vec![op.to_string()];
        for n in &names {
            row.push(
                counts
                    .iter()
                    .find(|c| c.op == op && c.target == *n)
                    .map_or_else(
                        || report::NONE.to_string(),
                        |c| format!("{} ({})", fmt_per(c.per_op), c.detail),
                    ),
            );
        }
        rows.push(row);
    }
    let mut out = report::render(&rows);
    let _ = writeln!(
        out,
        "({PROBE_OPS} point reads, inserts and range scans and {PROBE_BATCHES} batches per target, {PROBE_ROWS} rows preloaded)"
    );
    out
}

/// The `--json` records of the probe: `<section>/round_trips_<op>`, unit `unit`.
pub fn records(section: &str, unit: &str, counts: &[OpCount]) -> Vec<Record> {
    counts
        .iter()
        .map(|c| {
            Record::new(
                format!("{section}/round_trips_{}", c.key),
                &c.target,
                unit,
                Stat::single(c.per_op),
            )
        })
        .collect()
}
