//! The tables and queries every case runs against.

use datalayer::{DbBuilder, Table, query_group};

/// A team (the parent side of `User::team_id`).
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "teams")]
pub struct Team {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// Name.
    pub name: String,
}

/// The main test table: every index kind and a nullable foreign key.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "users")]
#[index(name = "by_email", fields(email), unique)]
#[index(name = "by_team_age", fields(team_id, age))]
#[index(name = "active_by_age", fields(age), when = |u| u.active == true)]
pub struct User {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// Display name (stored as column `user_name`).
    #[column(name = "user_name")]
    pub name: String,
    /// Unique when present.
    pub email: Option<String>,
    /// Age in years.
    pub age: i32,
    /// Whether the account is active (decides membership of `active_by_age`).
    pub active: bool,
    /// The team, if any.
    #[belongs_to(Team)]
    pub team_id: Option<i64>,
    /// A float for arithmetic updates.
    pub score: f64,
}

impl User {
    /// A user with predictable fields derived from `id`.
    pub fn sample(id: i64) -> User {
        User {
            id,
            name: format!("user{id:03}"),
            email: Some(format!("u{id}@example.com")),
            age: 20 + (id % 30) as i32,
            active: id % 2 == 0,
            team_id: Some(id % 3),
            score: id as f64 * 1.5,
        }
    }
}

#[query_group]
impl User {
    fn by_id(id: i64) -> User {
        Self::filter(|u| u.id == id)
    }
    fn find_id(id: i64) -> Option<User> {
        Self::filter(|u| u.id == id)
    }
    fn by_email(email: &str) -> Option<User> {
        Self::filter(|u| u.email == Some(email))
    }
    fn in_team(team: i64) -> Vec<User> {
        Self::filter(|u| u.team_id == Some(team))
            .order_by(|u| u.age)
            .order_by(|u| u.id)
    }
    fn older_than(age: i32, n: i64) -> Vec<User> {
        Self::filter(|u| u.age > age)
            .order_by(|u| u.age.desc())
            .order_by(|u| u.id.desc())
            .limit(n)
    }
    fn active_between(lo: i32, hi: i32) -> Vec<User> {
        Self::filter(|u| u.active == true && u.age >= lo && u.age <= hi)
            .order_by(|u| u.age)
            .order_by(|u| u.id)
    }
    fn name_prefix(p: &str) -> Vec<User> {
        Self::filter(|u| u.name.starts_with(p)).order_by(|u| u.id)
    }
    fn without_email() -> Vec<User> {
        Self::filter(|u| u.email.is_none()).order_by(|u| u.id)
    }
    fn with_email_count() -> u64 {
        Self::filter(|u| u.email.is_some()).count()
    }
    fn names_in_team(team: i64) -> Vec<String> {
        Self::filter(|u| u.team_id == Some(team))
            .order_by(|u| u.name)
            .select(|u| u.name)
    }
    fn count_active() -> u64 {
        Self::filter(|u| u.active == true).count()
    }
    fn count_all() -> u64 {
        Self::all().count()
    }
    fn age_of(id: i64) -> i32 {
        Self::filter(|u| u.id == id).select(|u| u.age)
    }
    fn first_n(n: i64) -> Vec<User> {
        Self::all().order_by(|u| u.id).limit(n)
    }
    fn top3() -> Vec<User> {
        Self::all().order_by(|u| u.score.desc()).limit(3)
    }
    fn birthday(id: i64, years: i32) -> u64 {
        Self::filter(|u| u.id == id).update(|u| u.age = u.age + years)
    }
    fn penalize(team: i64, by: f64) -> u64 {
        Self::filter(|u| u.team_id == Some(team)).update(|u| u.score = u.score - by)
    }
    fn deactivate_younger(age: i32) -> u64 {
        Self::filter(|u| u.age < age).update(|u| u.active = false)
    }
    fn set_email(id: i64, email: &str) -> u64 {
        Self::filter(|u| u.id == id).update(|u| u.email = Some(email))
    }
    fn clear_email(id: i64) -> u64 {
        Self::filter(|u| u.id == id).update(|u| u.email = None)
    }
    fn delete_team(team: i64) -> u64 {
        Self::filter(|u| u.team_id == Some(team)).delete()
    }
    fn outside_active(a: i32, b: i32) -> Vec<User> {
        Self::filter(|u| (u.age < a || u.age > b) && !(u.active == false)).order_by(|u| u.id)
    }
    fn not_age(age: i32) -> u64 {
        Self::filter(|u| u.age != age).count()
    }
}

/// A composite primary key.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "memberships")]
#[index(name = "by_role", fields(role, since))]
pub struct Membership {
    /// First key column.
    #[pk]
    pub org: String,
    /// Second key column.
    #[pk]
    pub user_id: i64,
    /// Role name.
    pub role: String,
    /// Joined at, seconds.
    pub since: i64,
}

#[query_group]
impl Membership {
    fn of_org(org: &str) -> Vec<Membership> {
        Self::filter(|m| m.org == org).order_by(|m| m.user_id)
    }
    fn one(org: &str, user_id: i64) -> Option<Membership> {
        Self::filter(|m| m.org == org && m.user_id == user_id)
    }
}

/// The target of an id-list relationship.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "songs")]
pub struct Song {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// Title.
    pub title: String,
}

/// An id-list relationship: `song_ids` is stored, `songs` is filled on request.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "playlists")]
pub struct Playlist {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// Title.
    pub title: String,
    /// Ids of the songs, in play order.
    pub song_ids: Vec<i64>,
    /// Filled by `Repo::load_ids`.
    #[relation(ids = song_ids)]
    pub songs: Vec<Song>,
}

/// Every column type, nullable and not.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "kinds")]
pub struct Kinds {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// bool.
    pub b: bool,
    /// i16.
    pub small: i16,
    /// i32.
    pub medium: i32,
    /// f32.
    pub single: f32,
    /// f64.
    pub double: f64,
    /// String.
    pub text: String,
    /// Bytes.
    pub bytes: Vec<u8>,
    /// Nullable i64.
    pub maybe_int: Option<i64>,
    /// Nullable String.
    pub maybe_text: Option<String>,
    /// Nullable bytes.
    pub maybe_bytes: Option<Vec<u8>>,
}

#[query_group]
impl Kinds {
    fn small_below(v: i16) -> Vec<Kinds> {
        Self::filter(|k| k.small < v).order_by(|k| k.id)
    }
    fn by_text(t: &str) -> Vec<Kinds> {
        Self::filter(|k| k.text == t).order_by(|k| k.id)
    }
}

/// A document under optimistic locking (`#[version]`).
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "docs")]
#[index(name = "by_title", fields(title), unique)]
pub struct Doc {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// Title (unique).
    pub title: String,
    /// Body.
    pub body: String,
    /// The version every update checks and increments.
    #[version]
    pub version: i64,
}

#[query_group]
impl Doc {
    fn retitle(id: i64, title: &str) -> u64 {
        Self::filter(|d| d.id == id).update(|d| d.title = title)
    }
    fn version_of(id: i64) -> i64 {
        Self::filter(|d| d.id == id).select(|d| d.version)
    }
}

/// Registers every conformance table and query group.
pub fn register(b: DbBuilder) -> DbBuilder {
    b.table::<Team>()
        .table::<User>()
        .table::<Membership>()
        .table::<Song>()
        .table::<Playlist>()
        .table::<Kinds>()
        .table::<Doc>()
        .queries::<User>()
        .queries::<Membership>()
        .queries::<Kinds>()
        .queries::<Doc>()
}
