//! What fails a commit and what does not: exact validation of small scans (no false
//! conflicts between disjoint ranges) and bucket validation of large ones (a write in a
//! bucket the scan intersects fails it; a write elsewhere does not), and the commit
//! channel.

mod common;

use common::fresh;
use datalayer_core::{ErrorKind, TxOptions};
use datalayer_kv::{KvStore, KvTxn, WriteSet};
use std::ops::Bound;

fn rw() -> TxOptions {
    TxOptions {
        isolation: None,
        read_only: false,
    }
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

async fn put(store: &dyn KvStore, pairs: &[(&str, &str)]) {
    let t = store.begin(rw()).await.unwrap();
    t.commit(pairs.iter().map(|(k, v)| (b(k), Some(b(v)))).collect())
        .await
        .unwrap();
}

/// Commits `t` with `writes`: it must fail with `Conflict`.
async fn assert_conflict(t: Box<dyn KvTxn>, writes: WriteSet) {
    let e = t.commit(writes).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
}

/// Reads the `i` keys (at most 100, forward) with their `r:` targets, in `t`.
async fn scan_i_with_targets(t: &mut dyn KvTxn) -> Vec<(Vec<u8>, Vec<u8>, Option<Vec<u8>>)> {
    t.scan_with_targets(
        Bound::Included(b"i"),
        Bound::Excluded(b"j"),
        100,
        false,
        b"r:",
        None,
    )
    .await
    .unwrap()
}

/// A new transaction of `store` that has read the store's first two keys (the last two
/// with `reverse`), with what it read.
async fn first_two(
    store: &dyn KvStore,
    reverse: bool,
) -> (Box<dyn KvTxn>, Vec<(Vec<u8>, Vec<u8>)>) {
    let mut t = store.begin(rw()).await.unwrap();
    let got = t
        .scan(Bound::Unbounded, Bound::Unbounded, 2, reverse)
        .await
        .unwrap();
    (t, got)
}

/// Scans `[lo, hi)` in a new transaction, then runs `meanwhile`, then commits a write
/// of `out`: whether the commit failed with `Conflict`.
async fn scan_then(
    store: &dyn KvStore,
    lo: &str,
    hi: &str,
    meanwhile: &[(&str, Option<&str>)],
) -> bool {
    let mut t = store.begin(rw()).await.unwrap();
    t.scan(
        Bound::Included(lo.as_bytes()),
        Bound::Excluded(hi.as_bytes()),
        usize::MAX,
        false,
    )
    .await
    .unwrap();
    let w = store.begin(rw()).await.unwrap();
    w.commit(meanwhile.iter().map(|(k, v)| (b(k), v.map(b))).collect())
        .await
        .unwrap();
    match t.commit(vec![(b("out"), Some(b("x")))]).await {
        Ok(()) => false,
        Err(e) if e.kind() == ErrorKind::Conflict => true,
        Err(e) => panic!("unexpected {e}"),
    }
}

#[tokio::test]
async fn small_scans_are_validated_exactly() {
    let (engine, _g) = fresh("").await;
    let s = engine.store().as_ref();
    put(s, &[("ra1", "1"), ("ra2", "2"), ("rb1", "1")]).await;
    // A write outside the range read, even next to it: no conflict.
    assert!(!scan_then(s, "ra", "rb", &[("rb2", Some("x"))]).await);
    assert!(!scan_then(s, "ra", "rb", &[("r", Some("x"))]).await);
    // A key joins, a key leaves, a value changes: conflict.
    assert!(scan_then(s, "ra", "rb", &[("ra3", Some("x"))]).await);
    assert!(scan_then(s, "ra", "rb", &[("ra3", None)]).await);
    assert!(scan_then(s, "ra", "rb", &[("ra1", Some("new"))]).await);
    // Deleting a key that is not there changes nothing.
    assert!(!scan_then(s, "ra", "rb", &[("ra9", None)]).await);
}

#[tokio::test]
async fn large_scans_are_validated_by_bucket() {
    // Every scan by buckets; one-byte buckets: the key's first byte.
    let (engine, _g) = fresh("exact_scan_keys=0&bucket_prefix_bytes=1").await;
    let s = engine.store().as_ref();
    put(s, &[("ra1", "1"), ("ra2", "2"), ("sb1", "1")]).await;
    // Same bucket ("r"), outside the range: a (false) conflict, as documented.
    assert!(scan_then(s, "ra", "rb", &[("rz", Some("x"))]).await);
    // Another bucket: none.
    assert!(!scan_then(s, "ra", "rb", &[("sb2", Some("x"))]).await);
    // A new bucket inside the range: conflict.
    assert!(scan_then(s, "q", "s", &[("q1", Some("x"))]).await);
    // A value change inside: conflict.
    assert!(scan_then(s, "ra", "rb", &[("ra1", Some("new"))]).await);
}

#[tokio::test]
async fn limited_scans_validate_what_they_read() {
    let (engine, _g) = fresh("").await;
    let s = engine.store().as_ref();
    put(s, &[("a1", "1"), ("a2", "2"), ("a3", "3"), ("a5", "5")]).await;
    // Reads a1, a2 (limit 2): a key after a2 is not part of what it read.
    let (t, got) = first_two(s, false).await;
    assert_eq!(got.len(), 2);
    put(s, &[("a4", "4")]).await;
    t.commit(vec![(b("0"), Some(b("x")))]).await.unwrap();
    // Reverse, limit 2: reads a5, a4; a key before a4 is not part of it, one between is.
    let (t, _) = first_two(s, true).await;
    put(s, &[("a0", "0")]).await;
    t.commit(Vec::new()).await.unwrap();
    let (mut t, _) = first_two(s, true).await;
    put(s, &[("a45", "x")]).await;
    // A second read: a transaction served by one atomic read commits unvalidated.
    t.get(b"zz").await.unwrap();
    assert_conflict(t, Vec::new()).await;
}

/// A read-only transaction whose reads one atomic call served (a `get`, a scan of up to
/// 4,096 keys, a scan with its targets) saw one state and commits without validation,
/// even when what it read changed afterwards; with a second read it is validated.
#[tokio::test]
async fn one_atomic_read_needs_no_validation() {
    let (engine, _g) = fresh("").await;
    let s = engine.store().as_ref();
    put(s, &[("i1", "x"), ("i2", "y"), ("r:x", "X"), ("r:y", "Y")]).await;
    let mut t = s.begin(rw()).await.unwrap();
    let got = scan_i_with_targets(&mut *t).await;
    assert_eq!(
        got,
        vec![
            (b("i1"), b("x"), Some(b("X"))),
            (b("i2"), b("y"), Some(b("Y")))
        ]
    );
    put(s, &[("r:y", "Y2"), ("i3", "x")]).await;
    t.commit(Vec::new()).await.unwrap();
    // The same with a second read: the target changed, so the commit fails.
    let mut t = s.begin(rw()).await.unwrap();
    scan_i_with_targets(&mut *t).await;
    put(s, &[("r:y", "Y3")]).await;
    t.get(b"zz").await.unwrap();
    assert_conflict(t, Vec::new()).await;
    // With writes, one read is validated all the same.
    let mut t = s.begin(rw()).await.unwrap();
    t.get(b"i1").await.unwrap();
    put(s, &[("i1", "z")]).await;
    assert_conflict(t, vec![(b("w"), Some(b("1")))]).await;
}

#[tokio::test]
async fn event_commits_are_published() {
    let (engine, g) = fresh("").await;
    let s = engine.store().as_ref();
    let opts = &g.opts;
    let client =
        redis::Client::open(format!("redis://{}:{}/{}", opts.host, opts.port, opts.db)).unwrap();
    let mut sub = client.get_async_pubsub().await.unwrap();
    sub.subscribe(format!("{{{}}}:outbox", opts.namespace))
        .await
        .unwrap();
    use futures::StreamExt;
    let mut messages = sub.on_message();
    // A commit without outbox events publishes nothing.
    put(s, &[("a", "1")]).await;
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), messages.next()).await;
    assert!(quiet.is_err(), "a commit without events published");
    // A put into the outbox's events table publishes the commit counter.
    let mut key = datalayer_kv::codec::table_prefix(datalayer_kv::codec::ROW, "_dl_outbox");
    key.extend_from_slice(b"\x01anything");
    let t = s.begin(rw()).await.unwrap();
    t.commit(vec![(key, Some(b("event")))]).await.unwrap();
    let msg = tokio::time::timeout(std::time::Duration::from_secs(5), messages.next())
        .await
        .expect("a message within 5 s")
        .unwrap();
    let v: u64 = msg.get_payload().unwrap();
    assert!(v >= 2, "commit counter {v}");
}

#[tokio::test]
async fn large_batch_get_is_chunked_in_order() {
    // 512 keys per MGET, 2 MGETs per round trip: 3000 keys take 3 round trips.
    let (engine, _g) = fresh("pipeline_depth=2").await;
    let s = engine.store().as_ref();
    let t = s.begin(rw()).await.unwrap();
    t.commit(
        (0..3000)
            .map(|i| {
                (
                    format!("k{i:05}").into_bytes(),
                    Some(format!("{i}").into_bytes()),
                )
            })
            .collect(),
    )
    .await
    .unwrap();
    let mut t = s.begin(rw()).await.unwrap();
    let keys: Vec<Vec<u8>> = (0..3100)
        .rev()
        .map(|i| format!("k{i:05}").into_bytes())
        .collect();
    let got = t.batch_get(&keys).await.unwrap();
    for (i, v) in (0..3100).rev().zip(&got) {
        let want = (i < 3000).then(|| format!("{i}").into_bytes());
        assert_eq!(v, &want, "key {i}");
    }
    // A large scan (over exact_scan_keys) is validated by buckets and still commits.
    let all = t
        .scan(Bound::Unbounded, Bound::Unbounded, usize::MAX, false)
        .await
        .unwrap();
    assert_eq!(all.len(), 3000);
    t.commit(Vec::new()).await.unwrap();
}

/// A table `t (id bigint primary key, g bigint)` with a non-unique index on `g`, and
/// the `(key, value)` pairs of `n` rows and their index entries (`g = id % 3`).
fn indexed_rows(
    n: i64,
) -> (
    datalayer_core::TableSchema,
    datalayer_kv::EntryLayout,
    WriteSet,
) {
    use datalayer_core::{ColumnDef, ColumnType, IndexDef, TableSchema, Value};
    use datalayer_kv::codec;
    let table = TableSchema {
        version: None,
        name: "t".into(),
        columns: vec![
            ColumnDef::new("id", ColumnType::I64, false),
            ColumnDef::new("g", ColumnType::I64, false),
        ],
        primary_key: vec![0],
        indexes: vec![IndexDef {
            name: "by_g".into(),
            columns: vec![1],
            unique: false,
            when: None,
        }],
    };
    let keys = codec::TableKeys::new(&table);
    let mut w = WriteSet::new();
    for id in 0..n {
        let row = vec![Value::I64(id), Value::I64(id % 3)];
        let pk = codec::pk_suffix(&table, &row);
        let entry = codec::index_key(&keys.indexes[0], &table, &table.indexes[0], &row, &pk);
        w.push((keys.row_key(&table, &row), Some(codec::encode_row(&row))));
        w.push((entry, Some(pk)));
    }
    let layout = datalayer_kv::EntryLayout::of(&table, &table.indexes[0]).unwrap();
    (table, layout, w)
}

/// An index scan by layout of more entries than the scan function serves itself reads
/// the range in one call and the rows in a second round trip; when no commit came
/// between the two (the counter is unchanged), they read one state, and a read-only
/// use of the transaction commits without validation even after a row it read
/// changed. A key in the range that is not an entry of the layout is `Corrupted`.
#[tokio::test]
async fn an_index_scan_by_layout_in_two_trips_of_one_state_needs_no_validation() {
    let (engine, _g) = fresh("").await;
    let s = engine.store().as_ref();
    let (table, layout, rows) = indexed_rows(200);
    s.begin(rw()).await.unwrap().commit(rows).await.unwrap();
    let ix = datalayer_kv::codec::index_prefix(&table, &table.indexes[0]);
    let end = datalayer_kv::codec::prefix_end(&ix).unwrap();
    let rp = datalayer_kv::codec::row_prefix(&table);
    let range = || (ix.clone(), end.clone(), rp.clone());
    // The first scan goes through the scan function, which hands the range back; the
    // later ones read the range with ZRANGE at once (the index's scans are large).
    let ro = TxOptions {
        isolation: None,
        read_only: true,
    };
    for (round, opts) in [rw(), ro, rw(), ro].into_iter().enumerate() {
        let mut t = s.begin(opts).await.unwrap();
        let got = scan_index(t.as_mut(), range(), Some(&layout))
            .await
            .unwrap();
        assert_eq!(got.len(), 200);
        assert!(got.iter().all(|(_, _, row)| row.is_some()));
        // Change a row it read: a transaction validated at commit would fail.
        let changed = [rp.as_slice(), &got[5 + round].1].concat();
        put_bytes(s, changed, b"other".to_vec()).await;
        t.commit(Vec::new()).await.unwrap();
    }
    // A second read makes the first one count: the changed row fails the commit.
    let mut t = s.begin(ro).await.unwrap();
    let got = scan_index(t.as_mut(), range(), Some(&layout))
        .await
        .unwrap();
    put_bytes(s, [rp.as_slice(), &got[9].1].concat(), b"again".to_vec()).await;
    t.get(b"zz").await.unwrap();
    assert_conflict(t, Vec::new()).await;

    // A key of another shape inside the range.
    let mut stray = ix.clone();
    stray.push(9);
    put_bytes(s, stray, b"x".to_vec()).await;
    let mut t = s.begin(rw()).await.unwrap();
    let e = scan_index(t.as_mut(), range(), Some(&layout))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupted, "{e}");
    // Without the layout the same range is read as it is.
    assert_eq!(
        scan_index(t.as_mut(), range(), None).await.unwrap().len(),
        201
    );
}

/// Up to 1,000 entries of the index range `(start, end)` with their rows under
/// `row_prefix`.
async fn scan_index(
    t: &mut dyn KvTxn,
    (start, end, row_prefix): (Vec<u8>, Vec<u8>, Vec<u8>),
    layout: Option<&datalayer_kv::EntryLayout>,
) -> datalayer_core::Result<Vec<(Vec<u8>, Vec<u8>, Option<Vec<u8>>)>> {
    t.scan_with_targets(
        Bound::Included(&start),
        Bound::Excluded(&end),
        1000,
        false,
        &row_prefix,
        layout,
    )
    .await
}

async fn put_bytes(store: &dyn KvStore, key: Vec<u8>, value: Vec<u8>) {
    let t = store.begin(rw()).await.unwrap();
    t.commit(vec![(key, Some(value))]).await.unwrap();
}
