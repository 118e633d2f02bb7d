//! The conformance suite on etch: in memory and on disk (fsync every commit).

use async_trait::async_trait;
use datalayer::Capability;
use datalayer_conformance::url::UrlNamespace;
use datalayer_conformance::{Namespace, Target, trials};
use std::path::PathBuf;
use std::sync::Arc;

struct Memory;

#[async_trait]
impl Target for Memory {
    async fn namespace(&self) -> anyhow::Result<Box<dyn Namespace>> {
        Ok(Box::new(UrlNamespace::memory("etch::memory:")))
    }
    fn capability(&self) -> Capability {
        datalayer::Engine::capability(&datalayer_etch::memory())
    }
    fn reopenable(&self) -> bool {
        false
    }
}

struct Disk {
    root: PathBuf,
}
#[async_trait]
impl Target for Disk {
    async fn namespace(&self) -> anyhow::Result<Box<dyn Namespace>> {
        let dir = self
            .root
            .join(format!("ns-{}", datalayer_conformance::random_suffix()));
        Ok(Box::new(UrlNamespace::etch_dir(&dir, "")))
    }
    fn capability(&self) -> Capability {
        let mut c = datalayer::Engine::capability(&datalayer_etch::memory());
        c.durable = true;
        c
    }
    fn reopenable(&self) -> bool {
        true
    }
}

fn main() -> std::process::ExitCode {
    let root = tempfile::Builder::new()
        .prefix("dl-etch-conformance-")
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
