//! The stores under test, one file each.
//!
//! To add a target (for example "datalayer on etch"): write a file here with
//! a type implementing [`Target`](crate::workloads::Target), declare its
//! module below, and add one [`Entry`] to [`targets`]. The first entry is the
//! baseline of every ratio column, so the project's own engine goes first.

use crate::workloads::{FlightsLoader, SetupFn, boxed_setup};

pub mod datalayer_etch;
pub mod etchdb;
pub mod redb;
pub mod rusqlite;

/// One registered target.
pub struct Entry {
    /// Key for `--only` (lower case, no spaces).
    pub key: &'static str,
    /// Opens the target with the preloaded rows.
    pub setup: SetupFn,
}

/// Every target, baseline first.
pub fn targets() -> Vec<Entry> {
    vec![
        Entry {
            key: "datalayer-etch",
            setup: boxed_setup::<datalayer_etch::DatalayerEtch>,
        },
        Entry {
            key: "etchdb",
            setup: boxed_setup::<etchdb::Etch>,
        },
        Entry {
            key: "redb",
            setup: boxed_setup::<redb::Redb>,
        },
        Entry {
            key: "rusqlite",
            setup: boxed_setup::<rusqlite::Rusqlite>,
        },
    ]
}

/// Every store that implements workload 6 (flights bulk load), baseline first.
pub fn flights_loaders() -> Vec<Box<dyn FlightsLoader>> {
    vec![Box::new(datalayer_etch::DatalayerEtchFlights), Box::new(rusqlite::RusqliteFlights)]
}
