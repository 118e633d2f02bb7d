//! `datalayer changes URL TABLE`: a table's change feed as JSON lines.
//!
//! One object per change, in commit order:
//!
//! ```text
//! {"position":3,"table":"users","kind":"update","columns":{"id":1,"name":"ann b","photo":"AAEC"}}
//! ```
//!
//! `kind` is `insert`, `update` (`columns` = the new row) or `delete` (`columns` = the
//! removed row). Values map to JSON as: NULL → `null`, bool → `true`/`false`, integers →
//! numbers, floats → numbers (`null` for NaN and infinities, which JSON cannot hold),
//! text → strings, bytes → strings in standard base64 with padding (RFC 4648 §4),
//! UUIDs → hyphenated strings, timestamps → RFC 3339 strings (`…T…Z`, µs), dates →
//! `YYYY-MM-DD`, decimals → strings (exact digits), JSON documents → themselves.
//! `columns` lists the table's columns in schema order.

use base64::Engine as _;
use datalayer::{Change, ChangeKind, ErrorKind, Value};
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::io::Write;
use std::time::Duration;

/// Changes read per round trip.
const BATCH: usize = 1_000;
/// The wait between two reads of an idle feed with `--follow`.
const POLL: Duration = Duration::from_millis(150);

/// The arguments of `datalayer changes`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The engine's URL, e.g. `etch://./data/etch` or `sqlite://app.db`.
    url: String,
    /// The table whose changes are printed (its change capture must be enabled, with
    /// `Db::enable_changes`).
    table: String,
    /// Print only the changes after this position (the `position` of the last change
    /// already handled); 0 prints the whole log.
    #[arg(long, default_value_t = 0, value_name = "POS")]
    after: u64,
    /// Keep running and print new changes as they are committed (polled every 150 ms),
    /// until Ctrl-C, SIGTERM or a closed output pipe.
    #[arg(long)]
    follow: bool,
    /// Stop after printing N changes.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

/// One change as a JSON object.
#[derive(serde::Serialize)]
struct Line<'a> {
    position: u64,
    table: &'a str,
    kind: &'static str,
    columns: Columns<'a>,
}

/// The row image as an object of column → value, in column order.
struct Columns<'a>(&'a Change);

impl Serialize for Columns<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.columns.len()))?;
        for (name, value) in self.0.columns.iter().zip(&self.0.values) {
            map.serialize_entry(name, &Json(value))?;
        }
        map.end()
    }
}

/// A value in its JSON form (see the [module docs](self)).
struct Json<'a>(&'a Value);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_none(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::I16(n) => s.serialize_i16(*n),
            Value::I32(n) => s.serialize_i32(*n),
            Value::I64(n) => s.serialize_i64(*n),
            Value::F32(x) => s.serialize_f32(*x),
            Value::F64(x) => s.serialize_f64(*x),
            Value::String(t) => s.serialize_str(t),
            Value::Bytes(b) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
            Value::Uuid(_) | Value::Decimal(_) => s.serialize_str(&self.0.to_string()),
            Value::Timestamp(us) => match datalayer::sql::text::timestamp_text(*us) {
                Ok(t) => s.serialize_str(&t),
                Err(_) => s.serialize_i64(*us),
            },
            Value::Date(d) => match datalayer::sql::text::date_text(*d) {
                Ok(t) => s.serialize_str(&t),
                Err(_) => s.serialize_i32(*d),
            },
            Value::Json(t) => match serde_json::from_str::<serde_json::Value>(t) {
                Ok(j) => j.serialize(s),
                Err(_) => s.serialize_str(t),
            },
        }
    }
}

/// `change` as one JSON line (with its newline).
fn json_line(change: &Change) -> anyhow::Result<String> {
    let kind = match change.kind {
        ChangeKind::Insert => "insert",
        ChangeKind::Update => "update",
        ChangeKind::Delete => "delete",
    };
    let mut line = serde_json::to_string(&Line {
        position: change.position,
        table: &change.table,
        kind,
        columns: Columns(change),
    })?;
    line.push('\n');
    Ok(line)
}

/// Resolves when the process is asked to stop: Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What printing a batch of changes came to.
enum Printed {
    /// Every change was written.
    All,
    /// Standard output is a closed pipe: stop quietly.
    PipeClosed,
}

/// Writes `lines` to standard output and flushes it.
fn print(lines: &str) -> anyhow::Result<Printed> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(lines.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(Printed::All),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Printed::PipeClosed),
        Err(e) => Err(e.into()),
    }
}

/// The error of a failed read, explained for the command line.
fn explain(e: datalayer::Error, engine: &str, url: &str, table: &str) -> anyhow::Error {
    match e.kind() {
        ErrorKind::Unsupported => anyhow::anyhow!(
            "the {engine} engine at {} has no change capture (Capability::change_feed): {e}",
            datalayer::redact(url)
        ),
        ErrorKind::NotFound => anyhow::anyhow!(
            "no table named {table:?} at {} ({e}); `datalayer tables URL` lists the tables",
            datalayer::redact(url)
        ),
        _ => anyhow::Error::new(e).context(format!("cannot read the changes of {table:?}")),
    }
}

/// Runs `datalayer changes`.
///
/// # Errors
/// The URL cannot be opened; the engine has no change capture; the table does not
/// exist; a read fails; standard output fails (other than a closed pipe).
pub async fn run(args: Args) -> anyhow::Result<()> {
    let db = datalayer::connect(args.url.as_str()).await?;
    let r = tokio::select! {
        r = tail(&db, &args) => r,
        () = stop_signal() => Ok(()),
    };
    let closed = db.close().await;
    r?;
    Ok(closed?)
}

/// Prints the changes `args` asks for.
async fn tail(db: &datalayer::Db, args: &Args) -> anyhow::Result<()> {
    let engine = db.engine().name();
    let mut after = args.after;
    let mut left = args.limit.unwrap_or(usize::MAX);
    let mut printed = 0u64;
    while left > 0 {
        let batch = db
            .read_changes(&args.table, after, BATCH.min(left))
            .await
            .map_err(|e| explain(e, engine, &args.url, &args.table))?;
        if batch.is_empty() {
            if args.follow {
                tokio::time::sleep(POLL).await;
                continue;
            }
            break;
        }
        let mut lines = String::new();
        for c in &batch {
            lines.push_str(&json_line(c)?);
        }
        if let Printed::PipeClosed = print(&lines)? {
            return Ok(());
        }
        after = batch.last().map_or(after, |c| c.position);
        left -= batch.len();
        printed += batch.len() as u64;
    }
    if printed == 0 && args.after == 0 && args.limit != Some(0) {
        // The engines read a table without capture as an empty log (not an error), so
        // the most likely reason is said here.
        eprintln!(
            "note: {:?} has no changes in its log: either change capture is not enabled \
             for it (Db::enable_changes), or nothing was written since, or the log was \
             trimmed",
            args.table
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_one_json_line() {
        let c = Change {
            position: 7,
            table: "t".into(),
            kind: ChangeKind::Delete,
            columns: ["id", "b", "f", "s", "x", "n", "ok"]
                .map(String::from)
                .to_vec(),
            values: vec![
                Value::I64(-3),
                Value::Bytes(vec![0, 1, 2, 255]),
                Value::F64(1.5),
                Value::String("a\"b".into()),
                Value::F32(f32::NAN),
                Value::Null,
                Value::Bool(true),
            ],
        };
        assert_eq!(
            json_line(&c).unwrap(),
            "{\"position\":7,\"table\":\"t\",\"kind\":\"delete\",\"columns\":{\"id\":-3,\
             \"b\":\"AAEC/w==\",\"f\":1.5,\"s\":\"a\\\"b\",\"x\":null,\"n\":null,\"ok\":true}}\n"
        );
    }

    /// Every built-in engine captures changes, so the `Unsupported` message is checked
    /// here rather than through the binary.
    #[test]
    fn an_engine_without_capture_is_named() {
        let e = datalayer::Error::unsupported("mystery", "change data capture");
        let msg = explain(e, "mystery", "mystery://u:secret@h", "t").to_string();
        assert!(msg.contains("the mystery engine"), "{msg}");
        assert!(msg.contains("has no change capture"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }
}
