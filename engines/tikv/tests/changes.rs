//! The late-commit race of the KV family's change feed, on TiKV (issue 11).
//!
//! Positions come from the table's change sequence key, which every capturing
//! transaction reads and writes (`datalayer/kv/src/txn.rs`, `capture`). Under
//! Percolator (snapshot reads at the start timestamp, first committer wins on a
//! write-write conflict: the prewrite of a key with a commit newer than the start
//! timestamp is `WriteConflict`; a lock of an older transaction makes readers wait),
//! a transaction that started earlier but commits later can therefore never place a
//! change at or below a position a reader has already passed: it either conflicts or
//! the reader waits for its lock.
//!
//! The races are built deterministically with the test cluster's hooks: the earlier
//! transaction's primary `KvCommit` is held (before it applies, or after it applied
//! with its response held) while a later transaction commits and a reader consumes.
//! tikv-client takes the commit timestamp before it sends the primary's `KvCommit`, so
//! a transaction begun while the commit is held reads the held one's change once its
//! locks are resolved (no conflict), and a reader never sees its change without the
//! held one's before it.
//! (These need the test cluster: they do not run against `DATALAYER_TIKV_PD`.)

use datalayer_core::{
    Change, ColumnDef, ColumnType, Engine, Op, Output, TableSchema, TxOptions, Value, WriteMode,
};
use datalayer_kv::KvEngine;
use datalayer_tikv_testkit::{ClusterConfig, HoldPoint, Rpc, TestCluster};
use std::time::{Duration, Instant};

fn table() -> TableSchema {
    let col = |name: &str, ty| ColumnDef {
        name: name.into(),
        field: name.into(),
        ty,
        nullable: false,
    };
    TableSchema {
        version: None,
        name: "items".into(),
        columns: vec![col("id", ColumnType::I64), col("v", ColumnType::String)],
        primary_key: vec![0],
        indexes: vec![],
    }
}

fn insert(t: &TableSchema, id: i64) -> Op<'_> {
    Op::Insert {
        table: t,
        rows: vec![vec![Value::I64(id), Value::String(format!("v{id}"))]],
        mode: WriteMode::Insert,
    }
}

async fn setup() -> (KvEngine, TestCluster) {
    let cluster = TestCluster::start(ClusterConfig::default()).await.unwrap();
    assert!(cluster.regions().len() >= 3);
    let engine = datalayer_tikv::open(datalayer_tikv::TikvOptions::new(vec![cluster.pd_addr()]))
        .await
        .unwrap();
    assert!(engine.capability().concurrent_writers);
    assert!(engine.capability().change_feed);
    engine.register(&[&table()], &[]).await.unwrap();
    engine.enable_changes("items").await.unwrap();
    (engine, cluster)
}

fn id_of(c: &Change) -> i64 {
    match c.get("id") {
        Some(Value::I64(v)) => *v,
        other => panic!("change without an id: {other:?}"),
    }
}

/// Inserts row `id` in its own transaction, re-running it on a retryable error (as
/// `tx_with().retry(n)` does); returns the number of conflicts met.
async fn insert_retrying(engine: &KvEngine, id: i64) -> u32 {
    let t = table();
    let mut conflicts = 0;
    for _ in 0..50 {
        let r = async {
            let mut tx = engine.begin(TxOptions::default()).await?;
            tx.run(insert(&t, id)).await?;
            tx.commit().await
        }
        .await;
        match r {
            Ok(()) => return conflicts,
            Err(e) if e.is_retryable() => {
                conflicts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("insert {id}: {e}"),
        }
    }
    panic!("insert {id}: 50 conflicts")
}

/// A reader following the feed as `Db::changes` does: reads after its last position,
/// keeps going until it saw `want` changes (or `deadline`); read errors (a lock that
/// outlived the client's backoff) are retried.
async fn follow(engine: KvEngine, after: u64, want: usize, deadline: Duration) -> Vec<Change> {
    let end = Instant::now() + deadline;
    let mut seen: Vec<Change> = Vec::new();
    let mut pos = after;
    while seen.len() < want && Instant::now() < end {
        match engine.read_changes("items", pos, 10).await {
            Ok(batch) => {
                for c in batch {
                    pos = c.position;
                    seen.push(c);
                }
            }
            Err(e) => assert!(e.is_retryable(), "read_changes: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen
}

/// Every id of `want` exactly once, positions increasing.
fn assert_exactly_once(seen: &[Change], want: &[i64], what: &str) {
    let ids: Vec<i64> = seen.iter().map(id_of).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    let mut w = want.to_vec();
    w.sort_unstable();
    assert_eq!(sorted, w, "{what}: ids seen {ids:?}");
    for pair in seen.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "{what}: position {} after {}",
            pair[1].position,
            pair[0].position
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_commit_conflicts_instead_of_landing_below_a_read_position() {
    let (engine, _cluster) = setup().await;
    let t = table();
    // A writes first (reads the sequence at its start timestamp) but commits last; B
    // starts later and commits in between.
    let mut a = engine.begin(TxOptions::default()).await.unwrap();
    a.run(insert(&t, 1)).await.unwrap();
    let mut b = engine.begin(TxOptions::default()).await.unwrap();
    b.run(insert(&t, 2)).await.unwrap();
    b.commit().await.unwrap();

    // A reader passes B's change.
    let seen = engine.read_changes("items", 0, 10).await.unwrap();
    assert_eq!(seen.iter().map(id_of).collect::<Vec<_>>(), vec![2]);
    let passed = seen[0].position;

    // A would put its change at the position B took: a retryable conflict (Percolator
    // `WriteConflict` on the sequence key), nothing of A visible.
    let err = a
        .commit()
        .await
        .expect_err("A conflicts on the change sequence");
    assert!(err.is_conflict(), "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(
        engine
            .read_changes("items", passed, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mut check = engine.begin(TxOptions::default()).await.unwrap();
    let rows = check
        .run(Op::Get {
            table: &t,
            keys: vec![vec![Value::I64(1)]],
        })
        .await
        .unwrap();
    check.rollback().await.unwrap();
    assert!(
        matches!(rows, Output::Optional(ref r) if r == &[None]),
        "row 1 of the conflicting A is not visible: {rows:?}"
    );

    // A re-run lands after everything the reader has seen.
    insert_retrying(&engine, 1).await;
    let next = engine.read_changes("items", passed, 10).await.unwrap();
    assert_eq!(next.iter().map(id_of).collect::<Vec<_>>(), vec![1]);
    assert!(next[0].position > passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_commit_is_seen_exactly_once_by_a_reader_that_raced_it() {
    for (round, point) in [HoldPoint::BeforeApply, HoldPoint::AfterApply]
        .into_iter()
        .enumerate()
    {
        let (engine, cluster) = setup().await;
        let t = table();
        // A baseline change, so the reader starts from a real position.
        insert_retrying(&engine, 0).await;
        assert!(cluster.settle(Duration::from_secs(5)).await);
        let base = engine.read_changes("items", 0, 10).await.unwrap();
        assert_eq!(base.len(), 1);
        let after = base[0].position;

        // A: prewrite done, primary commit held (before it applies, or applied with
        // its response held: the secondaries are not committed yet either way).
        let mut a = engine.begin(TxOptions::default()).await.unwrap();
        a.run(insert(&t, 1)).await.unwrap();
        let hold = cluster.hold(Rpc::Commit, 1, point);
        let a_commit = tokio::spawn(async move { a.commit().await });
        assert!(
            hold.reached(Duration::from_secs(5)).await,
            "{point:?}: A's commit never reached the store"
        );
        assert!(cluster.lock_count() >= 2, "{point:?}: A's locks");

        // B starts after A and commits while A is held; a reader consumes meanwhile.
        let b = {
            let e = engine.clone();
            tokio::spawn(async move { insert_retrying(&e, 2).await })
        };
        let reader = tokio::spawn(follow(engine.clone(), after, 2, Duration::from_secs(20)));
        let early = {
            let e = engine.clone();
            tokio::spawn(async move {
                // A second reader that reads once while A is held.
                let r = e.read_changes("items", after, 10).await;
                (Instant::now(), r)
            })
        };
        // Hold A for 600 ms (under the client's 2 s request timeout and A's 3 s
        // lock TTL).
        tokio::time::sleep(Duration::from_millis(600)).await;
        // Before A's primary commit applied, B (whose reads meet A's live locks) cannot
        // finish. Once it applied, A is committed: B resolves A's secondaries from the
        // primary and may commit while A's response is still held.
        let b_during_hold = b.is_finished();
        if point == HoldPoint::BeforeApply {
            assert!(!b_during_hold, "{point:?}: B committed past A's live locks");
        }
        let released = Instant::now();
        hold.release();
        a_commit
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{point:?}: A's held commit: {e}"));
        let conflicts = b.await.unwrap();
        let seen = reader.await.unwrap();
        assert_exactly_once(&seen, &[1, 2], &format!("{point:?} reader"));
        let (a_pos, b_pos) = {
            let pa = seen.iter().find(|c| id_of(c) == 1).unwrap().position;
            let pb = seen.iter().find(|c| id_of(c) == 2).unwrap().position;
            (pa, pb)
        };
        assert!(
            a_pos > after && b_pos > a_pos,
            "{point:?}: A at {a_pos}, B at {b_pos}"
        );
        // The early reader either waited for A's locks or saw nothing past `after`
        // before A committed: never B without A.
        let (when, early) = early.await.unwrap();
        if let Ok(early) = early {
            let ids: Vec<i64> = early.iter().map(id_of).collect();
            assert!(
                !ids.contains(&2) || ids.first() == Some(&1),
                "{point:?}: early reader saw {ids:?}"
            );
            if when < released && point == HoldPoint::BeforeApply {
                assert!(ids.is_empty(), "{point:?}: read {ids:?} while A was held");
            }
        }
        // The whole feed, read again from the start.
        let all = engine.read_changes("items", 0, 100).await.unwrap();
        assert_exactly_once(&all, &[0, 1, 2], &format!("{point:?} full feed"));
        assert!(cluster.settle(Duration::from_secs(5)).await);
        eprintln!(
            "round {round} {point:?}: A at {a_pos}, B at {b_pos} after {conflicts} conflicts \
             (B done while A held: {b_during_hold})"
        );
    }
}
