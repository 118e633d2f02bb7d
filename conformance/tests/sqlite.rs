//! The shared conformance suite on SQLite: in memory and on disk.

use async_trait::async_trait;
use datalayer::{Capability, Engine};
use datalayer_conformance::{Namespace, Target, trials};
use datalayer_sqlite::{SqliteEngine, SqliteOptions};
use std::path::PathBuf;
use std::sync::Arc;

struct Memory;
struct MemoryNs;

#[async_trait]
impl Namespace for MemoryNs {
    async fn open(&self) -> datalayer::Result<Arc<dyn Engine>> {
        Ok(Arc::new(SqliteEngine::open("sqlite::memory:").await?))
    }
    fn reopenable(&self) -> bool {
        false
    }
    async fn destroy(&self) -> datalayer::Result<()> {
        Ok(())
    }
}

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
        Ok(Box::new(MemoryNs))
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
}
struct DiskNs {
    dir: PathBuf,
}

#[async_trait]
impl Namespace for DiskNs {
    async fn open(&self) -> datalayer::Result<Arc<dyn Engine>> {
        std::fs::create_dir_all(&self.dir)?;
        Ok(Arc::new(
            SqliteEngine::open_with(SqliteOptions::file(self.dir.join("db.sqlite")).readers(2))
                .await?,
        ))
    }
    fn reopenable(&self) -> bool {
        true
    }
    async fn destroy(&self) -> datalayer::Result<()> {
        Ok(std::fs::remove_dir_all(&self.dir)?)
    }
}

#[async_trait]
impl Target for Disk {
    async fn namespace(&self) -> anyhow::Result<Box<dyn Namespace>> {
        let dir = self
            .root
            .join(format!("ns-{}", datalayer_conformance::random_suffix()));
        Ok(Box::new(DiskNs { dir }))
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
        }),
    ));
    let code = datalayer_conformance::main(all);
    drop(root);
    code
}
