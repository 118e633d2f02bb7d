//! Shared helpers: a fresh schema per test on the server named by `DATALAYER_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`), a test table, raw clients.
#![allow(dead_code)]

use datalayer::{Db, Table, query_group};
use datalayer_pg::{PgEngine, PgOptions};
use std::sync::Arc;

/// An account with a balance (write-skew and increment tests).
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "accounts")]
#[index(name = "by_owner", fields(owner))]
pub struct Account {
    #[pk]
    pub id: i64,
    pub owner: String,
    pub balance: i64,
    pub on_call: bool,
    pub blob: Option<Vec<u8>>,
    pub ratio: f64,
}

impl Account {
    pub fn new(id: i64, owner: &str, balance: i64) -> Account {
        Account {
            id,
            owner: owner.into(),
            balance,
            on_call: true,
            blob: None,
            ratio: id as f64 / 3.0,
        }
    }
}

#[query_group]
impl Account {
    fn by_id(id: i64) -> Option<Account> {
        Self::filter(|a| a.id == id)
    }
    fn on_call_count() -> u64 {
        Self::filter(|a| a.on_call == true).count()
    }
    fn set_on_call(id: i64, v: bool) -> u64 {
        Self::filter(|a| a.id == id).update(|a| a.on_call = v)
    }
    fn add(id: i64, by: i64) -> u64 {
        Self::filter(|a| a.id == id).update(|a| a.balance = a.balance + by)
    }
    fn balance_of(id: i64) -> i64 {
        Self::filter(|a| a.id == id).select(|a| a.balance)
    }
}

pub fn base_url() -> String {
    std::env::var("DATALAYER_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub use datalayer::with_params;

fn random_suffix() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..10)
        .map(|_| (b'a' + r.random_range(0..26)) as char)
        .collect()
}

/// One test's schema: `dl_<random>`, dropped by [`Ns::drop_schema`].
pub struct Ns {
    pub url: String,
    pub schema: String,
}

impl Ns {
    /// A fresh schema name (created when the first engine opens).
    pub fn new() -> Ns {
        Ns {
            url: base_url(),
            schema: format!("dl_{}", random_suffix()),
        }
    }

    /// The engine URL for this schema, plus `params`.
    pub fn engine_url(&self, params: &str) -> String {
        with_params(
            &with_params(&self.url, &format!("schema={}", self.schema)),
            params,
        )
    }

    /// Opens an engine on this schema; panics with how to start the server when it is
    /// unreachable.
    pub async fn engine(&self, params: &str) -> PgEngine {
        match PgEngine::open(&self.engine_url(params)).await {
            Ok(e) => e,
            Err(e) => panic!(
                "cannot reach PostgreSQL at {} ({e}). Start it (Debian: `service postgresql start`) or set DATALAYER_PG_URL.",
                datalayer::redact(&self.url)
            ),
        }
    }

    /// A `Db` over this schema with `Account` and its queries registered.
    pub async fn db(&self, params: &str) -> Db {
        Db::with_engine(Arc::new(self.engine(params).await))
            .table::<Account>()
            .queries::<Account>()
            .connect()
            .await
            .unwrap()
    }

    /// A plain tokio-postgres client with the server's default `search_path` (not
    /// this schema): the "foreign writer".
    pub async fn raw(&self) -> tokio_postgres::Client {
        let opts = PgOptions::from_url(&self.url).unwrap();
        let (client, conn) = opts.config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    /// Drops the schema with everything in it.
    pub async fn drop_schema(&self) {
        self.raw()
            .await
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ))
            .await
            .unwrap();
    }
}

impl Drop for Ns {
    /// Drops the schema again when the test ends, also when it failed (panicked) before
    /// its own `drop_schema`: a failing test must not leave its schema behind. Runs on
    /// its own thread and runtime because `Drop` cannot await.
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(opts) = PgOptions::from_url(&url) else {
                    return;
                };
                if let Ok((client, conn)) = opts.config.connect(tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}
