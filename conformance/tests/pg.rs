//! The shared conformance suite on PostgreSQL.
//!
//! Runs against the server named by `DATALAYER_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Every case works in its own schema
//! `dl_<random>` (the engine's `schema=` option: `search_path` on every connection),
//! dropped with `CASCADE` at the end of the case. When the server cannot be reached,
//! every case fails with a message saying how to start it; nothing is skipped.

use async_trait::async_trait;
use datalayer::{Capability, Engine};
use datalayer_conformance::{Namespace, Target, trials};
use datalayer_pg::{PgEngine, PgOptions};
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

struct PgNs {
    url: String,
    schema: String,
}

fn with_params(url: &str, params: &str) -> String {
    if url.contains('?') {
        format!("{url}&{params}")
    } else {
        format!("{url}?{params}")
    }
}

#[async_trait]
impl Namespace for PgNs {
    async fn open(&self) -> datalayer::Result<Arc<dyn Engine>> {
        let url = with_params(&self.url, &format!("schema={}&pool_size=4", self.schema));
        Ok(Arc::new(PgEngine::open(&url).await?))
    }
    fn reopenable(&self) -> bool {
        true
    }
    async fn destroy(&self) -> datalayer::Result<()> {
        let opts = PgOptions::from_url(&self.url)?;
        let (client, conn) = opts
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| datalayer::Error::connection_lost(e.to_string()))?;
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ))
            .await
            .map_err(|e| datalayer::Error::engine("postgres", e.to_string()))?;
        drop(client);
        let _ = task.await;
        Ok(())
    }
}

#[async_trait]
impl Target for Pg {
    async fn namespace(&self) -> anyhow::Result<Box<dyn Namespace>> {
        if let Some(why) = &self.down {
            anyhow::bail!("{why}");
        }
        Ok(Box::new(PgNs {
            url: self.url.clone(),
            schema: format!("dl_{}", datalayer_conformance::random_suffix()),
        }))
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
        let ns = PgNs {
            url: url.to_owned(),
            schema: format!("dl_probe_{}", datalayer_conformance::random_suffix()),
        };
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
