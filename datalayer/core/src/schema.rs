//! Table declarations: columns, primary key and secondary indexes.
//!
//! `#[derive(Table)]` builds a [`TableSchema`] once per type; engines create tables and
//! indexes from it (SQL DDL, or key ranges in the KV family), and the KV engines store it
//! in their catalog so that a migration can read it back.

use crate::error::{Error, Result};
use crate::query::Expr;
use crate::value::{ColumnType, Row};
use serde::{Deserialize, Serialize};

/// Longest identifier accepted, in bytes (PostgreSQL's limit).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Checks an identifier (table, column, index, savepoint, topic name): ASCII letter or
/// `_` first, then letters, digits or `_`, at most [`MAX_IDENTIFIER_BYTES`], and not
/// starting with `_dl_` (reserved for datalayer's own tables).
///
/// # Errors
/// `InvalidInput` naming the identifier and the rule it breaks.
pub fn validate_identifier(what: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let ok_rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok_first || !ok_rest || name.len() > MAX_IDENTIFIER_BYTES {
        return Err(Error::invalid_input(format!(
            "invalid {what} name {name:?}: use 1 to {MAX_IDENTIFIER_BYTES} ASCII letters, digits or '_', not starting with a digit"
        )));
    }
    if name.starts_with("_dl_") {
        return Err(Error::invalid_input(format!(
            "invalid {what} name {name:?}: the prefix _dl_ is reserved for datalayer"
        )));
    }
    Ok(())
}

/// Checks a table name: one of datalayer's internal tables ([`internal`]), or a valid
/// identifier ([`validate_identifier`]). For calls that name a table of the catalog
/// (the change feed), which may be an internal one (a migration moves the outbox).
///
/// # Errors
/// As [`validate_identifier`].
pub fn validate_table_name(name: &str) -> Result<()> {
    if internal::is_internal_table(name) {
        return Ok(());
    }
    validate_identifier("table", name)
}

/// The tables datalayer keeps for itself. Their names start with the reserved `_dl_`
/// prefix, which [`validate_identifier`] refuses for application tables; these exact
/// names are accepted by [`TableSchema::validate`]. They are part of every engine's
/// persistent format: never rename one.
pub mod internal {
    /// Outbox topics: `topic` → partition count (fixed at first use).
    pub const OUTBOX_TOPICS: &str = "_dl_outbox_topics";
    /// Outbox per-partition commit-order sequence: `(topic, part)` → last assigned seq.
    pub const OUTBOX_SEQ: &str = "_dl_outbox_seq";
    /// Outbox events: `(topic, part, seq)` → the event.
    pub const OUTBOX_EVENTS: &str = "_dl_outbox";
    /// Outbox consumer-group checkpoints and leases: `(grp, topic, part)`.
    pub const OUTBOX_GROUPS: &str = "_dl_outbox_groups";
    /// Outbox live workers of a group (heartbeats), for the fair share of partitions.
    pub const OUTBOX_MEMBERS: &str = "_dl_outbox_members";
    /// Outbox scheduled events a group has seen before they were due, one row each:
    /// `(grp, topic, part, deliver_at_us, seq)`.
    pub const OUTBOX_PENDING: &str = "_dl_outbox_pending";
    /// Outbox events emitted with a future delivery time: `(topic, part, seq)` → the
    /// event, indexed by `(topic, part, deliver_at_us, seq)`.
    pub const OUTBOX_SCHEDULED: &str = "_dl_outbox_scheduled";
    /// Progress of a migration into this engine (`datalayer-migrate`), one row per
    /// copied table: the last primary key copied and the source change-feed position
    /// applied, written in the same transaction as the rows they describe.
    pub const MIGRATION: &str = "_dl_migration";
    /// The schema history: one row per applied schema-evolution step, `(tbl, version,
    /// step)` → what was done and when ([`crate::evolve::HistoryEntry`]).
    pub const SCHEMA_HISTORY: &str = "_dl_schema_history";
    /// Progress of a destructive schema change's copy (`Db::migrate` with
    /// `allow_destructive`), one row per table being rebuilt: the copy's schema and the
    /// last source primary key copied, written in the same transaction as the rows.
    pub const REBUILD: &str = "_dl_rebuild";

    /// Whether `name` is one of datalayer's internal tables (allowed despite the
    /// reserved `_dl_` prefix).
    pub fn is_internal_table(name: &str) -> bool {
        [
            OUTBOX_TOPICS,
            OUTBOX_SEQ,
            OUTBOX_EVENTS,
            OUTBOX_GROUPS,
            OUTBOX_MEMBERS,
            OUTBOX_PENDING,
            OUTBOX_SCHEDULED,
            MIGRATION,
            SCHEMA_HISTORY,
            REBUILD,
        ]
        .contains(&name)
    }
}

/// One column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Column name in the engine (`#[column(name = ..)]`, else the field name).
    pub name: String,
    /// The Rust field name, used by queries to refer to the column.
    pub field: String,
    /// The column type.
    pub ty: ColumnType,
    /// Whether NULL is allowed (`Option<T>` fields).
    pub nullable: bool,
}

impl ColumnDef {
    /// A column whose engine name and Rust field name are both `name`.
    pub fn new(name: &str, ty: ColumnType, nullable: bool) -> Self {
        ColumnDef {
            name: name.into(),
            field: name.into(),
            ty,
            nullable,
        }
    }
}

/// A secondary index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexDef {
    /// Index name, unique within the table.
    pub name: String,
    /// Indexed columns, as positions in [`TableSchema::columns`], in index order.
    pub columns: Vec<usize>,
    /// At most one row per combination of non-NULL values (rows with a NULL in an
    /// indexed column never collide, as in SQL).
    pub unique: bool,
    /// Conditional (partial) index: only rows for which this filter is true are indexed.
    /// The expression uses columns and literals only.
    pub when: Option<Expr>,
}

/// A table: its columns, primary key and secondary indexes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Table name.
    pub name: String,
    /// Columns in storage order (the order of [`Row`] values).
    pub columns: Vec<ColumnDef>,
    /// Primary-key columns, as positions in `columns`, in key order (single or composite).
    pub primary_key: Vec<usize>,
    /// Secondary indexes.
    pub indexes: Vec<IndexDef>,
    /// The optimistic-locking version column (`#[version]`), as a position in
    /// `columns`: a non-null `I64` outside the primary key. On such a table,
    /// [`crate::Op::Update`] writes a row only where the stored version equals the
    /// row's, and stores the row's version + 1; a query-group update increments it;
    /// `Repo::insert` stores version 1 (the optimistic concurrency control of Kung and
    /// Robinson, "On Optimistic Methods for Concurrency Control", 1981, per row).
    pub version: Option<usize>,
}

impl TableSchema {
    /// The schema as its catalog entry: postcard bytes, as every engine stores it (the KV
    /// family under the catalog key, the SQL family in `_dl_catalog.schema`).
    ///
    /// # Errors
    /// `Engine` when postcard cannot encode it (never for a validated schema).
    pub fn catalog_bytes(&self) -> Result<Vec<u8>> {
        postcard::to_allocvec(self).map_err(|e| Error::engine("postcard", e.to_string()))
    }

    /// A schema from its catalog entry ([`TableSchema::catalog_bytes`]). An entry
    /// written before the version column existed (the same fields without the trailing
    /// `version`) reads as a schema without one.
    ///
    /// # Errors
    /// `Corrupted` when the bytes are not a postcard `TableSchema`.
    pub fn from_catalog_bytes(bytes: &[u8]) -> Result<TableSchema> {
        /// The catalog entry before `version`.
        #[derive(Deserialize)]
        struct Unversioned {
            name: String,
            columns: Vec<ColumnDef>,
            primary_key: Vec<usize>,
            indexes: Vec<IndexDef>,
        }
        match postcard::take_from_bytes::<TableSchema>(bytes) {
            Ok((t, [])) => Ok(t),
            Ok((_, rest)) => Err(Error::corrupted(format!(
                "catalog entry: {} trailing bytes",
                rest.len()
            ))),
            Err(e) => match postcard::take_from_bytes::<Unversioned>(bytes) {
                Ok((u, [])) => Ok(TableSchema {
                    name: u.name,
                    columns: u.columns,
                    primary_key: u.primary_key,
                    indexes: u.indexes,
                    version: None,
                }),
                _ => Err(Error::corrupted(format!("catalog entry: {e}"))),
            },
        }
    }

    /// Compares this (declared) schema with the catalog entry an engine has stored under
    /// its name (`catalog_bytes` of the schema it was created with). The one
    /// stored-vs-declared comparison of every engine.
    ///
    /// # Errors
    /// `InvalidInput` naming the table and the stored columns when they differ ("migrate it
    /// first").
    pub fn check_stored(&self, stored: &[u8]) -> Result<()> {
        if self.catalog_bytes()? == stored {
            return Ok(());
        }
        let old = TableSchema::from_catalog_bytes(stored).ok();
        if old.as_ref() == Some(self) {
            // The same schema in an older encoding (before `version`).
            return Ok(());
        }
        Err(Error::invalid_input(format!(
            "table {} is stored with a different schema ({}); migrate it first",
            self.name,
            match old {
                Some(o) => format!(
                    "stored columns {:?}",
                    o.columns.iter().map(|c| &c.name).collect::<Vec<_>>()
                ),
                None => "undecodable".into(),
            }
        )))
    }

    /// Position of the column whose field or column name is `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.field == name)
            .or_else(|| self.columns.iter().position(|c| c.name == name))
    }

    /// Position of the index named `name`.
    pub fn index_position(&self, name: &str) -> Option<usize> {
        self.indexes.iter().position(|i| i.name == name)
    }

    /// The primary-key values of `row`.
    pub fn key_of(&self, row: &Row) -> Row {
        self.primary_key.iter().map(|&i| row[i].clone()).collect()
    }

    /// Checks names, key and index definitions.
    ///
    /// # Errors
    /// `InvalidInput` for a bad identifier, an empty or nullable primary key, a column
    /// position out of range, or duplicate names.
    pub fn validate(&self) -> Result<()> {
        if !internal::is_internal_table(&self.name) {
            validate_identifier("table", &self.name)?;
        }
        if self.columns.is_empty() {
            return Err(Error::invalid_input(format!(
                "table {} has no columns",
                self.name
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            validate_identifier("column", &c.name)?;
            if !seen.insert(c.name.as_str()) {
                return Err(Error::invalid_input(format!(
                    "table {} declares column {} twice",
                    self.name, c.name
                )));
            }
        }
        if self.primary_key.is_empty() {
            return Err(Error::invalid_input(format!(
                "table {} has no primary key",
                self.name
            )));
        }
        for &k in &self.primary_key {
            let c = self.columns.get(k).ok_or_else(|| {
                Error::invalid_input(format!(
                    "table {}: primary-key column {k} out of range",
                    self.name
                ))
            })?;
            if c.nullable {
                return Err(Error::invalid_input(format!(
                    "table {}: primary-key column {} cannot be nullable",
                    self.name, c.name
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for ix in &self.indexes {
            validate_identifier("index", &ix.name)?;
            if !names.insert(ix.name.as_str()) {
                return Err(Error::invalid_input(format!(
                    "table {} declares index {} twice",
                    self.name, ix.name
                )));
            }
            if ix.columns.is_empty() || ix.columns.iter().any(|&c| c >= self.columns.len()) {
                return Err(Error::invalid_input(format!(
                    "table {}: index {} has no or unknown columns",
                    self.name, ix.name
                )));
            }
        }
        // A key or index orders its columns; JSON has no order every engine shares.
        let ordered = self
            .primary_key
            .iter()
            .chain(self.indexes.iter().flat_map(|ix| ix.columns.iter()));
        for &c in ordered {
            if !self.columns[c].ty.is_orderable() {
                return Err(Error::invalid_input(format!(
                    "table {}: column {} is {:?}, which cannot be in a primary key or an index",
                    self.name, self.columns[c].name, self.columns[c].ty
                )));
            }
        }
        if let Some(v) = self.version {
            let ok = self.columns.get(v).is_some_and(|c| {
                c.ty == ColumnType::I64 && !c.nullable && !self.primary_key.contains(&v)
            });
            if !ok {
                return Err(Error::invalid_input(format!(
                    "table {}: the version column must be a non-null i64 outside the primary key",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// The version stored in `row` (`None`: the table has no version column, or the
    /// value is not an integer).
    pub fn version_of(&self, row: &Row) -> Option<i64> {
        self.version.and_then(|v| row.get(v)?.as_i64())
    }

    /// Coerces `vals` to the types of the columns at positions `cols` (a key prefix:
    /// fewer values than columns is fine).
    ///
    /// # Errors
    /// `InvalidInput` for more values than columns or a value that does not fit.
    pub fn coerce_values(&self, cols: &[usize], vals: Row) -> Result<Row> {
        if vals.len() > cols.len() {
            return Err(Error::invalid_input(format!(
                "{}: too many key values",
                self.name
            )));
        }
        vals.into_iter()
            .zip(cols)
            .map(|(v, &c)| {
                v.check_range()?;
                v.coerce(self.columns[c].ty)
            })
            .collect()
    }

    /// Checks a full primary key's arity and coerces its values to the key columns' types.
    ///
    /// # Errors
    /// `InvalidInput` for the wrong number of values or a value that does not fit.
    pub fn coerce_key(&self, key: Row) -> Result<Row> {
        if key.len() != self.primary_key.len() {
            return Err(Error::invalid_input(format!(
                "{}: the primary key has {} column(s), got {:?}",
                self.name,
                self.primary_key.len(),
                key
            )));
        }
        self.coerce_values(&self.primary_key, key)
    }

    /// Checks that `row` fits the table: arity, types (integers and floats are coerced
    /// to the column's width), and NULL only in nullable columns.
    ///
    /// # Errors
    /// `InvalidInput` naming the table, column and the offending value.
    pub fn check_row(&self, mut row: Row) -> Result<Row> {
        if row.len() != self.columns.len() {
            return Err(Error::invalid_input(format!(
                "table {} has {} columns, the row has {}",
                self.name,
                self.columns.len(),
                row.len()
            )));
        }
        for (v, c) in row.iter_mut().zip(&self.columns) {
            if v.is_null() {
                if c.nullable {
                    continue;
                }
                return Err(Error::invalid_input(format!(
                    "column {}.{} is not nullable",
                    self.name, c.name
                )));
            }
            if v.column_type() == Some(c.ty) {
                v.check_range().map_err(|e| {
                    Error::invalid_input(format!(
                        "column {}.{}: {}",
                        self.name,
                        c.name,
                        e.message()
                    ))
                })?;
                continue;
            }
            let numeric = v.column_type().is_some_and(|t| t.is_numeric()) && c.ty.is_numeric();
            if !numeric {
                return Err(Error::invalid_input(format!(
                    "column {}.{} expects {:?}, got {v:?}",
                    self.name, c.name, c.ty
                )));
            }
            *v = std::mem::take(v).coerce(c.ty).map_err(|e| {
                Error::invalid_input(format!("column {}.{}: {}", self.name, c.name, e.message()))
            })?;
        }
        Ok(row)
    }
}

/// A Rust type stored as the rows of one table. Implemented by `#[derive(Table)]`.
///
/// The derive generates the row codec and column metadata, never query methods: queries
/// come from `#[query_group]` and [`crate::Repo`].
pub trait Table: Sized + Send + Sync + Unpin + 'static {
    /// The table's schema, built once.
    fn schema() -> &'static TableSchema;
    /// The column values, in column order.
    fn to_row(&self) -> Row;
    /// Builds the value from column values in column order.
    ///
    /// # Errors
    /// `InvalidInput` when the arity or a value's type does not match.
    fn from_row(row: Row) -> Result<Self>;
    /// The primary-key values.
    fn key(&self) -> Row {
        let row = self.to_row();
        Self::schema().key_of(&row)
    }
    /// Schema-evolution hints of the declaration (`#[column(default = ..)]`,
    /// `#[column(renamed_from = "..")]`, `#[table(renamed_from = "..")]`); none by
    /// default.
    fn evolution() -> crate::evolve::Evolution {
        crate::evolve::Evolution::default()
    }
}

/// Declares a belongs-to relationship: `Self` (the child) holds a foreign key to `P`
/// (the parent) in the columns named by `FOREIGN_KEY`, in `P`'s primary-key order.
/// `#[derive(Table)]` implements it for fields marked `#[belongs_to(P)]`.
///
/// The has-many direction (`Repo::<P>::has_many::<Self>`) needs a secondary index on
/// `Self` whose leading columns are the foreign-key columns.
pub trait BelongsTo<P: Table>: Table {
    /// Field names of the foreign-key columns on `Self`.
    const FOREIGN_KEY: &'static [&'static str];
    /// The parent's primary key, or `None` when the foreign key is NULL.
    fn parent_key(&self) -> Option<Row>;
}

/// An id-list relationship: `Self` stores a list of `R`'s primary keys in one column, and
/// a `#[relation(ids = field)]` field of type `Vec<R>` that is filled on request
/// (`Repo::load_ids`) with one batched read. `#[derive(Table)]` implements it.
pub trait IdList<R: Table>: Table {
    /// The primary keys of the related rows, in list order.
    fn related_keys(&self) -> Vec<Row>;
    /// Stores the loaded rows (in list order; ids with no row are left out).
    fn fill_related(&mut self, rows: Vec<R>);
}
