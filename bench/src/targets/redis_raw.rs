//! Peer: raw redis-rs (Redis section), doing by hand what datalayer-redis does for
//! the same rows: one multiplexed connection (`Client::get_multiplexed_async_connection`)
//! in the place's own namespace; every key starts with the hash tag `{<ns>}`, as
//! the engine's keys do. Layout:
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `{ns}:r:` ‖ id (8 bytes, order-preserving) | string | the row: age (4 bytes), name length (2 bytes), name, email |
//! | `{ns}:ia` | sorted set, every score 0 | age (4 bytes, order-preserving) ‖ id (8 bytes) per row |
//! | `{ns}:ie` | sorted set, every score 0 | email ‖ `00` ‖ id (8 bytes) per row |
//!
//! - point read: one `GET` of the row key, decoded into a `User`;
//! - insert (one row with its two index entries): one `MULTI` of `SET` + 2 `ZADD`
//!   (`EXEC`), one round trip; no existence check (the engine's insert checks
//!   that the primary key is free, inside its commit function);
//! - range scan: `ZRANGE {ns}:ia [lo (hi+1 BYLEX LIMIT 0 1000` (again from after
//!   the last member while a page comes back full), then one `MGET` of the rows;
//! - batch of 1,000 point reads: one `MGET` of the 1,000 row keys;
//! - count: `ZCARD {ns}:ia`.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use tokio::runtime::Runtime;

use super::kv_row::{self, decode, encode, ord_i32, ord_i64};
use super::{AsyncUsers, Place, Target, UsersTable, runtime};
use crate::redis_server::RedisServer;
use crate::workloads::{User, Workload};

/// Members per `ZRANGE … LIMIT` page of a range scan.
const PAGE: usize = 1_000;

/// Rows per pipeline while preloading.
const PRELOAD_CHUNK: usize = 1_000;

/// Raw redis-rs on the run's Redis server.
pub struct RawRedis {
    server: Arc<RedisServer>,
}

impl RawRedis {
    /// The raw target on `server`.
    pub fn new(server: Arc<RedisServer>) -> Self {
        Self { server }
    }
}

/// The id at the end of an index member.
fn id_of_member(m: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&m[m.len() - 8..]);
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

impl Target for RawRedis {
    fn name(&self) -> &str {
        "redis-rs"
    }

    fn supports(&self, w: Workload) -> bool {
        kv_row::supports(w)
    }

    /// Connects and preloads `rows` (pipelines of 1,000 `SET` + 2 `ZADD`).
    fn open(&self, place: &Place, rows: &[User]) -> anyhow::Result<Box<dyn UsersTable>> {
        let ns = place.namespace()?;
        let rt = runtime();
        let conn = rt.block_on(self.server.connection())?;
        let t = RawRedisUsers {
            rt,
            conn,
            row_prefix: format!("{{{ns}}}:r:").into_bytes(),
            by_age: format!("{{{ns}}}:ia").into_bytes(),
            by_email: format!("{{{ns}}}:ie").into_bytes(),
        };
        t.rt.block_on(async {
            for chunk in rows.chunks(PRELOAD_CHUNK) {
                let mut p = redis::pipe();
                for u in chunk {
                    t.stage_insert(&mut p, u);
                }
                let mut c = t.conn.clone();
                p.query_async::<()>(&mut c).await?;
            }
            anyhow::Ok(())
        })?;
        Ok(Box::new(t))
    }
}

/// The open namespace of [`RawRedis`].
struct RawRedisUsers {
    rt: Arc<Runtime>,
    conn: MultiplexedConnection,
    row_prefix: Vec<u8>,
    by_age: Vec<u8>,
    by_email: Vec<u8>,
}

impl RawRedisUsers {
    fn row_key(&self, id: i64) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.row_prefix.len() + 8);
        k.extend_from_slice(&self.row_prefix);
        k.extend_from_slice(&ord_i64(id));
        k
    }

    /// Adds the `SET` and the two `ZADD`s of `u` to `p`.
    fn stage_insert(&self, p: &mut redis::Pipeline, u: &User) {
        let age_member = [&ord_i32(u.age)[..], &ord_i64(u.id)].concat();
        let email_member = [u.email.as_bytes(), &[0], &ord_i64(u.id)].concat();
        p.cmd("SET")
            .arg(self.row_key(u.id))
            .arg(encode(u))
            .ignore()
            .cmd("ZADD")
            .arg(&self.by_age)
            .arg(0)
            .arg(age_member)
            .ignore()
            .cmd("ZADD")
            .arg(&self.by_email)
            .arg(0)
            .arg(email_member)
            .ignore();
    }

    async fn mget(&self, ids: &[i64]) -> Vec<Option<User>> {
        if ids.is_empty() {
            return Vec::new();
        }
        let keys: Vec<Vec<u8>> = ids.iter().map(|&id| self.row_key(id)).collect();
        let mut c = self.conn.clone();
        let vals: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut c)
            .await
            .expect("redis MGET");
        ids.iter()
            .zip(vals)
            .map(|(&id, v)| v.map(|v| decode(id, &v)))
            .collect()
    }
}

impl AsyncUsers for RawRedisUsers {
    type Row = User;

    fn rt(&self) -> &Runtime {
        &self.rt
    }

    async fn read(&self, id: i64) -> Option<User> {
        let mut c = self.conn.clone();
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.row_key(id))
            .query_async(&mut c)
            .await
            .expect("redis GET");
        v.map(|v| decode(id, &v))
    }

    async fn batch(&self, ids: &[i64]) -> Vec<Option<User>> {
        self.mget(ids).await
    }

    async fn range(&self, lo: i32, hi: i32) -> usize {
        let mut c = self.conn.clone();
        let mut min = [b"[".as_slice(), &ord_i32(lo)].concat();
        let max = [b"(".as_slice(), &ord_i32(hi.saturating_add(1))].concat();
        let mut n = 0;
        loop {
            let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                .arg(&self.by_age)
                .arg(&min)
                .arg(&max)
                .arg("BYLEX")
                .arg("LIMIT")
                .arg(0)
                .arg(PAGE)
                .query_async(&mut c)
                .await
                .expect("redis ZRANGE BYLEX");
            let ids: Vec<i64> = members.iter().map(|m| id_of_member(m)).collect();
            let rows = self.mget(&ids).await;
            for (row, m) in rows.iter().zip(&members) {
                let row = row.as_ref().expect("an indexed row exists");
                assert_eq!(&ord_i32(row.age)[..], &m[..4], "index entry and row agree");
            }
            n += rows.len();
            match members.last() {
                Some(last) if members.len() == PAGE => {
                    min = [b"(".as_slice(), last].concat();
                }
                _ => return n,
            }
        }
    }

    async fn insert(&self, u: &User) {
        let mut p = redis::pipe();
        p.atomic();
        self.stage_insert(&mut p, u);
        let mut c = self.conn.clone();
        p.query_async::<()>(&mut c)
            .await
            .expect("redis MULTI SET + 2 ZADD");
    }

    async fn insert_all(&self, rows: &[User]) {
        let _ = rows;
        unreachable!("redis-rs runs no insert_many row")
    }

    async fn row_count(&self) -> i64 {
        let mut c = self.conn.clone();
        redis::cmd("ZCARD")
            .arg(&self.by_age)
            .query_async::<i64>(&mut c)
            .await
            .expect("redis ZCARD")
    }
}
