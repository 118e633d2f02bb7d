//! DDL from a [`TableSchema`]: the table and its (unique, composite, partial) indexes.

use super::Dialect;
use super::render::render_expr_inline;
use datalayer_core::error::Result;
use datalayer_core::schema::{IndexDef, TableSchema};

/// The database name of a secondary index: `<table>__<index>` (index names are
/// per-schema in SQL databases, per-table in datalayer).
pub fn index_name(t: &TableSchema, ix: &IndexDef) -> String {
    format!("{}__{}", t.name, ix.name)
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
/// # Errors
/// `InvalidInput` when the schema fails [`TableSchema::validate`] or a predicate has
/// no safe SQL form.
pub fn render_ddl(t: &TableSchema, d: &dyn Dialect) -> Result<Vec<String>> {
    t.validate()?;
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
        let cols: Vec<String> = ix
            .columns
            .iter()
            .map(|&c| d.quote_ident(&t.columns[c].name))
            .collect();
        let mut s = format!(
            "CREATE {}INDEX IF NOT EXISTS {} ON {table} ({})",
            if ix.unique { "UNIQUE " } else { "" },
            d.quote_ident(&index_name(t, ix)),
            cols.join(", ")
        );
        if let Some(w) = &ix.when {
            s.push_str(" WHERE ");
            s.push_str(&render_expr_inline(t, w, d)?);
        }
        out.push(s);
    }
    Ok(out)
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
}
