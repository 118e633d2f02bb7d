//! The one place where SQLite errors become datalayer errors.
//!
//! | SQLite (extended) code                                   | [`ErrorKind`]            |
//! |----------------------------------------------------------|--------------------------|
//! | `SQLITE_CONSTRAINT_UNIQUE`, `SQLITE_CONSTRAINT_PRIMARYKEY` | `AlreadyExists`          |
//! | `SQLITE_BUSY*`, `SQLITE_LOCKED*`                          | `Conflict` (retryable)   |
//! | `SQLITE_CONSTRAINT_NOTNULL`/`CHECK`/`DATATYPE`/`FOREIGNKEY`, `SQLITE_MISMATCH`, `SQLITE_TOOBIG`, `SQLITE_RANGE`, `SQLITE_READONLY` | `InvalidInput` |
//! | `SQLITE_CORRUPT*`, `SQLITE_NOTADB`, a stored value that does not decode | `Corrupted` |
//! | `SQLITE_IOERR*`, `SQLITE_CANTOPEN`, `SQLITE_FULL`         | `Io`                     |
//! | anything else                                            | `Engine`                 |
//!
//! The native extended result code is kept as the error's code (decimal, e.g. `2067`
//! for `SQLITE_CONSTRAINT_UNIQUE`).

use datalayer_core::{Error, ErrorKind};
use rusqlite::ffi;

/// Maps a rusqlite error.
pub(crate) fn map_err(e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) => {
            let text = msg.clone().unwrap_or_else(|| f.to_string());
            let kind = kind_of(f.code, f.extended_code);
            Error::new(kind, text)
                .with_code(f.extended_code.to_string())
                .with_source(e)
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(..) => {
            Error::corrupted(format!("stored value does not decode: {e}")).with_source(e)
        }
        rusqlite::Error::ToSqlConversionFailure(_)
        | rusqlite::Error::NulError(_)
        | rusqlite::Error::InvalidPath(_) => Error::invalid_input(e.to_string()).with_source(e),
        _ => Error::engine("rusqlite", e.to_string()).with_source(e),
    }
}

fn kind_of(code: ffi::ErrorCode, extended: i32) -> ErrorKind {
    use ffi::ErrorCode as C;
    match extended {
        ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
            return ErrorKind::AlreadyExists;
        }
        ffi::SQLITE_CONSTRAINT_NOTNULL
        | ffi::SQLITE_CONSTRAINT_CHECK
        | ffi::SQLITE_CONSTRAINT_DATATYPE
        | ffi::SQLITE_CONSTRAINT_FOREIGNKEY => return ErrorKind::InvalidInput,
        _ => {}
    }
    match code {
        C::DatabaseBusy | C::DatabaseLocked => ErrorKind::Conflict,
        C::TypeMismatch | C::TooBig | C::ParameterOutOfRange | C::ReadOnly => {
            ErrorKind::InvalidInput
        }
        C::DatabaseCorrupt | C::NotADatabase => ErrorKind::Corrupted,
        C::SystemIoFailure | C::CannotOpen | C::DiskFull => ErrorKind::Io,
        _ => ErrorKind::Engine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let f = |code, ext| {
            map_err(rusqlite::Error::SqliteFailure(
                ffi::Error {
                    code,
                    extended_code: ext,
                },
                None,
            ))
        };
        assert!(
            f(
                ffi::ErrorCode::ConstraintViolation,
                ffi::SQLITE_CONSTRAINT_UNIQUE
            )
            .is_already_exists()
        );
        assert!(
            f(
                ffi::ErrorCode::ConstraintViolation,
                ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            )
            .is_already_exists()
        );
        assert!(
            f(
                ffi::ErrorCode::ConstraintViolation,
                ffi::SQLITE_CONSTRAINT_NOTNULL
            )
            .is_invalid_input()
        );
        let busy = f(ffi::ErrorCode::DatabaseBusy, ffi::SQLITE_BUSY);
        assert!(busy.is_conflict() && busy.is_retryable());
        assert_eq!(busy.code(), Some("5"));
        assert!(f(ffi::ErrorCode::DatabaseCorrupt, ffi::SQLITE_CORRUPT).is_corrupted());
        assert_eq!(
            f(ffi::ErrorCode::SystemIoFailure, ffi::SQLITE_IOERR_READ).kind(),
            ErrorKind::Io
        );
        assert_eq!(
            f(ffi::ErrorCode::Unknown, ffi::SQLITE_ERROR).kind(),
            ErrorKind::Engine
        );
    }
}
