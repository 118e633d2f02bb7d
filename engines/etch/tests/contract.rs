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

mod small_txn_limit {
    // A write-set limit small enough for the max_txn_bytes case to test.
    datalayer_kv::kv_contract_tests!(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = datalayer_etch::EtchOptions {
            max_txn_bytes: 4099,
            ..Default::default()
        };
        let engine = datalayer_etch::open(dir.path(), opts)
            .await
            .expect("open etch");
        (engine, dir)
    });
}
