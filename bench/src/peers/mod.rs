//! The stores under test, one file each.
//!
//! To add a target (for example "datalayer on etch"): write a file here with
//! a type implementing [`Target`](crate::workloads::Target), declare its
//! module below, and add one [`Entry`] to [`targets`]. The first entry is the
//! baseline of every ratio column, so the project's own engine goes first.

use crate::workloads::{CdcInserter, FlightsLoader, SetupFn, boxed_setup};

pub mod datalayer_etch;
pub mod datalayer_sqlite;
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
            key: "datalayer-sqlite",
            setup: boxed_setup::<datalayer_sqlite::DatalayerSqlite>,
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
    vec![
        Box::new(datalayer_etch::DatalayerEtchFlights),
        Box::new(datalayer_sqlite::DatalayerSqliteFlights),
        Box::new(rusqlite::RusqliteFlights),
    ]
}

/// Every store that implements workload 7 (inserts with change capture vs
/// without): datalayer-sqlite (`Db::enable_changes`) and raw rusqlite (a
/// hand-written trigger), plus raw rusqlite inserting into the tables and
/// triggers datalayer-sqlite created (separates trigger cost from layer cost).
pub fn cdc_inserters() -> Vec<Box<dyn CdcInserter>> {
    vec![
        Box::new(datalayer_sqlite::DATALAYER_SQLITE_CDC),
        Box::new(rusqlite::RusqliteCdc),
        Box::new(datalayer_sqlite::RawOnDatalayerSchemaCdc),
        Box::new(datalayer_sqlite::DATALAYER_ETCH_CDC),
    ]
}
