//! Keyset scans: limits, cursors, reverse, bounds, streaming.

use super::seed_users;
use crate::Ctx;
use crate::model::{Membership, User};
use datalayer::Cursor;
use futures::TryStreamExt;
use std::collections::HashSet;

/// Case: Keyset pages cover everything once.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn keyset_pages_cover_everything_once(cx: &mut Ctx) -> anyhow::Result<()> {
    let all = seed_users(&cx.db, 53).await?;
    let repo = cx.db.repo::<User>();
    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    let mut pages = 0;
    loop {
        let mut f = repo.find("by_team_age").limit(10);
        if let Some(c) = &cursor {
            f = f.after(c);
        }
        let page = f.page().await?;
        pages += 1;
        seen.extend(page.rows.iter().map(|u| u.id));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 20, "pagination does not end");
    }
    assert_eq!(seen.len(), all.len(), "every row once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), all.len());
    let mut want = all.clone();
    want.sort_by_key(|u| (u.team_id, u.age, u.id));
    assert_eq!(seen, want.iter().map(|u| u.id).collect::<Vec<_>>());
    Ok(())
}

/// Case: Reverse pages.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn reverse_pages(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 25).await?;
    let repo = cx.db.repo::<User>();
    let p1 = repo.scan().reverse().limit(10).page().await?;
    assert_eq!(
        p1.rows.iter().map(|u| u.id).collect::<Vec<_>>(),
        (16..=25).rev().collect::<Vec<_>>()
    );
    let p2 = repo
        .scan()
        .reverse()
        .limit(10)
        .after(p1.next.as_ref().expect("more"))
        .page()
        .await?;
    assert_eq!(p2.rows.first().map(|u| u.id), Some(15));
    let p3 = repo
        .scan()
        .reverse()
        .limit(10)
        .after(p2.next.as_ref().expect("more"))
        .page()
        .await?;
    assert_eq!(
        p3.rows.iter().map(|u| u.id).collect::<Vec<_>>(),
        (1..=5).rev().collect::<Vec<_>>()
    );
    assert!(p3.next.is_none());
    // Reverse over a secondary index with an equality prefix.
    let rows = repo
        .find("by_team_age")
        .eq(Some(1i64))
        .reverse()
        .all()
        .await?;
    let mut want: Vec<User> = (1..=25)
        .map(User::sample)
        .filter(|u| u.team_id == Some(1))
        .collect();
    want.sort_by_key(|u| std::cmp::Reverse((u.age, u.id)));
    assert_eq!(rows, want);
    Ok(())
}

/// Case: Range bounds.
#[allow(clippy::reversed_empty_ranges)] // an empty range is part of the case
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn range_bounds(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 20).await?;
    let repo = cx.db.repo::<User>();
    let ids = |v: Vec<User>| v.into_iter().map(|u| u.id).collect::<Vec<_>>();
    assert_eq!(ids(repo.scan().range(5i64..8).all().await?), vec![5, 6, 7]);
    assert_eq!(
        ids(repo.scan().range(5i64..=8).all().await?),
        vec![5, 6, 7, 8]
    );
    assert_eq!(
        ids(repo.scan().range(18i64..).all().await?),
        vec![18, 19, 20]
    );
    assert_eq!(ids(repo.scan().range(..3i64).all().await?), vec![1, 2]);
    assert_eq!(
        ids(repo.scan().range(8i64..5).all().await?),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(repo.scan().range(5i64..=8).reverse().limit(2).all().await?),
        vec![8, 7]
    );
    Ok(())
}

/// Case: Primary key scan and composite prefix.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn primary_key_scan_and_composite_prefix(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<Membership>();
    let mut rows = Vec::new();
    for org in ["a", "b", "c"] {
        for u in 1..=4 {
            rows.push(Membership {
                org: org.into(),
                user_id: u,
                role: if u % 2 == 0 {
                    "dev".into()
                } else {
                    "ops".into()
                },
                since: u * 10,
            });
        }
    }
    repo.insert_many(&rows).await?;
    let b = repo.scan().eq("b").all().await?;
    assert_eq!(b, rows[4..8].to_vec());
    let b_mid = repo.scan().eq("b").range(2i64..=3).all().await?;
    assert_eq!(b_mid, rows[5..7].to_vec());
    let devs = repo
        .find("by_role")
        .eq("dev")
        .range(20i64..=40)
        .all()
        .await?;
    assert_eq!(devs.len(), 6);
    assert!(
        devs.iter()
            .all(|m| m.role == "dev" && (20..=40).contains(&m.since))
    );
    Ok(())
}

/// Case: Cursor with null index values.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn cursor_with_null_index_values(cx: &mut Ctx) -> anyhow::Result<()> {
    let repo = cx.db.repo::<User>();
    let mut all = Vec::new();
    for id in 1..=9 {
        let mut u = User::sample(id);
        if id % 3 == 0 {
            u.team_id = None;
        }
        all.push(u);
    }
    repo.insert_many(&all).await?;
    let mut seen = Vec::new();
    let mut page = repo.find("by_team_age").limit(2).page().await?;
    loop {
        seen.extend(page.rows.iter().map(|u| u.id));
        let Some(c) = page.next else { break };
        page = repo.find("by_team_age").limit(2).after(&c).page().await?;
    }
    let mut want = all.clone();
    want.sort_by_key(|u| (u.team_id, u.age, u.id)); // None sorts first
    assert_eq!(seen, want.iter().map(|u| u.id).collect::<Vec<_>>());
    // A non-NULL upper bound excludes NULLs (as `team_id <= 1` does in SQL); an
    // unbounded scan and an equality on NULL include them.
    let upto1 = repo.find("by_team_age").range(..=1i64).all().await?;
    let mut want1: Vec<&User> = all
        .iter()
        .filter(|u| u.team_id.is_some_and(|t| t <= 1))
        .collect();
    want1.sort_by_key(|u| (u.team_id, u.age, u.id));
    assert_eq!(upto1.iter().collect::<Vec<_>>(), want1);
    let nulls = repo.find("by_team_age").eq(None::<i64>).count().await?;
    assert_eq!(
        nulls,
        all.iter().filter(|u| u.team_id.is_none()).count() as u64
    );
    Ok(())
}

/// Case: Stream all rows.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn stream_all_rows(cx: &mut Ctx) -> anyhow::Result<()> {
    seed_users(&cx.db, 37).await?;
    let rows: Vec<User> = cx.db.repo::<User>().stream(8).try_collect().await?;
    assert_eq!(rows, (1..=37).map(User::sample).collect::<Vec<_>>());
    Ok(())
}
