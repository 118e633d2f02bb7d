//! Schema evolution on a populated table while a writer keeps inserting.
//!
//! Version 1 of `products` is loaded; version 2 adds a column with a default, a
//! nullable column, a unique index, a conditional index and a composite one. The
//! example prints the plan, applies it while a writer inserts through the version-1
//! declaration (switching to version 2 when the engine refuses the old one), then
//! checks every row and every index, and exits non-zero on any mismatch.
//!
//! ```text
//! cargo run --example evolve                        # etch, in a temporary directory
//! cargo run --example evolve -- --engine sqlite     # a temporary SQLite file
//! cargo run --example evolve -- --engine postgres   # schema evolve_<pid> on DATALAYER_PG_URL
//! cargo run --example evolve -- --engine redis      # namespace evolve_<pid> on DATALAYER_REDIS_URL
//! cargo run --example evolve --features tikv -- --engine tikv   # an in-process TiKV test cluster
//! ```

use anyhow::{Context, bail, ensure};
use clap::{Parser, ValueEnum};
use datalayer::{Db, ErrorKind, Table, query_group};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Version 1.
#[derive(Table, Clone, Debug)]
#[table(name = "products")]
struct ProductV1 {
    #[pk]
    id: i64,
    name: String,
    category: String,
    price_cents: i64,
}

/// Version 2: `stock` (default 0) and `sku` (nullable) added; `name` unique; the
/// conditional index `premium` over the expensive products; `by_category_price`.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "products")]
#[index(name = "by_name", fields(name), unique)]
#[index(name = "premium", fields(price_cents), when = |p| p.price_cents >= 50_000)]
#[index(name = "by_category_price", fields(category, price_cents))]
struct ProductV2 {
    #[pk]
    id: i64,
    name: String,
    category: String,
    price_cents: i64,
    #[column(default = 0)]
    stock: i32,
    sku: Option<String>,
}

#[query_group]
impl ProductV2 {
    fn named(name: &str) -> Option<ProductV2> {
        Self::filter(|p| p.name == name)
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Engine {
    Etch,
    Sqlite,
    Postgres,
    Redis,
    Tikv,
}

#[derive(Parser, Debug)]
#[command(about = "Evolve a populated table's schema online and check every row and index")]
struct Args {
    /// The engine (each run uses a fresh store and removes it afterwards).
    #[arg(long, value_enum, default_value = "etch")]
    engine: Engine,
    /// Rows of version 1 loaded before the change.
    #[arg(long, default_value_t = 20_000)]
    rows: i64,
}

fn v1(id: i64) -> ProductV1 {
    ProductV1 {
        id,
        name: format!("product-{id:07}"),
        category: ["books", "games", "tools", "toys"][(id % 4) as usize].into(),
        price_cents: (id * 7_919) % 100_000,
    }
}

/// A fresh store for `engine`, and what removes it.
struct Store {
    url: String,
    _dir: Option<tempfile::TempDir>,
    #[cfg(feature = "tikv")]
    _cluster: Option<datalayer_tikv_testkit::TestCluster>,
}

impl Store {
    /// A store at `url` with no cluster (`dir`: its temporary directory, if any).
    fn at(url: String, dir: Option<tempfile::TempDir>) -> Store {
        Store {
            url,
            _dir: dir,
            #[cfg(feature = "tikv")]
            _cluster: None,
        }
    }
}

async fn store(engine: Engine) -> anyhow::Result<Store> {
    let pid = std::process::id();
    let tmp = || tempfile::tempdir().context("temporary directory");
    let env = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.into());
    Ok(match engine {
        Engine::Etch => {
            let d = tmp()?;
            Store::at(
                format!("etch://{}", d.path().join("etch").display()),
                Some(d),
            )
        }
        Engine::Sqlite => {
            let d = tmp()?;
            Store::at(
                format!("sqlite://{}", d.path().join("evolve.db").display()),
                Some(d),
            )
        }
        Engine::Postgres => {
            let base = env(
                "DATALAYER_PG_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            );
            Store::at(
                datalayer::with_params(&base, &format!("schema=evolve_{pid}")),
                None,
            )
        }
        Engine::Redis => {
            let base = env("DATALAYER_REDIS_URL", "redis://127.0.0.1:6379");
            Store::at(
                datalayer::with_params(&base, &format!("namespace=evolve_{pid}")),
                None,
            )
        }
        #[cfg(feature = "tikv")]
        Engine::Tikv => {
            let c = datalayer_tikv_testkit::TestCluster::start(Default::default()).await?;
            let url = format!("tikv://{}?namespace=evolve", c.pd_addr());
            Store {
                _cluster: Some(c),
                ..Store::at(url, None)
            }
        }
        #[cfg(not(feature = "tikv"))]
        Engine::Tikv => bail!("build with `--features tikv` for the TiKV engine"),
    })
}

async fn remove(engine: Engine, url: &str) -> anyhow::Result<()> {
    match engine {
        Engine::Postgres => {
            let base = url.split('?').next().unwrap_or(url);
            let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls).await?;
            let task = tokio::spawn(conn);
            let schema = format!("evolve_{}", std::process::id());
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await?;
            drop(client);
            let _ = task.await;
        }
        Engine::Redis => {
            let opts = datalayer::redis::RedisOptions::from_url(url)?;
            datalayer::redis::destroy_namespace(&opts).await?;
        }
        _ => {}
    }
    Ok(())
}

/// Inserts through version 1 until it is refused, then through version 2; returns the
/// ids whose insert was acknowledged.
async fn writer(old: Db, new: Db, stop: Arc<AtomicBool>, first: i64) -> anyhow::Result<Vec<i64>> {
    let mut acked = Vec::new();
    let (mut id, mut migrated, mut refused) = (first, false, 0u32);
    while !stop.load(Ordering::Acquire) {
        let r = if migrated {
            let p = v1(id);
            let row = ProductV2 {
                id,
                name: p.name,
                category: p.category,
                price_cents: p.price_cents,
                stock: 5,
                sku: Some(format!("SKU-{id}")),
            };
            new.repo::<ProductV2>().insert(&row).await
        } else {
            old.repo::<ProductV1>().insert(&v1(id)).await
        };
        match r {
            Ok(()) => {
                acked.push(id);
                id += 1;
                refused = 0;
            }
            // `Conflict`: a KV engine holds writers of the table during its backfill;
            // `InvalidInput`: the old declaration is refused after the change, the new
            // one until it is applied.
            Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::InvalidInput) => {
                migrated |= e.kind() == ErrorKind::InvalidInput;
                refused += 1;
                if refused > 60_000 {
                    bail!("the writer was refused for a minute: {e}");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(acked)
}

async fn run(args: &Args, url: &str) -> anyhow::Result<()> {
    let old = datalayer::builder(url)
        .table::<ProductV1>()
        .connect()
        .await?;
    let t0 = Instant::now();
    for chunk in (1..=args.rows).collect::<Vec<_>>().chunks(1_000) {
        let rows: Vec<ProductV1> = chunk.iter().map(|&i| v1(i)).collect();
        old.repo::<ProductV1>().insert_many(&rows).await?;
    }
    println!(
        "loaded {} rows of version 1 in {:.2?}",
        args.rows,
        t0.elapsed()
    );
    // Version 2 on the same engine instance: the writer's old declaration is refused
    // by it once the change is applied.
    let db = Db::with_engine(old.engine().clone())
        .table::<ProductV2>()
        .queries::<ProductV2>()
        .connect()
        .await?;
    let plan = db.plan_migration().await?;
    print!("plan:\n{plan}");
    ensure!(plan.is_safe(), "the plan has unsafe steps");
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(old.clone(), db.clone(), stop.clone(), args.rows + 1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    db.migrate(&plan).await?;
    let took = t.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Release);
    let acked = w.await.context("writer task")??;
    println!(
        "applied in {took:.2?} ({:.0} rows/s); the writer's {} inserts were acknowledged",
        args.rows as f64 / took.as_secs_f64(),
        acked.len()
    );
    for e in db.catalog().await? {
        if e.schema.name == "products" {
            println!("products: schema version {}", e.version);
            for h in &e.history {
                println!("  v{} step {}: {}", h.version, h.step, h.description);
            }
        }
    }
    verify(&db, args.rows, &acked).await?;
    println!("every row and every index checks out");
    db.close().await?;
    Ok(())
}

/// Every row is there with the declared default, and every index holds exactly the
/// rows it should, in order.
async fn verify(db: &Db, loaded: i64, acked: &[i64]) -> anyhow::Result<()> {
    let repo = db.repo::<ProductV2>();
    let all = repo.scan().all().await?;
    let ids: BTreeSet<i64> = all.iter().map(|p| p.id).collect();
    let want: BTreeSet<i64> = (1..=loaded).chain(acked.iter().copied()).collect();
    if ids != want {
        let missing: Vec<_> = want.difference(&ids).take(5).collect();
        let extra: Vec<_> = ids.difference(&want).take(5).collect();
        bail!("rows differ: missing {missing:?}, unexpected {extra:?}");
    }
    for p in &all {
        let base = v1(p.id);
        ensure!(
            p.name == base.name && p.price_cents == base.price_cents,
            "row {} changed: {p:?}",
            p.id
        );
        if p.id <= loaded {
            ensure!(
                p.stock == 0 && p.sku.is_none(),
                "row {}: default not applied: {p:?}",
                p.id
            );
        }
        let found = ProductV2::named(db, &p.name).await?;
        ensure!(
            found.as_ref() == Some(p),
            "by_name does not find row {}",
            p.id
        );
    }
    let mut premium: Vec<(i64, i64)> = all
        .iter()
        .filter(|p| p.price_cents >= 50_000)
        .map(|p| (p.price_cents, p.id))
        .collect();
    premium.sort_unstable();
    let got: Vec<(i64, i64)> = repo
        .find("premium")
        .all()
        .await?
        .iter()
        .map(|p| (p.price_cents, p.id))
        .collect();
    ensure!(
        got == premium,
        "premium index: {} entries, want {}",
        got.len(),
        premium.len()
    );
    let mut by_cat: Vec<(String, i64, i64)> = all
        .iter()
        .map(|p| (p.category.clone(), p.price_cents, p.id))
        .collect();
    by_cat.sort();
    let got: Vec<(String, i64, i64)> = repo
        .find("by_category_price")
        .all()
        .await?
        .into_iter()
        .map(|p| (p.category, p.price_cents, p.id))
        .collect();
    ensure!(got == by_cat, "by_category_price differs");
    let dup = ProductV2 {
        id: -1,
        ..all[0].clone()
    };
    let err = repo.insert(&dup).await.expect_err("a duplicate name");
    ensure!(
        err.kind() == ErrorKind::AlreadyExists,
        "by_name is not unique: {err}"
    );
    ensure!(db.plan_migration().await?.is_empty(), "steps left to apply");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let s = store(args.engine).await?;
    println!("engine {:?} at {}", args.engine, datalayer::redact(&s.url));
    remove(args.engine, &s.url).await?;
    let r = run(&args, &s.url).await;
    remove(args.engine, &s.url).await?;
    r
}
