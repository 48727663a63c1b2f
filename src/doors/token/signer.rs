//! The token door's signing key: an EC P-256 private key and the
//! certificate the registry trusts for it, read from PEM files, checked
//! against each other, and swapped whole on reload. Tokens are JWTs signed
//! with ES256, whose header names the key by its RFC 7638 thumbprint (`kid`)
//! and carries the certificate chain (`x5c`), as the registry's token
//! authentication expects.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls::pki_types::PrivateKeyDer;
use serde_json::{json, Value};

use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("cannot read {key} {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token.key {path} is encrypted; the service has no passphrase: give it the key unencrypted (`openssl ec -in {path} -out plain.key`), readable by the service only", path = .0.display())]
    Encrypted(PathBuf),
    #[error("token.key {0} holds no PEM private key; give an EC P-256 key (-----BEGIN EC PRIVATE KEY----- or -----BEGIN PRIVATE KEY-----), such as `openssl ecparam -name prime256v1 -genkey -noout` writes")]
    NoKey(PathBuf),
    #[error("token.key {path} is not an EC P-256 private key ({why}); tokens are signed with ES256: make one with `openssl ecparam -name prime256v1 -genkey -noout -out {path}`", path = .path.display())]
    NotP256 { path: PathBuf, why: &'static str },
    #[error("token.cert {0} holds no PEM certificate; give the certificate of token.key, with -----BEGIN CERTIFICATE-----")]
    NoCertificate(PathBuf),
    #[error("token.cert {path}: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("token.key {key} does not match the certificate in token.cert {cert}; give the certificate made for that key")]
    Mismatch { key: PathBuf, cert: PathBuf },
    #[error("token.cert {path} is not valid now (valid from {not_before} to {not_after}); the registry would refuse every token it signs: give a current certificate")]
    NotValidNow {
        path: PathBuf,
        not_before: String,
        not_after: String,
    },
}

/// A signing certificate that expires sooner than this is warned about at
/// every load.
const EXPIRY_WARNING: i64 = 30 * 24 * 3600;

/// One key and certificate, ready to sign.
pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// The RFC 7638 thumbprint of the public key.
    kid: String,
    /// The certificate chain, each in standard base64 of its DER.
    x5c: Vec<String>,
    /// The public key as a JWK (with kid, use, alg and x5c).
    jwk: Value,
    /// When the certificate expires, in Unix seconds.
    not_after: i64,
}

impl Signer {
    /// Reads and checks the key and the certificate.
    pub fn load(key_path: &Path, cert_path: &Path) -> Result<Self, SignerError> {
        let rng = SystemRandom::new();
        let key = read_key(key_path, &rng)?;
        let point = key.public_key().as_ref().to_vec();
        let chain = read_certificates(cert_path)?;
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| {
            SignerError::BadCertificate {
                path: cert_path.to_owned(),
                message: e.to_string(),
            }
        })?;
        if leaf.public_key().subject_public_key.data.as_ref() != point.as_slice() {
            return Err(SignerError::Mismatch {
                key: key_path.to_owned(),
                cert: cert_path.to_owned(),
            });
        }
        // The registry checks the certificate when it verifies each token:
        // one that has expired, or is not valid yet, fails every token.
        let validity = leaf.validity();
        let (not_before, not_after) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if now < not_before || now >= not_after {
            return Err(SignerError::NotValidNow {
                path: cert_path.to_owned(),
                not_before: validity.not_before.to_string(),
                not_after: validity.not_after.to_string(),
            });
        }
        if not_after - now < EXPIRY_WARNING {
            tracing::warn!(
                cert = %cert_path.display(),
                not_after = %validity.not_after,
                "the token signing certificate expires within 30 days; renew it and send SIGHUP"
            );
        }
        // The point is uncompressed: 0x04, then x and y, 32 bytes each.
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65]),
        );
        let kid = thumbprint(&x, &y);
        let x5c: Vec<String> = chain.iter().map(|der| STANDARD.encode(der)).collect();
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": x,
            "y": y,
            "kid": kid,
            "use": "sig",
            "alg": "ES256",
            "x5c": x5c,
        });
        Ok(Self {
            key,
            rng,
            kid,
            x5c,
            jwk,
            not_after,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// When the certificate expires, in Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The public key as a JWK, for `/.well-known/jwks.json`.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A JWT of `claims`, signed with ES256.
    pub fn sign(&self, claims: &Value) -> Result<String, ring::error::Unspecified> {
        let header = json!({
            "typ": "JWT",
            "alg": "ES256",
            "kid": self.kid,
            "x5c": self.x5c,
        });
        let mut token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(&self.rng, token.as_bytes())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(token)
    }
}

/// The RFC 7638 thumbprint of an EC P-256 key: the SHA-256 of its required
/// JWK members in lexicographic order, without whitespace, in base64url.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

fn open(key: &'static str, path: &Path) -> Result<BufReader<std::fs::File>, SignerError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| SignerError::Read {
            key,
            path: path.to_owned(),
            source,
        })
}

fn read_key(path: &Path, rng: &SystemRandom) -> Result<EcdsaKeyPair, SignerError> {
    let pem = std::fs::read(path).map_err(|source| SignerError::Read {
        key: "token.key",
        path: path.to_owned(),
        source,
    })?;
    // An encrypted key (PKCS#8 or OpenSSL's Proc-Type form) cannot be read
    // without a passphrase the service does not have.
    if pem.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(SignerError::Encrypted(path.to_owned()));
    }
    let der = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| SignerError::Read {
            key: "token.key",
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| SignerError::NoKey(path.to_owned()))?;
    let not_p256 = |why| SignerError::NotP256 {
        path: path.to_owned(),
        why,
    };
    match der {
        PrivateKeyDer::Pkcs8(der) => EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            rng,
        )
        .map_err(|_| not_p256("a PKCS#8 key of another kind or curve")),
        PrivateKeyDer::Sec1(der) => {
            let (private, public) = sec1_p256(der.secret_sec1_der()).ok_or_else(|| {
                not_p256("a SEC1 key of another curve, or without its public key")
            })?;
            EcdsaKeyPair::from_private_key_and_public_key(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                private,
                public,
                rng,
            )
            .map_err(|_| not_p256("its public key does not belong to its private key"))
        }
        _ => Err(not_p256("an RSA key")),
    }
}

/// The private scalar and the public point of a SEC1 `ECPrivateKey` on
/// P-256: `SEQUENCE { INTEGER 1, OCTET STRING key, [0] curve OID OPTIONAL,
/// [1] BIT STRING public key OPTIONAL }`. None when it is anything else or
/// has no public key.
fn sec1_p256(der: &[u8]) -> Option<(&[u8], &[u8])> {
    /// prime256v1 (1.2.840.10045.3.1.7).
    const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (tag, body, rest) = der_element(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (tag, version, body) = der_element(body)?;
    if tag != 0x02 || version != [1] {
        return None;
    }
    let (tag, private, mut body) = der_element(body)?;
    if tag != 0x04 || private.len() != 32 {
        return None;
    }
    let mut public = None;
    while !body.is_empty() {
        let (tag, value, rest) = der_element(body)?;
        body = rest;
        match tag {
            0xa0 => {
                let (oid_tag, oid, _) = der_element(value)?;
                if oid_tag != 0x06 || oid != P256 {
                    return None;
                }
            }
            0xa1 => {
                let (bits_tag, bits, _) = der_element(value)?;
                // A BIT STRING: the count of unused bits (0), then the point.
                if bits_tag != 0x03 || bits.first() != Some(&0) {
                    return None;
                }
                public = Some(&bits[1..]);
            }
            _ => return None,
        }
    }
    let public = public.filter(|p| p.len() == 65 && p[0] == 0x04)?;
    Some((private, public))
}

/// The first DER element of `input`: its tag, its contents, and what
/// follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 2 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn read_certificates(path: &Path) -> Result<Vec<Vec<u8>>, SignerError> {
    let certs = rustls_pemfile::certs(&mut open("token.cert", path)?)
        .map(|c| c.map(|der| der.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| SignerError::Read {
            key: "token.cert",
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(SignerError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// The signer in force, swapped whole on reload: tokens being signed keep
/// the signer they started with.
pub struct TokenKeys {
    files: RwLock<(PathBuf, PathBuf)>,
    current: RwLock<Arc<Signer>>,
    /// The signer a reload replaced, and when: tokens it signed are still
    /// live for a while, so the JWKS goes on listing its key.
    previous: RwLock<Option<(Arc<Signer>, Instant)>>,
    /// Where the certificate's expiry is reported, once the door is built.
    metrics: OnceLock<Arc<Metrics>>,
}

impl TokenKeys {
    pub fn load(key: &Path, cert: &Path) -> Result<Self, SignerError> {
        Ok(Self {
            current: RwLock::new(Arc::new(Signer::load(key, cert)?)),
            files: RwLock::new((key.to_owned(), cert.to_owned())),
            previous: RwLock::new(None),
            metrics: OnceLock::new(),
        })
    }

    /// Reports the certificate's expiry to `metrics`, now and at every
    /// reload.
    pub fn report_to(&self, metrics: Arc<Metrics>) {
        report_expiry(self.metrics.get_or_init(|| metrics), &self.current());
    }

    pub fn current(&self) -> Arc<Signer> {
        match self.current.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The public keys a verifier needs now: the one in force, and the one
    /// it replaced while tokens that one signed may be live (`for_how_long`
    /// after the replacement).
    pub fn published(&self, for_how_long: Duration) -> Vec<Value> {
        let mut keys = vec![self.current().jwk().clone()];
        if let Some((previous, since)) = &*self.previous.read().unwrap_or_else(|p| p.into_inner()) {
            if since.elapsed() < for_how_long {
                keys.push(previous.jwk().clone());
            }
        }
        keys
    }

    /// Reads the files again; on any error the signer in force stays.
    pub fn reload(&self) -> Result<(), SignerError> {
        let (key, cert) = match self.files.read() {
            Ok(f) => f.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        self.reload_from(&key, &cert)
    }

    /// Reads these files (the configuration may have named others) and puts
    /// them in force; on any error the signer in force stays.
    pub fn reload_from(&self, key: &Path, cert: &Path) -> Result<(), SignerError> {
        let signer = Arc::new(Signer::load(key, cert)?);
        if let Some(metrics) = self.metrics.get() {
            report_expiry(metrics, &signer);
        }
        let replaced = {
            let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *current, signer)
        };
        if replaced.kid() != self.current().kid() {
            *self.previous.write().unwrap_or_else(|p| p.into_inner()) =
                Some((replaced, Instant::now()));
        }
        match self.files.write() {
            Ok(mut f) => *f = (key.to_owned(), cert.to_owned()),
            Err(poisoned) => *poisoned.into_inner() = (key.to_owned(), cert.to_owned()),
        }
        Ok(())
    }
}

fn report_expiry(metrics: &Metrics, signer: &Signer) {
    let expiry = u64::try_from(signer.not_after()).unwrap_or(0);
    metrics
        .token_certificate_expiry
        .store(expiry, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 key and a self-signed certificate for it, as PEM files.
    pub(crate) fn key_and_cert(dir: &Path) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["token-signer".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (key_path, cert_path) = (dir.join("token.key"), dir.join("token.crt"));
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::write(&cert_path, cert.pem()).unwrap();
        (key_path, cert_path)
    }

    fn decode(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn a_token_is_an_es256_jwt_with_kid_and_x5c_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = key_and_cert(dir.path());
        let signer = Signer::load(&key, &cert).unwrap();
        let token = signer.sign(&json!({"sub": "u", "access": []})).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode(parts[0]);
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], signer.kid());
        let x5c = STANDARD.decode(header["x5c"][0].as_str().unwrap()).unwrap();
        let pem = std::fs::read_to_string(&cert).unwrap();
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        assert_eq!(x5c, parsed.contents, "x5c is the certificate");
        assert_eq!(decode(parts[1])["sub"], "u");
        // The signature is 64 bytes r||s over header.claims, and verifies
        // with the certificate's public key.
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(signature.len(), 64);
        let (_, leaf) = x509_parser::parse_x509_certificate(&x5c).unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            leaf.public_key().subject_public_key.data.to_vec(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        public.verify(signed.as_bytes(), &signature).unwrap();
        let mut tampered = signed.into_bytes();
        tampered[10] ^= 1;
        assert!(public.verify(&tampered, &signature).is_err());
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        // RFC 7638's example is RSA; for EC the same rule: the required
        // members crv, kty, x, y in order, no whitespace, SHA-256, base64url.
        let x = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
        let y = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";
        let expected = URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            br#"{"crv":"P-256","kty":"EC","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}"#,
        ));
        assert_eq!(thumbprint(x, y), expected);
        assert_eq!(expected.len(), 43);
    }

    #[test]
    fn a_sec1_key_as_openssl_writes_it_is_read_too() {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = key_and_cert(dir.path());
        // Re-encode the PKCS#8 key as SEC1 with openssl, as operators do.
        let sec1 = dir.path().join("sec1.key");
        let status = std::process::Command::new("openssl")
            .args(["ec", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&sec1)
            .output()
            .expect("openssl runs (Debian package openssl)");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        assert!(std::fs::read_to_string(&sec1)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY"));
        let a = Signer::load(&key, &cert).unwrap();
        let b = Signer::load(&sec1, &cert).unwrap();
        assert_eq!(a.kid(), b.kid());
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = key_and_cert(dir.path());
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let (_, other_cert) = key_and_cert(&other);
        let err = Signer::load(&key, &other_cert).err().unwrap().to_string();
        assert!(err.contains("does not match"), "{err}");
        assert!(err.contains(&key.display().to_string()), "{err}");
        assert!(err.contains(&other_cert.display().to_string()), "{err}");
        std::fs::write(dir.path().join("empty.key"), "").unwrap();
        let err = Signer::load(&dir.path().join("empty.key"), &other_cert)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("holds no PEM private key"), "{err}");
        let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        std::fs::write(dir.path().join("p384.key"), rsa.serialize_pem()).unwrap();
        let err = Signer::load(&dir.path().join("p384.key"), &other_cert)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not an EC P-256 private key"), "{err}");
        // Encrypted keys, in both of openssl's forms, are named as such.
        let (plain, cert) = key_and_cert(&other);
        for (name, args) in [
            ("legacy.key", &["ec", "-aes256"][..]),
            ("pkcs8.key", &["pkcs8", "-topk8", "-v2", "aes256"][..]),
        ] {
            let out = dir.path().join(name);
            let made = std::process::Command::new("openssl")
                .args(args)
                .arg("-in")
                .arg(&plain)
                .args(["-passout", "pass:secret", "-out"])
                .arg(&out)
                .output()
                .expect("openssl runs");
            assert!(
                made.status.success(),
                "{}",
                String::from_utf8_lossy(&made.stderr)
            );
            let err = Signer::load(&out, &cert).err().unwrap().to_string();
            assert!(err.contains("is encrypted"), "{name}: {err}");
        }
    }

    #[test]
    fn a_reload_swaps_the_key_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = key_and_cert(dir.path());
        let keys = TokenKeys::load(&key, &cert).unwrap();
        let before = keys.current().kid().to_owned();
        std::fs::write(&key, "garbage").unwrap();
        assert!(keys.reload().is_err());
        assert_eq!(keys.current().kid(), before, "the old key stays");
        let (_, _) = key_and_cert(dir.path());
        keys.reload().unwrap();
        assert_ne!(keys.current().kid(), before, "a new key in force");
        // The JWKS lists the replaced key while its tokens may live.
        let kids = |published: Vec<Value>| -> Vec<String> {
            published
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect()
        };
        let now = keys.current().kid().to_owned();
        assert_eq!(
            kids(keys.published(Duration::from_secs(300))),
            [now.clone(), before]
        );
        assert_eq!(kids(keys.published(Duration::ZERO)), [now]);
        // Reloading the same files changes nothing.
        keys.reload().unwrap();
        assert_eq!(kids(keys.published(Duration::from_secs(300))).len(), 2);
    }

    #[test]
    fn a_certificate_not_valid_now_is_refused_and_the_expiry_reported() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key_path = dir.path().join("token.key");
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let cert = |not_before: time::OffsetDateTime, not_after: time::OffsetDateTime| {
            let mut params = rcgen::CertificateParams::new(vec!["token-signer".into()]).unwrap();
            params.not_before = not_before;
            params.not_after = not_after;
            let path = dir
                .path()
                .join(format!("{}.crt", not_before.unix_timestamp()));
            std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
            path
        };
        let day = time::Duration::days(1);
        let expired = cert(now - day * 10, now - day);
        let not_yet = cert(now + day, now + day * 10);
        for path in [&expired, &not_yet] {
            let err = Signer::load(&key_path, path).err().unwrap().to_string();
            assert!(err.contains("is not valid now"), "{err}");
        }
        let expires: time::OffsetDateTime = now + day * 100;
        let current = cert(now - day, expires);
        let keys = TokenKeys::load(&key_path, &current).unwrap();
        let metrics = Arc::new(Metrics::default());
        keys.report_to(Arc::clone(&metrics));
        let reported = metrics
            .token_certificate_expiry
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(reported, expires.unix_timestamp() as u64);
        // A reload to an expired certificate is refused; the one in force
        // and its reported expiry stay.
        assert!(keys.reload_from(&key_path, &expired).is_err());
        assert_eq!(
            metrics
                .token_certificate_expiry
                .load(std::sync::atomic::Ordering::Relaxed),
            reported
        );
    }

    #[test]
    fn der_lengths() {
        assert_eq!(
            der_element(&[0x04, 0x01, 0xaa]),
            Some((0x04, &[0xaa][..], &[][..]))
        );
        assert_eq!(
            der_element(&[0x04, 0x81, 0x01, 0xaa, 0xbb]),
            Some((0x04, &[0xaa][..], &[0xbb][..]))
        );
        assert_eq!(der_element(&[0x04, 0x02, 0xaa]), None, "short");
        assert_eq!(
            der_element(&[0x04, 0x85, 1, 1, 1, 1, 1]),
            None,
            "too long a length"
        );
        assert!(sec1_p256(&[0x30, 0x00]).is_none());
    }
}
