//! Generated identifiers longer than PostgreSQL keeps (NAMEDATALEN-1 = 63 bytes):
//! index names `<table>__<index>` and change-capture trigger/function names
//! `_dl_cdc_<table>` that share their first 63 bytes must still name distinct objects,
//! and a declared index that is missing or has the wrong uniqueness fails the DDL with
//! a typed error instead of being skipped by `CREATE INDEX IF NOT EXISTS`.

mod common;

use common::*;
use datalayer::{Db, ErrorKind, Table, Value};
use std::sync::Arc;

/// A 60-byte table name (valid: at most 63 bytes) with two unique indexes whose
/// `<table>__<index>` names (74 bytes) share their first 63 bytes.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "identifier_limit_table_with_a_rather_long_name_sixty_bytes_a")]
#[index(name = "unique_email", fields(email), unique)]
#[index(name = "unique_phone", fields(phone), unique)]
struct LongA {
    #[pk]
    id: i64,
    email: String,
    phone: String,
}

/// Same first 59 bytes as [`LongA`]: `_dl_cdc_<table>` (68 bytes) collides after
/// truncation to 63 bytes.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "identifier_limit_table_with_a_rather_long_name_sixty_bytes_b")]
struct LongB {
    #[pk]
    id: i64,
    email: String,
}

const A: &str = "identifier_limit_table_with_a_rather_long_name_sixty_bytes_a";
const B: &str = "identifier_limit_table_with_a_rather_long_name_sixty_bytes_b";

fn a(id: i64, email: &str, phone: &str) -> LongA {
    LongA {
        id,
        email: email.into(),
        phone: phone.into(),
    }
}

async fn db_ab(ns: &Ns) -> Db {
    Db::with_engine(Arc::new(ns.engine("").await))
        .table::<LongA>()
        .table::<LongB>()
        .connect()
        .await
        .unwrap()
}

#[test]
fn names_are_as_long_as_the_test_needs() {
    assert_eq!(A.len(), 60);
    assert_eq!(B.len(), 60);
    assert_eq!(&A[..59], &B[..59]);
    datalayer::validate_identifier("table", A).unwrap();
}

#[tokio::test]
async fn unique_indexes_with_long_names_sharing_63_bytes_both_hold() {
    let ns = Ns::new();
    let db = db_ab(&ns).await;
    let repo = db.repo::<LongA>();
    repo.insert(&a(1, "e1", "p1")).await.unwrap();
    let dup_email = repo.insert(&a(2, "e1", "p2")).await;
    let dup_phone = repo.insert(&a(3, "e3", "p1")).await;
    assert_eq!(
        dup_email.map_err(|e| e.kind()),
        Err(ErrorKind::AlreadyExists),
        "duplicate email accepted"
    );
    assert_eq!(
        dup_phone.map_err(|e| e.kind()),
        Err(ErrorKind::AlreadyExists),
        "duplicate phone accepted"
    );
    assert_eq!(repo.count().await.unwrap(), 1);
    // Every generated name on the server is within 63 bytes and the two indexes are
    // distinct objects.
    let raw = ns.raw().await;
    let rows = raw
        .query(
            "SELECT c.relname::text FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
             JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = $1 AND t.relname = $2 AND x.indisunique AND NOT x.indisprimary \
             ORDER BY 1",
            &[&ns.schema, &A],
        )
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_ne!(names[0], names[1]);
    ns.drop_schema().await;
}

#[tokio::test]
async fn cdc_of_long_tables_sharing_a_prefix_is_attributed_to_each() {
    let ns = Ns::new();
    let db = db_ab(&ns).await;
    db.enable_changes(A).await.unwrap();
    db.enable_changes(B).await.unwrap();
    db.repo::<LongA>().insert(&a(1, "ea", "pa")).await.unwrap();
    db.repo::<LongB>()
        .insert(&LongB {
            id: 2,
            email: "eb".into(),
        })
        .await
        .unwrap();
    let ca = db.read_changes(A, 0, 100).await.unwrap();
    let cb = db.read_changes(B, 0, 100).await.unwrap();
    assert_eq!(ca.len(), 1, "changes of {A}: {ca:?}");
    assert_eq!(cb.len(), 1, "changes of {B}: {cb:?}");
    assert_eq!(ca[0].table, A);
    assert_eq!(ca[0].get("email"), Some(&Value::String("ea".into())));
    assert_eq!(ca[0].get("phone"), Some(&Value::String("pa".into())));
    assert_eq!(cb[0].table, B);
    assert_eq!(cb[0].get("id"), Some(&Value::I64(2)));
    assert_eq!(cb[0].get("email"), Some(&Value::String("eb".into())));
    ns.drop_schema().await;
}

/// The actual name of the unique index of `table` on `column`, read from the server.
async fn index_on(raw: &tokio_postgres::Client, schema: &str, table: &str, column: &str) -> String {
    let row = raw
        .query_one(
            "SELECT c.relname::text FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
             JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0] \
             WHERE n.nspname = $1 AND t.relname = $2 AND a.attname = $3 AND NOT x.indisprimary",
            &[&schema, &table, &column],
        )
        .await
        .unwrap();
    row.get(0)
}

/// Replaces the unique index of `LongA` on `column` behind the engine's back by
/// `replacement` (SQL with `{s}` schema and `{name}` index placeholders), then expects
/// connecting a fresh engine to fail with the `Engine` error of the post-DDL check
/// naming the table and `index` (`why` explains the expectation).
async fn replaced_index_fails_the_ddl(column: &str, replacement: &str, index: &str, why: &str) {
    let ns = Ns::new();
    drop(db_ab(&ns).await);
    let raw = ns.raw().await;
    let name = index_on(&raw, &ns.schema, A, column).await;
    let s = &ns.schema;
    let create = replacement.replace("{s}", s).replace("{name}", &name);
    raw.batch_execute(&format!("DROP INDEX \"{s}\".\"{name}\"; {create}"))
        .await
        .unwrap();
    let err = Db::with_engine(Arc::new(ns.engine("").await))
        .table::<LongA>()
        .connect()
        .await
        .expect_err(why);
    assert_eq!(err.kind(), ErrorKind::Engine, "{err}");
    assert!(
        err.message().contains(A) && err.message().contains(index),
        "{err}"
    );
    ns.drop_schema().await;
}

/// An index replaced behind the engine's back by a non-unique one of the same name:
/// `CREATE UNIQUE INDEX IF NOT EXISTS` skips it, and the check after the DDL reports
/// it when the table is next ensured (a fresh engine).
#[tokio::test]
async fn index_replaced_by_a_non_unique_one_fails_the_ddl() {
    let sql = format!("CREATE INDEX \"{{name}}\" ON \"{{s}}\".\"{A}\" (phone)");
    let why = "a non-unique index where a unique one is declared";
    replaced_index_fails_the_ddl("phone", &sql, "unique_phone", why).await;
}

/// The derived name is taken by an index of another table (index names are per schema
/// in PostgreSQL): `IF NOT EXISTS` skips the declared one, the check reports it missing.
#[tokio::test]
async fn index_name_taken_by_another_table_fails_the_ddl() {
    let sql = format!("CREATE UNIQUE INDEX \"{{name}}\" ON \"{{s}}\".\"{B}\" (email)");
    replaced_index_fails_the_ddl(
        "email",
        &sql,
        "unique_email",
        "the declared index is missing",
    )
    .await;
}

/// A database captured by an older version: its trigger on a long-named table has the
/// server-truncated name `_dl_cdc_<table>`[..63] and calls a function shared with
/// another table (here logging under the other table's name). Enabling again replaces
/// it: every change is logged once, under its own table.
#[tokio::test]
async fn enabling_again_replaces_a_trigger_with_a_truncated_name() {
    let ns = Ns::new();
    let db = db_ab(&ns).await;
    db.enable_changes(B).await.unwrap();
    let s = &ns.schema;
    let legacy = format!("_dl_cdc_{A}"); // 68 bytes: the server keeps 63
    ns.raw()
        .await
        .batch_execute(&format!(
            "CREATE FUNCTION \"{s}\".\"{legacy}\"() RETURNS trigger LANGUAGE plpgsql AS $f$
             BEGIN
               INSERT INTO \"{s}\"._dl_cdc_log (tbl, op, row)
                 VALUES ('{B}', lower(TG_OP), json_build_array(NEW.id, NEW.email));
               RETURN NULL;
             END $f$;
             CREATE TRIGGER \"{legacy}\" AFTER INSERT OR UPDATE OR DELETE ON \"{s}\".\"{A}\"
               FOR EACH ROW EXECUTE FUNCTION \"{s}\".\"{legacy}\"();"
        ))
        .await
        .unwrap();
    db.enable_changes(A).await.unwrap();
    db.repo::<LongA>().insert(&a(1, "ea", "pa")).await.unwrap();
    let ca = db.read_changes(A, 0, 100).await.unwrap();
    let cb = db.read_changes(B, 0, 100).await.unwrap();
    assert_eq!(ca.len(), 1, "{ca:?}");
    assert_eq!(ca[0].get("phone"), Some(&Value::String("pa".into())));
    assert!(cb.is_empty(), "{cb:?}");
    ns.drop_schema().await;
}
