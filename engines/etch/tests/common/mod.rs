//! The crash-simulating file system lives in the library (feature `crashfs`), shared
//! with the torture suite.
pub use datalayer_etch::storage::crashfs::CrashFs;
