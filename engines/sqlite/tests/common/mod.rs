//! Hand-written tables and helpers shared by the integration tests.
#![allow(dead_code)]

use datalayer_core::{
    CmpOp, ColumnDef, ColumnType, ColumnValue, Db, Expr, IndexDef, QueryDef, Result, Row, Table,
    TableSchema, Value,
};
use datalayer_sqlite::{SqliteEngine, SqliteOptions};
use std::path::Path;
use std::sync::{Arc, OnceLock};

fn col(name: &str, ty: ColumnType, nullable: bool) -> ColumnDef {
    ColumnDef {
        name: name.into(),
        field: name.into(),
        ty,
        nullable,
    }
}

/// `users`: single i64 key, a unique index, a nullable index, a partial index.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub age: Option<i32>,
    pub active: bool,
    pub score: f64,
    pub avatar: Option<Vec<u8>>,
}

impl User {
    pub fn new(id: i64, name: &str, age: Option<i32>) -> User {
        User {
            id,
            email: format!("{name}{id}@example.com"),
            name: name.into(),
            age,
            active: id % 2 == 0,
            score: id as f64 / 4.0,
            avatar: None,
        }
    }
}

pub const U_ID: usize = 0;
pub const U_EMAIL: usize = 1;
pub const U_NAME: usize = 2;
pub const U_AGE: usize = 3;
pub const U_ACTIVE: usize = 4;

impl Table for User {
    fn schema() -> &'static TableSchema {
        static S: OnceLock<TableSchema> = OnceLock::new();
        S.get_or_init(|| TableSchema {
            version: None,
            name: "users".into(),
            columns: vec![
                col("id", ColumnType::I64, false),
                col("email", ColumnType::String, false),
                col("name", ColumnType::String, false),
                col("age", ColumnType::I32, true),
                col("active", ColumnType::Bool, false),
                col("score", ColumnType::F64, false),
                col("avatar", ColumnType::Bytes, true),
            ],
            primary_key: vec![U_ID],
            indexes: vec![
                IndexDef {
                    name: "by_email".into(),
                    columns: vec![U_EMAIL],
                    unique: true,
                    when: None,
                },
                IndexDef {
                    name: "by_age".into(),
                    columns: vec![U_AGE],
                    unique: false,
                    when: None,
                },
                IndexDef {
                    name: "active_by_name".into(),
                    columns: vec![U_NAME],
                    unique: false,
                    when: Some(Expr::cmp(
                        CmpOp::Eq,
                        Expr::Column(U_ACTIVE),
                        Expr::Literal(Value::Bool(true)),
                    )),
                },
            ],
        })
    }
    fn to_row(&self) -> Row {
        vec![
            self.id.to_value(),
            self.email.to_value(),
            self.name.to_value(),
            self.age.to_value(),
            self.active.to_value(),
            self.score.to_value(),
            self.avatar.to_value(),
        ]
    }
    fn from_row(row: Row) -> Result<Self> {
        let mut it = row.into_iter();
        let mut next = || it.next().unwrap_or(Value::Null);
        Ok(User {
            id: ColumnValue::from_value(next())?,
            email: ColumnValue::from_value(next())?,
            name: ColumnValue::from_value(next())?,
            age: ColumnValue::from_value(next())?,
            active: ColumnValue::from_value(next())?,
            score: ColumnValue::from_value(next())?,
            avatar: ColumnValue::from_value(next())?,
        })
    }
}

/// `flights`: composite key (carrier, flight), nullable composite index.
#[derive(Clone, Debug, PartialEq)]
pub struct Flight {
    pub carrier: String,
    pub flight: i32,
    pub day: i16,
    pub origin: Option<String>,
    pub dep: Option<i32>,
}

impl Flight {
    pub fn new(carrier: &str, flight: i32, origin: Option<&str>, dep: Option<i32>) -> Flight {
        Flight {
            carrier: carrier.into(),
            flight,
            day: (flight % 28) as i16 + 1,
            origin: origin.map(Into::into),
            dep,
        }
    }
}

impl Table for Flight {
    fn schema() -> &'static TableSchema {
        static S: OnceLock<TableSchema> = OnceLock::new();
        S.get_or_init(|| TableSchema {
            version: None,
            name: "flights".into(),
            columns: vec![
                col("carrier", ColumnType::String, false),
                col("flight", ColumnType::I32, false),
                col("day", ColumnType::I16, false),
                col("origin", ColumnType::String, true),
                col("dep", ColumnType::I32, true),
            ],
            primary_key: vec![0, 1],
            indexes: vec![IndexDef {
                name: "by_origin_dep".into(),
                columns: vec![3, 4],
                unique: false,
                when: None,
            }],
        })
    }
    fn to_row(&self) -> Row {
        vec![
            self.carrier.to_value(),
            self.flight.to_value(),
            self.day.to_value(),
            self.origin.to_value(),
            self.dep.to_value(),
        ]
    }
    fn from_row(row: Row) -> Result<Self> {
        let mut it = row.into_iter();
        let mut next = || it.next().unwrap_or(Value::Null);
        Ok(Flight {
            carrier: ColumnValue::from_value(next())?,
            flight: ColumnValue::from_value(next())?,
            day: ColumnValue::from_value(next())?,
            origin: ColumnValue::from_value(next())?,
            dep: ColumnValue::from_value(next())?,
        })
    }
}

/// Leaks a query so it can be used where `&'static QueryDef` is needed.
pub fn leak(q: QueryDef) -> &'static QueryDef {
    Box::leak(Box::new(q))
}

pub async fn open(opts: SqliteOptions) -> Db {
    let engine = SqliteEngine::open_with(opts).await.expect("open");
    Db::with_engine(Arc::new(engine))
        .table::<User>()
        .table::<Flight>()
        .connect()
        .await
        .expect("connect")
}

pub async fn memory() -> Db {
    open(SqliteOptions::memory()).await
}

pub async fn file(dir: &Path) -> Db {
    open(SqliteOptions::file(dir.join("test.db")).readers(2)).await
}

/// A plain rusqlite connection to the same file (what another process would use).
pub fn raw(dir: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(dir.join("test.db")).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    c
}

/// Some users: ages with NULLs and duplicates.
pub fn users() -> Vec<User> {
    let ages = [
        Some(30),
        None,
        Some(25),
        Some(30),
        None,
        Some(41),
        Some(25),
        Some(30),
        None,
        Some(18),
    ];
    let names = [
        "ann", "bob", "cid", "dee", "eve", "fay", "gus", "hal", "ivy", "jo",
    ];
    (0..10)
        .map(|i| User::new(i as i64 + 1, names[i], ages[i]))
        .collect()
}
