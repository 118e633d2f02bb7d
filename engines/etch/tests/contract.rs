//! The KvStore contract of `datalayer_kv::contract` on etch: in memory and on disk.

mod memory {
    datalayer_kv::kv_contract_tests!(async { datalayer_etch::memory() });
}

mod disk {
    datalayer_kv::kv_contract_tests!(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = datalayer_etch::open(dir.path(), Default::default())
            .await
            .expect("open etch");
        // The directory outlives the store (the pair is dropped in field order).
        (engine, dir)
    });
}
