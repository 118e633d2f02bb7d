//! Peer: raw tikv-client (TiKV section; the version the engine pins, 0.4.0), doing
//! by hand what datalayer-tikv does for the same rows: one `TransactionClient`
//! (the engine's `Config`: 2 s request timeout) in the place's namespace, every
//! key under `<ns>` + `00` as the engine's keys are. Layout:
//!
//! | key | value |
//! |-----|-------|
//! | `<ns>\0` `r` ‖ id (8 bytes, order-preserving) | the row: age (4 bytes), name length (2 bytes), name, email |
//! | `<ns>\0` `ia` ‖ age (4 bytes, order-preserving) ‖ id (8 bytes) | id (8 bytes) |
//! | `<ns>\0` `ie` ‖ email ‖ `00` ‖ id (8 bytes) | id (8 bytes) |
//!
//! - point read: a snapshot at `current_timestamp()` (one PD TSO request), one
//!   `get` of the row key;
//! - insert (one row with its two index entries): `begin_with_options(optimistic)`,
//!   `put` of the row key and the two index keys, `commit()` (two-phase:
//!   prewrite, commit; the same options as the engine's transactions: no async
//!   commit, no 1PC); no existence check (the engine's insert reads the primary
//!   key first);
//! - range scan: a snapshot, `scan` of the age index over `[lo, hi]` (limit
//!   1,000, paged), then one `batch_get` of the rows;
//! - batch of 1,000 point reads: a snapshot, one `batch_get` of the 1,000 row keys;
//! - count: `scan_keys` over the age index, paged.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use tikv_client::{
    BoundRange, CheckLevel, Config, Key, Snapshot, TransactionClient, TransactionOptions,
};
use tokio::runtime::Runtime;

use super::kv_row::{self, decode, encode, ord_i32, ord_i64};
use super::{AsyncUsers, Place, Target, UsersTable, runtime};
use crate::tikv_cluster::TikvCluster;
use crate::workloads::{User, Workload};

/// Entries per `scan` page of a range scan and of the count.
const PAGE: u32 = 1_000;

/// Rows per transaction while preloading.
const PRELOAD_CHUNK: usize = 1_000;

/// Raw tikv-client on the run's TiKV cluster.
pub struct RawTikv {
    cluster: Arc<TikvCluster>,
}

impl RawTikv {
    /// The raw target on `cluster`.
    pub fn new(cluster: Arc<TikvCluster>) -> Self {
        Self { cluster }
    }
}

impl Target for RawTikv {
    fn name(&self) -> &str {
        "tikv-client"
    }

    fn supports(&self, w: Workload) -> bool {
        kv_row::supports(w)
    }

    /// Connects and preloads `rows` (1,000 rows and their index entries per
    /// transaction).
    fn open(&self, place: &Place, rows: &[User]) -> anyhow::Result<Box<dyn UsersTable>> {
        let ns = place.namespace()?;
        let rt = runtime();
        let pd: Vec<String> = self.cluster.pd.split(',').map(str::to_owned).collect();
        let config = Config::default()
            .with_timeout(Duration::from_secs(2))
            .with_grpc_max_decoding_message_size(256 * 1024 * 1024);
        let client = rt.block_on(TransactionClient::new_with_config(pd, config))?;
        let mut prefix = ns.into_bytes();
        prefix.push(0);
        let t = RawTikvUsers { rt, client, prefix };
        t.rt.block_on(async {
            for chunk in rows.chunks(PRELOAD_CHUNK) {
                let mut txn = t.client.begin_with_options(t.write_options()).await?;
                for u in chunk {
                    for (k, v) in t.entries(u) {
                        txn.put(k, v).await?;
                    }
                }
                txn.commit().await?;
            }
            anyhow::Ok(())
        })?;
        Ok(Box::new(t))
    }
}

/// The open namespace of [`RawTikv`].
struct RawTikvUsers {
    rt: Arc<Runtime>,
    client: TransactionClient,
    /// `<ns>` + `00`.
    prefix: Vec<u8>,
}

impl RawTikvUsers {
    fn key(&self, parts: &[&[u8]]) -> Key {
        let mut k = self.prefix.clone();
        for p in parts {
            k.extend_from_slice(p);
        }
        Key::from(k)
    }

    fn row_key(&self, id: i64) -> Key {
        self.key(&[b"r", &ord_i64(id)])
    }

    /// The row key and value and the two index entries of `u`.
    fn entries(&self, u: &User) -> [(Key, Vec<u8>); 3] {
        let id = ord_i64(u.id);
        [
            (self.row_key(u.id), encode(u)),
            (self.key(&[b"ia", &ord_i32(u.age), &id]), id.to_vec()),
            (
                self.key(&[b"ie", u.email.as_bytes(), &[0], &id]),
                id.to_vec(),
            ),
        ]
    }

    /// The engine's transaction options: optimistic, no drop check.
    fn write_options(&self) -> TransactionOptions {
        TransactionOptions::new_optimistic().drop_check(CheckLevel::None)
    }

    /// A read-only snapshot at a fresh timestamp (one TSO request).
    async fn snapshot(&self) -> Snapshot {
        let ts = self
            .client
            .current_timestamp()
            .await
            .expect("tikv current_timestamp");
        self.client.snapshot(
            ts,
            TransactionOptions::new_optimistic().drop_check(CheckLevel::None),
        )
    }

    /// The rows of `ids` (row keys `keys`) from `s`, in the order of `ids` (an id
    /// may repeat).
    async fn batch_get(s: &mut Snapshot, keys: Vec<Key>, ids: &[i64]) -> Vec<Option<User>> {
        let found: std::collections::HashMap<Key, Vec<u8>> = s
            .batch_get(keys.clone())
            .await
            .expect("tikv batch_get")
            .map(|p| (p.0, p.1))
            .collect();
        keys.iter()
            .zip(ids)
            .map(|(k, &id)| found.get(k).map(|v| decode(id, v)))
            .collect()
    }

    /// The age-index range `[lo, hi]`.
    fn age_range(&self, lo: i32, hi: i32) -> BoundRange {
        BoundRange::new(
            Bound::Included(self.key(&[b"ia", &ord_i32(lo)])),
            Bound::Excluded(self.key(&[b"ia", &ord_i32(hi.saturating_add(1))])),
        )
    }
}

impl AsyncUsers for RawTikvUsers {
    type Row = User;

    fn rt(&self) -> &Runtime {
        &self.rt
    }

    async fn read(&self, id: i64) -> Option<User> {
        let mut s = self.snapshot().await;
        s.get(self.row_key(id))
            .await
            .expect("tikv get")
            .map(|v| decode(id, &v))
    }

    async fn batch(&self, ids: &[i64]) -> Vec<Option<User>> {
        let mut s = self.snapshot().await;
        let keys: Vec<Key> = ids.iter().map(|&id| self.row_key(id)).collect();
        Self::batch_get(&mut s, keys, ids).await
    }

    async fn range(&self, lo: i32, hi: i32) -> usize {
        let mut s = self.snapshot().await;
        let mut range = self.age_range(lo, hi);
        let mut n = 0;
        loop {
            let entries: Vec<tikv_client::KvPair> = s
                .scan(range.clone(), PAGE)
                .await
                .expect("tikv scan")
                .collect();
            let ids: Vec<i64> = entries
                .iter()
                .map(|p| {
                    (u64::from_be_bytes(p.1[..8].try_into().expect("8 bytes")) ^ (1 << 63)) as i64
                })
                .collect();
            let keys: Vec<Key> = ids.iter().map(|&id| self.row_key(id)).collect();
            let rows = Self::batch_get(&mut s, keys, &ids).await;
            for row in &rows {
                let row = row.as_ref().expect("an indexed row exists");
                assert!((lo..=hi).contains(&row.age), "index entry and row agree");
            }
            n += rows.len();
            match entries.last() {
                Some(last) if entries.len() == PAGE as usize => {
                    range = BoundRange::new(Bound::Excluded(last.0.clone()), range.to.clone());
                }
                _ => return n,
            }
        }
    }

    async fn insert(&self, u: &User) {
        let mut txn = self
            .client
            .begin_with_options(self.write_options())
            .await
            .expect("tikv begin");
        for (k, v) in self.entries(u) {
            txn.put(k, v).await.expect("tikv put");
        }
        txn.commit().await.expect("tikv commit");
    }

    async fn insert_all(&self, rows: &[User]) {
        let _ = rows;
        unreachable!("tikv-client runs no insert_many row")
    }

    async fn row_count(&self) -> i64 {
        let mut s = self.snapshot().await;
        let mut range = self.age_range(i32::MIN, i32::MAX - 1);
        let mut n = 0i64;
        loop {
            let keys: Vec<Key> = s
                .scan_keys(range.clone(), PAGE)
                .await
                .expect("tikv scan_keys")
                .collect();
            n += keys.len() as i64;
            match keys.last() {
                Some(last) if keys.len() == PAGE as usize => {
                    range = BoundRange::new(Bound::Excluded(last.clone()), range.to.clone());
                }
                _ => return n,
            }
        }
    }
}
