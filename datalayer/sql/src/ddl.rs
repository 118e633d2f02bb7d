//! DDL from a [`TableSchema`]: the table and its (unique, composite, partial) indexes.

use super::Dialect;
use super::render::render_expr_inline;
use datalayer_core::error::{Error, Result};
use datalayer_core::schema::{IndexDef, TableSchema};

/// The database name of a secondary index: `<table>__<index>` (index names are
/// per-schema in SQL databases, per-table in datalayer), within the dialect's
/// identifier limit ([`Dialect::generated_ident`]): unchanged when it fits (up to
/// 63 bytes in PostgreSQL, always in SQLite), else a prefix of it, `_` and 16 hex
/// digits of its hash, 63 bytes in all in PostgreSQL.
pub fn index_name(t: &TableSchema, ix: &IndexDef, d: &dyn Dialect) -> String {
    d.generated_ident(&format!("{}__{}", t.name, ix.name))
}

/// Checks the indexes a table has in the database against the ones its schema
/// declares: `listed` is what [`Dialect::index_list_sql`] returned for the table,
/// `(name, unique)` per index (other indexes, such as the primary key's, are ignored).
///
/// Run after the table's DDL: `CREATE INDEX IF NOT EXISTS` silently keeps whatever
/// index already has the name, so a name taken by another table's index, or an index
/// of the same name made by hand with a different uniqueness, would otherwise leave a
/// declared unique constraint unenforced.
///
/// # Errors
/// `Engine` (code `index_mismatch`) naming the table, the declared index and its
/// database name when an index is missing from the table or its uniqueness differs
/// from the declaration.
pub fn verify_indexes(t: &TableSchema, d: &dyn Dialect, listed: &[(String, bool)]) -> Result<()> {
    for ix in &t.indexes {
        let name = index_name(t, ix, d);
        let problem = match listed.iter().find(|(n, _)| *n == name) {
            None => "is missing (is its name taken by an index of another table?)",
            Some((_, unique)) if *unique == ix.unique => continue,
            Some((_, true)) => "is unique in the database but declared non-unique",
            Some((_, false)) => "is not unique in the database but declared unique",
        };
        return Err(Error::engine(
            "index_mismatch",
            format!(
                "{}: index {} of table {} (database name {name}) {problem}; drop or rename \
                 the conflicting index and open again",
                d.name(),
                ix.name,
                t.name
            ),
        ));
    }
    Ok(())
}

/// The statements that create `t` and its indexes if they do not exist, in order:
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS "t" ("id" INTEGER NOT NULL, "age" INTEGER CHECK (..), ...,
///     PRIMARY KEY ("id")) STRICT
/// CREATE UNIQUE INDEX IF NOT EXISTS "t__by_email" ON "t" ("email") WHERE ("active" = 1)
/// ```
///
/// Columns get the dialect's type, `NOT NULL` unless nullable, and the dialect's range
/// check; a partial index's predicate is rendered with literals inline (it comes from
/// the schema, never from users, and literals are escaped by [`Dialect::literal`]).
///
/// Index names are [`index_name`]s (within the dialect's identifier limit).
///
/// # Errors
/// `InvalidInput` when the schema fails [`TableSchema::validate`], a predicate has
/// no safe SQL form, or two of the table's indexes get the same database name.
pub fn render_ddl(t: &TableSchema, d: &dyn Dialect) -> Result<Vec<String>> {
    t.validate()?;
    for (i, a) in t.indexes.iter().enumerate() {
        let name = index_name(t, a, d);
        if let Some(b) = t.indexes[..i].iter().find(|b| index_name(t, b, d) == name) {
            return Err(Error::invalid_input(format!(
                "indexes {} and {} of table {} both get the database name {name}",
                b.name, a.name, t.name
            )));
        }
    }
    let table = d.quote_ident(&t.name);
    let mut defs = Vec::with_capacity(t.columns.len() + 1);
    for c in &t.columns {
        let name = d.quote_ident(&c.name);
        let mut def = format!("{name} {}", d.column_type(c.ty));
        if !c.nullable {
            def.push_str(" NOT NULL");
        }
        if let Some(check) = d.column_check(&name, c.ty) {
            def.push_str(&format!(" CHECK ({check})"));
        }
        defs.push(def);
    }
    let key: Vec<String> = t
        .primary_key
        .iter()
        .map(|&c| d.quote_ident(&t.columns[c].name))
        .collect();
    defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
    let mut out = vec![format!(
        "CREATE TABLE IF NOT EXISTS {table} ({}){}",
        defs.join(", "),
        d.table_options()
    )];
    for ix in &t.indexes {
        out.push(render_index(t, ix, d, false)?);
    }
    Ok(out)
}

/// `CREATE [UNIQUE] INDEX [<online>] IF NOT EXISTS "<t>__<ix>" ON "t" (..) [WHERE ..]`
/// for index `ix` of `t`; with `online`, the dialect's non-blocking form
/// ([`Dialect::online_index`]: PostgreSQL `CONCURRENTLY`), which must run outside a
/// transaction.
///
/// # Errors
/// `InvalidInput` when the predicate has no safe SQL form.
pub fn render_index(
    t: &TableSchema,
    ix: &IndexDef,
    d: &dyn Dialect,
    online: bool,
) -> Result<String> {
    let cols: Vec<String> = ix
        .columns
        .iter()
        .map(|&c| d.index_column(&d.quote_ident(&t.columns[c].name), t.columns[c].nullable))
        .collect();
    let mut s = format!(
        "CREATE {}INDEX {}IF NOT EXISTS {} ON {} ({})",
        if ix.unique { "UNIQUE " } else { "" },
        if online { d.online_index() } else { "" },
        d.quote_ident(&index_name(t, ix, d)),
        d.quote_ident(&t.name),
        cols.join(", ")
    );
    if let Some(w) = &ix.when {
        s.push_str(" WHERE ");
        s.push_str(&render_expr_inline(t, w, d)?);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dialect::Pg;
    use datalayer_core::query::{CmpOp, Expr};
    use datalayer_core::schema::ColumnDef;
    use datalayer_core::value::{ColumnType, Value};

    #[test]
    fn table_and_partial_index() {
        let col = |n: &str, ty, nullable| ColumnDef {
            name: n.into(),
            field: n.into(),
            ty,
            nullable,
        };
        let t = TableSchema {
            version: None,
            name: "flights".into(),
            columns: vec![
                col("carrier", ColumnType::String, false),
                col("flight", ColumnType::I32, false),
                col("tail", ColumnType::String, true),
            ],
            primary_key: vec![0, 1],
            indexes: vec![IndexDef {
                name: "by_tail".into(),
                columns: vec![2, 1],
                unique: true,
                when: Some(Expr::Not(Box::new(Expr::IsNull(Box::new(Expr::Column(2)))))),
            }],
        };
        let ddl = render_ddl(&t, &Pg).unwrap();
        assert_eq!(
            ddl[0],
            "CREATE TABLE IF NOT EXISTS \"flights\" (\"carrier\" TEXT NOT NULL, \"flight\" INTEGER NOT NULL, \"tail\" TEXT, PRIMARY KEY (\"carrier\", \"flight\"))"
        );
        assert_eq!(
            ddl[1],
            "CREATE UNIQUE INDEX IF NOT EXISTS \"flights__by_tail\" ON \"flights\" (\"tail\", \"flight\") WHERE (NOT (\"tail\" IS NULL))"
        );
        let mut bad = t.clone();
        bad.indexes[0].when = Some(Expr::cmp(
            CmpOp::Eq,
            Expr::Column(2),
            Expr::Literal(Value::String("a\0".into())),
        ));
        assert!(render_ddl(&bad, &Pg).is_err());
    }

    fn long_table() -> TableSchema {
        let col = |n: &str| ColumnDef {
            name: n.into(),
            field: n.into(),
            ty: ColumnType::String,
            nullable: false,
        };
        let ix = |n: &str, c: usize, unique: bool| IndexDef {
            name: n.into(),
            columns: vec![c],
            unique,
            when: None,
        };
        TableSchema {
            version: None,
            name: "identifier_limit_table_with_a_rather_long_name_sixty_bytes_a".into(),
            columns: vec![col("id"), col("email"), col("phone")],
            primary_key: vec![0],
            indexes: vec![
                ix("unique_email", 1, true),
                ix("unique_phone", 2, true),
                ix("by_phone", 2, false),
            ],
        }
    }

    #[test]
    fn long_index_names_fit_and_differ() {
        let t = long_table();
        let names: Vec<String> = t.indexes.iter().map(|ix| index_name(&t, ix, &Pg)).collect();
        assert!(names.iter().all(|n| n.len() <= 63), "{names:?}");
        assert_ne!(names[0], names[1]);
        assert_eq!(
            names[0],
            "identifier_limit_table_with_a_rather_long_name_d290ea558cea70fb"
        );
        let ddl = render_ddl(&t, &Pg).unwrap();
        assert!(ddl[1].contains(&format!("\"{}\"", names[0])), "{}", ddl[1]);
        assert!(ddl[2].contains(&format!("\"{}\"", names[1])), "{}", ddl[2]);
    }

    #[test]
    fn verify_indexes_reports_missing_and_wrong_uniqueness() {
        let t = long_table();
        let n = |i: usize| index_name(&t, &t.indexes[i], &Pg);
        let all = vec![
            ("t_pkey".to_owned(), true),
            (n(0), true),
            (n(1), true),
            (n(2), false),
        ];
        verify_indexes(&t, &Pg, &all).unwrap();
        let mut missing = all.clone();
        missing.remove(2);
        let e = verify_indexes(&t, &Pg, &missing).unwrap_err();
        assert_eq!(e.kind(), datalayer_core::ErrorKind::Engine);
        assert_eq!(e.code(), Some("index_mismatch"));
        assert!(e.message().contains("unique_phone"), "{e}");
        assert!(e.message().contains(&t.name), "{e}");
        assert!(e.message().contains("missing"), "{e}");
        let mut not_unique = all.clone();
        not_unique[1].1 = false;
        let e = verify_indexes(&t, &Pg, &not_unique).unwrap_err();
        assert!(e.message().contains("unique_email"), "{e}");
        assert!(e.message().contains("declared unique"), "{e}");
        let mut unique = all;
        unique[3].1 = true;
        let e = verify_indexes(&t, &Pg, &unique).unwrap_err();
        assert!(e.message().contains("by_phone"), "{e}");
    }
}
