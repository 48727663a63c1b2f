//! Every configuration key, declared once: its section, name, environment
//! variable, default, value form, description, parser and the field it
//! fills. The flag, the TOML path, the listing of `check-config`, the
//! defaults and every error message come from this table.

use super::values::{self, Shown};
use super::Settings;
use crate::htpasswd::MIN_BCRYPT_COST;

/// Highest bcrypt cost accepted, as Apache's `htpasswd -B -C`: each step
/// doubles the time of every add and of every registry request Apache checks.
pub const MAX_CONFIGURED_BCRYPT_COST: u32 = 17;
/// Smallest and largest `wal_limit`, in megabytes.
pub const MIN_WAL_LIMIT: u64 = 2;
pub const MAX_WAL_LIMIT: u64 = 65_536;
/// Most verifications the verifier's cache holds.
pub const MAX_VERIFY_CACHE_ENTRIES: usize = 1_000_000;

/// A section of the configuration: the top level (the credential core and
/// the admin API, as the original's files have it) or one door's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// The credential core: database, hashing, lifetimes, logging.
    Core,
    /// The admin JSON API; its keys stay at the top level.
    Api,
    /// `[auth_request]`: the nginx auth_request door.
    AuthRequest,
    /// `[htpasswd_file]`: the registry's own htpasswd file.
    HtpasswdFile,
    /// `[token]`: the registry's token server.
    Token,
}

impl Section {
    pub const ALL: [Section; 5] = [
        Section::Core,
        Section::Api,
        Section::AuthRequest,
        Section::HtpasswdFile,
        Section::Token,
    ];

    /// The TOML table the section's keys live in; None: the top level.
    pub fn table(self) -> Option<&'static str> {
        match self {
            Section::Core | Section::Api => None,
            Section::AuthRequest => Some("auth_request"),
            Section::HtpasswdFile => Some("htpasswd_file"),
            Section::Token => Some("token"),
        }
    }

    /// The name of the door the section configures, as logs and errors
    /// give it.
    pub fn door_name(self) -> &'static str {
        match self {
            Section::Core | Section::Api => "api",
            Section::AuthRequest => "auth_request",
            Section::HtpasswdFile => "htpasswd_file",
            Section::Token => "token",
        }
    }

    /// A heading for help texts.
    pub fn title(self) -> &'static str {
        match self {
            Section::Core => "Credential core",
            Section::Api => "Admin API (the JSON door that writes)",
            Section::AuthRequest => "[auth_request]: the nginx auth_request door",
            Section::HtpasswdFile => "[htpasswd_file]: the registry's own htpasswd file",
            Section::Token => "[token]: the registry's token server",
        }
    }
}

/// One configuration key.
pub struct Key {
    pub section: Section,
    pub name: &'static str,
    pub env: &'static str,
    /// The default, in the form a file or the environment would give it;
    /// empty: unset.
    pub default: &'static str,
    /// What the value looks like, for help texts: `SECONDS`, `HOST:PORT`.
    pub value_name: &'static str,
    pub help: &'static str,
    set: fn(&mut Settings, &str) -> Result<(), String>,
    show: fn(&Settings) -> Option<toml::Value>,
}

impl Key {
    /// `name`, or `table.name` for a key of a door's table.
    pub fn path(&self) -> String {
        match self.section.table() {
            Some(table) => format!("{table}.{}", self.name),
            None => self.name.to_owned(),
        }
    }

    /// The command-line flag, without its dashes: the environment variable
    /// less `RUBBER_`, in lower case, with dashes (`--auth-listen`).
    pub fn flag(&self) -> String {
        self.env
            .strip_prefix(super::ENV_PREFIX)
            .unwrap_or(self.env)
            .to_ascii_lowercase()
            .replace('_', "-")
    }

    /// Parses `value` into the key's field.
    pub fn set(&self, settings: &mut Settings, value: &str) -> Result<(), String> {
        (self.set)(settings, value)
    }

    /// The key's value as TOML; None when unset.
    pub fn show(&self, settings: &Settings) -> Option<toml::Value> {
        (self.show)(settings)
    }
}

/// `key!(section, name, env, default, value_name, help, field.path = parser)`
macro_rules! key {
    ($section:expr, $name:literal, $env:expr, $default:literal, $value_name:literal, $help:literal,
     $($field:ident).+ = $parse:expr) => {
        Key {
            section: $section,
            name: $name,
            env: $env,
            default: $default,
            value_name: $value_name,
            help: $help,
            set: |s, v| {
                s.$($field).+ = ($parse)(v)?;
                Ok(())
            },
            show: |s| Shown::shown(&s.$($field).+),
        }
    };
}

/// The keys of a listener, the same for every door: its address, TLS, and
/// who may call it. `$env` is the door's prefix (`RUBBER_`,
/// `RUBBER_AUTH_`).
macro_rules! listener_keys {
    ($section:expr, $env:literal, $listen_default:literal, $listen_help:literal,
     $allow_from_default:literal, $($door:ident).+) => {
        [
            key!($section, "listen", concat!($env, "LISTEN"), $listen_default, "HOST:PORT",
                $listen_help,
                $($door).+.listen = values::optional_socket_addr),
            key!($section, "tls_cert", concat!($env, "TLS_CERT"), "", "FILE",
                "PEM certificate chain; with tls_key the listener speaks HTTPS only (TLS 1.2 and 1.3)",
                $($door).+.tls_cert = values::optional_path),
            key!($section, "tls_key", concat!($env, "TLS_KEY"), "", "FILE",
                "PEM private key of tls_cert (PKCS#8, PKCS#1 or SEC1)",
                $($door).+.tls_key = values::optional_path),
            key!($section, "tls_client_ca", concat!($env, "TLS_CLIENT_CA"), "", "FILE",
                "PEM CA bundle; set, every client must present a certificate one of them issued",
                $($door).+.tls_client_ca = values::optional_path),
            key!($section, "tls_crl", concat!($env, "TLS_CRL"), "", "FILE",
                "PEM revocation lists of tls_client_ca: a revoked client certificate fails the handshake; reloaded on SIGHUP",
                $($door).+.tls_crl = values::optional_path),
            key!($section, "allowed_subjects", concat!($env, "ALLOWED_SUBJECTS"), "", "LIST",
                "client certificate subjects allowed to call: CN=name, OU=unit or OU=unit+CN=name; empty: any",
                $($door).+.allowed_subjects = values::subjects),
            key!($section, "allow_from", concat!($env, "ALLOW_FROM"), $allow_from_default, "CIDRS",
                "addresses allowed to call, as CIDRs; others are refused",
                $($door).+.allow_from = values::cidrs),
            key!($section, "trusted_proxies", concat!($env, "TRUSTED_PROXIES"), "", "CIDRS",
                "proxies whose X-Forwarded-For is believed, as CIDRs; otherwise forwarded headers are ignored",
                $($door).+.trusted_proxies = values::cidrs),
            key!($section, "max_connections", concat!($env, "MAX_CONNECTIONS"), "1024", "COUNT",
                "most connections the listener holds at once; past that a new one is closed at once",
                $($door).+.max_connections = |v| values::in_range(v, 1, 1_000_000)),
        ]
    };
}

const CORE: [Key; 16] = [
    key!(Section::Core, "database_url", "RUBBER_DATABASE_URL", "sqlite:registry-rubber.sqlite", "URL",
        "sqlite:///absolute/path.sqlite, sqlite:relative/path.sqlite, or mysql://user@host:3306/database (mariadb:// too); a password prints as ***",
        database = values::DatabaseUrl::parse),
    key!(Section::Core, "database_password_file", "RUBBER_DATABASE_PASSWORD_FILE", "", "FILE",
        "absolute path of a file holding the MySQL/MariaDB password (one trailing newline dropped); mode 0400 or 0440, refused if others may read it",
        database_password_file = values::optional_absolute_path),
    key!(Section::Core, "database_tls", "RUBBER_DATABASE_TLS", "auto", "MODE",
        "TLS to a MySQL/MariaDB server: auto (none on loopback, required elsewhere), disabled, required, verify-ca or verify-identity",
        database_tls = values::database_tls),
    key!(Section::Core, "database_tls_ca", "RUBBER_DATABASE_TLS_CA", "", "FILE",
        "PEM CA bundle that issued the MySQL/MariaDB server's certificate, for verify-ca and verify-identity (default: public CAs)",
        database_tls_ca = values::optional_path),
    key!(Section::Core, "table", "RUBBER_TABLE", "users", "NAME",
        "table holding the users, an SQL identifier",
        table = values::TableName::parse),
    key!(Section::Core, "hash_type", "RUBBER_HASH_TYPE", "md5", "TYPE",
        "format of new password hashes: md5 ($apr1$), sha1 ({SHA}), sha256 ($5$), sha512 ($6$) or bcrypt ($2y$)",
        hash_type = values::hash_type),
    key!(Section::Core, "bcrypt_cost", "RUBBER_BCRYPT_COST", "10", "COST",
        "bcrypt work factor, 4 to 17; each step doubles the time of every add and of every check that misses the cache",
        bcrypt_cost = |v| values::in_range(v, MIN_BCRYPT_COST, MAX_CONFIGURED_BCRYPT_COST)),
    key!(Section::Core, "verify_cache_entries", "RUBBER_VERIFY_CACHE_ENTRIES", "10000", "COUNT",
        "successful password checks the doors remember (by stored hash and a keyed digest of the password, never the password); 0 turns the cache off",
        verify_cache_entries = |v| values::in_range(v, 0, MAX_VERIFY_CACHE_ENTRIES)),
    key!(Section::Core, "cleanup_threshold", "RUBBER_CLEANUP_THRESHOLD", "600", "SECONDS",
        "cleanup removes users created longer ago than this, unless the request names older_than",
        cleanup_threshold = |v| values::seconds(v, 0)),
    key!(Section::Core, "min_older_than", "RUBBER_MIN_OLDER_THAN", "60", "SECONDS",
        "the smallest older_than a cleanup takes: a cleanup of younger credentials (older_than=0 removes them all) is refused",
        min_older_than = |v| values::seconds(v, 0)),
    key!(Section::Core, "default_ttl", "RUBBER_DEFAULT_TTL", "3600", "SECONDS",
        "seconds a credential lives when add names no ttl",
        ttl.default_ttl = |v| values::seconds(v, 1)),
    key!(Section::Core, "max_ttl", "RUBBER_MAX_TTL", "43200", "SECONDS",
        "most seconds one add or renew grants; a larger ttl is clamped",
        ttl.max_ttl = |v| values::seconds(v, 1)),
    key!(Section::Core, "max_lifetime", "RUBBER_MAX_LIFETIME", "86400", "SECONDS",
        "most seconds a credential lives from its creation, renewals included",
        ttl.max_lifetime = |v| values::seconds(v, 1)),
    key!(Section::Core, "sweep_interval", "RUBBER_SWEEP_INTERVAL", "60", "SECONDS",
        "seconds between sweeps of expired users; 0 turns the sweeper off",
        sweep_interval = |v| values::seconds(v, 0)),
    key!(Section::Core, "wal_limit", "RUBBER_WAL_LIMIT", "64", "MB",
        "most megabytes the SQLite write-ahead log (the -wal file) grows to under load; it is cut back to a quarter of this once checkpointed, and emptied when writes pause for a second",
        wal_limit = |v| values::in_range(v, MIN_WAL_LIMIT, MAX_WAL_LIMIT)),
    key!(Section::Core, "log_format", "RUBBER_LOG_FORMAT", "text", "FORMAT",
        "text or json (one object per line)",
        log_format = |v: &str| v.parse()),
];

const LOG_LEVEL: Key = key!(Section::Core, "log_level", "RUBBER_LOG_LEVEL", "info", "LEVEL",
    "off, error, warn, info (a line per request), debug, trace, or target=level directives such as info,registry_rubber::access=warn",
    log_level = values::log_level);

const API: [Key; 9] = listener_keys!(
    Section::Api,
    "RUBBER_",
    "127.0.0.1:5080",
    "address and port of the admin API; port 0 picks a free port; empty: no admin API on this instance",
    "127.0.0.0/8,::1/128",
    api.listener
);

const API_ONLY: [Key; 6] = [
    key!(Section::Api, "allow_get_mutations", "RUBBER_ALLOW_GET_MUTATIONS", "true", "BOOL",
        "whether add, remove, delete, renew and cleanup accept GET, as the original; false is recommended",
        api.allow_get_mutations = values::boolean),
    key!(Section::Api, "allowed_hosts", "RUBBER_ALLOWED_HOSTS", "", "NAMES",
        "host names the API answers to (the Host header), besides localhost, 127.0.0.1 and ::1 on a loopback or wildcard address and the address itself; a request naming another is refused, as a page that rebinds its name to this host would",
        api.allowed_hosts = values::host_names),
    key!(Section::Api, "callers_file", "RUBBER_CALLERS_FILE", "", "FILE",
        "TOML file of named callers: each proves itself by a bearer token (the file holds its SHA-256) or a client certificate subject, and may take only its actions on user names with its prefix; unset: every admitted caller may do everything; reloaded on SIGHUP",
        api.callers_file = values::optional_path),
    key!(Section::Api, "unix_socket", "RUBBER_UNIX_SOCKET", "", "PATH",
        "a Unix socket the API listens on too (or alone, with listen empty): whoever may open it may call, its owner, group and mode deciding; allow_from and allowed_subjects do not apply to it",
        api.unix_socket = values::optional_path),
    key!(Section::Api, "unix_socket_mode", "RUBBER_UNIX_SOCKET_MODE", "0660", "OCTAL",
        "permission bits of the socket: the owner and the group may connect, never others",
        api.unix_socket_mode = values::socket_mode),
    key!(Section::Api, "unix_socket_group", "RUBBER_UNIX_SOCKET_GROUP", "", "GROUP",
        "group of the socket (a name or a number): the callers' group; empty: the service's own",
        api.unix_socket_group = values::optional_text),
];

const AUTH_REQUEST: [Key; 9] = listener_keys!(
    Section::AuthRequest,
    "RUBBER_AUTH_",
    "",
    "address and port of the auth_request door (GET /auth); empty: the door is off",
    "127.0.0.0/8,::1/128",
    auth_request.listener
);

const AUTH_REQUEST_ONLY: Key = key!(
    Section::AuthRequest,
    "realm",
    "RUBBER_AUTH_REALM",
    "registry",
    "TEXT",
    "realm of the Basic challenge a refused check answers with",
    auth_request.realm = values::quotable
);

const HTPASSWD_FILE: [Key; 4] = [
    key!(Section::HtpasswdFile, "path", "RUBBER_HTPASSWD_FILE", "", "FILE",
        "absolute path of the htpasswd file the registry reads (auth: htpasswd: path), kept equal to the live users; needs hash_type bcrypt; empty: off",
        htpasswd_file.path = values::optional_absolute_path),
    key!(Section::HtpasswdFile, "poll_interval", "RUBBER_HTPASSWD_POLL_INTERVAL", "5", "SECONDS",
        "seconds between reads of the database for changes made elsewhere (other instances on a shared MySQL/MariaDB database, the command line), and between checks that the file on disk is still the one written",
        htpasswd_file.poll_interval = |v| values::seconds(v, 1)),
    key!(Section::HtpasswdFile, "mode", "RUBBER_HTPASSWD_MODE", "0640", "OCTAL",
        "permission bits of the file: the registry's user must read it, nobody else",
        htpasswd_file.mode = values::file_mode),
    key!(Section::HtpasswdFile, "group", "RUBBER_HTPASSWD_GROUP", "", "GROUP",
        "group of the file (a name or a number), the registry's; empty: the service's own",
        htpasswd_file.group = values::optional_text),
];

const TOKEN: [Key; 9] = listener_keys!(
    Section::Token,
    "RUBBER_TOKEN_",
    "",
    "address and port of the token door (GET and POST /token, /.well-known/jwks.json); empty: the door is off",
    "127.0.0.0/8,::1/128",
    token.listener
);

const TOKEN_ONLY: [Key; 8] = [
    key!(Section::Token, "key", "RUBBER_TOKEN_KEY", "", "FILE",
        "PEM EC P-256 private key that signs the tokens (SEC1 or PKCS#8); reloaded on SIGHUP",
        token.key = values::optional_path),
    key!(Section::Token, "cert", "RUBBER_TOKEN_CERT", "", "FILE",
        "PEM certificate of that key (and its chain), the one the registry's rootcertbundle trusts; sent in each token's x5c",
        token.cert = values::optional_path),
    key!(Section::Token, "issuer", "RUBBER_TOKEN_ISSUER", "registry-rubber", "TEXT",
        "the tokens' iss, the registry's auth.token.issuer",
        token.issuer = values::quotable),
    key!(Section::Token, "service", "RUBBER_TOKEN_SERVICE", "registry", "TEXT",
        "the registry's service name (auth.token.service): the tokens' aud, and the only service a request may name",
        token.service = values::quotable),
    key!(Section::Token, "ttl", "RUBBER_TOKEN_TTL", "300", "SECONDS",
        "seconds an access token lives, at least 60; never beyond its credential's expiry",
        token.ttl = |v| values::in_range(v, 60, 86_400)),
    key!(Section::Token, "realm", "RUBBER_TOKEN_REALM", "registry token", "TEXT",
        "realm of the Basic challenge a refused token request answers with",
        token.realm = values::quotable),
    key!(Section::Token, "default_scopes", "RUBBER_TOKEN_DEFAULT_SCOPES", "repository:*:pull,push", "SCOPES",
        "what a credential added without scope may be granted: scope patterns separated by spaces",
        token.default_scopes = values::scope_patterns),
    key!(Section::Token, "acl", "RUBBER_TOKEN_ACL", "", "RULES",
        "static rules that limit every grant, first match wins: [[token.acl]] tables (account, name, actions, type) or `account=GLOB scope=TYPE:NAME:ACTIONS` separated by ;",
        token.acl = values::acl_rules),
];

/// The keys by section, in the order the documentation lists them.
static SECTIONS: [&[Key]; 9] = [
    &CORE,
    &[LOG_LEVEL],
    &API,
    &API_ONLY,
    &AUTH_REQUEST,
    &[AUTH_REQUEST_ONLY],
    &HTPASSWD_FILE,
    &TOKEN,
    &TOKEN_ONLY,
];

/// Every key, in the order the documentation lists them.
pub fn keys() -> impl Iterator<Item = &'static Key> + Clone {
    SECTIONS.iter().flat_map(|section| section.iter())
}
