//! TLS through rustls (cargo feature `tls`): used when the URL's `sslmode` is
//! `prefer` or `require`. Server certificates are checked against the webpki
//! (Mozilla) root certificates.

use datalayer_core::{Error, Result};
use std::sync::Arc;

/// The TLS connector for tokio-postgres.
pub(crate) fn connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::engine("rustls", e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
