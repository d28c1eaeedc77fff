//! TLS for `rediss://` endpoints: the options a user gives (CA, client certificate and key,
//! server name, insecure), the rustls client configuration built from them once at the edge,
//! and the handshake. Every node of a deployment, the seed and the nodes it announces, is
//! reached with its endpoint's [`TlsConfig`].
//!
//! Trust defaults to the platform's roots (`rustls-native-certs`: the OS store, or
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`), the same roots the verifier's `redis` crate loads, so both
//! sides of ferry trust the same servers. A CA file replaces them.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// What the user said about TLS for one side. All paths are PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA certificates to trust instead of the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (chain) for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name to send (SNI) and verify for every node, instead of each node's host. Cluster
    /// nodes announce IP addresses: a certificate that names only a DNS name needs this.
    pub server_name: Option<String>,
    /// Accept any server certificate. For tests and emergencies only.
    pub insecure: bool,
}

/// A configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read tls {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("tls {what} {} holds no PEM certificate", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("tls {what} {} is not valid PEM: {detail}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("tls ca file {}: certificate refused as a trust anchor: {detail}", path.display())]
    Anchor { path: PathBuf, detail: String },
    #[error("a tls client certificate needs its key and a key its certificate: give both")]
    CertWithoutKey,
    #[error("tls client certificate {} with key {} refused: {detail}", cert.display(), key.display())]
    ClientAuth {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("invalid tls server name {name:?}")]
    ServerName { name: String },
}

/// The client side of TLS for one deployment: built once, cloned cheaply into every link.
#[derive(Clone)]
pub struct TlsConfig {
    options: TlsOptions,
    connector: TlsConnector,
}

impl TlsConfig {
    /// Reads the files the options name and builds the rustls configuration.
    pub fn new(options: TlsOptions) -> Result<Self, TlsError> {
        if let Some(name) = &options.server_name {
            ServerName::try_from(name.clone())
                .map_err(|_| TlsError::ServerName { name: name.clone() })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions");
        let builder = if options.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        } else {
            let roots = match &options.ca_file {
                Some(path) => Arc::new(ca_roots(path)?),
                None => platform_roots(),
            };
            builder.with_root_certificates(roots)
        };
        let config = match (&options.cert_file, &options.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certificates("client certificate", cert)?;
                let key_der = private_key(key)?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| TlsError::ClientAuth {
                        cert: cert.clone(),
                        key: key.clone(),
                        detail: e.to_string(),
                    })?
            }
            _ => return Err(TlsError::CertWithoutKey),
        };
        Ok(TlsConfig {
            options,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// TLS with the platform's roots and nothing else: what `rediss://` alone means.
    pub fn platform() -> Self {
        TlsConfig::new(TlsOptions::default()).expect("default tls options always build")
    }

    pub fn options(&self) -> &TlsOptions {
        &self.options
    }

    /// The TLS handshake with `host` over `socket`: the server name sent and verified is the
    /// configured one, or `host`.
    pub(crate) async fn handshake(
        &self,
        host: &str,
        socket: TcpStream,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = self.options.server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid tls server name {name:?}"),
            )
        })?;
        self.connector.connect(name, socket).await
    }
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.options == other.options
    }
}

impl Eq for TlsConfig {}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TlsConfig").field(&self.options).finish()
    }
}

/// When `error` is a TLS failure, what went wrong in words a user can act on.
pub fn describe(error: &io::Error) -> Option<String> {
    let tls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        // A bad signature: a trusted CA of the same name did not sign it.
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => "the server's certificate is not signed by a trusted CA".to_string(),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            "the server's certificate does not name this host (set the tls server name)".to_string()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the server's certificate has expired".to_string(),
        rustls::Error::InvalidCertificate(other) => {
            format!("the server's certificate was refused: {other:?}")
        }
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the server requires a client certificate".to_string()
        }
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError
            | AlertDescription::HandshakeFailure),
        ) => format!("the server refused the handshake or the client certificate ({alert:?})"),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("the server does not speak tls on this port? ({tls})")
        }
        other => other.to_string(),
    })
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("client key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what: "client key",
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn ca_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("ca file", path)? {
        roots.add(cert).map_err(|e| TlsError::Anchor {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The platform's roots, loaded once per process. Certificates the platform store holds but
/// rustls cannot use are skipped, as browsers do; an empty store makes every handshake fail
/// with "not signed by a trusted CA", which names the fix.
fn platform_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!(%error, "skipping part of the platform's tls roots");
            }
            let mut roots = RootCertStore::empty();
            let (_added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            Arc::new(roots)
        })
        .clone()
}

/// `--tls-insecure`: any certificate, any name. Signatures are still checked so the
/// handshake itself is sound; only who signed is not.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_one_line_errors_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("ferry-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let cases = [
            (
                TlsOptions {
                    ca_file: Some(dir.join("missing.pem")),
                    ..TlsOptions::default()
                },
                "cannot read tls ca file",
            ),
            (
                TlsOptions {
                    ca_file: Some(garbage.clone()),
                    ..TlsOptions::default()
                },
                "holds no PEM certificate",
            ),
            (
                TlsOptions {
                    cert_file: Some(garbage.clone()),
                    ..TlsOptions::default()
                },
                "give both",
            ),
            (
                TlsOptions {
                    server_name: Some("bad name!".into()),
                    ..TlsOptions::default()
                },
                "invalid tls server name",
            ),
        ];
        for (options, expected) in cases {
            let err = TlsConfig::new(options).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!TlsConfig::platform().options().insecure);
    }
}
