//! `datalayer::migrate` between TiKV (one in-process test cluster, a namespace per
//! direction) and each other server-or-file engine: SQLite, PostgreSQL (127.0.0.1:5432
//! or `DATALAYER_PG_URL`, a schema of its own) and Redis (127.0.0.1:6379 or
//! `DATALAYER_REDIS_URL`, a namespace of its own). Each way a table of every column
//! type, with NULLs, a unique and a composite index, is copied (out of TiKV in three
//! parallel key ranges), verified equal by checksums and index counts, and read back
//! row for row. Every namespace is removed at the end, also when a check fails.

use datalayer::migrate::{Migration, Options};
use datalayer::{
    ColumnDef, ColumnType, Db, Executor, IndexDef, Op, Output, Row, ScanRequest, TableSchema,
    Value, WriteMode,
};
use datalayer_conformance::url::UrlTarget;
use datalayer_conformance::{Target, random_suffix};
use datalayer_tikv::TikvOptions;
use datalayer_tikv_testkit::{ClusterConfig, TestCluster};
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

const ROWS: i64 = 1_500;

fn table() -> &'static TableSchema {
    static T: OnceLock<TableSchema> = OnceLock::new();
    T.get_or_init(|| {
        let col = |n: &str, ty, null| ColumnDef::new(n, ty, null);
        TableSchema {
            version: None,
            name: "kinds".into(),
            columns: vec![
                col("id", ColumnType::I64, false),
                col("flag", ColumnType::Bool, true),
                col("small", ColumnType::I16, true),
                col("mid", ColumnType::I32, false),
                col("ratio", ColumnType::F32, true),
                col("score", ColumnType::F64, true),
                col("email", ColumnType::String, false),
                col("blob", ColumnType::Bytes, true),
            ],
            primary_key: vec![0],
            indexes: vec![
                IndexDef {
                    name: "by_email".into(),
                    columns: vec![6],
                    unique: true,
                    when: None,
                },
                IndexDef {
                    name: "by_mid_flag".into(),
                    columns: vec![3, 1],
                    unique: false,
                    when: None,
                },
            ],
        }
    })
}

fn row(i: i64) -> Row {
    let null_or = |every: i64, v: Value| if i % every == 0 { Value::Null } else { v };
    vec![
        Value::I64(i * 3 - 700),
        null_or(5, Value::Bool(i % 2 == 0)),
        null_or(7, Value::I16((i % 300) as i16 - 150)),
        Value::I32((i % 40) as i32),
        null_or(3, Value::F32(i as f32 / 8.0 + 0.5)),
        null_or(4, Value::F64(-(i as f64) / 3.0 - 0.25)),
        Value::String(format!("ünï-{i}@example.org")),
        null_or(6, Value::Bytes(vec![(i % 251) as u8; (i % 90) as usize])),
    ]
}

/// Every row of the table in primary-key order.
async fn all_rows(db: &Db) -> anyhow::Result<Vec<Row>> {
    match db
        .run(Op::Scan(ScanRequest {
            table: table(),
            index: None,
            prefix: Vec::new(),
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
            after: None,
            reverse: false,
            limit: None,
        }))
        .await?
    {
        Output::Rows(r) => Ok(r),
        other => anyhow::bail!("unexpected output {other:?}"),
    }
}

/// Copies `source` to `target` with `opts`, then checks them equal.
async fn migrate(source: &Db, target: &Db, opts: Options, what: &str) -> anyhow::Result<()> {
    let m = Migration::new(source, target).options(opts);
    let copied = m.copy().await?;
    anyhow::ensure!(
        copied.tables.iter().map(|t| t.rows).sum::<u64>() == ROWS as u64,
        "{what}: {copied:?}"
    );
    let report = m.verify().await?;
    anyhow::ensure!(report.is_equal(), "{what}: {report:#?}");
    anyhow::ensure!(
        all_rows(source).await? == all_rows(target).await?,
        "{what}: rows differ"
    );
    Ok(())
}

fn small(ranges: usize) -> Options {
    Options {
        max_chunk_rows: 250,
        bucket_rows: 300,
        split_rows: 1_000,
        parallel_ranges: ranges,
        ..Options::default()
    }
}

async fn tikv(cluster: &TestCluster) -> anyhow::Result<(Db, TikvOptions)> {
    let mut o = TikvOptions::new(vec![cluster.pd_addr()]);
    o.namespace = format!("m{}", random_suffix());
    let engine = datalayer_tikv::open(o.clone()).await?;
    let db = Db::with_engine(Arc::new(engine))
        .table_schema(table())
        .connect()
        .await?;
    Ok((db, o))
}

/// TiKV → `other` in three key ranges, then `other` → a fresh TiKV namespace.
async fn both_ways(cluster: &TestCluster, other: &Db, name: &str) -> anyhow::Result<()> {
    let (from, from_opts) = tikv(cluster).await?;
    let (back, back_opts) = tikv(cluster).await?;
    let run = async {
        let rows: Vec<Row> = (0..ROWS).map(row).collect();
        for chunk in rows.chunks(500) {
            from.run(Op::Insert {
                table: table(),
                rows: chunk.to_vec(),
                mode: WriteMode::Insert,
            })
            .await?;
        }
        migrate(&from, other, small(3), &format!("tikv -> {name}")).await?;
        migrate(other, &back, small(1), &format!("{name} -> tikv")).await
    };
    let result = run.await;
    for o in [from_opts, back_opts] {
        datalayer_tikv::clear_namespace(o).await?;
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tikv_and_every_other_engine_migrate_both_ways() {
    let cluster = TestCluster::start(ClusterConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let urls = [
        (
            "sqlite",
            format!("sqlite://{}", dir.path().join("m.db").display()),
        ),
        (
            "pg",
            std::env::var("DATALAYER_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        ),
        (
            "redis",
            std::env::var("DATALAYER_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        ),
    ];
    for (name, url) in urls {
        let target = UrlTarget::probe(&url)
            .await
            .unwrap_or_else(|e| panic!("{name} at {url}: {e}"));
        let ns = target.namespace().await.unwrap();
        let result = async {
            let other = Db::with_engine(ns.open().await?).connect().await?;
            both_ways(&cluster, &other, name).await?;
            other.close().await?;
            anyhow::Ok(())
        }
        .await;
        ns.destroy().await.unwrap();
        result.unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
}
