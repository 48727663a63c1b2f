//! TLS to the database: a MariaDB server that refuses plain connections
//! (require_secure_transport), and the service connecting with each mode.

use std::path::{Path, PathBuf};

use registry_rubber::config::DatabaseTls;
use registry_rubber::store::{Create, Store};

use crate::database_on;
use crate::helpers::test_settings;
use crate::mariadb::MariaDb;

/// A CA, and a server certificate it issued for 127.0.0.1, as PEM files;
/// and another CA that issued nothing here.
fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "database CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let mut server_params = rcgen::CertificateParams::new(vec!["db.example".into()]).unwrap();
    server_params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut other_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = other_params.self_signed(&other_key).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    (
        write("ca.pem", ca.pem()),
        write("server.pem", server.pem()),
        write("server.key", server_key.serialize_pem()),
        write("other-ca.pem", other.pem()),
    )
}

#[tokio::test]
async fn each_tls_mode_against_a_server_that_refuses_plain_connections() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key, other_ca) = pki(certs.path());
    let server = MariaDb::start_with(vec![
        format!("--ssl-ca={}", ca.display()),
        format!("--ssl-cert={}", cert.display()),
        format!("--ssl-key={}", key.display()),
        "--require-secure-transport=ON".into(),
    ]);
    let db = database_on(&server).await;
    let open = |mode: DatabaseTls, ca: Option<&PathBuf>| {
        let mut settings = test_settings(&db);
        settings.database_tls = mode;
        settings.database_tls_ca = ca.cloned();
        async move { Store::open(&settings, Create::Never).await }
    };
    for (mode, ca_file) in [
        (DatabaseTls::Required, None),
        (DatabaseTls::VerifyCa, Some(&ca)),
        (DatabaseTls::VerifyIdentity, Some(&ca)),
    ] {
        let store = open(mode, ca_file)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        store.ping().await.unwrap_or_else(|e| panic!("{mode}: {e}"));
        store.close().await;
    }
    // Plain TCP, asked for or chosen for a loopback host, is refused by this
    // server; a certificate from another CA is refused by the service.
    for (mode, ca_file, why) in [
        // MariaDB answers a plain connection it must refuse with an access
        // denial.
        (DatabaseTls::Disabled, None, "denied"),
        (DatabaseTls::Auto, None, "denied"),
        (DatabaseTls::VerifyCa, Some(&other_ca), "certificate"),
        (DatabaseTls::VerifyIdentity, Some(&other_ca), "certificate"),
    ] {
        let err = open(mode, ca_file)
            .await
            .err()
            .unwrap_or_else(|| panic!("{mode} with {ca_file:?} opened"))
            .to_string();
        assert!(err.to_lowercase().contains(why), "{mode}: {err}");
    }
    drop(db);
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}

#[test]
fn auto_is_plain_on_loopback_and_tls_elsewhere() {
    assert_eq!(
        DatabaseTls::Auto.for_host("127.0.0.1"),
        DatabaseTls::Disabled
    );
    assert_eq!(DatabaseTls::Auto.for_host("::1"), DatabaseTls::Disabled);
    assert_eq!(
        DatabaseTls::Auto.for_host("localhost"),
        DatabaseTls::Disabled
    );
    assert_eq!(
        DatabaseTls::Auto.for_host("10.0.0.5"),
        DatabaseTls::Required
    );
    assert_eq!(
        DatabaseTls::Auto.for_host("db.example"),
        DatabaseTls::Required
    );
    assert_eq!(
        DatabaseTls::Disabled.for_host("db.example"),
        DatabaseTls::Disabled
    );
}

#[tokio::test]
async fn required_tls_never_falls_back_to_plain_tcp() {
    let server = MariaDb::start();
    let db = database_on(&server).await;
    let mut settings = test_settings(&db);
    settings.database_tls = DatabaseTls::Required;
    let err = Store::open(&settings, Create::Never)
        .await
        .err()
        .expect("a server without TLS is refused, not used in the clear")
        .to_string();
    assert!(
        err.to_lowercase().contains("tls") || err.to_lowercase().contains("ssl"),
        "{err}"
    );
    drop(db);
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}
