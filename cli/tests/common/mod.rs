//! What every test of the `datalayer` binary shares.

use std::process::Command;

/// Runs the built `datalayer` with `args`: whether it exited with status 0, its
/// standard output and its standard error.
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_datalayer"))
        .args(args)
        .output()
        .expect("run datalayer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
