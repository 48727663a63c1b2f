//! The types configuration values parse into, the parsers every source
//! shares, and how each value prints back (for `check-config`). A parser's
//! error says what is wrong and how to write it instead; it never repeats a
//! secret.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::access::{parse_cidrs, SubjectPattern};
use crate::domain::{AclRule, ScopePattern};
use crate::htpasswd::HashType;

/// The default database: an SQLite file in the working directory, created
/// on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:registry-rubber.sqlite";

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
            split_host_port(hostport).ok_or_else(|| bad("has a bad host or port (a host is a name, an IPv4 address or an [IPv6] address without a zone; a port is 1 to 65535)"))?;
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

/// `host`, `host:port`, `[v6]` or `[v6]:port`. A host is a name of
/// letters, digits, `-`, `_` and dots (container names often hold `_`; one
/// trailing dot allowed), an IPv4 address, or an IPv6 address in brackets
/// (no zone); anything else is refused rather than passed on, so the URL
/// prints back exactly as it parses.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        let name = host.strip_suffix('.').unwrap_or(host);
        if !host.is_empty() && !is_dns_name(name, true) {
            return None;
        }
        (host, port)
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

/// What a user name in a URL must have percent-encoded: everything but the
/// characters RFC 3986 leaves unreserved (letters, digits, `-._~`).
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl fmt::Display for MysqlUrl {
    /// The URL with the password, if any, shown as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let encode = |s: &str| percent_encoding::utf8_percent_encode(s, USERINFO).to_string();
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
/// to 55 letters, digits or `_`: 56 at most, so that `{table}_refresh`, the
/// table of its refresh tokens, stays within MySQL's 64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(pub(super) String);

/// Longest table name: MySQL's 64, less the `_refresh` suffix of the table
/// of refresh tokens.
pub const MAX_TABLE_NAME: usize = 56;

impl TableName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut bytes = raw.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
        if first_ok
            && raw.len() <= MAX_TABLE_NAME
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            Ok(TableName(raw.to_owned()))
        } else {
            Err(format!(
                "`{raw}` is not an SQL identifier of at most 56 characters; use a letter or '_' followed by up to 55 letters, digits or '_', such as users"
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

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
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

/// `IP:PORT`.
pub fn socket_addr(value: &str) -> Result<SocketAddr, String> {
    value.trim().parse().map_err(|_| {
        format!(
            "`{value}` is not an address and port; write an IP address and port such as 127.0.0.1:5080 or [::1]:5080"
        )
    })
}

/// `IP:PORT`, or empty for none (a listener that is off).
pub fn optional_socket_addr(value: &str) -> Result<Option<SocketAddr>, String> {
    match value.trim() {
        "" => Ok(None),
        v => socket_addr(v).map(Some),
    }
}

/// A path, or none for an empty value (which unsets the key).
pub fn optional_path(value: &str) -> Result<Option<PathBuf>, String> {
    Ok(Some(PathBuf::from(value)).filter(|_| !value.trim().is_empty()))
}

/// An absolute path, or none for an empty value.
pub fn optional_absolute_path(value: &str) -> Result<Option<PathBuf>, String> {
    match value.trim() {
        "" => Ok(None),
        path if Path::new(path).is_absolute() => Ok(Some(PathBuf::from(path))),
        _ => Err(format!(
            "`{value}` is not an absolute path; write one such as /etc/registry-rubber/db-password"
        )),
    }
}

/// A count of seconds from `min` up to about 136 years.
pub fn seconds(value: &str, min: u64) -> Result<u64, String> {
    in_range(value, min, u64::from(u32::MAX))
        .map_err(|m| format!("{m} (a whole number of seconds, such as 3600)"))
}

/// A whole number from `min` to `max`.
pub fn in_range<T>(value: &str, min: T, max: T) -> Result<T, String>
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

pub fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(format!("`{value}` is not true or false")),
    }
}

pub fn cidrs(value: &str) -> Result<Vec<IpNet>, String> {
    parse_cidrs(value)
}

/// A comma-separated list of subject patterns (a TOML list in a file).
pub fn subjects(value: &str) -> Result<Vec<SubjectPattern>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

pub fn hash_type(value: &str) -> Result<HashType, String> {
    value.trim().parse().map_err(|e| format!("{e}"))
}

/// The levels a log filter names, least to most verbose.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A level, or a filter of comma-separated directives, each a level or
/// `target=level` (`info,registry_rubber::access=warn`). A bare word that is
/// no level is refused: tracing would take it for a target name and log
/// nothing else, audit events included.
pub fn log_level(value: &str) -> Result<String, String> {
    let usage = "use off, error, warn, info, debug or trace, or directives such as info,registry_rubber::access=warn";
    let is_level = |word: &str| LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word));
    let directives: Vec<&str> = value.split(',').map(str::trim).collect();
    if directives.iter().all(|d| d.is_empty()) {
        return Err(format!("is empty; {usage}"));
    }
    for directive in directives.iter().filter(|d| !d.is_empty()) {
        let (target, level) = match directive.rsplit_once('=') {
            Some((target, level)) => (Some(target.trim()), level.trim()),
            None => (None, *directive),
        };
        if target == Some("") {
            return Err(format!("`{directive}` names no target before `=`; {usage}"));
        }
        if !is_level(level) {
            let near = super::suggestion(
                &level.to_ascii_lowercase(),
                LOG_LEVELS.iter().map(|l| (*l).to_owned()),
            );
            return Err(format!("`{level}` is not a log level{near}; {usage}"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(value)
        .map_err(|e| format!("`{value}` is not a log filter ({e}); {usage}"))?;
    Ok(value.to_owned())
}

/// Text that goes into an HTTP header as a quoted string (a realm): 1 to
/// 128 printable ASCII characters, without `"` or `\\`.
pub fn quotable(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "`{value}` is not 1 to 128 printable ASCII characters without quotes or backslashes, such as registry"
        ))
    }
}

/// Permission bits in octal (`0640`, `640`): the owner may read, nobody may
/// execute, and only the owner may write.
pub fn file_mode(value: &str) -> Result<FileMode, String> {
    let digits = value.trim();
    let mode = u32::from_str_radix(digits.strip_prefix("0o").unwrap_or(digits), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            format!("`{value}` is not a file mode; write octal permission bits such as 0640")
        })?;
    if mode & 0o400 == 0 || mode & 0o111 != 0 || mode & 0o022 != 0 {
        return Err(format!(
            "`{value}`: the owner must read the file, nobody may execute it, and only its owner may write it; write 0640 (the group reads), 0600 or 0644"
        ));
    }
    Ok(FileMode(mode))
}

/// Permission bits of a Unix socket (`0660`): the owner may connect
/// (read and write), the group may too, others never, and nobody executes.
pub fn socket_mode(value: &str) -> Result<FileMode, String> {
    let digits = value.trim();
    let mode = u32::from_str_radix(digits.strip_prefix("0o").unwrap_or(digits), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            format!("`{value}` is not a file mode; write octal permission bits such as 0660")
        })?;
    if mode & 0o600 != 0o600 || mode & 0o117 != 0 {
        return Err(format!(
            "`{value}`: the owner must read and write the socket, others may not, and nobody executes it; write 0660 (the group may call) or 0600"
        ));
    }
    Ok(FileMode(mode))
}

/// Permission bits of a file the service writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// Whether `name` is a DNS name: dot-separated labels of 1 to 63 letters,
/// digits and `-` (and `_` when `underscore`), 253 characters at most.
fn is_dns_name(name: &str, underscore: bool) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || (underscore && b == b'_'))
        })
}

/// Host names separated by commas: DNS names or IP addresses, lower-cased,
/// without ports.
pub fn host_names(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            let plain = name.trim_start_matches('[').trim_end_matches(']');
            let ok = plain.parse::<std::net::IpAddr>().is_ok() || is_dns_name(name, false);
            if ok {
                Ok(plain.to_ascii_lowercase())
            } else {
                Err(format!(
                    "`{name}` is not a host name or an IP address (no port); write names such as api.example.com, 10.0.0.5"
                ))
            }
        })
        .collect()
}

/// How the connection to a MySQL/MariaDB server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseTls {
    /// Chosen by the host: none on a loopback address (or `localhost`),
    /// `Required` on any other.
    Auto,
    /// Plain TCP, even to another host: only if the network is trusted.
    Disabled,
    /// TLS, the server's certificate not checked.
    Required,
    /// TLS, the certificate issued by `database_tls_ca` (or a public CA).
    VerifyCa,
    /// As `VerifyCa`, and issued for the URL's host.
    VerifyIdentity,
}

impl DatabaseTls {
    /// The mode in force for a server at `host`.
    pub fn for_host(self, host: &str) -> DatabaseTls {
        if self != DatabaseTls::Auto {
            return self;
        }
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            DatabaseTls::Disabled
        } else {
            DatabaseTls::Required
        }
    }
}

impl fmt::Display for DatabaseTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatabaseTls::Auto => "auto",
            DatabaseTls::Disabled => "disabled",
            DatabaseTls::Required => "required",
            DatabaseTls::VerifyCa => "verify-ca",
            DatabaseTls::VerifyIdentity => "verify-identity",
        })
    }
}

pub fn database_tls(value: &str) -> Result<DatabaseTls, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => Ok(DatabaseTls::Auto),
        "disabled" => Ok(DatabaseTls::Disabled),
        "required" => Ok(DatabaseTls::Required),
        "verify-ca" => Ok(DatabaseTls::VerifyCa),
        "verify-identity" => Ok(DatabaseTls::VerifyIdentity),
        _ => Err(format!(
            "`{value}` is not a TLS mode; use auto, disabled, required, verify-ca or verify-identity"
        )),
    }
}

/// Text, or none for an empty value.
pub fn optional_text(value: &str) -> Result<Option<String>, String> {
    Ok(Some(value.trim().to_owned()).filter(|v| !v.is_empty()))
}

/// Scope patterns separated by spaces (a TOML list too).
pub fn scope_patterns(value: &str) -> Result<Vec<ScopePattern>, String> {
    ScopePattern::parse_list([value]).map_err(|e| e.to_string())
}

/// ACL rules separated by `;` (`[[token.acl]]` tables in a file).
pub fn acl_rules(value: &str) -> Result<Vec<AclRule>, String> {
    AclRule::parse_list(value)
}

/// How a value prints in `check-config`: as TOML, or nothing when unset.
pub trait Shown {
    fn shown(&self) -> Option<toml::Value>;
}

fn text(value: impl fmt::Display) -> Option<toml::Value> {
    Some(toml::Value::String(value.to_string()))
}

macro_rules! shown_as_text {
    ($($t:ty),*) => {$(
        impl Shown for $t {
            fn shown(&self) -> Option<toml::Value> {
                text(self)
            }
        }
    )*};
}
shown_as_text!(
    SocketAddr,
    String,
    HashType,
    DatabaseUrl,
    TableName,
    LogFormat,
    FileMode,
    DatabaseTls
);

macro_rules! shown_as_integer {
    ($($t:ty),*) => {$(
        impl Shown for $t {
            fn shown(&self) -> Option<toml::Value> {
                i64::try_from(*self).ok().map(toml::Value::Integer)
            }
        }
    )*};
}
shown_as_integer!(u32, u64, usize);

impl Shown for bool {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*self))
    }
}

impl Shown for PathBuf {
    fn shown(&self) -> Option<toml::Value> {
        text(self.display())
    }
}

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> Option<toml::Value> {
        self.as_ref().and_then(Shown::shown)
    }
}

impl Shown for Vec<String> {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::Array(self.iter().filter_map(text).collect()))
    }
}

impl Shown for Vec<IpNet> {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::Array(self.iter().filter_map(text).collect()))
    }
}

impl Shown for Vec<ScopePattern> {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::String(ScopePattern::join(self)))
    }
}

impl Shown for Vec<AclRule> {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::String(
            self.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ))
    }
}

impl Shown for Vec<SubjectPattern> {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::Array(self.iter().filter_map(text).collect()))
    }
}
