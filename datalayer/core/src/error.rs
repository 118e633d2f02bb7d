//! The portable error type.
//!
//! Every engine maps its native errors into one [`ErrorKind`] in a single place
//! (`engines/<name>/src/error.rs`), so application code handles errors the same way on
//! every engine.
//!
//! # Classification contract
//! - `AlreadyExists`: a primary-key or unique-index violation (SQLSTATE 23505, SQLite
//!   `SQLITE_CONSTRAINT_UNIQUE`/`PRIMARYKEY`, a unique entry present in a KV store).
//! - `Conflict`: the transaction lost a race and may succeed if re-run (SQLSTATE 40001
//!   serialization failure, 40P01 deadlock, SQLite `BUSY`, Redis WATCH abort, TiKV write
//!   conflict). MUST be retryable.
//! - `ConnectionLost`: the connection broke *before* a commit was sent, so nothing of
//!   the transaction was applied. Retryable.
//! - `CommitUnknown`: the commit was sent and its outcome cannot be known (PostgreSQL:
//!   the connection dropped before `COMMIT` was answered; TiKV: an undetermined
//!   commit; Redis: the connection lost during the commit call). The transaction may or
//!   may not be applied. NEVER retryable: re-running it could apply it twice.
//! - `Corrupted`: stored bytes failed a checksum or could not be decoded. Never retried.
//!
//! [`Error::is_retryable`] is true exactly for `Conflict`, `ConnectionLost` and `Timeout`.
//!
//! # Making a transaction safe to re-run after `CommitUnknown`
//! Give the transaction an idempotency key: insert a row with a unique id chosen by
//! the caller (a request id, a transfer id) in the same transaction as the work. After
//! `CommitUnknown`, run the transaction again: if the first attempt was applied, the
//! insert fails with `AlreadyExists` and nothing is applied twice; otherwise it
//! applies now. Or read the id row back and act on what it says.

use std::fmt;

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, portably across engines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The row (or savepoint, or query result) does not exist.
    NotFound,
    /// A primary-key or unique-index violation.
    AlreadyExists,
    /// A serialization failure, write conflict or deadlock; re-running may succeed.
    Conflict,
    /// The connection to the engine broke before a commit was sent; nothing was applied.
    ConnectionLost,
    /// The commit was sent but its outcome is unknown (the connection broke before the
    /// reply). Never retryable; see the module docs for how to re-run safely.
    CommitUnknown,
    /// An operation ran out of time.
    Timeout,
    /// The engine lacks this capability (see [`crate::Capability`]).
    Unsupported,
    /// Bad input: an invalid identifier, an oversize value, a wrong type.
    InvalidInput,
    /// Stored data failed a checksum or could not be decoded.
    Corrupted,
    /// An operating-system I/O error.
    Io,
    /// Any other engine error; the native code is kept in [`Error::code`].
    Engine,
}

/// The code of [`Error::stale_version`].
pub const STALE_VERSION: &str = "stale_version";

/// The error type of every datalayer operation.
#[non_exhaustive]
pub struct Error {
    kind: ErrorKind,
    message: String,
    code: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            code: None,
            source: None,
        }
    }
    /// Attaches the engine's native error code (SQLSTATE, SQLite extended code, ...).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }
    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    /// `NotFound`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// `AlreadyExists`.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }
    /// `Conflict` (retryable).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    /// `ConnectionLost` (retryable).
    pub fn connection_lost(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ConnectionLost, message)
    }
    /// `CommitUnknown`: the commit was sent, its outcome cannot be known (not retryable).
    pub fn commit_unknown(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CommitUnknown, message)
    }
    /// The error of a failed commit call: a broken connection or a client-side
    /// timeout (no native code) means the commit may have been applied, so it becomes
    /// `CommitUnknown`, keeping message, code and source; every other error is
    /// returned unchanged. Engines apply it to the error of the call that sent the
    /// commit, and only to that call.
    pub fn at_commit(mut self) -> Self {
        let unknown = match self.kind {
            ErrorKind::ConnectionLost => true,
            ErrorKind::Timeout => self.code.is_none(),
            _ => false,
        };
        if unknown {
            self.kind = ErrorKind::CommitUnknown;
            self.message = format!(
                "the commit was sent but its outcome is unknown ({}); the transaction may or may not be applied",
                self.message
            );
        }
        self
    }
    /// `Unsupported`: `what` names the missing capability.
    pub fn unsupported(engine: &str, what: impl fmt::Display) -> Self {
        Self::new(
            ErrorKind::Unsupported,
            format!("the {engine} engine does not support {what}"),
        )
    }
    /// `InvalidInput`.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    /// `Corrupted`.
    pub fn corrupted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupted, message)
    }
    /// `Engine`: anything else, with the native code.
    pub fn engine(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Engine, message).with_code(code)
    }

    /// The portable kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The engine's native code, when there is one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
    /// Whether re-running the whole transaction may succeed: `Conflict`,
    /// `ConnectionLost` and `Timeout`. Never `CommitUnknown`: re-running a transaction
    /// whose commit may have been applied could apply it twice.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Conflict | ErrorKind::ConnectionLost | ErrorKind::Timeout
        )
    }
    /// `kind() == NotFound`.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
    /// `kind() == AlreadyExists`.
    pub fn is_already_exists(&self) -> bool {
        self.kind == ErrorKind::AlreadyExists
    }
    /// `kind() == Conflict`.
    pub fn is_conflict(&self) -> bool {
        self.kind == ErrorKind::Conflict
    }
    /// `Conflict` with code [`STALE_VERSION`]: an update of a row whose stored version
    /// is not the one the caller read (optimistic locking, `#[version]`). Nothing was
    /// written; read the row again and retry.
    pub fn stale_version(message: impl Into<String>) -> Self {
        Self::conflict(message).with_code(STALE_VERSION)
    }
    /// Whether this is [`Error::stale_version`].
    pub fn is_stale_version(&self) -> bool {
        self.kind == ErrorKind::Conflict && self.code() == Some(STALE_VERSION)
    }
    /// `kind() == CommitUnknown`: the transaction may or may not have been applied.
    pub fn is_commit_unknown(&self) -> bool {
        self.kind == ErrorKind::CommitUnknown
    }
    /// `kind() == Unsupported`.
    pub fn is_unsupported(&self) -> bool {
        self.kind == ErrorKind::Unsupported
    }
    /// `kind() == InvalidInput`.
    pub fn is_invalid_input(&self) -> bool {
        self.kind == ErrorKind::InvalidInput
    }
    /// `kind() == Corrupted`.
    pub fn is_corrupted(&self) -> bool {
        self.kind == ErrorKind::Corrupted
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(c) = &self.code {
            d.field("code", c);
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)?;
        if let Some(c) = &self.code {
            write!(f, " (code {c})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof => ErrorKind::ConnectionLost,
            _ => ErrorKind::Io,
        };
        Error::new(kind, e.to_string()).with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_unknown_is_never_retryable() {
        let lost = Error::connection_lost("socket closed").with_code("x");
        assert!(lost.is_retryable());
        let e = lost.at_commit();
        assert_eq!(e.kind(), ErrorKind::CommitUnknown);
        assert!(!e.is_retryable());
        assert_eq!(e.code(), Some("x"), "the native code is kept");
        // A client-side timeout while the commit is in flight is unknown too; a
        // server-reported timeout (with a code) or a conflict is a definite answer.
        let t = Error::new(ErrorKind::Timeout, "timed out").at_commit();
        assert!(t.is_commit_unknown());
        let t = Error::new(ErrorKind::Timeout, "canceled")
            .with_code("57014")
            .at_commit();
        assert_eq!(t.kind(), ErrorKind::Timeout);
        assert!(Error::conflict("40001").at_commit().is_conflict());
    }
}
