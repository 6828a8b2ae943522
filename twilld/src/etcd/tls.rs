//! The TLS settings of the etcd connection: the CA that signs the members' certificates and the
//! optional client certificate, loaded once from PEM files into a rustls config (ring crypto).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Debian's bundle of system CAs, trusted when no `ca_file` is given for an https endpoint.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The rustls config for `ca_file` (or the system CAs) and the client certificate and key;
/// the error names the file and what is wrong with it.
pub fn config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Arc<ClientConfig>, String> {
    let (ca, what) = match ca_file {
        Some(f) => (f, "CA file"),
        None => (
            Path::new(SYSTEM_CAS),
            "no ca_file is set; the system CA bundle",
        ),
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca, what)? {
        roots
            .add(cert)
            .map_err(|e| format!("{what} {}: a certificate is not usable: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots);
    let config = match (cert_file, key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, "client certificate file")?;
            let der = read(key, "client key file")?;
            let private = PrivateKeyDer::from_pem_slice(&der).map_err(|e| {
                format!(
                    "client key file {}: {} (PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \
                     \"EC PRIVATE KEY\" expected)",
                    key.display(),
                    pem_problem(&e)
                )
            })?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                format!(
                    "client certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                )
            })?
        }
        (Some(cert), None) => {
            return Err(format!(
                "client certificate {} is given without its key file",
                cert.display()
            ));
        }
        (None, Some(key)) => {
            return Err(format!(
                "client key {} is given without its certificate file",
                key.display()
            ));
        }
    };
    Ok(Arc::new(config))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: cannot read it: {e}", path.display()))
}

/// Every `CERTIFICATE` block of the PEM file at `path`; at least one.
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: {}", path.display(), pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: holds no PEM \"CERTIFICATE\" block",
            path.display()
        ));
    }
    Ok(certs)
}

/// A PEM parse error in words (the crate's own text prints byte arrays).
fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a PEM block is not closed by \"{}\"",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed PEM BEGIN line \"{}\"",
            String::from_utf8_lossy(line).trim()
        ),
        pem::Error::Base64Decode(m) => format!("a PEM block's base64 is corrupt ({m})"),
        pem::Error::NoItemsFound => "holds no usable PEM block".into(),
        other => format!("not valid PEM ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, content: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("twilld-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn unusable_pem_files_are_named_with_the_problem() {
        let missing = Path::new("/nonexistent/ca.pem");
        let e = config(Some(missing), None, None).unwrap_err();
        assert!(
            e.contains("CA file /nonexistent/ca.pem: cannot read it"),
            "{e}"
        );
        let empty = scratch("empty.pem", b"not pem at all\n");
        let e = config(Some(&empty), None, None).unwrap_err();
        assert!(
            e.contains("empty.pem: holds no PEM \"CERTIFICATE\" block"),
            "{e}"
        );
        let open = scratch("open.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n");
        let e = config(Some(&open), None, None).unwrap_err();
        assert!(e.contains("open.pem: a PEM block is not closed"), "{e}");
        let junk = scratch(
            "junk.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = config(Some(&junk), None, None).unwrap_err();
        assert!(e.contains("junk.pem: a certificate is not usable"), "{e}");
        let _ = std::fs::remove_dir_all(empty.parent().unwrap());
    }
}
