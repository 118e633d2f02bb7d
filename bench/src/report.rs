//! Everything the benchmark prints or writes: the plain-text tables with their
//! ratio rows and the aims (printed as "met" / "NOT met"; nothing fails
//! on them), and the `--json` records.
//!
//! A cell of a workload a target does not support shows "—".

use std::fmt::Write as _;

use serde::Serialize;

use crate::outbox::{
    AIM_EVENTS_PER_S, CONSUMER_CONCURRENCY, EMITS_PER_TX, GROUP, OutboxResult, PARTITIONS,
    PLAIN_QUEUE, POLL_INTERVAL,
};
use crate::stats::Stat;
use crate::workloads::{ChangesResult, FlightsResult, TargetResults, Workload};

/// A cell (or ratio) of a workload that a target does not run.
pub const NONE: &str = "—";

/// The aims, as time ratios: point read through datalayer-sqlite vs raw
/// rusqlite, and inserts with change capture vs without on every datalayer engine.
pub const AIM_TIME_RATIO: f64 = 1.3;

/// Aim: a point read through datalayer-pg takes at most this factor of raw
/// tokio-postgres's time.
#[cfg(feature = "pg")]
pub const AIM_POINT_READ_TIME: f64 = 1.1;

/// Aim: datalayer-pg's batched inserts reach at least this factor of its
/// sequential inserts' throughput.
#[cfg(feature = "pg")]
pub const AIM_BATCH_GAIN: f64 = 1.5;

/// The rows of the default (embedded) table, in print order, with their labels.
pub const EMBEDDED_ROWS: [(Workload, &str); 5] = [
    (Workload::PointRead, "1 point read           reads/s"),
    (Workload::Commit1, "2 durable commit, 1w   commits/s"),
    (Workload::Commit8, "3 durable commit, 8w   commits/s"),
    (Workload::Batch, "4 batch 1k rows, 1 tx  rows/s"),
    (Workload::RangeScan, "5 age range ~100 rows  scans/s"),
];

/// The rows of the PostgreSQL table, in print order, with their labels.
#[cfg(feature = "pg")]
pub const PG_ROWS: [(Workload, &str); 5] = [
    (Workload::PointRead, "1 point read by pk           reads/s"),
    (
        Workload::InsertSequential,
        "2 1k inserts, sequential, 1 tx rows/s",
    ),
    (
        Workload::InsertBatched,
        "3 1k inserts, batched, 1 tx   rows/s",
    ),
    (Workload::Batch, "4 insert_many 1k rows        rows/s"),
    (Workload::Copy, "4' COPY BINARY 1k rows       rows/s"),
];

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

/// `"1.23k ±4%"`: a median with its relative MAD.
pub fn cell(s: &Stat) -> String {
    format!("{} ±{:.0}%", human(s.median), s.spread() * 100.0)
}

/// `a / b` as `"1.23x"`, or [`NONE`] when either is missing or `b` is 0.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => NONE.into(),
    }
}

/// "met" / "NOT met".
fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// `"aim <= 1.3x: met"`.
fn against_aim(time_ratio: f64) -> String {
    format!(
        "aim <= {AIM_TIME_RATIO}x: {}",
        verdict(time_ratio <= AIM_TIME_RATIO)
    )
}

/// Render rows of cells with the first column left-aligned and the rest
/// right-aligned, a separator under the header.
pub fn render(rows: &[Vec<String>]) -> String {
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

/// The figure cells of one row: each target's median ± MAD, or [`NONE`].
fn figure_cells(results: &[TargetResults], w: Workload) -> Vec<String> {
    results
        .iter()
        .map(|r| r.get(w).map_or_else(|| NONE.into(), |s| cell(&s)))
        .collect()
}

/// The default side-by-side table: one row per workload of [`EMBEDDED_ROWS`], one
/// column per target (median ± MAD), then the ratio of the first target to each
/// of the others (> 1 means the first is faster), the group-commit gain and the
/// setup times.
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

    for (w, label) in EMBEDDED_ROWS {
        if results.iter().all(|r| r.get(w).is_none()) {
            continue;
        }
        let mut row = vec![label.to_string()];
        row.extend(figure_cells(results, w));
        let a = base.get(w).map(|s| s.median);
        row.extend(
            results[1..]
                .iter()
                .map(|r| ratio(a, r.get(w).map(|s| s.median))),
        );
        rows.push(row);
    }

    // Group commit: how much 8 writers gain over 1 on the same store.
    let gc: Vec<String> = results
        .iter()
        .map(|r| {
            ratio(
                r.get(Workload::Commit8).map(|s| s.median),
                r.get(Workload::Commit1).map(|s| s.median),
            )
        })
        .collect();
    if gc.iter().any(|g| g != NONE) {
        let mut row = vec!["  group commit = 3 / 2".to_string()];
        row.extend(gc);
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

/// The flights load: rows/s and total seconds per target.
pub fn flights_table(results: &[FlightsResult]) -> String {
    let mut rows = vec![vec![
        "6 load nycflights13 flights, 1 tx".to_string(),
        "rows".into(),
        "rows/s".into(),
        "total s".into(),
    ]];
    for r in results {
        rows.push(vec![
            r.name.clone(),
            r.rows.to_string(),
            human(r.stat().median),
            format!("{:.2}", r.elapsed.as_secs_f64()),
        ]);
    }
    render(&rows)
}

/// The insert with change capture vs without: per target, rows/s without and
/// with, the time ratio with/without and (on every datalayer row) the aim; then
/// how datalayer-sqlite's overhead compares with each other target's (its ratio /
/// theirs).
pub fn changes_table(results: &[ChangesResult]) -> String {
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
        let (label, aim) = match r.name.as_str() {
            "rusqlite" => ("rusqlite + hand-written trigger".to_string(), String::new()),
            "rusqlite-on-dl-schema" => (
                "rusqlite on datalayer's tables + triggers".to_string(),
                String::new(),
            ),
            name => (format!("{name} + enable_changes"), against_aim(o)),
        };
        rows.push(vec![
            label,
            cell(&r.without),
            cell(&r.with),
            format!("{o:.2}x"),
            aim,
        ]);
    }
    let base = results
        .iter()
        .find(|r| r.name == "datalayer-sqlite")
        .or(results.first());
    if let Some(base) = base {
        for r in results.iter().filter(|r| r.name != base.name) {
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
/// factor longer). Empty when there is no such row.
pub fn pair_table(
    layer: &str,
    raw: &str,
    results: &[TargetResults],
    flights: &[FlightsResult],
    changes: &[ChangesResult],
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
        for (w, label) in EMBEDDED_ROWS {
            if let (Some(a), Some(b)) = (l.get(w), r.get(w)) {
                let t = b.median / a.median;
                rows.push(vec![
                    label.to_string(),
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
            human(a.stat().median),
            human(b.stat().median),
            format!(
                "{:.2}x",
                a.elapsed.as_secs_f64() / b.elapsed.as_secs_f64().max(1e-9)
            ),
            String::new(),
        ]);
    }
    let cl = changes.iter().find(|c| c.name == layer);
    let cr = changes.iter().find(|c| c.name == raw);
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

/// The outbox table: one line per target, then the ratio datalayer-pg / plain
/// queue (when both ran) and datalayer-etch against the aim.
pub fn outbox_table(results: &[OutboxResult]) -> String {
    let mut s = String::new();
    let n = results.first().map_or(0, |r| r.events);
    let _ = writeln!(
        s,
        "Outbox end to end: {n} events, {EMITS_PER_TX} emits per tx, {PARTITIONS} partitions, consumer group {GROUP:?} concurrency {CONSUMER_CONCURRENCY}, poll {} ms",
        POLL_INTERVAL.as_millis()
    );
    let _ = writeln!(
        s,
        "{:<28} {:>16} {:>18} {:>10} {:>10}",
        "target", "produced ev/s", "end-to-end ev/s", "produce s", "e2e s"
    );
    for r in results {
        let _ = writeln!(
            s,
            "{:<28} {:>16.0} {:>18.0} {:>10.2} {:>10.2}",
            r.name,
            r.produced_per_s(),
            r.end_to_end_per_s(),
            r.produce.as_secs_f64(),
            r.end_to_end.as_secs_f64()
        );
    }
    let find = |name: &str| results.iter().find(|r| r.name == name);
    if let (Some(dl), Some(q)) = (find("datalayer-pg"), find(PLAIN_QUEUE)) {
        let _ = writeln!(
            s,
            "datalayer-pg / plain queue: produced {:.2}x, end to end {:.2}x (> 1 = datalayer-pg is faster)",
            dl.produced_per_s() / q.produced_per_s(),
            dl.end_to_end_per_s() / q.end_to_end_per_s()
        );
    }
    if let Some(e) = find("datalayer-etch") {
        let _ = writeln!(
            s,
            "datalayer-etch vs the {:.0} events/s aim: produced {:.0}/s {}, end to end {:.0}/s {}",
            AIM_EVENTS_PER_S,
            e.produced_per_s(),
            verdict(e.produced_per_s() >= AIM_EVENTS_PER_S),
            e.end_to_end_per_s(),
            verdict(e.end_to_end_per_s() >= AIM_EVENTS_PER_S)
        );
    }
    s
}

/// The PostgreSQL section's layer, by target name.
#[cfg(feature = "pg")]
const PG_LAYER: &str = "datalayer-pg";
/// The PostgreSQL section's raw driver, by target name.
#[cfg(feature = "pg")]
const PG_RAW: &str = "tokio-postgres";
/// The PostgreSQL section's peers, by target name.
#[cfg(feature = "pg")]
const PG_PEERS: [&str; 2] = ["sqlx", "SeaORM"];

/// What each target ran on each row of the PostgreSQL table (printed under it).
#[cfg(feature = "pg")]
const PG_LEGEND: &str = "\
what each cell ran (every target in its own schema, the same table and index, prepared statements):
  1  datalayer-pg: DlUser::by_id(&db, id) (#[query_group]); tokio-postgres: query_opt(&prepared, &[&id]);
     sqlx: query_as(..).bind(id).fetch_optional(&pool); SeaORM: Entity::find_by_id(id).one(&db)
  2  one tx, each INSERT awaited before the next. datalayer-pg: db.tx + tx.repo().insert(row) per row
     (the engine pipelines its per-op savepoint with it: 3 statements, 1 round trip);
     tokio-postgres: BEGIN, execute(&prepared, ..) per row, COMMIT; sqlx: pool.begin(), query(..).execute(&mut *tx);
     SeaORM: db.begin(), Entity::insert(am).exec_without_returning(&txn)
  3  one tx, batched. datalayer-pg: db.tx + tx.repo().insert_many(rows) (the DSL has no INSERT, so no *_stmt
     to stage in a Batch; on a Tx this is the engine's pipelined batch path, <= pipeline_depth 32 in flight);
     tokio-postgres: try_join_all of M execute(&prepared, ..) futures (all M in flight);
     sqlx (no pipelining): ONE multi-row INSERT .. VALUES of M rows via QueryBuilder::push_values;
     SeaORM (no pipelining): ONE Entity::insert_many(..).exec_without_returning(&txn) (multi-row VALUES)
  4  one call. datalayer-pg: db.repo().insert_many(rows) (engine-opened tx, pipelined, <= 32 in flight);
     tokio-postgres: BEGIN, the same prepared INSERTs, <= pipeline_depth in flight, scheduled as the engine does, COMMIT;
     sqlx: ONE INSERT .. SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int4[]), autocommit;
     SeaORM: Entity::insert_many(..).exec_without_returning(&db), autocommit
  4' tokio-postgres only: COPY users FROM STDIN BINARY (BinaryCopyInWriter) in one tx: the bulk-insert ceiling
";

/// The PostgreSQL table: one row per workload of [`PG_ROWS`], one column per
/// target (median ± MAD), the time ratio datalayer-pg/tokio-postgres, the
/// throughput ratios of datalayer-pg to sqlx and SeaORM; then batched/sequential
/// per target, the setup times, the server's durability settings, the aims as met
/// / NOT met, and what each cell ran. `title` names the server and sizes.
#[cfg(feature = "pg")]
pub fn pg_table(title: &str, durability: &str, results: &[TargetResults]) -> String {
    let find = |n: &str| results.iter().find(|r| r.name == n);
    let layer = find(PG_LAYER);
    let raw = find(PG_RAW);
    let mut header = vec![title.to_string()];
    header.extend(results.iter().map(|r| r.name.clone()));
    header.push(format!("time {PG_LAYER}/{PG_RAW}"));
    header.extend(PG_PEERS.iter().map(|p| format!("{PG_LAYER}/{p}")));
    let mut rows = vec![header];

    let mut behind: Vec<String> = Vec::new();
    for (w, label) in PG_ROWS {
        if results.iter().all(|r| r.get(w).is_none()) {
            continue;
        }
        let mut row = vec![label.to_string()];
        row.extend(figure_cells(results, w));
        let l = layer.and_then(|r| r.get(w)).map(|s| s.median);
        row.push(ratio(raw.and_then(|r| r.get(w)).map(|s| s.median), l));
        for p in PG_PEERS {
            let b = find(p).and_then(|r| r.get(w)).map(|s| s.median);
            if let (Some(a), Some(b)) = (l, b)
                && a < b
            {
                behind.push(format!("row {} vs {p} ({:.2}x)", label[..2].trim(), a / b));
            }
            row.push(ratio(l, b));
        }
        rows.push(row);
    }

    let gain = |r: &TargetResults| {
        ratio(
            r.get(Workload::InsertBatched).map(|s| s.median),
            r.get(Workload::InsertSequential).map(|s| s.median),
        )
    };
    let mut row = vec!["  batched / sequential = 3 / 2".to_string()];
    row.extend(results.iter().map(gain));
    row.extend(std::iter::repeat_n(String::new(), 1 + PG_PEERS.len()));
    rows.push(row);
    let mut setup = vec!["  (setup: connect, create, preload N, s)".to_string()];
    setup.extend(
        results
            .iter()
            .map(|r| format!("{:.2}", r.setup.as_secs_f64())),
    );
    setup.extend(std::iter::repeat_n(String::new(), 1 + PG_PEERS.len()));
    rows.push(setup);

    let mut out = render(&rows);
    let _ = writeln!(out, "server: {durability}");
    out.push_str("aims (benchmark, not tests):\n");
    match (
        layer.and_then(|r| r.get(Workload::PointRead)),
        raw.and_then(|r| r.get(Workload::PointRead)),
    ) {
        (Some(a), Some(b)) => {
            let t = b.median / a.median;
            let _ = writeln!(
                out,
                "  point read through datalayer <= {AIM_POINT_READ_TIME}x the time of raw tokio-postgres: {t:.2}x, {}",
                verdict(t <= AIM_POINT_READ_TIME)
            );
        }
        _ => out.push_str("  point read vs raw: not measured\n"),
    }
    for r in results
        .iter()
        .filter(|r| r.name == PG_LAYER || r.name == PG_RAW)
    {
        if let (Some(b), Some(s)) = (
            r.get(Workload::InsertBatched),
            r.get(Workload::InsertSequential),
        ) {
            let g = b.median / s.median;
            let aim = if r.name == PG_LAYER {
                format!(
                    " (aim >= {AIM_BATCH_GAIN}x: {})",
                    verdict(g >= AIM_BATCH_GAIN)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  batched / sequential throughput, {}: {g:.2}x{aim}",
                r.name
            );
        }
    }
    let _ = writeln!(
        out,
        "  datalayer ahead of sqlx and SeaORM on every row: {}{}",
        verdict(behind.is_empty()),
        if behind.is_empty() {
            String::new()
        } else {
            format!(" (behind on {})", behind.join(", "))
        }
    );
    out.push_str(PG_LEGEND);
    out
}

/// The rows of the Redis and TiKV tables, in print order, with their labels and
/// the aim on the time ratio layer/raw (`None`: no aim on that ratio).
#[cfg(any(feature = "redis", feature = "tikv"))]
pub const KV_ROWS: [(Workload, &str, Option<f64>); 4] = [
    (
        Workload::PointRead,
        "1 point read by pk            reads/s",
        Some(1.2),
    ),
    (
        Workload::Insert2Idx,
        "2 insert 1 row + 2 idx, 1 tx  commits/s",
        Some(1.5),
    ),
    (
        Workload::RangeScan,
        "3 age range ~100 rows (idx)   scans/s",
        Some(1.3),
    ),
    (
        Workload::ReadBatch,
        "4 point reads, 1k per batch   reads/s",
        None,
    ),
];

/// Aim: a `Batch` of 1,000 point reads through datalayer reaches at least this
/// factor of the throughput of 1,000 sequential point reads (row 4 / row 1).
#[cfg(any(feature = "redis", feature = "tikv"))]
pub const AIM_READ_BATCH_GAIN: f64 = 10.0;

/// What each target ran on each row of the Redis table (printed under it).
#[cfg(feature = "redis")]
pub const REDIS_LEGEND: &str = "\
what each cell ran (each target in its own namespace {dlbench_<run>_<target>_<n>}, one Redis server,
table users2(id pk, name, email, age) with indexes on age and on email; N rows preloaded):
  1  datalayer-redis: DlUser2::by_id(&db, id) (#[query_group]); redis-rs: one GET of the row key, decoded
  2  one row per transaction, 1 writer. datalayer-redis: db.repo().insert(row);
     redis-rs: one MULTI of SET row + ZADD age-index + ZADD email-index (score 0, order-preserving bytes), EXEC
  3  ~100 rows by age. datalayer-redis: db.repo().find(\"by_age\").range(lo..=hi).all();
     redis-rs: ZRANGE {ns}:ia [lo (hi+1 BYLEX LIMIT 0 1000, then one MGET of the rows
  4  datalayer-redis: one Batch of 1,000 DlUser2::by_id_stmt(id), batch.run(&db);
     redis-rs: one MGET of the 1,000 row keys
";

/// What each target ran on each row of the TiKV table (printed under it).
#[cfg(feature = "tikv")]
pub const TIKV_LEGEND: &str = "\
what each cell ran (each target in its own namespace dlbench_<run>_<target>_<n> (key prefix ns\\0), regions split at
ns\\0i and ns\\0r so index entries and rows live in different regions; table users2 with indexes on age and email):
  1  datalayer-tikv: DlUser2::by_id(&db, id) (#[query_group]);
     tikv-client: snapshot at current_timestamp() (TSO), one get of the row key
  2  one row per transaction, 1 writer. datalayer-tikv: db.repo().insert(row) (optimistic transaction);
     tikv-client: begin_with_options(optimistic), put row + 2 index keys, commit (2PC)
  3  ~100 rows by age. datalayer-tikv: db.repo().find(\"by_age\").range(lo..=hi).all();
     tikv-client: snapshot, scan of the age index (limit 1000), one batch_get of the rows
  4  datalayer-tikv: one Batch of 1,000 DlUser2::by_id_stmt(id), batch.run(&db);
     tikv-client: snapshot, one batch_get of the 1,000 row keys
";

/// A Redis or TiKV section's table: `layer` (datalayer) next to `raw` (the raw
/// client doing the same work by hand) on every row of [`KV_ROWS`], median ± MAD,
/// the time ratio layer/raw with its aim as "met" / "NOT met", the batched /
/// sequential throughput of each, the setup times; then `info` (the server and
/// its durability), the aims in words and `legend` (what each cell ran). `title`
/// names the section and sizes.
#[cfg(any(feature = "redis", feature = "tikv"))]
pub fn kv_table(
    title: &str,
    info: &str,
    layer: &str,
    raw: &str,
    results: &[TargetResults],
    legend: &str,
) -> String {
    let find = |n: &str| results.iter().find(|r| r.name == n);
    let (l, r) = (find(layer), find(raw));
    let get = |t: Option<&TargetResults>, w| t.and_then(|t| t.get(w));
    let mut rows = vec![vec![
        title.to_string(),
        layer.to_string(),
        raw.to_string(),
        format!("time {layer}/{raw}"),
        "aim".to_string(),
    ]];
    let mut verdicts = Vec::new();
    for (w, label, aim) in KV_ROWS {
        let (a, b) = (get(l, w), get(r, w));
        if a.is_none() && b.is_none() {
            continue;
        }
        let cellof = |s: Option<Stat>| s.map_or_else(|| NONE.to_string(), |s| cell(&s));
        let t = match (a, b) {
            (Some(a), Some(b)) if a.median > 0.0 => Some(b.median / a.median),
            _ => None,
        };
        let aim_cell = match (aim, t) {
            (Some(x), Some(t)) => {
                verdicts.push(format!(
                    "  {}: {layer} takes {t:.2}x the time of {raw} (aim <= {x}x): {}",
                    label[2..].split("  ").next().unwrap_or(label).trim(),
                    verdict(t <= x)
                ));
                format!("<= {x}x: {}", verdict(t <= x))
            }
            (Some(x), None) => format!("<= {x}x: not measured"),
            (None, _) => String::new(),
        };
        rows.push(vec![
            label.to_string(),
            cellof(a),
            cellof(b),
            t.map_or_else(|| NONE.to_string(), |t| format!("{t:.2}x")),
            aim_cell,
        ]);
    }
    let gain = |t: Option<&TargetResults>| {
        ratio(
            get(t, Workload::ReadBatch).map(|s| s.median),
            get(t, Workload::PointRead).map(|s| s.median),
        )
    };
    let layer_gain = match (get(l, Workload::ReadBatch), get(l, Workload::PointRead)) {
        (Some(b), Some(s)) if s.median > 0.0 => Some(b.median / s.median),
        _ => None,
    };
    rows.push(vec![
        "  batched / sequential = 4 / 1 (throughput)".to_string(),
        gain(l),
        gain(r),
        String::new(),
        layer_gain.map_or_else(String::new, |g| {
            format!(
                ">= {AIM_READ_BATCH_GAIN}x: {}",
                verdict(g >= AIM_READ_BATCH_GAIN)
            )
        }),
    ]);
    rows.push(vec![
        "  (setup: connect, preload N, s)".to_string(),
        l.map_or_else(String::new, |t| format!("{:.2}", t.setup.as_secs_f64())),
        r.map_or_else(String::new, |t| format!("{:.2}", t.setup.as_secs_f64())),
        String::new(),
        String::new(),
    ]);
    let mut out = render(&rows);
    let _ = writeln!(out, "server: {info}");
    out.push_str("aims (benchmark, not tests):\n");
    for v in verdicts {
        let _ = writeln!(out, "{v}");
    }
    match layer_gain {
        Some(g) => {
            let _ = writeln!(
                out,
                "  Batch of 1,000 point reads through {layer}: {g:.2}x the throughput of sequential point reads (aim >= {AIM_READ_BATCH_GAIN}x): {}",
                verdict(g >= AIM_READ_BATCH_GAIN)
            );
        }
        None => out.push_str("  Batch vs sequential point reads: not measured\n"),
    }
    out.push_str(legend);
    out
}

/// One figure of `--json`: a workload on a target, in `unit`, over the
/// repetitions the harness took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// `<section>/<workload key>`, e.g. `embedded/point_read`, `pg/insert_many_1k`.
    pub workload: String,
    /// Target name, e.g. `datalayer-etch`.
    pub target: String,
    /// Unit of the four figures, e.g. `reads/s`, `s`.
    pub unit: String,
    /// Median over repetitions.
    pub median: f64,
    /// Median absolute deviation.
    pub mad: f64,
    /// Smallest repetition.
    pub min: f64,
    /// Largest repetition.
    pub max: f64,
}

impl Record {
    /// The record of `stat` for `workload` (already prefixed) on `target`.
    pub fn new(workload: String, target: &str, unit: &str, stat: Stat) -> Self {
        Self {
            workload,
            target: target.to_owned(),
            unit: unit.to_owned(),
            median: stat.median,
            mad: stat.mad,
            min: stat.min,
            max: stat.max,
        }
    }
}

/// Every figure of a section's `users` workloads, plus each target's setup time
/// (`<section>/setup`, in seconds, one sample).
pub fn users_records(section: &str, results: &[TargetResults]) -> Vec<Record> {
    let mut out = Vec::new();
    for r in results {
        for &(w, s) in &r.stats {
            out.push(Record::new(
                format!("{section}/{}", w.key()),
                &r.name,
                w.unit(),
                s,
            ));
        }
        out.push(Record::new(
            format!("{section}/setup"),
            &r.name,
            "s",
            Stat::single(r.setup.as_secs_f64()),
        ));
    }
    out
}

/// The flights load figures (one repetition each).
pub fn flights_records(section: &str, results: &[FlightsResult]) -> Vec<Record> {
    results
        .iter()
        .map(|r| {
            Record::new(
                format!("{section}/{}", Workload::Flights.key()),
                &r.name,
                Workload::Flights.unit(),
                r.stat(),
            )
        })
        .collect()
}

/// The change-capture figures: `<section>/insert_changes_without` and
/// `<section>/insert_changes_with` per target.
pub fn changes_records(section: &str, results: &[ChangesResult]) -> Vec<Record> {
    let key = Workload::Changes.key();
    let unit = Workload::Changes.unit();
    results
        .iter()
        .flat_map(|r| {
            [
                Record::new(format!("{section}/{key}_without"), &r.name, unit, r.without),
                Record::new(format!("{section}/{key}_with"), &r.name, unit, r.with),
            ]
        })
        .collect()
}

/// The outbox figures: `<section>/outbox_produced` and `<section>/outbox_end_to_end`
/// per target (one repetition each).
pub fn outbox_records(section: &str, results: &[OutboxResult]) -> Vec<Record> {
    let key = Workload::Outbox.key();
    let unit = Workload::Outbox.unit();
    results
        .iter()
        .flat_map(|r| {
            [
                Record::new(
                    format!("{section}/{key}_produced"),
                    &r.name,
                    unit,
                    r.produced(),
                ),
                Record::new(
                    format!("{section}/{key}_end_to_end"),
                    &r.name,
                    unit,
                    r.end_to_end(),
                ),
            ]
        })
        .collect()
}

/// `records` as a pretty-printed JSON array (a figure that is not a finite
/// number is written as `null`).
///
/// # Errors
/// serde_json fails to serialize (it does not for these plain records).
pub fn to_json(records: &[Record]) -> serde_json::Result<String> {
    serde_json::to_string_pretty(records)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_record_has_exactly_the_documented_fields() {
        let stat = Stat::from_values(&[10.0, 20.0, 40.0]);
        let r = Record::new("embedded/point_read".into(), "redb", "reads/s", stat);
        let v: serde_json::Value =
            serde_json::from_str(&to_json(&[r]).unwrap()).expect("valid JSON");
        let arr = v.as_array().expect("a JSON array");
        assert_eq!(arr.len(), 1);
        let obj = arr[0].as_object().expect("an object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["mad", "max", "median", "min", "target", "unit", "workload"]
        );
        assert_eq!(obj["workload"], "embedded/point_read");
        assert_eq!(obj["target"], "redb");
        assert_eq!(obj["unit"], "reads/s");
        assert_eq!(obj["median"], 20.0);
        assert_eq!(obj["mad"], 10.0);
        assert_eq!(obj["min"], 10.0);
        assert_eq!(obj["max"], 40.0);
    }

    #[test]
    fn users_records_cover_every_figure_and_the_setup() {
        let results = [TargetResults {
            name: "datalayer-etch".into(),
            setup: Duration::from_millis(250),
            stats: vec![
                (Workload::PointRead, Stat::single(1.0)),
                (Workload::Batch, Stat::single(2.0)),
            ],
        }];
        let got: Vec<(String, String)> = users_records("pg", &results)
            .into_iter()
            .map(|r| (r.workload, r.unit))
            .collect();
        assert_eq!(
            got,
            [
                ("pg/point_read".to_string(), "reads/s".to_string()),
                ("pg/insert_many_1k".into(), "rows/s".into()),
                ("pg/setup".into(), "s".into()),
            ]
        );
    }

    #[test]
    fn a_missing_workload_shows_a_dash_not_a_figure() {
        let results = [
            TargetResults {
                name: "a".into(),
                setup: Duration::ZERO,
                stats: vec![(Workload::PointRead, Stat::single(2.0))],
            },
            TargetResults {
                name: "b".into(),
                setup: Duration::ZERO,
                stats: vec![
                    (Workload::PointRead, Stat::single(1.0)),
                    (Workload::RangeScan, Stat::single(1.0)),
                ],
            },
        ];
        let t = workloads_table(&results);
        let scan = t
            .lines()
            .find(|l| l.contains("5 age range"))
            .expect("row 5");
        let cells: Vec<&str> = scan.split('|').map(str::trim).collect();
        // | label | a | b | a/b |
        assert_eq!(cells[2], NONE);
        assert_eq!(cells[4], NONE);
        assert!(t.contains("2.00x"), "{t}");
    }
}
