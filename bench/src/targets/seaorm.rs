//! Peer: SeaORM 1.1 (PostgreSQL section; `sqlx-postgres` + `runtime-tokio` +
//! `macros`, no TLS) on the same kind of sqlx pool as the sqlx target (`SqlxPostgresConnector::from_sqlx_postgres_pool`):
//! every statement SeaORM renders goes through `sqlx::query_with`, prepared and
//! cached per connection.
//!
//! - point read: `Entity::find_by_id(id).one(&db)`;
//! - sequential: `db.begin()`; `Entity::insert(active_model)
//!   .exec_without_returning(&txn)` per row; `commit`;
//! - batched: `db.begin()`; ONE `Entity::insert_many(..).exec_without_returning(&txn)`
//!   (one multi-row `INSERT .. VALUES` of all M rows, SeaORM has no pipelining);
//!   `commit`;
//! - insert_many: `Entity::insert_many(..).exec_without_returning(&db)`, autocommit.
//!
//! `exec_without_returning` keeps SeaORM from adding `RETURNING "id"`, so it does
//! the same work as the other targets.

use std::sync::Arc;

use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait,
    SqlxPostgresConnector, TransactionTrait,
};
use tokio::runtime::Runtime;

use super::{AsyncUsers, Place, Target, UsersTable, runtime};
use crate::pg::USERS_DDL;
use crate::workloads::{BATCH_ROWS, User, Workload};

/// The `users` table as a SeaORM entity.
#[allow(missing_docs)]
pub mod users {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        pub email: String,
        pub age: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn active(u: &User) -> users::ActiveModel {
    users::ActiveModel {
        id: Set(u.id),
        name: Set(u.name.clone()),
        email: Set(u.email.clone()),
        age: Set(u.age),
    }
}

/// SeaORM; runs the PostgreSQL section's `users` rows except `COPY`.
pub struct SeaOrm;

impl Target for SeaOrm {
    fn name(&self) -> &str {
        "SeaORM"
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

    /// Connects, creates `users` and its index, preloads `rows` (`insert_many`,
    /// 1,000 per statement).
    fn open(&self, place: &Place, rows: &[User]) -> anyhow::Result<Box<dyn UsersTable>> {
        let (server, schema) = (place.server()?, place.schema()?);
        let rt = runtime();
        let db = rt.block_on(async {
            let pool = super::sqlx::pool(server, &schema).await?;
            let db = SqlxPostgresConnector::from_sqlx_postgres_pool(pool);
            db.execute_unprepared(USERS_DDL).await?;
            anyhow::Ok(db)
        })?;
        let t = SeaOrmUsers { rt, db };
        for chunk in rows.chunks(BATCH_ROWS) {
            t.insert_many(chunk);
        }
        Ok(Box::new(t))
    }
}

/// The connection of [`SeaOrm`].
struct SeaOrmUsers {
    rt: Arc<Runtime>,
    db: DatabaseConnection,
}

impl AsyncUsers for SeaOrmUsers {
    type Row = User;

    fn rt(&self) -> &Runtime {
        &self.rt
    }

    async fn read(&self, id: i64) -> Option<User> {
        users::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .expect("SeaORM read")
            .map(|m| User {
                id: m.id,
                name: m.name,
                email: m.email,
                age: m.age,
            })
    }

    async fn insert_each_in_tx(&self, rows: &[User]) {
        async {
            let txn = self.db.begin().await?;
            for u in rows {
                users::Entity::insert(active(u))
                    .exec_without_returning(&txn)
                    .await?;
            }
            txn.commit().await
        }
        .await
        .expect("SeaORM sequential inserts");
    }

    async fn insert_batch_in_tx(&self, rows: &[User]) {
        async {
            let txn = self.db.begin().await?;
            let n = users::Entity::insert_many(rows.iter().map(active))
                .exec_without_returning(&txn)
                .await?;
            assert_eq!(n as usize, rows.len());
            txn.commit().await
        }
        .await
        .expect("SeaORM insert_many in a transaction");
    }

    async fn insert_all(&self, rows: &[User]) {
        let n = users::Entity::insert_many(rows.iter().map(active))
            .exec_without_returning(&self.db)
            .await
            .expect("SeaORM insert_many");
        assert_eq!(n as usize, rows.len());
    }

    async fn row_count(&self) -> i64 {
        users::Entity::find()
            .count(&self.db)
            .await
            .expect("SeaORM count") as i64
    }

    async fn shutdown(&self) {
        // Closes the pool (the connection is a cheap handle on it).
        let db = self.db.clone();
        db.close().await.expect("SeaORM close");
    }
}
