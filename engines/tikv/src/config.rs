//! Options of the TiKV engine, and the URL forms that set them.

use datalayer_core::{Error, Result};
use std::time::Duration;

/// How the engine's read-write transactions take their locks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TxnMode {
    /// Percolator's optimistic transactions: keys are locked at commit (prewrite); a
    /// write conflict fails the commit with `Conflict`. The default.
    #[default]
    Optimistic,
    /// TiKV's pessimistic transactions: the KV family locks every key it is about to
    /// write (`KvTxn::lock`, `KvPessimisticLock`), so a conflicting writer fails at
    /// its lock instead of at commit.
    Pessimistic,
}

/// Options of the TiKV engine ([`crate::open`]). Built from a URL ([`parse_url`]) or
/// directly (`TikvOptions::new(endpoints)` and struct update syntax).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TikvOptions {
    /// PD endpoints, `host:port` each.
    pub pd_endpoints: Vec<String>,
    /// Every key of the engine is stored under `namespace` + `0x00` (nothing when
    /// empty), so that engines with different namespaces share a cluster without
    /// seeing each other. ASCII letters, digits, `_`, `-` and `.` only. Default: empty.
    pub namespace: String,
    /// Optimistic (default) or pessimistic transactions.
    pub mode: TxnMode,
    /// The largest write set one transaction may commit, in bytes (keys plus values,
    /// as `datalayer_kv::write_set_bytes` counts them, before the namespace prefix).
    /// Default: 100 MiB (TiDB's `txn-total-size-limit`).
    pub max_txn_bytes: usize,
    /// The largest value, in bytes. Default: 6 MiB (TiDB's `txn-entry-size-limit`;
    /// TiKV's `raft-entry-max-size` is 8 MiB).
    pub max_value_bytes: usize,
    /// The client's per-request timeout (tikv-client `Config::timeout`). Default 2 s.
    pub request_timeout: Duration,
    /// How many times the engine retries an operation the cluster refused as busy
    /// (`ServerIsBusy`, `MaxTimestampNotSynced`), with exponential backoff from 10 ms to
    /// 500 ms, before it fails with `Timeout`. Default 10.
    pub busy_retries: u32,
}

impl TikvOptions {
    /// Options for the cluster whose PD listens at `pd_endpoints`, with the defaults.
    pub fn new(pd_endpoints: Vec<String>) -> Self {
        TikvOptions {
            pd_endpoints,
            namespace: String::new(),
            mode: TxnMode::Optimistic,
            max_txn_bytes: 100 * 1024 * 1024,
            max_value_bytes: 6 * 1024 * 1024,
            request_timeout: Duration::from_secs(2),
            busy_retries: 10,
        }
    }

    /// Checks the options (the engine checks them when it opens).
    ///
    /// # Errors
    /// `InvalidInput` for no PD endpoint or a namespace with other characters than
    /// ASCII letters, digits, `_`, `-`, `.`.
    pub fn validate(&self) -> Result<()> {
        if self.pd_endpoints.is_empty() || self.pd_endpoints.iter().any(String::is_empty) {
            return Err(Error::invalid_input(
                "tikv: at least one PD endpoint (host:port) is needed",
            ));
        }
        if !self
            .namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(Error::invalid_input(format!(
                "tikv: namespace {:?} may only hold ASCII letters, digits, '_', '-' and '.'",
                self.namespace
            )));
        }
        Ok(())
    }

    /// The key prefix of the namespace: `namespace` + `0x00`, or nothing.
    pub fn key_prefix(&self) -> Vec<u8> {
        if self.namespace.is_empty() {
            Vec::new()
        } else {
            let mut p = self.namespace.as_bytes().to_vec();
            p.push(0);
            p
        }
    }
}

/// Parses a TiKV URL: `tikv://pd1:2379,pd2:2379` with optional query parameters
/// `namespace=<name>`, `mode=optimistic|pessimistic`, `max_txn_bytes=<n>`,
/// `max_value_bytes=<n>`, `timeout_ms=<milliseconds>` (the request timeout) and
/// `busy_retries=<n>` — e.g. `tikv://127.0.0.1:2379?namespace=app&mode=pessimistic`.
///
/// # Errors
/// `InvalidInput` for another scheme, no endpoint, an unknown parameter, a value that
/// does not parse, or options that fail [`TikvOptions::validate`].
pub fn parse_url(url: &str) -> Result<TikvOptions> {
    let rest = url.strip_prefix("tikv://").ok_or_else(|| {
        Error::invalid_input(format!(
            "not a TiKV URL: {url:?} (use tikv://pd1:2379,pd2:2379)"
        ))
    })?;
    let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
    let hosts = hosts.trim_end_matches('/');
    let mut opts = TikvOptions::new(hosts.split(',').map(str::to_owned).collect());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || Error::invalid_input(format!("tikv URL parameter {k}={v:?} is invalid"));
        match k {
            "namespace" => opts.namespace = v.to_owned(),
            "mode" => {
                opts.mode = match v {
                    "optimistic" => TxnMode::Optimistic,
                    "pessimistic" => TxnMode::Pessimistic,
                    _ => return Err(bad()),
                }
            }
            "max_txn_bytes" => opts.max_txn_bytes = v.parse().map_err(|_| bad())?,
            "max_value_bytes" => opts.max_value_bytes = v.parse().map_err(|_| bad())?,
            "timeout_ms" => {
                opts.request_timeout = Duration::from_millis(v.parse().map_err(|_| bad())?);
            }
            "busy_retries" => opts.busy_retries = v.parse().map_err(|_| bad())?,
            _ => {
                return Err(Error::invalid_input(format!(
                    "unknown tikv URL option {pair:?} (known: namespace, mode, max_txn_bytes, \
                     max_value_bytes, timeout_ms, busy_retries)"
                )));
            }
        }
    }
    opts.validate()?;
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = parse_url("tikv://pd1:2379,pd2:2379").unwrap();
        assert_eq!(o.pd_endpoints, vec!["pd1:2379", "pd2:2379"]);
        assert_eq!(o.mode, TxnMode::Optimistic);
        assert!(o.key_prefix().is_empty());
        let o = parse_url(
            "tikv://127.0.0.1:1/?namespace=t_1&mode=pessimistic&max_txn_bytes=10&max_value_bytes=5&timeout_ms=250&busy_retries=3",
        )
        .unwrap();
        assert_eq!(o.pd_endpoints, vec!["127.0.0.1:1"]);
        assert_eq!(o.mode, TxnMode::Pessimistic);
        assert_eq!(o.key_prefix(), b"t_1\0");
        assert_eq!(o.max_txn_bytes, 10);
        assert_eq!(o.max_value_bytes, 5);
        assert_eq!(o.request_timeout, Duration::from_millis(250));
        assert_eq!(o.busy_retries, 3);
        for bad in [
            "etch://x",
            "tikv://",
            "tikv://a:1?mode=eager",
            "tikv://a:1?namespace=a/b",
            "tikv://a:1?max_txn_bytes=-1",
            "tikv://a:1?cache=1",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.is_invalid_input(), "{bad}: {e}");
        }
    }
}
