//! The KvStore contract of `datalayer_kv::contract` on the Redis server
//! (`DATALAYER_REDIS_URL`, default `redis://127.0.0.1:6379`), each case in its own
//! namespace, removed at the end of the case.

mod common;

mod defaults {
    datalayer_kv::kv_contract_tests!(super::common::fresh(""));
}

mod small_txn_limit {
    // A write-set limit small enough for the max_txn_bytes case to test exactly.
    datalayer_kv::kv_contract_tests!(super::common::fresh(
        "max_txn_bytes=4099&max_value_bytes=4099"
    ));
}

mod bucket_validation {
    // Every scan validated by bucket versions (none exactly), with one-byte buckets:
    // a scan validates against most of the namespace.
    datalayer_kv::kv_contract_tests!(super::common::fresh(
        "exact_scan_keys=0&bucket_prefix_bytes=1&pool_size=1"
    ));
}

mod default_buckets_by_version {
    // Every scan validated by bucket versions, with the default buckets.
    datalayer_kv::kv_contract_tests!(super::common::fresh("exact_scan_keys=0"));
}
