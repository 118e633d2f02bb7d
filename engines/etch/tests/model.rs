//! Differential fuzzing: random sequences of commits, reads, range scans, reopens,
//! crashes and checkpoints, checked against a `BTreeMap` model.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;

use common::CrashFs;
use datalayer_etch::storage::{FlushPolicy, Snapshot, Store, StoreOptions};
use proptest::prelude::*;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Commit(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Get(Vec<u8>),
    Range(Bound<Vec<u8>>, Bound<Vec<u8>>, bool),
    /// Begin a transaction, read through it, drop it without committing.
    Abandon(Vec<u8>),
    Reopen,
    /// Power loss: reopen from durable bytes only.
    Crash,
    Checkpoint,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // Few distinct bytes and short keys: many collisions, prefixes and edge bytes.
    prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', b'b', 0xff]), 0..4)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..40)
}

fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![
        Just(Bound::Unbounded),
        key().prop_map(Bound::Included),
        key().prop_map(Bound::Excluded),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec((key(), prop::option::weighted(0.75, value())), 0..6)
            .prop_map(Op::Commit),
        3 => key().prop_map(Op::Get),
        3 => (bound(), bound(), any::<bool>()).prop_map(|(a, b, r)| Op::Range(a, b, r)),
        1 => key().prop_map(Op::Abandon),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Checkpoint),
    ]
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn model_range(
    m: &Model,
    lo: &Bound<Vec<u8>>,
    hi: &Bound<Vec<u8>>,
    rev: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let inverted = match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
        _ => false,
    };
    if inverted {
        return Vec::new();
    }
    let mut v: Vec<_> = m
        .range::<[u8], _>((as_ref(lo), as_ref(hi)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if rev {
        v.reverse();
    }
    v
}

fn check_all(snap: &Snapshot, model: &Model) {
    let got: Model = snap.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    assert_eq!(&got, model);
    assert_eq!(snap.len(), model.len());
}

fn run(ops: Vec<Op>, flush: FlushPolicy, compact_after_bytes: u64, in_memory: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let opts = StoreOptions {
            flush,
            compact_after_bytes,
            ..StoreOptions::default()
        };
        let mut fs = CrashFs::new();
        let open = |fs: &CrashFs| {
            if in_memory {
                Store::memory()
            } else {
                Store::open_dir(fs.dir(), opts.clone()).unwrap()
            }
        };
        let mut store = open(&fs);
        let mut model = Model::new();
        let mut seq = 0u64;
        for op in ops {
            match op {
                Op::Commit(writes) => {
                    let txn = store.begin_write().await;
                    for (k, v) in &writes {
                        match v {
                            Some(v) => model.insert(k.clone(), v.clone()),
                            None => model.remove(k),
                        };
                    }
                    let empty = writes.is_empty();
                    let s = txn.commit(writes).await.unwrap();
                    if !empty {
                        seq += 1;
                    }
                    assert_eq!(s, seq);
                    // Committed and acknowledged: visible under every policy.
                    assert_eq!(store.snapshot().seq(), seq);
                }
                Op::Get(k) => {
                    assert_eq!(store.snapshot().get(&k), model.get(&k).map(Vec::as_slice));
                }
                Op::Range(lo, hi, rev) => {
                    let snap = store.snapshot();
                    let got: Vec<(Vec<u8>, Vec<u8>)> = snap
                        .range(as_ref(&lo), as_ref(&hi), rev)
                        .map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .collect();
                    assert_eq!(
                        got,
                        model_range(&model, &lo, &hi, rev),
                        "{lo:?}..{hi:?} rev={rev}"
                    );
                }
                Op::Abandon(k) => {
                    let txn = store.begin_write().await;
                    assert_eq!(txn.base().get(&k), model.get(&k).map(Vec::as_slice));
                    drop(txn);
                }
                Op::Reopen => {
                    if !in_memory {
                        drop(store);
                        fs = fs.restart();
                        store = open(&fs);
                        check_all(&store.snapshot(), &model);
                        assert_eq!(store.snapshot().seq(), seq);
                    }
                }
                Op::Crash => {
                    // Only EveryCommit promises that acknowledged commits survive power loss.
                    if !in_memory && flush == FlushPolicy::EveryCommit {
                        let image = fs.crash(None);
                        drop(store);
                        fs = image;
                        store = open(&fs);
                        check_all(&store.snapshot(), &model);
                        assert_eq!(store.snapshot().seq(), seq);
                    }
                }
                Op::Checkpoint => store.checkpoint().unwrap(),
            }
        }
        check_all(&store.snapshot(), &model);
        if !in_memory {
            store.close().unwrap();
            drop(store);
            let store = open(&fs.restart());
            check_all(&store.snapshot(), &model);
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_commit_matches_model(ops in prop::collection::vec(op(), 1..60), small in any::<bool>()) {
        run(ops, FlushPolicy::EveryCommit, if small { 200 } else { 64 << 20 }, false);
    }

    #[test]
    fn never_flush_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, FlushPolicy::Never, 300, false);
    }

    #[test]
    fn memory_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, FlushPolicy::EveryCommit, 0, true);
    }
}
