//! TLS client settings from PEM files, shared by the gateway (towards the broker) and the
//! admin API's client, so both name a bad file the same way.

use std::sync::Arc;

/// A rustls client config from PEM files: the CA(s) to trust and, for mutual TLS, a
/// certificate chain and its key. Errors name the setting (`<prefix>ca`, `<prefix>cert`, …)
/// and the file.
pub fn client_config(
    ca: &std::path::Path,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    prefix: &str,
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let mut roots = rustls::RootCertStore::empty();
    let bad_ca = |e: &dyn std::fmt::Display| format!("{prefix}ca {}: {e}", ca.display());
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad_ca(&e))? {
        roots
            .add(c.map_err(|e| bad_ca(&e))?)
            .map_err(|e| bad_ca(&e))?;
    }
    if roots.is_empty() {
        return Err(bad_ca(&"no certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{prefix}: {e}"))?
        .with_root_certificates(roots);
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let bad_cert =
                |e: &dyn std::fmt::Display| format!("{prefix}cert {}: {e}", cert.display());
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad_cert(&e))?;
            if chain.is_empty() {
                return Err(bad_cert(&"no certificate in it"));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("{prefix}key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{prefix}cert/key: {e}"))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(format!(
            "{prefix}cert and {prefix}key go together (mutual TLS)"
        )),
    }
}
