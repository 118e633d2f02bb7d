//! `datalayer-migrate` to and from TiKV (the in-process test cluster, 4 regions):
//! etch → TiKV while writers insert, update and delete through the source, then a
//! cut-over and a verify; TiKV → etch back again; both verified equal with the
//! per-range checksums and the index counts.

use datalayer_core::{
    ColumnDef, ColumnType, Db, Executor, IndexDef, Op, Output, Row, TableSchema, Value, WriteMode,
};
use datalayer_migrate::{CutoverOptions, Migration, Options};
use datalayer_tikv_testkit::{ClusterConfig, TestCluster};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const ROWS: i64 = 2_000;

fn table() -> &'static TableSchema {
    static T: std::sync::OnceLock<TableSchema> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let col = ColumnDef::new;
        TableSchema {
            version: None,
            name: "items".into(),
            columns: vec![
                col("id", ColumnType::I64, false),
                col("email", ColumnType::String, false),
                col("score", ColumnType::F64, true),
                col("blob", ColumnType::Bytes, true),
            ],
            primary_key: vec![0],
            indexes: vec![IndexDef {
                name: "by_email".into(),
                columns: vec![1],
                unique: true,
                when: None,
            }],
        }
    })
}

fn row(i: i64) -> Row {
    vec![
        Value::I64(i),
        Value::String(format!("ü{i}@example.org")),
        if i % 3 == 0 {
            Value::Null
        } else {
            Value::F64(i as f64 / 7.0)
        },
        if i % 4 == 0 {
            Value::Null
        } else {
            Value::Bytes(vec![i as u8; (i % 50) as usize])
        },
    ]
}

async fn count(db: &Db) -> u64 {
    match db.run(Op::Count { table: table() }).await.unwrap() {
        Output::Count(n) => n,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etch_to_tikv_under_writes_and_back_verify_equal() {
    let cluster = TestCluster::start(ClusterConfig::default()).await.unwrap();
    assert!(cluster.regions().len() >= 3);
    let tikv = datalayer_tikv::open(datalayer_tikv::TikvOptions::new(vec![cluster.pd_addr()]))
        .await
        .unwrap();
    let tikv = Db::with_engine(Arc::new(tikv)).connect().await.unwrap();
    let etch = Db::with_engine(Arc::new(datalayer_etch::memory()))
        .table_schema(table())
        .connect()
        .await
        .unwrap();
    let rows: Vec<Row> = (0..ROWS).map(row).collect();
    etch.run(Op::Insert {
        table: table(),
        rows,
        mode: WriteMode::Insert,
    })
    .await
    .unwrap();

    // Writers on the source during the copy and the follow.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (db, stop) = (etch.clone(), stop.clone());
        async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let id = (i * 37) % ROWS;
                let op = match i % 3 {
                    0 => Op::Insert {
                        table: table(),
                        rows: vec![row(ROWS + i)],
                        mode: WriteMode::Upsert,
                    },
                    1 => {
                        let mut r = row(id);
                        r[2] = Value::F64(-1.0);
                        Op::Insert {
                            table: table(),
                            rows: vec![r],
                            mode: WriteMode::Upsert,
                        }
                    }
                    _ => Op::Delete {
                        table: table(),
                        keys: vec![vec![Value::I64(id + 1)]],
                    },
                };
                match db.run(op).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == datalayer_core::ErrorKind::Timeout => return i,
                    Err(e) => panic!("{e}"),
                }
                i += 1;
                // About 500 writes/s: the in-process cluster applies far fewer rows
                // per second than an in-memory etch can write.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            i
        }
    });
    let small = Options {
        max_chunk_rows: 250,
        bucket_rows: 300,
        ..Options::default()
    };
    let m = Migration::new(&etch, &tikv).options(small.clone());
    let copied = m.copy().await.unwrap();
    assert!(copied.tables[0].chunks > 4, "{copied:?}");
    m.follow_until_caught_up().await.unwrap();
    let cut = m.cutover(CutoverOptions::default()).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 10, "{writes} concurrent writes");
    let report = m.verify().await.unwrap();
    assert!(report.is_equal(), "{report:#?}");
    assert_eq!(report.tables[0].indexes[0].target, count(&tikv).await);
    drop(cut);

    // And back: TiKV → a fresh etch.
    let back = Db::with_engine(Arc::new(datalayer_etch::memory()))
        .connect()
        .await
        .unwrap();
    let m = Migration::new(&tikv, &back).options(small);
    m.copy().await.unwrap();
    let report = m.verify().await.unwrap();
    assert!(report.is_equal(), "{report:#?}");
    assert_eq!(count(&back).await, count(&etch).await);
}
