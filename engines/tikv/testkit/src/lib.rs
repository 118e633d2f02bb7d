//! # datalayer-tikv-testkit
//!
//! An in-process PD + TiKV that serves the real gRPC protocol (kvproto, the `.proto`
//! files the `tikv-client` crate ships, in `proto/`) to the real `tikv-client`, so that
//! datalayer's TiKV engine is tested without a TiKV server.
//!
//! - **PD** ([`pd`]): `GetMembers`, the `Tso` stream (wall-clock physical time in
//!   milliseconds, 18 logical bits), `GetRegion`/`GetRegionByID` (region boundaries in
//!   TiKV's memcomparable-encoded form, [`codec`]), `GetStore`/`GetAllStores`.
//! - **TiKV** ([`server`]): the transactional RPCs of the client (`KvGet`,
//!   `KvBatchGet`, `KvScan` forward and reverse, `KvPrewrite`, `KvCommit`,
//!   `KvBatchRollback`, `KvCheckTxnStatus`, `KvResolveLock`, `KvTxnHeartBeat`,
//!   `KvPessimisticLock`, `KvPessimisticRollback`) on a Percolator MVCC store
//!   ([`mvcc`]); every other RPC answers `Unimplemented`.
//! - **Regions**: split at [`ClusterConfig::split_keys`] (default: 4 regions), each
//!   with an epoch; requests are checked against the region they name (`RegionNotFound`,
//!   `EpochNotMatch`, `KeyNotInRegion`, `StoreNotMatch`), and [`TestCluster::split`]
//!   splits a region while clients run. One store by default; with
//!   [`ClusterConfig::stores`] = 2 every region has a peer on both stores (each store
//!   on its own listener) and [`TestCluster::transfer_leader`] moves a region's
//!   leader: the old leader answers `NotLeader` naming the new one, as TiKV does.
//! - **Faults** ([`TestCluster::inject`]): N-shot region errors per RPC
//!   ([`RegionFault`]), gRPC `Unavailable` before or after an RPC applied (a response
//!   lost after the primary commit), delays; orphan locks with an expired TTL
//!   ([`TestCluster::orphan_locks`]); an RPC held at a chosen point until the test
//!   releases or fails it ([`TestCluster::hold`]); a stopped store
//!   ([`TestCluster::stop_store`], [`TestCluster::restart_store`]).
//!
//! ```no_run
//! # async fn demo() {
//! let cluster = datalayer_tikv_testkit::TestCluster::start(Default::default()).await.unwrap();
//! let client = format!("{}", cluster.pd_addr()); // give this to tikv_client::TransactionClient::new
//! # let _ = client; }
//! ```
//!
//! Not modelled: Raft and replication (the stores share one MVCC state: a leader move
//! or a stopped store changes who answers, never the data; a stopped store answers
//! gRPC `Unavailable` rather than closing its listener), async commit and 1PC, GC
//! (`KvScanLock`, `KvDeleteRange`, `UnsafeDestroyRange`), the raw API.

pub mod codec;
pub mod mvcc;
pub mod pd;
pub mod server;

/// The code generated from kvproto's `.proto` files (`build.rs`): messages and tonic
/// server traits.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/mod.rs"));
}

use futures::StreamExt;
use mvcc::{Lock, LockKind, Mvcc, Ts};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How a [`TestCluster`] starts.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Where to listen (PD and the store share one gRPC listener). Default
    /// `127.0.0.1:0` (any free port).
    pub addr: SocketAddr,
    /// The raw keys at which the keyspace is split into regions, at start. Default
    /// `["b", "i", "r"]`: 4 regions, so that datalayer's catalog (`c…`), index (`i…`,
    /// `u…`) and row (`r…`) keys and the contract suite's `a`, `b`, `c` keys live in
    /// different regions.
    pub split_keys: Vec<Vec<u8>>,
    /// The cluster id PD reports. Default 1.
    pub cluster_id: u64,
    /// The number of TiKV stores, 1 or 2 (default 1). Store 1 shares the PD listener
    /// ([`ClusterConfig::addr`]); store 2 listens on its own free loopback port. Every
    /// region has a peer on every store; the leaders start on store 1.
    pub stores: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            split_keys: vec![b"b".to_vec(), b"i".to_vec(), b"r".to_vec()],
            cluster_id: 1,
            stores: 1,
        }
    }
}

/// The TiKV RPCs a fault can be injected into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rpc {
    /// `KvGet`.
    Get,
    /// `KvBatchGet`.
    BatchGet,
    /// `KvScan` (forward and reverse).
    Scan,
    /// `KvPrewrite`.
    Prewrite,
    /// `KvCommit` (primary and secondaries).
    Commit,
    /// `KvBatchRollback`.
    BatchRollback,
    /// `KvCheckTxnStatus`.
    CheckTxnStatus,
    /// `KvResolveLock`.
    ResolveLock,
    /// `KvTxnHeartBeat`.
    TxnHeartBeat,
    /// `KvPessimisticLock`.
    PessimisticLock,
    /// `KvPessimisticRollback`.
    PessimisticRollback,
}

impl Rpc {
    /// Every RPC kind.
    pub const ALL: [Rpc; 11] = [
        Rpc::Get,
        Rpc::BatchGet,
        Rpc::Scan,
        Rpc::Prewrite,
        Rpc::Commit,
        Rpc::BatchRollback,
        Rpc::CheckTxnStatus,
        Rpc::ResolveLock,
        Rpc::TxnHeartBeat,
        Rpc::PessimisticLock,
        Rpc::PessimisticRollback,
    ];
}

/// A region error a fault answers with (`errorpb.Error`), before the RPC applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionFault {
    /// `NotLeader` naming the (unchanged) leader: the client updates its cache and
    /// retries.
    NotLeader,
    /// `EpochNotMatch` with the current regions: the client reloads and retries.
    EpochNotMatch,
    /// `ServerIsBusy`: returned to the caller by the client (the engine retries).
    ServerIsBusy,
    /// `RegionNotFound`: the client reloads the region and retries.
    RegionNotFound,
    /// `StoreNotMatch`: the client drops its store cache and retries.
    StoreNotMatch,
}

/// One injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this region error instead of applying the RPC.
    Region(RegionFault),
    /// Fail the RPC with gRPC `Unavailable` before it applies.
    Unavailable,
    /// Apply the RPC, then fail it with gRPC `Unavailable`: the response is lost (on the
    /// primary's `KvCommit`: the transaction committed, the client does not know).
    DropResponse,
    /// Wait this long before handling the RPC (past the client's 2 s timeout: the
    /// client sees a gRPC error).
    Delay(Duration),
}

#[derive(Debug)]
pub(crate) struct Region {
    pub(crate) id: u64,
    pub(crate) start: Vec<u8>,
    /// Exclusive; empty = unbounded.
    pub(crate) end: Vec<u8>,
    pub(crate) version: u64,
    pub(crate) conf_ver: u64,
    pub(crate) peer_id: u64,
    /// The store whose peer leads the region.
    pub(crate) leader_store: u64,
}

impl Region {
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    /// The region as PD and TiKV describe it (keys encoded), with a peer on each of
    /// `stores` stores.
    pub(crate) fn meta(&self, stores: u64) -> proto::metapb::Region {
        proto::metapb::Region {
            id: self.id,
            start_key: codec::encode_bytes(&self.start),
            end_key: codec::encode_bytes(&self.end),
            region_epoch: Some(proto::metapb::RegionEpoch {
                conf_ver: self.conf_ver,
                version: self.version,
            }),
            peers: (1..=stores).map(|s| self.peer_on(s)).collect(),
            ..Default::default()
        }
    }

    /// The region's peer on `store` (peer ids are unique across stores).
    pub(crate) fn peer_on(&self, store: u64) -> proto::metapb::Peer {
        proto::metapb::Peer {
            id: self.peer_id + ((store - 1) << 32),
            store_id: store,
            ..Default::default()
        }
    }

    /// The leader peer.
    pub(crate) fn peer(&self) -> proto::metapb::Peer {
        self.peer_on(self.leader_store)
    }
}

/// The largest gRPC message the store accepts or sends, in bytes (64 MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Where an RPC is held by [`TestCluster::hold`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldPoint {
    /// Before the RPC applies (after its fault, if any, was taken).
    BeforeApply,
    /// After the RPC applied, before its response is sent.
    AfterApply,
}

/// The state of a [`Hold`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HoldState {
    Armed,
    Reached,
    Released,
    Failed,
}

#[derive(Debug)]
pub(crate) struct HoldInner {
    rpc: Rpc,
    point: HoldPoint,
    /// Calls of `rpc` still to let through before the held one.
    skip: Mutex<u32>,
    state: tokio::sync::watch::Sender<HoldState>,
}

impl HoldInner {
    /// Parks the current RPC until the hold is released (`true`: go on) or failed
    /// (`false`: answer gRPC `Unavailable`).
    pub(crate) async fn park(&self) -> bool {
        self.state.send_if_modified(|s| {
            let armed = *s == HoldState::Armed;
            if armed {
                *s = HoldState::Reached;
            }
            armed
        });
        let mut rx = self.state.subscribe();
        let r = rx
            .wait_for(|s| matches!(s, HoldState::Released | HoldState::Failed))
            .await
            .map(|s| *s == HoldState::Released);
        r.unwrap_or(true)
    }

    pub(crate) fn point(&self) -> HoldPoint {
        self.point
    }
}

/// One RPC call held by [`TestCluster::hold`]: the test waits until a client's call
/// reaches the hold point ([`Hold::reached`]), does what it wants (kill the client,
/// commit another transaction, move a leader), then lets the call go on
/// ([`Hold::release`]) or fails it ([`Hold::fail`]). Dropping the handle releases the
/// call, so nothing stays parked after a test.
///
/// A call held longer than the client's request timeout (2 s) is given up by the
/// client (a gRPC error: for the primary's `KvCommit`, an undetermined outcome).
#[derive(Debug)]
pub struct Hold {
    inner: Arc<HoldInner>,
}

impl Hold {
    /// Waits until a call reached the hold point, for at most `timeout`; returns
    /// whether one did.
    pub async fn reached(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.state.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s != HoldState::Armed))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether a call is parked at the hold point now.
    pub fn is_parked(&self) -> bool {
        *self.inner.state.borrow() == HoldState::Reached
    }

    /// Lets the held call go on (apply, or send its response).
    pub fn release(&self) {
        self.inner.state.send_replace(HoldState::Released);
    }

    /// Fails the held call with gRPC `Unavailable`: at [`HoldPoint::BeforeApply`] the
    /// RPC never applies; at [`HoldPoint::AfterApply`] it applied and its response is
    /// lost.
    pub fn fail(&self) {
        self.inner.state.send_replace(HoldState::Failed);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.inner.state.send_if_modified(|s| {
            if matches!(s, HoldState::Armed | HoldState::Reached) {
                *s = HoldState::Released;
                true
            } else {
                false
            }
        });
    }
}

/// A lock in the store, as [`TestCluster::locks`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// The locked key (raw).
    pub key: Vec<u8>,
    /// The transaction's primary key.
    pub primary: Vec<u8>,
    /// The transaction's start timestamp (TSO: physical ms << 18 | logical).
    pub start_ts: u64,
    /// Time to live in milliseconds, counted from the physical part of `start_ts`.
    pub ttl_ms: u64,
}

/// The state shared by the PD and TiKV services.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cluster_id: u64,
    /// The PD address (also store 1's).
    pub(crate) addr: String,
    /// Store `i + 1` listens at `store_addrs[i]`.
    pub(crate) store_addrs: Vec<String>,
    /// Stores answering every RPC with gRPC `Unavailable`.
    pub(crate) stopped: Mutex<std::collections::HashSet<u64>>,
    pub(crate) holds: Mutex<Vec<Arc<HoldInner>>>,
    pub(crate) mvcc: Mutex<Mvcc>,
    /// Sorted by start key, covering the keyspace.
    pub(crate) regions: Mutex<Vec<Region>>,
    pub(crate) next_id: Mutex<u64>,
    /// Last timestamp handed out: (physical ms, logical).
    pub(crate) tso: Mutex<(u64, u64)>,
    pub(crate) faults: Mutex<HashMap<Rpc, Vec<(Fault, u32)>>>,
    pub(crate) counts: Mutex<HashMap<Rpc, u64>>,
}

impl Shared {
    /// `count` timestamps; returns the last (TSO: physical wall-clock ms, then 18 bits
    /// of logical counter).
    pub(crate) fn tso(&self, count: u64) -> (u64, u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut t = self.tso.lock();
        let (mut phys, mut logical) = *t;
        if now > phys {
            phys = now;
            logical = count.saturating_sub(1);
        } else {
            logical += count;
            if logical >= 1 << 18 {
                phys += 1;
                logical = count.saturating_sub(1);
            }
        }
        *t = (phys, logical);
        (phys, logical)
    }

    /// One fresh timestamp as a version.
    pub(crate) fn next_ts(&self) -> Ts {
        let (p, l) = self.tso(1);
        (p << 18) | l
    }

    /// The hold that catches this call of `rpc`, if one is armed and its skip count
    /// is used up (the hold is then disarmed).
    pub(crate) fn take_hold(&self, rpc: Rpc) -> Option<Arc<HoldInner>> {
        let mut holds = self.holds.lock();
        // A hold released, failed or dropped before a call reached it is disarmed.
        holds.retain(|h| *h.state.borrow() == HoldState::Armed);
        let i = holds.iter().position(|h| {
            if h.rpc != rpc {
                return false;
            }
            let mut skip = h.skip.lock();
            if *skip == 0 {
                true
            } else {
                *skip -= 1;
                false
            }
        })?;
        Some(holds.remove(i))
    }

    /// The number of stores.
    pub(crate) fn stores(&self) -> u64 {
        self.store_addrs.len() as u64
    }

    /// Takes one shot of the fault queued for `rpc`, if any.
    pub(crate) fn take_fault(&self, rpc: Rpc) -> Option<Fault> {
        *self.counts.lock().entry(rpc).or_default() += 1;
        let mut faults = self.faults.lock();
        let list = faults.get_mut(&rpc)?;
        let (fault, left) = list.first_mut()?;
        let f = *fault;
        *left -= 1;
        if *left == 0 {
            list.remove(0);
        }
        Some(f)
    }
}

/// An in-process PD + one or two TiKV stores, serving gRPC until dropped.
#[derive(Debug)]
pub struct TestCluster {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A tonic server on `listener` with the TiKV service of `store` (and PD with it).
fn serve(
    listener: tokio::net::TcpListener,
    shared: &Arc<Shared>,
    store: u64,
    with_pd: bool,
) -> tokio::task::JoinHandle<()> {
    let tikv = proto::tikvpb::tikv_server::TikvServer::new(server::TikvService {
        shared: shared.clone(),
        store_id: store,
    })
    // TiKV's own gRPC limit (`server.max-grpc-send-msg-len`) is 10 MiB and
    // more; tonic's default of 4 MiB would refuse a large value.
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let pd = with_pd.then(|| {
        proto::pdpb::pd_server::PdServer::new(pd::PdService {
            shared: shared.clone(),
        })
    });
    let router = tonic::transport::Server::builder()
        .add_optional_service(pd)
        .add_service(tikv);
    // No Nagle: a small response must not wait for the client's delayed ACK
    // (40 ms stalls otherwise).
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        s.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    })
}

impl TestCluster {
    /// Binds [`ClusterConfig::addr`] and serves PD and TiKV on it (store 2, if any, on
    /// another free loopback port), on the current tokio runtime, until the cluster is
    /// dropped.
    ///
    /// # Errors
    /// The bind error (address in use, permission); `InvalidInput` for
    /// [`ClusterConfig::stores`] outside 1..=2.
    pub async fn start(config: ClusterConfig) -> std::io::Result<TestCluster> {
        if !(1..=2).contains(&config.stores) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} stores: the test cluster has 1 or 2", config.stores),
            ));
        }
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let mut listeners = vec![listener];
        let mut store_addrs = vec![addr.to_string()];
        for _ in 1..config.stores {
            let l = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            store_addrs.push(l.local_addr()?.to_string());
            listeners.push(l);
        }
        let mut splits = config.split_keys.clone();
        splits.sort();
        splits.dedup();
        splits.retain(|k| !k.is_empty());
        let mut regions = Vec::new();
        let mut start = Vec::new();
        let mut id = 2;
        for end in splits.into_iter().chain([Vec::new()]) {
            regions.push(Region {
                id,
                start: std::mem::replace(&mut start, end.clone()),
                end,
                version: 1,
                conf_ver: 1,
                peer_id: id + 1,
                leader_store: 1,
            });
            id += 2;
        }
        let shared = Arc::new(Shared {
            cluster_id: config.cluster_id,
            addr: addr.to_string(),
            store_addrs,
            stopped: Mutex::default(),
            holds: Mutex::default(),
            mvcc: Mutex::new(Mvcc::default()),
            regions: Mutex::new(regions),
            next_id: Mutex::new(id),
            tso: Mutex::new((0, 0)),
            faults: Mutex::new(HashMap::new()),
            counts: Mutex::new(HashMap::new()),
        });
        let tasks = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| serve(l, &shared, i as u64 + 1, i == 0))
            .collect();
        Ok(TestCluster {
            shared,
            addr,
            tasks,
        })
    }

    /// The PD endpoint, `127.0.0.1:PORT` (what `tikv_client::TransactionClient::new`
    /// and the `tikv://` URL take).
    pub fn pd_addr(&self) -> String {
        self.addr.to_string()
    }

    /// Queues `fault` for the next `times` calls of `rpc` (after the faults already
    /// queued for it). A call that takes a fault counts in [`TestCluster::rpc_count`].
    pub fn inject(&self, rpc: Rpc, fault: Fault, times: u32) {
        if times > 0 {
            self.shared
                .faults
                .lock()
                .entry(rpc)
                .or_default()
                .push((fault, times));
        }
    }

    /// Removes every queued fault.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().clear();
    }

    /// The number of shots still queued for `rpc`.
    pub fn pending_faults(&self, rpc: Rpc) -> u32 {
        self.shared
            .faults
            .lock()
            .get(&rpc)
            .map_or(0, |l| l.iter().map(|(_, n)| n).sum())
    }

    /// How many times `rpc` was called (faulted calls included).
    pub fn rpc_count(&self, rpc: Rpc) -> u64 {
        self.shared.counts.lock().get(&rpc).copied().unwrap_or(0)
    }

    /// Splits the region that contains `key` at `key` while the cluster runs (a live
    /// split, as TiKV's `right_derive_when_split`: the left part gets a new id, both
    /// parts a new epoch version). Clients holding the old region get `EpochNotMatch`
    /// and reload. Returns `false` when `key` already starts a region (or is empty).
    pub fn split(&self, key: &[u8]) -> bool {
        if key.is_empty() {
            return false;
        }
        let mut regions = self.shared.regions.lock();
        let i = regions
            .iter()
            .position(|r| r.contains(key))
            .expect("regions cover the keyspace");
        if regions[i].start == key {
            return false;
        }
        let mut next = self.shared.next_id.lock();
        let id = *next;
        *next += 2;
        let version = regions[i].version + 1;
        let left = Region {
            id,
            start: regions[i].start.clone(),
            end: key.to_vec(),
            version,
            conf_ver: regions[i].conf_ver,
            peer_id: id + 1,
            leader_store: regions[i].leader_store,
        };
        regions[i].start = key.to_vec();
        regions[i].version = version;
        regions.insert(i, left);
        true
    }

    /// Holds the `nth` call of `rpc` from now (1: the next one) at `point`, until the
    /// returned [`Hold`] is released, failed or dropped. Holds are independent of
    /// injected faults (a faulted call is not held) and of each other.
    ///
    /// # Panics
    /// When `nth` is 0.
    pub fn hold(&self, rpc: Rpc, nth: u32, point: HoldPoint) -> Hold {
        assert!(nth > 0, "hold: nth counts from 1");
        let inner = Arc::new(HoldInner {
            rpc,
            point,
            skip: Mutex::new(nth - 1),
            state: tokio::sync::watch::channel(HoldState::Armed).0,
        });
        self.shared.holds.lock().push(inner.clone());
        Hold { inner }
    }

    /// The address of store `store` (1 or 2): store 1 shares PD's.
    ///
    /// # Panics
    /// For a store the cluster does not have.
    pub fn store_addr(&self, store: u64) -> String {
        self.shared.store_addrs[store as usize - 1].clone()
    }

    /// The store whose peer leads the region holding `key`.
    pub fn leader_store(&self, key: &[u8]) -> u64 {
        let regions = self.shared.regions.lock();
        regions
            .iter()
            .find(|r| r.contains(key))
            .map_or(1, |r| r.leader_store)
    }

    /// Moves the leader of the region holding `key` to `store` (a leader transfer:
    /// the epoch is unchanged; the old leader answers `NotLeader` naming the new
    /// one, and PD reports the new leader). Returns whether the leader moved.
    ///
    /// # Panics
    /// For a store the cluster does not have.
    pub fn transfer_leader(&self, key: &[u8], store: u64) -> bool {
        assert!(
            (1..=self.shared.stores()).contains(&store),
            "no store {store}"
        );
        let mut regions = self.shared.regions.lock();
        let r = regions
            .iter_mut()
            .find(|r| r.contains(key))
            .expect("regions cover the keyspace");
        std::mem::replace(&mut r.leader_store, store) != store
    }

    /// Moves every region's leader to `store`; returns how many moved.
    ///
    /// # Panics
    /// For a store the cluster does not have.
    pub fn transfer_all_leaders(&self, store: u64) -> usize {
        assert!(
            (1..=self.shared.stores()).contains(&store),
            "no store {store}"
        );
        let mut regions = self.shared.regions.lock();
        regions
            .iter_mut()
            .map(|r| std::mem::replace(&mut r.leader_store, store) != store)
            .filter(|moved| *moved)
            .count()
    }

    /// Stops store `store`: from now on it answers every TiKV RPC (calls in flight
    /// included, when they reach it) with gRPC `Unavailable`, as a store whose process
    /// is down does to a client; its data stays (the stores share one MVCC state).
    /// Leaders on it stay there until moved ([`TestCluster::transfer_leader`], what
    /// an election does on a real cluster).
    pub fn stop_store(&self, store: u64) {
        self.shared.stopped.lock().insert(store);
    }

    /// Restarts a store stopped by [`TestCluster::stop_store`].
    pub fn restart_store(&self, store: u64) {
        self.shared.stopped.lock().remove(&store);
    }

    /// The keys under `prefix` that have a lock or a write (any version), in key
    /// order: split points that fall between a test's rows.
    pub fn keys(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        self.shared.mvcc.lock().keys_with_prefix(prefix)
    }

    /// The locks in the store, in key order.
    pub fn locks(&self) -> Vec<LockInfo> {
        self.shared
            .mvcc
            .lock()
            .locks()
            .into_iter()
            .map(|(key, l)| LockInfo {
                key,
                primary: l.primary,
                start_ts: l.start_ts,
                ttl_ms: l.ttl_ms,
            })
            .collect()
    }

    /// The regions' raw `[start, end)` boundaries (empty end: unbounded), in key order.
    pub fn regions(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.shared
            .regions
            .lock()
            .iter()
            .map(|r| (r.start.clone(), r.end.clone()))
            .collect()
    }

    /// Leaves the locks of a transaction that prewrote `writes` (`Some`: put, `None`:
    /// delete) and then died: the first key is the primary; the locks carry a TTL of
    /// `ttl_ms` from now (0: already expired). Returns the transaction's start
    /// timestamp. Readers meet the locks, wait until they expire, then roll them back
    /// (Percolator's lock cleanup).
    ///
    /// # Panics
    /// When one of the keys is locked already (wait for [`TestCluster::settle`] after a
    /// commit: its secondaries are committed in the background).
    pub fn orphan_locks(&self, writes: &[(Vec<u8>, Option<Vec<u8>>)], ttl_ms: u64) -> u64 {
        let start_ts = self.shared.next_ts();
        let Some((primary, _)) = writes.first() else {
            return start_ts;
        };
        let mut mvcc = self.shared.mvcc.lock();
        for (k, _) in writes {
            assert!(
                mvcc.key_state(k).and_then(|s| s.lock.as_ref()).is_none(),
                "orphan_locks: key {k:?} is locked already"
            );
        }
        for (k, v) in writes {
            mvcc.put_lock(
                k,
                Lock {
                    primary: primary.clone(),
                    start_ts,
                    ttl_ms,
                    kind: v.clone().map_or(LockKind::Delete, LockKind::Put),
                    for_update_ts: 0,
                    min_commit_ts: start_ts + 1,
                    txn_size: writes.len() as u64,
                },
            );
        }
        start_ts
    }

    /// The number of locks in the store (a finished transaction leaves none, once its
    /// secondaries are committed or resolved).
    pub fn lock_count(&self) -> usize {
        self.shared.mvcc.lock().locks().len()
    }

    /// Waits until no lock is left (the background commit of a transaction's
    /// secondaries is done), polling every 10 ms for at most `timeout`. Returns whether
    /// the store is free of locks.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.lock_count() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The newest committed value of `key` (a direct look at the store, for tests).
    pub fn committed_value(&self, key: &[u8]) -> Option<Vec<u8>> {
        let ts = self.shared.next_ts();
        let mvcc = self.shared.mvcc.lock();
        let state = mvcc.key_state(key)?;
        state
            .writes
            .range(..=ts)
            .rev()
            .find_map(|(_, w)| match &w.kind {
                mvcc::WriteKind::Put(v) => Some(Some(v.clone())),
                mvcc::WriteKind::Delete => Some(None),
                _ => None,
            })
            .flatten()
    }

    /// The number of committed writes (puts and deletes) of `key`, over its history.
    pub fn commit_count(&self, key: &[u8]) -> usize {
        let mvcc = self.shared.mvcc.lock();
        mvcc.key_state(key).map_or(0, |s| {
            s.writes
                .values()
                .filter(|w| matches!(w.kind, mvcc::WriteKind::Put(_) | mvcc::WriteKind::Delete))
                .count()
        })
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
