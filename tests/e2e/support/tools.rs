//! The external programs the end-to-end tests drive, found once per test
//! binary. A missing one fails every test with the Debian package to install:
//! these tests never skip.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Absolute paths of the programs the tests run.
#[derive(Debug)]
pub struct Tools {
    pub apache2: PathBuf,
    pub nginx: PathBuf,
    pub envsubst: PathBuf,
    pub docker_registry: PathBuf,
    pub skopeo: PathBuf,
    pub htpasswd: PathBuf,
    pub openssl: PathBuf,
    pub curl: PathBuf,
    pub tar: PathBuf,
}

/// Directory of Debian's Apache modules, as the sample's LoadModule lines name it.
pub const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

const INSTALL_HINT: &str = "apt-get install -y apache2 apache2-utils libaprutil1-dbd-sqlite3 nginx gettext-base docker-registry skopeo openssl curl";

/// The tools, checked on first use. Panics, naming every missing package, if
/// any is absent or the tests are not running as root.
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(find_tools)
}

fn find_tools() -> Tools {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the end-to-end tests must run as root: Apache and nginx start as root and serve as \
         registry-apache and www-data, the tests create the registry-apache account if the host \
         lacks it, and the test database is handed to the group registry-rubber"
    );

    let mut missing: Vec<String> = Vec::new();
    let mut find = |program: &str, package: &str| {
        find_in_path(program).unwrap_or_else(|| {
            missing.push(format!("`{program}` (Debian package {package})"));
            PathBuf::new()
        })
    };
    let tools = Tools {
        apache2: find("apache2", "apache2"),
        nginx: find("nginx", "nginx"),
        envsubst: find("envsubst", "gettext-base"),
        docker_registry: find("docker-registry", "docker-registry"),
        skopeo: find("skopeo", "skopeo"),
        htpasswd: find("htpasswd", "apache2-utils"),
        openssl: find("openssl", "openssl"),
        curl: find("curl", "curl"),
        tar: find("tar", "tar"),
    };
    for module in [
        "mod_mpm_event.so",
        "mod_ssl.so",
        "mod_dbd.so",
        "mod_authn_dbd.so",
        "mod_proxy_http.so",
    ] {
        if !Path::new(APACHE_MODULES).join(module).is_file() {
            missing.push(format!(
                "{APACHE_MODULES}/{module} (Debian package apache2)"
            ));
        }
    }
    if !tools.nginx.as_os_str().is_empty() && !nginx_has_auth_request(&tools.nginx) {
        missing.push(
            "nginx's auth_request module (Debian package nginx builds it in; this nginx lacks it)"
                .to_owned(),
        );
    }
    if !has_apr_sqlite_driver() {
        missing.push(
            "the APR SQLite driver apr_dbd_sqlite3 (Debian package libaprutil1-dbd-sqlite3)"
                .to_owned(),
        );
    }
    assert!(
        missing.is_empty(),
        "the end-to-end tests need, and could not find: {}. Install with: {INSTALL_HINT}",
        missing.join(", ")
    );
    tools
}

/// Looks a program up in PATH, then in the sbin directories a non-login root
/// shell may lack.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether `nginx -V` lists the auth_request module among its build options.
fn nginx_has_auth_request(nginx: &Path) -> bool {
    std::process::Command::new(nginx)
        .arg("-V")
        .output()
        .is_ok_and(|o| {
            // nginx prints its version and build options on standard error.
            String::from_utf8_lossy(&o.stderr).contains("--with-http_auth_request_module")
        })
}

/// Whether `/usr/lib/<triplet>/apr-util-1/apr_dbd_sqlite3*.so` exists.
fn has_apr_sqlite_driver() -> bool {
    let Ok(entries) = std::fs::read_dir("/usr/lib") else {
        return false;
    };
    entries.flatten().any(|entry| {
        std::fs::read_dir(entry.path().join("apr-util-1")).is_ok_and(|files| {
            files.flatten().any(|f| {
                f.file_name()
                    .to_string_lossy()
                    .starts_with("apr_dbd_sqlite3")
            })
        })
    })
}
