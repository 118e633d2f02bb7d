//! Shared helpers: the run context, the outcome (figure lines and broken invariants),
//! seeded randomness, and the engines a test runs on by default.

use rand::SeedableRng;
use rand::rngs::StdRng;
use std::process::ExitCode;

/// What every test receives: quick or full, and the seed of its random choices.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    /// Seconds-long run (CI) instead of minutes.
    pub quick: bool,
    /// The seed; each test derives its generators from it with [`Ctx::rng`].
    pub seed: u64,
}

impl Ctx {
    /// A generator for one purpose: the seed mixed with `stream` (so that two workers
    /// get different but reproducible sequences).
    pub fn rng(&self, stream: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
    /// `quick` in quick mode, else `full`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// A seed from the clock.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// The result of a test: one figure line per engine, and what broke.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Figure lines, printed at the end of the run.
    pub figures: Vec<String>,
    /// Broken invariants (each makes the run exit non-zero).
    pub failures: Vec<String>,
}

impl Outcome {
    /// Adds a figure line.
    pub fn figure(&mut self, line: impl Into<String>) {
        let line = line.into();
        eprintln!("   {line}");
        self.figures.push(line);
    }
    /// Records a broken invariant.
    pub fn fail(&mut self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("   BROKEN: {what}");
        self.failures.push(what);
    }
    /// Appends another outcome.
    pub fn merge(&mut self, other: Outcome) {
        self.figures.extend(other.figures);
        self.failures.extend(other.failures);
    }
    /// Prints the figures (one line per test and engine) and what broke; the exit code
    /// is a failure if anything broke. A child process prints nothing more.
    pub fn finish(self, child: bool) -> ExitCode {
        if child {
            return ExitCode::SUCCESS;
        }
        println!();
        for f in &self.figures {
            println!("{f}");
        }
        if self.failures.is_empty() {
            return ExitCode::SUCCESS;
        }
        println!("\n{} invariant(s) broken:", self.failures.len());
        for f in &self.failures {
            println!("BROKEN: {f}");
        }
        ExitCode::FAILURE
    }
}

/// The shared PostgreSQL server the tests use: `DATALAYER_PG_URL`, default
/// `postgres://postgres@127.0.0.1:5432/test` (as the engine's own tests).
pub fn shared_pg_url() -> String {
    std::env::var("DATALAYER_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub use datalayer::with_params;

/// Lower-case letters, for schema names.
pub fn random_suffix(rng: &mut impl rand::Rng) -> String {
    (0..10)
        .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
        .collect()
}

/// The engine family name of a URL, for figure lines.
pub fn engine_of(url: &str) -> &'static str {
    if url.starts_with("etch:") {
        "etch"
    } else if url.starts_with("sqlite:") {
        "sqlite"
    } else if url.starts_with("postgres") {
        "postgres"
    } else if url.starts_with("redis") {
        "redis"
    } else if url.starts_with("tikv:") {
        "tikv"
    } else {
        "unknown"
    }
}

/// A private schema `torture_<random>` on a PostgreSQL server, dropped when this
/// guard drops (also when the test panicked).
pub struct PgSchema {
    /// The server URL without the schema.
    base: String,
    /// The schema name.
    pub schema: String,
}

impl PgSchema {
    /// A fresh schema name on the server of `base` (created by the engine on first use).
    pub fn new(base: &str, rng: &mut impl rand::Rng) -> PgSchema {
        PgSchema {
            base: base.to_owned(),
            schema: format!("torture_{}", random_suffix(rng)),
        }
    }
    /// The engine URL for this schema.
    pub fn url(&self, params: &str) -> String {
        with_params(
            &with_params(&self.base, &format!("schema={}", self.schema)),
            params,
        )
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        if let Err(e) = crate::pg::execute_blocking(&self.base, &sql) {
            eprintln!("warning: could not drop schema {}: {e}", self.schema);
        }
    }
}

/// Whether a PostgreSQL server answers at `url` (a plain connection, 3 s timeout).
///
/// # Errors
/// Why it cannot be reached.
pub async fn pg_reachable(url: &str) -> anyhow::Result<()> {
    let fut = crate::pg::raw_client(url);
    match tokio::time::timeout(std::time::Duration::from_secs(3), fut).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => anyhow::bail!("connection timed out"),
    }
}

/// Formats a share of `ok` in `total` as a percentage ("100%" only when exact).
pub fn percent(ok: u64, total: u64) -> String {
    if total == 0 {
        return "-% (no reads)".to_owned();
    }
    if ok == total {
        return "100%".to_owned();
    }
    format!("{:.3}%", ok as f64 * 100.0 / total as f64)
}

/// What a child process printed before [`kill_child_after`] killed it.
#[derive(Debug)]
pub struct KilledChild {
    /// Its stdout, line by line.
    pub lines: Vec<String>,
    /// `Some(status, stderr)` when it had exited on its own before the kill (the kill
    /// then tested nothing).
    pub early_exit: Option<(std::process::ExitStatus, String)>,
}

/// Runs this binary again with `args` (a hidden child subcommand), waits `delay`,
/// SIGKILLs it (`kill -9`: no destructor, no flush, no fsync runs) and returns what it
/// printed.
///
/// # Errors
/// Spawning or signalling the child fails.
pub async fn kill_child_after(
    args: &[&str],
    delay: std::time::Duration,
) -> anyhow::Result<KilledChild> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || -> Vec<String> {
        BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
            .collect()
    });
    tokio::time::sleep(delay).await;
    let exited = child.try_wait()?;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL)?;
    tokio::task::block_in_place(|| child.wait())?;
    let lines = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the child's stdout reader panicked"))?;
    let early_exit = exited.map(|status| {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err.trim().to_owned())
    });
    Ok(KilledChild { lines, early_exit })
}
