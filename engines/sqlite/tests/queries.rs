//! Every query kind, NULL semantics, limits, batches.

mod common;

use common::*;
use datalayer_core::stmt::decode;
use datalayer_core::{
    ArithOp, Batch, CmpOp, ColumnType, Db, ErrorKind, Executor, Expr, Limit, Op, Output,
    QueryBuilder, QueryDef, QueryKind, Returns, Stmt, Table, Value,
};

async fn seeded() -> Db {
    let db = memory().await;
    db.repo::<User>().insert_many(&users()).await.unwrap();
    db
}

async fn rows(db: &Db, q: &QueryDef, params: &[Value]) -> Vec<Vec<Value>> {
    match db.run(Op::Query { query: q, params }).await.unwrap() {
        Output::Rows(r) => r,
        o => panic!("{o:?}"),
    }
}

async fn count(db: &Db, q: &QueryDef, params: &[Value]) -> u64 {
    match db.run(Op::Query { query: q, params }).await.unwrap() {
        Output::Count(n) => n,
        o => panic!("{o:?}"),
    }
}

fn ids(rows: &[Vec<Value>]) -> Vec<i64> {
    rows.iter().map(|r| r[U_ID].as_i64().unwrap()).collect()
}

fn filtered(name: &str, f: impl FnOnce(&mut QueryBuilder) -> Expr) -> QueryDef {
    let mut b = QueryBuilder::new(name, User::schema());
    let e = f(&mut b);
    b.filter(e);
    b.build().unwrap()
}

#[tokio::test]
async fn select_filter_order_limit() {
    let db = seeded().await;
    let mut b = QueryBuilder::new("older", User::schema());
    let age = b.col("age");
    let min = b.param("min", ColumnType::I32, false);
    b.param("n", ColumnType::I64, false);
    b.filter(Expr::cmp(CmpOp::Ge, age, min));
    b.order_by("age", true);
    b.limit(Limit::Param(1));
    let q = b.build().unwrap();
    // ages: 1:30 2:- 3:25 4:30 5:- 6:41 7:25 8:30 9:- 10:18
    let r = rows(&db, &q, &[Value::I32(25), Value::I64(4)]).await;
    assert_eq!(
        ids(&r),
        vec![6, 8, 4, 1],
        "desc by age; ties in reverse index order, as the KV planner reads them"
    );
    let r = rows(&db, &q, &[Value::I32(25), Value::I64(0)]).await;
    assert!(r.is_empty());
    let e = db
        .run(Op::Query {
            query: &q,
            params: &[Value::I32(25), Value::I64(-1)],
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = db
        .run(Op::Query {
            query: &q,
            params: &[Value::I32(25)],
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    // Ascending order puts NULL first; no ORDER BY means primary-key order.
    let mut b = QueryBuilder::new("by_age", User::schema());
    b.order_by("age", false);
    let q = b.build().unwrap();
    assert_eq!(
        ids(&rows(&db, &q, &[]).await),
        vec![2, 5, 9, 10, 3, 7, 1, 4, 8, 6]
    );
    let mut b = QueryBuilder::new("by_age_desc", User::schema());
    b.order_by("age", true);
    b.limit(Limit::Const(100));
    let q = b.build().unwrap();
    assert_eq!(
        ids(&rows(&db, &q, &[]).await),
        vec![6, 8, 4, 1, 7, 3, 10, 9, 5, 2]
    );
    let all = QueryBuilder::new("all", User::schema()).build().unwrap();
    assert_eq!(
        ids(&rows(&db, &all, &[]).await),
        (1..=10).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn three_valued_logic() {
    let db = seeded().await;
    let ne = filtered("ne", |b| {
        let a = b.col("age");
        Expr::cmp(CmpOp::Ne, a, Expr::Literal(Value::I32(30)))
    });
    assert_eq!(
        ids(&rows(&db, &ne, &[]).await),
        vec![3, 6, 7, 10],
        "NULL != 30 is unknown"
    );
    let not = filtered("not", |b| {
        let a = b.col("age");
        Expr::Not(Box::new(Expr::cmp(
            CmpOp::Eq,
            a,
            Expr::Literal(Value::I32(30)),
        )))
    });
    assert_eq!(ids(&rows(&db, &not, &[]).await), vec![3, 6, 7, 10]);
    let is_null = filtered("is_null", |b| Expr::IsNull(Box::new(b.col("age"))));
    assert_eq!(ids(&rows(&db, &is_null, &[]).await), vec![2, 5, 9]);
    let or = filtered("or", |b| {
        let a = b.col("age");
        let p = b.param("a", ColumnType::I32, true);
        Expr::Or(vec![
            Expr::cmp(CmpOp::Eq, a.clone(), p),
            Expr::IsNull(Box::new(a)),
        ])
    });
    assert_eq!(
        ids(&rows(&db, &or, &[Value::I32(18)]).await),
        vec![2, 5, 9, 10]
    );
    assert_eq!(
        ids(&rows(&db, &or, &[Value::Null]).await),
        vec![2, 5, 9],
        "= NULL never holds"
    );
    let empty_and = filtered("t", |_| Expr::And(vec![]));
    assert_eq!(rows(&db, &empty_and, &[]).await.len(), 10);
    let empty_or = filtered("f", |_| Expr::Or(vec![]));
    assert!(rows(&db, &empty_or, &[]).await.is_empty());
    let arith = filtered("arith", |b| {
        let a = b.col("age");
        Expr::cmp(
            CmpOp::Gt,
            Expr::arith(ArithOp::Add, a, Expr::Literal(Value::I64(10))),
            Expr::Literal(Value::I64(40)),
        )
    });
    assert_eq!(ids(&rows(&db, &arith, &[]).await), vec![6]);
    let bools = filtered("active", |b| {
        let a = b.col("active");
        Expr::cmp(CmpOp::Eq, a, Expr::Literal(Value::Bool(true)))
    });
    assert_eq!(ids(&rows(&db, &bools, &[]).await), vec![2, 4, 6, 8, 10]);
}

#[tokio::test]
async fn starts_with_is_literal_and_case_sensitive() {
    let db = memory().await;
    let names = [
        "100%_a", "100xxa", "a*b", "axb", "A*b", "[x]", "x", "ab?", "abc",
    ];
    let us: Vec<User> = names
        .iter()
        .enumerate()
        .map(|(i, n)| User::new(i as i64 + 1, n, None))
        .collect();
    db.repo::<User>().insert_many(&us).await.unwrap();
    let q = filtered("prefix", |b| {
        let n = b.col("name");
        let p = b.param("p", ColumnType::String, true);
        Expr::StartsWith(Box::new(n), Box::new(p))
    });
    let names_of = |r: Vec<Vec<Value>>| -> Vec<String> {
        r.into_iter()
            .map(|r| match &r[U_NAME] {
                Value::String(s) => s.clone(),
                v => panic!("{v:?}"),
            })
            .collect()
    };
    assert_eq!(
        names_of(rows(&db, &q, &["100%_".into_v()]).await),
        vec!["100%_a"]
    );
    assert_eq!(names_of(rows(&db, &q, &["a*".into_v()]).await), vec!["a*b"]);
    assert_eq!(names_of(rows(&db, &q, &["[".into_v()]).await), vec!["[x]"]);
    assert_eq!(
        names_of(rows(&db, &q, &["ab?".into_v()]).await),
        vec!["ab?"]
    );
    assert_eq!(rows(&db, &q, &["".into_v()]).await.len(), names.len());
    assert!(rows(&db, &q, &[Value::Null]).await.is_empty());
    let lit = filtered("prefix_lit", |b| {
        let n = b.col("name");
        Expr::StartsWith(
            Box::new(n),
            Box::new(Expr::Literal(Value::String("a*".into()))),
        )
    });
    assert_eq!(names_of(rows(&db, &lit, &[]).await), vec!["a*b"]);
}

trait IntoV {
    fn into_v(self) -> Value;
}
impl IntoV for &str {
    fn into_v(self) -> Value {
        Value::String(self.into())
    }
}

#[tokio::test]
async fn one_optional_projection_count_via_stmts() {
    let db = seeded().await;
    let by_id = leak({
        let mut b = QueryBuilder::new("by_id", User::schema());
        let id = b.col("id");
        let p = b.param("id", ColumnType::I64, false);
        b.filter(Expr::cmp(CmpOp::Eq, id, p));
        b.kind(QueryKind::Select {
            projection: None,
            returns: Returns::One,
        });
        b.build().unwrap()
    });
    let u: User = Stmt::new(by_id, vec![Value::I64(3)], decode::one::<User>)
        .run(&db)
        .await
        .unwrap();
    assert_eq!(u, users()[2]);
    let e = Stmt::new(by_id, vec![Value::I64(99)], decode::one::<User>)
        .run(&db)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let none = Stmt::new(by_id, vec![Value::I64(99)], decode::optional::<User>)
        .run(&db)
        .await
        .unwrap();
    assert_eq!(none, None);

    let names = leak({
        let mut b = QueryBuilder::new("names", User::schema());
        let age = b.col("age");
        let p = b.param("age", ColumnType::I32, false);
        b.filter(Expr::cmp(CmpOp::Eq, age, p));
        b.select("name", Returns::Many);
        b.build().unwrap()
    });
    let got: Vec<String> = Stmt::new(names, vec![Value::I32(30)], decode::scalars::<String>)
        .run(&db)
        .await
        .unwrap();
    assert_eq!(got, vec!["ann", "dee", "hal"]);
    let ages = leak({
        let mut b = QueryBuilder::new("ages", User::schema());
        b.select("age", Returns::Many);
        b.order_by("age", false);
        b.build().unwrap()
    });
    let got: Vec<Option<i32>> = Stmt::new(ages, vec![], decode::scalars::<Option<i32>>)
        .run(&db)
        .await
        .unwrap();
    assert_eq!(got[..4], [None, None, None, Some(18)]);

    let count_q = leak({
        let mut b = QueryBuilder::new("count_age", User::schema());
        let age = b.col("age");
        let p = b.param("age", ColumnType::I32, false);
        b.filter(Expr::cmp(CmpOp::Ge, age, p));
        b.kind(QueryKind::Count);
        b.limit(Limit::Const(1)); // a limit does not apply to a count (KV family too)
        b.build().unwrap()
    });
    assert_eq!(count(&db, count_q, &[Value::I32(25)]).await, 6);

    // A batch of same-shape statements: results in order.
    let mut batch = Batch::new();
    for id in [5i64, 1, 99] {
        batch.push(Stmt::new(
            by_id,
            vec![Value::I64(id)],
            decode::optional::<User>,
        ));
    }
    let got = batch.run(&db).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|u| u.as_ref().map(|u| u.id))
            .collect::<Vec<_>>(),
        vec![Some(5), Some(1), None]
    );
}

#[tokio::test]
async fn update_and_delete_queries() {
    let db = seeded().await;
    let bump = {
        let mut b = QueryBuilder::new("bump", User::schema());
        let age = b.col("age");
        let by = b.param("by", ColumnType::I32, false);
        let min = b.param("min", ColumnType::I32, false);
        b.filter(Expr::cmp(CmpOp::Ge, age.clone(), min));
        b.kind(QueryKind::Update {
            assignments: vec![(U_AGE, Expr::arith(ArithOp::Add, age, by))],
        });
        b.build().unwrap()
    };
    assert_eq!(count(&db, &bump, &[Value::I32(1), Value::I32(30)]).await, 4);
    let repo = db.repo::<User>();
    assert_eq!(repo.get(6i64).await.unwrap().unwrap().age, Some(42));
    assert_eq!(repo.get(1i64).await.unwrap().unwrap().age, Some(31));
    assert_eq!(repo.get(2i64).await.unwrap().unwrap().age, None);
    // Overflowing the column type is InvalidInput and changes nothing.
    let e = db
        .run(Op::Query {
            query: &bump,
            params: &[Value::I32(i32::MAX), Value::I32(0)],
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(repo.get(1i64).await.unwrap().unwrap().age, Some(31));

    // Update with ORDER BY + LIMIT changes the first rows in that order only.
    let oldest = {
        let mut b = QueryBuilder::new("retire_oldest", User::schema());
        b.kind(QueryKind::Update {
            assignments: vec![(U_ACTIVE, Expr::Literal(Value::Bool(false)))],
        });
        b.order_by("age", true);
        b.limit(Limit::Const(2));
        b.build().unwrap()
    };
    for u in users() {
        let mut u = u;
        u.active = true;
        u.age = users()[(u.id - 1) as usize].age;
        repo.upsert(&u).await.unwrap();
    }
    assert_eq!(count(&db, &oldest, &[]).await, 2);
    let inactive: Vec<i64> = repo
        .scan()
        .all()
        .await
        .unwrap()
        .into_iter()
        .filter(|u| !u.active)
        .map(|u| u.id)
        .collect();
    assert_eq!(inactive, vec![6, 8]);

    // Unique violation in an update query.
    let set_email = {
        let mut b = QueryBuilder::new("set_email", User::schema());
        let id = b.col("id");
        let p = b.param("id", ColumnType::I64, false);
        let e = b.param("email", ColumnType::String, false);
        b.filter(Expr::cmp(CmpOp::Eq, id, p));
        b.kind(QueryKind::Update {
            assignments: vec![(U_EMAIL, e)],
        });
        b.build().unwrap()
    };
    let e = db
        .run(Op::Query {
            query: &set_email,
            params: &[Value::I64(2), "ann1@example.com".into_v()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    // NULL into a NOT NULL column.
    let e = db
        .run(Op::Query {
            query: &set_email,
            params: &[Value::I64(2), Value::Null],
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    let del = filtered("del_null_age", |b| Expr::IsNull(Box::new(b.col("age"))));
    let del = QueryDef {
        kind: QueryKind::Delete,
        ..del
    };
    assert_eq!(count(&db, &del, &[]).await, 3);
    assert_eq!(repo.count().await.unwrap(), 7);
    let mut b = QueryBuilder::new("del_two_youngest", User::schema());
    b.kind(QueryKind::Delete);
    b.order_by("age", false);
    b.limit(Limit::Const(2));
    let del2 = b.build().unwrap();
    assert_eq!(count(&db, &del2, &[]).await, 2);
    let left: Vec<i64> = repo
        .scan()
        .all()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(
        left,
        vec![1, 4, 6, 7, 8],
        "ids 10 (18) and 3 (25, before 7 by key) are gone"
    );
}
