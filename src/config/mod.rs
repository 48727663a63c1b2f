//! Typed settings, layered: defaults, then the TOML file, then `RUBBER_*`
//! environment variables, then command-line flags. Every source goes through
//! the same per-key parser (declared once, in [`keys`]), so a value means the
//! same wherever it is written, and every error names the key, where it came
//! from, and how to fix it.
//!
//! The credential core's keys and the admin API's sit at the top level of the
//! file, as in the original's files; each other door has a table of its own
//! (`[auth_request]`).

pub mod keys;
pub mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::access::{AccessPolicy, SubjectPattern};
use crate::domain::TtlPolicy;
use crate::htpasswd::HashType;
use crate::tls::TlsFiles;

pub use keys::{keys, Key, Section};
pub use values::{
    DatabaseTls, DatabaseUrl, LogFormat, MysqlUrl, Secret, TableName, DEFAULT_DATABASE_URL,
    DEFAULT_MYSQL_PORT, REDACTED,
};

/// The keys that say which database, and how to reach it.
pub const DATABASE_KEYS: [&str; 5] = [
    "database_url",
    "database_password_file",
    "database_tls",
    "database_tls_ca",
    "table",
];

/// Prefix of every environment variable that sets a key.
pub const ENV_PREFIX: &str = "RUBBER_";
/// Permission bits a database password file must not have: any for others
/// (every user of the host could read the password), and the group's write.
pub const PASSWORD_FILE_FORBIDDEN_BITS: u32 = 0o027;
/// Environment variable naming the configuration file when `--config` is absent.
pub const CONFIG_FILE_ENV: &str = "RUBBER_CONFIG";

/// Everything the service is configured with. Each field is filled by its
/// key in [`keys`]; [`Settings::default`] applies every key's default.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseUrl,
    /// File holding the MySQL/MariaDB password, read once at load time into
    /// `database` (the URL then carries no password of its own).
    pub database_password_file: Option<PathBuf>,
    /// TLS to a MySQL/MariaDB server, and the CA its certificate comes from.
    pub database_tls: values::DatabaseTls,
    pub database_tls_ca: Option<PathBuf>,
    pub table: TableName,
    /// Format of newly written password hashes.
    pub hash_type: HashType,
    pub bcrypt_cost: u32,
    /// Successful verifications remembered; 0: none.
    pub verify_cache_entries: usize,
    /// Default age, in seconds, beyond which `cleanup` removes a user.
    pub cleanup_threshold: u64,
    /// The smallest `older_than` a cleanup takes.
    pub min_older_than: u64,
    /// Lifetimes granted to credentials.
    pub ttl: TtlPolicy,
    /// Seconds between sweeps of expired users; 0: no sweeper.
    pub sweep_interval: u64,
    /// Megabytes the SQLite write-ahead log may grow to.
    pub wal_limit: u64,
    pub log_format: LogFormat,
    pub log_level: String,
    /// The admin JSON API.
    pub api: ApiSettings,
    /// The nginx auth_request door.
    pub auth_request: AuthRequestSettings,
    /// The registry's own htpasswd file.
    pub htpasswd_file: HtpasswdFileSettings,
    /// The registry's token server.
    pub token: TokenSettings,
    /// Where each key set by a file, the environment or a flag came from.
    origins: BTreeMap<String, Source>,
}

/// Where a door listens and who may call it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerSettings {
    /// None: the door is off.
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain and key: both set, the door speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: set, every client must present a certificate it issued.
    pub tls_client_ca: Option<PathBuf>,
    /// PEM revocation lists of that CA.
    pub tls_crl: Option<PathBuf>,
    pub allowed_subjects: Vec<SubjectPattern>,
    pub allow_from: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
    /// Connections held at once; past that a new one is closed at once.
    pub max_connections: usize,
}

impl ListenerSettings {
    /// The TLS files, when HTTPS is configured.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
            crl: self.tls_crl.clone(),
        })
    }

    /// Who may call the door.
    pub fn access(&self) -> AccessPolicy {
        AccessPolicy {
            allow_from: self.allow_from.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            allowed_subjects: self.allowed_subjects.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    pub listener: ListenerSettings,
    /// Whether mutations may use GET, as the original's callers do.
    pub allow_get_mutations: bool,
    /// Host names the API answers to besides the listen address's own.
    pub allowed_hosts: Vec<String>,
    /// The file of named callers and their rights; None: every caller the
    /// API admits may do everything.
    pub callers_file: Option<PathBuf>,
    /// A Unix socket the API listens on too, its mode and group.
    pub unix_socket: Option<PathBuf>,
    pub unix_socket_mode: values::FileMode,
    pub unix_socket_group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequestSettings {
    pub listener: ListenerSettings,
    /// Realm of the Basic challenge a refusal carries.
    pub realm: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    pub listener: ListenerSettings,
    /// PEM EC P-256 private key that signs, and its certificate.
    pub key: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub issuer: String,
    /// The registry's service name: the tokens' audience.
    pub service: String,
    /// Seconds an access token lives.
    pub ttl: u64,
    /// Realm of the Basic challenge a refusal carries.
    pub realm: String,
    /// What a credential without scopes of its own may be granted.
    pub default_scopes: Vec<crate::domain::ScopePattern>,
    /// Static rules limiting every grant; the first match decides.
    pub acl: Vec<crate::domain::AclRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtpasswdFileSettings {
    /// None: the file is not kept.
    pub path: Option<PathBuf>,
    /// Seconds between reads of the database for changes made elsewhere.
    pub poll_interval: u64,
    pub mode: values::FileMode,
    /// The file's group, by name or number; None: the service's own.
    pub group: Option<String>,
}

/// Where a value came from, so that an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("the default"),
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{origin}: unknown key `{key}`{hint}; valid keys{valid}")]
    UnknownKey {
        key: String,
        origin: Source,
        hint: String,
        valid: String,
    },
    #[error("{0}")]
    Inconsistent(String),
    #[error("environment variable {0} is not valid UTF-8")]
    NotUtf8(String),
    #[error("{origin}: key `{key}`: {message}")]
    BadValue {
        key: String,
        origin: Source,
        message: String,
    },
}

/// Values set on the command line: (key path, value) for each flag given.
pub type FlagValues = Vec<(String, String)>;

impl Default for Settings {
    /// Every key at its declared default.
    fn default() -> Self {
        let mut settings = Settings::unfilled();
        for key in keys() {
            if let Err(e) = key.set(&mut settings, key.default) {
                unreachable!("the default of {} does not parse: {e}", key.path());
            }
        }
        settings
    }
}

impl Settings {
    /// The settings before any key's default is applied; every field is
    /// overwritten by [`Settings::default`].
    fn unfilled() -> Self {
        Self {
            database: DatabaseUrl::default_sqlite(),
            database_password_file: None,
            database_tls: values::DatabaseTls::Auto,
            database_tls_ca: None,
            table: TableName(String::new()),
            hash_type: HashType::Md5,
            bcrypt_cost: 0,
            verify_cache_entries: 0,
            cleanup_threshold: 0,
            min_older_than: 0,
            ttl: TtlPolicy {
                default_ttl: 0,
                max_ttl: 0,
                max_lifetime: 0,
            },
            sweep_interval: 0,
            wal_limit: 0,
            log_format: LogFormat::Text,
            log_level: String::new(),
            api: ApiSettings {
                listener: ListenerSettings::default(),
                allow_get_mutations: false,
                allowed_hosts: Vec::new(),
                callers_file: None,
                unix_socket: None,
                unix_socket_mode: values::FileMode(0),
                unix_socket_group: None,
            },
            auth_request: AuthRequestSettings {
                listener: ListenerSettings::default(),
                realm: String::new(),
            },
            token: TokenSettings {
                listener: ListenerSettings::default(),
                key: None,
                cert: None,
                issuer: String::new(),
                service: String::new(),
                ttl: 0,
                realm: String::new(),
                default_scopes: Vec::new(),
                acl: Vec::new(),
            },
            htpasswd_file: HtpasswdFileSettings {
                path: None,
                poll_interval: 0,
                mode: values::FileMode(0),
                group: None,
            },
            origins: BTreeMap::new(),
        }
    }

    /// Builds the settings from the file (if any), the process environment,
    /// and the given flag values.
    pub fn load(file: Option<&Path>, flags: &FlagValues) -> Result<Self, ConfigError> {
        let mut env = Vec::new();
        // Variables that are not UTF-8 are none of ours, unless they claim to be.
        for (name, value) in std::env::vars_os() {
            match (name.into_string(), value.into_string()) {
                (Ok(name), Ok(value)) => env.push((name, value)),
                (Ok(name), Err(_)) if name.starts_with(ENV_PREFIX) => {
                    return Err(ConfigError::NotUtf8(name))
                }
                _ => {}
            }
        }
        Self::load_from(file, &env, flags)
    }

    /// As [`Settings::load`], with the environment given explicitly.
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &FlagValues,
    ) -> Result<Self, ConfigError> {
        let mut settings = Settings::default();
        if let Some(path) = file {
            for (key, value) in read_file(path)? {
                let source = Source::File(path.to_owned());
                let key = find_key(&key, |k| k.path() == key)
                    .ok_or_else(|| unknown(&key, source.clone()))?;
                settings.set(key, &value, source)?;
            }
        }
        for (var, value) in env {
            if !var.starts_with(ENV_PREFIX) || var == CONFIG_FILE_ENV {
                continue;
            }
            let source = Source::Env(var.clone());
            let key =
                find_key(var, |k| k.env == var).ok_or_else(|| unknown_env(var, source.clone()))?;
            settings.set(key, value, source)?;
        }
        for (path, value) in flags {
            let key = find_key(path, |k| k.path() == *path)
                .ok_or_else(|| unknown(path, Source::Flag(path.clone())))?;
            let source = Source::Flag(format!("--{}", key.flag()));
            settings.set(key, value, source)?;
        }
        settings.check_consistency()?;
        settings.read_password_file()?;
        Ok(settings)
    }

    /// Sets one key from its textual form, recording where it came from.
    pub fn set(&mut self, key: &Key, value: &str, source: Source) -> Result<(), ConfigError> {
        key.set(self, value)
            .map_err(|message| ConfigError::BadValue {
                key: key.path(),
                origin: source.clone(),
                message,
            })?;
        self.origins.insert(key.path(), source);
        Ok(())
    }

    /// Where the value of the key at `path` came from.
    pub fn origin(&self, path: &str) -> Source {
        self.origins.get(path).cloned().unwrap_or(Source::Default)
    }

    /// `KEY from SOURCE; ...` for the first of `paths` and for each other
    /// one set by a file, the environment or a flag: where the values an
    /// error is about came from.
    pub fn provenance(&self, paths: &[String]) -> String {
        paths
            .iter()
            .enumerate()
            .filter(|(i, p)| *i == 0 || self.origins.contains_key(p.as_str()))
            .map(|(_, p)| format!("{p} from {}", self.origin(p)))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// `key (value, from SOURCE)`, for messages about two keys at once.
    fn cite(&self, path: &str, value: impl fmt::Display) -> String {
        format!("{path} ({value}, from {})", self.origin(path))
    }

    /// Puts the contents of `database_password_file` (less one trailing line
    /// break) into the MySQL URL. The file is the only place the password is
    /// then given: a URL that carries one too is refused as ambiguous.
    fn read_password_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.database_password_file else {
            return Ok(());
        };
        let file = self.cite("database_password_file", path.display());
        let url_origin = self.cite("database_url", &self.database);
        let DatabaseUrl::Mysql(url) = &mut self.database else {
            return Err(ConfigError::Inconsistent(format!(
                "{file} is set but {url_origin} is not a mysql:// URL; remove database_password_file or use mysql://user@host:3306/database"
            )));
        };
        if url.password.is_some() {
            return Err(ConfigError::Inconsistent(format!(
                "{url_origin} carries a password and {file} is set too; give the password in only one of them (preferably the file)"
            )));
        }
        let fail = |why: String| ConfigError::Inconsistent(format!("{file}: {why}"));
        let mode = std::fs::metadata(path)
            .map_err(|e| fail(format!("cannot read it: {e}; make it readable by the service's user (mode 0400 or 0440)")))?
            .permissions()
            .mode()
            & 0o777;
        if mode & PASSWORD_FILE_FORBIDDEN_BITS != 0 {
            return Err(fail(format!(
                "has mode {mode:04o}: {} the database password; chmod 0400 (or 0440 with the service's group)",
                if mode & 0o007 != 0 {
                    "every user of the host can read"
                } else {
                    "its group can change"
                }
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(format!(
                "cannot read it: {e}; make it readable by the service's user (mode 0400 or 0440)"
            ))
        })?;
        let password = text
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(&text);
        if password.is_empty() {
            return Err(fail(
                "is empty; write the database password into it".to_owned(),
            ));
        }
        url.password = Some(Secret::new(password.to_owned()));
        Ok(())
    }

    /// The doors, each with its section and listener settings.
    pub fn listeners(&self) -> [(Section, &ListenerSettings); 3] {
        [
            (Section::Api, &self.api.listener),
            (Section::AuthRequest, &self.auth_request.listener),
            (Section::Token, &self.token.listener),
        ]
    }

    /// Checks what no single key can: default_ttl <= max_ttl <= max_lifetime,
    /// and listener keys that only make sense together.
    pub fn check_consistency(&self) -> Result<(), ConfigError> {
        let listeners = self.listeners();
        for (i, (a, first)) in listeners.iter().enumerate() {
            for (b, second) in &listeners[i + 1..] {
                if let (Some(x), Some(y)) = (first.listen, second.listen) {
                    if x == y && x.port() != 0 {
                        let path = |s: &Section| match s.table() {
                            Some(t) => format!("{t}.listen"),
                            None => "listen".to_owned(),
                        };
                        return Err(ConfigError::Inconsistent(format!(
                            "{} and {} are both {x}; each door needs an address of its own",
                            self.cite(&path(a), x),
                            self.cite(&path(b), y)
                        )));
                    }
                }
            }
        }
        for (section, listener) in listeners {
            let path = |name: &str| match section.table() {
                Some(table) => format!("{table}.{name}"),
                None => name.to_owned(),
            };
            let inconsistent = |m: String| Err(ConfigError::Inconsistent(m));
            if listener.tls_cert.is_some() != listener.tls_key.is_some() {
                let (set, unset) = if listener.tls_cert.is_some() {
                    ("tls_cert", "tls_key")
                } else {
                    ("tls_key", "tls_cert")
                };
                return inconsistent(format!(
                    "{} is set (from {}) but {} is not; they go together: set both for HTTPS, or neither",
                    path(set),
                    self.origin(&path(set)),
                    path(unset)
                ));
            }
            if listener.tls_client_ca.is_some() && listener.tls_cert.is_none() {
                return inconsistent(format!(
                    "{} (from {}) needs HTTPS: set {} and {} as well",
                    path("tls_client_ca"),
                    self.origin(&path("tls_client_ca")),
                    path("tls_cert"),
                    path("tls_key")
                ));
            }
            if listener.tls_crl.is_some() && listener.tls_client_ca.is_none() {
                return inconsistent(format!(
                    "{} (from {}) needs client certificates: set {} (and {}, {})",
                    path("tls_crl"),
                    self.origin(&path("tls_crl")),
                    path("tls_client_ca"),
                    path("tls_cert"),
                    path("tls_key")
                ));
            }
            if !listener.allowed_subjects.is_empty() && listener.tls_client_ca.is_none() {
                return inconsistent(format!(
                    "{} (from {}) needs client certificates: set {} (and {}, {})",
                    path("allowed_subjects"),
                    self.origin(&path("allowed_subjects")),
                    path("tls_client_ca"),
                    path("tls_cert"),
                    path("tls_key")
                ));
            }
        }
        if let (Some(ca), DatabaseUrl::Mysql(url)) = (&self.database_tls_ca, &self.database) {
            let mode = self.database_tls.for_host(&url.host);
            if !matches!(mode, DatabaseTls::VerifyCa | DatabaseTls::VerifyIdentity) {
                return Err(ConfigError::Inconsistent(format!(
                    "{} is set but {} is {mode} for {}: the CA is only used to verify the server; set database_tls = \"verify-identity\" (or verify-ca)",
                    self.cite("database_tls_ca", ca.display()),
                    self.cite("database_tls", self.database_tls),
                    url.host
                )));
            }
        }
        let token = &self.token;
        if token.listener.listen.is_some() && (token.key.is_none() || token.cert.is_none()) {
            return Err(ConfigError::Inconsistent(format!(
                "token.listen is set (from {}) but token.key or token.cert is not: the token door signs with a key whose certificate the registry trusts; set both (RUBBER_TOKEN_KEY, RUBBER_TOKEN_CERT)",
                self.origin("token.listen")
            )));
        }
        if self.htpasswd_file.path.is_some() && self.hash_type != HashType::Bcrypt {
            return Err(ConfigError::Inconsistent(format!(
                "htpasswd_file.path is set (from {}) but {}: the registry reads only bcrypt hashes from an htpasswd file; set hash_type = \"bcrypt\" (RUBBER_HASH_TYPE=bcrypt), or leave htpasswd_file.path unset",
                self.origin("htpasswd_file.path"),
                self.cite("hash_type", self.hash_type)
            )));
        }
        if self.min_older_than > self.cleanup_threshold {
            return Err(ConfigError::Inconsistent(format!(
                "{} exceeds {}: a cleanup without older_than would be refused; lower min_older_than or raise cleanup_threshold",
                self.cite("min_older_than", self.min_older_than),
                self.cite("cleanup_threshold", self.cleanup_threshold)
            )));
        }
        let t = &self.ttl;
        if t.default_ttl > t.max_ttl {
            return Err(ConfigError::Inconsistent(format!(
                "{} exceeds {}; lower default_ttl or raise max_ttl",
                self.cite("default_ttl", t.default_ttl),
                self.cite("max_ttl", t.max_ttl)
            )));
        }
        if t.max_ttl > t.max_lifetime {
            return Err(ConfigError::Inconsistent(format!(
                "{} exceeds {}; lower max_ttl or raise max_lifetime",
                self.cite("max_ttl", t.max_ttl),
                self.cite("max_lifetime", t.max_lifetime)
            )));
        }
        Ok(())
    }
}

/// The key `matches` picks, or None.
fn find_key(_name: &str, matches: impl Fn(&Key) -> bool) -> Option<&'static Key> {
    keys().find(|k| matches(k))
}

/// The error for a key path no key has, with a near miss or the table the
/// key belongs in.
fn unknown(path: &str, origin: Source) -> ConfigError {
    let (table, name) = match path.split_once('.') {
        Some((t, n)) => (Some(t), n),
        None => (None, path),
    };
    let elsewhere = keys()
        .find(|k| k.name == name && k.section.table() != table)
        .map(|k| match k.section.table() {
            Some(t) => format!(" (it belongs in the [{t}] table)"),
            None => " (it belongs at the top level, before any [table])".to_owned(),
        });
    let hint = elsewhere.unwrap_or_else(|| suggestion(path, keys().map(Key::path)));
    let valid: Vec<String> = keys()
        .filter(|k| k.section.table() == table)
        .map(|k| k.name.to_owned())
        .collect();
    let valid = match (table, valid.is_empty()) {
        (_, true) => format!(
            " are at the top level or in the tables {}",
            Section::ALL
                .iter()
                .filter_map(|s| s.table())
                .map(|t| format!("[{t}]"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (Some(t), false) => format!(" in [{t}] are: {}", valid.join(", ")),
        (None, false) => format!(" at the top level are: {}", valid.join(", ")),
    };
    ConfigError::UnknownKey {
        key: path.to_owned(),
        origin,
        hint,
        valid,
    }
}

fn unknown_env(var: &str, origin: Source) -> ConfigError {
    // A near miss, or a door's key without the door's prefix
    // (RUBBER_REALM for RUBBER_AUTH_REALM).
    let suffix = format!("_{}", var.strip_prefix(ENV_PREFIX).unwrap_or(var));
    let near = suggestion(var, keys().map(|k| k.env.to_owned()));
    let hint = if near.is_empty() {
        keys()
            .find(|k| k.env.ends_with(&suffix))
            .map(|k| format!(" (did you mean `{}`?)", k.env))
            .unwrap_or_default()
    } else {
        near
    };
    ConfigError::UnknownKey {
        key: var.to_owned(),
        hint,
        origin,
        valid: format!(
            " are the variables {}",
            keys().map(|k| k.env).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Reads a TOML file into (key path, textual value) pairs: top-level keys,
/// and the keys of each table as `table.key`. Arrays become comma-separated
/// lists, so that they parse as the environment form does.
fn read_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Toml {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
    let bad = |key: &str| ConfigError::Toml {
        path: path.to_owned(),
        message: format!("key `{key}` must be a string, a number, a boolean or a list of those"),
    };
    let mut out = Vec::with_capacity(table.len());
    for (key, value) in table {
        if let toml::Value::Table(inner) = value {
            if !Section::ALL.iter().any(|s| s.table() == Some(key.as_str())) {
                let tables = Section::ALL.iter().filter_map(|s| s.table());
                return Err(ConfigError::UnknownKey {
                    hint: suggestion(&key, tables.clone().map(str::to_owned)),
                    key,
                    origin: Source::File(path.to_owned()),
                    valid: format!(
                        " are at the top level or in the tables {}",
                        tables
                            .map(|t| format!("[{t}]"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            for (name, value) in inner {
                let full = format!("{key}.{name}");
                let text = toml_scalar(&value).ok_or_else(|| bad(&full))?;
                out.push((full, text));
            }
        } else {
            let text = toml_scalar(&value).ok_or_else(|| bad(&key))?;
            out.push((key, text));
        }
    }
    Ok(out)
}

/// A TOML value in the textual form the environment would give: a list as
/// its items joined by `, `; a list of tables (`[[token.acl]]`) as each
/// table's `key=value` fields joined by spaces (a list value by commas), the
/// tables joined by `; `.
fn toml_scalar(value: &toml::Value) -> Option<String> {
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    };
    let list = |items: &[toml::Value], separator: &str| {
        items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(separator))
    };
    match value {
        toml::Value::Array(items)
            if !items.is_empty() && items.iter().all(toml::Value::is_table) =>
        {
            items
                .iter()
                .map(|item| {
                    item.as_table()?
                        .iter()
                        .map(|(k, v)| match v {
                            toml::Value::Array(values) => {
                                list(values, ",").map(|v| format!("{k}={v}"))
                            }
                            other => scalar(other).map(|v| format!("{k}={v}")),
                        })
                        .collect::<Option<Vec<_>>>()
                        .map(|fields| fields.join(" "))
                })
                .collect::<Option<Vec<_>>>()
                .map(|tables| tables.join("; "))
        }
        toml::Value::Array(items) => list(items, ", "),
        other => scalar(other),
    }
}

/// " (did you mean `x`?)" for a near miss among `candidates`, or nothing.
fn suggestion(word: &str, candidates: impl Iterator<Item = String>) -> String {
    candidates
        .map(|c| (edit_distance(word, &c), c))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The keys of one table (None: the top level) with their values.
pub type Described = (
    Option<&'static str>,
    Vec<(&'static Key, Option<toml::Value>)>,
);

/// Every key and its value, section by section, for `check-config`: the top
/// level first, then each table. Holds no secret: a database password shows
/// as `***`. A value of None is unset.
pub fn describe(settings: &Settings) -> Vec<Described> {
    let mut out: Vec<Described> = Vec::new();
    for key in keys() {
        let table = key.section.table();
        let shown = (key, key.show(settings));
        match out.iter_mut().find(|(t, _)| *t == table) {
            Some((_, keys)) => keys.push(shown),
            None => out.push((table, vec![shown])),
        }
    }
    out.sort_by_key(|(table, _)| table.is_some());
    out
}

/// The configuration as a TOML document, unset keys as comments.
pub fn describe_toml(settings: &Settings) -> String {
    let mut out = String::new();
    for (table, keys) in describe(settings) {
        if let Some(table) = table {
            out.push_str(&format!("\n[{table}]\n"));
        }
        for (key, value) in keys {
            match value {
                Some(value) => out.push_str(&format!("{} = {value}\n", key.name)),
                None => out.push_str(&format!("# {} is unset\n", key.name)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_apply_with_no_source() {
        let s = Settings::load_from(None, &[], &vec![]).unwrap();
        assert_eq!(
            s.api.listener.listen,
            Some("127.0.0.1:5080".parse().unwrap())
        );
        assert_eq!(s.auth_request.listener.listen, None, "the door is off");
        assert_eq!(s.auth_request.realm, "registry");
        assert_eq!(s.database, DatabaseUrl::default_sqlite());
        assert_eq!(s.hash_type, HashType::Md5);
        assert_eq!(s.cleanup_threshold, 600);
        assert_eq!(s.table.as_str(), "users");
    }

    #[test]
    fn file_then_env_then_flags() {
        let f = toml_file(
            "listen = \"127.0.0.1:7000\"\nhash_type = \"SHA1\"\ncleanup_threshold = 60\ntable = \"from_file\"\n",
        );
        let e = env(&[
            ("RUBBER_HASH_TYPE", "MD5"),
            ("RUBBER_CLEANUP_THRESHOLD", "120"),
            ("UNRELATED", "x"),
        ]);
        let flags: FlagValues = vec![("cleanup_threshold".into(), "180".into())];
        let s = Settings::load_from(Some(f.path()), &e, &flags).unwrap();
        assert_eq!(
            s.api.listener.listen.unwrap().to_string(),
            "127.0.0.1:7000",
            "file beats default"
        );
        assert_eq!(s.table.as_str(), "from_file");
        assert_eq!(s.hash_type, HashType::Md5, "env beats file");
        assert_eq!(s.cleanup_threshold, 180, "flag beats env");
    }

    #[test]
    fn unknown_file_key_is_named_with_a_suggestion() {
        let f = toml_file("hash_typ = \"sha1\"\n");
        let err = Settings::load_from(Some(f.path()), &[], &vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `hash_typ`"), "{err}");
        assert!(err.contains("did you mean `hash_type`"), "{err}");
        assert!(err.contains("config file"), "{err}");
    }

    #[test]
    fn unknown_env_key_is_refused() {
        let err = Settings::load_from(None, &env(&[("RUBBER_LISTN", "x")]), &vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("environment variable RUBBER_LISTN"), "{err}");
        assert!(err.contains("did you mean `RUBBER_LISTEN`"), "{err}");
    }

    #[test]
    fn bad_values_name_key_source_and_fix() {
        let cases: &[(&str, &str, &str)] = &[
            ("RUBBER_LISTEN", "localhost", "127.0.0.1:5080"),
            (
                "RUBBER_HASH_TYPE",
                "md4",
                "sha1, md5, bcrypt, sha256, sha512",
            ),
            ("RUBBER_BCRYPT_COST", "18", "from 4 to 17"),
            ("RUBBER_CLEANUP_THRESHOLD", "-5", "whole number"),
            ("RUBBER_TABLE", "users; DROP TABLE x", "SQL identifier"),
            (
                "RUBBER_DATABASE_URL",
                "sqlite://relative.db",
                "three slashes",
            ),
            ("RUBBER_DATABASE_URL", "postgres://x", "sqlite:///"),
            ("RUBBER_LOG_FORMAT", "xml", "text or json"),
        ];
        for (var, value, fix) in cases {
            let err = Settings::load_from(None, &env(&[(var, value)]), &vec![])
                .unwrap_err()
                .to_string();
            let key = var.strip_prefix("RUBBER_").unwrap().to_ascii_lowercase();
            assert!(err.contains(&format!("key `{key}`")), "{err}");
            assert!(err.contains(var), "{err}");
            assert!(err.contains(fix), "{var}={value}: {err}");
        }
    }

    #[test]
    fn ttl_keys_must_nest() {
        let err = |pairs: &[(&str, &str)]| {
            Settings::load_from(None, &env(pairs), &vec![])
                .unwrap_err()
                .to_string()
        };
        let e = err(&[("RUBBER_DEFAULT_TTL", "7200"), ("RUBBER_MAX_TTL", "3600")]);
        assert!(
            e.contains("default_ttl (7200, from environment variable RUBBER_DEFAULT_TTL) exceeds max_ttl (3600, from environment variable RUBBER_MAX_TTL)"),
            "{e}"
        );
        let e = err(&[("RUBBER_MAX_TTL", "90000")]);
        assert!(e.contains("max_lifetime"), "{e}");
        let e = err(&[("RUBBER_DEFAULT_TTL", "0")]);
        assert!(e.contains("key `default_ttl`"), "{e}");
        let s =
            Settings::load_from(None, &env(&[("RUBBER_SWEEP_INTERVAL", "0")]), &vec![]).unwrap();
        assert_eq!(s.sweep_interval, 0, "0 turns the sweeper off");
    }

    #[test]
    fn tls_and_access_keys() {
        let load = |pairs: &[(&str, &str)]| Settings::load_from(None, &env(pairs), &vec![]);
        let e = load(&[("RUBBER_TLS_CERT", "/c.pem")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "tls_cert is set (from environment variable RUBBER_TLS_CERT) but tls_key is not"
            ),
            "{e}"
        );
        let e = load(&[("RUBBER_ALLOWED_SUBJECTS", "OU=ci")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls_client_ca"), "{e}");
        let s = load(&[
            ("RUBBER_TLS_CERT", "/c.pem"),
            ("RUBBER_TLS_KEY", "/k.pem"),
            ("RUBBER_TLS_CLIENT_CA", "/ca.pem"),
            (
                "RUBBER_ALLOWED_SUBJECTS",
                "OU=pipelines+CN=deployer, CN=admin",
            ),
            ("RUBBER_ALLOW_FROM", "10.0.0.0/8,127.0.0.1"),
            ("RUBBER_TRUSTED_PROXIES", "10.0.0.1"),
            ("RUBBER_ALLOW_GET_MUTATIONS", "false"),
        ])
        .unwrap();
        assert_eq!(
            s.api.listener.tls_files().unwrap().client_ca,
            Some(PathBuf::from("/ca.pem"))
        );
        assert_eq!(s.api.listener.allowed_subjects.len(), 2);
        assert_eq!(s.api.listener.allow_from.len(), 2);
        assert!(!s.api.allow_get_mutations);
        let shown = describe_toml(&s);
        assert!(
            shown.contains(r#"allowed_subjects = ["OU=pipelines+CN=deployer", "CN=admin"]"#),
            "{shown}"
        );
        assert!(
            shown.contains(r#"allow_from = ["10.0.0.0/8", "127.0.0.1/32"]"#),
            "{shown}"
        );
        let e = load(&[("RUBBER_ALLOW_FROM", "10.0.0.0/99")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `allow_from`"), "{e}");
        let e = load(&[("RUBBER_ALLOW_GET_MUTATIONS", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("true or false"), "{e}");
        let f = toml_file("allow_from = [\"10.0.0.0/8\", \"::1\"]\n");
        let s = Settings::load_from(Some(f.path()), &[], &vec![]).unwrap();
        assert_eq!(s.api.listener.allow_from.len(), 2, "TOML lists");
    }

    #[test]
    fn a_misspelt_log_level_is_refused_with_the_level_meant() {
        let load = |level: &str| {
            Settings::load_from(None, &env(&[("RUBBER_LOG_LEVEL", level)]), &vec![])
                .map(|s| s.log_level)
                .map_err(|e| e.to_string())
        };
        let e = load("inof").unwrap_err();
        assert!(
            e.contains("environment variable RUBBER_LOG_LEVEL")
                && e.contains("key `log_level`")
                && e.contains("did you mean `info`?"),
            "{e}"
        );
        let e = load("info,registry_rubber::access=wran").unwrap_err();
        assert!(e.contains("did you mean `warn`?"), "{e}");
        assert!(
            load("registry_rubber").is_err(),
            "a bare target logs nothing else"
        );
        assert!(load("=info").is_err());
        assert!(load("").is_err());
        for good in [
            "info",
            "WARN",
            "off",
            "debug,hyper=warn",
            "info,registry_rubber::access=warn",
        ] {
            assert_eq!(load(good).as_deref(), Ok(good));
        }
    }

    #[test]
    fn malformed_toml_is_reported_with_its_path() {
        let f = toml_file("listen = \n");
        let err = Settings::load_from(Some(f.path()), &[], &vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&f.path().display().to_string()), "{err}");
        assert!(err.contains("not valid TOML"), "{err}");
    }

    #[test]
    fn sqlite_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/rr/users.sqlite").unwrap(),
            DatabaseUrl::Sqlite {
                path: "/var/lib/rr/users.sqlite".into(),
                is_default: false
            }
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:data/users.sqlite").unwrap(),
            DatabaseUrl::Sqlite {
                path: "data/users.sqlite".into(),
                is_default: false
            }
        );
        assert!(DatabaseUrl::parse("sqlite:///tmp/x.db?mode=rwc").is_err());
        assert!(DatabaseUrl::parse("sqlite:///tmp/").is_err());
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/x.sqlite")
                .unwrap()
                .to_string(),
            "sqlite:///var/x.sqlite"
        );
    }

    #[test]
    fn mysql_urls() {
        let DatabaseUrl::Mysql(u) =
            DatabaseUrl::parse("mysql://rubber:s3cr%40t@db.example:3307/registry").unwrap()
        else {
            panic!("not mysql")
        };
        assert_eq!(
            (
                u.scheme,
                u.host.as_str(),
                u.port,
                u.user.as_str(),
                u.database.as_str()
            ),
            ("mysql", "db.example", 3307, "rubber", "registry")
        );
        assert_eq!(u.password.as_ref().map(Secret::expose), Some("s3cr@t"));
        let DatabaseUrl::Mysql(u) = DatabaseUrl::parse("mariadb://root@[::1]/rr").unwrap() else {
            panic!("not mysql")
        };
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.password.is_none()),
            ("mariadb", "::1", DEFAULT_MYSQL_PORT, true)
        );
        assert_eq!(u.to_string(), "mariadb://root@[::1]:3306/rr");
        // A user name prints as written: `_`, `-`, `.` and `~` need no
        // encoding; only what a URL cannot carry is encoded.
        let u = DatabaseUrl::parse("mysql://rubber_svc-1.a~b:pw@db/registry_rubber").unwrap();
        assert_eq!(
            u.to_string(),
            "mysql://rubber_svc-1.a~b:***@db:3306/registry_rubber"
        );
        let u = DatabaseUrl::parse("mysql://r%40b%20c@db/rr").unwrap();
        assert_eq!(u.to_string(), "mysql://r%40b%20c@db:3306/rr");
        // What prints parses back to the same URL.
        for url in [
            "mysql://r%40b%20c@db_1.example-2/rr",
            "mariadb://root@[fe80::1]:3307/rr",
            "mysql://u@10.0.0.5/r%41r",
            "mysql://u@DB.Example.com./rr",
        ] {
            let u = DatabaseUrl::parse(url).unwrap();
            assert_eq!(DatabaseUrl::parse(&u.to_string()).unwrap(), u, "{url}");
        }
        for (bad, why) in [
            ("mysql://host:3306/db", "no user"),
            ("mysql://u:Pw-Leak-1@host:3306", "no database"),
            ("mysql://u:Pw-Leak-1@host:3306/", "database name"),
            ("mysql://u:Pw-Leak-1@host:99999/db", "host or port"),
            ("mysql://u:Pw-Leak-1@:3306/db", "no host"),
            ("mysql://u:Pw-Leak-1@host/db?ssl=1", "no options"),
            ("mysql://u:Pw-Leak-1@host/d b", "database name"),
            // Only a name, an IPv4 address or a bracketed IPv6 address: a
            // host the URL's printed form could not carry back is refused.
            ("mysql://u:Pw-Leak-1@[m.xb]:3306/db", "host or port"),
            ("mysql://u:Pw-Leak-1@[[::1]:3306/db", "host or port"),
            ("mysql://u:Pw-Leak-1@[::1]x/db", "host or port"),
            ("mysql://u:Pw-Leak-1@h\u{e9}te/db", "host or port"),
            ("mysql://u:Pw-Leak-1@a b:3306/db", "host or port"),
            ("mysql://u:Pw-Leak-1@a..b/db", "host or port"),
            ("mysql://u:Pw-Leak-1@a:b:3306/db", "host or port"),
        ] {
            let err = DatabaseUrl::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(
                err.contains("mysql://user:password@host:3306/database"),
                "{err}"
            );
            assert!(!err.contains("Pw-Leak-1"), "the password leaked: {err}");
        }
    }

    #[test]
    fn a_database_password_never_prints() {
        let url = DatabaseUrl::parse("mysql://rubber:Pw-Leak-2@127.0.0.1:3306/rr").unwrap();
        assert_eq!(url.to_string(), "mysql://rubber:***@127.0.0.1:3306/rr");
        assert!(!format!("{url:?}").contains("Pw-Leak-2"));
        let s = Settings::load_from(
            None,
            &env(&[(
                "RUBBER_DATABASE_URL",
                "mysql://rubber:Pw-Leak-2@127.0.0.1:3306/rr",
            )]),
            &vec![],
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("Pw-Leak-2"), "{s:?}");
        let shown = describe_toml(&s);
        assert!(
            !shown.contains("Pw-Leak-2") && shown.contains("rubber:***@"),
            "{shown}"
        );
    }

    #[test]
    fn the_password_file_fills_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "Pw-From-File\n").unwrap();
        let chmod = |mode: u32| {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        chmod(0o600);
        let file_s = file.to_str().unwrap();
        let s = Settings::load_from(
            None,
            &env(&[
                ("RUBBER_DATABASE_URL", "mysql://rubber@127.0.0.1/rr"),
                ("RUBBER_DATABASE_PASSWORD_FILE", file_s),
            ]),
            &vec![],
        )
        .unwrap();
        let DatabaseUrl::Mysql(u) = &s.database else {
            panic!("not mysql")
        };
        assert_eq!(
            u.password.as_ref().map(Secret::expose),
            Some("Pw-From-File"),
            "one trailing newline is dropped"
        );
        assert!(!format!("{s:?}").contains("Pw-From-File"));
        std::fs::write(&file, "two\n\n").unwrap();
        let s = Settings::load_from(
            None,
            &env(&[
                ("RUBBER_DATABASE_URL", "mysql://rubber@127.0.0.1/rr"),
                ("RUBBER_DATABASE_PASSWORD_FILE", file_s),
            ]),
            &vec![],
        )
        .unwrap();
        let DatabaseUrl::Mysql(u) = &s.database else {
            panic!("not mysql")
        };
        assert_eq!(u.password.as_ref().map(Secret::expose), Some("two\n"));

        let refused = |url: &str, path: &str| {
            Settings::load_from(
                None,
                &env(&[
                    ("RUBBER_DATABASE_URL", url),
                    ("RUBBER_DATABASE_PASSWORD_FILE", path),
                ]),
                &vec![],
            )
            .unwrap_err()
            .to_string()
        };
        let e = refused("mysql://rubber:Pw-Leak-3@127.0.0.1/rr", file_s);
        assert!(
            e.contains("only one of them") && !e.contains("Pw-Leak-3"),
            "{e}"
        );
        let e = refused("sqlite:///tmp/x.sqlite", file_s);
        assert!(
            e.contains("not a mysql:// URL")
                && e.contains("from environment variable RUBBER_DATABASE_URL")
                && e.contains("from environment variable RUBBER_DATABASE_PASSWORD_FILE"),
            "{e}"
        );
        let missing = dir.path().join("missing");
        let e = refused("mysql://rubber@127.0.0.1/rr", missing.to_str().unwrap());
        assert!(e.contains("cannot read it"), "{e}");
        let e = refused("mysql://rubber@127.0.0.1/rr", "relative/pw");
        assert!(
            e.contains("key `database_password_file`") && e.contains("absolute"),
            "{e}"
        );
        std::fs::write(&file, "\n").unwrap();
        let e = refused("mysql://rubber@127.0.0.1/rr", file_s);
        assert!(e.contains("is empty"), "{e}");

        // A password others can read, or the group can change, is refused.
        std::fs::write(&file, "Pw-Leak-4\n").unwrap();
        for mode in [0o644, 0o604, 0o660, 0o666] {
            chmod(mode);
            let e = refused("mysql://rubber@127.0.0.1/rr", file_s);
            assert!(
                e.contains(&format!("has mode {mode:04o}"))
                    && e.contains("chmod 0400")
                    && e.contains("environment variable RUBBER_DATABASE_PASSWORD_FILE")
                    && !e.contains("Pw-Leak-4"),
                "{e}"
            );
        }
        for mode in [0o400, 0o440, 0o600, 0o640] {
            chmod(mode);
            let s = Settings::load_from(
                None,
                &env(&[
                    ("RUBBER_DATABASE_URL", "mysql://rubber@127.0.0.1/rr"),
                    ("RUBBER_DATABASE_PASSWORD_FILE", file_s),
                ]),
                &vec![],
            );
            assert!(s.is_ok(), "{mode:o}: {:?}", s.err());
        }
    }

    #[test]
    fn table_names() {
        assert!(TableName::parse("users").is_ok());
        assert!(TableName::parse("_rr_users2").is_ok());
        assert!(TableName::parse(&"u".repeat(56)).is_ok());
        for bad in [
            "",
            "2users",
            "us-ers",
            "users;",
            "\"users\"",
            &"u".repeat(57),
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_key_has_one_path_env_and_flag_and_is_described() {
        let mut paths = std::collections::BTreeSet::new();
        let mut envs = std::collections::BTreeSet::new();
        for key in keys() {
            assert!(paths.insert(key.path()), "{} twice", key.path());
            assert!(envs.insert(key.env), "{} twice", key.env);
            assert!(key.env.starts_with(ENV_PREFIX), "{}", key.env);
        }
        let defaults = Settings::default();
        let shown = describe_toml(&defaults);
        let reparsed: toml::Table = shown.parse().expect("check-config prints valid TOML");
        for key in keys() {
            let value = match key.section.table() {
                Some(t) => reparsed.get(t).and_then(|v| v.get(key.name)),
                None => reparsed.get(key.name),
            };
            assert_eq!(
                value.is_some(),
                !key.default.is_empty() || key.show(&defaults).is_some(),
                "{}",
                key.path()
            );
        }
        // What check-config prints loads back to the same settings.
        let f = toml_file(&shown);
        let again = Settings::load_from(Some(f.path()), &[], &vec![]).unwrap();
        assert_eq!(describe_toml(&again), shown);
    }

    #[test]
    fn door_tables_and_their_environment() {
        let f = toml_file("listen = \"127.0.0.1:7001\"\n[auth_request]\nlisten = \"127.0.0.1:7002\"\nrealm = \"Our registry\"\n");
        let s = Settings::load_from(Some(f.path()), &[], &vec![]).unwrap();
        assert_eq!(s.api.listener.listen.unwrap().port(), 7001);
        assert_eq!(s.auth_request.listener.listen.unwrap().port(), 7002);
        assert_eq!(s.auth_request.realm, "Our registry");
        let s = Settings::load_from(
            None,
            &env(&[
                ("RUBBER_AUTH_LISTEN", "127.0.0.1:7003"),
                ("RUBBER_LISTEN", ""),
            ]),
            &vec![("auth_request.realm".into(), "flagged".into())],
        )
        .unwrap();
        assert_eq!(s.auth_request.listener.listen.unwrap().port(), 7003);
        assert_eq!(s.api.listener.listen, None, "the admin API can be off");
        assert_eq!(s.auth_request.realm, "flagged");
        let err = |text: &str| {
            let f = toml_file(text);
            Settings::load_from(Some(f.path()), &[], &vec![])
                .unwrap_err()
                .to_string()
        };
        let e = err("realm = \"x\"\n");
        assert!(
            e.contains("unknown key `realm`") && e.contains("[auth_request]"),
            "{e}"
        );
        let e = err("[auth_request]\nlistn = \"127.0.0.1:1\"\n");
        assert!(e.contains("did you mean `auth_request.listen`"), "{e}");
        let e = err("[auth_requests]\nlisten = \"127.0.0.1:1\"\n");
        assert!(
            e.contains("did you mean `auth_request`") || e.contains("[auth_request]"),
            "{e}"
        );
        let e = err("[auth_request]\nrealm = \"a\\\"b\"\n");
        assert!(e.contains("key `auth_request.realm`"), "{e}");
        let e = err("[auth_request]\ntls_cert = \"/c.pem\"\n");
        assert!(
            e.contains("auth_request.tls_cert is set") && e.contains("auth_request.tls_key"),
            "{e}"
        );
        let e = Settings::load_from(None, &env(&[("RUBBER_AUTH_LISTN", "x")]), &vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `RUBBER_AUTH_LISTEN`"), "{e}");
    }

    #[test]
    fn token_acl_tables_and_scope_lists_load_from_a_file() {
        let f = toml_file(
            "[token]\ndefault_scopes = [\"repository:a:pull\", \"repository:b:pull,push\"]\n\n[[token.acl]]\naccount = \"ci-*\"\nname = \"team/*\"\nactions = [\"pull\", \"push\"]\n\n[[token.acl]]\naccount = \"admin\"\ntype = \"registry\"\nname = \"catalog\"\nactions = [\"*\"]\n",
        );
        let s = Settings::load_from(Some(f.path()), &[], &vec![]).unwrap();
        assert_eq!(
            crate::domain::ScopePattern::join(&s.token.default_scopes),
            "repository:a:pull repository:b:pull,push"
        );
        let rules: Vec<String> = s.token.acl.iter().map(ToString::to_string).collect();
        assert_eq!(
            rules,
            [
                "account=ci-* scope=repository:team/*:pull,push",
                "account=admin scope=registry:catalog:*"
            ]
        );
        // What check-config prints loads back the same.
        let shown = describe_toml(&s);
        let again = Settings::load_from(Some(toml_file(&shown).path()), &[], &vec![]).unwrap();
        assert_eq!(again.token.acl, s.token.acl);
        let e = Settings::load_from(
            None,
            &env(&[("RUBBER_TOKEN_LISTEN", "127.0.0.1:1")]),
            &vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("token.key") && e.contains("RUBBER_TOKEN_CERT"),
            "{e}"
        );
    }

    #[test]
    fn conflicts_say_where_each_value_came_from() {
        let f = toml_file("max_ttl = 3600\n");
        let e = Settings::load_from(
            Some(f.path()),
            &env(&[("RUBBER_DEFAULT_TTL", "7200")]),
            &vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("environment variable RUBBER_DEFAULT_TTL"), "{e}");
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        // Each key of a conflict is cited with its value and its source,
        // the default included.
        let f = toml_file("database_url = \"mysql://rr@db.example/rr\"\n");
        let e = Settings::load_from(
            Some(f.path()),
            &env(&[("RUBBER_DATABASE_TLS_CA", "/etc/ca.pem")]),
            &vec![("database_tls".into(), "required".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(
                "database_tls_ca (/etc/ca.pem, from environment variable RUBBER_DATABASE_TLS_CA)"
            ) && e.contains("database_tls (required, from flag --database-tls)"),
            "{e}"
        );
    }

    #[test]
    fn toml_lists_and_numbers_become_text() {
        let f = toml_file("bcrypt_cost = 5\n");
        let s = Settings::load_from(Some(f.path()), &[], &vec![]).unwrap();
        assert_eq!(s.bcrypt_cost, 5);
    }
}
