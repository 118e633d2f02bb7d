//! The tables and queries every case runs against.

use datalayer::{DbBuilder, DbEnum, Table, query_group};
use serde::{Deserialize, Serialize};

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

/// An order state, stored as its variant name (`#[derive(DbEnum)]`).
#[derive(DbEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not yet published.
    Draft,
    /// Published.
    Live,
    /// Withdrawn.
    Archived,
}

/// A struct stored as a JSON document (`#[column(json)]`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Prefs {
    /// A theme name.
    pub theme: String,
    /// A size.
    pub size: i32,
    /// Tags, in order.
    pub tags: Vec<String>,
}

/// The types beyond the primitives: UUID, timestamps, dates, decimals, JSON, enums;
/// every orderable one indexed.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "typed")]
#[index(name = "by_uid", fields(uid), unique)]
#[index(name = "by_at", fields(at))]
#[index(name = "by_day", fields(day))]
#[index(name = "by_amount", fields(amount))]
#[index(name = "by_status_amount", fields(status, amount))]
#[index(name = "by_maybe_at", fields(maybe_at))]
pub struct Typed {
    /// Primary key.
    #[pk]
    pub id: i64,
    /// Unique.
    pub uid: uuid::Uuid,
    /// An instant (µs precision).
    pub at: chrono::DateTime<chrono::Utc>,
    /// A calendar date.
    pub day: chrono::NaiveDate,
    /// An exact decimal.
    pub amount: rust_decimal::Decimal,
    /// A JSON document.
    pub doc: serde_json::Value,
    /// A struct as JSON.
    #[column(json)]
    pub prefs: Prefs,
    /// An enum as its variant name.
    pub status: Status,
    /// Nullable UUID.
    pub maybe_uid: Option<uuid::Uuid>,
    /// Nullable instant.
    pub maybe_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Nullable date.
    pub maybe_day: Option<chrono::NaiveDate>,
    /// Nullable decimal.
    pub maybe_amount: Option<rust_decimal::Decimal>,
    /// Nullable JSON document.
    pub maybe_doc: Option<serde_json::Value>,
    /// Nullable struct as JSON.
    #[column(json)]
    pub maybe_prefs: Option<Prefs>,
    /// Nullable enum.
    pub maybe_status: Option<Status>,
    /// A `time` instant (nullable).
    pub stamp: Option<time::OffsetDateTime>,
}

#[query_group]
impl Typed {
    fn at_between(
        lo: chrono::DateTime<chrono::Utc>,
        hi: chrono::DateTime<chrono::Utc>,
    ) -> Vec<Typed> {
        Self::filter(|t| t.at >= lo && t.at < hi)
            .order_by(|t| t.at)
            .order_by(|t| t.id)
    }
    fn amount_above(min: rust_decimal::Decimal, n: i64) -> Vec<Typed> {
        Self::filter(|t| t.amount > min)
            .order_by(|t| t.amount.desc())
            .order_by(|t| t.id)
            .limit(n)
    }
    fn by_uid(u: uuid::Uuid) -> Option<Typed> {
        Self::filter(|t| t.uid == u)
    }
    fn with_status(s: Status) -> Vec<Typed> {
        Self::filter(|t| t.status == s).order_by(|t| t.id)
    }
    fn days_before(d: chrono::NaiveDate) -> Vec<Typed> {
        Self::filter(|t| t.day < d)
            .order_by(|t| t.day)
            .order_by(|t| t.id)
    }
    fn set_amount(id: i64, a: rust_decimal::Decimal) -> u64 {
        Self::filter(|t| t.id == id).update(|t| t.amount = a)
    }
    fn stamped_after(s: time::OffsetDateTime) -> Vec<Typed> {
        Self::filter(|t| t.stamp > Some(s)).order_by(|t| t.id)
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
        .table::<Typed>()
        .queries::<User>()
        .queries::<Membership>()
        .queries::<Kinds>()
        .queries::<Doc>()
        .queries::<Typed>()
}
