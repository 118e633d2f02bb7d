//! Relationships, each loaded with one batched read.

use super::seed_users;
use crate::Ctx;
use crate::model::{Playlist, Song, Team, User};

/// Case: Belongs to batched.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn belongs_to_batched(cx: &mut Ctx) -> anyhow::Result<()> {
    let teams = vec![
        Team {
            id: 0,
            name: "zero".into(),
        },
        Team {
            id: 1,
            name: "one".into(),
        },
    ]; // no team 2
    cx.db.repo::<Team>().insert_many(&teams).await?;
    let mut users = seed_users(&cx.db, 6).await?;
    users[0].team_id = None;
    let before = cx.engine_calls();
    let parents = cx.db.repo::<User>().belongs_to::<Team>(&users).await?;
    assert_eq!(cx.engine_calls() - before, 1, "one batched read");
    for (u, p) in users.iter().zip(&parents) {
        let want = u.team_id.and_then(|t| teams.iter().find(|x| x.id == t));
        assert_eq!(p.as_ref(), want, "user {}", u.id);
    }
    Ok(())
}

/// Case: Has many batched.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn has_many_batched(cx: &mut Ctx) -> anyhow::Result<()> {
    let teams: Vec<Team> = (0..4)
        .map(|id| Team {
            id,
            name: format!("t{id}"),
        })
        .collect();
    cx.db.repo::<Team>().insert_many(&teams).await?;
    let users = seed_users(&cx.db, 20).await?;
    let before = cx.engine_calls();
    let children = cx.db.repo::<Team>().has_many::<User>(&teams).await?;
    assert_eq!(cx.engine_calls() - before, 1, "one batched read");
    for (t, kids) in teams.iter().zip(&children) {
        let mut want: Vec<&User> = users.iter().filter(|u| u.team_id == Some(t.id)).collect();
        want.sort_by_key(|u| (u.age, u.id));
        assert_eq!(kids.iter().collect::<Vec<_>>(), want, "team {}", t.id);
    }
    assert!(children[3].is_empty());
    Ok(())
}

/// Case: Id list.
///
/// # Errors
/// The first engine error, or the first expectation that does not hold.
pub async fn id_list(cx: &mut Ctx) -> anyhow::Result<()> {
    let songs: Vec<Song> = (1..=5)
        .map(|id| Song {
            id,
            title: format!("s{id}"),
        })
        .collect();
    cx.db.repo::<Song>().insert_many(&songs).await?;
    let lists = vec![
        Playlist {
            id: 1,
            title: "a".into(),
            song_ids: vec![3, 1, 3],
            songs: vec![],
        },
        Playlist {
            id: 2,
            title: "b".into(),
            song_ids: vec![99, 5],
            songs: vec![],
        },
        Playlist {
            id: 3,
            title: "c".into(),
            song_ids: vec![],
            songs: vec![],
        },
    ];
    cx.db.repo::<Playlist>().insert_many(&lists).await?;
    let mut loaded = cx.db.repo::<Playlist>().scan().all().await?;
    assert!(
        loaded.iter().all(|p| p.songs.is_empty()),
        "relations are filled on request only"
    );
    assert_eq!(loaded[0].song_ids, vec![3, 1, 3], "the id list round-trips");
    let before = cx.engine_calls();
    cx.db
        .repo::<Playlist>()
        .load_ids::<Song>(&mut loaded)
        .await?;
    assert_eq!(cx.engine_calls() - before, 1, "one batched read");
    let titles = |p: &Playlist| p.songs.iter().map(|s| s.title.clone()).collect::<Vec<_>>();
    assert_eq!(titles(&loaded[0]), vec!["s3", "s1", "s3"]);
    assert_eq!(titles(&loaded[1]), vec!["s5"], "missing ids are left out");
    assert!(loaded[2].songs.is_empty());
    Ok(())
}
