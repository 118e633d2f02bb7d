//! `#[derive(Table)]` and `#[query_group]` with `crate = "datalayer_core"`, in a crate
//! that does not depend on the `datalayer` facade: every path the macros generate exists
//! under core's root. Each construct of the macros is used once, so a generated path
//! that only the facade has fails to compile here.

use datalayer_core::check::PrimaryKeyFields;
use datalayer_core::{
    ArithOp, BelongsTo, CmpOp, Expr, IdList, Limit, QueryGroup, QueryKind, Returns, Stmt, Table,
    Value,
};
use datalayer_macros::{Table, query_group};

/// A table name given as a constant (`name = TEAMS`).
const TEAMS: &str = "teams";

#[derive(Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core", name = TEAMS)]
struct Team {
    #[pk]
    id: i64,
}

#[derive(Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core")]
struct Song {
    #[pk]
    id: i64,
}

#[derive(Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core", name = "players")]
#[index(name = "by_email", fields(email), unique)]
#[index(name = "adults", fields(age), when = |p| p.age >= 18 && !p.email.is_none() && p.name.starts_with("a"))]
#[belongs_to(Team, fields(team_id))]
struct Player {
    #[pk]
    id: i64,
    #[column(name = "player_name")]
    name: String,
    email: Option<String>,
    age: i32,
    team_id: Option<i64>,
    song_ids: Vec<i64>,
    #[relation(ids = song_ids)]
    songs: Vec<Song>,
}

/// Field-level `#[belongs_to]`.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core")]
struct Member {
    #[pk]
    id: i64,
    #[belongs_to(Team)]
    team_id: i64,
}

#[query_group(crate = "datalayer_core")]
impl Player {
    fn by_id(id: i64) -> Player {
        Self::filter(|p| p.id == id).one()
    }
    fn by_email(email: &str) -> Option<Self> {
        Self::filter(|p| p.email == Some(email)).first()
    }
    fn page(prefix: &str, n: i64) -> Vec<Player> {
        Self::filter(|p| p.name.starts_with(prefix) || p.age - 1 > 30 || p.email.is_some())
            .order_by(|p| p.age.desc())
            .limit(n)
    }
    fn names() -> Vec<String> {
        Self::all().order_by(|p| p.id).limit(10).select(|p| p.name)
    }
    fn name_of(id: i64) -> String {
        Self::filter(|p| p.id == id).select(|p| p.name)
    }
    fn email_of(id: i64) -> Option<String> {
        Self::filter(|p| p.id == id).select(|p| p.email)
    }
    fn count_named(name: String) -> u64 {
        Self::filter(|p| p.name != name && p.age <= 99 && p.age < 100).count()
    }
    fn birthday(id: i64) -> u64 {
        Self::filter(|p| p.id == id && p.age >= 0).update(|p| {
            p.age += 1;
            p.email = None;
            p.name = "x";
        })
    }
    fn younger(id: i64, by: i32) -> u64 {
        Self::filter(|p| p.id == id).update(|p| p.age -= by)
    }
    fn drop_old() -> u64 {
        Self::filter(|p| p.age > 120 || p.name == "old").delete()
    }
}

fn player() -> Player {
    Player {
        id: 7,
        name: "ada".into(),
        email: Some("ada@example.com".into()),
        age: 36,
        team_id: Some(3),
        song_ids: vec![10, 11],
        songs: vec![],
    }
}

#[test]
fn schema_and_row_codec() {
    assert_eq!(Team::schema().name, TEAMS);
    assert_eq!(Song::schema().name, "song");
    let s = Player::schema();
    assert_eq!(s.name, "players");
    assert_eq!(s.columns[1].name, "player_name");
    assert_eq!(s.primary_key, [0]);
    assert_eq!(s.indexes.len(), 2);
    assert!(s.indexes[1].when.is_some());
    s.validate().unwrap();
    assert_eq!(<Player as PrimaryKeyFields>::FIELDS, ["id"]);

    let p = player();
    assert_eq!(p.key(), [Value::I64(7)]);
    assert_eq!(Player::from_row(p.to_row()).unwrap(), p);
    let e = Player::from_row(vec![Value::I64(1)]).unwrap_err();
    assert!(
        e.message().contains("players has 6 columns"),
        "{}",
        e.message()
    );
    let e = Team::from_row(vec![Value::Null]).unwrap_err();
    assert!(e.message().contains("column teams.id"), "{}", e.message());
}

#[test]
fn relationships() {
    let mut p = player();
    assert_eq!(<Player as BelongsTo<Team>>::FOREIGN_KEY, ["team_id"]);
    assert_eq!(BelongsTo::<Team>::parent_key(&p), Some(vec![Value::I64(3)]));
    let m = Member { id: 1, team_id: 4 };
    assert_eq!(m.parent_key(), Some(vec![Value::I64(4)]));
    assert_eq!(p.related_keys(), [[Value::I64(10)], [Value::I64(11)]]);
    p.fill_related(vec![Song { id: 10 }]);
    assert_eq!(p.songs, [Song { id: 10 }]);
}

#[test]
fn queries_build() {
    let all = Player::queries();
    assert_eq!(all.len(), 10);
    assert!(all.iter().all(|q| std::ptr::eq(q.table, Player::schema())));

    let q = Player::by_id_query();
    assert_eq!(q.name, "Player::by_id");
    assert_eq!(
        q.filter,
        Some(Expr::cmp(CmpOp::Eq, Expr::Column(0), Expr::Param(0)))
    );
    assert_eq!(
        q.kind,
        QueryKind::Select {
            projection: None,
            returns: Returns::One
        }
    );
    assert_eq!(Player::page_query().limit, Some(Limit::Param(1)));
    assert_eq!(Player::names_query().limit, Some(Limit::Const(10)));
    let QueryKind::Update { assignments } = &Player::birthday_query().kind else {
        panic!("an update")
    };
    let plus_one = Expr::arith(ArithOp::Add, Expr::Column(3), Expr::Literal(Value::I32(1)));
    assert_eq!(assignments[0], (3, plus_one));
    assert_eq!(assignments[1], (2, Expr::Literal(Value::Null)));
    assert_eq!(Player::drop_old_query().kind, QueryKind::Delete);
    assert_eq!(Player::count_named_query().kind, QueryKind::Count);

    let _: Stmt<Player> = Player::by_id_stmt(1);
    let _: Stmt<Option<Player>> = Player::by_email_stmt("a@b");
    let _: Stmt<Vec<Player>> = Player::page_stmt("a", 5);
    let _: Stmt<Vec<String>> = Player::names_stmt();
    let _: Stmt<String> = Player::name_of_stmt(1);
    let _: Stmt<Option<String>> = Player::email_of_stmt(1);
    let _: Stmt<u64> = Player::younger_stmt(1, 2);
}

#[test]
fn async_methods_take_a_core_executor() {
    async fn calls(db: &datalayer_core::Db) -> datalayer_core::Result<()> {
        let _: Player = Player::by_id(db, 1).await?;
        let _: u64 = Player::drop_old(db).await?;
        Ok(())
    }
    let _ = calls;
}
