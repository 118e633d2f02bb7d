//! PostgreSQL helpers: raw clients, and a private server instance (`initdb` +
//! `pg_ctl` in a temporary directory on a free loopback port) that the fault tests
//! restart with `pg_ctl -m immediate stop`. The shared server is never touched
//! beyond the private schemas of [`crate::common::PgSchema`].

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the PostgreSQL 15 binaries are (Debian layout).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A plain tokio-postgres client for `url` (engine parameters such as `schema=` are
/// understood and ignored), its connection driven on the current runtime.
///
/// # Errors
/// A malformed URL or a failed connection.
pub async fn raw_client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let opts = datalayer::pg::PgOptions::from_url(url)?;
    let (client, conn) = opts.config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Runs `sql` on `url` from a thread of its own with its own runtime (for `Drop`).
///
/// # Errors
/// A failed connection or statement.
pub fn execute_blocking(url: &str, sql: &str) -> anyhow::Result<()> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let c = raw_client(&url).await?;
            c.batch_execute(&sql).await?;
            Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("panicked"))?
}

/// A free loopback TCP port (bound, then released).
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A private PostgreSQL instance: data directory in a temporary directory owned by the
/// `postgres` user when running as root, listening on `127.0.0.1:<port>`. Stopped
/// (immediately) and removed on drop, also on panic.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PrivatePg {
    /// Whether the binaries exist; `Err` says what is missing.
    ///
    /// # Errors
    /// The missing `initdb`/`pg_ctl`.
    pub fn available() -> anyhow::Result<()> {
        for b in ["initdb", "pg_ctl"] {
            let p = Path::new(PG_BIN).join(b);
            if !p.exists() {
                bail!("{} not found", p.display());
            }
        }
        Ok(())
    }

    /// Creates (`initdb`) and starts an instance.
    ///
    /// # Errors
    /// Missing binaries, a failed `initdb` or start (with the server log).
    pub fn start() -> anyhow::Result<PrivatePg> {
        Self::available()?;
        let dir = tempfile::Builder::new()
            .prefix("torture-pg-")
            .tempdir()
            .context("temp dir")?;
        let as_postgres = nix::unistd::Uid::effective().is_root();
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres")?
                .context("running as root, but there is no `postgres` user")?;
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid))?;
        }
        let pg = PrivatePg {
            dir,
            port: free_port()?,
            as_postgres,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .context("initdb")?;
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             max_connections = 200\nfsync = on\nlog_min_messages = warning\n",
            pg.port,
            path_str(pg.dir.path())?
        );
        let conf_path = data.join("postgresql.auto.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap_or_default();
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)?;
        pg.pg_start()?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs a PostgreSQL binary (as `postgres` when we are root).
    fn run(&self, bin: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = Path::new(PG_BIN).join(bin);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).current_dir(self.dir.path()).output()?;
        if !out.status.success() {
            bail!(
                "{bin} {args:?} failed ({}): {}{}\nserver log: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
        }
        Ok(())
    }

    fn pg_start(&self) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data())?,
                "-l",
                path_str(&self.log())?,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// Crashes the server (`pg_ctl -m immediate stop`: no shutdown checkpoint, as a
    /// kill) and starts it again, waiting until it accepts connections.
    ///
    /// # Errors
    /// A failed stop or start.
    pub fn crash_restart(&self) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data())?,
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )?;
        self.pg_start()
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if let Ok(data) = path_str(&self.data()) {
            let _ = self.run("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"]);
        }
    }
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("a non-UTF-8 temp path")
}
