//! Typed settings, layered: defaults, then the TOML file, then `RUBBER_*`
//! environment variables, then command-line flags. Every source goes through
//! the same per-key parser, so a value means the same wherever it is written,
//! and every error names the key, where it came from, and how to fix it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::access::{parse_cidrs, AccessPolicy};
use crate::domain::TtlPolicy;
use crate::htpasswd::{HashType, MIN_BCRYPT_COST};
use crate::tls::TlsFiles;

/// Default address of the API: loopback only; port 5000 belongs to the registry.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5080";
/// Default database: an SQLite file in the working directory, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:registry-rubber.sqlite";
pub const DEFAULT_HASH_TYPE: HashType = HashType::Md5;
pub use crate::htpasswd::DEFAULT_BCRYPT_COST;
/// Highest bcrypt cost accepted, as Apache's `htpasswd -B -C`: each step
/// doubles the time of every add and of every registry request Apache checks.
pub const MAX_CONFIGURED_BCRYPT_COST: u32 = 17;
/// Seconds, as the original tool.
pub const DEFAULT_CLEANUP_THRESHOLD: u64 = 600;
/// Seconds a credential lives when add names no ttl: one hour.
pub const DEFAULT_DEFAULT_TTL: u64 = 3600;
/// Most seconds one add or renew may grant: twelve hours.
pub const DEFAULT_MAX_TTL: u64 = 43_200;
/// Most seconds a credential may live from its creation, renewals included.
pub const DEFAULT_MAX_LIFETIME: u64 = 86_400;
/// Seconds between sweeps of expired users; 0 turns the sweeper off.
pub const DEFAULT_SWEEP_INTERVAL: u64 = 60;
pub const DEFAULT_TABLE: &str = "users";
/// Prefix of every environment variable that sets a key.
pub const ENV_PREFIX: &str = "RUBBER_";
/// Environment variable naming the configuration file when `--config` is absent.
pub const CONFIG_FILE_ENV: &str = "RUBBER_CONFIG";

/// Every configuration key, in the order the documentation lists them.
pub const KEYS: &[&str] = &[
    "listen",
    "database_url",
    "database_password_file",
    "hash_type",
    "bcrypt_cost",
    "cleanup_threshold",
    "default_ttl",
    "max_ttl",
    "max_lifetime",
    "sweep_interval",
    "table",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "allowed_subjects",
    "allow_from",
    "trusted_proxies",
    "allow_get_mutations",
    "log_format",
    "log_level",
];

#[derive(Debug, Clone)]
pub struct Settings {
    /// Address and port the API binds; port 0 picks a free one.
    pub listen: SocketAddr,
    pub database: DatabaseUrl,
    /// File holding the MySQL/MariaDB password, read once at load time into
    /// `database` (the URL then carries no password of its own).
    pub database_password_file: Option<PathBuf>,
    /// Format of newly written password hashes.
    pub hash_type: HashType,
    pub bcrypt_cost: u32,
    /// Default age, in seconds, beyond which `cleanup` removes a user.
    pub cleanup_threshold: u64,
    /// Lifetimes granted to credentials.
    pub ttl: TtlPolicy,
    /// Seconds between sweeps of expired users; 0: no sweeper.
    pub sweep_interval: u64,
    pub table: TableName,
    /// PEM certificate chain and key: both set, the API speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: set, every client must present a certificate it issued.
    pub tls_client_ca: Option<PathBuf>,
    /// Who may call the API, and how.
    pub access: AccessPolicy,
    pub log_format: LogFormat,
    pub log_level: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("DEFAULT_LISTEN is a valid address"),
            database: DatabaseUrl::default_sqlite(),
            database_password_file: None,
            hash_type: DEFAULT_HASH_TYPE,
            bcrypt_cost: DEFAULT_BCRYPT_COST,
            cleanup_threshold: DEFAULT_CLEANUP_THRESHOLD,
            ttl: TtlPolicy {
                default_ttl: DEFAULT_DEFAULT_TTL,
                max_ttl: DEFAULT_MAX_TTL,
                max_lifetime: DEFAULT_MAX_LIFETIME,
            },
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            table: TableName(DEFAULT_TABLE.to_owned()),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            access: AccessPolicy::default(),
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
        }
    }
}

/// Where a value came from, so that an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
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
    #[error("{origin}: unknown key `{key}`{hint}; valid keys are: {valid}", valid = KEYS.join(", "))]
    UnknownKey {
        key: String,
        origin: Source,
        hint: String,
    },
    #[error("{0}")]
    Inconsistent(String),
    #[error("environment variable {0} is not valid UTF-8")]
    NotUtf8(String),
    #[error("{origin}: key `{key}`: {message}")]
    BadValue {
        key: &'static str,
        origin: Source,
        message: String,
    },
}

/// Values set on the command line: (key, value) for each flag given.
pub type FlagValues = Vec<(&'static str, String)>;

impl Settings {
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
                settings.set(&key, &value, source)?;
            }
        }
        for (var, value) in env {
            let Some(key) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if var == CONFIG_FILE_ENV {
                continue;
            }
            settings.set(&key.to_ascii_lowercase(), value, Source::Env(var.clone()))?;
        }
        for (key, value) in flags {
            let flag = format!("--{}", key.replace('_', "-"));
            settings.set(key, value, Source::Flag(flag))?;
        }
        settings.check_consistency()?;
        settings.read_password_file()?;
        Ok(settings)
    }

    /// Puts the contents of `database_password_file` (less one trailing line
    /// break) into the MySQL URL. The file is the only place the password is
    /// then given: a URL that carries one too is refused as ambiguous.
    fn read_password_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.database_password_file else {
            return Ok(());
        };
        let DatabaseUrl::Mysql(url) = &mut self.database else {
            return Err(ConfigError::Inconsistent(format!(
                "database_password_file is set ({}) but database_url is not a mysql:// URL; remove database_password_file or use mysql://user@host:3306/database",
                path.display()
            )));
        };
        if url.password.is_some() {
            return Err(ConfigError::Inconsistent(
                "database_url carries a password and database_password_file is set too; give the password in only one of them (preferably the file)".to_owned(),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::Inconsistent(format!(
                "database_password_file {}: cannot read it: {e}; make it readable by the service's user (mode 0400 or 0440)",
                path.display()
            ))
        })?;
        let password = text
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(&text);
        if password.is_empty() {
            return Err(ConfigError::Inconsistent(format!(
                "database_password_file {} is empty; write the database password into it",
                path.display()
            )));
        }
        url.password = Some(Secret::new(password.to_owned()));
        Ok(())
    }

    /// The TLS files, when HTTPS is configured.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// Checks what no single key can: default_ttl <= max_ttl <= max_lifetime,
    /// and TLS keys that only make sense together.
    pub fn check_consistency(&self) -> Result<(), ConfigError> {
        let inconsistent = |m: &str| Err(ConfigError::Inconsistent(m.to_owned()));
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return inconsistent(
                "tls_cert and tls_key go together: set both for HTTPS, or neither",
            );
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return inconsistent("tls_client_ca needs HTTPS: set tls_cert and tls_key as well");
        }
        if !self.access.allowed_subjects.is_empty() && self.tls_client_ca.is_none() {
            return inconsistent(
                "allowed_subjects needs client certificates: set tls_client_ca (and tls_cert, tls_key)",
            );
        }
        let t = &self.ttl;
        if t.default_ttl > t.max_ttl {
            return Err(ConfigError::Inconsistent(format!(
                "default_ttl ({}) exceeds max_ttl ({}); lower default_ttl or raise max_ttl",
                t.default_ttl, t.max_ttl
            )));
        }
        if t.max_ttl > t.max_lifetime {
            return Err(ConfigError::Inconsistent(format!(
                "max_ttl ({}) exceeds max_lifetime ({}); lower max_ttl or raise max_lifetime",
                t.max_ttl, t.max_lifetime
            )));
        }
        Ok(())
    }

    /// Sets one key from its textual form.
    pub fn set(&mut self, key: &str, value: &str, source: Source) -> Result<(), ConfigError> {
        let Some(&key) = KEYS.iter().find(|k| **k == key) else {
            return Err(ConfigError::UnknownKey {
                hint: suggestion(key),
                key: key.to_owned(),
                origin: source,
            });
        };
        let bad = |message: String| ConfigError::BadValue {
            key,
            origin: source.clone(),
            message,
        };
        match key {
            "listen" => {
                self.listen = value.parse().map_err(|_| {
                    bad(format!(
                        "`{value}` is not an address and port; write an IP address and port such as {DEFAULT_LISTEN} or [::1]:5080"
                    ))
                })?
            }
            "database_url" => self.database = DatabaseUrl::parse(value).map_err(bad)?,
            "database_password_file" => {
                self.database_password_file = match value.trim() {
                    "" => None,
                    path if Path::new(path).is_absolute() => Some(PathBuf::from(path)),
                    _ => {
                        return Err(bad(format!(
                            "`{value}` is not an absolute path; write one such as /etc/registry-rubber/db-password"
                        )))
                    }
                }
            }
            "hash_type" => self.hash_type = value.parse().map_err(|e| bad(format!("{e}")))?,
            "bcrypt_cost" => {
                self.bcrypt_cost =
                    parse_in_range(value, MIN_BCRYPT_COST, MAX_CONFIGURED_BCRYPT_COST)
                        .map_err(bad)?
            }
            "cleanup_threshold" => {
                self.cleanup_threshold = seconds(value, 0).map_err(bad)?
            }
            "default_ttl" => self.ttl.default_ttl = seconds(value, 1).map_err(bad)?,
            "max_ttl" => self.ttl.max_ttl = seconds(value, 1).map_err(bad)?,
            "max_lifetime" => self.ttl.max_lifetime = seconds(value, 1).map_err(bad)?,
            "sweep_interval" => self.sweep_interval = seconds(value, 0).map_err(bad)?,
            "table" => self.table = TableName::parse(value).map_err(bad)?,
            "tls_cert" => self.tls_cert = optional_path(value),
            "tls_key" => self.tls_key = optional_path(value),
            "tls_client_ca" => self.tls_client_ca = optional_path(value),
            "allowed_subjects" => {
                self.access.allowed_subjects = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(bad)?
            }
            "allow_from" => self.access.allow_from = parse_cidrs(value).map_err(bad)?,
            "trusted_proxies" => self.access.trusted_proxies = parse_cidrs(value).map_err(bad)?,
            "allow_get_mutations" => {
                self.access.allow_get_mutations = match value.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" | "on" => true,
                    "false" | "no" | "0" | "off" => false,
                    _ => return Err(bad(format!("`{value}` is not true or false"))),
                }
            }
            "log_format" => self.log_format = value.parse().map_err(bad)?,
            "log_level" => {
                tracing_subscriber::EnvFilter::try_new(value).map_err(|e| {
                    bad(format!(
                        "`{value}` is not a log filter ({e}); use error, warn, info, debug or trace"
                    ))
                })?;
                self.log_level = value.to_owned();
            }
            _ => unreachable!("every key in KEYS has a parser"),
        }
        Ok(())
    }
}

/// A path, or none for an empty value (which unsets the key).
fn optional_path(value: &str) -> Option<PathBuf> {
    Some(PathBuf::from(value)).filter(|_| !value.trim().is_empty())
}

/// A count of seconds from `min` up to about 136 years.
fn seconds(value: &str, min: u64) -> Result<u64, String> {
    parse_in_range(value, min, u64::from(u32::MAX))
        .map_err(|m| format!("{m} (a whole number of seconds, such as 3600)"))
}

fn parse_in_range<T>(value: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    match value.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!(
            "`{value}` is not a whole number from {min} to {max}"
        )),
    }
}

/// Reads a TOML file into (key, textual value) pairs. Arrays become
/// comma-separated lists, so that they parse as the environment form does.
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
    let mut out = Vec::with_capacity(table.len());
    for (key, value) in table {
        let text = toml_scalar(&value).ok_or_else(|| ConfigError::Toml {
            path: path.to_owned(),
            message: format!(
                "key `{key}` must be a string, a number, a boolean or a list of those"
            ),
        })?;
        out.push((key, text));
    }
    Ok(out)
}

fn toml_scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(toml_scalar)
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        toml::Value::Datetime(_) | toml::Value::Table(_) => None,
    }
}

/// " (did you mean `x`?)" for a near miss, or nothing.
fn suggestion(key: &str) -> String {
    KEYS.iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
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

/// Which database holds the users, chosen by the URL's scheme.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite { path: PathBuf, is_default: bool },
    Mysql(MysqlUrl),
}

/// Where a MySQL or MariaDB server is and whom to log in as. Printing it
/// (`Display` and `Debug`) never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlUrl {
    /// `mysql` or `mariadb`, as written.
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub database: String,
}

/// The port MySQL and MariaDB listen on unless told otherwise.
pub const DEFAULT_MYSQL_PORT: u16 = 3306;

/// A secret from the configuration. `Debug` and `Display` show only that
/// there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What stands for a password wherever one would be printed.
pub const REDACTED: &str = "***";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl DatabaseUrl {
    pub fn default_sqlite() -> Self {
        DatabaseUrl::Sqlite {
            path: PathBuf::from(
                DEFAULT_DATABASE_URL
                    .strip_prefix("sqlite:")
                    .unwrap_or(DEFAULT_DATABASE_URL),
            ),
            is_default: true,
        }
    }

    /// `sqlite:///absolute/path.sqlite`, `sqlite:relative/path.sqlite`, or
    /// `mysql://user:password@host:port/database` (`mariadb://` alike).
    pub fn parse(url: &str) -> Result<Self, String> {
        if url == DEFAULT_DATABASE_URL {
            return Ok(Self::default_sqlite());
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            if rest.contains(['?', '#']) {
                return Err(
                    "SQLite URLs take no options; write sqlite:///absolute/path.sqlite".to_owned(),
                );
            }
            let path = match rest.strip_prefix("//") {
                Some(abs) if abs.starts_with('/') => abs,
                Some(_) => {
                    return Err(format!(
                        "`{url}` names no absolute path; write sqlite:///absolute/path.sqlite (three slashes) or sqlite:relative/path.sqlite"
                    ))
                }
                None => rest,
            };
            if path.is_empty() || path.ends_with('/') {
                return Err(format!(
                    "`{url}` names no file; write sqlite:///absolute/path.sqlite"
                ));
            }
            return Ok(DatabaseUrl::Sqlite {
                path: PathBuf::from(path),
                is_default: false,
            });
        }
        for scheme in ["mysql", "mariadb"] {
            if let Some(rest) = url.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) {
                return MysqlUrl::parse(scheme, rest).map(DatabaseUrl::Mysql);
            }
        }
        Err(
            "unknown database URL scheme; write sqlite:///absolute/path.sqlite or mysql://user:password@host:3306/database"
                .to_owned(),
        )
    }
}

/// The form every MySQL URL error shows as the fix.
const MYSQL_URL_FORM: &str = "mysql://user:password@host:3306/database";

impl MysqlUrl {
    /// Parses what follows `scheme://`. Errors never repeat the URL, which
    /// may hold a password.
    fn parse(scheme: &'static str, rest: &str) -> Result<Self, String> {
        let bad = |what: &str| format!("the {scheme}:// URL {what}; write {MYSQL_URL_FORM}");
        if rest.contains(['?', '#']) {
            return Err(bad("takes no options (nothing after ? or #)"));
        }
        // The password may hold '@' or '/' percent-encoded only, so the last
        // '@' before the path ends the credentials.
        let (authority, database) = rest
            .split_once('/')
            .ok_or_else(|| bad("names no database"))?;
        let (credentials, hostport) = authority
            .rsplit_once('@')
            .ok_or_else(|| bad("names no user"))?;
        let (user, password) = match credentials.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (credentials, None),
        };
        let user = decode(user)
            .ok_or_else(|| bad("has a user name that is not valid percent-encoded UTF-8"))?;
        if user.is_empty() {
            return Err(bad("names no user"));
        }
        let password = match password {
            None | Some("") => None,
            Some(p) => Some(Secret::new(decode(p).ok_or_else(|| {
                bad("has a password that is not valid percent-encoded UTF-8")
            })?)),
        };
        let (host, port) =
            split_host_port(hostport).ok_or_else(|| bad("has a bad host or port"))?;
        if host.is_empty() {
            return Err(bad("names no host"));
        }
        let database = decode(database).unwrap_or_default();
        let database_ok = !database.is_empty()
            && database.len() <= 64
            && database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'$');
        if !database_ok {
            return Err(bad(
                "needs a database name of 1 to 64 letters, digits, '_', '-' or '$'",
            ));
        }
        Ok(MysqlUrl {
            scheme,
            host,
            port: port.unwrap_or(DEFAULT_MYSQL_PORT),
            user,
            password,
            database,
        })
    }
}

fn decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0)?),
    };
    Some((host.to_owned(), port))
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite { path, .. } if path.is_absolute() => {
                write!(f, "sqlite://{}", path.display())
            }
            DatabaseUrl::Sqlite { path, .. } => write!(f, "sqlite:{}", path.display()),
            DatabaseUrl::Mysql(url) => fmt::Display::fmt(url, f),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for MysqlUrl {
    /// The URL with the password, if any, shown as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let encode = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        write!(f, "{}://{}", self.scheme, encode(&self.user))?;
        if self.password.is_some() {
            write!(f, ":{REDACTED}")?;
        }
        if self.host.contains(':') {
            write!(f, "@[{}]", self.host)?;
        } else {
            write!(f, "@{}", self.host)?;
        }
        write!(f, ":{}/{}", self.port, self.database)
    }
}

impl fmt::Debug for MysqlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An SQL identifier safe to splice into a statement: a letter or `_`, then up
/// to 63 letters, digits or `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(String);

impl TableName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut bytes = raw.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
        if first_ok && raw.len() <= 64 && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            Ok(TableName(raw.to_owned()))
        } else {
            Err(format!(
                "`{raw}` is not an SQL identifier; use a letter or '_' followed by up to 63 letters, digits or '_', such as users"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("`{s}` is not a log format; use text or json")),
        }
    }
}

/// A listing of every key and its value, for `check-config`. Holds no
/// secret: a database password shows as `***`.
pub fn describe(settings: &Settings) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("listen", settings.listen.to_string()),
        ("database_url", settings.database.to_string()),
        (
            "database_password_file",
            settings
                .database_password_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        ("hash_type", settings.hash_type.to_string()),
        ("bcrypt_cost", settings.bcrypt_cost.to_string()),
        ("cleanup_threshold", settings.cleanup_threshold.to_string()),
        ("default_ttl", settings.ttl.default_ttl.to_string()),
        ("max_ttl", settings.ttl.max_ttl.to_string()),
        ("max_lifetime", settings.ttl.max_lifetime.to_string()),
        ("sweep_interval", settings.sweep_interval.to_string()),
        ("table", settings.table.to_string()),
        ("tls_cert", path_text(&settings.tls_cert)),
        ("tls_key", path_text(&settings.tls_key)),
        ("tls_client_ca", path_text(&settings.tls_client_ca)),
        (
            "allowed_subjects",
            settings
                .access
                .allowed_subjects
                .iter()
                .map(|p| {
                    let parts: Vec<String> = [("OU", &p.org_unit), ("CN", &p.common_name)]
                        .into_iter()
                        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                        .collect();
                    parts.join("+")
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("allow_from", join(&settings.access.allow_from)),
        ("trusted_proxies", join(&settings.access.trusted_proxies)),
        (
            "allow_get_mutations",
            settings.access.allow_get_mutations.to_string(),
        ),
        (
            "log_format",
            match settings.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
            .to_owned(),
        ),
        ("log_level", settings.log_level.clone()),
    ])
}

fn path_text(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn join(nets: &[ipnet::IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
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
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.database, DatabaseUrl::default_sqlite());
        assert_eq!(s.hash_type, DEFAULT_HASH_TYPE);
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
        let flags: FlagValues = vec![("cleanup_threshold", "180".into())];
        let s = Settings::load_from(Some(f.path()), &e, &flags).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:7000", "file beats default");
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
        assert!(err.contains("did you mean `listen`"), "{err}");
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
            e.contains("default_ttl (7200) exceeds max_ttl (3600)"),
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
        assert!(e.contains("tls_cert and tls_key go together"), "{e}");
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
            s.tls_files().unwrap().client_ca,
            Some(PathBuf::from("/ca.pem"))
        );
        assert_eq!(s.access.allowed_subjects.len(), 2);
        assert_eq!(s.access.allow_from.len(), 2);
        assert!(!s.access.allow_get_mutations);
        let shown = describe(&s);
        assert_eq!(
            shown["allowed_subjects"],
            "OU=pipelines+CN=deployer,CN=admin"
        );
        assert_eq!(shown["allow_from"], "10.0.0.0/8,127.0.0.1/32");
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
        assert_eq!(s.access.allow_from.len(), 2, "TOML lists");
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
        for (bad, why) in [
            ("mysql://host:3306/db", "no user"),
            ("mysql://u:Pw-Leak-1@host:3306", "no database"),
            ("mysql://u:Pw-Leak-1@host:3306/", "database name"),
            ("mysql://u:Pw-Leak-1@host:99999/db", "host or port"),
            ("mysql://u:Pw-Leak-1@:3306/db", "no host"),
            ("mysql://u:Pw-Leak-1@host/db?ssl=1", "no options"),
            ("mysql://u:Pw-Leak-1@host/d b", "database name"),
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
        let shown = format!("{:?}", describe(&s));
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
        assert!(e.contains("not a mysql:// URL"), "{e}");
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
    }

    #[test]
    fn table_names() {
        assert!(TableName::parse("users").is_ok());
        assert!(TableName::parse("_rr_users2").is_ok());
        for bad in [
            "",
            "2users",
            "us-ers",
            "users;",
            "\"users\"",
            &"u".repeat(65),
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_key_is_settable_and_described() {
        let described = describe(&Settings::default());
        for key in KEYS {
            assert!(described.contains_key(key), "{key} missing from describe()");
        }
        assert_eq!(described.len(), KEYS.len());
    }

    #[test]
    fn toml_lists_and_numbers_become_text() {
        let f = toml_file("bcrypt_cost = 5\n");
        let s = Settings::load_from(Some(f.path()), &[], &vec![]).unwrap();
        assert_eq!(s.bcrypt_cost, 5);
    }
}
