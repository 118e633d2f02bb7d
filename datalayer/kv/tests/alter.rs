//! Schema changes on the KV family: a row rewrite cut short resumes from its marker,
//! a unique index that stored rows violate leaves nothing behind, and writers keep
//! going (and maintain the index) while an index is built.
//!
//! Every test holds a `FailScenario`: failpoints are global to the process.

use datalayer_core::evolve::{Evolution, diff};
use datalayer_core::{
    ColumnDef, ColumnType, Engine, ErrorKind, IndexDef, Op, Output, ScanRequest, TableSchema,
    Value, WriteMode,
};
use datalayer_kv::mem::MemKv;
use datalayer_kv::{KvEngine, KvStore, codec};
use std::ops::Bound;

fn v1() -> TableSchema {
    TableSchema {
        version: None,
        name: "items".into(),
        columns: vec![
            ColumnDef::new("id", ColumnType::I64, false),
            ColumnDef::new("name", ColumnType::String, false),
        ],
        primary_key: vec![0],
        indexes: vec![],
    }
}

/// v1 with a column in the middle and a unique index on `name`.
fn v2() -> TableSchema {
    let mut t = v1();
    t.columns
        .insert(1, ColumnDef::new("score", ColumnType::I32, false));
    t.indexes.push(IndexDef {
        name: "by_name".into(),
        columns: vec![2],
        unique: true,
        when: None,
    });
    t
}

fn defaults() -> Evolution {
    Evolution {
        defaults: vec![(1, Value::I32(7))],
        ..Evolution::default()
    }
}

async fn load(e: &KvEngine, t: &'static TableSchema, n: i64, name: impl Fn(i64) -> String) {
    e.register(&[t], &[]).await.unwrap();
    let rows = (0..n)
        .map(|i| vec![Value::I64(i), Value::String(name(i))])
        .collect();
    e.run(Op::Insert {
        table: t,
        rows,
        mode: WriteMode::Insert,
    })
    .await
    .unwrap();
}

fn scan(t: &TableSchema, index: Option<usize>) -> Op<'_> {
    Op::Scan(ScanRequest {
        table: t,
        index,
        prefix: vec![],
        lower: Bound::Unbounded,
        upper: Bound::Unbounded,
        after: None,
        reverse: false,
        limit: None,
    })
}

/// The rows `op` (a scan) returns.
async fn rows_of(e: &KvEngine, op: Op<'_>) -> Vec<Vec<Value>> {
    match e.run(op).await.unwrap() {
        Output::Rows(rows) => rows,
        o => panic!("rows, not {o:?}"),
    }
}

#[tokio::test]
async fn a_rewrite_cut_short_resumes_from_its_marker() {
    let scenario = fail::FailScenario::setup();
    let (from, to): (&'static TableSchema, &'static TableSchema) =
        (Box::leak(Box::new(v1())), Box::leak(Box::new(v2())));
    let e = KvEngine::new(MemKv::new());
    load(&e, from, 2_500, |i| format!("n{i}")).await;
    let plan = diff(from, to, &defaults()).unwrap();
    assert!(plan.changes_row_layout());
    // Stop after the first chunk of 1,000 rows: they are in the new layout, the rest
    // are not, and the catalog still says v1.
    fail::cfg(datalayer_kv::failpoints::AFTER_REWRITE_CHUNK, "1*return").unwrap();
    let err = e.alter_table(&plan).await.expect_err("cut short");
    assert_eq!(err.code(), Some("failpoint"), "{err}");
    assert_eq!(e.catalog().await.unwrap(), vec![from.clone()]);
    fail::remove(datalayer_kv::failpoints::AFTER_REWRITE_CHUNK);
    // The same plan again finishes; every row reads in v2 with the default.
    e.alter_table(&plan).await.unwrap();
    assert_eq!(e.catalog().await.unwrap(), vec![to.clone()]);
    let rows = rows_of(&e, scan(to, None)).await;
    assert_eq!(rows.len(), 2_500);
    for (i, r) in rows.iter().enumerate() {
        let want = vec![
            Value::I64(i as i64),
            Value::I32(7),
            Value::String(format!("n{i}")),
        ];
        assert_eq!(r, &want);
    }
    let by_name = rows_of(&e, scan(to, Some(0))).await;
    assert_eq!(by_name.len(), 2_500);
    // The old declaration is refused from now on.
    let err = e.run(scan(from, None)).await.expect_err("stale");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    scenario.teardown();
}

#[tokio::test]
async fn a_violated_unique_index_leaves_the_table_as_it_was() {
    // Serialized with the tests that configure failpoints, which every build passes.
    let scenario = fail::FailScenario::setup();
    let (from, to): (&'static TableSchema, &'static TableSchema) =
        (Box::leak(Box::new(v1())), Box::leak(Box::new(v2())));
    let store = MemKv::new();
    let e = KvEngine::new(store.clone());
    // Rows 1500 and 2400 share a name, in different chunks.
    load(&e, from, 2_500, |i| {
        if i == 2_400 {
            "n1500".into()
        } else {
            format!("n{i}")
        }
    })
    .await;
    let plan = diff(from, to, &defaults()).unwrap();
    let err = e.alter_table(&plan).await.expect_err("duplicate");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(err.message().contains("n1500"), "{err}");
    assert_eq!(e.catalog().await.unwrap(), vec![from.clone()]);
    // No entry of the unique index is left (the first chunk's were written).
    let prefix = codec::index_prefix(to, &to.indexes[0]);
    let mut t = store.begin(Default::default()).await.unwrap();
    let left = t
        .scan(
            Bound::Included(prefix.as_slice()),
            Bound::Unbounded,
            usize::MAX,
            false,
        )
        .await
        .unwrap();
    t.rollback().await.unwrap();
    assert!(
        left.iter().all(|(k, _)| !k.starts_with(&prefix)),
        "{} entries left",
        left.iter().filter(|(k, _)| k.starts_with(&prefix)).count()
    );
    // v1 still reads every row.
    let rows = rows_of(&e, scan(from, None)).await;
    assert_eq!(rows.len(), 2_500);
    let mut fixed = plan.clone();
    fixed.to.indexes[0].unique = false;
    let fixed_to: &'static TableSchema = Box::leak(Box::new(fixed.to.clone()));
    e.alter_table(&fixed).await.unwrap();
    let entries = rows_of(&e, scan(fixed_to, Some(0))).await;
    assert_eq!(entries.len(), 2_500, "one entry per row, none left over");
    scenario.teardown();
}

/// v1 with a unique index on `name`: the row layout does not change.
fn v1_indexed() -> TableSchema {
    let mut t = v1();
    t.indexes.push(IndexDef {
        name: "by_name".into(),
        columns: vec![1],
        unique: true,
        when: None,
    });
    t
}

fn row(id: i64, name: &str) -> Vec<Value> {
    vec![Value::I64(id), Value::String(name.into())]
}

/// Writers of the stored declaration keep going while an index is built, and
/// maintain it: a write to a row the build already passed, one to a row it has yet
/// to reach, an insert, a delete, and a unique conflict with a built entry, all made
/// while the build waits after its first chunk (rows 0..999).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_keep_going_and_maintain_an_index_being_built() {
    use std::sync::{Mutex, mpsc};
    let scenario = fail::FailScenario::setup();
    let (from, to): (&'static TableSchema, &'static TableSchema) =
        (Box::leak(Box::new(v1())), Box::leak(Box::new(v1_indexed())));
    let e = KvEngine::new(MemKv::new());
    load(&e, from, 2_500, |i| format!("n{i}")).await;
    let plan = diff(from, to, &Evolution::default()).unwrap();
    assert!(!plan.changes_row_layout());
    let (reached_tx, reached) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (reached_tx, release_rx) = (Mutex::new(Some(reached_tx)), Mutex::new(release_rx));
    fail::cfg_callback(datalayer_kv::failpoints::AFTER_BUILD_CHUNK, move || {
        // The first chunk only: tell the test, wait for it.
        if let Some(tx) = reached_tx.lock().unwrap().take() {
            tx.send(()).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
        }
    })
    .unwrap();
    let alter = {
        let (e, plan) = (e.clone(), plan.clone());
        tokio::spawn(async move { e.alter_table(&plan).await })
    };
    tokio::task::spawn_blocking(move || reached.recv().unwrap())
        .await
        .unwrap();
    let update = |id: i64, name: &str| Op::Update {
        table: from,
        rows: vec![row(id, name)],
    };
    e.run(update(5, "x5")).await.unwrap();
    e.run(update(2_000, "x2000")).await.unwrap();
    e.run(Op::Insert {
        table: from,
        rows: vec![row(5_000, "n5000")],
        mode: WriteMode::Insert,
    })
    .await
    .unwrap();
    e.run(Op::Delete {
        table: from,
        keys: vec![vec![Value::I64(6)]],
    })
    .await
    .unwrap();
    let err = e
        .run(update(9, "n7"))
        .await
        .expect_err("n7 is taken in the index being built");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    release.send(()).unwrap();
    alter.await.unwrap().unwrap();
    fail::remove(datalayer_kv::failpoints::AFTER_BUILD_CHUNK);
    // The index holds one entry per row, at the row's current name.
    let rows = rows_of(&e, scan(to, None)).await;
    assert_eq!(rows.len(), 2_500);
    let name_of = |r: &Vec<Value>| match &r[1] {
        Value::String(s) => s.clone(),
        v => panic!("name {v:?}"),
    };
    let mut want: Vec<String> = rows.iter().map(name_of).collect();
    want.sort();
    let by_name = rows_of(&e, scan(to, Some(0))).await;
    let got: Vec<String> = by_name.iter().map(name_of).collect();
    assert_eq!(got, want);
    for name in ["x5", "x2000", "n5000", "n9"] {
        assert!(got.iter().any(|g| g == name), "{name} is indexed");
    }
    for gone in ["n5", "n6", "n2000"] {
        assert!(!got.iter().any(|g| g == gone), "{gone} is not");
    }
    scenario.teardown();
}
