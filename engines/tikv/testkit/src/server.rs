//! The TiKV service: the transactional RPCs tikv-client sends
//! (`src/transaction/requests.rs` in tikv/client-rust), on the [`crate::mvcc`] store.
//!
//! Every request is first checked against the region its context names, as TiKV's
//! `src/storage/` + raftstore do: an unknown region is `RegionNotFound`, another store
//! `StoreNotMatch`, a stale epoch `EpochNotMatch` (with the current regions), a key
//! outside the region `KeyNotInRegion`. Scans are clamped to the region. Lock errors are
//! where the client looks for them: `error.locked` for `KvGet`/`KvCommit`, per pair for
//! `KvScan`/`KvBatchGet`, in `errors[]` for `KvPrewrite`/`KvPessimisticLock`.

// Errors are the wire messages themselves (large, built only on the error path).
#![allow(clippy::result_large_err)]

use crate::mvcc::{PrewriteMutation, TxnStatus};
use crate::proto::errorpb;
use crate::proto::kvrpcpb::{self, Context, KvPair};
use crate::proto::tikvpb::tikv_server::Tikv;
use crate::{Fault, HoldPoint, RegionFault, Rpc, Shared};
use std::ops::Bound;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The TiKV gRPC service of one store of a [`crate::TestCluster`].
#[derive(Debug)]
pub struct TikvService {
    pub(crate) shared: Arc<Shared>,
    /// The store this service is.
    pub(crate) store_id: u64,
}

/// A response type with a `region_error` field.
trait RegionErr: Default {
    fn set(&mut self, e: errorpb::Error);
}

macro_rules! region_err {
    ($($t:ty),*) => {$(
        impl RegionErr for $t {
            fn set(&mut self, e: errorpb::Error) {
                self.region_error = Some(e);
            }
        }
    )*};
}
region_err!(
    kvrpcpb::GetResponse,
    kvrpcpb::BatchGetResponse,
    kvrpcpb::ScanResponse,
    kvrpcpb::PrewriteResponse,
    kvrpcpb::CommitResponse,
    kvrpcpb::BatchRollbackResponse,
    kvrpcpb::CheckTxnStatusResponse,
    kvrpcpb::ResolveLockResponse,
    kvrpcpb::TxnHeartBeatResponse,
    kvrpcpb::PessimisticLockResponse,
    kvrpcpb::PessimisticRollbackResponse
);

/// The region a request may touch: raw `[start, end)` (empty end: unbounded).
struct Range {
    start: Vec<u8>,
    end: Vec<u8>,
}

impl TikvService {
    fn region_error(&self, fault: RegionFault, region_id: u64) -> errorpb::Error {
        let stores = self.shared.stores();
        let regions = self.shared.regions.lock();
        let mut e = errorpb::Error {
            message: format!("injected {fault:?}"),
            ..Default::default()
        };
        match fault {
            RegionFault::NotLeader => {
                e.not_leader = Some(errorpb::NotLeader {
                    region_id,
                    leader: regions.iter().find(|r| r.id == region_id).map(|r| r.peer()),
                });
            }
            RegionFault::EpochNotMatch => {
                e.epoch_not_match = Some(errorpb::EpochNotMatch {
                    current_regions: regions.iter().map(|r| r.meta(stores)).collect(),
                });
            }
            RegionFault::ServerIsBusy => {
                e.server_is_busy = Some(errorpb::ServerIsBusy {
                    reason: "injected".into(),
                    backoff_ms: 5,
                    ..Default::default()
                });
            }
            RegionFault::RegionNotFound => {
                e.region_not_found = Some(errorpb::RegionNotFound { region_id });
            }
            RegionFault::StoreNotMatch => {
                e.store_not_match = Some(errorpb::StoreNotMatch {
                    request_store_id: self.store_id,
                    actual_store_id: self.store_id,
                });
            }
        }
        e
    }

    /// Checks the request's region; `keys` must all lie in it.
    fn check_region(&self, ctx: &Option<Context>, keys: &[&[u8]]) -> Result<Range, errorpb::Error> {
        let ctx = ctx.clone().unwrap_or_default();
        let regions = self.shared.regions.lock();
        let Some(region) = regions.iter().find(|r| r.id == ctx.region_id) else {
            return Err(errorpb::Error {
                message: format!("region {} not found", ctx.region_id),
                region_not_found: Some(errorpb::RegionNotFound {
                    region_id: ctx.region_id,
                }),
                ..Default::default()
            });
        };
        if let Some(peer) = &ctx.peer
            && peer.store_id != self.store_id
        {
            return Err(errorpb::Error {
                message: "store not match".into(),
                store_not_match: Some(errorpb::StoreNotMatch {
                    request_store_id: peer.store_id,
                    actual_store_id: self.store_id,
                }),
                ..Default::default()
            });
        }
        if region.leader_store != self.store_id {
            return Err(errorpb::Error {
                message: format!(
                    "peer of region {} on store {} is not leader",
                    region.id, self.store_id
                ),
                not_leader: Some(errorpb::NotLeader {
                    region_id: region.id,
                    leader: Some(region.peer()),
                }),
                ..Default::default()
            });
        }
        let epoch = ctx.region_epoch.unwrap_or_default();
        if epoch.version != region.version || epoch.conf_ver != region.conf_ver {
            let stores = self.shared.stores();
            return Err(errorpb::Error {
                message: format!("epoch not match for region {}", region.id),
                epoch_not_match: Some(errorpb::EpochNotMatch {
                    current_regions: regions.iter().map(|r| r.meta(stores)).collect(),
                }),
                ..Default::default()
            });
        }
        if let Some(key) = keys.iter().find(|k| !region.contains(k)) {
            return Err(errorpb::Error {
                message: "key not in region".into(),
                key_not_in_region: Some(errorpb::KeyNotInRegion {
                    key: key.to_vec(),
                    region_id: region.id,
                    start_key: crate::codec::encode_bytes(&region.start),
                    end_key: crate::codec::encode_bytes(&region.end),
                }),
                ..Default::default()
            });
        }
        Ok(Range {
            start: region.start.clone(),
            end: region.end.clone(),
        })
    }

    /// A stopped store's answer.
    fn check_stopped(&self, rpc: Rpc) -> Result<(), Status> {
        if self.shared.stopped.lock().contains(&self.store_id) {
            return Err(Status::unavailable(format!(
                "store {} is stopped ({rpc:?})",
                self.store_id
            )));
        }
        Ok(())
    }

    /// Runs one RPC: counts it, applies a queued fault, parks it at an armed hold,
    /// checks the store is up and the region, then `f`.
    async fn run<R: RegionErr>(
        &self,
        rpc: Rpc,
        ctx: &Option<Context>,
        keys: &[&[u8]],
        f: impl FnOnce(&Shared, Range) -> R,
    ) -> Result<Response<R>, Status> {
        self.check_stopped(rpc)?;
        let fault = self.shared.take_fault(rpc);
        let hold = if fault.is_none() {
            self.shared.take_hold(rpc)
        } else {
            None
        };
        if let Some(h) = &hold
            && h.point() == HoldPoint::BeforeApply
        {
            if !h.park().await {
                return Err(Status::unavailable(format!(
                    "injected: held {rpc:?} failed before it applied"
                )));
            }
            self.check_stopped(rpc)?;
        }
        let region_id = ctx.as_ref().map_or(0, |c| c.region_id);
        match fault {
            Some(Fault::Region(kind)) => {
                let mut r = R::default();
                r.set(self.region_error(kind, region_id));
                return Ok(Response::new(r));
            }
            Some(Fault::Unavailable) => {
                return Err(Status::unavailable(format!(
                    "injected: {rpc:?} unavailable"
                )));
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(Fault::DropResponse) | None => {}
        }
        let range = match self.check_region(ctx, keys) {
            Ok(r) => r,
            Err(e) => {
                let mut r = R::default();
                r.set(e);
                return Ok(Response::new(r));
            }
        };
        let resp = f(&self.shared, range);
        if let Some(h) = &hold
            && h.point() == HoldPoint::AfterApply
            && !h.park().await
        {
            return Err(Status::unavailable(format!(
                "injected: held {rpc:?} applied, response dropped"
            )));
        }
        if fault == Some(Fault::DropResponse) {
            return Err(Status::unavailable(format!(
                "injected: {rpc:?} applied, response dropped"
            )));
        }
        Ok(Response::new(resp))
    }
}

fn pair(
    key: Vec<u8>,
    r: Result<Option<Vec<u8>>, kvrpcpb::KeyError>,
    key_only: bool,
) -> Option<KvPair> {
    match r {
        Ok(Some(v)) => Some(KvPair {
            key,
            value: if key_only { Vec::new() } else { v },
            error: None,
        }),
        Ok(None) => None,
        Err(e) => Some(KvPair {
            key,
            value: Vec::new(),
            error: Some(e),
        }),
    }
}

#[tonic::async_trait]
impl Tikv for TikvService {
    async fn kv_get(
        &self,
        request: Request<kvrpcpb::GetRequest>,
    ) -> Result<Response<kvrpcpb::GetResponse>, Status> {
        let req = request.into_inner();
        self.run(Rpc::Get, &req.context, &[&req.key], |s, _| {
            match s.mvcc.lock().get(&req.key, req.version) {
                Ok(Some(value)) => kvrpcpb::GetResponse {
                    value,
                    ..Default::default()
                },
                Ok(None) => kvrpcpb::GetResponse {
                    not_found: true,
                    ..Default::default()
                },
                Err(e) => kvrpcpb::GetResponse {
                    error: Some(e),
                    ..Default::default()
                },
            }
        })
        .await
    }

    async fn kv_batch_get(
        &self,
        request: Request<kvrpcpb::BatchGetRequest>,
    ) -> Result<Response<kvrpcpb::BatchGetResponse>, Status> {
        let req = request.into_inner();
        let keys: Vec<&[u8]> = req.keys.iter().map(Vec::as_slice).collect();
        self.run(Rpc::BatchGet, &req.context, &keys, |s, _| {
            let mvcc = s.mvcc.lock();
            kvrpcpb::BatchGetResponse {
                pairs: req
                    .keys
                    .iter()
                    .filter_map(|k| pair(k.clone(), mvcc.get(k, req.version), false))
                    .collect(),
                ..Default::default()
            }
        })
        .await
    }

    async fn kv_scan(
        &self,
        request: Request<kvrpcpb::ScanRequest>,
    ) -> Result<Response<kvrpcpb::ScanResponse>, Status> {
        let req = request.into_inner();
        self.run(Rpc::Scan, &req.context, &[], |s, region| {
            // Forward: [start_key, end_key). Reverse: start_key is the exclusive upper
            // bound, end_key the inclusive lower one. Empty = unbounded. Clamped to
            // the region.
            let (lo, hi) = if req.reverse {
                (&req.end_key, &req.start_key)
            } else {
                (&req.start_key, &req.end_key)
            };
            let lo = lo.max(&region.start).clone();
            let hi = match (hi.is_empty(), region.end.is_empty()) {
                (true, true) => None,
                (true, false) => Some(region.end.clone()),
                (false, true) => Some(hi.clone()),
                (false, false) => Some(hi.min(&region.end).clone()),
            };
            let hi_bound = hi.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let mvcc = s.mvcc.lock();
            let mut keys = mvcc.keys_in(Bound::Included(&lo), hi_bound);
            if req.reverse {
                keys.reverse();
            }
            let limit = if req.limit == 0 {
                usize::MAX
            } else {
                req.limit as usize
            };
            let pairs = keys
                .into_iter()
                .filter_map(|k| {
                    let r = mvcc.get(&k, req.version);
                    pair(k, r, req.key_only)
                })
                .take(limit)
                .collect();
            kvrpcpb::ScanResponse {
                pairs,
                ..Default::default()
            }
        })
        .await
    }

    async fn kv_prewrite(
        &self,
        request: Request<kvrpcpb::PrewriteRequest>,
    ) -> Result<Response<kvrpcpb::PrewriteResponse>, Status> {
        let req = request.into_inner();
        let keys: Vec<&[u8]> = req.mutations.iter().map(|m| m.key.as_slice()).collect();
        self.run(Rpc::Prewrite, &req.context, &keys, |s, _| {
            let mutations: Vec<PrewriteMutation> = req
                .mutations
                .iter()
                .enumerate()
                .map(|(i, m)| PrewriteMutation {
                    op: kvrpcpb::Op::try_from(m.op).unwrap_or(kvrpcpb::Op::Put),
                    key: m.key.clone(),
                    value: m.value.clone(),
                    pessimistic: req.pessimistic_actions.get(i).copied()
                        == Some(
                            kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck as i32,
                        ),
                })
                .collect();
            let errors = s.mvcc.lock().prewrite(
                &mutations,
                &req.primary_lock,
                req.start_version,
                req.lock_ttl,
                req.for_update_ts,
                req.min_commit_ts,
                req.txn_size,
            );
            kvrpcpb::PrewriteResponse {
                errors,
                ..Default::default()
            }
        })
        .await
    }

    async fn kv_commit(
        &self,
        request: Request<kvrpcpb::CommitRequest>,
    ) -> Result<Response<kvrpcpb::CommitResponse>, Status> {
        let req = request.into_inner();
        let keys: Vec<&[u8]> = req.keys.iter().map(Vec::as_slice).collect();
        self.run(Rpc::Commit, &req.context, &keys, |s, _| {
            match s
                .mvcc
                .lock()
                .commit(&req.keys, req.start_version, req.commit_version)
            {
                Ok(()) => kvrpcpb::CommitResponse {
                    commit_version: req.commit_version,
                    ..Default::default()
                },
                Err(e) => kvrpcpb::CommitResponse {
                    error: Some(e),
                    ..Default::default()
                },
            }
        })
        .await
    }

    async fn kv_batch_rollback(
        &self,
        request: Request<kvrpcpb::BatchRollbackRequest>,
    ) -> Result<Response<kvrpcpb::BatchRollbackResponse>, Status> {
        let req = request.into_inner();
        let keys: Vec<&[u8]> = req.keys.iter().map(Vec::as_slice).collect();
        self.run(Rpc::BatchRollback, &req.context, &keys, |s, _| {
            kvrpcpb::BatchRollbackResponse {
                error: s
                    .mvcc
                    .lock()
                    .batch_rollback(&req.keys, req.start_version)
                    .err(),
                ..Default::default()
            }
        })
        .await
    }

    async fn kv_check_txn_status(
        &self,
        request: Request<kvrpcpb::CheckTxnStatusRequest>,
    ) -> Result<Response<kvrpcpb::CheckTxnStatusResponse>, Status> {
        let req = request.into_inner();
        self.run(
            Rpc::CheckTxnStatus,
            &req.context,
            &[&req.primary_key],
            |s, _| {
                let status = s.mvcc.lock().check_txn_status(
                    &req.primary_key,
                    req.lock_ts,
                    req.current_ts,
                    req.rollback_if_not_exist,
                    req.resolving_pessimistic_lock,
                );
                match status {
                    Ok(TxnStatus::RolledBack(action)) => kvrpcpb::CheckTxnStatusResponse {
                        action: action as i32,
                        ..Default::default()
                    },
                    Ok(TxnStatus::Committed(ts)) => kvrpcpb::CheckTxnStatusResponse {
                        commit_version: ts,
                        ..Default::default()
                    },
                    Ok(TxnStatus::Locked(info)) => kvrpcpb::CheckTxnStatusResponse {
                        lock_ttl: info.lock_ttl.max(1),
                        lock_info: Some(info),
                        ..Default::default()
                    },
                    Err(e) => kvrpcpb::CheckTxnStatusResponse {
                        error: Some(e),
                        ..Default::default()
                    },
                }
            },
        )
        .await
    }

    async fn kv_resolve_lock(
        &self,
        request: Request<kvrpcpb::ResolveLockRequest>,
    ) -> Result<Response<kvrpcpb::ResolveLockResponse>, Status> {
        let req = request.into_inner();
        let keys: Vec<&[u8]> = req.keys.iter().map(Vec::as_slice).collect();
        self.run(Rpc::ResolveLock, &req.context, &keys, |s, region| {
            let txns: Vec<(u64, u64)> = if req.txn_infos.is_empty() {
                vec![(req.start_version, req.commit_version)]
            } else {
                req.txn_infos.iter().map(|t| (t.txn, t.status)).collect()
            };
            kvrpcpb::ResolveLockResponse {
                error: s
                    .mvcc
                    .lock()
                    .resolve_locks(&txns, &req.keys, &region.start, &region.end)
                    .err(),
                ..Default::default()
            }
        })
        .await
    }

    async fn kv_txn_heart_beat(
        &self,
        request: Request<kvrpcpb::TxnHeartBeatRequest>,
    ) -> Result<Response<kvrpcpb::TxnHeartBeatResponse>, Status> {
        let req = request.into_inner();
        self.run(
            Rpc::TxnHeartBeat,
            &req.context,
            &[&req.primary_lock],
            |s, _| match s.mvcc.lock().heartbeat(
                &req.primary_lock,
                req.start_version,
                req.advise_lock_ttl,
            ) {
                Ok(ttl) => kvrpcpb::TxnHeartBeatResponse {
                    lock_ttl: ttl,
                    ..Default::default()
                },
                Err(e) => kvrpcpb::TxnHeartBeatResponse {
                    error: Some(e),
                    ..Default::default()
                },
            },
        )
        .await
    }

    async fn kv_pessimistic_lock(
        &self,
        request: Request<kvrpcpb::PessimisticLockRequest>,
    ) -> Result<Response<kvrpcpb::PessimisticLockResponse>, Status> {
        let req = request.into_inner();
        let keys: Vec<&[u8]> = req.mutations.iter().map(|m| m.key.as_slice()).collect();
        self.run(Rpc::PessimisticLock, &req.context, &keys, |s, _| {
            let keys: Vec<Vec<u8>> = req.mutations.iter().map(|m| m.key.clone()).collect();
            match s.mvcc.lock().pessimistic_lock(
                &keys,
                &req.primary_lock,
                req.start_version,
                req.lock_ttl,
                req.for_update_ts,
                req.min_commit_ts,
            ) {
                Ok(values) => kvrpcpb::PessimisticLockResponse {
                    not_founds: values.iter().map(Option::is_none).collect(),
                    values: values.into_iter().map(Option::unwrap_or_default).collect(),
                    ..Default::default()
                },
                Err(errors) => kvrpcpb::PessimisticLockResponse {
                    errors,
                    ..Default::default()
                },
            }
        })
        .await
    }

    async fn kv_pessimistic_rollback(
        &self,
        request: Request<kvrpcpb::PessimisticRollbackRequest>,
    ) -> Result<Response<kvrpcpb::PessimisticRollbackResponse>, Status> {
        let req = request.into_inner();
        let keys: Vec<&[u8]> = req.keys.iter().map(Vec::as_slice).collect();
        self.run(Rpc::PessimisticRollback, &req.context, &keys, |s, _| {
            s.mvcc
                .lock()
                .pessimistic_rollback(&req.keys, req.start_version, req.for_update_ts);
            kvrpcpb::PessimisticRollbackResponse::default()
        })
        .await
    }
}
