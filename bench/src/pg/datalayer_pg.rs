//! Ours: datalayer on its PostgreSQL engine (`datalayer::pg`), through the same
//! public API and table declaration as the embedded targets (`DlUser` with index
//! `by_age`, the registered query `DlUser::by_id`, `Repo`, `db.tx`).
//!
//! URL: `DATALAYER_PG_URL` + `schema=<this target's schema>` (pool size and
//! pipeline depth: the engine's defaults, 10 and 32, unless the URL sets them).
//!
//! - point read: `DlUser::by_id(&db, id)` (a `#[query_group]` query, prepared on
//!   every pooled connection; one pool checkout per read);
//! - sequential: `db.tx(|tx| for row { tx.repo().insert(row).await })`; inside a
//!   transaction every op is wrapped in the engine's internal savepoint, which is
//!   pipelined with the INSERT (one round trip per row, three statements);
//! - batched: `db.tx(|tx| tx.repo().insert_many(rows))`: the `#[query_group]` DSL
//!   has no INSERT, so there is no `*_stmt` insert to stage in a `Batch`;
//!   `insert_many` on a `Tx` is the engine's batch path (the same `pipeline`
//!   as `Batch::run` on a `Tx`): the prepared single-row INSERT once per row, up
//!   to `pipeline_depth` in flight on the transaction's connection;
//! - insert_many: `db.repo().insert_many(rows)` (one call: the engine opens the
//!   transaction itself and pipelines the same way).

use std::sync::Arc;

use datalayer::Db;
use tokio::runtime::Runtime;

use super::{Conn, PgTarget, with_params};
use crate::peers::datalayer_etch::DlUser;
use crate::workloads::User;

/// datalayer + PostgreSQL in its own schema.
pub struct DatalayerPg {
    rt: Arc<Runtime>,
    db: Db,
}

/// Connects (the engine creates `users` and its index), preloads `rows` with
/// `insert_many` in chunks of 1,000.
///
/// # Errors
/// The engine cannot connect or create the table.
pub fn setup(c: &Conn, rows: &[User]) -> anyhow::Result<Box<dyn PgTarget>> {
    let url = with_params(&c.url, &format!("schema={}", c.schema));
    let db = c.rt.block_on(async {
        let db = datalayer::builder(url)
            .table::<DlUser>()
            .queries::<DlUser>()
            .connect()
            .await?;
        let rows: Vec<DlUser> = rows.iter().map(DlUser::from).collect();
        for chunk in rows.chunks(super::INSERT_ROWS) {
            db.repo::<DlUser>().insert_many(chunk).await?;
        }
        Ok::<_, datalayer::Error>(db)
    })?;
    Ok(Box::new(DatalayerPg {
        rt: c.rt.clone(),
        db,
    }))
}

impl PgTarget for DatalayerPg {
    fn name(&self) -> &'static str {
        "datalayer-pg"
    }

    fn point_read(&self, id: i64) -> Option<User> {
        self.rt
            .block_on(DlUser::by_id(&self.db, id))
            .expect("datalayer-pg read")
            .map(User::from)
    }

    fn point_reads(&self, ids: &[i64]) -> usize {
        self.rt.block_on(async {
            let mut n = 0;
            for &id in ids {
                n += usize::from(
                    DlUser::by_id(&self.db, id)
                        .await
                        .expect("datalayer-pg read")
                        .is_some(),
                );
            }
            n
        })
    }

    fn insert_sequential(&self, rows: &[User]) {
        let rows: Vec<DlUser> = rows.iter().map(DlUser::from).collect();
        self.rt
            .block_on(self.db.tx(async |tx| {
                let repo = tx.repo::<DlUser>();
                for r in &rows {
                    repo.insert(r).await?;
                }
                Ok(())
            }))
            .expect("datalayer-pg sequential inserts");
    }

    fn insert_batch(&self, rows: &[User]) {
        let rows: Vec<DlUser> = rows.iter().map(DlUser::from).collect();
        let n = self
            .rt
            .block_on(
                self.db
                    .tx(async |tx| tx.repo::<DlUser>().insert_many(&rows).await),
            )
            .expect("datalayer-pg batched inserts");
        assert_eq!(n as usize, rows.len());
    }

    fn insert_many(&self, rows: &[User]) {
        let rows: Vec<DlUser> = rows.iter().map(DlUser::from).collect();
        let n = self
            .rt
            .block_on(self.db.repo::<DlUser>().insert_many(&rows))
            .expect("datalayer-pg insert_many");
        assert_eq!(n as usize, rows.len());
    }

    fn count(&self) -> i64 {
        self.rt
            .block_on(self.db.repo::<DlUser>().count())
            .expect("datalayer-pg count") as i64
    }

    fn close(&self) {
        self.rt
            .block_on(self.db.close())
            .expect("datalayer-pg close");
    }
}
