//! `tikv-test-cluster --addr 127.0.0.1:PORT [--split KEY]...`: runs the in-process PD +
//! TiKV of `datalayer-tikv-testkit` until interrupted, so that examples, the bench and
//! a user can connect (`tikv://127.0.0.1:PORT`). State lives in memory only.

use datalayer_tikv_testkit::{ClusterConfig, TestCluster};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = ClusterConfig {
        addr: "127.0.0.1:2379".parse()?,
        ..ClusterConfig::default()
    };
    let mut splits = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => config.addr = args.next().ok_or("--addr needs a value")?.parse()?,
            "--split" => splits.push(args.next().ok_or("--split needs a key")?.into_bytes()),
            "-h" | "--help" => {
                println!(
                    "tikv-test-cluster [--addr 127.0.0.1:2379] [--split KEY]...\n\
                     An in-memory PD + TiKV for tests (default splits: b, i, r)."
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    if !splits.is_empty() {
        config.split_keys = splits;
    }
    let cluster = TestCluster::start(config).await?;
    println!(
        "tikv-test-cluster: PD at {} ({} regions); Ctrl-C to stop",
        cluster.pd_addr(),
        cluster.regions().len()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
