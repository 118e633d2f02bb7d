//! `datalayer`: the command-line tool of datalayer.
//!
//! ```text
//! datalayer tables URL     # every table in the engine's catalog: columns, primary key, indexes
//! datalayer changes URL TABLE [--after POS] [--follow] [--limit N]
//!                          # the table's change feed as JSON lines, one per change
//! datalayer conformance URL [--filter SUBSTR] [--jobs N]
//!                          # the conformance suite, each case in a fresh namespace of URL
//! datalayer migrate --from URL --to URL [--tables a,b] [--follow] [--cutover [--follow-back]]
//!                   [--resume]
//!                          # copy (resumable, reconciled with the change feed), verify
//! datalayer verify --from URL --to URL [--tables a,b]
//!                          # counts and per-key-range checksums side by side
//! ```
//!
//! `migrate` copies the schema, then the rows of each table in primary-key order in
//! chunks of about `--chunk-ms` (250 ms), each reconciled with the source's change feed
//! so that writes made meanwhile are neither lost nor applied out of order
//! (`datalayer::migrate`); a progress bar per table; then prints rows, MB, rows/s and
//! the verification. The progress is committed on the target with the data: a run cut
//! off (Ctrl-C, kill -9) continues with `--resume`, and a target holding an unfinished
//! run is refused without it. `--follow` replays the source's changes until Ctrl-C or
//! SIGTERM; `--cutover` then drains them and compares every row changed meanwhile
//! (it fences writes made through this process only: stop the application's writes
//! first, or call `Migration::cutover` in the application); `--follow-back` then
//! replays the target's changes into the source until Ctrl-C or SIGTERM, so that the
//! application can still move back (`Migration::reverse`). `verify` prints, per
//! table, the row counts, the key ranges whose checksums differ and the index entry
//! counts; both exit with status 1 on a difference.
//!
//! `changes` prints one JSON object per line, in commit order:
//! `{"position":3,"table":"users","kind":"update","columns":{"id":1,"name":"ann"}}`;
//! `kind` is `insert`, `update` (the new row) or `delete` (the removed row); bytes are
//! base64 strings (standard alphabet, padded), NaN and infinite floats `null`. Without
//! `--follow` it prints every change after `--after` (default 0) and exits; with
//! `--follow` it polls every 150 ms for new ones until Ctrl-C or SIGTERM (exit 0) or a
//! closed output pipe (noticed at the next write; exit 0). `--limit N` stops after N
//! changes. Resume with `--after` set to the last position handled. The table's change
//! capture must be on (`Db::enable_changes`): the engines read a table without it as an
//! empty log, so an empty log from position 0 gets a note on standard error. An unknown
//! table or an engine without change capture is an error. An etch directory is open in
//! one process at a time: on etch the command reads a store no application has open.
//!
//! `conformance` runs every case of the shared suite (crate `datalayer-conformance`)
//! against URL, each in its own namespace derived from URL and removed afterwards:
//! `etch://DIR` → `DIR/ns-<random>`; `sqlite://FILE` → `<stem>-<random>.<ext>` next to
//! FILE; `etch::memory:`/`sqlite::memory:` → a new in-memory store; `postgres://…` → a
//! schema `dl_<random>` (dropped); `redis://…?namespace=NS` → the namespace
//! `NS_<random>` (`dlc_<random>` without one; its keys removed). `tikv://` URLs are
//! refused (run `cargo test -p datalayer-conformance --test tikv`). `--filter` keeps the
//! cases whose name contains SUBSTR; `--jobs` (default 2) cases run at once. It prints a
//! table of case, result (`ok`, `FAILED`, `skipped` when the engine does not declare a
//! capability the case needs) and time, the failures' messages and a summary line;
//! progress goes to standard error. Exit status 1 when a case failed.
//!
//! `URL` is any datalayer URL (`etch://dir`, `sqlite://file.db`, `postgres://…`,
//! `redis://…?namespace=`, and `tikv://…` when built with the `tikv` feature); the
//! password in a URL is never printed. Install with `cargo install --path cli`.
//! Exit status: 0 on success, 1 on an error (printed as `error: <kind>: <message>`).

mod changes;
mod conformance;
mod migrate;

use clap::{Parser, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use datalayer::{ColumnType, TableSchema};

#[derive(Parser)]
#[command(name = "datalayer", version, about = "Inspect datalayer engines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lists every table in the engine's catalog (the schemas datalayer stored with
    /// each table: columns, primary key, secondary indexes), one table each.
    Tables {
        /// The engine's URL, e.g. `etch://./data/etch` or `sqlite://flights.db`.
        url: String,
    },
    /// Prints the change feed of a table as JSON lines, one per change.
    Changes(changes::Args),
    /// Runs the conformance suite against a store, each case in a fresh namespace.
    Conformance(conformance::Args),
    /// Migrates every table (or `--tables`) from one engine to another: schema, rows
    /// in chunks reconciled with the source's change feed, optionally following it and
    /// cutting over; then verifies. Resumable.
    Migrate(migrate::MigrateArgs),
    /// Compares two engines table by table: row counts, per-key-range checksums of
    /// the typed rows, index entry counts. Exit status 1 on any difference.
    Verify(migrate::VerifyArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        match cli.command {
            Command::Tables { url } => tables(&url).await,
            Command::Changes(args) => changes::run(args).await,
            Command::Conformance(args) => conformance::run(args).await,
            Command::Migrate(args) => migrate::migrate(args).await,
            Command::Verify(args) => migrate::verify(args).await,
        }
    });
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `datalayer tables URL`: the catalog, sorted by table name, each table with its
/// schema version and the schema-evolution steps applied to it (`Db::catalog`).
async fn tables(url: &str) -> anyhow::Result<()> {
    let db = datalayer::connect(url).await?;
    let mut entries = db.catalog().await?;
    entries.sort_by(|a, b| a.schema.name.cmp(&b.schema.name));
    let mut out = format!(
        "{}: {} table{}\n",
        datalayer::redact(url),
        entries.len(),
        if entries.len() == 1 { "" } else { "s" }
    );
    for e in &entries {
        out.push_str(&format!("\n{}\n", render(&e.schema)));
        out.push_str(&format!("schema version {}\n", e.version));
        for h in &e.history {
            let at = datalayer::sql::text::timestamp_text(h.applied_at_micros)
                .unwrap_or_else(|_| format!("{} µs", h.applied_at_micros));
            out.push_str(&format!("  v{} {at}  {}\n", h.version, h.description));
        }
    }
    db.close().await?;
    emit(&out)
}

/// Writes `text` to standard output; a closed pipe (`datalayer tables URL | head`)
/// ends the output quietly.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// One table as text: a line with its name and primary key, then its columns and
/// indexes as a grid.
fn render(t: &TableSchema) -> String {
    let pk: Vec<&str> = t
        .primary_key
        .iter()
        .map(|&c| t.columns[c].name.as_str())
        .collect();
    let mut grid = Table::new();
    grid.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["column", "type", "null", "key / indexes"]);
    for (i, c) in t.columns.iter().enumerate() {
        let mut keys: Vec<String> = Vec::new();
        if let Some(p) = t.primary_key.iter().position(|&k| k == i) {
            keys.push(format!("pk#{}", p + 1));
        }
        for ix in &t.indexes {
            if let Some(p) = ix.columns.iter().position(|&k| k == i) {
                keys.push(format!("{}#{}", ix.name, p + 1));
            }
        }
        grid.add_row([
            c.name.clone(),
            type_name(c.ty).to_owned(),
            if c.nullable { "yes" } else { "no" }.to_owned(),
            keys.join(", "),
        ]);
    }
    let mut out = format!("{}  (primary key: {})\n{grid}", t.name, pk.join(", "));
    for ix in &t.indexes {
        let cols: Vec<&str> = ix
            .columns
            .iter()
            .map(|&c| t.columns[c].name.as_str())
            .collect();
        out.push_str(&format!(
            "\nindex {}: ({}){}{}",
            ix.name,
            cols.join(", "),
            if ix.unique { " unique" } else { "" },
            if ix.when.is_some() {
                " conditional"
            } else {
                ""
            }
        ));
    }
    out
}

/// The Rust type a column holds.
fn type_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Bool => "bool",
        ColumnType::I16 => "i16",
        ColumnType::I32 => "i32",
        ColumnType::I64 => "i64",
        ColumnType::F32 => "f32",
        ColumnType::F64 => "f64",
        ColumnType::String => "text",
        ColumnType::Bytes => "bytes",
        ColumnType::Uuid => "uuid",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Date => "date",
        ColumnType::Decimal => "decimal",
        ColumnType::Json => "json",
    }
}
