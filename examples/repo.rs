//! Application code written only against `Repo<User>`: the same functions run on any
//! engine, inside or outside a transaction.
//!
//! ```text
//! cargo run --example repo                      # etch in memory
//! cargo run --example repo -- sqlite::memory:   # any engine URL
//! ```

use datalayer::{Executor, Repo, Table};

/// A user account.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(name = "users")]
#[index(name = "by_email", fields(email), unique)]
#[index(name = "by_city_age", fields(city, age))]
struct User {
    #[pk]
    id: i64,
    email: String,
    city: String,
    age: i32,
}

/// Signs a user up; a taken email is reported, not overwritten.
async fn sign_up<E: Executor + ?Sized>(
    users: Repo<'_, User, E>,
    u: &User,
) -> datalayer::Result<bool> {
    match users.insert(u).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_already_exists() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Everyone in `city` aged `lo..=hi`, youngest first, `page` rows at a time.
async fn residents<E: Executor + ?Sized>(
    users: Repo<'_, User, E>,
    city: &str,
    lo: i32,
    hi: i32,
    page: usize,
) -> datalayer::Result<Vec<User>> {
    let mut out = Vec::new();
    let mut p = users
        .find("by_city_age")
        .eq(city)
        .range(lo..=hi)
        .limit(page)
        .page()
        .await?;
    loop {
        out.extend(p.rows);
        let Some(next) = p.next else { break };
        p = users
            .find("by_city_age")
            .eq(city)
            .range(lo..=hi)
            .limit(page)
            .after(&next)
            .page()
            .await?;
    }
    Ok(out)
}

/// Moves a user to another city.
async fn relocate<E: Executor + ?Sized>(
    users: Repo<'_, User, E>,
    id: i64,
    city: &str,
) -> datalayer::Result<()> {
    let mut u = users
        .get(id)
        .await?
        .ok_or_else(|| datalayer::Error::not_found(format!("user {id}")))?;
    u.city = city.to_owned();
    users.update(&u).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "etch::memory:".into());
    let db = datalayer::builder(url.clone())
        .table::<User>()
        .connect()
        .await?;
    println!("engine: {}", db.engine().name());
    let cities = ["Lisbon", "Oslo", "Quito"];
    for id in 1..=30 {
        let u = User {
            id,
            email: format!("user{id}@example.com"),
            city: cities[id as usize % 3].into(),
            age: 18 + (id as i32 * 7) % 50,
        };
        sign_up(db.repo(), &u).await?;
    }
    let dup = User {
        id: 99,
        email: "user1@example.com".into(),
        city: "Oslo".into(),
        age: 40,
    };
    println!(
        "second sign-up with a taken email accepted: {}",
        sign_up(db.repo(), &dup).await?
    );

    let oslo = residents(db.repo(), "Oslo", 20, 45, 4).await?;
    println!(
        "Oslo residents aged 20..=45: {:?}",
        oslo.iter().map(|u| (u.id, u.age)).collect::<Vec<_>>()
    );

    // The same functions inside a transaction: both moves or neither.
    db.tx(async |tx| {
        relocate(tx.repo(), 1, "Oslo").await?;
        relocate(tx.repo(), 2, "Oslo").await
    })
    .await?;
    let failed = db
        .tx(async |tx| {
            relocate(tx.repo(), 3, "Oslo").await?;
            relocate(tx.repo(), 404, "Oslo").await
        })
        .await;
    println!(
        "moving a missing user rolled back the whole transaction: {}",
        failed.is_err()
    );
    let oslo = residents(db.repo(), "Oslo", 0, 200, 100).await?;
    println!(
        "Oslo now has {} residents (user 3 still in {})",
        oslo.len(),
        db.repo::<User>()
            .get(3i64)
            .await?
            .map(|u| u.city)
            .unwrap_or_default()
    );
    Ok(())
}
