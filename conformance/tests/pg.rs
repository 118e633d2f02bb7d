//! The shared conformance suite on PostgreSQL.
//!
//! Runs against the server named by `DATALAYER_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Every case works in its own schema
//! `dl_<random>` (the engine's `schema=` option: `search_path` on every connection),
//! dropped with `CASCADE` at the end of the case. When the server cannot be reached,
//! every case fails with a message saying how to start it; nothing is skipped.

use async_trait::async_trait;
use datalayer::Capability;
use datalayer_conformance::url::UrlNamespace;
use datalayer_conformance::{Namespace, Target, trials};
use std::sync::Arc;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn base_url() -> String {
    std::env::var("DATALAYER_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn unreachable_help(url: &str, e: &dyn std::fmt::Display) -> String {
    format!(
        "cannot reach PostgreSQL at {} ({e}). Start a server (Debian: `service postgresql start`, \
         or `pg_ctlcluster 15 main start`; trust auth for user postgres, database `test`: \
         `createdb -U postgres test`), or point DATALAYER_PG_URL at one.",
        datalayer::redact(url)
    )
}

struct Pg {
    url: String,
    cap: Capability,
    /// Why the server is unusable, when it is.
    down: Option<String>,
}

#[async_trait]
impl Target for Pg {
    async fn namespace(&self) -> anyhow::Result<Box<dyn Namespace>> {
        if let Some(why) = &self.down {
            anyhow::bail!("{why}");
        }
        Ok(Box::new(UrlNamespace::pg_schema(
            &self.url,
            &format!("dl_{}", datalayer_conformance::random_suffix()),
        )))
    }
    fn capability(&self) -> Capability {
        self.cap
    }
    fn reopenable(&self) -> bool {
        true
    }
}

/// Opens the server once, in a throwaway schema: its capability, or why it cannot
/// be used.
fn probe(url: &str) -> (Capability, Option<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ns = UrlNamespace::pg_schema(
            url,
            &format!("dl_probe_{}", datalayer_conformance::random_suffix()),
        );
        match ns.open().await {
            Ok(engine) => {
                let cap = engine.capability();
                let _ = engine.close().await;
                let _ = ns.destroy().await;
                (cap, None)
            }
            Err(e) => (Capability::default(), Some(unreachable_help(url, &e))),
        }
    })
}

fn main() -> std::process::ExitCode {
    let url = base_url();
    let (cap, down) = probe(&url);
    if let Some(why) = &down {
        eprintln!("{why}");
    }
    datalayer_conformance::main(trials("pg", Arc::new(Pg { url, cap, down })))
}
