//! The one place where tikv-client's errors become datalayer errors.
//!
//! | tikv-client error                                                  | [`ErrorKind`] |
//! |--------------------------------------------------------------------|---------------|
//! | a key error with `conflict` (`WriteConflict`), `locked` (a lock another transaction holds), `deadlock`, `already_exist`, or `TxnLockNotFound` / `PessimisticLock…` / `txn_not_found` (the transaction's locks were rolled back by another reader after its TTL) | `Conflict` (retryable) |
//! | `ResolveLockError` (a live lock of another transaction outlasted the client's lock backoff) | `Conflict` (retryable) |
//! | `RegionError` with `ServerIsBusy` or `MaxTimestampNotSynced`        | retried by the engine with backoff ([`crate::TikvOptions::busy_retries`]); then `Timeout` (retryable) |
//! | `RegionError` with `RaftEntryTooLarge`                             | `InvalidInput` |
//! | `UndeterminedError`, or any gRPC error out of a commit              | `CommitUnknown` (never retried blindly) |
//! | a gRPC error (`GrpcAPI`, `Grpc`) or `LeaderNotFound` elsewhere      | `ConnectionLost` (retryable) |
//! | anything else                                                      | `Engine`, code `tikv` |
//!
//! tikv-client wraps errors (`MultipleKeyErrors`, `ExtractedErrors`,
//! `PessimisticLockError`, `UndeterminedError`): the classification looks inside. The
//! client itself retries `NotLeader`, `EpochNotMatch`, `RegionNotFound`,
//! `StoreNotMatch`, `StaleCommand` and gRPC `Unavailable` (tikv-client
//! `src/request/plan.rs`), so they only surface here once its backoff is exhausted.

use datalayer_core::{Error, ErrorKind};
use tikv_client::Error as TError;

/// What an error means to the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Lost a race with another transaction.
    Conflict,
    /// The cluster asked to be retried later.
    Busy,
    /// Too large for the cluster.
    TooLarge,
    /// The commit's outcome is unknown.
    Undetermined,
    /// The cluster could not be reached.
    Unreachable,
    /// Anything else.
    Other,
}

fn key_error_is_conflict(k: &tikv_client::ProtoKeyError) -> bool {
    k.conflict.is_some()
        || k.locked.is_some()
        || k.deadlock.is_some()
        || k.already_exist.is_some()
        || k.txn_not_found.is_some()
        || k.retryable.contains("TxnLockNotFound")
        || k.abort.contains("PessimisticLock")
}

/// Classifies `e`, looking inside the client's wrappers. A conflict anywhere wins,
/// then an undetermined outcome, then busy, then the rest.
pub(crate) fn classify(e: &TError) -> Class {
    match e {
        TError::KeyError(k) if key_error_is_conflict(k) => Class::Conflict,
        TError::ResolveLockError(_) | TError::TxnNotFound(_) => Class::Conflict,
        TError::RegionError(r)
            if r.server_is_busy.is_some() || r.max_timestamp_not_synced.is_some() =>
        {
            Class::Busy
        }
        TError::RegionError(r) if r.raft_entry_too_large.is_some() => Class::TooLarge,
        TError::UndeterminedError(_) => Class::Undetermined,
        TError::Grpc(_) | TError::GrpcAPI(_) | TError::LeaderNotFound { .. } => Class::Unreachable,
        TError::MultipleKeyErrors(v) | TError::ExtractedErrors(v) => {
            let classes: Vec<Class> = v.iter().map(classify).collect();
            [
                Class::Conflict,
                Class::Undetermined,
                Class::TooLarge,
                Class::Busy,
                Class::Unreachable,
            ]
            .into_iter()
            .find(|c| classes.contains(c))
            .unwrap_or(Class::Other)
        }
        TError::PessimisticLockError { inner, .. } => classify(inner),
        _ => Class::Other,
    }
}

/// `kvrpcpb.WriteConflict.Reason.PessimisticRetry` (kvproto; tikv-client keeps its
/// generated enum private).
const WRITE_CONFLICT_PESSIMISTIC_RETRY: i32 = 2;

/// Whether `e` is a pessimistic lock's `WriteConflict` with reason `PessimisticRetry`:
/// a commit landed between the lock's `for_update_ts` and the lock itself, and TiKV
/// asks the client to lock again at a newer `for_update_ts` (as TiDB does).
pub(crate) fn is_pessimistic_retry(e: &TError) -> bool {
    match e {
        TError::KeyError(k) => k
            .conflict
            .as_ref()
            .is_some_and(|c| c.reason == WRITE_CONFLICT_PESSIMISTIC_RETRY),
        TError::MultipleKeyErrors(v) | TError::ExtractedErrors(v) => {
            !v.is_empty() && v.iter().all(is_pessimistic_retry)
        }
        TError::PessimisticLockError { inner, .. } => is_pessimistic_retry(inner),
        _ => false,
    }
}

/// Maps an error of a read, a lock or a rollback (`what` names the operation).
pub(crate) fn map_error(what: &str, e: TError) -> Error {
    let msg = format!("tikv: {what}: {e}");
    match classify(&e) {
        Class::Conflict => Error::conflict(msg),
        Class::Busy => Error::new(ErrorKind::Timeout, msg),
        Class::TooLarge => Error::invalid_input(msg),
        Class::Undetermined => Error::commit_unknown(msg),
        Class::Unreachable => Error::connection_lost(msg),
        Class::Other => Error::engine("tikv", msg),
    }
}

/// Maps an error of `Transaction::commit`: a gRPC error may have hit the primary's
/// commit after it applied, so it is `CommitUnknown`, never `ConnectionLost`.
pub(crate) fn map_commit_error(e: TError) -> Error {
    match classify(&e) {
        Class::Unreachable | Class::Undetermined => Error::commit_unknown(format!(
            "tikv: commit: the outcome is unknown (the transaction may or may not have \
             committed): {e}"
        )),
        _ => map_error("commit", e),
    }
}

/// The cluster stayed busy through every retry.
pub(crate) fn busy(what: &str, tries: u32, e: TError) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("tikv: {what}: the cluster was still busy after {tries} tries: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tikv_client::{ProtoKeyError, ProtoRegionError};

    #[test]
    fn kinds() {
        let conflict = ProtoKeyError {
            conflict: Some(Default::default()),
            ..Default::default()
        };
        let e = TError::MultipleKeyErrors(vec![TError::KeyError(Box::new(conflict))]);
        assert!(map_error("get", e).is_conflict());
        let lock_gone = ProtoKeyError {
            retryable: "TxnLockNotFound: txn 1".into(),
            ..Default::default()
        };
        assert!(map_commit_error(TError::KeyError(Box::new(lock_gone))).is_conflict());
        let busy = ProtoRegionError {
            server_is_busy: Some(Default::default()),
            ..Default::default()
        };
        let e = TError::ExtractedErrors(vec![TError::RegionError(Box::new(busy))]);
        assert_eq!(classify(&e), Class::Busy);
        assert_eq!(map_error("scan", e).kind(), ErrorKind::Timeout);
        let grpc = TError::GrpcAPI(tonic_status());
        assert!(map_commit_error(grpc).is_commit_unknown());
        assert_eq!(
            map_error("get", TError::GrpcAPI(tonic_status())).kind(),
            ErrorKind::ConnectionLost
        );
        let undetermined = TError::UndeterminedError(Box::new(TError::GrpcAPI(tonic_status())));
        assert!(map_commit_error(undetermined).is_commit_unknown());
        assert_eq!(
            map_error("get", TError::StringError("x".into())).kind(),
            ErrorKind::Engine
        );
    }

    fn tonic_status() -> tonic::Status {
        tonic::Status::unavailable("down")
    }
}
