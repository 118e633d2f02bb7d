//! Peer: raw tokio-postgres (PostgreSQL section): one connection
//! (`tokio_postgres::Config::connect`, its connection task spawned on the target's
//! runtime), `SET search_path` to the place's schema, the INSERT and the point
//! read prepared once.
//!
//! - point read: `client.query_opt(&select, &[&id])`, decoded into a `User`;
//! - sequential: `BEGIN`; `client.execute(&insert, ..).await` per row; `COMMIT`;
//! - batched: `BEGIN`; all M `client.execute(&insert, ..)` futures joined with
//!   `futures::future::try_join_all` (every statement is sent on the first poll,
//!   so all M are in flight at once); `COMMIT`;
//! - insert_many: as batched, but at most `pipeline_depth` in flight (the
//!   engine's setting for the URL, 32 by default) through [`window`], which
//!   schedules like the engine's pipeline: each statement is sent when it
//!   enters the window and only the oldest one is awaited. The same statements,
//!   window and scheduling as datalayer, without the layer;
//! - COPY (row 4' only this target runs): `COPY users (..) FROM STDIN BINARY`
//!   through `BinaryCopyInWriter`, in one transaction.

use std::pin::pin;
use std::sync::Arc;

use futures::future::{MaybeDone, maybe_done};
use tokio::runtime::Runtime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::{AsyncUsers, Place, Target, UsersTable, runtime};
use crate::pg::{INSERT_SQL, SELECT_SQL, USERS_DDL};
use crate::workloads::{BATCH_ROWS, User, Workload};

/// Raw tokio-postgres; runs the PostgreSQL section's `users` rows, `COPY`
/// included.
pub struct RawPg;

impl Target for RawPg {
    fn name(&self) -> &str {
        "tokio-postgres"
    }

    fn supports(&self, w: Workload) -> bool {
        matches!(
            w,
            Workload::PointRead
                | Workload::Batch
                | Workload::InsertSequential
                | Workload::InsertBatched
                | Workload::Copy
        )
    }

    /// Connects, creates `users` and its index, prepares, preloads `rows`
    /// (pipelined, 1,000 per transaction).
    fn open(&self, place: &Place, rows: &[User]) -> anyhow::Result<Box<dyn UsersTable>> {
        let server = place.server()?;
        let schema = place.schema()?;
        let rt = runtime();
        let t = rt.block_on(async {
            let client = crate::pg::connect(&server.config, Some(&schema)).await?;
            client.batch_execute(USERS_DDL).await?;
            let select = client.prepare_typed(SELECT_SQL, &[Type::INT8]).await?;
            let insert = client
                .prepare_typed(
                    INSERT_SQL,
                    &[Type::INT8, Type::TEXT, Type::TEXT, Type::INT4],
                )
                .await?;
            anyhow::Ok(RawUsers {
                rt: rt.clone(),
                client,
                select,
                insert,
                depth: server.pipeline_depth,
            })
        })?;
        for chunk in rows.chunks(BATCH_ROWS) {
            t.insert_many(chunk);
        }
        Ok(Box::new(t))
    }
}

/// The open connection of [`RawPg`].
struct RawUsers {
    rt: Arc<Runtime>,
    client: Client,
    select: Statement,
    insert: Statement,
    /// The window of `insert_many` (the engine's `pipeline_depth`).
    depth: usize,
}

impl RawUsers {
    async fn execute(&self, u: &User) -> Result<u64, tokio_postgres::Error> {
        self.client
            .execute(&self.insert, &[&u.id, &u.name, &u.email, &u.age])
            .await
    }

    /// Runs `body` between `BEGIN` and `COMMIT`.
    async fn in_tx(
        &self,
        what: &str,
        body: impl Future<Output = Result<(), tokio_postgres::Error>>,
    ) {
        async {
            self.client.batch_execute("BEGIN").await?;
            body.await?;
            self.client.batch_execute("COMMIT").await
        }
        .await
        .unwrap_or_else(|e| panic!("tokio-postgres {what}: {e}"));
    }
}

/// Runs `futs` in order with at most `depth` in flight: a future is polled once
/// when it enters the window (tokio-postgres sends its statement then) and then
/// left alone until it is the oldest, which is awaited (the scheduling of the
/// engine's own pipeline, so that row 4 compares like with like).
async fn window<T, E, F>(futs: impl IntoIterator<Item = F>, depth: usize) -> Result<(), E>
where
    F: Future<Output = Result<T, E>>,
{
    let mut todo = futs.into_iter();
    let mut inflight = std::collections::VecDeque::new();
    loop {
        while inflight.len() < depth.max(1) {
            let Some(f) = todo.next() else { break };
            let mut f: std::pin::Pin<Box<MaybeDone<F>>> = Box::pin(maybe_done(f));
            let _ = futures::poll!(f.as_mut());
            inflight.push_back(f);
        }
        let Some(mut front) = inflight.pop_front() else {
            return Ok(());
        };
        front.as_mut().await;
        if let Some(r) = front.as_mut().take_output() {
            r?;
        }
    }
}

impl AsyncUsers for RawUsers {
    type Row = User;

    fn rt(&self) -> &Runtime {
        &self.rt
    }

    async fn read(&self, id: i64) -> Option<User> {
        self.client
            .query_opt(&self.select, &[&id])
            .await
            .expect("tokio-postgres read")
            .map(|r| User {
                id: r.get(0),
                name: r.get(1),
                email: r.get(2),
                age: r.get(3),
            })
    }

    async fn insert_each_in_tx(&self, rows: &[User]) {
        self.in_tx("sequential inserts", async {
            for u in rows {
                self.execute(u).await?;
            }
            Ok(())
        })
        .await;
    }

    async fn insert_batch_in_tx(&self, rows: &[User]) {
        self.in_tx("batched inserts", async {
            futures::future::try_join_all(rows.iter().map(|u| self.execute(u))).await?;
            Ok(())
        })
        .await;
    }

    async fn insert_all(&self, rows: &[User]) {
        self.in_tx("insert_many", async {
            window(rows.iter().map(|u| self.execute(u)), self.depth).await
        })
        .await;
    }

    async fn copy(&self, rows: &[User]) {
        self.in_tx("COPY", async {
            let sink = self
                .client
                .copy_in("COPY users (id, name, email, age) FROM STDIN BINARY")
                .await?;
            let mut w = pin!(BinaryCopyInWriter::new(
                sink,
                &[Type::INT8, Type::TEXT, Type::TEXT, Type::INT4]
            ));
            for u in rows {
                let vals: [&(dyn ToSql + Sync); 4] = [&u.id, &u.name, &u.email, &u.age];
                w.as_mut().write(&vals).await?;
            }
            let n = w.finish().await?;
            assert_eq!(n as usize, rows.len(), "COPY row count");
            Ok(())
        })
        .await;
    }

    async fn row_count(&self) -> i64 {
        self.client
            .query_one("SELECT count(*) FROM users", &[])
            .await
            .expect("tokio-postgres count")
            .get(0)
    }
}
