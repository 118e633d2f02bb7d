//! A few workloads of the power-loss and I/O-fault torture tests (the
//! `datalayer-torture` binary runs hundreds): every sync point × every damage variant,
//! and every failing I/O operation.

use datalayer_etch::storage::torture;

#[test]
fn power_loss_at_every_sync_point() {
    let report = torture::power_loss(4, 16, 0x9e37);
    println!("power-loss: {report}");
    assert!(report.sync_points > 20, "{report}");
    assert!(report.ok(), "{report}\n{:#?}", report.failures);
}

#[test]
fn io_failure_at_every_operation() {
    let report = torture::io_faults(2, 10, 0x51ed);
    println!("io-faults: {report}");
    assert!(report.failures_injected > 20, "{report}");
    assert!(report.ok(), "{report}\n{:#?}", report.failures);
}
