//! The types beyond the primitives — UUID, timestamps, dates, decimals, JSON and
//! `DbEnum` — on every engine: round trip, NULL, order, ranges on an index, equality
//! on a unique index, bad input and bad stored data as typed errors.

use crate::Ctx;
use crate::model::{Prefs, Status, Typed};
use anyhow::ensure;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use datalayer::{ErrorKind, Executor, Op, Table, Value, WriteMode};
use rust_decimal::Decimal;
use uuid::Uuid;

fn dec(s: &str) -> Decimal {
    s.parse().expect("a decimal literal")
}

fn at(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).expect("in range")
}

/// Row `i` of `n`: every orderable value is a shuffled function of `i` (including
/// negative decimals and timestamps before 1970), so that key order differs from
/// insertion order.
fn typed(i: i64) -> Typed {
    let k = (i * 7919) % 101 - 50; // a permutation of -50..=50 for i in 0..101
    Typed {
        id: i,
        uid: Uuid::from_u128(((k + 50) as u128) << 120 | i as u128),
        at: at(k * 86_400_000_000 + 123_456),
        day: NaiveDate::from_ymd_opt(2000, 1, 1).expect("date")
            + chrono::Days::new((k + 50) as u64),
        amount: Decimal::new(k * 1_000 + 5, 2) * if k % 3 == 0 { dec("0.001") } else { dec("1") },
        doc: serde_json::json!({"z": i, "a": [k, "x"], "nested": {"b": true, "a": null}}),
        prefs: Prefs {
            theme: format!("theme{k}"),
            size: k as i32,
            tags: vec!["é".into(), "\"quoted\"".into()],
        },
        status: [Status::Draft, Status::Live, Status::Archived][(i % 3) as usize],
        maybe_uid: (i % 2 == 0).then(|| Uuid::from_u128(i as u128)),
        maybe_at: (i % 2 == 1).then(|| at(-k * 1_000_000)),
        maybe_day: (i % 2 == 0).then(|| NaiveDate::from_ymd_opt(1969, 12, 31).expect("date")),
        maybe_amount: (i % 2 == 1).then(|| Decimal::new(-(i + 1), 28)),
        maybe_doc: (i % 2 == 0).then(|| serde_json::json!("just a string")),
        maybe_prefs: None,
        maybe_status: (i % 2 == 1).then_some(Status::Live),
        stamp: (i % 2 == 0).then(|| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(k) * 1_000_000_000 + 999)
                .expect("in range")
        }),
    }
}

/// What a stored `t` reads back as: sub-microsecond digits dropped.
fn as_stored(mut t: Typed) -> Typed {
    t.stamp = t.stamp.map(|s| {
        s.replace_nanosecond(s.nanosecond() / 1_000 * 1_000)
            .expect("valid")
    });
    t
}

/// What a stored `typed(i)` reads back as.
fn stored(i: i64) -> Typed {
    as_stored(typed(i))
}

const N: i64 = 24;

async fn load(cx: &Ctx) -> anyhow::Result<()> {
    let rows: Vec<Typed> = (0..N).map(typed).collect();
    cx.db.repo::<Typed>().insert_many(&rows).await?;
    Ok(())
}

/// Case: every type round-trips, NULL included, at its extremes (years 1 and 9999,
/// 28 decimal places, 96-bit mantissas, nested JSON); a decimal reads back normalized
/// (`1.50` as `1.5`, equal under `Decimal`'s `Eq`); JSON object keys come back in one
/// canonical order on every engine.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn round_trip_and_null(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<Typed>();
    load(cx).await?;
    for i in 0..N {
        let got = repo.get(i).await?.expect("inserted");
        ensure!(got == stored(i), "row {i}: {got:?}\n!= {:?}", stored(i));
    }
    let mut edge = typed(100);
    edge.at = Utc
        .with_ymd_and_hms(1, 1, 1, 0, 0, 0)
        .single()
        .expect("year 1");
    edge.maybe_at = Some(at(datalayer::value::MAX_TIMESTAMP_MICROS));
    edge.day = NaiveDate::from_ymd_opt(9999, 12, 31).expect("date");
    edge.maybe_day = NaiveDate::from_ymd_opt(1, 1, 1);
    edge.amount = Decimal::from_i128_with_scale((1i128 << 96) - 1, 0);
    edge.maybe_amount = Some(Decimal::from_i128_with_scale(-((1i128 << 96) - 1), 28));
    edge.doc = serde_json::json!({"b": [1, 2.5, -3e-7, {"y": null, "x": "\u{1F600}"}], "a": {}});
    edge.maybe_doc = Some(serde_json::json!(null));
    edge.maybe_prefs = Some(Prefs {
        theme: String::new(),
        size: i32::MIN,
        tags: vec![],
    });
    edge.amount = dec("1.50");
    repo.insert(&edge).await?;
    let got = repo.get(100i64).await?.expect("inserted");
    let edge = as_stored(edge);
    ensure!(got == edge, "{got:?}\n!= {edge:?}");
    ensure!(
        got.amount.to_string() == "1.5",
        "normalized: {}",
        got.amount
    );
    let row = got.to_row();
    ensure!(
        row[5] == Value::Json(r#"{"a":{},"b":[1,2.5,-3e-7,{"x":"😀","y":null}]}"#.into()),
        "canonical JSON: {}",
        row[5]
    );
    // JSON `null` in a nullable JSON column is a document, not SQL NULL.
    ensure!(
        got.maybe_doc == Some(serde_json::Value::Null),
        "{:?}",
        got.maybe_doc
    );
    Ok(())
}

/// Case: `order_by`, range filters and keyset pages on UUID, timestamp, date and
/// decimal columns give the values' own order on every engine (negative before
/// positive, earlier before later, `0.05 < 0.5 < 5`), NULL first.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn order_and_range(cx: &mut Ctx) -> anyhow::Result<()> {
    load(cx).await?;
    let repo = cx.db.repo::<Typed>();
    let all: Vec<Typed> = (0..N).map(stored).collect();
    let ids = |v: &[Typed]| v.iter().map(|t| t.id).collect::<Vec<_>>();
    // Timestamps: a half-open range through the query DSL and an index range.
    let (lo, hi) = (at(-20 * 86_400_000_000), at(20 * 86_400_000_000));
    let mut want: Vec<&Typed> = all.iter().filter(|t| t.at >= lo && t.at < hi).collect();
    want.sort_by_key(|t| (t.at, t.id));
    let got = Typed::at_between(&cx.db, lo, hi).await?;
    ensure!(
        ids(&got) == want.iter().map(|t| t.id).collect::<Vec<_>>(),
        "at_between"
    );
    let got = repo.find("by_at").range(lo..hi).all().await?;
    ensure!(
        ids(&got) == want.iter().map(|t| t.id).collect::<Vec<_>>(),
        "by_at range"
    );
    // Decimals, descending with a limit, and keyset pages over the index.
    let mut want: Vec<&Typed> = all.iter().filter(|t| t.amount > dec("-0.2")).collect();
    want.sort_by(|a, b| b.amount.cmp(&a.amount).then(a.id.cmp(&b.id)));
    want.truncate(7);
    let got = Typed::amount_above(&cx.db, dec("-0.2"), 7).await?;
    ensure!(
        ids(&got) == want.iter().map(|t| t.id).collect::<Vec<_>>(),
        "amount_above: {:?}",
        got.iter().map(|t| t.amount.to_string()).collect::<Vec<_>>()
    );
    let mut by_amount: Vec<&Typed> = all.iter().collect();
    by_amount.sort_by_key(|t| (t.amount, t.id));
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let mut f = repo.find("by_amount").limit(5);
        if let Some(c) = &cursor {
            f = f.after(c);
        }
        let page = f.page().await?;
        paged.extend(page.rows);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ensure!(
        ids(&paged) == by_amount.iter().map(|t| t.id).collect::<Vec<_>>(),
        "keyset pages by amount"
    );
    // Dates and UUIDs (byte order) over their indexes.
    let mut want: Vec<&Typed> = all.iter().collect();
    want.sort_by_key(|t| (t.day, t.id));
    let cut = NaiveDate::from_ymd_opt(2000, 1, 20).expect("date");
    let got = Typed::days_before(&cx.db, cut).await?;
    let want_before: Vec<i64> = want.iter().filter(|t| t.day < cut).map(|t| t.id).collect();
    ensure!(ids(&got) == want_before, "days_before");
    let got = repo.find("by_day").all().await?;
    ensure!(
        ids(&got) == want.iter().map(|t| t.id).collect::<Vec<_>>(),
        "by_day scan"
    );
    let mut want: Vec<&Typed> = all.iter().collect();
    want.sort_by_key(|t| t.uid);
    let got = repo.find("by_uid").reverse().all().await?;
    ensure!(
        ids(&got) == want.iter().rev().map(|t| t.id).collect::<Vec<_>>(),
        "by_uid reverse scan"
    );
    // NULL sorts first on a nullable timestamp index.
    let got = repo.find("by_maybe_at").all().await?;
    let nulls = all.iter().filter(|t| t.maybe_at.is_none()).count();
    ensure!(
        got[..nulls].iter().all(|t| t.maybe_at.is_none()),
        "NULL first"
    );
    ensure!(
        got[nulls..]
            .windows(2)
            .all(|w| w[0].maybe_at <= w[1].maybe_at),
        "then ascending"
    );
    // A composite index over an enum (by name) and a decimal: an equality prefix.
    let got = repo.find("by_status_amount").eq(Status::Live).all().await?;
    let mut want: Vec<&Typed> = all.iter().filter(|t| t.status == Status::Live).collect();
    want.sort_by_key(|t| (t.amount, t.id));
    ensure!(
        ids(&got) == want.iter().map(|t| t.id).collect::<Vec<_>>(),
        "status prefix"
    );
    // `time` instants compare as timestamps.
    let s = time::OffsetDateTime::from_unix_timestamp(0).expect("epoch");
    let got = Typed::stamped_after(&cx.db, s).await?;
    let want: Vec<i64> = all
        .iter()
        .filter(|t| t.stamp > Some(s))
        .map(|t| t.id)
        .collect();
    ensure!(ids(&got) == want, "stamped_after");
    Ok(())
}

/// Case: equality on a unique UUID index finds the row and refuses a duplicate;
/// equality on an enum column; an update assigns a decimal, and an equal decimal in
/// another scale (`2.50` vs `2.5`) matches it.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn unique_and_equality(cx: &mut Ctx) -> anyhow::Result<()> {
    load(cx).await?;
    let repo = cx.db.repo::<Typed>();
    let t5 = stored(5);
    let got = Typed::by_uid(&cx.db, t5.uid).await?;
    ensure!(got.as_ref() == Some(&t5), "{got:?}");
    ensure!(
        Typed::by_uid(&cx.db, Uuid::from_u128(u128::MAX))
            .await?
            .is_none()
    );
    let mut dup = typed(200);
    dup.uid = t5.uid;
    let err = repo.insert(&dup).await.expect_err("duplicate uid");
    ensure!(err.kind() == ErrorKind::AlreadyExists, "{err}");
    let live: Vec<i64> = Typed::with_status(&cx.db, Status::Live)
        .await?
        .iter()
        .map(|t| t.id)
        .collect();
    ensure!(
        live == (0..N).filter(|i| i % 3 == 1).collect::<Vec<_>>(),
        "{live:?}"
    );
    ensure!(Typed::set_amount(&cx.db, 5, dec("2.50")).await? == 1);
    let got = repo.get(5i64).await?.expect("there");
    ensure!(got.amount == dec("2.5"), "{}", got.amount);
    let found = repo.find("by_amount").eq(dec("2.5000")).all().await?;
    ensure!(
        found.iter().map(|t| t.id).collect::<Vec<_>>() == vec![5],
        "decimal equality"
    );
    Ok(())
}

/// Case: bad input is a typed error and writes nothing — a timestamp or date outside
/// the years 1 to 9999, JSON text that does not parse — and bad stored data reads
/// as `InvalidInput`, never a panic: an enum name that is no variant, a JSON document
/// that does not fit the field's struct.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn bad_input_and_stored_data(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<Typed>();
    let mut late = typed(1);
    late.at = Utc
        .with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
        .single()
        .expect("chrono");
    let err = repo.insert(&late).await.expect_err("year 10000");
    ensure!(err.kind() == ErrorKind::InvalidInput, "{err}");
    let mut early = typed(1);
    early.maybe_day = NaiveDate::from_ymd_opt(0, 12, 31);
    let err = repo.insert(&early).await.expect_err("year 0");
    ensure!(err.kind() == ErrorKind::InvalidInput, "{err}");
    let mut row = typed(1).to_row();
    row[5] = Value::Json("{not json".into());
    let op = Op::Insert {
        table: Typed::schema(),
        rows: vec![row],
        mode: WriteMode::Insert,
    };
    let err = cx.db.run(op).await.expect_err("bad JSON");
    ensure!(err.kind() == ErrorKind::InvalidInput, "{err}");
    ensure!(repo.count().await? == 0, "nothing written");
    // Stored data the Rust types refuse, written through the untyped path.
    let status = Typed::schema().column_index("status").expect("column");
    let prefs = Typed::schema().column_index("prefs").expect("column");
    let mut a = typed(1).to_row();
    a[status] = Value::String("Deleted".into());
    let mut b = typed(2).to_row();
    b[prefs] = Value::json(&serde_json::json!({"theme": 7}));
    let op = Op::Insert {
        table: Typed::schema(),
        rows: vec![a, b],
        mode: WriteMode::Insert,
    };
    cx.db.run(op).await?;
    let err = repo.get(1i64).await.expect_err("unknown variant");
    ensure!(err.kind() == ErrorKind::InvalidInput, "{err}");
    ensure!(
        err.to_string().contains("Deleted"),
        "names the stored value: {err}"
    );
    let err = repo.get(2i64).await.expect_err("JSON of another shape");
    ensure!(err.kind() == ErrorKind::InvalidInput, "{err}");
    Ok(())
}

/// Case: the change feed carries typed values as they were written.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn change_feed_carries_types(cx: &mut Ctx) -> anyhow::Result<()> {
    cx.db.enable_changes("typed").await?;
    let t = typed(3);
    cx.db.repo::<Typed>().insert(&t).await?;
    let changes = cx.db.read_changes("typed", 0, 10).await?;
    ensure!(changes.len() == 1, "{changes:?}");
    let want = stored(3).to_row();
    for (c, v) in Typed::schema().columns.iter().zip(&want) {
        ensure!(
            changes[0].get(&c.name) == Some(v),
            "column {}: {:?} != {v:?}",
            c.name,
            changes[0].get(&c.name)
        );
    }
    Ok(())
}
