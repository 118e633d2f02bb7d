//! The run's PostgreSQL server (cargo feature `pg`): connection settings for the
//! PostgreSQL targets, server facts for the report, and one fresh schema per
//! place, all dropped again (also after a panic).
//!
//! The server is named by `DATALAYER_PG_URL` (default [`DEFAULT_URL`]);
//! datalayer's engine parameters in it (`pool_size`, `pipeline_depth`, ..) reach
//! the engine only. Every schema is `dl_bench_<run>_<target>_<n>`, with one random
//! `<run>` per process.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

use crate::leftovers::{self, Leftovers};

/// Default server when `DATALAYER_PG_URL` is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The table every raw-SQL target creates (datalayer's engine renders its own DDL
/// from the `DlUser` declaration: the same columns, primary key and index, its
/// text columns in the `C` collation; the catalog table `_dl_catalog` is its own).
pub const USERS_DDL: &str = "CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT NOT NULL, \
                             email TEXT NOT NULL, age INT NOT NULL); \
                             CREATE INDEX users_by_age ON users (age)";

/// The INSERT every raw-SQL target prepares (datalayer's engine renders the same
/// statement with quoted identifiers).
pub const INSERT_SQL: &str = "INSERT INTO users (id, name, email, age) VALUES ($1, $2, $3, $4)";

/// The point read every raw-SQL target prepares.
pub const SELECT_SQL: &str = "SELECT id, name, email, age FROM users WHERE id = $1";

/// Server facts for the report: version, `fsync`, `synchronous_commit`.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `server_version`.
    pub version: String,
    /// `fsync` and `synchronous_commit`, as `SHOW` prints them.
    pub durability: String,
}

/// The server of the run: where to connect, what it is, and the schemas to drop.
pub struct PgServer {
    /// `DATALAYER_PG_URL` as given (datalayer's engine parameters allowed).
    pub url: String,
    /// The server settings as tokio-postgres understands them (engine parameters
    /// removed, through `PgOptions::from_url`).
    pub config: tokio_postgres::Config,
    /// The engine's `pipeline_depth` for this URL (32 unless the URL sets it): the
    /// window the raw target's `insert_many` uses too.
    pub pipeline_depth: usize,
    /// Version and durability settings.
    pub info: ServerInfo,
    rt: Arc<Runtime>,
    client: Client,
    schemas: Leftovers,
}

pub use datalayer::with_params;

/// Tells how to start a server and fails.
fn unreachable(url: &str, e: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach PostgreSQL at {} ({e}).\n\
         Start a server (Debian: `service postgresql start`, or `pg_ctlcluster 15 main start`; \
         trust auth for user postgres and a database `test`: `createdb -U postgres test`), \
         or point DATALAYER_PG_URL at one.",
        datalayer::redact(url)
    )
}

/// Connects with `config` (at most 5 s), spawns the connection task on the
/// current runtime and, with `schema`, sets `search_path` to it.
///
/// # Errors
/// The server cannot be reached, or `SET search_path` fails.
pub async fn connect(
    config: &tokio_postgres::Config,
    schema: Option<&str>,
) -> anyhow::Result<Client> {
    let (client, conn) = tokio::time::timeout(Duration::from_secs(5), config.connect(NoTls))
        .await
        .map_err(|_| anyhow::anyhow!("connect timed out after 5 s"))??;
    tokio::spawn(conn);
    if let Some(s) = schema {
        client
            .batch_execute(&format!("SET search_path TO \"{s}\""))
            .await?;
    }
    Ok(client)
}

impl PgServer {
    /// Connects to `DATALAYER_PG_URL` (or [`DEFAULT_URL`]) and reads the server
    /// facts.
    ///
    /// # Errors
    /// The URL does not parse, or the server cannot be reached (the message says
    /// how to start one).
    pub fn connect() -> anyhow::Result<Arc<Self>> {
        let url = std::env::var("DATALAYER_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let opts = datalayer::pg::PgOptions::from_url(&url)
            .map_err(|e| anyhow::anyhow!("DATALAYER_PG_URL: {e}"))?;
        let rt = crate::targets::runtime();
        let (client, info) = rt
            .block_on(async {
                let client = connect(&opts.config, None)
                    .await
                    .map_err(|e| unreachable(&url, &e))?;
                // A leftover lock (a panicked target's open transaction) must not
                // hang the clean-up forever.
                client.batch_execute("SET lock_timeout = '15s'").await?;
                let show = async |name: &str| -> anyhow::Result<String> {
                    let rows = client.simple_query(&format!("SHOW {name}")).await?;
                    Ok(rows
                        .iter()
                        .find_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(r) => {
                                r.get(0).map(str::to_owned)
                            }
                            _ => None,
                        })
                        .unwrap_or_default())
                };
                let info = ServerInfo {
                    version: show("server_version").await?,
                    durability: format!(
                        "fsync={}, synchronous_commit={}",
                        show("fsync").await?,
                        show("synchronous_commit").await?
                    ),
                };
                anyhow::Ok((client, info))
            })
            .context("connecting to PostgreSQL")?;
        let run = leftovers::run_id();
        eprintln!(
            "PostgreSQL {} at {} ({}), schemas dl_bench_{run}_*, pipeline_depth {}",
            info.version,
            datalayer::redact(&url),
            info.durability,
            opts.pipeline_depth
        );
        Ok(Arc::new(Self {
            url,
            config: opts.config,
            pipeline_depth: opts.pipeline_depth,
            info,
            rt,
            client,
            schemas: Leftovers::new(format!("dl_bench_{run}_")),
        }))
    }

    /// Creates the schema `dl_bench_<run>_<tag>` and remembers to drop it.
    ///
    /// # Errors
    /// The server refuses.
    pub fn create_schema(&self, tag: &str) -> anyhow::Result<String> {
        let name = self.schemas.add(tag);
        self.rt
            .block_on(
                self.client
                    .batch_execute(&format!("CREATE SCHEMA \"{name}\"")),
            )
            .with_context(|| format!("creating schema {name}"))?;
        Ok(name)
    }

    /// Drops the schema `name` (`CASCADE`) now.
    ///
    /// # Errors
    /// The server refuses (the schema stays on the list, for a second try at the
    /// end of the run).
    pub fn drop_schema(&self, name: &str) -> anyhow::Result<()> {
        let sql = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
        self.rt
            .block_on(self.client.batch_execute(&sql))
            .with_context(|| format!("dropping schema {name}"))?;
        self.schemas.forget(name);
        Ok(())
    }
}

impl Drop for PgServer {
    /// Drops every schema still on the list (after an error or a panic).
    fn drop(&mut self) {
        for s in self.schemas.take() {
            let sql = format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE");
            match self.rt.block_on(self.client.batch_execute(&sql)) {
                Ok(()) => eprintln!("  dropped schema {s}"),
                Err(e) => eprintln!("  WARNING: could not drop schema {s} ({e}); run `{sql}`"),
            }
        }
    }
}
