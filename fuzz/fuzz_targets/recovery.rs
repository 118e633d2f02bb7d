//! libFuzzer target: the bytes go to etch as described by `FuzzTarget::Recovery`; any
//! outcome but a panic (or a hang) is fine.
#![no_main]

use datalayer_etch::storage::torture::{FuzzTarget, fuzz_one};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fuzz_one(FuzzTarget::Recovery, data);
});
