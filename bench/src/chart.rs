//! `--chart FILE.svg`: each datalayer figure of the run as its ratio to the best peer
//! on the same workload, one horizontal bar per (workload, datalayer target), drawn
//! with `plotters` (SVG backend; the viewer renders the text).
//!
//! A ratio above 1 means datalayer is ahead: throughput over the best peer's for a
//! `…/s` unit, the best peer's time over datalayer's for a time (`s`). A workload no
//! peer ran has no bar. Targets named `datalayer…` are datalayer; every other
//! target is a peer.

use crate::report::Record;
use anyhow::Context;
use plotters::prelude::*;
use std::path::Path;

/// One bar: `<workload> <target>` and its ratio to the best peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    /// `<section>/<workload> <datalayer target>`.
    pub label: String,
    /// > 1: datalayer ahead of the best peer.
    pub ratio: f64,
}

fn is_datalayer(target: &str) -> bool {
    target.starts_with("datalayer")
}

/// The standing of every datalayer record that has a peer on its workload, in the
/// records' order (setup times left out).
pub fn standings(records: &[Record]) -> Vec<Standing> {
    let mut out = Vec::new();
    for r in records {
        if !is_datalayer(&r.target) || r.workload.ends_with("/setup") || r.median <= 0.0 {
            continue;
        }
        let time = r.unit == "s";
        let peers = records.iter().filter(|p| {
            p.workload == r.workload
                && p.unit == r.unit
                && !is_datalayer(&p.target)
                && p.median > 0.0
        });
        let best = if time {
            peers.map(|p| p.median).reduce(f64::min)
        } else {
            peers.map(|p| p.median).reduce(f64::max)
        };
        if let Some(best) = best {
            out.push(Standing {
                label: format!("{} {}", r.workload, r.target),
                ratio: if time {
                    best / r.median
                } else {
                    r.median / best
                },
            });
        }
    }
    out
}

/// Draws the standings of `records` into the SVG file at `path`, with `caption`
/// (the machine and run) as the title.
///
/// # Errors
/// No datalayer figure has a peer; the file cannot be written.
pub fn write(path: &Path, records: &[Record], caption: &str) -> anyhow::Result<()> {
    let rows = standings(records);
    anyhow::ensure!(
        !rows.is_empty(),
        "--chart: no datalayer figure has a peer figure on its workload in this run"
    );
    let n = rows.len();
    let height = 120 + 26 * n as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    // A log axis: 0.25x and 4x sit as far from parity.
    let hi = rows.iter().map(|r| r.ratio).fold(1.0f64, f64::max) * 1.3;
    let lo = rows.iter().map(|r| r.ratio).fold(1.0f64, f64::min) / 1.3;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(420)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => rows.get(*i).map_or_else(String::new, |r| r.label.clone()),
            _ => String::new(),
        })
        .x_desc("ratio to the best peer (> 1: datalayer ahead; log scale)")
        .x_label_formatter(&|x| format!("{x:.2}x"))
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
        let color = if r.ratio >= 1.0 { GREEN } else { RED };
        let (a, b) = if r.ratio >= 1.0 {
            (1.0, r.ratio)
        } else {
            (r.ratio, 1.0)
        };
        let mut bar = Rectangle::new(
            [(a, SegmentValue::Exact(i)), (b, SegmentValue::Exact(i + 1))],
            color.mix(0.6).filled(),
        );
        bar.set_margin(3, 3, 0, 0);
        bar
    }))?;
    chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
        Text::new(
            format!("{:.2}x", r.ratio),
            (r.ratio.max(1.0) * 1.02, SegmentValue::CenterOf(i)),
            ("sans-serif", 13),
        )
    }))?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
        BLACK.stroke_width(1),
    )))?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(workload: &str, target: &str, unit: &str, median: f64) -> Record {
        Record {
            workload: workload.into(),
            target: target.into(),
            unit: unit.into(),
            median,
            mad: 0.0,
            min: median,
            max: median,
        }
    }

    #[test]
    fn ratios_are_to_the_best_peer_in_the_units_direction() {
        let records = vec![
            rec("embedded/point_read", "datalayer-etch", "reads/s", 300.0),
            rec("embedded/point_read", "etchdb", "reads/s", 600.0),
            rec("embedded/point_read", "redb", "reads/s", 200.0),
            rec("embedded/flights_load", "datalayer-etch", "s", 2.0),
            rec("embedded/flights_load", "rusqlite", "s", 3.0),
            rec("embedded/setup", "datalayer-etch", "s", 1.0),
            rec("embedded/setup", "etchdb", "s", 1.0),
            rec("embedded/commit_1w", "datalayer-etch", "commits/s", 10.0),
        ];
        let s = standings(&records);
        assert_eq!(
            s,
            vec![
                Standing {
                    label: "embedded/point_read datalayer-etch".into(),
                    ratio: 0.5
                },
                Standing {
                    label: "embedded/flights_load datalayer-etch".into(),
                    ratio: 1.5
                },
            ]
        );
    }

    #[test]
    fn the_chart_is_an_svg_with_every_bar() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let records = vec![
            rec("embedded/point_read", "datalayer-etch", "reads/s", 300.0),
            rec("embedded/point_read", "etchdb", "reads/s", 600.0),
        ];
        write(&path, &records, "test run").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("embedded/point_read datalayer-etch"));
        assert!(svg.contains("0.50x"));
        let err = write(&path, &records[1..], "none").unwrap_err();
        assert!(err.to_string().contains("no datalayer figure"), "{err}");
    }
}
