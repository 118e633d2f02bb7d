//! Query plans: every keyset scan the engine renders (primary-key order and index
//! order, forward and reverse, with a cursor and a limit, on `NOT NULL` and nullable
//! columns) is served in index order. With `enable_sort` off, a plan that must sort
//! the table still shows its `Sort` node (an `Incremental Sort` of the primary-key
//! tie-breaker within equal index values is allowed), so a rendered `ORDER BY` the index cannot
//! give (`ASC NULLS FIRST` on a default `NULLS LAST` index) fails here.

mod common;

use common::*;
use datalayer::{Executor, Table, Value};
use datalayer_core::ScanRequest;
use datalayer_pg::PgDialect;
use datalayer_sql::{Dialect, ScanShape, render_scan};
use std::ops::Bound;

/// A table with a nullable indexed column.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "tagged")]
#[index(name = "by_tag", fields(tag))]
#[index(name = "by_owner_tag", fields(owner, tag))]
struct Tagged {
    #[pk]
    id: i64,
    owner: String,
    tag: Option<String>,
}

/// The rendered scan of `req` with its parameters inlined as literals.
fn inlined(req: &ScanRequest<'_>) -> String {
    let d = PgDialect;
    let shape = ScanShape::of(req).unwrap();
    let r = render_scan(req.table, &shape, &d).unwrap();
    let mut sql = r.sql.clone();
    let vals = r.bind_values(req);
    for (n, v) in vals.iter().enumerate().rev() {
        sql = sql.replace(&format!("${}", n + 1), &d.literal(v).unwrap());
    }
    sql
}

#[tokio::test]
async fn keyset_scans_walk_an_index_without_sorting() {
    let ns = Ns::new();
    let db = datalayer::Db::with_engine(std::sync::Arc::new(ns.engine("").await))
        .table::<Tagged>()
        .connect()
        .await
        .unwrap();
    let rows: Vec<Tagged> = (0..2_000)
        .map(|i| Tagged {
            id: i,
            owner: format!("o{}", i % 7),
            tag: (i % 3 != 0).then(|| format!("t{}", i % 11)),
        })
        .collect();
    db.repo::<Tagged>().insert_many(&rows).await.unwrap();
    let raw = ns.raw().await;
    raw.batch_execute(&format!(
        "SET search_path TO \"{}\"; ANALYZE tagged; SET enable_sort = off; SET enable_seqscan = off",
        ns.schema
    ))
    .await
    .unwrap();
    let t = Tagged::schema();
    let s = |v: &str| Value::String(v.into());
    let mut cases = Vec::new();
    for reverse in [false, true] {
        // Primary-key order from a cursor.
        cases.push(ScanRequest {
            table: t,
            index: None,
            prefix: vec![],
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
            after: Some(vec![Value::I64(100)]),
            reverse,
            limit: Some(50),
        });
        // A nullable index column, whole and from a cursor.
        for after in [None, Some(vec![s("t3"), Value::I64(5)])] {
            cases.push(ScanRequest {
                table: t,
                index: Some(0),
                prefix: vec![],
                lower: Bound::Unbounded,
                upper: Bound::Unbounded,
                after,
                reverse,
                limit: Some(50),
            });
        }
        // A prefix on the NOT NULL column, a range on the nullable one.
        cases.push(ScanRequest {
            table: t,
            index: Some(1),
            prefix: vec![s("o3")],
            lower: Bound::Included(s("t1")),
            upper: Bound::Unbounded,
            after: None,
            reverse,
            limit: Some(50),
        });
    }
    for req in &cases {
        let sql = inlined(req);
        let plan: Vec<String> = raw
            .query(&format!("EXPLAIN {sql}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        // A full `Sort` node; an `Incremental Sort` (the primary-key tie-breaker after
        // an index's own columns, within groups of equal index values) streams.
        let sorts = plan.iter().any(|l| {
            l.trim_start()
                .trim_start_matches("->")
                .trim_start()
                .starts_with("Sort  (")
        });
        let plan = plan.join("\n");
        assert!(!sorts, "{sql}\nsorts instead of walking an index:\n{plan}");
        // And the scan still answers (the rows come back in datalayer's order).
        let got = db.run(datalayer::Op::Scan(req.clone())).await.unwrap();
        assert!(
            matches!(got, datalayer::Output::Rows(r) if !r.is_empty()),
            "{sql}"
        );
    }
    db.close().await.unwrap();
    ns.drop_schema().await;
}
