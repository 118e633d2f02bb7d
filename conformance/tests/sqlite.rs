//! The shared conformance suite on SQLite: in memory, and on disk with autocommit
//! reads on the caller's thread (the default) and on the reader threads.

use async_trait::async_trait;
use datalayer::{Capability, Engine};
use datalayer_conformance::url::UrlNamespace;
use datalayer_conformance::{Namespace, Target, trials};
use datalayer_sqlite::SqliteEngine;
use std::path::PathBuf;
use std::sync::Arc;

struct Memory;

fn capability(durable: bool) -> Capability {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = if durable {
        format!("sqlite://{}", dir.path().join("cap.db").display())
    } else {
        "sqlite::memory:".to_owned()
    };
    rt.block_on(async {
        let engine = SqliteEngine::open(&url).await.unwrap();
        let cap = engine.capability();
        engine.close().await.unwrap();
        cap
    })
}

#[async_trait]
impl Target for Memory {
    async fn namespace(&self) -> anyhow::Result<Box<dyn Namespace>> {
        Ok(Box::new(UrlNamespace::memory("sqlite::memory:")))
    }
    fn capability(&self) -> Capability {
        capability(false)
    }
    fn reopenable(&self) -> bool {
        false
    }
}

struct Disk {
    root: PathBuf,
    /// URL parameters.
    params: &'static str,
}
#[async_trait]
impl Target for Disk {
    async fn namespace(&self) -> anyhow::Result<Box<dyn Namespace>> {
        let file = self.root.join(format!(
            "ns-{}.sqlite",
            datalayer_conformance::random_suffix()
        ));
        Ok(Box::new(UrlNamespace::sqlite_file(&file, self.params)))
    }
    fn capability(&self) -> Capability {
        capability(true)
    }
    fn reopenable(&self) -> bool {
        true
    }
}

fn main() -> std::process::ExitCode {
    let root = tempfile::Builder::new()
        .prefix("dl-sqlite-conformance-")
        .tempdir()
        .expect("temp dir");
    let mut all = trials("memory", Arc::new(Memory));
    all.extend(trials(
        "disk",
        Arc::new(Disk {
            root: root.path().to_owned(),
            params: "readers=2",
        }),
    ));
    all.extend(trials(
        "disk-reader-threads",
        Arc::new(Disk {
            root: root.path().to_owned(),
            params: "readers=2&caller_reads=false",
        }),
    ));
    let code = datalayer_conformance::main(all);
    drop(root);
    code
}
