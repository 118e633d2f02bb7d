//! The KvStore contract of `datalayer_kv::contract` on TiKV (the in-process test
//! cluster with 4 regions, or `DATALAYER_TIKV_PD`): optimistic, pessimistic, and with a
//! write-set limit small enough for the `max_txn_bytes` case.

mod common;

mod optimistic {
    datalayer_kv::kv_contract_tests!(super::common::engine(datalayer_tikv::TxnMode::Optimistic));
}

mod pessimistic {
    datalayer_kv::kv_contract_tests!(super::common::engine(datalayer_tikv::TxnMode::Pessimistic));
}

mod small_txn_limit {
    datalayer_kv::kv_contract_tests!(super::common::engine_with(
        datalayer_tikv::TxnMode::Optimistic,
        |o| o.max_txn_bytes = 4099
    ));
}
