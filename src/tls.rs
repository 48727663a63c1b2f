//! Native HTTPS with rustls: TLS 1.2 and 1.3 only, an optional client CA that
//! makes a client certificate mandatory, and reloading of certificate, key
//! and client CA without a restart (SIGHUP).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The files TLS is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, every client must present a certificate issued by a CA in
    /// this bundle.
    pub client_ca: Option<PathBuf>,
    /// PEM certificate revocation lists of that CA: a revoked client
    /// certificate fails the handshake.
    pub crl: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {key} {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key} {path} holds no PEM certificate; give a file with -----BEGIN CERTIFICATE-----")]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("tls_key {0} holds no PEM private key; give a file with -----BEGIN PRIVATE KEY----- (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
    #[error("tls_key {key} does not match the certificate in tls_cert {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{key} {path}: {message}")]
    Invalid {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
}

/// The TLS settings in force, swapped whole on reload: connections accepted
/// before a reload keep the configuration they started with.
pub struct TlsState {
    files: RwLock<TlsFiles>,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsState {
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = server_config(&files)?;
        Ok(Self {
            files: RwLock::new(files),
            current: RwLock::new(config),
        })
    }

    fn files(&self) -> TlsFiles {
        match self.files.read() {
            Ok(f) => f.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        TlsAcceptor::from(config)
    }

    /// Reads the files again. On any error the configuration in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.reload_from(self.files())
    }

    /// Reads these files (the configuration may have named others) and puts
    /// them in force. On any error the configuration in force stays.
    pub fn reload_from(&self, files: TlsFiles) -> Result<(), TlsError> {
        let config = server_config(&files)?;
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        match self.files.write() {
            Ok(mut f) => *f = files,
            Err(poisoned) => *poisoned.into_inner() = files,
        }
        Ok(())
    }

    pub fn requires_client_certificate(&self) -> bool {
        self.files().client_ca.is_some()
    }
}

/// Installs the process's crypto provider; a second call is harmless.
pub fn install_crypto_provider() {
    let _ = ring::default_provider().install_default();
}

pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certificates("tls_cert", &files.cert)?;
    let key = read_key(&files.key)?;
    check_key_matches(&certs[0], &key, files)?;
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| invalid("tls_cert", &files.cert, e))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certificates("tls_client_ca", path)? {
                roots
                    .add(ca)
                    .map_err(|e| invalid("tls_client_ca", path, e))?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if let Some(crl_path) = &files.crl {
                let crls = rustls_pemfile::crls(&mut open("tls_crl", crl_path)?)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|source| TlsError::Read {
                        key: "tls_crl",
                        path: crl_path.clone(),
                        source,
                    })?;
                if crls.is_empty() {
                    return Err(invalid(
                        "tls_crl",
                        crl_path,
                        "holds no PEM revocation list (-----BEGIN X509 CRL-----)",
                    ));
                }
                verifier = verifier.with_crls(crls);
            }
            let verifier = verifier
                .build()
                .map_err(|e| invalid("tls_client_ca", path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid("tls_cert", &files.cert, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn invalid(key: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        key,
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn open(key: &'static str, path: &Path) -> Result<BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            key,
            path: path.to_owned(),
            source,
        })
}

fn read_certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut open(key, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            key,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut open("tls_key", path)?)
        .map_err(|source| TlsError::Read {
            key: "tls_key",
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(path.to_owned()))
}

/// Compares the key's public half with the certificate's, so that a key from
/// another certificate is refused at start rather than at the first handshake.
fn check_key_matches(
    cert: &CertificateDer<'_>,
    key: &PrivateKeyDer<'static>,
    files: &TlsFiles,
) -> Result<(), TlsError> {
    let signing = ring::default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| invalid("tls_key", &files.key, e))?;
    let Some(public) = signing.public_key() else {
        return Ok(());
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| invalid("tls_cert", &files.cert, e))?;
    if parsed.public_key().raw != public.as_ref() {
        return Err(TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        });
    }
    Ok(())
}

/// Who a verified client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The whole subject, as `CN=..., OU=..., O=...`.
    pub subject: String,
    pub common_names: Vec<String>,
    pub org_units: Vec<String>,
}

impl ClientIdentity {
    /// Reads the subject of the first (leaf) certificate a client presented.
    pub fn from_certificate(der: &CertificateDer<'_>) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let common_names = subject
            .iter_common_name()
            .filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect();
        let org_units = subject
            .iter_organizational_unit()
            .filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect();
        Some(Self {
            subject: subject.to_string(),
            common_names,
            org_units,
        })
    }
}
