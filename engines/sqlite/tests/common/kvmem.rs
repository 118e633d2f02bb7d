//! A minimal in-memory `KvStore` (a `BTreeMap` behind a mutex, snapshot per
//! transaction) so the tests can run the KV family next to SQLite and compare.

use async_trait::async_trait;
use datalayer_core::{Capability, Result, TxOptions};
use datalayer_kv::{Bytes, KvEngine, KvStore, KvTxn, WriteSet};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

type Map = BTreeMap<Bytes, Bytes>;

#[derive(Default, Clone)]
pub struct MemKv(Arc<Mutex<Map>>);

struct MemTxn {
    snap: Map,
    store: Arc<Mutex<Map>>,
}

#[async_trait]
impl KvStore for MemKv {
    fn name(&self) -> &'static str {
        "memkv"
    }
    fn capability(&self) -> Capability {
        Capability {
            serializable: true,
            savepoints: true,
            read_only_tx: true,
            ..Capability::default()
        }
    }
    async fn begin(&self, _opts: TxOptions) -> Result<Box<dyn KvTxn>> {
        Ok(Box::new(MemTxn {
            snap: self.0.lock().clone(),
            store: self.0.clone(),
        }))
    }
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl KvTxn for MemTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.snap.get(key).cloned())
    }
    async fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
            (start, end)
            && (s > e
                || (s == e
                    && !(matches!(start, Bound::Included(_)) && matches!(end, Bound::Included(_)))))
        {
            return Ok(Vec::new());
        }
        let r = self
            .snap
            .range::<[u8], _>((start, end))
            .map(|(k, v)| (k.clone(), v.clone()));
        Ok(if reverse {
            r.rev().take(limit).collect()
        } else {
            r.take(limit).collect()
        })
    }
    async fn commit(self: Box<Self>, writes: WriteSet) -> Result<()> {
        let mut m = self.store.lock();
        for (k, v) in writes {
            match v {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
        Ok(())
    }
    async fn rollback(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

pub fn engine() -> KvEngine {
    KvEngine::new(MemKv::default())
}
