//! The SQL engine family (being written).
