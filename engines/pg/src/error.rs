//! The one place where PostgreSQL errors become datalayer errors.
//!
//! | SQLSTATE (or client condition)                                  | [`ErrorKind`]          |
//! |-----------------------------------------------------------------|------------------------|
//! | `23505` unique_violation                                        | `AlreadyExists`        |
//! | `40001` serialization_failure, `40P01` deadlock_detected        | `Conflict` (retryable) |
//! | class `08` (connection exception), `57P01` admin_shutdown, `57P02` crash_shutdown, `57P03` cannot_connect_now; a closed connection; an I/O error on the socket | `ConnectionLost` (retryable) |
//! | any of the above `ConnectionLost`/client-side `Timeout` on the `COMMIT` call itself (the commit was sent; `Error::at_commit`) | `CommitUnknown` (never retried) |
//! | `57014` query_canceled (statement timeout), `55P03` lock_not_available | `Timeout` (retryable) |
//! | `23502` not_null, `23503` foreign_key, `23514` check, `22P02` invalid_text_representation, `22003` numeric_value_out_of_range, `22001` string_data_right_truncation, `22021` character_not_in_repertoire (NUL in text), `22P05`, `22023`, `42804` datatype_mismatch, `25006` read_only_sql_transaction, `54000` program_limit_exceeded; a value the client cannot encode | `InvalidInput` |
//! | `42P01` undefined_table, `3B001` invalid_savepoint_specification | `NotFound`             |
//! | `XX001` data_corrupted, `XX002` index_corrupted; a stored value that does not decode | `Corrupted` |
//! | `53100` disk_full, `58030` io_error                              | `Io`                   |
//! | anything else                                                   | `Engine`               |
//!
//! The SQLSTATE is kept as the error's code (`23505`); client-side conditions have no
//! code. `ConnectionLost` means the connection is gone: the pool discards it (see
//! `core::Manager::recycle`) and opens a new one for the next caller.

use datalayer_core::{Error, ErrorKind};

/// The portable kind of a SQLSTATE.
pub(crate) fn kind_of(sqlstate: &str) -> ErrorKind {
    match sqlstate {
        "23505" => ErrorKind::AlreadyExists,
        "40001" | "40P01" => ErrorKind::Conflict,
        "57P01" | "57P02" | "57P03" => ErrorKind::ConnectionLost,
        s if s.starts_with("08") => ErrorKind::ConnectionLost,
        "57014" | "55P03" => ErrorKind::Timeout,
        "23502" | "23503" | "23514" | "22P02" | "22003" | "22001" | "22021" | "22P05" | "22023"
        | "42804" | "25006" | "54000" => ErrorKind::InvalidInput,
        "42P01" | "3B001" => ErrorKind::NotFound,
        "XX001" | "XX002" => ErrorKind::Corrupted,
        "53100" | "58030" => ErrorKind::Io,
        _ => ErrorKind::Engine,
    }
}

/// A value that cannot be encoded for the parameter type the server expects (an
/// integer out of range, text for a number column). Raised by `value::PgValue`.
#[derive(Debug)]
pub(crate) struct EncodeError(pub(crate) String);

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

/// Maps a tokio-postgres error.
pub(crate) fn map_err(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code().to_owned();
        let mut msg = db.message().to_owned();
        if let Some(d) = db.detail() {
            msg.push_str(": ");
            msg.push_str(d);
        }
        return Error::new(kind_of(&code), msg)
            .with_code(code)
            .with_source(e);
    }
    if e.is_closed() {
        return Error::connection_lost(format!("the postgres connection is closed: {e}"))
            .with_source(e);
    }
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            let kind = if io.kind() == std::io::ErrorKind::TimedOut {
                ErrorKind::Timeout
            } else {
                ErrorKind::ConnectionLost
            };
            return Error::new(kind, format!("postgres connection: {e}")).with_source(e);
        }
        if s.downcast_ref::<EncodeError>().is_some() {
            return Error::invalid_input(format!("{e}: {s}")).with_source(e);
        }
        src = s.source();
    }
    let text = e.to_string();
    if text.starts_with("error serializing") {
        return Error::invalid_input(text).with_source(e);
    }
    if text.starts_with("error deserializing") {
        return Error::corrupted(format!("stored value does not decode: {text}")).with_source(e);
    }
    if text.starts_with("timeout") {
        return Error::new(ErrorKind::Timeout, text).with_source(e);
    }
    Error::engine("tokio-postgres", text).with_source(e)
}

/// Maps an error of the connection pool.
pub(crate) fn map_pool_err(e: deadpool::managed::PoolError<Error>) -> Error {
    use deadpool::managed::{PoolError, TimeoutType};
    match e {
        PoolError::Backend(e) => e,
        PoolError::Timeout(TimeoutType::Wait) => Error::new(
            ErrorKind::Timeout,
            "waited too long for a free postgres connection (pool_size / wait_timeout_ms; is every connection held by a transaction?)",
        ),
        PoolError::Timeout(TimeoutType::Create) => Error::new(
            ErrorKind::Timeout,
            "opening a postgres connection took longer than connect_timeout_ms",
        ),
        PoolError::Timeout(TimeoutType::Recycle) => Error::new(
            ErrorKind::Timeout,
            "recycling a postgres connection timed out",
        ),
        PoolError::Closed => closed(),
        other => Error::engine("deadpool", format!("{other:?}")),
    }
}

/// The error of any call after `close`.
pub(crate) fn closed() -> Error {
    Error::invalid_input("the postgres engine is closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(kind_of("23505"), ErrorKind::AlreadyExists);
        assert_eq!(kind_of("40001"), ErrorKind::Conflict);
        assert_eq!(kind_of("40P01"), ErrorKind::Conflict);
        assert_eq!(kind_of("08006"), ErrorKind::ConnectionLost);
        assert_eq!(kind_of("57P01"), ErrorKind::ConnectionLost);
        assert_eq!(kind_of("23502"), ErrorKind::InvalidInput);
        assert_eq!(kind_of("22P02"), ErrorKind::InvalidInput);
        assert_eq!(kind_of("22003"), ErrorKind::InvalidInput);
        assert_eq!(kind_of("23514"), ErrorKind::InvalidInput);
        assert_eq!(kind_of("25006"), ErrorKind::InvalidInput);
        assert_eq!(kind_of("42P01"), ErrorKind::NotFound);
        assert_eq!(kind_of("XX001"), ErrorKind::Corrupted);
        assert_eq!(kind_of("42601"), ErrorKind::Engine);
        assert!(Error::new(kind_of("40001"), "x").is_retryable());
        assert!(Error::new(kind_of("57P01"), "x").is_retryable());
        assert!(!Error::new(kind_of("23505"), "x").is_retryable());
    }
}
