//! Change data capture with triggers, and positions assigned in commit order.
//!
//! # Log format
//! ```sql
//! CREATE TABLE _dl_cdc_log (
//!     id       BIGSERIAL PRIMARY KEY,        -- insertion order (not commit order)
//!     txid     XID8 NOT NULL DEFAULT pg_current_xact_id(),  -- the writing transaction
//!     position BIGINT UNIQUE,                -- NULL until sequenced (see below)
//!     tbl      TEXT NOT NULL,                -- table name
//!     op       TEXT NOT NULL,                -- 'insert' | 'update' | 'delete'
//!     row      JSON NOT NULL                 -- json_build_array(<values in column order>)
//! );
//! CREATE TABLE _dl_cdc_state (one BOOLEAN PRIMARY KEY, last BIGINT NOT NULL); -- last position
//! ```
//! Both live in the engine's schema. [`enable`] installs one `AFTER INSERT OR UPDATE OR
//! DELETE ... FOR EACH ROW` trigger per table (`_dl_cdc_<table>`, function of the same
//! name; a name longer than PostgreSQL's 63 bytes becomes a prefix and a hash of it,
//! see [`Dialect::generated_ident`]) appending the new image (the old image for a
//! delete). Because it is a trigger, writes made outside datalayer (raw SQL, another program, `psql`) are
//! captured in the same transaction as the write; the function names the log with
//! its schema, so it works whatever the writer's `search_path` is.
//!
//! Values in the JSON array: NULL → `null`, booleans → `true`/`false`, integers and
//! floats → numbers (PostgreSQL ≥ 12 prints floats with the shortest text that
//! round-trips, unless the writing session lowered `extra_float_digits`; NaN and
//! infinities → the strings `"NaN"`, `"Infinity"`, `"-Infinity"`), text → strings,
//! bytea → **lower-case hex strings** (`encode(.., 'hex')`), timestamptz → µs since
//! the Unix epoch, date → days since 1970-01-01, uuid, numeric and jsonb → their text. Column names are resolved
//! when the log is read, from the table's current columns, as in the SQLite engine;
//! values are typed by the catalog schema, else by the column's SQL type. Re-running
//! [`enable`] after `ALTER TABLE ADD COLUMN` re-creates the trigger with the new column.
//! `json_build_array` takes at most 100 arguments: tables with more than 100 columns
//! cannot be captured.
//!
//! # Ordering: positions are assigned at read time, in commit order
//! Positions taken from a sequence when a row is *written* are not in commit order:
//! transaction A writes (id 10), transaction B writes (id 11) and commits, a reader
//! sees 11 and moves past it, then A commits: a reader resuming "after 11" would skip
//! A's change for ever. Filtering on the snapshot's `xmin` (only return entries whose
//! `txid` is below it) is not enough on its own either, because transaction ids are not
//! in write order: B may have taken its id before A and still written its entry
//! after A's, so "B below the horizon, A above it" can coexist with "A's id < B's id".
//!
//! So the log keeps `position` NULL on write, and every read first *sequences*: in
//! one short transaction holding the schema's sequencer lock
//! (`pg_advisory_xact_lock(4242002, hashtext(current_schema()))`), it gives every
//! committed entry that has no position yet the next positions (after
//! `_dl_cdc_state.last`), in `id` order, and then reads by position. The rule:
//!
//! > An entry gets its position only once its transaction has committed, and every
//! > position is larger than every position handed out before.
//!
//! A transaction that commits late is therefore sequenced late, after everything a
//! reader could already have read: no reader ever misses it. Two entries of the same
//! row written by two transactions are sequenced in write order (the second writer
//! waited for the first one's row lock, so its entry's `id` is larger, and a snapshot
//! that sees the second commit sees the first). Rolled-back entries are never visible
//! and never sequenced. Sequencing is serialized by the lock (a second reader waits a
//! few milliseconds); a read that finds nothing new writes nothing. Trimming deletes
//! sequenced entries only, and positions are never reused (`_dl_cdc_state.last` only
//! grows). The cost: each entry is written twice (insert, then its position), which is
//! the price of a gap-free, commit-ordered feed without a server extension.

use crate::backend::{execute, query};
use crate::conn::PgConn;
use crate::dialect::{MAX_IDENTIFIER_BYTES, PgDialect};
use crate::error::map_err;
use datalayer_core::{Change, ColumnType, Error, Result, TableSchema, Value};
use datalayer_sql::{ChangeDecoder, Dialect, StmtKey, truncated_identifier};
use tokio_postgres::types::Type;

const LOG_DDL: &str = "CREATE TABLE IF NOT EXISTS _dl_cdc_log (
    id BIGSERIAL PRIMARY KEY,
    txid XID8 NOT NULL DEFAULT pg_current_xact_id(),
    position BIGINT UNIQUE,
    tbl TEXT NOT NULL,
    op TEXT NOT NULL,
    row JSON NOT NULL);
CREATE INDEX IF NOT EXISTS _dl_cdc_log_by_tbl ON _dl_cdc_log (tbl, position);
CREATE INDEX IF NOT EXISTS _dl_cdc_log_unsequenced ON _dl_cdc_log (id) WHERE position IS NULL;
CREATE TABLE IF NOT EXISTS _dl_cdc_state (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), last BIGINT NOT NULL);
INSERT INTO _dl_cdc_state (one, last) VALUES (TRUE, 0) ON CONFLICT DO NOTHING;";

/// Gives the committed, unsequenced entries their positions (see the module docs).
const SEQUENCE: &str = "BEGIN;
SELECT pg_advisory_xact_lock(4242002, hashtext(coalesce(current_schema(), '')));
WITH todo AS (
    SELECT id, row_number() OVER (ORDER BY id) AS n FROM _dl_cdc_log WHERE position IS NULL
), base AS (SELECT last FROM _dl_cdc_state),
upd AS (
    UPDATE _dl_cdc_log l SET position = base.last + todo.n FROM todo, base
    WHERE l.id = todo.id AND l.position IS NULL RETURNING todo.n
)
UPDATE _dl_cdc_state SET last = last + (SELECT max(n) FROM upd) WHERE EXISTS (SELECT 1 FROM upd);
COMMIT;";

const READ: &str = "SELECT position, op, row::text FROM _dl_cdc_log WHERE tbl = $1 AND position > $2 ORDER BY position LIMIT $3";
const TRIM: &str = "DELETE FROM _dl_cdc_log WHERE tbl = $1 AND position <= $2";
const COLUMNS: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";
const LOG_EXISTS: &str = "SELECT to_regclass('_dl_cdc_log') IS NOT NULL, current_schema()::text";
const CATALOG_GET: &str = "SELECT schema FROM _dl_catalog WHERE name = $1";

fn q(ident: &str) -> String {
    PgDialect.quote_ident(ident)
}

/// What a read needs to know about `table` and the log.
struct Info {
    /// (name, SQL type) of the current columns.
    columns: Vec<(String, String)>,
    log_exists: bool,
    schema: String,
    catalog: Option<TableSchema>,
}

async fn info(c: &mut PgConn, table: &str) -> Result<Info> {
    let cols = c
        .stmt(StmtKey::Fixed(COLUMNS), COLUMNS, &[Type::TEXT])
        .await?;
    let exists = c.stmt(StmtKey::Fixed(LOG_EXISTS), LOG_EXISTS, &[]).await?;
    let cat = c
        .stmt(StmtKey::Fixed(CATALOG_GET), CATALOG_GET, &[Type::TEXT])
        .await?;
    let client = &c.client;
    let tv = [Value::String(q(table))];
    let nv = [Value::String(table.to_owned())];
    let (cols, exists, cat) = futures::try_join!(
        query(client, &cols, &tv),
        query(client, &exists, &[]),
        query(client, &cat, &nv),
    )?;
    let columns = cols
        .iter()
        .map(|r| {
            Ok((
                r.try_get(0).map_err(map_err)?,
                r.try_get(1).map_err(map_err)?,
            ))
        })
        .collect::<Result<Vec<(String, String)>>>()?;
    if columns.is_empty() {
        return Err(Error::not_found(format!("no table named {table}")));
    }
    let (log_exists, schema): (bool, Option<String>) = match exists.first() {
        Some(r) => (
            r.try_get(0).map_err(map_err)?,
            r.try_get(1).map_err(map_err)?,
        ),
        None => (false, None),
    };
    let catalog = match cat.first() {
        Some(r) => {
            let b: Vec<u8> = r.try_get(0).map_err(map_err)?;
            TableSchema::from_catalog_bytes(&b).ok()
        }
        None => None,
    };
    Ok(Info {
        columns,
        log_exists,
        schema: schema.unwrap_or_else(|| "public".to_owned()),
        catalog,
    })
}

/// The name of the capture trigger of `table` and of its function, and the name an
/// older version gave them when it differs.
///
/// The readable form is `_dl_cdc_<table>`, up to 71 bytes for a 63-byte table name;
/// PostgreSQL keeps 63 bytes of an identifier, so two tables sharing their first 55
/// bytes would share one function (the second `CREATE OR REPLACE FUNCTION` would log
/// the first table's changes under the second's name). The name is therefore fitted
/// with [`Dialect::generated_ident`] (unchanged up to 63 bytes, else a prefix and a
/// hash). The second value is the server-truncated name older versions created, for
/// names that did not fit.
fn trigger_name(table: &str) -> (String, Option<String>) {
    let full = format!("_dl_cdc_{table}");
    let name = PgDialect.generated_ident(&full);
    let legacy =
        (name != full).then(|| truncated_identifier(&full, MAX_IDENTIFIER_BYTES).to_owned());
    (name, legacy)
}

const TRIGGER_EXISTS: &str =
    "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2";

/// Whether the capture trigger of `table` is installed.
pub(crate) async fn enabled(c: &mut PgConn, table: &str) -> Result<bool> {
    let stmt = c
        .stmt(
            StmtKey::Fixed(TRIGGER_EXISTS),
            TRIGGER_EXISTS,
            &[Type::TEXT, Type::TEXT],
        )
        .await?;
    let (name, _) = trigger_name(table);
    let rows = query(
        &c.client,
        &stmt,
        &[Value::String(q(table)), Value::String(name)],
    )
    .await?;
    let n: i64 = match rows.first() {
        Some(r) => r.try_get(0).map_err(map_err)?,
        None => 0,
    };
    Ok(n > 0)
}

/// Installs (or re-installs, with the current columns) the capture trigger of `table`.
pub(crate) async fn enable(c: &mut PgConn, table: &str) -> Result<()> {
    let info = info(c, table).await?;
    let schema = q(&info.schema);
    let image = |rec: &str| -> String {
        info.columns
            .iter()
            .map(|(name, ty)| {
                let v = format!("{rec}.{}", q(name));
                match ty.as_str() {
                    "bytea" => format!("encode({v}, 'hex')"),
                    // Exact integers, independent of the session's TimeZone/DateStyle.
                    "timestamp with time zone" => {
                        format!("(extract(epoch from {v}) * 1000000)::int8")
                    }
                    "date" => format!("({v} - DATE '1970-01-01')"),
                    // Text: exact digits, and a JSON document kept as one string.
                    "numeric" | "uuid" | "jsonb" => format!("{v}::text"),
                    _ => v,
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (name, legacy) = trigger_name(table);
    let func = format!("{schema}.{}", q(&name));
    let trigger = q(&name);
    // A trigger made before names were fitted, under the server-truncated name: it may
    // call a function shared with another table (see `trigger_name`); dropped so that
    // changes are not logged twice or under the wrong table.
    let drop_legacy = match legacy {
        Some(l) => format!("DROP TRIGGER IF EXISTS {} ON {schema}.{};", q(&l), q(table)),
        None => String::new(),
    };
    let lit = table.replace('\'', "''");
    let ddl = format!(
        "{lock};
{LOG_DDL}
CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $dl_cdc$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO {schema}._dl_cdc_log (tbl, op, row) VALUES ('{lit}', 'delete', json_build_array({old}));
  ELSE
    INSERT INTO {schema}._dl_cdc_log (tbl, op, row) VALUES ('{lit}', lower(TG_OP), json_build_array({new}));
  END IF;
  RETURN NULL;
END
$dl_cdc$;
{drop_legacy}
DROP TRIGGER IF EXISTS {trigger} ON {schema}.{tbl};
CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {schema}.{tbl} FOR EACH ROW EXECUTE FUNCTION {func}();",
        lock = crate::backend::DDL_LOCK,
        old = image("OLD"),
        new = image("NEW"),
        tbl = q(table),
    );
    let PgConn {
        client, tainted, ..
    } = c;
    let client: &tokio_postgres::Client = client;
    PgConn::atomically(client, tainted, "BEGIN", async {
        client.batch_execute(&ddl).await.map_err(map_err)
    })
    .await
}

fn sql_type(decl: &str) -> Option<ColumnType> {
    Some(match decl {
        "boolean" => ColumnType::Bool,
        "smallint" => ColumnType::I16,
        "integer" => ColumnType::I32,
        "bigint" => ColumnType::I64,
        "real" => ColumnType::F32,
        "double precision" => ColumnType::F64,
        "bytea" => ColumnType::Bytes,
        "uuid" => ColumnType::Uuid,
        "timestamp with time zone" => ColumnType::Timestamp,
        "date" => ColumnType::Date,
        "numeric" => ColumnType::Decimal,
        "jsonb" => ColumnType::Json,
        d if d == "text" || d.starts_with("character") => ColumnType::String,
        _ => return None,
    })
}

/// Up to `limit` changes of `table` after `after`, in position (commit) order.
pub(crate) async fn read(
    c: &mut PgConn,
    table: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<Change>> {
    let info = info(c, table).await?;
    if !info.log_exists || limit == 0 {
        return Ok(Vec::new());
    }
    let decoder = ChangeDecoder::new(table, &info.columns, info.catalog.as_ref(), sql_type);
    let read = c
        .stmt(
            StmtKey::Fixed(READ),
            READ,
            &[Type::TEXT, Type::INT8, Type::INT8],
        )
        .await?;
    let vals = [
        Value::String(table.to_owned()),
        Value::I64(i64::try_from(after).unwrap_or(i64::MAX)),
        Value::I64(i64::try_from(limit).unwrap_or(i64::MAX)),
    ];
    let PgConn {
        client, tainted, ..
    } = c;
    let client: &tokio_postgres::Client = client;
    // SEQUENCE runs BEGIN ... COMMIT itself; the read is pipelined behind it.
    *tainted = true;
    let (seq, rows) = futures::join!(client.batch_execute(SEQUENCE), query(client, &read, &vals));
    if let Err(e) = seq {
        if client.batch_execute("ROLLBACK").await.is_ok() {
            *tainted = false;
        }
        return Err(map_err(e));
    }
    *tainted = false;
    let rows = rows?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let position: i64 = r.try_get(0).map_err(map_err)?;
        let op: &str = r.try_get(1).map_err(map_err)?;
        let image: &str = r.try_get(2).map_err(map_err)?;
        out.push(decoder.decode(position, op, image)?);
    }
    Ok(out)
}

/// Deletes the sequenced changes of `table` up to and including `upto`; returns how
/// many.
pub(crate) async fn trim(c: &mut PgConn, table: &str, upto: u64) -> Result<u64> {
    let info = info(c, table).await?;
    if !info.log_exists {
        return Ok(0);
    }
    let stmt = c
        .stmt(StmtKey::Fixed(TRIM), TRIM, &[Type::TEXT, Type::INT8])
        .await?;
    let vals = [
        Value::String(table.to_owned()),
        Value::I64(i64::try_from(upto).unwrap_or(i64::MAX)),
    ];
    execute(&c.client, &stmt, &vals).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_names_fit() {
        assert_eq!(
            trigger_name("accounts"),
            ("_dl_cdc_accounts".to_owned(), None)
        );
        let t = "identifier_limit_table_with_a_rather_long_name_sixty_bytes_a";
        let (name, legacy) = trigger_name(t);
        assert_eq!(name.len(), 63);
        assert_ne!(name, trigger_name(&format!("{}b", &t[..59])).0);
        let full = format!("_dl_cdc_{t}");
        assert_eq!(legacy.as_deref(), Some(&full[..63]));
    }
}
