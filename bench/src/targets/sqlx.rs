//! Peer: sqlx 0.8 (PostgreSQL section; `postgres` + `runtime-tokio`, no TLS): a
//! `PgPool` of at most 10 connections (datalayer's default pool size),
//! `search_path` set to the place's schema in the startup options. `sqlx::query` statements are
//! prepared once per connection and cached (sqlx's default).
//!
//! - point read: `query_as::<_, (i64, String, String, i32)>(SELECT).bind(id)
//!   .fetch_optional(&pool)` (one pool checkout per read, as datalayer);
//! - sequential: `pool.begin()`; `query(INSERT).bind(..).execute(&mut *tx)`
//!   per row; `commit`;
//! - batched: sqlx does not pipeline, so the natural batch is ONE multi-row
//!   `INSERT .. VALUES (..), (..), ..` of all M rows (4 binds per row) built
//!   with `QueryBuilder::push_values`, inside `pool.begin()` / `commit`;
//! - insert_many: sqlx has none; its documented bulk insert is one statement
//!   over arrays: `INSERT INTO users SELECT * FROM UNNEST($1::int8[],
//!   $2::text[], $3::text[], $4::int4[])`, autocommit.

use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{Postgres, QueryBuilder};
use tokio::runtime::Runtime;
use tokio_postgres::config::Host;

use super::{AsyncUsers, Place, Target, UsersTable, runtime};
use crate::pg::{INSERT_SQL, PgServer, SELECT_SQL, USERS_DDL};
use crate::workloads::{BATCH_ROWS, User, Workload};

/// The UNNEST bulk insert.
const UNNEST_SQL: &str = "INSERT INTO users (id, name, email, age) \
                          SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::int4[])";

/// sqlx connect options for `server`, working in `schema`.
pub fn connect_options(server: &PgServer, schema: &str) -> PgConnectOptions {
    let cfg = &server.config;
    let mut o = PgConnectOptions::new_without_pgpass()
        .ssl_mode(PgSslMode::Disable)
        .options([("search_path", schema)]);
    match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => o = o.host(h),
        Some(Host::Unix(p)) => o = o.socket(p),
        None => {}
    }
    if let Some(&p) = cfg.get_ports().first() {
        o = o.port(p);
    }
    if let Some(u) = cfg.get_user() {
        o = o.username(u);
    }
    if let Some(p) = cfg.get_password() {
        o = o.password(&String::from_utf8_lossy(p));
    }
    if let Some(d) = cfg.get_dbname() {
        o = o.database(d);
    }
    o
}

/// A pool of at most 10 connections to `server` in `schema` (untimed; one
/// connection opened now).
///
/// # Errors
/// The server refuses the connection.
pub async fn pool(server: &PgServer, schema: &str) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(10)
        .min_connections(1)
        .connect_with(connect_options(server, schema))
        .await?)
}

/// sqlx; runs the PostgreSQL section's `users` rows except `COPY`.
pub struct Sqlx;

impl Target for Sqlx {
    fn name(&self) -> &str {
        "sqlx"
    }

    fn supports(&self, w: Workload) -> bool {
        matches!(
            w,
            Workload::PointRead
                | Workload::Batch
                | Workload::InsertSequential
                | Workload::InsertBatched
        )
    }

    /// Connects, creates `users` and its index, preloads `rows` (UNNEST, 1,000
    /// per statement).
    fn open(&self, place: &Place, rows: &[User]) -> anyhow::Result<Box<dyn UsersTable>> {
        let (server, schema) = (place.server()?, place.schema()?);
        let rt = runtime();
        let pool = rt.block_on(async {
            let pool = pool(server, &schema).await?;
            sqlx::raw_sql(USERS_DDL).execute(&pool).await?;
            anyhow::Ok(pool)
        })?;
        let t = SqlxUsers { rt, pool };
        for chunk in rows.chunks(BATCH_ROWS) {
            t.insert_many(chunk);
        }
        Ok(Box::new(t))
    }
}

/// The pool of [`Sqlx`].
struct SqlxUsers {
    rt: Arc<Runtime>,
    pool: PgPool,
}

impl AsyncUsers for SqlxUsers {
    type Row = User;

    fn rt(&self) -> &Runtime {
        &self.rt
    }

    async fn read(&self, id: i64) -> Option<User> {
        sqlx::query_as::<_, (i64, String, String, i32)>(SELECT_SQL)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .expect("sqlx read")
            .map(|(id, name, email, age)| User {
                id,
                name,
                email,
                age,
            })
    }

    async fn insert_each_in_tx(&self, rows: &[User]) {
        async {
            let mut tx = self.pool.begin().await?;
            for u in rows {
                sqlx::query(INSERT_SQL)
                    .bind(u.id)
                    .bind(&u.name)
                    .bind(&u.email)
                    .bind(u.age)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        .await
        .expect("sqlx sequential inserts");
    }

    async fn insert_batch_in_tx(&self, rows: &[User]) {
        async {
            let mut tx = self.pool.begin().await?;
            let mut qb: QueryBuilder<'_, Postgres> =
                QueryBuilder::new("INSERT INTO users (id, name, email, age) ");
            qb.push_values(rows, |mut b, u| {
                b.push_bind(u.id)
                    .push_bind(&u.name)
                    .push_bind(&u.email)
                    .push_bind(u.age);
            });
            let done = qb.build().execute(&mut *tx).await?;
            assert_eq!(done.rows_affected() as usize, rows.len());
            tx.commit().await
        }
        .await
        .expect("sqlx multi-row insert");
    }

    async fn insert_all(&self, rows: &[User]) {
        let ids: Vec<i64> = rows.iter().map(|u| u.id).collect();
        let names: Vec<&str> = rows.iter().map(|u| u.name.as_str()).collect();
        let emails: Vec<&str> = rows.iter().map(|u| u.email.as_str()).collect();
        let ages: Vec<i32> = rows.iter().map(|u| u.age).collect();
        let done = sqlx::query(UNNEST_SQL)
            .bind(&ids)
            .bind(&names)
            .bind(&emails)
            .bind(&ages)
            .execute(&self.pool)
            .await
            .expect("sqlx UNNEST insert");
        assert_eq!(done.rows_affected() as usize, rows.len());
    }

    async fn row_count(&self) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .expect("sqlx count")
    }

    async fn shutdown(&self) {
        self.pool.close().await;
    }
}
