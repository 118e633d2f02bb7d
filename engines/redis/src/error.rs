//! The one place where Redis errors become datalayer errors.
//!
//! | native error (redis-rs `RedisError`, server error code)      | [`ErrorKind`]          |
//! |---------------------------------------------------------------|------------------------|
//! | I/O: connection refused, reset, closed, broken pipe           | `ConnectionLost` (retryable) |
//! | I/O timeout (no reply within `response_timeout`)              | `Timeout` (retryable)  |
//! | TLS: the server's certificate refused (`rediss://`)           | `Engine`, code `TLS`, naming `ca_file=` |
//! | `READONLY` (the server is a replica), `LOADING`, `MASTERDOWN` | `ConnectionLost` (retryable) |
//! | Redis Cluster: `CLUSTERDOWN`, `TRYAGAIN`, `MOVED`/`ASK` still returned after redis-rs' own redirections and retries, no connection to the slot's node | `ConnectionLost` (retryable) |
//! | `BUSY` (a script or function is running past `busy-reply-threshold`) | `Timeout`, code `BUSY` (retryable) |
//! | `OOM` (`used_memory` over `maxmemory`)                        | `Engine`, code `OOM`, naming `maxmemory` |
//! | `CROSSSLOT`                                                   | `InvalidInput`         |
//! | `NOAUTH`, `WRONGPASS`, failed `AUTH`, `NOPERM`                | `Engine`, code `AUTH`, saying authentication failed |
//! | `DLCONFLICT` (the commit function's failed validation)        | `Conflict` (retryable) |
//! | anything else                                                 | `Engine`, with the server's code |
//!
//! Opening a Redis Cluster: a seed node without cluster support is `InvalidInput`; a
//! failed authentication is `Engine` code `AUTH` ([`map_cluster_connect_error`]).
//!
//! The error of the call that sent a commit goes through
//! [`Error::at_commit`]: a broken connection or a client-side timeout there becomes
//! `CommitUnknown` (the commit may have been applied). A value over
//! `max_value_bytes` and a write set over `max_txn_bytes` are `InvalidInput` before
//! anything is sent.

use datalayer_core::{Error, ErrorKind};
use redis::{ErrorKind as RK, RedisError, ServerErrorKind as SK};

/// The error code the commit function returns when validation fails.
pub(crate) const CONFLICT_CODE: &str = "DLCONFLICT";

/// Maps a redis-rs error; `addr` (host:port/db) names the server in messages.
pub(crate) fn map_error(e: RedisError, addr: &str) -> Error {
    let code = e.code().map(str::to_owned);
    let msg = format!("redis at {addr}: {e}");
    let kind = e.kind();
    let mapped = match (kind, code.as_deref()) {
        (_, Some(CONFLICT_CODE)) => {
            return Error::conflict(format!(
                "redis: the transaction's reads changed before its commit ({})",
                e.detail().unwrap_or("validation failed")
            ))
            .with_code(CONFLICT_CODE);
        }
        _ if e.is_timeout() => Error::new(
            ErrorKind::Timeout,
            format!("{msg} (no reply within the response timeout)"),
        ),
        _ if e.is_io_error() && msg.contains("certificate") => Error::engine(
            "TLS",
            format!(
                "{msg} (TLS: the server's certificate was refused; trust its CA with the URL \
                 parameter ca_file=/path/to/ca.pem)"
            ),
        ),
        _ if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
            Error::connection_lost(msg)
        }
        (RK::AuthenticationFailed, _) | (_, Some("NOAUTH" | "WRONGPASS" | "NOPERM")) => {
            Error::engine(
                "AUTH",
                format!(
                    "redis at {addr}: authentication failed ({e}); check the user and password \
                     of the URL (redis://user:password@host:port)"
                ),
            )
        }
        (RK::Server(SK::ReadOnly), _) => Error::connection_lost(format!(
            "{msg} (the server is a read-only replica; connect to the primary)"
        )),
        (RK::Server(SK::BusyLoading | SK::MasterDown), _) => Error::connection_lost(msg),
        // Redis Cluster: redis-rs follows MOVED/ASK and retries TRYAGAIN/CLUSTERDOWN
        // itself; one that is still returned after its retries means the cluster is
        // resharding or failing over (or lost quorum): retryable.
        (
            RK::Server(SK::ClusterDown | SK::TryAgain | SK::Moved | SK::Ask)
            | RK::ClusterConnectionNotFound,
            _,
        ) => Error::connection_lost(format!(
            "{msg} (the Redis Cluster is resharding, failing over or down; retry)"
        )),
        (_, Some("BUSY")) => Error::new(
            ErrorKind::Timeout,
            format!("{msg} (a script or function is running on the server; retry later)"),
        )
        .with_code("BUSY"),
        (_, Some("OOM")) => Error::engine(
            "OOM",
            format!(
                "redis at {addr}: out of memory: used memory is over the server's maxmemory \
                 limit (raise maxmemory or free memory; {e})"
            ),
        ),
        (RK::Server(SK::CrossSlot), _) => Error::invalid_input(format!(
            "{msg} (keys of one call must share a hash slot: every key of a namespace carries \
             the hash tag {{namespace}})"
        )),
        _ => Error::engine(code.unwrap_or_else(|| "redis".into()), msg),
    };
    mapped.with_source(e)
}

/// Maps the error of opening a Redis Cluster connection. redis-rs reports the failed
/// initial connections as one I/O error whose text carries the cause, so: a seed that
/// answers "cluster support disabled" is `InvalidInput` (a single server: use
/// `redis://`); a failed authentication is `Engine` code `AUTH`; anything else as
/// [`map_error`].
pub(crate) fn map_cluster_connect_error(e: RedisError, addr: &str) -> Error {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("cluster support disabled") {
        return Error::invalid_input(format!(
            "redis at {addr}: the server is not a Redis Cluster node (cluster support \
             disabled); open a single server with redis://host:port"
        ))
        .with_source(e);
    }
    if lower.contains("authentication failed")
        || lower.contains("wrongpass")
        || lower.contains("noauth")
    {
        return Error::engine(
            "AUTH",
            format!(
                "redis at {addr}: authentication failed ({text}); check the user and password \
                 of the URL (redis+cluster://user:password@host:port,...)"
            ),
        )
        .with_source(e);
    }
    map_error(e, addr)
}

/// Whether `e` says the engine's function library is missing (a server restart
/// without persistence, `FUNCTION FLUSH`): the library is loaded again and the call
/// repeated (the function never ran).
pub(crate) fn is_function_missing(e: &RedisError) -> bool {
    let s = e.to_string();
    s.contains("Function not found") || e.code() == Some("NOSCRIPT")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, detail: &str) -> RedisError {
        // A server error as the parser builds it from `-CODE detail`.
        let v = redis::parse_redis_value(format!("-{code} {detail}\r\n").as_bytes()).unwrap();
        v.extract_error().unwrap_err()
    }

    #[test]
    fn kinds() {
        let a = "h:1/0";
        let e = map_error(server("BUSY", "Redis is busy running a script"), a);
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.is_retryable() && e.code() == Some("BUSY"), "{e}");
        let e = map_error(server("OOM", "command not allowed"), a);
        assert!(
            e.kind() == ErrorKind::Engine && e.message().contains("maxmemory"),
            "{e}"
        );
        let e = map_error(server("CROSSSLOT", "Keys in request don't hash"), a);
        assert!(e.is_invalid_input(), "{e}");
        for c in ["NOAUTH", "WRONGPASS"] {
            let e = map_error(server(c, "x"), a);
            assert!(
                e.code() == Some("AUTH") && e.message().contains("authentication failed"),
                "{e}"
            );
        }
        let e = map_error(
            server("READONLY", "You can't write against a read only replica."),
            a,
        );
        assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
        for c in [
            "CLUSTERDOWN The cluster is down",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "MOVED 3999 127.0.0.1:6381",
            "ASK 3999 127.0.0.1:6381",
        ] {
            let (code, detail) = c.split_once(' ').unwrap();
            let e = map_error(server(code, detail), a);
            assert!(
                e.kind() == ErrorKind::ConnectionLost && e.is_retryable(),
                "{c}: {e}"
            );
        }
        let e = map_error(server(CONFLICT_CODE, "read key 1 changed"), a);
        assert!(e.is_conflict() && e.is_retryable(), "{e}");
        let e = map_error(server("WRONGTYPE", "Operation against a key"), a);
        assert_eq!(e.kind(), ErrorKind::Engine);
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let e = map_error(io, a);
        assert_eq!(e.kind(), ErrorKind::ConnectionLost, "{e}");
        let tls = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        ));
        let t = map_error(tls, a);
        assert!(
            t.code() == Some("TLS") && !t.is_retryable() && t.message().contains("ca_file"),
            "{t}"
        );
        assert!(e.at_commit().is_commit_unknown());
    }
}
