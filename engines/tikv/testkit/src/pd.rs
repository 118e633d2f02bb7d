//! The PD service: what tikv-client's `src/pd/cluster.rs` and `src/pd/timestamp.rs`
//! call. Every response carries a `header` with the cluster id.

// The TSO stream's items are `Result<_, Status>` (tonic's shape).
#![allow(clippy::result_large_err)]

use crate::proto::metapb;
use crate::proto::pdpb::{self, pd_server::Pd};
use crate::{Shared, codec};
use futures::StreamExt;
use std::sync::Arc;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

/// The PD gRPC service of a [`crate::TestCluster`].
#[derive(Debug)]
pub struct PdService {
    pub(crate) shared: Arc<Shared>,
}

impl PdService {
    fn header(&self) -> Option<pdpb::ResponseHeader> {
        Some(pdpb::ResponseHeader {
            cluster_id: self.shared.cluster_id,
            error: None,
        })
    }

    fn store(&self, id: u64) -> metapb::Store {
        metapb::Store {
            id,
            address: self.shared.store_addrs[id as usize - 1].clone(),
            state: metapb::StoreState::Up as i32,
            version: "8.5.0".into(),
            ..Default::default()
        }
    }

    fn region_response(&self, find: impl Fn(&crate::Region) -> bool) -> pdpb::GetRegionResponse {
        let stores = self.shared.stores();
        let regions = self.shared.regions.lock();
        match regions.iter().find(|r| find(r)) {
            Some(r) => pdpb::GetRegionResponse {
                header: self.header(),
                region: Some(r.meta(stores)),
                leader: Some(r.peer()),
                ..Default::default()
            },
            None => pdpb::GetRegionResponse {
                header: self.header(),
                ..Default::default()
            },
        }
    }
}

#[tonic::async_trait]
impl Pd for PdService {
    async fn get_members(
        &self,
        _request: Request<pdpb::GetMembersRequest>,
    ) -> Result<Response<pdpb::GetMembersResponse>, Status> {
        let member = pdpb::Member {
            name: "pd-test".into(),
            member_id: 1,
            peer_urls: vec![format!("http://{}", self.shared.addr)],
            client_urls: vec![format!("http://{}", self.shared.addr)],
            ..Default::default()
        };
        Ok(Response::new(pdpb::GetMembersResponse {
            header: self.header(),
            members: vec![member.clone()],
            leader: Some(member.clone()),
            etcd_leader: Some(member),
            ..Default::default()
        }))
    }

    async fn tso(
        &self,
        request: Request<Streaming<pdpb::TsoRequest>>,
    ) -> Result<Response<BoxStream<pdpb::TsoResponse>>, Status> {
        let shared = self.shared.clone();
        let header = self.header();
        let stream = request.into_inner().map(move |req| {
            let req = req?;
            let count = u64::from(req.count.max(1));
            let (physical, logical) = shared.tso(count);
            Ok(pdpb::TsoResponse {
                header: header.clone(),
                count: req.count,
                timestamp: Some(pdpb::Timestamp {
                    physical: physical as i64,
                    logical: logical as i64,
                    suffix_bits: 0,
                }),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_store(
        &self,
        request: Request<pdpb::GetStoreRequest>,
    ) -> Result<Response<pdpb::GetStoreResponse>, Status> {
        let id = request.into_inner().store_id;
        if !(1..=self.shared.stores()).contains(&id) {
            return Err(Status::not_found(format!("no store {id}")));
        }
        Ok(Response::new(pdpb::GetStoreResponse {
            header: self.header(),
            store: Some(self.store(id)),
            stats: None,
        }))
    }

    async fn get_all_stores(
        &self,
        _request: Request<pdpb::GetAllStoresRequest>,
    ) -> Result<Response<pdpb::GetAllStoresResponse>, Status> {
        Ok(Response::new(pdpb::GetAllStoresResponse {
            header: self.header(),
            stores: (1..=self.shared.stores())
                .map(|id| self.store(id))
                .collect(),
        }))
    }

    async fn get_region(
        &self,
        request: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let encoded = request.into_inner().region_key;
        let key = codec::decode_bytes(&encoded)
            .ok_or_else(|| Status::invalid_argument("region key is not memcomparable-encoded"))?;
        Ok(Response::new(self.region_response(|r| r.contains(&key))))
    }

    async fn get_region_by_id(
        &self,
        request: Request<pdpb::GetRegionByIdRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let id = request.into_inner().region_id;
        Ok(Response::new(self.region_response(|r| r.id == id)))
    }

    async fn get_gc_safe_point(
        &self,
        _request: Request<pdpb::GetGcSafePointRequest>,
    ) -> Result<Response<pdpb::GetGcSafePointResponse>, Status> {
        Ok(Response::new(pdpb::GetGcSafePointResponse {
            header: self.header(),
            safe_point: 0,
        }))
    }
}
