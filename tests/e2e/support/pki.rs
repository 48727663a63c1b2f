//! A throwaway certificate authority made with the openssl command: it signs
//! the server certificate for 127.0.0.1 and, for mutual TLS, client
//! certificates. EC P-256 keys keep generation fast.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use super::tools::tools;

/// The CA, the server certificate it issued, and the files clients need.
pub struct Pki {
    dir: PathBuf,
    /// The CA certificate: what clients trust, and what Apache checks client
    /// certificates against.
    pub ca_cert: PathBuf,
    ca_key: PathBuf,
    /// Server certificate for IP address 127.0.0.1, and its key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A directory holding only `ca.crt`, in the layout skopeo's --cert-dir reads.
    pub skopeo_cert_dir: PathBuf,
}

/// Arguments of `openssl req` that make a new unencrypted P-256 key.
const NEW_EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A certificate issued by the test CA, and its key.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let ca_cert = dir.join("ca.crt");
        let ca_key = dir.join("ca.key");
        let ca_conf = write_conf(
            dir,
            "ca",
            "CN = registry-rubber e2e CA",
            "basicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash",
        );
        openssl(
            Command::new(&tools().openssl)
                .args(["req", "-x509", "-extensions", "ext", "-config"])
                .arg(&ca_conf)
                .args(NEW_EC_KEY)
                .args(["-days", "2", "-keyout"])
                .arg(&ca_key)
                .arg("-out")
                .arg(&ca_cert),
        );
        let skopeo_cert_dir = dir.join("skopeo-certs");
        std::fs::create_dir_all(&skopeo_cert_dir)
            .and_then(|()| std::fs::copy(&ca_cert, skopeo_cert_dir.join("ca.crt")))
            .unwrap_or_else(|e| panic!("prepare {}: {e}", skopeo_cert_dir.display()));
        let mut pki = Self {
            dir: dir.to_owned(),
            ca_cert,
            ca_key,
            server_cert: PathBuf::new(),
            server_key: PathBuf::new(),
            skopeo_cert_dir,
        };
        let server = pki.issue(
            "server",
            "CN = 127.0.0.1",
            "basicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = IP:127.0.0.1",
        );
        pki.server_cert = server.cert;
        pki.server_key = server.key;
        pki
    }

    /// A client certificate with subject `OU=ou, CN=cn`, signed by this CA.
    pub fn client(&self, name: &str, ou: &str, cn: &str) -> Issued {
        self.issue(
            name,
            &format!("OU = {ou}\nCN = {cn}"),
            "basicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature\n\
             extendedKeyUsage = clientAuth",
        )
    }

    fn issue(&self, name: &str, subject: &str, extensions: &str) -> Issued {
        static SERIAL: AtomicU64 = AtomicU64::new(1);
        let conf = write_conf(&self.dir, name, subject, extensions);
        let key = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        let cert = self.dir.join(format!("{name}.crt"));
        openssl(
            Command::new(&tools().openssl)
                .args(["req", "-new", "-config"])
                .arg(&conf)
                .args(NEW_EC_KEY)
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr),
        );
        let serial = format!(
            "{}",
            u64::from(std::process::id()) * 1000 + SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        openssl(
            Command::new(&tools().openssl)
                .args([
                    "x509",
                    "-req",
                    "-days",
                    "2",
                    "-extensions",
                    "ext",
                    "-set_serial",
                    &serial,
                ])
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(&self.ca_cert)
                .arg("-CAkey")
                .arg(&self.ca_key)
                .arg("-extfile")
                .arg(&conf)
                .arg("-out")
                .arg(&cert),
        );
        Issued { cert, key }
    }
}

/// An openssl configuration with a fixed subject and one extension section `ext`.
fn write_conf(dir: &Path, name: &str, subject: &str, extensions: &str) -> PathBuf {
    let path = dir.join(format!("{name}.cnf"));
    let text = format!(
        "[req]\ndistinguished_name = dn\nprompt = no\n\n[dn]\n{subject}\n\n[ext]\n{extensions}\n"
    );
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn openssl(command: &mut Command) {
    let output = command.output().expect("run openssl");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The README's commands that make the token door's signing key (SEC1, as
/// `openssl ecparam` writes it) and its self-signed certificate, the
/// registry's `rootcertbundle`. Run word for word, in the directory that
/// gets the two files.
pub const TOKEN_SIGNER_COMMANDS: [&str; 2] = [
    "openssl ecparam -name prime256v1 -genkey -noout -out signing.key",
    "openssl req -new -x509 -key signing.key -out signing.crt -days 365 -subj /CN=registry-rubber-token",
];

/// A signing key and its certificate, made by [`TOKEN_SIGNER_COMMANDS`].
#[derive(Debug, Clone)]
pub struct TokenSigner {
    /// `signing.key`: PEM, SEC1 (`BEGIN EC PRIVATE KEY`).
    pub key: PathBuf,
    /// `signing.crt`: PEM, self-signed.
    pub cert: PathBuf,
}

impl TokenSigner {
    /// Runs the README's commands in `dir` (created if missing), with the
    /// openssl the tools found.
    pub fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        for line in TOKEN_SIGNER_COMMANDS {
            let mut words = line.split_whitespace();
            assert_eq!(words.next(), Some("openssl"), "{line}");
            openssl(Command::new(&tools().openssl).args(words).current_dir(dir));
        }
        Self {
            key: dir.join("signing.key"),
            cert: dir.join("signing.crt"),
        }
    }

    /// The key as PKCS#8 DER (`openssl pkcs8 -topk8`), the form ring signs
    /// with, for tests that sign tokens themselves.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        let out = self.key.with_extension("pk8");
        openssl(
            Command::new(&tools().openssl)
                .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
                .arg(&self.key)
                .arg("-out")
                .arg(&out),
        );
        std::fs::read(&out).unwrap_or_else(|e| panic!("read {}: {e}", out.display()))
    }
}
