//! `datalayer conformance URL`: the shared conformance suite (`datalayer-conformance`)
//! against the store a URL names.
//!
//! Every case runs in its own fresh namespace derived from the URL and removed after
//! it (a subdirectory of an etch directory, a file next to a SQLite file, a schema of a
//! PostgreSQL database, a namespace `NS_<random>` of a Redis server; see
//! [`datalayer_conformance::url`]), on its own runtime, at most `--jobs` at a time.
//! The result is a table of case × result (`ok`, `FAILED`, or `skipped` when the
//! engine does not declare a capability the case needs) with each case's time, and a
//! summary line; the failures' messages follow the table.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use datalayer_conformance::url::UrlTarget;
use datalayer_conformance::{Case, Need, Target};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The arguments of `datalayer conformance`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store's URL: `etch://DIR`, `etch::memory:`, `sqlite://FILE`,
    /// `sqlite::memory:`, `postgres://…`, `redis://…[?namespace=NS]`.
    url: String,
    /// Run only the cases whose name (`area::case`) contains this text.
    #[arg(long, value_name = "SUBSTR")]
    filter: Option<String>,
    /// Cases run at the same time.
    #[arg(long, short = 'j', default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
}

/// What became of one case.
enum Outcome {
    /// Passed, in this time.
    Ok(Duration),
    /// Failed, in this time, with this message.
    Failed(Duration, String),
    /// Not run: the engine does not declare these needs.
    Skipped(Vec<Need>),
}

/// Runs `datalayer conformance`.
///
/// # Errors
/// The URL names no store the suite can make namespaces in (TiKV, an unknown scheme),
/// the store cannot be opened, no case matches the filter, or a case failed (after
/// the report is printed).
pub async fn run(args: Args) -> anyhow::Result<()> {
    let target = Arc::new(UrlTarget::probe(&args.url).await?);
    let cases: Vec<Case> = datalayer_conformance::cases::all()
        .into_iter()
        .filter(|c| args.filter.as_ref().is_none_or(|f| c.name.contains(f)))
        .collect();
    if cases.is_empty() {
        anyhow::bail!(
            "no conformance case matches --filter {:?}",
            args.filter.unwrap_or_default()
        );
    }
    let jobs = usize::from(args.jobs);
    let started = Instant::now();
    let runner = target.clone();
    let (cases, outcomes) =
        tokio::task::spawn_blocking(move || run_all(runner.as_ref(), cases, jobs)).await?;
    let elapsed = started.elapsed();
    let report = render(&args.url, target.engine_name(), &cases, &outcomes, elapsed);
    crate::emit(&report.text)?;
    anyhow::ensure!(
        report.failed == 0,
        "{} of {} conformance cases failed",
        report.failed,
        outcomes.len()
    );
    Ok(())
}

/// Runs `cases` on `jobs` threads; the outcomes in the order of `cases`.
fn run_all(target: &UrlTarget, cases: Vec<Case>, jobs: usize) -> (Vec<Case>, Vec<Outcome>) {
    let cap = target.capability();
    let reopenable = target.reopenable();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Option<Outcome>>> =
        Mutex::new((0..cases.len()).map(|_| None).collect());
    // The panics of failing cases are reported in the table; the default hook would
    // also print them, interleaved, while they run.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    std::thread::scope(|s| {
        for _ in 0..jobs.min(cases.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    let outcome = if case.runs_on(&cap, reopenable) {
                        let t = Instant::now();
                        match datalayer_conformance::run_case_isolated(target, case) {
                            Ok(()) => Outcome::Ok(t.elapsed()),
                            Err(why) => Outcome::Failed(t.elapsed(), why),
                        }
                    } else {
                        Outcome::Skipped(
                            case.needs
                                .iter()
                                .copied()
                                .filter(|n| !n.met(&cap, reopenable))
                                .collect(),
                        )
                    };
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    eprintln!("[{n}/{}] {} {}", cases.len(), case.name, word(&outcome));
                    outcomes.lock().expect("outcomes")[i] = Some(outcome);
                }
            });
        }
    });
    std::panic::set_hook(hook);
    let outcomes = outcomes
        .into_inner()
        .expect("outcomes")
        .into_iter()
        .map(|o| o.expect("every case ran"))
        .collect();
    (cases, outcomes)
}

/// The result column's word for `o`.
fn word(o: &Outcome) -> &'static str {
    match o {
        Outcome::Ok(_) => "ok",
        Outcome::Failed(..) => "FAILED",
        Outcome::Skipped(_) => "skipped",
    }
}

/// The report and how many cases failed.
struct Report {
    text: String,
    failed: usize,
}

/// The case × result table, the failures' messages and the summary line.
fn render(
    url: &str,
    engine: &str,
    cases: &[Case],
    outcomes: &[Outcome],
    elapsed: Duration,
) -> Report {
    let mut grid = Table::new();
    grid.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["case", "result", "time"]);
    let (mut ok, mut failed, mut skipped) = (0, 0, 0);
    let mut failures = String::new();
    for (case, o) in cases.iter().zip(outcomes) {
        let (result, time) = match o {
            Outcome::Ok(t) => {
                ok += 1;
                ("ok".to_owned(), millis(*t))
            }
            Outcome::Failed(t, why) => {
                failed += 1;
                failures.push_str(&format!("\n---- {} ----\n{why}\n", case.name));
                ("FAILED".to_owned(), millis(*t))
            }
            Outcome::Skipped(needs) => {
                skipped += 1;
                (format!("skipped (needs {needs:?})"), String::new())
            }
        };
        grid.add_row([case.name.clone(), result, time]);
    }
    let text = format!(
        "conformance on {} ({engine})\n{grid}\n{failures}\n{}: {ok} passed, {failed} failed, \
         {skipped} skipped (capability not declared); {:.1} s\n",
        datalayer::redact(url),
        if failed == 0 { "ok" } else { "FAILED" },
        elapsed.as_secs_f64()
    );
    Report { text, failed }
}

/// `d` in milliseconds, for the time column.
fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, needs: &'static [Need]) -> Case {
        Case {
            name: name.into(),
            needs,
            run: |_| Box::pin(async { Ok(()) }),
        }
    }

    #[test]
    fn the_report_names_every_case_and_the_failures() {
        let cases = [
            case("crud::a", &[]),
            case("crud::b", &[]),
            case("tx::savepoints", &[Need::Savepoints]),
        ];
        let outcomes = [
            Outcome::Ok(Duration::from_millis(3)),
            Outcome::Failed(Duration::from_millis(5), "panicked: boom".into()),
            Outcome::Skipped(vec![Need::Savepoints]),
        ];
        let r = render(
            "etch://x",
            "etch",
            &cases,
            &outcomes,
            Duration::from_secs(1),
        );
        assert_eq!(r.failed, 1);
        for needle in [
            "conformance on etch://x (etch)",
            "crud::a",
            "FAILED",
            "---- crud::b ----\npanicked: boom",
            "skipped (needs [Savepoints])",
            "FAILED: 1 passed, 1 failed, 1 skipped",
        ] {
            assert!(r.text.contains(needle), "no {needle:?} in\n{}", r.text);
        }
    }
}
