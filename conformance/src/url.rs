//! A [`Target`] for any datalayer URL, and the namespaces the engine test files share.
//!
//! [`UrlTarget::probe`] takes the URL of a store and gives every case a fresh namespace
//! derived from it, opened through the URL registry (`datalayer::builder`):
//!
//! | URL | namespace of one case | removed by |
//! |-----|-----------------------|------------|
//! | `etch::memory:`, `sqlite::memory:` | a new in-memory store (not reopenable) | dropping it |
//! | `etch://DIR` | the directory `DIR/ns-<random>` | deleting the directory |
//! | `sqlite://FILE` | the file `<stem>-<random>.<ext>` next to `FILE` | deleting the file and its `-wal`, `-shm`, `-journal` |
//! | `postgres://…` | the schema `dl_<random>` (`schema=` option) | `DROP SCHEMA … CASCADE` |
//! | `redis://…?namespace=NS` | the namespace `NS_<random>` (`dlc_<random>` without `NS`) | [`datalayer::redis::destroy_namespace`] |
//!
//! The URL's other parameters are kept. TiKV URLs are refused (`tikv://`: run
//! `cargo test -p datalayer-conformance --test tikv`).

use crate::{Namespace, Target, random_suffix};
use async_trait::async_trait;
use datalayer::{Capability, Engine};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use datalayer::with_params;

/// `url` without the query parameter `key`, and that parameter's value if it had one.
fn take_param(url: &str, key: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut value = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            if k == key {
                value = Some(v.to_owned());
                false
            } else {
                !kv.is_empty()
            }
        })
        .collect();
    if rest.is_empty() {
        (base.to_owned(), value)
    } else {
        (format!("{base}?{}", rest.join("&")), value)
    }
}

/// What removing a namespace takes.
#[derive(Clone, Debug)]
enum Cleanup {
    /// Nothing: an in-memory store goes with its engine.
    Nothing,
    /// Delete this directory.
    Dir(PathBuf),
    /// Delete this SQLite file and its `-wal`, `-shm` and `-journal` files.
    SqliteFile(PathBuf),
    /// Drop the schema named in the URL (`schema=`) with `CASCADE`.
    PgSchema,
    /// Remove every key of the namespace named in the URL (`namespace=`).
    RedisNamespace,
}

/// One case's namespace: the URL that opens it, and how to remove it.
#[derive(Clone, Debug)]
pub struct UrlNamespace {
    url: String,
    reopenable: bool,
    cleanup: Cleanup,
}

impl UrlNamespace {
    /// A fresh in-memory store per [`Namespace::open`] (`etch::memory:`,
    /// `sqlite::memory:`); not reopenable.
    pub fn memory(url: &str) -> Self {
        UrlNamespace {
            url: url.to_owned(),
            reopenable: false,
            cleanup: Cleanup::Nothing,
        }
    }

    /// An etch store in `dir` (created when opened), with the query of `params`
    /// (`""` for none); [`Namespace::destroy`] deletes the directory.
    pub fn etch_dir(dir: &Path, params: &str) -> Self {
        UrlNamespace {
            url: with_params(&format!("etch://{}", dir.display()), params),
            reopenable: true,
            cleanup: Cleanup::Dir(dir.to_owned()),
        }
    }

    /// A SQLite database in `file`, with the query of `params` (`""` for none);
    /// [`Namespace::destroy`] deletes the file and its `-wal`, `-shm` and `-journal`.
    pub fn sqlite_file(file: &Path, params: &str) -> Self {
        UrlNamespace {
            url: with_params(&format!("sqlite://{}", file.display()), params),
            reopenable: true,
            cleanup: Cleanup::SqliteFile(file.to_owned()),
        }
    }

    /// The schema `schema` of the PostgreSQL server at `url` (a pool of 4 connections);
    /// [`Namespace::destroy`] drops it with `CASCADE`.
    pub fn pg_schema(url: &str, schema: &str) -> Self {
        UrlNamespace {
            url: with_params(url, &format!("schema={schema}&pool_size=4")),
            reopenable: true,
            cleanup: Cleanup::PgSchema,
        }
    }

    /// The namespace `namespace` of the Redis server at `url` (which names no
    /// namespace); [`Namespace::destroy`] removes its keys.
    pub fn redis(url: &str, namespace: &str) -> Self {
        UrlNamespace {
            url: with_params(url, &format!("namespace={namespace}")),
            reopenable: true,
            cleanup: Cleanup::RedisNamespace,
        }
    }

    /// The URL that opens the namespace.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Deletes `path`; a missing one is not an error.
fn remove_file(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Drops the schema named by the `schema=` option of `url` (a `postgres://` URL) with
/// `CASCADE`; nothing when there is none.
///
/// # Errors
/// `InvalidInput` for a URL the engine refuses; `ConnectionLost` for an unreachable
/// server; `Engine` for the server's error.
pub async fn drop_pg_schema(url: &str) -> datalayer::Result<()> {
    let opts = datalayer::pg::PgOptions::from_url(url)?;
    let Some(schema) = &opts.schema else {
        return Ok(());
    };
    let (client, conn) = opts
        .config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| datalayer::Error::connection_lost(e.to_string()))?;
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .map_err(|e| datalayer::Error::engine("postgres", e.to_string()))?;
    drop(client);
    let _ = task.await;
    Ok(())
}

#[async_trait]
impl Namespace for UrlNamespace {
    async fn open(&self) -> datalayer::Result<Arc<dyn Engine>> {
        if let Cleanup::Dir(dir) = &self.cleanup
            && let Some(parent) = dir.parent()
        {
            std::fs::create_dir_all(parent)?;
        }
        let db = datalayer::builder(self.url.as_str()).connect().await?;
        Ok(db.engine().clone())
    }
    fn reopenable(&self) -> bool {
        self.reopenable
    }
    async fn destroy(&self) -> datalayer::Result<()> {
        match &self.cleanup {
            Cleanup::Nothing => Ok(()),
            Cleanup::Dir(dir) => match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
            Cleanup::SqliteFile(file) => {
                remove_file(file)?;
                for suffix in ["-wal", "-shm", "-journal"] {
                    let mut side = file.clone().into_os_string();
                    side.push(suffix);
                    remove_file(Path::new(&side))?;
                }
                Ok(())
            }
            Cleanup::PgSchema => drop_pg_schema(&self.url).await,
            Cleanup::RedisNamespace => {
                let opts = datalayer::redis::RedisOptions::from_url(&self.url)?;
                datalayer::redis::destroy_namespace(&opts).await.map(|_| ())
            }
        }
    }
}

/// How [`UrlTarget`] derives a case's namespace from its URL.
#[derive(Clone, Debug)]
enum Scheme {
    /// `etch::memory:` / `sqlite::memory:`: the URL as is.
    Memory(String),
    /// `etch://DIR?params`: `DIR/ns-<random>`.
    EtchDir { root: PathBuf, params: String },
    /// `sqlite://DIR/STEM.EXT?params`: `DIR/STEM-<random>.EXT`.
    SqliteFile {
        dir: PathBuf,
        stem: String,
        ext: Option<String>,
        params: String,
    },
    /// `postgres://…`: the schema `dl_<random>`.
    Pg(String),
    /// `redis://…` without its `namespace=NS`: the namespace `NS_<random>`.
    Redis { url: String, prefix: String },
}

impl Scheme {
    fn parse(url: &str) -> anyhow::Result<Scheme> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        if base == "etch::memory:" || base == "etch://:memory:" {
            return Ok(Scheme::Memory(url.to_owned()));
        }
        if base == "sqlite::memory:" || base == "sqlite://:memory:" {
            return Ok(Scheme::Memory(url.to_owned()));
        }
        if let Some(dir) = base.strip_prefix("etch://") {
            anyhow::ensure!(!dir.is_empty(), "etch URL without a directory: {url:?}");
            return Ok(Scheme::EtchDir {
                root: PathBuf::from(dir),
                params: query.to_owned(),
            });
        }
        if let Some(file) = base.strip_prefix("sqlite:") {
            let file = Path::new(file.strip_prefix("//").unwrap_or(file));
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .ok_or_else(|| anyhow::anyhow!("sqlite URL without a file name: {url:?}"))?;
            return Ok(Scheme::SqliteFile {
                dir: file.parent().map(Path::to_owned).unwrap_or_default(),
                stem,
                ext: file.extension().map(|e| e.to_string_lossy().into_owned()),
                params: query.to_owned(),
            });
        }
        if base.starts_with("postgres://") || base.starts_with("postgresql://") {
            // A schema the URL names is replaced by the case's own.
            let (url, _schema) = take_param(url, "schema");
            return Ok(Scheme::Pg(url));
        }
        if base.starts_with("redis://")
            || base.starts_with("rediss://")
            || base.starts_with("redis+cluster://")
            || base.starts_with("rediss+cluster://")
        {
            let (url, ns) = take_param(url, "namespace");
            let prefix = ns.filter(|n| !n.is_empty()).unwrap_or_else(|| "dlc".into());
            return Ok(Scheme::Redis { url, prefix });
        }
        if base.starts_with("tikv:") {
            anyhow::bail!(
                "the conformance suite on tikv:// URLs is not supported here: run \
                 `cargo test -p datalayer-conformance --test tikv` (DATALAYER_TIKV_PD=host:port \
                 for a real cluster)"
            );
        }
        anyhow::bail!(
            "no conformance namespace for URL {:?} (known: etch://DIR, etch::memory:, \
             sqlite://FILE, sqlite::memory:, postgres://…, redis://…)",
            datalayer::redact(url)
        )
    }

    fn namespace(&self) -> UrlNamespace {
        let r = random_suffix();
        match self {
            Scheme::Memory(url) => UrlNamespace::memory(url),
            Scheme::EtchDir { root, params } => {
                UrlNamespace::etch_dir(&root.join(format!("ns-{r}")), params)
            }
            Scheme::SqliteFile {
                dir,
                stem,
                ext,
                params,
            } => {
                let name = match ext {
                    Some(ext) => format!("{stem}-{r}.{ext}"),
                    None => format!("{stem}-{r}"),
                };
                UrlNamespace::sqlite_file(&dir.join(name), params)
            }
            Scheme::Pg(url) => UrlNamespace::pg_schema(url, &format!("dl_{r}")),
            Scheme::Redis { url, prefix } => UrlNamespace::redis(url, &format!("{prefix}_{r}")),
        }
    }
}

/// The engine a datalayer URL names, as a conformance [`Target`]: every case gets a
/// fresh namespace derived from the URL (see the [module docs](self)).
pub struct UrlTarget {
    scheme: Scheme,
    cap: Capability,
    reopenable: bool,
    engine: &'static str,
}

impl UrlTarget {
    /// Checks that `url` can hold namespaces: opens one (derived from `url`, removed
    /// again) to learn the engine's name and capabilities.
    ///
    /// # Errors
    /// A URL with no namespace scheme (TiKV, an unknown scheme), or the engine's error
    /// when the probe namespace cannot be opened (an unreachable server, a bad option).
    pub async fn probe(url: &str) -> anyhow::Result<UrlTarget> {
        let scheme = Scheme::parse(url)?;
        let ns = scheme.namespace();
        let engine = match ns.open().await {
            Ok(e) => e,
            Err(e) => {
                let _ = ns.destroy().await;
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot open {}", datalayer::redact(url))));
            }
        };
        let cap = engine.capability();
        let name = engine.name();
        let closed = engine.close().await;
        ns.destroy().await?;
        closed?;
        Ok(UrlTarget {
            reopenable: ns.reopenable(),
            scheme,
            cap,
            engine: name,
        })
    }

    /// The engine's short name (`etch`, `sqlite`, `postgres`, `redis`).
    pub fn engine_name(&self) -> &'static str {
        self.engine
    }
}

#[async_trait]
impl Target for UrlTarget {
    async fn namespace(&self) -> anyhow::Result<Box<dyn Namespace>> {
        Ok(Box::new(self.scheme.namespace()))
    }
    fn capability(&self) -> Capability {
        self.cap
    }
    fn reopenable(&self) -> bool {
        self.reopenable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_replaced_not_duplicated() {
        assert_eq!(
            take_param("redis://h:1?namespace=app&pool_size=2", "namespace"),
            ("redis://h:1?pool_size=2".to_owned(), Some("app".to_owned()))
        );
        assert_eq!(
            take_param("postgres://u@h/db?schema=s", "schema"),
            ("postgres://u@h/db".to_owned(), Some("s".to_owned()))
        );
        assert_eq!(
            take_param("redis://h", "namespace"),
            ("redis://h".to_owned(), None)
        );
    }

    #[test]
    fn namespaces_derive_from_the_url() {
        let ns = Scheme::parse("sqlite:///tmp/x/app.db?readers=2")
            .unwrap()
            .namespace();
        assert!(ns.url().starts_with("sqlite:///tmp/x/app-"), "{}", ns.url());
        assert!(ns.url().ends_with(".db?readers=2"), "{}", ns.url());
        let ns = Scheme::parse("etch:///tmp/e").unwrap().namespace();
        assert!(ns.url().starts_with("etch:///tmp/e/ns-"), "{}", ns.url());
        let ns = Scheme::parse("redis://127.0.0.1:6379?namespace=app")
            .unwrap()
            .namespace();
        assert!(
            ns.url()
                .starts_with("redis://127.0.0.1:6379?namespace=app_"),
            "{}",
            ns.url()
        );
        let ns = Scheme::parse("postgres://postgres@h/test?schema=public")
            .unwrap()
            .namespace();
        assert!(
            ns.url()
                .starts_with("postgres://postgres@h/test?schema=dl_"),
            "{}",
            ns.url()
        );
        assert!(Scheme::parse("tikv://127.0.0.1:2379").is_err());
        assert!(Scheme::parse("nosuch://x").is_err());
    }
}
