//! SQLite engine (being written).
