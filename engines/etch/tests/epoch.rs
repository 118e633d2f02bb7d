//! Issue 9, defect 6 (change feed): commits lost in a power loss (here under
//! `FlushPolicy::Never`) after a reader saw their change positions must not have
//! those positions reused for different changes.

mod common;

use std::sync::Arc;

use common::CrashFs;
use datalayer_core::Db;
use datalayer_etch::{EtchOptions, FlushPolicy, StoreOptions};

#[derive(datalayer_macros::Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core", name = "notes")]
struct Note {
    #[pk]
    id: i64,
    text: String,
}

async fn connect(fs: &CrashFs) -> Db {
    let opts = EtchOptions {
        store: StoreOptions {
            flush: FlushPolicy::Never,
            ..StoreOptions::default()
        },
        ..EtchOptions::default()
    };
    let engine = datalayer_etch::open_dir(fs.dir(), opts).await.unwrap();
    Db::with_engine(Arc::new(engine))
        .table::<Note>()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn positions_of_lost_commits_are_not_reused() {
    let fs = CrashFs::new();
    let db = connect(&fs).await;
    db.enable_changes("notes").await.unwrap();
    let notes = db.repo::<Note>();
    for id in 1..=3 {
        let text = format!("lost {id}");
        notes.insert(&Note { id, text }).await.unwrap();
    }
    // A reader saw the three changes ...
    let seen = db.read_changes("notes", 0, 100).await.unwrap();
    assert_eq!(seen.len(), 3);
    let last_seen = seen.last().unwrap().position;
    // ... then the power went out before anything was fsynced.
    let image = fs.crash(None);
    drop(db);

    let db = connect(&image).await;
    // The capture flag was lost with the rest: the application turns it on at start.
    db.enable_changes("notes").await.unwrap();
    let notes = db.repo::<Note>();
    assert_eq!(
        notes.get(1i64).await.unwrap(),
        None,
        "the commits were lost"
    );
    let text = "kept".to_string();
    notes.insert(&Note { id: 9, text }).await.unwrap();
    let after = db.read_changes("notes", last_seen, 100).await.unwrap();
    assert_eq!(
        after.len(),
        1,
        "the reader resuming after {last_seen} misses the new change: {:?}",
        db.read_changes("notes", 0, 100).await.unwrap()
    );
    assert!(after[0].position > last_seen);
    assert_eq!(after[0].get("id"), Some(&datalayer_core::Value::I64(9)));
}
