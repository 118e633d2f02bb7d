//! Change data capture with triggers.
//!
//! # Log format
//! ```sql
//! CREATE TABLE _dl_cdc_log (
//!     position INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused, even after a trim
//!     tbl      TEXT NOT NULL,                     -- table name
//!     op       TEXT NOT NULL,                     -- 'insert' | 'update' | 'delete'
//!     row      TEXT NOT NULL                      -- json_array(<values in column order>)
//! );
//! ```
//! [`enable`] installs three triggers per table (`_dl_cdc_<table>_insert` / `_update` /
//! `_delete`, `AFTER INSERT/UPDATE/DELETE ... FOR EACH ROW`) that append the new image
//! (the old image for a delete). Because they are triggers, writes made outside
//! datalayer — raw SQL, another process with a plain SQLite connection — are captured
//! in the same transaction as the write.
//!
//! Values in the JSON array: NULL → `null`, integers (and bools as 0/1) → numbers,
//! REAL → numbers (SQLite renders them with enough digits to round-trip), TEXT →
//! strings, BLOB → **upper-case hex strings** (JSON cannot hold bytes; SQLite has no
//! built-in base64).
//!
//! Column names are not stored: they are resolved when the log is read, from the
//! table's current columns (`PRAGMA table_info`), so a column added later does not break
//! old entries (their image is simply shorter: trailing columns are absent). Values are
//! typed by the table's catalog schema when it has one, else by the declared column
//! type. Re-running [`enable`] after `ALTER TABLE ADD COLUMN` re-creates the triggers so
//! that the new column is captured too.
//!
//! # Ordering
//! SQLite has one writer at a time (across processes too), and a position is assigned
//! when the change is written inside its transaction, so positions increase in commit
//! order: a reader that has seen position `p` never later sees a new change below `p`.
//! Each open of a database file starts a new *epoch* ([`start_epoch`]): positions jump
//! to the next multiple of 2^40, so commits lost in a power loss (`synchronous=NORMAL`)
//! never have their positions reused for different changes.

use crate::conn::{Conn, atomically};
use crate::error::map_err;
use datalayer_core::{Change, ColumnType, Error, Result, TableSchema};
use datalayer_sql::{ChangeDecoder, Dialect};

const LOG_DDL: &str = "CREATE TABLE IF NOT EXISTS _dl_cdc_log (position INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, op TEXT NOT NULL, row TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS _dl_cdc_log_by_tbl ON _dl_cdc_log (tbl, position);";

fn q(ident: &str) -> String {
    crate::dialect::SqliteDialect.quote_ident(ident)
}

/// The current columns of `table`: (name, declared type). `NotFound` if it does not exist.
fn columns(c: &Conn<'_>, table: &str) -> Result<Vec<(String, String)>> {
    let mut stmt =
        c.db.prepare("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid")
            .map_err(map_err)?;
    let cols = stmt
        .query_map([table], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(map_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map_err)?;
    if cols.is_empty() {
        return Err(Error::not_found(format!("no table named {table}")));
    }
    Ok(cols)
}

fn log_exists(c: &Conn<'_>) -> Result<bool> {
    let n: i64 =
        c.db.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '_dl_cdc_log'",
            [],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    Ok(n > 0)
}

/// Whether the capture triggers of `table` are installed.
pub(crate) fn enabled(c: &Conn<'_>, table: &str) -> Result<bool> {
    let name = crate::dialect::SqliteDialect.generated_ident(&format!("_dl_cdc_{table}_insert"));
    let n: i64 =
        c.db.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND name = ?1",
            [name],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    Ok(n > 0)
}

/// Installs (or re-installs, with the current columns) the capture triggers of `table`.
pub(crate) fn enable(c: &mut Conn<'_>, table: &str) -> Result<()> {
    atomically(c, "BEGIN IMMEDIATE", |c| {
        let cols = columns(c, table)?;
        c.db.execute_batch(LOG_DDL).map_err(map_err)?;
        for (op, event, image) in [
            ("insert", "INSERT", "NEW"),
            ("update", "UPDATE", "NEW"),
            ("delete", "DELETE", "OLD"),
        ] {
            let values: Vec<String> = cols
                .iter()
                .map(|(name, _)| {
                    let v = format!("{image}.{}", q(name));
                    format!("CASE typeof({v}) WHEN 'blob' THEN hex({v}) ELSE {v} END")
                })
                .collect();
            // No length limit in SQLite: the name is used unchanged.
            let trigger = q(
                &crate::dialect::SqliteDialect.generated_ident(&format!("_dl_cdc_{table}_{op}"))
            );
            // `table` is a validated identifier: safe inside a string literal.
            c.db.execute_batch(&format!(
                "DROP TRIGGER IF EXISTS {trigger};
                 CREATE TRIGGER {trigger} AFTER {event} ON {} FOR EACH ROW BEGIN
                   INSERT INTO _dl_cdc_log (tbl, op, row) VALUES ('{table}', '{op}', json_array({}));
                 END;",
                q(table),
                values.join(", ")
            ))
            .map_err(map_err)?;
        }
        Ok(())
    })
}

fn declared_type(decl: &str) -> Option<ColumnType> {
    match decl.to_ascii_uppercase().as_str() {
        "INTEGER" | "INT" => Some(ColumnType::I64),
        "REAL" => Some(ColumnType::F64),
        "TEXT" => Some(ColumnType::String),
        "BLOB" => Some(ColumnType::Bytes),
        _ => None,
    }
}

/// Up to `limit` changes of `table` after `after`, in position order.
pub(crate) fn read(c: &mut Conn<'_>, table: &str, after: u64, limit: usize) -> Result<Vec<Change>> {
    let in_tx = c.in_tx();
    let body = |c: &mut Conn<'_>| -> Result<Vec<Change>> {
        let cols = columns(c, table)?;
        if !log_exists(c)? || limit == 0 {
            return Ok(Vec::new());
        }
        let schema: Option<TableSchema> =
            c.db.query_row(
                "SELECT schema FROM _dl_catalog WHERE name = ?1",
                [table],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .ok()
            .and_then(|b| TableSchema::from_catalog_bytes(&b).ok());
        let decoder = ChangeDecoder::new(table, &cols, schema.as_ref(), declared_type);
        let mut stmt = c
            .db
            .prepare_cached(
                "SELECT position, op, row FROM _dl_cdc_log WHERE tbl = ?1 AND position > ?2 ORDER BY position LIMIT ?3",
            )
            .map_err(map_err)?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt
            .query(rusqlite::params![table, after, limit])
            .map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(map_err)? {
            let position: i64 = r.get(0).map_err(map_err)?;
            let op: String = r.get(1).map_err(map_err)?;
            let image: String = r.get(2).map_err(map_err)?;
            out.push(decoder.decode(position, &op, &image)?);
        }
        Ok(out)
    };
    if in_tx {
        body(c)
    } else {
        atomically(c, "BEGIN DEFERRED", body)
    }
}

/// Deletes the changes of `table` up to and including `upto`; returns how many.
pub(crate) fn trim(c: &mut Conn<'_>, table: &str, upto: u64) -> Result<u64> {
    if !log_exists(c)? {
        return Ok(0);
    }
    let upto = i64::try_from(upto).unwrap_or(i64::MAX);
    let n =
        c.db.execute(
            "DELETE FROM _dl_cdc_log WHERE tbl = ?1 AND position <= ?2",
            rusqlite::params![table, upto],
        )
        .map_err(map_err)?;
    Ok(n as u64)
}

/// Bits of a change position below the open epoch: each open starts positions at the
/// next multiple of `2^40`.
const EPOCH_SHIFT: u32 = 40;

/// Starts a new open epoch of the change log, if there is one: moves the log's
/// `AUTOINCREMENT` counter to the next multiple of 2^40, in a transaction fsynced
/// whatever `PRAGMA synchronous` says (`synchronous` is restored afterwards).
///
/// Why: with `synchronous=NORMAL` a power loss may take back the last commits after a
/// reader saw their positions; the next commits would reuse those positions for
/// different changes, and the reader would skip them. After this, positions of this
/// open are above every position an earlier open could have handed out (fewer than
/// 2^40 per open).
///
/// # Errors
/// The SQLite errors of the update (e.g. `Timeout` when another process holds the
/// write lock past the busy timeout).
pub(crate) fn start_epoch(db: &rusqlite::Connection, synchronous: &str) -> Result<()> {
    let exists: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '_dl_cdc_log'",
            [],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    if exists == 0 {
        return Ok(());
    }
    db.pragma_update(None, "synchronous", "FULL")
        .map_err(map_err)?;
    let bumped = db.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         INSERT INTO sqlite_sequence (name, seq) SELECT '_dl_cdc_log', 0
           WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = '_dl_cdc_log');
         UPDATE sqlite_sequence SET seq = ((max(seq, (SELECT coalesce(max(position), 0)
           FROM _dl_cdc_log)) >> {EPOCH_SHIFT}) + 1) << {EPOCH_SHIFT}
           WHERE name = '_dl_cdc_log';
         COMMIT;"
    ));
    if bumped.is_err() && !db.is_autocommit() {
        let _ = db.execute_batch("ROLLBACK");
    }
    let restored = db.pragma_update(None, "synchronous", synchronous);
    bumped.map_err(map_err)?;
    restored.map_err(map_err)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlite_json_round_trips_reals() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        for x in [
            0.1f64,
            1.0 / 3.0,
            1e300,
            0.30000000000000004,
            -2.5e-308,
            123_456_789.123_456_78,
            f64::from(0.1f32),
        ] {
            let s: String = c
                .query_row("SELECT json_array(?1)", [x], |r| r.get(0))
                .unwrap();
            let back: Vec<f64> = serde_json::from_str(&s).unwrap();
            assert_eq!(back[0], x, "{s}");
        }
    }
}
