//! The PostgreSQL table, the aims, and what each cell ran.

use std::fmt::Write as _;

use super::{PgConfig, PgResults, PgWorkload, ServerInfo};
use crate::report::{cell, render};

/// Aim: a point read through datalayer takes at most this factor of raw
/// tokio-postgres's time.
pub const AIM_POINT_READ_TIME: f64 = 1.1;

/// Aim: datalayer's batched inserts reach at least this factor of its
/// sequential inserts' throughput.
pub const AIM_BATCH_GAIN: f64 = 1.5;

/// Baseline, raw driver and peers, by display name.
const LAYER: &str = "datalayer-pg";
const RAW: &str = "tokio-postgres";
const PEERS: [&str; 2] = ["sqlx", "SeaORM"];

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// What each target ran on each row (printed under the table).
const LEGEND: &str = "\
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

/// The PostgreSQL table: one row per [`PgWorkload`], one column per target
/// (median ± MAD), the time ratio datalayer/raw, the throughput ratios of
/// datalayer to sqlx and SeaORM; then batched/sequential per target, the aims
/// as met / NOT met, and what each cell ran.
pub fn pg_table(cfg: &PgConfig, info: &ServerInfo, results: &[PgResults]) -> String {
    let find = |n: &str| results.iter().find(|r| r.name == n);
    let layer = find(LAYER);
    let raw = find(RAW);
    let mut header = vec![format!(
        "PostgreSQL {} (N = {}, M = {}) median ±MAD",
        info.version,
        cfg.preload_rows,
        super::INSERT_ROWS
    )];
    header.extend(results.iter().map(|r| r.name.to_string()));
    header.push(format!("time {LAYER}/{RAW}"));
    header.extend(PEERS.iter().map(|p| format!("{LAYER}/{p}")));
    let mut rows = vec![header];

    let mut behind: Vec<String> = Vec::new();
    for w in PgWorkload::ALL {
        if results.iter().all(|r| r.get(w).is_none()) {
            continue;
        }
        let mut row = vec![w.label().to_string()];
        row.extend(
            results
                .iter()
                .map(|r| r.get(w).map_or_else(|| "-".into(), |s| cell(&s))),
        );
        let l = layer.and_then(|r| r.get(w));
        row.push(match (l, raw.and_then(|r| r.get(w))) {
            (Some(a), Some(b)) => format!("{:.2}x", b.median / a.median),
            _ => "-".into(),
        });
        for p in PEERS {
            row.push(match (l, find(p).and_then(|r| r.get(w))) {
                (Some(a), Some(b)) => {
                    let x = a.median / b.median;
                    if x < 1.0 {
                        behind.push(format!("row {} vs {p} ({x:.2}x)", w.label()[..2].trim()));
                    }
                    format!("{x:.2}x")
                }
                _ => "-".into(),
            });
        }
        rows.push(row);
    }

    let gain = |r: &PgResults| match (
        r.get(PgWorkload::InsertBatch),
        r.get(PgWorkload::InsertSequential),
    ) {
        (Some(b), Some(s)) if s.median > 0.0 => Some(b.median / s.median),
        _ => None,
    };
    let mut row = vec!["  batched / sequential = 3 / 2".to_string()];
    row.extend(
        results
            .iter()
            .map(|r| gain(r).map_or_else(|| "-".into(), |g| format!("{g:.2}x"))),
    );
    row.extend(std::iter::repeat_n(String::new(), 1 + PEERS.len()));
    rows.push(row);
    let mut setup = vec!["  (setup: connect, create, preload N, s)".to_string()];
    setup.extend(
        results
            .iter()
            .map(|r| format!("{:.2}", r.setup.as_secs_f64())),
    );
    setup.extend(std::iter::repeat_n(String::new(), 1 + PEERS.len()));
    rows.push(setup);

    let mut out = render(&rows);
    let _ = writeln!(out, "server: {}", info.durability);
    out.push_str("aims (benchmark, not tests):\n");
    match (
        layer.and_then(|r| r.get(PgWorkload::PointRead)),
        raw.and_then(|r| r.get(PgWorkload::PointRead)),
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
    for r in results.iter().filter(|r| r.name == LAYER || r.name == RAW) {
        if let Some(g) = gain(r) {
            let aim = if r.name == LAYER {
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
    out.push_str(LEGEND);
    out
}
