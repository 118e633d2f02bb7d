//! Schema evolution on SQL databases ([`Engine::alter_table`]): native `ALTER TABLE`,
//! `DROP INDEX` and online `CREATE INDEX`.

use crate::engine::{SqlBackend, SqlEngine};
use crate::registry::{StmtDef, StmtKey};
use crate::work::Fetched;
use crate::{Dialect, index_name, render_expr_inline, render_index};
use datalayer_core::schema::IndexDef;
use datalayer_core::{
    ColumnType, Error, ErrorKind, Result, SchemaStep, TablePlan, TableSchema, TxOptions,
};
use std::sync::Arc;

/// See [`Engine::alter_table`](datalayer_core::Engine::alter_table) on [`SqlEngine`].
pub(crate) async fn alter<B: SqlBackend>(e: &SqlEngine<B>, plan: &TablePlan) -> Result<()> {
    let d = B::dialect();
    if let Some(s) = plan.steps.iter().find(|s| !s.is_safe()) {
        return Err(Error::unsupported(B::NAME, format!("schema step: {s}")));
    }
    let (from, to) = (&plan.from, &plan.to);
    let renamed = from.name != to.name;
    let capture = e.backend().changes_enabled(&from.name).await?;
    if renamed && capture {
        return Err(Error::unsupported(
            B::NAME,
            format!(
                "renaming table {} while its change capture is on",
                from.name
            ),
        ));
    }
    // Indexes dropped (by their database names under the old table name) and built.
    let mut drops: Vec<String> = Vec::new();
    let mut builds: Vec<&IndexDef> = Vec::new();
    for s in &plan.steps {
        match s {
            SchemaStep::DropIndex { name } => {
                if let Some(ix) = from.indexes.iter().find(|i| &i.name == name) {
                    drops.push(index_name(from, ix, d));
                }
            }
            SchemaStep::AddIndex { index } => builds.push(index),
            _ => {}
        }
    }
    if renamed {
        // Index names carry the table's: rebuild the kept ones under the new name.
        for ix in &to.indexes {
            if !builds.iter().any(|b| b.name == ix.name)
                && let Some(old) = from.indexes.iter().find(|o| o.name == ix.name)
            {
                drops.push(index_name(from, old, d));
                builds.push(ix);
            }
        }
    }
    let mut mid = to.clone();
    mid.indexes
        .retain(|ix| !builds.iter().any(|b| b.name == ix.name));
    let q = |n: &str| d.quote_ident(n);
    let mut ddl = Vec::new();
    for name in &drops {
        ddl.push(format!("DROP INDEX IF EXISTS {}", q(name)));
    }
    if renamed {
        ddl.push(format!(
            "ALTER TABLE {} RENAME TO {}",
            q(&from.name),
            q(&to.name)
        ));
    }
    let mut columns_changed = false;
    for s in &plan.steps {
        match s {
            SchemaStep::RenameColumn { from: a, to: b } => {
                columns_changed = true;
                ddl.push(format!(
                    "ALTER TABLE {} RENAME COLUMN {} TO {}",
                    q(&to.name),
                    q(a),
                    q(b)
                ));
            }
            SchemaStep::AddColumn { column, default } => {
                columns_changed = true;
                let name = q(&column.name);
                let mut def = format!("{name} {}", d.column_type(column.ty));
                if let Some(v) = default {
                    def.push_str(&format!(" DEFAULT {}", d.literal(v)?));
                }
                if !column.nullable {
                    def.push_str(" NOT NULL");
                }
                if let Some(check) = d.column_check(&name, column.ty) {
                    def.push_str(&format!(" CHECK ({check})"));
                }
                ddl.push(format!("ALTER TABLE {} ADD COLUMN {def}", q(&to.name)));
            }
            _ => {}
        }
    }
    let mut c = e.backend().begin_ddl().await?;
    let r = async {
        for s in ddl {
            c.batch_execute(s).await?;
        }
        e.put_catalog(c.as_mut(), &from.name, &mid).await
    }
    .await;
    match r {
        Ok(()) => c.commit().await?,
        Err(err) => {
            let _ = c.rollback().await;
            return Err(err);
        }
    }
    e.forget(&from.name);
    e.forget(&to.name);
    if capture && columns_changed {
        e.backend().enable_changes(&to.name).await?;
    }
    for ix in builds {
        let sql = render_index(to, ix, d, true)?;
        if let Err(err) = e.backend().execute_online(sql).await {
            // A failed concurrent build leaves an invalid index behind (PostgreSQL).
            let drop = format!(
                "DROP INDEX {}IF EXISTS {}",
                d.online_index(),
                q(&index_name(to, ix, d))
            );
            let _ = e.backend().execute_online(drop).await;
            if err.kind() == ErrorKind::AlreadyExists && ix.unique {
                let dups = duplicates(e, to, ix).await.unwrap_or_default();
                return Err(Error::already_exists(format!(
                    "table {}: stored rows violate the new unique index {} (duplicated values and their rows' primary keys: {}); the steps before it are applied",
                    to.name,
                    ix.name,
                    dups.join("; ")
                )));
            }
            return Err(err);
        }
        mid.indexes = to
            .indexes
            .iter()
            .filter(|i| mid.indexes.iter().any(|m| m.name == i.name) || i.name == ix.name)
            .cloned()
            .collect();
        let mut c = e.backend().begin_ddl().await?;
        match e.put_catalog(c.as_mut(), &to.name, &mid).await {
            Ok(()) => c.commit().await?,
            Err(err) => {
                let _ = c.rollback().await;
                return Err(err);
            }
        }
    }
    e.forget(&to.name);
    Ok(())
}

/// Up to five values of `ix`'s columns that more than one row of `t` holds (rows in
/// the index's predicate, no NULLs), each with the primary keys of its rows, as text:
/// `("a@x") in rows (1), (7)`.
async fn duplicates<B: SqlBackend>(
    e: &SqlEngine<B>,
    t: &TableSchema,
    ix: &IndexDef,
) -> Result<Vec<String>> {
    let d: &dyn Dialect = B::dialect();
    let quoted = |cs: &[usize]| -> Vec<String> {
        cs.iter()
            .map(|&c| d.quote_ident(&t.columns[c].name))
            .collect()
    };
    let (cols, pk) = (
        quoted(&ix.columns).join(", "),
        quoted(&t.primary_key).join(", "),
    );
    let mut conds: Vec<String> = quoted(&ix.columns)
        .iter()
        .map(|c| format!("{c} IS NOT NULL"))
        .collect();
    if let Some(w) = &ix.when {
        conds.push(render_expr_inline(t, w, d)?);
    }
    let (table, conds) = (d.quote_ident(&t.name), conds.join(" AND "));
    let sql = format!(
        "SELECT {cols}, {pk} FROM {table} WHERE {conds} AND ({cols}) IN \
         (SELECT {cols} FROM {table} WHERE {conds} GROUP BY {cols} HAVING count(*) > 1) \
         ORDER BY {cols}, {pk} LIMIT 50"
    );
    let types: Arc<[ColumnType]> = ix
        .columns
        .iter()
        .chain(&t.primary_key)
        .map(|&c| t.columns[c].ty)
        .collect();
    // A statement key of its own: statement caches are keyed by it. Leaked once per
    // failed index build.
    let key: &'static str =
        Box::leak(format!("duplicates {} {}", t.name, ix.name).into_boxed_str());
    let def = StmtDef {
        key: StmtKey::Fixed(key),
        sql: Arc::from(sql),
        params: Arc::from([].as_slice()),
    };
    let mut c = e
        .backend()
        .begin(TxOptions {
            isolation: None,
            read_only: true,
        })
        .await?;
    let rows = c.call(def, Vec::new(), Some(types)).await;
    let _ = c.rollback().await;
    let Fetched::Rows(rows) = rows? else {
        return Ok(Vec::new());
    };
    let text = |vs: &[datalayer_core::Value]| {
        vs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let n = ix.columns.len();
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for r in &rows {
        let (vals, key) = (text(&r[..n]), text(&r[n..]));
        if let Some((v, keys)) = groups.last_mut()
            && *v == vals
        {
            keys.push(format!("({key})"));
        } else if groups.len() == 5 {
            break;
        } else {
            groups.push((vals, vec![format!("({key})")]));
        }
    }
    Ok(groups
        .into_iter()
        .map(|(v, keys)| format!("({v}) in rows {}", keys.join(", ")))
        .collect())
}
