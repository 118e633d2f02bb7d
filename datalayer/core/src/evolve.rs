//! Schema evolution: the difference between a table's stored schema and its
//! declaration, as a list of steps, and which of them are safe to apply online.
//!
//! [`diff`] compares the stored [`TableSchema`] (the engine's catalog) with the
//! declared one plus its [`Evolution`] hints (`#[column(default = ..)]`,
//! `#[column(renamed_from = "..")]`, `#[table(renamed_from = "..")]`) and returns
//! [`SchemaStep`]s. Columns and indexes are matched by name (after renames); an index
//! whose definition changed is dropped and added again.
//!
//! Safe steps ([`SchemaStep::is_safe`]) keep every stored row and need no rewrite of
//! its values: adding a nullable column or one with a declared default, adding or
//! dropping a secondary index, renaming a table or column. The others — dropping a
//! column, changing a column's type or nullability, changing the primary key or the
//! version column — lose or reinterpret stored data and are refused unless
//! explicitly allowed ([`crate::DbBuilder::allow_destructive`]).
//!
//! The step vocabulary follows the SQL standard's `ALTER TABLE` (ISO/IEC 9075-2,
//! 11.10 ff.) and PostgreSQL's `CREATE INDEX CONCURRENTLY` for online index builds.

use crate::error::{Error, Result};
use crate::schema::{ColumnDef, IndexDef, TableSchema};
use crate::value::{ColumnType, Value};
use std::fmt;

/// Declaration hints a schema alone does not carry: what a column was called
/// before, its default for rows stored before it existed, and the table's old name.
/// Built by `#[derive(Table)]` ([`crate::Table::evolution`]); not stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evolution {
    /// `#[table(renamed_from = "old")]`: the table's previous name.
    pub renamed_from: Option<String>,
    /// `#[column(default = lit)]`, by column position: the value rows stored before
    /// the column existed read as (and the SQL column default).
    pub defaults: Vec<(usize, Value)>,
    /// `#[column(renamed_from = "old")]`, by column position: the column's previous
    /// name.
    pub column_renames: Vec<(usize, String)>,
}

impl Evolution {
    /// The declared default of column `i`.
    pub fn default_of(&self, i: usize) -> Option<&Value> {
        self.defaults.iter().find(|(c, _)| *c == i).map(|(_, v)| v)
    }
    /// The previous name of column `i`.
    pub fn renamed_from(&self, i: usize) -> Option<&str> {
        self.column_renames
            .iter()
            .find(|(c, _)| *c == i)
            .map(|(_, n)| n.as_str())
    }
}

/// One change from a stored schema to a declared one.
#[derive(Clone, Debug, PartialEq)]
pub enum SchemaStep {
    /// `ALTER TABLE from RENAME TO to`.
    RenameTable {
        /// Stored name.
        from: String,
        /// Declared name.
        to: String,
    },
    /// `ALTER TABLE .. RENAME COLUMN from TO to`.
    RenameColumn {
        /// Stored name.
        from: String,
        /// Declared name.
        to: String,
    },
    /// `ALTER TABLE .. ADD COLUMN`: stored rows read `default` (NULL when `None`).
    AddColumn {
        /// The declared column.
        column: ColumnDef,
        /// The declared default (`#[column(default = ..)]`).
        default: Option<Value>,
    },
    /// `DROP INDEX` (also the first half of a changed index).
    DropIndex {
        /// The index name.
        name: String,
    },
    /// `CREATE [UNIQUE] INDEX .. [WHERE ..]`, built online: stored rows are
    /// backfilled while writes go on.
    AddIndex {
        /// The declared index (column positions in the declared schema).
        index: IndexDef,
    },
    /// `ALTER TABLE .. DROP COLUMN`: destructive.
    DropColumn {
        /// The stored column.
        name: String,
    },
    /// A column's type or nullability changed: destructive.
    ChangeColumn {
        /// The stored column.
        from: ColumnDef,
        /// The declared column.
        to: ColumnDef,
    },
    /// The primary key's columns changed: destructive.
    ChangePrimaryKey {
        /// Stored key column names.
        from: Vec<String>,
        /// Declared key column names.
        to: Vec<String>,
    },
    /// The `#[version]` column changed: destructive (stored versions would be
    /// reinterpreted).
    ChangeVersionColumn {
        /// Stored version column name.
        from: Option<String>,
        /// Declared version column name.
        to: Option<String>,
    },
    /// A column with neither NULL nor a default to give stored rows: refused.
    AddRequiredColumn {
        /// The declared column.
        column: ColumnDef,
    },
}

impl SchemaStep {
    /// Whether the step keeps every stored row and value: renames, a nullable or
    /// defaulted new column, index changes.
    pub fn is_safe(&self) -> bool {
        matches!(
            self,
            SchemaStep::RenameTable { .. }
                | SchemaStep::RenameColumn { .. }
                | SchemaStep::AddColumn { .. }
                | SchemaStep::DropIndex { .. }
                | SchemaStep::AddIndex { .. }
        )
    }
}

impl fmt::Display for SchemaStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaStep::RenameTable { from, to } => write!(f, "rename table {from} to {to}"),
            SchemaStep::RenameColumn { from, to } => write!(f, "rename column {from} to {to}"),
            SchemaStep::AddColumn { column, default } => {
                write!(
                    f,
                    "add column {} {:?}{}",
                    column.name,
                    column.ty,
                    if column.nullable {
                        " NULL"
                    } else {
                        " NOT NULL"
                    }
                )?;
                match default {
                    Some(d) => write!(f, " DEFAULT {d}"),
                    None => Ok(()),
                }
            }
            SchemaStep::DropIndex { name } => write!(f, "drop index {name}"),
            SchemaStep::AddIndex { index } => write!(
                f,
                "add{} index {} on columns {:?}{} (online)",
                if index.unique { " unique" } else { "" },
                index.name,
                index.columns,
                if index.when.is_some() {
                    " where .."
                } else {
                    ""
                }
            ),
            SchemaStep::DropColumn { name } => write!(f, "drop column {name} (destructive)"),
            SchemaStep::ChangeColumn { from, to } => write!(
                f,
                "change column {} from {:?}{} to {:?}{} (destructive)",
                from.name,
                from.ty,
                if from.nullable { " NULL" } else { "" },
                to.ty,
                if to.nullable { " NULL" } else { "" }
            ),
            SchemaStep::ChangePrimaryKey { from, to } => {
                write!(f, "change primary key {from:?} to {to:?} (destructive)")
            }
            SchemaStep::ChangeVersionColumn { from, to } => {
                write!(f, "change version column {from:?} to {to:?} (destructive)")
            }
            SchemaStep::AddRequiredColumn { column } => write!(
                f,
                "add NOT NULL column {} without a default (refused: stored rows have no value)",
                column.name
            ),
        }
    }
}

/// The steps that take one table from its stored schema to its declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct TablePlan {
    /// The stored schema (the name it is stored under).
    pub from: TableSchema,
    /// The declared schema.
    pub to: TableSchema,
    /// The declaration hints the steps came from (defaults of added columns).
    pub evolution: Evolution,
    /// The steps, in the order they apply: renames, column additions, index drops,
    /// index additions, then the destructive ones.
    pub steps: Vec<SchemaStep>,
}

impl TablePlan {
    /// Whether every step is safe ([`SchemaStep::is_safe`]).
    pub fn is_safe(&self) -> bool {
        self.steps.iter().all(SchemaStep::is_safe)
    }

    /// For each declared column, the stored column it reads from (`None`: added by
    /// this plan), matched by name after renames.
    pub fn column_sources(&self) -> Vec<Option<usize>> {
        self.to
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let old = self.evolution.renamed_from(i);
                self.from
                    .columns
                    .iter()
                    .position(|s| s.name == c.name)
                    .or_else(|| {
                        old.and_then(|o| self.from.columns.iter().position(|s| s.name == o))
                    })
            })
            .collect()
    }

    /// A stored row in the declared layout: each declared column takes the stored
    /// value of its source column, an added one its declared default (or NULL).
    /// Valid for safe plans (no type changes).
    pub fn transform_row(&self, sources: &[Option<usize>], stored: &[Value]) -> Vec<Value> {
        sources
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Some(s) => stored.get(*s).cloned().unwrap_or_default(),
                None => self.evolution.default_of(i).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// A stored row in the declared layout for a destructive plan
    /// ([`crate::Db::migrate`] with `allow_destructive`): like
    /// [`TablePlan::transform_row`], and each value converted to its declared type
    /// ([`convert`]); a NULL in a column declared NOT NULL takes the declared
    /// default, a new version column starts at 1.
    ///
    /// # Errors
    /// `InvalidInput` naming the row's primary key, the column and the value that
    /// does not convert, or the NULL that has no default.
    pub fn rebuild_row(&self, sources: &[Option<usize>], stored: &[Value]) -> Result<Vec<Value>> {
        let key = || {
            self.from
                .primary_key
                .iter()
                .map(|&k| stored.get(k).map_or_else(String::new, ToString::to_string))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = Vec::with_capacity(sources.len());
        for (i, (c, s)) in self.to.columns.iter().zip(sources).enumerate() {
            let v = match s {
                Some(s) => stored.get(*s).cloned().unwrap_or_default(),
                None if self.to.version == Some(i) => Value::I64(1),
                None => Value::Null,
            };
            let v = convert(v, c.ty).map_err(|e| {
                Error::invalid_input(format!(
                    "table {}, row ({}), column {}: {}",
                    self.from.name,
                    key(),
                    c.name,
                    e.message()
                ))
            })?;
            let v = match (v, self.evolution.default_of(i)) {
                (Value::Null, Some(d)) if !c.nullable => d.clone(),
                (Value::Null, _) if !c.nullable => {
                    return Err(Error::invalid_input(format!(
                        "table {}, row ({}): column {} is NOT NULL and the row has no value (declare a default)",
                        self.from.name,
                        key(),
                        c.name
                    )));
                }
                (v, _) => v,
            };
            out.push(v);
        }
        Ok(out)
    }

    /// Whether the stored row layout changes (a column added, dropped or moved);
    /// renames alone keep it.
    pub fn changes_row_layout(&self) -> bool {
        let sources = self.column_sources();
        sources.len() != self.from.columns.len()
            || sources.iter().enumerate().any(|(i, s)| *s != Some(i))
    }
}

impl fmt::Display for TablePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table {}:", self.to.name)?;
        for s in &self.steps {
            writeln!(f, "  {s}")?;
        }
        Ok(())
    }
}

/// The difference between what is stored and what is declared, for every table
/// that differs ([`crate::Db::plan_migration`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MigrationPlan {
    /// One entry per table with at least one step.
    pub tables: Vec<TablePlan>,
}

impl MigrationPlan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
    /// Whether every step of every table is safe.
    pub fn is_safe(&self) -> bool {
        self.tables.iter().all(TablePlan::is_safe)
    }
    /// The steps that are not safe, with their table, for messages.
    pub fn unsafe_steps(&self) -> Vec<(String, &SchemaStep)> {
        self.tables
            .iter()
            .flat_map(|t| {
                t.steps
                    .iter()
                    .filter(|s| !s.is_safe())
                    .map(|s| (t.to.name.clone(), s))
            })
            .collect()
    }
}

impl fmt::Display for MigrationPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tables.is_empty() {
            return writeln!(f, "no schema changes");
        }
        for t in &self.tables {
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

/// The steps from `stored` to `declared` (see the module docs). Empty when they are
/// the same.
///
/// # Errors
/// `InvalidInput` when a declared default does not fit its column's type.
pub fn diff(stored: &TableSchema, declared: &TableSchema, ev: &Evolution) -> Result<TablePlan> {
    let mut steps = Vec::new();
    if stored.name != declared.name {
        steps.push(SchemaStep::RenameTable {
            from: stored.name.clone(),
            to: declared.name.clone(),
        });
    }
    for (i, d) in &ev.defaults {
        let c = &declared.columns[*i];
        if d.column_type() != Some(c.ty) || d.check_range().is_err() {
            return Err(Error::invalid_input(format!(
                "table {}: the default {d} does not fit column {} of type {:?}",
                declared.name, c.name, c.ty
            )));
        }
    }
    let mut plan = TablePlan {
        from: stored.clone(),
        to: declared.clone(),
        evolution: ev.clone(),
        steps: Vec::new(),
    };
    let sources = plan.column_sources();
    let mut destructive = Vec::new();
    for (i, (c, src)) in declared.columns.iter().zip(&sources).enumerate() {
        match src {
            Some(s) => {
                let old = &stored.columns[*s];
                if old.name != c.name {
                    steps.push(SchemaStep::RenameColumn {
                        from: old.name.clone(),
                        to: c.name.clone(),
                    });
                }
                if old.ty != c.ty || old.nullable != c.nullable {
                    destructive.push(SchemaStep::ChangeColumn {
                        from: old.clone(),
                        to: c.clone(),
                    });
                }
            }
            None => {
                let default = ev.default_of(i).cloned();
                if c.nullable || default.is_some() {
                    steps.push(SchemaStep::AddColumn {
                        column: c.clone(),
                        default,
                    });
                } else {
                    destructive.push(SchemaStep::AddRequiredColumn { column: c.clone() });
                }
            }
        }
    }
    for (s, c) in stored.columns.iter().enumerate() {
        if !sources.contains(&Some(s)) {
            destructive.push(SchemaStep::DropColumn {
                name: c.name.clone(),
            });
        }
    }
    // Keys and versions compare by the stored column each declared one reads.
    let key_from: Vec<Option<usize>> = declared.primary_key.iter().map(|&k| sources[k]).collect();
    if key_from
        != stored
            .primary_key
            .iter()
            .map(|&k| Some(k))
            .collect::<Vec<_>>()
    {
        let names = |t: &TableSchema| -> Vec<String> {
            t.primary_key
                .iter()
                .map(|&k| t.columns[k].name.clone())
                .collect()
        };
        destructive.push(SchemaStep::ChangePrimaryKey {
            from: names(stored),
            to: names(declared),
        });
    }
    if declared.version.and_then(|v| sources[v]) != stored.version
        || declared.version.is_some() != stored.version.is_some()
    {
        let name = |t: &TableSchema| t.version.map(|v| t.columns[v].name.clone());
        destructive.push(SchemaStep::ChangeVersionColumn {
            from: name(stored),
            to: name(declared),
        });
    }
    // Indexes: same name and the same definition over the same stored columns.
    let same_index = |old: &IndexDef, new: &IndexDef| {
        old.unique == new.unique
            && old.columns.len() == new.columns.len()
            && old
                .columns
                .iter()
                .zip(&new.columns)
                .all(|(&o, &n)| sources[n] == Some(o))
            && old.when.as_ref().map(|w| remap_expr(w, &sources, true))
                == new.when.as_ref().map(|w| remap_expr(w, &sources, false))
    };
    let mut adds = Vec::new();
    for old in &stored.indexes {
        match declared.indexes.iter().find(|n| n.name == old.name) {
            Some(new) if same_index(old, new) => {}
            _ => steps.push(SchemaStep::DropIndex {
                name: old.name.clone(),
            }),
        }
    }
    for new in &declared.indexes {
        match stored.indexes.iter().find(|o| o.name == new.name) {
            Some(old) if same_index(old, new) => {}
            _ => adds.push(SchemaStep::AddIndex { index: new.clone() }),
        }
    }
    steps.extend(adds);
    steps.extend(destructive);
    plan.steps = steps;
    Ok(plan)
}

/// A conditional index's predicate with its columns as stored positions (`stored`:
/// already stored; else declared positions mapped through `sources`), so that
/// predicates of a table whose columns moved compare equal.
fn remap_expr(e: &crate::query::Expr, sources: &[Option<usize>], stored: bool) -> String {
    use crate::query::Expr;
    fn walk(e: &Expr, f: &dyn Fn(usize) -> Option<usize>) -> Expr {
        match e {
            Expr::Column(i) => Expr::Column(f(*i).unwrap_or(usize::MAX)),
            Expr::Cmp(op, a, b) => Expr::Cmp(*op, Box::new(walk(a, f)), Box::new(walk(b, f))),
            Expr::Arith(op, a, b) => Expr::Arith(*op, Box::new(walk(a, f)), Box::new(walk(b, f))),
            Expr::And(v) => Expr::And(v.iter().map(|x| walk(x, f)).collect()),
            Expr::Or(v) => Expr::Or(v.iter().map(|x| walk(x, f)).collect()),
            Expr::Not(a) => Expr::Not(Box::new(walk(a, f))),
            Expr::IsNull(a) => Expr::IsNull(Box::new(walk(a, f))),
            Expr::StartsWith(a, b) => Expr::StartsWith(Box::new(walk(a, f)), Box::new(walk(b, f))),
            other => other.clone(),
        }
    }
    let mapped = if stored {
        walk(e, &Some)
    } else {
        walk(e, &|i| sources.get(i).copied().flatten())
    };
    format!("{mapped:?}")
}

/// `v` as a value of type `ty`, for a column whose type changed: integers and floats
/// widen or narrow when the value fits ([`Value::coerce`]); booleans, numbers,
/// UUIDs and decimals become their text for a `String` column; text parses into a number, a boolean
/// (`true`/`false`), a decimal, a UUID (hex, hyphens optional) or JSON. NULL stays
/// NULL.
///
/// # Errors
/// `InvalidInput` naming the value and the type when it does not convert.
pub fn convert(v: Value, ty: ColumnType) -> Result<Value> {
    if v.is_null() || v.column_type() == Some(ty) {
        return Ok(v);
    }
    let bad = |v: &Value| Error::invalid_input(format!("{v} does not convert to {ty:?}"));
    if let Ok(c) = v.clone().coerce(ty) {
        return Ok(c);
    }
    match (&v, ty) {
        (Value::String(s), _) => {
            let s = s.trim();
            let parsed = match ty {
                ColumnType::Bool => s.parse().ok().map(Value::Bool),
                ColumnType::I16 => s.parse().ok().map(Value::I16),
                ColumnType::I32 => s.parse().ok().map(Value::I32),
                ColumnType::I64 => s.parse().ok().map(Value::I64),
                ColumnType::F32 => s.parse().ok().map(Value::F32),
                ColumnType::F64 => s.parse().ok().map(Value::F64),
                ColumnType::Decimal => s.parse().ok().map(Value::Decimal),
                ColumnType::Uuid => crate::value::parse_uuid(s).map(Value::Uuid),
                ColumnType::Json => Value::json_from_text(s).ok(),
                _ => None,
            };
            parsed.ok_or_else(|| bad(&v))
        }
        (
            Value::Bytes(_) | Value::Json(_) | Value::Timestamp(_) | Value::Date(_),
            ColumnType::String,
        ) => Err(bad(&v)),
        (_, ColumnType::String) => Ok(Value::String(v.to_string())),
        (Value::I16(_) | Value::I32(_) | Value::I64(_), ColumnType::Decimal) => v
            .as_i64()
            .map(|i| crate::value::Numeric::new(i.into(), 0).map(Value::Decimal))
            .transpose()?
            .ok_or_else(|| bad(&v)),
        _ => Err(bad(&v)),
    }
}

/// One applied step, as recorded in the schema history
/// ([`crate::schema::internal::SCHEMA_HISTORY`]).
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// The table (its name after the step).
    pub table: String,
    /// The schema version the step produced: 1 is the table's creation, each
    /// applied plan adds 1.
    pub version: i64,
    /// Position of the step within its plan (0 for the creation).
    pub step: i64,
    /// What was done ([`SchemaStep`]'s text, or `create table`).
    pub description: String,
    /// When, in microseconds since the Unix epoch (UTC).
    pub applied_at_micros: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(cols: &[(&str, ColumnType, bool)], indexes: Vec<IndexDef>) -> TableSchema {
        TableSchema {
            name: "items".into(),
            columns: cols
                .iter()
                .map(|(n, t, null)| ColumnDef::new(n, *t, *null))
                .collect(),
            primary_key: vec![0],
            indexes,
            version: None,
        }
    }

    fn ix(name: &str, columns: Vec<usize>, unique: bool) -> IndexDef {
        IndexDef {
            name: name.into(),
            columns,
            unique,
            when: None,
        }
    }

    #[test]
    fn same_schema_no_steps() {
        let t = table(&[("id", ColumnType::I64, false)], vec![]);
        assert!(
            diff(&t, &t, &Evolution::default())
                .unwrap()
                .steps
                .is_empty()
        );
    }

    #[test]
    fn safe_additions_renames_and_index_changes() {
        let v1 = table(
            &[
                ("id", ColumnType::I64, false),
                ("name", ColumnType::String, false),
            ],
            vec![ix("by_name", vec![1], false)],
        );
        // v2: `title` renamed from `name` and moved last, a defaulted `qty` in the
        // middle, a nullable `note`; `by_name` dropped, a unique `by_title` added.
        let v2 = table(
            &[
                ("id", ColumnType::I64, false),
                ("qty", ColumnType::I32, false),
                ("note", ColumnType::String, true),
                ("title", ColumnType::String, false),
            ],
            vec![ix("by_title", vec![3], true)],
        );
        let ev = Evolution {
            renamed_from: None,
            defaults: vec![(1, Value::I32(0))],
            column_renames: vec![(3, "name".into())],
        };
        let plan = diff(&v1, &v2, &ev).unwrap();
        assert!(plan.is_safe(), "{plan}");
        let text = plan.to_string();
        assert!(text.contains("rename column name to title"), "{text}");
        assert!(
            text.contains("add column qty I32 NOT NULL DEFAULT 0"),
            "{text}"
        );
        assert!(text.contains("add column note String NULL"), "{text}");
        assert!(text.contains("drop index by_name"), "{text}");
        assert!(text.contains("add unique index by_title"), "{text}");
        assert!(plan.changes_row_layout());
        let sources = plan.column_sources();
        assert_eq!(sources, vec![Some(0), None, None, Some(1)]);
        assert_eq!(
            plan.transform_row(&sources, &[Value::I64(7), Value::String("a".into())]),
            vec![
                Value::I64(7),
                Value::I32(0),
                Value::Null,
                Value::String("a".into())
            ]
        );
    }

    #[test]
    fn destructive_steps_are_named_and_refused() {
        let v1 = table(
            &[
                ("id", ColumnType::I64, false),
                ("n", ColumnType::I32, false),
            ],
            vec![],
        );
        let v2 = table(
            &[
                ("id", ColumnType::String, false),
                ("must", ColumnType::I32, false),
            ],
            vec![],
        );
        let plan = diff(&v1, &v2, &Evolution::default()).unwrap();
        assert!(!plan.is_safe());
        let kinds: Vec<&SchemaStep> = plan.steps.iter().filter(|s| !s.is_safe()).collect();
        assert!(
            kinds
                .iter()
                .any(|s| matches!(s, SchemaStep::ChangeColumn { .. }))
        );
        assert!(
            kinds
                .iter()
                .any(|s| matches!(s, SchemaStep::DropColumn { name } if name == "n"))
        );
        assert!(
            kinds
                .iter()
                .any(|s| matches!(s, SchemaStep::AddRequiredColumn { .. }))
        );
        // A default of the wrong type is refused outright.
        let ev = Evolution {
            defaults: vec![(1, Value::String("x".into()))],
            ..Evolution::default()
        };
        assert!(diff(&v1, &v2, &ev).is_err());
    }

    #[test]
    fn conversions_of_a_destructive_rebuild() {
        assert_eq!(
            convert(Value::I32(7), ColumnType::String).unwrap(),
            Value::String("7".into())
        );
        assert_eq!(
            convert(Value::String(" 42 ".into()), ColumnType::I64).unwrap(),
            Value::I64(42)
        );
        assert_eq!(
            convert(Value::I64(5), ColumnType::I16).unwrap(),
            Value::I16(5)
        );
        assert!(convert(Value::I64(70_000), ColumnType::I16).is_err());
        assert!(convert(Value::String("x".into()), ColumnType::I32).is_err());
        assert_eq!(convert(Value::Null, ColumnType::Uuid).unwrap(), Value::Null);
        assert_eq!(
            convert(Value::String("1.50".into()), ColumnType::Decimal)
                .unwrap()
                .to_string(),
            "1.5"
        );
        let v1 = table(
            &[
                ("id", ColumnType::I64, false),
                ("n", ColumnType::String, true),
            ],
            vec![],
        );
        let v2 = table(
            &[
                ("id", ColumnType::I64, false),
                ("n", ColumnType::I32, false),
            ],
            vec![],
        );
        let ev = Evolution {
            defaults: vec![(1, Value::I32(-1))],
            ..Evolution::default()
        };
        let plan = diff(&v1, &v2, &ev).unwrap();
        let src = plan.column_sources();
        assert_eq!(
            plan.rebuild_row(&src, &[Value::I64(1), Value::String("3".into())])
                .unwrap(),
            vec![Value::I64(1), Value::I32(3)]
        );
        assert_eq!(
            plan.rebuild_row(&src, &[Value::I64(2), Value::Null])
                .unwrap(),
            vec![Value::I64(2), Value::I32(-1)]
        );
        let err = plan
            .rebuild_row(&src, &[Value::I64(9), Value::String("nine".into())])
            .unwrap_err();
        assert!(
            err.message().contains("row (9)") && err.message().contains("column n"),
            "{err}"
        );
    }

    #[test]
    fn a_changed_index_is_dropped_and_added_and_moved_columns_keep_it() {
        let v1 = table(
            &[
                ("id", ColumnType::I64, false),
                ("a", ColumnType::I32, false),
            ],
            vec![ix("by_a", vec![1], false)],
        );
        let mut v2 = table(
            &[
                ("id", ColumnType::I64, false),
                ("b", ColumnType::I32, true),
                ("a", ColumnType::I32, false),
            ],
            vec![ix("by_a", vec![2], false)],
        );
        let plan = diff(&v1, &v2, &Evolution::default()).unwrap();
        assert_eq!(
            plan.steps,
            vec![SchemaStep::AddColumn {
                column: ColumnDef::new("b", ColumnType::I32, true),
                default: None
            }]
        );
        v2.indexes[0].unique = true;
        let plan = diff(&v1, &v2, &Evolution::default()).unwrap();
        assert!(matches!(plan.steps[1], SchemaStep::DropIndex { .. }));
        assert!(matches!(plan.steps[2], SchemaStep::AddIndex { .. }));
    }
}
