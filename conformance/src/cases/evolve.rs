//! Schema evolution: a table stored under one declaration, opened with the next one;
//! the plan, its safe steps applied (online where the engine can), the history, and
//! the unsafe steps refused.

use crate::Ctx;
use anyhow::{Context, ensure};
use datalayer::{Db, ErrorKind, SchemaStep, Table, query_group};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use tokio_util::task::AbortOnDropHandle;

/// The first declaration.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "evo")]
#[index(name = "by_qty", fields(qty))]
pub struct EvoV1 {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// A name.
    pub name: String,
    /// A quantity.
    pub qty: i32,
}

/// The second: a defaulted column in the middle, a nullable one at the end, `by_qty`
/// dropped, a unique, a conditional and a plain index added.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "evo")]
#[index(name = "by_name", fields(name), unique)]
#[index(name = "big", fields(qty), when = |e| e.qty >= 10)]
#[index(name = "by_score", fields(score, id))]
pub struct EvoV2 {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// New, 7 for rows stored before it.
    #[column(default = 7)]
    pub score: i32,
    /// A name, now unique.
    pub name: String,
    /// A quantity.
    pub qty: i32,
    /// New, nullable.
    pub note: Option<String>,
}

#[query_group]
impl EvoV2 {
    fn named(n: &str) -> Option<EvoV2> {
        Self::filter(|e| e.name == n)
    }
}

/// The first with indexes added only: a unique one and a conditional one.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "evo")]
#[index(name = "by_qty", fields(qty))]
#[index(name = "by_name", fields(name), unique)]
#[index(name = "big", fields(qty, id), when = |e| e.qty >= 10)]
pub struct EvoIndexed {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// A name, now unique.
    pub name: String,
    /// A quantity.
    pub qty: i32,
}

/// The third: the table and a column renamed.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "evo_renamed", renamed_from = "evo")]
#[index(name = "by_qty", fields(qty))]
pub struct EvoRenamed {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// Was `name`.
    #[column(renamed_from = "name")]
    pub title: String,
    /// A quantity.
    pub qty: i32,
}

/// A destructive change: `qty` becomes text.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "evo")]
#[index(name = "by_qty", fields(qty))]
pub struct EvoRetyped {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// A name.
    pub name: String,
    /// Was an i32.
    pub qty: String,
}

/// A type change that stored values do not survive: `name` becomes an integer.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "evo")]
#[index(name = "by_qty", fields(qty))]
pub struct EvoNameInt {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// Was text.
    pub name: i64,
    /// A quantity.
    pub qty: i32,
}

/// The copy a destructive change to [`EvoNameInt`] makes, under its own name.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "evo__new")]
#[index(name = "by_qty", fields(qty))]
pub struct EvoNameIntCopy {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// As in [`EvoNameInt`].
    pub name: i64,
    /// A quantity.
    pub qty: i32,
}

/// The names of the tables stored on `db`'s engine.
async fn stored_names(db: &Db) -> anyhow::Result<Vec<String>> {
    Ok(db
        .catalog()
        .await?
        .into_iter()
        .map(|c| c.schema.name)
        .collect())
}

fn v1(id: i64) -> EvoV1 {
    EvoV1 {
        id,
        name: format!("n{id}"),
        qty: (id % 20) as i32,
    }
}

async fn open_v1(cx: &Ctx, rows: i64) -> anyhow::Result<Db> {
    let db = Db::with_engine(cx.db.engine().clone())
        .table::<EvoV1>()
        .connect()
        .await?;
    let all: Vec<EvoV1> = (1..=rows).map(v1).collect();
    db.repo::<EvoV1>().insert_many(&all).await?;
    Ok(db)
}

fn v2_builder(cx: &Ctx) -> datalayer::DbBuilder {
    Db::with_engine(cx.db.engine().clone())
        .table::<EvoV2>()
        .queries::<EvoV2>()
}

/// Case: a declaration with new columns and indexes opens with the table pending:
/// its ops are refused, the plan lists the safe steps, `migrate` applies them; stored
/// rows read the declared default and NULL, every new index holds every row (the
/// conditional one only its rows), the unique one is enforced, the history has the
/// steps, and the old declaration is refused on this engine.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn add_columns_and_indexes(cx: &mut Ctx) -> anyhow::Result<()> {
    let old = open_v1(cx, 30).await?;
    let db = v2_builder(cx).connect().await?;
    let err = db.repo::<EvoV2>().get(1i64).await.expect_err("pending");
    ensure!(err.kind() == ErrorKind::InvalidInput, "{err}");
    let plan = db.plan_migration().await?;
    ensure!(plan.is_safe() && plan.tables.len() == 1, "{plan}");
    let steps = &plan.tables[0].steps;
    let has = |f: &dyn Fn(&SchemaStep) -> bool| steps.iter().any(f);
    ensure!(
        has(
            &|s| matches!(s, SchemaStep::AddColumn { column, default: Some(_) } if column.name == "score")
        ),
        "{plan}"
    );
    ensure!(
        has(
            &|s| matches!(s, SchemaStep::AddColumn { column, default: None } if column.name == "note")
        ),
        "{plan}"
    );
    ensure!(
        has(&|s| matches!(s, SchemaStep::DropIndex { name } if name == "by_qty")),
        "{plan}"
    );
    for ix in ["by_name", "big", "by_score"] {
        ensure!(
            has(&|s| matches!(s, SchemaStep::AddIndex { index } if index.name == ix)),
            "{plan}"
        );
    }
    ensure!(steps.len() == 6, "{plan}");
    db.migrate(&plan).await?;
    ensure!(db.plan_migration().await?.is_empty(), "nothing left to do");
    let repo = db.repo::<EvoV2>();
    let got = repo.get(5i64).await?.context("row 5")?;
    ensure!(
        got == EvoV2 {
            id: 5,
            score: 7,
            name: "n5".into(),
            qty: 5,
            note: None
        },
        "{got:?}"
    );
    ensure!(EvoV2::named(&db, "n12").await?.map(|e| e.id) == Some(12));
    let big: Vec<i64> = repo.find("big").all().await?.iter().map(|e| e.id).collect();
    let mut want: Vec<(i32, i64)> = (1..=30)
        .map(v1)
        .filter(|e| e.qty >= 10)
        .map(|e| (e.qty, e.id))
        .collect();
    want.sort();
    ensure!(
        big == want.iter().map(|w| w.1).collect::<Vec<_>>(),
        "big: {big:?}"
    );
    ensure!(
        repo.find("by_score").eq(7).count().await? == 30,
        "by_score holds every row"
    );
    let dup = EvoV2 {
        id: 99,
        score: 1,
        name: "n3".into(),
        qty: 1,
        note: Some("x".into()),
    };
    let err = repo.insert(&dup).await.expect_err("unique name");
    ensure!(err.kind() == ErrorKind::AlreadyExists, "{err}");
    let cat = db.catalog().await?;
    let entry = cat
        .iter()
        .find(|c| c.schema.name == "evo")
        .context("catalog entry")?;
    ensure!(entry.version == 2, "version {}", entry.version);
    ensure!(entry.history.len() == 6, "{:?}", entry.history);
    ensure!(
        entry
            .history
            .iter()
            .all(|h| h.applied_at_micros > 0 && h.version == 2)
    );
    ensure!(
        entry.schema == *EvoV2::schema(),
        "stored schema is the declaration"
    );
    let err = old
        .repo::<EvoV1>()
        .insert(&v1(100))
        .await
        .expect_err("old declaration");
    ensure!(err.kind() == ErrorKind::InvalidInput, "{err}");
    Ok(())
}

/// Case: writes that go on while the migration runs are all kept and indexed: a
/// writer inserts through the old declaration, retrying `Conflict` (a KV engine holds
/// the table's writers while it backfills), and switches to the new declaration when
/// the old one is refused on this engine (retrying while it is still pending).
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn writes_during_migration_are_kept(cx: &mut Ctx) -> anyhow::Result<()> {
    let old = open_v1(cx, 2_500).await?;
    let db = v2_builder(cx).connect().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicI64::new(10_000));
    let (wdb, wold, wstop, wnext) = (db.clone(), old.clone(), stop.clone(), next.clone());
    // Aborted if the case fails early: it must not write after the cleanup.
    let writer = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut migrated = false;
        let mut failures = 0u32;
        while !wstop.load(Ordering::Acquire) || acked.len() < 20 {
            let id = wnext.fetch_add(1, Ordering::AcqRel);
            let r = if migrated {
                let e = EvoV2 {
                    id,
                    score: 7,
                    name: format!("n{id}"),
                    qty: (id % 20) as i32,
                    note: None,
                };
                wdb.repo::<EvoV2>().insert(&e).await
            } else {
                wold.repo::<EvoV1>().insert(&v1(id)).await
            };
            match r {
                Ok(()) => {
                    acked.push(id);
                    failures = 0;
                }
                // `Conflict`: the table is being altered (KV); `InvalidInput`: the
                // old declaration is refused, then the new one until it is migrated.
                Err(e)
                    if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::InvalidInput)
                        && failures < 20_000 =>
                {
                    failures += 1;
                    migrated |= e.kind() == ErrorKind::InvalidInput;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await
                }
                Err(e) => return Err(anyhow::anyhow!("writer: {e}")),
            }
            tokio::task::yield_now().await;
        }
        Ok::<_, anyhow::Error>(acked)
    }));
    let plan = db.plan_migration().await?;
    db.migrate(&plan).await?;
    stop.store(true, Ordering::Release);
    let acked = writer.await??;
    let repo = db.repo::<EvoV2>();
    for id in &acked {
        let by_name = EvoV2::named(&db, &format!("n{id}")).await?;
        ensure!(
            by_name.map(|e| e.id) == Some(*id),
            "write {id} is in by_name"
        );
    }
    let total = repo.count().await?;
    ensure!(
        total == 2_500 + acked.len() as u64,
        "{total} rows, {} acked",
        acked.len()
    );
    ensure!(
        repo.find("by_score").count().await? == total,
        "by_score holds every row"
    );
    Ok(())
}

/// Case: while indexes are added (nothing else changes), writers holding the stored
/// declaration keep going: inserts, updates that move rows in and out of both new
/// indexes and deletes, on rows the build has and has not yet reached, none failing
/// (retryable `Conflict` included) until the old declaration is refused
/// (`InvalidInput`) after the change; then each new index holds exactly the rows
/// it should, at their current values.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn index_builds_keep_writers_going(cx: &mut Ctx) -> anyhow::Result<()> {
    const ROWS: i64 = 2_500;
    let old = open_v1(cx, ROWS).await?;
    let db = Db::with_engine(cx.db.engine().clone())
        .table::<EvoIndexed>()
        .connect()
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (wold, wstop) = (old.clone(), stop.clone());
    // Aborted if the case fails early: it must not write after the cleanup.
    let writer = AbortOnDropHandle::new(tokio::spawn(async move {
        let repo = wold.repo::<EvoV1>();
        let mut started_tx = Some(started_tx);
        let mut step: i64 = 0;
        while !wstop.load(Ordering::Acquire) {
            step += 1;
            // Spread over the table, so writes land before and after the build.
            let k = 1 + (step * 7_919) % ROWS;
            let qty = (step % 20) as i32;
            let r = match step % 4 {
                0 => repo
                    .insert(&EvoV1 {
                        id: 100_000 + step,
                        name: format!("w{step}"),
                        qty,
                    })
                    .await
                    .map(drop),
                1 => {
                    repo.update(&EvoV1 {
                        id: k,
                        name: format!("u{k}-{step}"),
                        qty,
                    })
                    .await
                }
                2 => repo.delete(k).await.map(drop),
                _ => {
                    repo.update(&EvoV1 {
                        id: k,
                        name: format!("q{k}-{step}"),
                        qty: 19 - qty,
                    })
                    .await
                }
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                // The change is done: this declaration is stale on this engine.
                Err(e) if e.kind() == ErrorKind::InvalidInput => return Ok(step),
                Err(e) => return Err(anyhow::anyhow!("writer, step {step}: {e}")),
            }
            if step == 50
                && let Some(tx) = started_tx.take()
            {
                let _ = tx.send(());
            }
            tokio::task::yield_now().await;
        }
        Ok::<_, anyhow::Error>(step)
    }));
    // The change starts while the writer is writing.
    started.await.context("writer stopped before 50 writes")?;
    let plan = db.plan_migration().await.context("plan")?;
    ensure!(plan.tables.len() == 1 && plan.is_safe(), "{plan}");
    db.migrate(&plan).await.context("migrate")?;
    stop.store(true, Ordering::Release);
    let steps = writer.await??;
    ensure!(steps > 50, "{steps} writes");
    let repo = db.repo::<EvoIndexed>();
    let rows = repo.scan().all().await.context("rows")?;
    let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    let by_name = repo.find("by_name").all().await.context("by_name")?;
    let indexed: Vec<&str> = by_name.iter().map(|r| r.name.as_str()).collect();
    ensure!(
        indexed == names,
        "by_name holds {} entries for {} rows",
        indexed.len(),
        names.len()
    );
    let mut big: Vec<i64> = rows.iter().filter(|r| r.qty >= 10).map(|r| r.id).collect();
    big.sort_unstable();
    let mut in_big: Vec<i64> = repo.find("big").all().await?.iter().map(|r| r.id).collect();
    in_big.sort_unstable();
    ensure!(
        in_big == big,
        "big holds {} entries for {} rows with qty >= 10",
        in_big.len(),
        big.len()
    );
    Ok(())
}

/// Case: a unique index that stored rows violate fails with `AlreadyExists` naming
/// the value, and is not left behind: the plan still lists it.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn unique_violation_names_values(cx: &mut Ctx) -> anyhow::Result<()> {
    let old = open_v1(cx, 10).await?;
    let mut twin = v1(11);
    twin.name = "n4".into();
    old.repo::<EvoV1>().insert(&twin).await?;
    let db = v2_builder(cx).connect().await?;
    let plan = db.plan_migration().await?;
    let err = db.migrate(&plan).await.expect_err("duplicate names");
    ensure!(err.kind() == ErrorKind::AlreadyExists, "{err}");
    ensure!(err.to_string().contains("n4"), "names the value: {err}");
    ensure!(
        err.to_string().contains("(4)") && err.to_string().contains("(11)"),
        "names both rows' primary keys: {err}"
    );
    let again = db.plan_migration().await?;
    ensure!(
        again.tables[0]
            .steps
            .iter()
            .any(|s| matches!(s, SchemaStep::AddIndex { index } if index.name == "by_name")),
        "{again}"
    );
    Ok(())
}

/// Case: renames declared with `renamed_from` keep every row and index, applied at
/// connect by `auto_migrate`.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn renames_keep_rows(cx: &mut Ctx) -> anyhow::Result<()> {
    open_v1(cx, 12).await?;
    let db = Db::with_engine(cx.db.engine().clone())
        .table::<EvoRenamed>()
        .auto_migrate(true)
        .connect()
        .await?;
    let repo = db.repo::<EvoRenamed>();
    ensure!(repo.count().await? == 12);
    let got = repo.get(3i64).await?.context("row 3")?;
    ensure!(got.title == "n3" && got.qty == 3, "{got:?}");
    let q: Vec<i64> = repo
        .find("by_qty")
        .eq(5)
        .all()
        .await?
        .iter()
        .map(|e| e.id)
        .collect();
    ensure!(q == vec![5], "{q:?}");
    let names = stored_names(&db).await?;
    ensure!(
        names.contains(&"evo_renamed".to_owned()) && !names.contains(&"evo".to_owned()),
        "{names:?}"
    );
    Ok(())
}

/// Case: a type change is refused unless allowed; allowed, the table is copied with
/// each value converted (`3` → `"3"`), indexes included, and the step is in the
/// history; a value that does not convert fails naming its row, and the table is
/// left as it was.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn destructive_steps_need_allowing(cx: &mut Ctx) -> anyhow::Result<()> {
    let old = open_v1(cx, 1_500).await?;
    let err = Db::with_engine(cx.db.engine().clone())
        .table::<EvoRetyped>()
        .auto_migrate(true)
        .connect()
        .await
        .expect_err("a type change");
    ensure!(err.kind() == ErrorKind::InvalidInput, "{err}");
    ensure!(err.to_string().contains("change column qty"), "{err}");
    ensure!(old.repo::<EvoV1>().count().await? == 1_500, "untouched");
    // A conversion that fails: the table stays as it was, no copy is left.
    let err = Db::with_engine(cx.db.engine().clone())
        .table::<EvoNameInt>()
        .auto_migrate(true)
        .allow_destructive(true)
        .connect()
        .await
        .expect_err("names are not integers");
    ensure!(err.kind() == ErrorKind::InvalidInput, "{err}");
    ensure!(err.to_string().contains("row (1)"), "names the row: {err}");
    ensure!(old.repo::<EvoV1>().count().await? == 1_500, "untouched");
    let db = Db::with_engine(cx.db.engine().clone())
        .table::<EvoRetyped>()
        .auto_migrate(true)
        .allow_destructive(true)
        .connect()
        .await?;
    let repo = db.repo::<EvoRetyped>();
    ensure!(repo.count().await? == 1_500);
    let got = repo.get(3i64).await?.context("row 3")?;
    ensure!(got.qty == "3" && got.name == "n3", "{got:?}");
    let q: Vec<i64> = repo
        .find("by_qty")
        .eq("13")
        .all()
        .await?
        .iter()
        .map(|e| e.id)
        .collect();
    ensure!(q.len() == 75 && q.iter().all(|id| id % 20 == 13), "{q:?}");
    let cat = db.catalog().await?;
    let names: Vec<&str> = cat.iter().map(|c| c.schema.name.as_str()).collect();
    ensure!(!names.contains(&"evo__new"), "no copy left: {names:?}");
    let entry = cat.iter().find(|c| c.schema.name == "evo").context("evo")?;
    ensure!(
        entry
            .history
            .iter()
            .any(|h| h.description.contains("change column qty")),
        "{:?}",
        entry.history
    );
    Ok(())
}

/// Case: a destructive copy cut short (here by a value that does not convert, in
/// its third chunk of 1,000 rows) keeps the chunks it committed; once the value is
/// fixed the next run resumes after them (a row changed in the copy meanwhile keeps
/// its change, which a copy started over would undo) and finishes the change.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn destructive_copy_resumes(cx: &mut Ctx) -> anyhow::Result<()> {
    let old = Db::with_engine(cx.db.engine().clone())
        .table::<EvoV1>()
        .connect()
        .await?;
    let rows: Vec<EvoV1> = (1..=2_500)
        .map(|id| EvoV1 {
            name: if id == 2_400 {
                "oops".into()
            } else {
                id.to_string()
            },
            ..v1(id)
        })
        .collect();
    old.repo::<EvoV1>().insert_many(&rows).await?;
    let db = Db::with_engine(cx.db.engine().clone())
        .table::<EvoNameInt>()
        .allow_destructive(true)
        .connect()
        .await?;
    let plan = db.plan_migration().await?;
    let err = db
        .migrate(&plan)
        .await
        .expect_err("row 2400 does not convert");
    ensure!(err.kind() == ErrorKind::InvalidInput, "{err}");
    ensure!(
        err.to_string().contains("row (2400)"),
        "names the row: {err}"
    );
    ensure!(
        old.repo::<EvoV1>().count().await? == 2_500,
        "source untouched"
    );
    let copy = Db::with_engine(cx.db.engine().clone())
        .table::<EvoNameIntCopy>()
        .connect()
        .await?;
    let copied = copy.repo::<EvoNameIntCopy>().count().await?;
    ensure!(copied == 2_000, "two chunks kept, {copied} rows");
    copy.repo::<EvoNameIntCopy>()
        .update(&EvoNameIntCopy {
            id: 1,
            name: 1,
            qty: 999,
        })
        .await?;
    old.repo::<EvoV1>()
        .update(&EvoV1 {
            name: "2400".into(),
            ..v1(2_400)
        })
        .await?;
    let plan = db.plan_migration().await?;
    db.migrate(&plan).await?;
    let repo = db.repo::<EvoNameInt>();
    ensure!(repo.count().await? == 2_500, "every row");
    let first = repo.get(1i64).await?.context("row 1")?;
    ensure!(first.qty == 999, "resumed after the kept chunks: {first:?}");
    let fixed = repo.get(2_400i64).await?.context("row 2400")?;
    ensure!(fixed.name == 2_400, "{fixed:?}");
    let names = stored_names(&db).await?;
    ensure!(
        !names.iter().any(|n| n == "evo__new"),
        "no copy left: {names:?}"
    );
    Ok(())
}
