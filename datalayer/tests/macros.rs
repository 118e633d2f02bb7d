//! `#[derive(Table)]` and `#[query_group]`: what they generate, checked value by value,
//! and the generated query methods run on a small in-memory executor.

use std::cmp::Ordering;
use std::pin::Pin;
use std::sync::Mutex;

use datalayer::{
    ArithOp, BelongsTo, CmpOp, ColumnDef, ColumnType, Executor, Expr, IdList, IndexDef, Limit, Op,
    OrderBy, Output, ParamDef, QueryDef, QueryGroup, QueryKind, Returns, Row, Table, Value, eval,
    query_group,
};

#[derive(datalayer::Table, Clone, Debug, PartialEq)]
#[table(name = "teams")]
struct Team {
    #[pk]
    id: i64,
    title: String,
}

#[derive(datalayer::Table, Clone, Debug, PartialEq)]
struct Song {
    #[pk]
    id: i64,
    title: String,
}

#[derive(datalayer::Table, Clone, Debug, PartialEq)]
#[table(name = "users")]
#[index(name = "by_email", fields(email), unique)]
#[index(name = "by_age_name", fields(age, name))]
#[index(name = "active_by_age", fields(age), when = |u| u.active == true && u.age >= 18)]
struct User {
    #[pk]
    id: i64,
    #[column(name = "user_name")]
    name: String,
    email: Option<String>,
    age: i32,
    active: bool,
    #[belongs_to(Team)]
    team_id: Option<i64>,
    song_ids: Vec<i64>,
    #[relation(ids = song_ids)]
    songs: Vec<Song>,
}

/// Composite key, default table name, struct-level composite belongs_to.
#[derive(datalayer::Table, Clone, Debug, PartialEq)]
#[belongs_to(Flight, fields(carrier, number))]
#[index(name = "late", fields(delay), when = |s| !(s.delay < -5) || s.note.is_none())]
struct FlightSeat {
    #[pk]
    carrier: String,
    #[pk]
    number: i32,
    #[pk]
    seat: i16,
    delay: i16,
    note: Option<String>,
}

#[derive(datalayer::Table, Clone, Debug, PartialEq)]
struct Flight {
    #[pk]
    carrier: String,
    #[pk]
    number: i32,
}

fn user() -> User {
    User {
        id: 7,
        name: "ada".into(),
        email: Some("ada@example.com".into()),
        age: 36,
        active: true,
        team_id: Some(3),
        song_ids: vec![10, 11],
        songs: vec![],
    }
}

fn col(i: usize) -> Expr {
    Expr::Column(i)
}
fn lit(v: Value) -> Expr {
    Expr::Literal(v)
}
fn cmp(op: CmpOp, a: Expr, b: Expr) -> Expr {
    Expr::cmp(op, a, b)
}
fn param(name: &str, ty: ColumnType, nullable: bool) -> ParamDef {
    ParamDef {
        name: name.into(),
        ty,
        nullable,
    }
}
fn column(name: &str, field: &str, ty: ColumnType, nullable: bool) -> ColumnDef {
    ColumnDef {
        name: name.into(),
        field: field.into(),
        ty,
        nullable,
    }
}

// ---------------------------------------------------------------- derive(Table)

#[test]
fn schema_columns_and_key() {
    let s = User::schema();
    assert_eq!(s.name, "users");
    assert_eq!(
        s.columns,
        vec![
            column("id", "id", ColumnType::I64, false),
            column("user_name", "name", ColumnType::String, false),
            column("email", "email", ColumnType::String, true),
            column("age", "age", ColumnType::I32, false),
            column("active", "active", ColumnType::Bool, false),
            column("team_id", "team_id", ColumnType::I64, true),
            column("song_ids", "song_ids", ColumnType::Bytes, false),
        ]
    );
    assert_eq!(s.primary_key, vec![0]);
    s.validate().unwrap();
    assert!(std::ptr::eq(s, User::schema()), "the schema is built once");
}

/// A table under optimistic locking.
#[derive(Table, Clone, Debug, PartialEq)]
struct Versioned {
    #[pk]
    id: i64,
    body: String,
    #[version]
    version: i64,
}

#[test]
fn version_column_is_declared_and_validated() {
    let s = Versioned::schema();
    assert_eq!(s.version, Some(2));
    assert_eq!(User::schema().version, None);
    s.validate().unwrap();
    for bad in [0, 1, 3] {
        // The key, a String, out of range.
        let mut t = s.clone();
        t.version = Some(bad);
        assert!(t.validate().unwrap_err().is_invalid_input(), "{bad}");
    }
    let mut t = s.clone();
    t.columns[2].nullable = true;
    assert!(t.validate().unwrap_err().is_invalid_input());
    let row = vec![Value::I64(1), Value::String("b".into()), Value::I64(7)];
    assert_eq!(s.version_of(&row), Some(7));
}

#[test]
fn catalog_entries_before_the_version_column_still_read() {
    let s = User::schema();
    let now = s.catalog_bytes().unwrap();
    assert_eq!(now.last(), Some(&0), "version None is the trailing byte");
    let before = &now[..now.len() - 1];
    assert_eq!(
        &datalayer::TableSchema::from_catalog_bytes(before).unwrap(),
        s
    );
    s.check_stored(before).unwrap();
    // A versioned schema is another schema: its entry does not pass for the old one.
    let v = Versioned::schema();
    let mut unversioned = v.clone();
    unversioned.version = None;
    let bytes = v.catalog_bytes().unwrap();
    assert!(unversioned.check_stored(&bytes).is_err());
    assert!(datalayer::TableSchema::from_catalog_bytes(&[now.as_slice(), &[7]].concat()).is_err());
}

#[test]
fn schema_indexes_including_conditional() {
    let s = User::schema();
    assert_eq!(
        s.indexes,
        vec![
            IndexDef {
                name: "by_email".into(),
                columns: vec![2],
                unique: true,
                when: None
            },
            IndexDef {
                name: "by_age_name".into(),
                columns: vec![3, 1],
                unique: false,
                when: None
            },
            IndexDef {
                name: "active_by_age".into(),
                columns: vec![3],
                unique: false,
                // Literals take the column's type: `18` next to an i32 column is I32(18).
                when: Some(Expr::And(vec![
                    cmp(CmpOp::Eq, col(4), lit(Value::Bool(true))),
                    cmp(CmpOp::Ge, col(3), lit(Value::I32(18))),
                ])),
            },
        ]
    );
}

#[test]
fn composite_key_default_name_and_when_with_not_and_is_none() {
    let s = FlightSeat::schema();
    assert_eq!(s.name, "flight_seat");
    assert_eq!(s.primary_key, vec![0, 1, 2]);
    assert_eq!(
        s.indexes[0].when,
        Some(Expr::Or(vec![
            Expr::Not(Box::new(cmp(CmpOp::Lt, col(3), lit(Value::I16(-5))))),
            Expr::IsNull(Box::new(col(4))),
        ]))
    );
    let seat = FlightSeat {
        carrier: "UA".into(),
        number: 5,
        seat: 12,
        delay: 0,
        note: None,
    };
    assert_eq!(
        seat.key(),
        vec![Value::String("UA".into()), Value::I32(5), Value::I16(12)]
    );
    assert_eq!(
        <FlightSeat as BelongsTo<Flight>>::FOREIGN_KEY,
        &["carrier", "number"]
    );
    assert_eq!(
        seat.parent_key(),
        Some(vec![Value::String("UA".into()), Value::I32(5)])
    );
}

#[test]
fn row_round_trip() {
    let u = user();
    let row = u.to_row();
    assert_eq!(row.len(), 7);
    assert_eq!(row[0], Value::I64(7));
    assert_eq!(row[1], Value::String("ada".into()));
    assert_eq!(row[2], Value::String("ada@example.com".into()));
    assert_eq!(row[3], Value::I32(36));
    assert_eq!(row[4], Value::Bool(true));
    assert_eq!(row[5], Value::I64(3));
    assert!(matches!(row[6], Value::Bytes(_)));
    assert_eq!(User::from_row(row).unwrap(), u);

    let none = User {
        email: None,
        team_id: None,
        ..user()
    };
    let row = none.to_row();
    assert_eq!(row[2], Value::Null);
    assert_eq!(User::from_row(row).unwrap(), none);
}

#[test]
fn from_row_leaves_relation_fields_empty() {
    let mut u = user();
    u.songs = vec![Song {
        id: 10,
        title: "x".into(),
    }];
    let back = User::from_row(u.to_row()).unwrap();
    assert!(back.songs.is_empty());
    assert_eq!(back.song_ids, vec![10, 11]);
}

#[test]
fn from_row_errors_name_the_column() {
    let mut row = user().to_row();
    row[3] = Value::String("old".into());
    let e = User::from_row(row).unwrap_err();
    assert!(e.is_invalid_input());
    assert!(e.message().contains("users.age"), "{}", e.message());

    let mut row = user().to_row();
    row[1] = Value::Null;
    let e = User::from_row(row).unwrap_err();
    assert!(e.message().contains("users.user_name"), "{}", e.message());

    let e = User::from_row(vec![Value::I64(1)]).unwrap_err();
    assert!(e.is_invalid_input());
    assert!(e.message().contains("7 columns"), "{}", e.message());
}

#[test]
fn key_is_the_pk_values() {
    assert_eq!(user().key(), vec![Value::I64(7)]);
    assert_eq!(
        Team {
            id: 2,
            title: "t".into()
        }
        .key(),
        vec![Value::I64(2)]
    );
    assert_eq!(Song::schema().name, "song");
}

#[test]
fn belongs_to_and_id_list() {
    assert_eq!(<User as BelongsTo<Team>>::FOREIGN_KEY, &["team_id"]);
    assert_eq!(
        BelongsTo::<Team>::parent_key(&user()),
        Some(vec![Value::I64(3)])
    );
    let orphan = User {
        team_id: None,
        ..user()
    };
    assert_eq!(BelongsTo::<Team>::parent_key(&orphan), None);

    let mut u = user();
    assert_eq!(
        IdList::<Song>::related_keys(&u),
        vec![vec![Value::I64(10)], vec![Value::I64(11)]]
    );
    let songs = vec![
        Song {
            id: 10,
            title: "a".into(),
        },
        Song {
            id: 11,
            title: "b".into(),
        },
    ];
    u.fill_related(songs.clone());
    assert_eq!(u.songs, songs);
}

#[test]
fn primary_key_fields_are_known_at_compile_time() {
    use datalayer::check::PrimaryKeyFields;
    assert_eq!(<User as PrimaryKeyFields>::FIELDS, &["id"]);
    assert_eq!(
        <FlightSeat as PrimaryKeyFields>::FIELDS,
        &["carrier", "number", "seat"]
    );
}

// ---------------------------------------------------------------- query_group

#[query_group]
impl User {
    /// Looks a user up by id.
    fn by_id(id: i64) -> User {
        User::filter(|u| u.id == id)
    }
    fn by_id_one(id: i64) -> Self {
        Self::filter(|u| u.id == id).one()
    }
    fn by_email(email: &str) -> Option<User> {
        Self::filter(|u| u.email == Some(email))
    }
    fn first_named(name: String) -> Option<Self> {
        Self::filter(|u| u.name == name).order_by(|u| u.id).first()
    }
    fn adults(min: i32, n: i64) -> Vec<User> {
        Self::filter(|u| u.age >= min && u.active)
            .order_by(|u| u.age.desc())
            .order_by(|u| u.id)
            .limit(n)
    }
    fn top3() -> Vec<Self> {
        Self::all().order_by(|x| x.age.desc()).limit(3).all()
    }
    fn names() -> Vec<String> {
        Self::all().select(|u| u.name)
    }
    fn name_of(id: i64) -> String {
        Self::filter(|u| u.id == id).select(|u| u.name)
    }
    fn email_of(id: i64) -> Option<String> {
        Self::filter(|u| u.id == id).select(|u| u.email)
    }
    fn count_active() -> u64 {
        Self::filter(|u| u.active && !(u.age < 18)).count()
    }
    fn bump(id: i64, by: i32) -> u64 {
        Self::filter(|u| u.id == id).update(|u| u.age = u.age + by)
    }
    fn clear_email(id: i64) -> u64 {
        Self::filter(|u| u.id == id).update(|u| u.email = None)
    }
    fn rename(id: i64, name: &str, email: Option<String>) -> u64 {
        Self::filter(|u| u.id == id).update(|u| {
            u.name = name;
            u.email = email;
            u.age -= 1;
        })
    }
    fn purge() -> u64 {
        Self::filter(|u| u.email.is_none() || u.name.starts_with("tmp")).delete()
    }
    fn mixed(prefix: &str, team: Option<i64>) -> Vec<User> {
        Self::filter(|u| {
            (u.name.starts_with(prefix) || u.email.is_some())
                && u.team_id != team
                && u.age - 1 > -3
                && 10 < u.age
                && u.id == u.team_id
        })
        .filter(|u| u.active == false)
    }
}

fn q(name: &str) -> &'static QueryDef {
    User::queries()
        .into_iter()
        .find(|q| q.name == format!("User::{name}"))
        .unwrap()
}

fn select(returns: Returns) -> QueryKind {
    QueryKind::Select {
        projection: None,
        returns,
    }
}

#[test]
fn group_lists_every_query_once() {
    let names: Vec<&str> = User::queries().iter().map(|q| q.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "User::by_id",
            "User::by_id_one",
            "User::by_email",
            "User::first_named",
            "User::adults",
            "User::top3",
            "User::names",
            "User::name_of",
            "User::email_of",
            "User::count_active",
            "User::bump",
            "User::clear_email",
            "User::rename",
            "User::purge",
            "User::mixed",
        ]
    );
    assert!(
        std::ptr::eq(User::by_id_query(), User::by_id_query()),
        "built once"
    );
    assert!(std::ptr::eq(User::by_id_query().table, User::schema()));
    assert_ne!(User::by_id_query().id, User::adults_query().id);
}

#[test]
fn point_lookup() {
    for name in ["by_id", "by_id_one"] {
        let d = q(name);
        assert_eq!(d.kind, select(Returns::One));
        assert_eq!(d.filter, Some(cmp(CmpOp::Eq, col(0), Expr::Param(0))));
        assert_eq!(d.params, vec![param("id", ColumnType::I64, false)]);
        assert!(d.order_by.is_empty());
        assert_eq!(d.limit, None);
    }
}

#[test]
fn optional_with_some_and_str_param() {
    let d = q("by_email");
    assert_eq!(d.kind, select(Returns::Optional));
    assert_eq!(d.filter, Some(cmp(CmpOp::Eq, col(2), Expr::Param(0))));
    assert_eq!(d.params, vec![param("email", ColumnType::String, false)]);

    let d = q("first_named");
    assert_eq!(d.kind, select(Returns::Optional));
    assert_eq!(d.filter, Some(cmp(CmpOp::Eq, col(1), Expr::Param(0))));
    assert_eq!(
        d.order_by,
        vec![OrderBy {
            column: 0,
            desc: false
        }]
    );
}

#[test]
fn many_with_order_and_param_limit() {
    let d = q("adults");
    assert_eq!(d.kind, select(Returns::Many));
    assert_eq!(
        d.filter,
        Some(Expr::And(vec![
            cmp(CmpOp::Ge, col(3), Expr::Param(0)),
            cmp(CmpOp::Eq, col(4), lit(Value::Bool(true))),
        ]))
    );
    assert_eq!(
        d.order_by,
        vec![
            OrderBy {
                column: 3,
                desc: true
            },
            OrderBy {
                column: 0,
                desc: false
            }
        ]
    );
    assert_eq!(d.limit, Some(Limit::Param(1)));
    assert_eq!(
        d.params,
        vec![
            param("min", ColumnType::I32, false),
            param("n", ColumnType::I64, false)
        ]
    );

    let d = q("top3");
    assert_eq!(d.kind, select(Returns::Many));
    assert_eq!(d.filter, None);
    assert_eq!(
        d.order_by,
        vec![OrderBy {
            column: 3,
            desc: true
        }]
    );
    assert_eq!(d.limit, Some(Limit::Const(3)));
    assert!(d.params.is_empty());
}

#[test]
fn projections() {
    let d = q("names");
    assert_eq!(
        d.kind,
        QueryKind::Select {
            projection: Some(1),
            returns: Returns::Many
        }
    );
    assert_eq!(d.filter, None);
    let d = q("name_of");
    assert_eq!(
        d.kind,
        QueryKind::Select {
            projection: Some(1),
            returns: Returns::One
        }
    );
    assert_eq!(d.filter, Some(cmp(CmpOp::Eq, col(0), Expr::Param(0))));
    let d = q("email_of");
    assert_eq!(
        d.kind,
        QueryKind::Select {
            projection: Some(2),
            returns: Returns::Optional
        }
    );
}

#[test]
fn count_with_not() {
    let d = q("count_active");
    assert_eq!(d.kind, QueryKind::Count);
    assert_eq!(
        d.filter,
        Some(Expr::And(vec![
            cmp(CmpOp::Eq, col(4), lit(Value::Bool(true))),
            Expr::Not(Box::new(cmp(CmpOp::Lt, col(3), lit(Value::I32(18))))),
        ]))
    );
    assert!(d.params.is_empty());
}

#[test]
fn updates() {
    let d = q("bump");
    assert_eq!(
        d.kind,
        QueryKind::Update {
            assignments: vec![(3, Expr::arith(ArithOp::Add, col(3), Expr::Param(1)))]
        }
    );
    assert_eq!(d.filter, Some(cmp(CmpOp::Eq, col(0), Expr::Param(0))));
    assert_eq!(
        d.params,
        vec![
            param("id", ColumnType::I64, false),
            param("by", ColumnType::I32, false)
        ]
    );

    let d = q("clear_email");
    assert_eq!(
        d.kind,
        QueryKind::Update {
            assignments: vec![(2, lit(Value::Null))]
        }
    );

    let d = q("rename");
    assert_eq!(
        d.kind,
        QueryKind::Update {
            assignments: vec![
                (1, Expr::Param(1)),
                (2, Expr::Param(2)),
                (3, Expr::arith(ArithOp::Sub, col(3), lit(Value::I32(1)))),
            ]
        }
    );
    assert_eq!(
        d.params,
        vec![
            param("id", ColumnType::I64, false),
            param("name", ColumnType::String, false),
            param("email", ColumnType::String, true),
        ]
    );
}

#[test]
fn delete_with_is_none_or_starts_with() {
    let d = q("purge");
    assert_eq!(d.kind, QueryKind::Delete);
    assert_eq!(
        d.filter,
        Some(Expr::Or(vec![
            Expr::IsNull(Box::new(col(2))),
            Expr::StartsWith(Box::new(col(1)), Box::new(lit(Value::String("tmp".into())))),
        ]))
    );
}

#[test]
fn mixed_expression_tree() {
    let d = q("mixed");
    assert_eq!(
        d.filter,
        Some(Expr::And(vec![
            Expr::Or(vec![
                Expr::StartsWith(Box::new(col(1)), Box::new(Expr::Param(0))),
                Expr::Not(Box::new(Expr::IsNull(Box::new(col(2))))),
            ]),
            cmp(CmpOp::Ne, col(5), Expr::Param(1)),
            cmp(
                CmpOp::Gt,
                Expr::arith(ArithOp::Sub, col(3), lit(Value::I32(1))),
                lit(Value::I32(-3))
            ),
            cmp(CmpOp::Lt, lit(Value::I32(10)), col(3)),
            cmp(CmpOp::Eq, col(0), col(5)),
            // A second `.filter(..)` is and-ed in.
            cmp(CmpOp::Eq, col(4), lit(Value::Bool(false))),
        ]))
    );
    assert_eq!(
        d.params,
        vec![
            param("prefix", ColumnType::String, false),
            param("team", ColumnType::I64, true)
        ]
    );
}

#[test]
fn stmts_carry_params_in_order() {
    let s = User::adults_stmt(18, 10);
    assert!(std::ptr::eq(s.query(), User::adults_query()));
    let s = User::rename_stmt(1, "bob", None);
    assert!(std::ptr::eq(s.query(), User::rename_query()));
    let _: datalayer::Stmt<User> = User::by_id_stmt(1);
    let _: datalayer::Stmt<Option<User>> = User::by_email_stmt("a@b");
    let _: datalayer::Stmt<Vec<String>> = User::names_stmt();
    let _: datalayer::Stmt<Option<String>> = User::email_of_stmt(1);
    let _: datalayer::Stmt<u64> = User::purge_stmt();
}

#[test]
fn async_methods_take_any_executor() {
    // Type-level: the generated methods accept a `Db` or a `Tx`, return the declared
    // type, and their futures are `Send`.
    fn assert_send<T: Send>(_: &T) {}
    async fn calls(db: &datalayer::Db, tx: &datalayer::Tx) -> datalayer::Result<()> {
        let _: User = User::by_id(db, 1).await?;
        let _: Option<User> = User::by_email(tx, "a@b").await?;
        let _: Vec<String> = User::names(db).await?;
        let _: u64 = User::bump(tx, 1, 2).await?;
        Ok(())
    }
    let _ = calls;
    fn check_send(db: &datalayer::Db) {
        let f = User::adults(db, 18, 10);
        assert_send(&f);
    }
    let _ = check_send;
}

// ---------------------------------------------------------------- crate = "..."

/// `Team` with the generated code rooted at `datalayer_core`: the facade re-exports
/// core's paths, so either root generates the same table and queries.
#[derive(datalayer::Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core", name = "teams")]
struct CoreTeam {
    #[pk]
    id: i64,
    title: String,
}

/// The same, rooted at an explicit `datalayer` (no leading `::`).
#[derive(datalayer::Table, Clone, Debug, PartialEq)]
#[table(name = "teams", crate = "datalayer")]
struct FacadeTeam {
    #[pk]
    id: i64,
    title: String,
}

#[query_group(crate = "datalayer_core")]
impl CoreTeam {
    fn titled(title: &str) -> Vec<CoreTeam> {
        Self::filter(|t| t.title == title && t.id > 0)
    }
}

#[query_group(crate = "datalayer")]
impl FacadeTeam {
    fn titled(title: &str) -> Vec<FacadeTeam> {
        Self::filter(|t| t.title == title && t.id > 0)
    }
}

#[test]
fn crate_path_roots_the_same_code() {
    assert_eq!(CoreTeam::schema(), Team::schema());
    assert_eq!(FacadeTeam::schema(), Team::schema());
    let (c, f) = (CoreTeam::titled_query(), FacadeTeam::titled_query());
    assert_eq!(c.kind, f.kind);
    assert_eq!(c.filter, f.filter);
    assert_eq!(c.params, f.params);
    let t = CoreTeam {
        id: 1,
        title: "a".into(),
    };
    assert_eq!(CoreTeam::from_row(t.to_row()).unwrap(), t);
}

// ------------------------------------------------ running on an in-memory executor

/// A tiny executor that evaluates queries over rows in memory with `datalayer::eval`,
/// so that the generated methods run end to end: parameters in order, decoding per
/// return shape, update assignments.
struct Mem {
    rows: Mutex<Vec<Row>>,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = datalayer::Result<T>> + Send + 'a>>;

impl Mem {
    fn new(users: &[User]) -> Mem {
        Mem {
            rows: Mutex::new(users.iter().map(Table::to_row).collect()),
        }
    }

    fn exec(&self, op: Op<'_>) -> datalayer::Result<Output> {
        let Op::Query { query, params } = op else {
            panic!("only queries")
        };
        let keep = |r: &Row| eval::matches(query.filter.as_ref(), r, params).unwrap();
        let mut rows = self.rows.lock().unwrap();
        Ok(match &query.kind {
            QueryKind::Select { projection, .. } => {
                let mut out: Vec<Row> = rows.iter().filter(|r| keep(r)).cloned().collect();
                for ob in query.order_by.iter().rev() {
                    out.sort_by(|a, b| {
                        let o =
                            eval::compare(&a[ob.column], &b[ob.column]).unwrap_or(Ordering::Equal);
                        if ob.desc { o.reverse() } else { o }
                    });
                }
                if let Some(limit) = query.limit {
                    let n = match limit {
                        Limit::Const(n) => n as usize,
                        Limit::Param(i) => params[i].as_i64().unwrap() as usize,
                    };
                    out.truncate(n);
                }
                if let Some(c) = projection {
                    out = out.into_iter().map(|r| vec![r[*c].clone()]).collect();
                }
                Output::Rows(out)
            }
            QueryKind::Count => Output::Count(rows.iter().filter(|r| keep(r)).count() as u64),
            QueryKind::Update { assignments } => {
                let mut n = 0;
                for r in rows.iter_mut().filter(|r| keep(r)) {
                    let old = r.clone();
                    for (c, e) in assignments {
                        let v = eval::eval(e, &old, params)?;
                        r[*c] = v.coerce(query.table.columns[*c].ty)?;
                    }
                    n += 1;
                }
                Output::Count(n)
            }
            QueryKind::Delete => {
                let before = rows.len();
                rows.retain(|r| !keep(r));
                Output::Count((before - rows.len()) as u64)
            }
        })
    }
}

impl Executor for Mem {
    fn run<'life0, 'life1, 'async_trait>(
        &'life0 self,
        op: Op<'life1>,
    ) -> BoxFut<'async_trait, Output>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        let out = self.exec(op);
        Box::pin(async move { out })
    }
    fn run_batch<'life0, 'life1, 'async_trait>(
        &'life0 self,
        ops: Vec<Op<'life1>>,
    ) -> BoxFut<'async_trait, Vec<Output>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        let out = ops.into_iter().map(|op| self.exec(op)).collect();
        Box::pin(async move { out })
    }
    fn capability(&self) -> datalayer::Capability {
        datalayer::Capability::default()
    }
    fn engine_name(&self) -> &'static str {
        "mem"
    }
}

fn people() -> Vec<User> {
    vec![
        user(),
        User {
            id: 1,
            name: "tmp_bo".into(),
            email: None,
            age: 17,
            active: true,
            team_id: None,
            ..user()
        },
        User {
            id: 2,
            name: "cy".into(),
            email: Some("cy@x".into()),
            age: 52,
            active: true,
            ..user()
        },
        User {
            id: 3,
            name: "di".into(),
            email: Some("di@x".into()),
            age: 36,
            active: false,
            ..user()
        },
    ]
}

#[tokio::test]
async fn generated_methods_run_end_to_end() {
    let db = Mem::new(&people());
    assert_eq!(User::by_id(&db, 7).await.unwrap(), user());
    assert!(User::by_id(&db, 99).await.unwrap_err().is_not_found());
    assert_eq!(
        User::by_email(&db, "cy@x").await.unwrap().map(|u| u.id),
        Some(2)
    );
    assert_eq!(User::by_email(&db, "nobody").await.unwrap(), None);

    let ids = |v: Vec<User>| v.into_iter().map(|u| u.id).collect::<Vec<_>>();
    // age >= 18 && active, by age desc then id, limit 2.
    assert_eq!(ids(User::adults(&db, 18, 2).await.unwrap()), vec![2, 7]);
    assert_eq!(ids(User::top3(&db).await.unwrap()), vec![2, 7, 3]);
    assert_eq!(
        User::names(&db).await.unwrap(),
        vec!["ada", "tmp_bo", "cy", "di"]
    );
    assert_eq!(User::name_of(&db, 3).await.unwrap(), "di");
    assert_eq!(User::email_of(&db, 1).await.unwrap(), None);
    assert_eq!(
        User::email_of(&db, 2).await.unwrap(),
        Some("cy@x".to_owned())
    );
    assert_eq!(User::count_active(&db).await.unwrap(), 2);

    assert_eq!(User::bump(&db, 3, 4).await.unwrap(), 1);
    assert_eq!(User::by_id(&db, 3).await.unwrap().age, 40);
    assert_eq!(
        User::rename(&db, 3, "dee", Some("dee@x".into()))
            .await
            .unwrap(),
        1
    );
    let dee = User::by_id(&db, 3).await.unwrap();
    assert_eq!(
        (dee.name.as_str(), dee.email.as_deref(), dee.age),
        ("dee", Some("dee@x"), 39)
    );
    assert_eq!(User::clear_email(&db, 3).await.unwrap(), 1);
    assert_eq!(User::by_id(&db, 3).await.unwrap().email, None);

    // email IS NULL || name LIKE 'tmp%': ids 1 and 3 now.
    assert_eq!(User::purge(&db).await.unwrap(), 2);
    assert_eq!(ids(User::top3(&db).await.unwrap()), vec![2, 7]);

    // Stmts run later, with the parameters captured at staging.
    let stmt = User::name_of_stmt(2);
    assert_eq!(stmt.run(&db).await.unwrap(), "cy");
}
