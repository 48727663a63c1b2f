//! The command line: `serve` and the administrative subcommands, which go
//! through the same store and the same write path as the API.
//!
//! Exit codes: 0 success; 1 the operation failed (database unavailable, I/O);
//! 2 bad usage, configuration or input.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use std::sync::Arc;

use crate::audit::Caller;
use crate::clock::SystemClock;
use crate::config::{self, FlagValues, Settings, CONFIG_FILE_ENV};
use crate::credentials::Credentials;
use crate::domain::{rfc3339, Password, Username};
use crate::htpasswd::{self, HashType};
use crate::startup::{shutdown_signal, Application, StartupError};
use crate::store::{Create, Store};

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "registry-rubber",
    version,
    about = "Short-lived Docker registry credentials for Apache mod_authn_dbd",
    after_help = "Every option is also a configuration key (TOML file) and an environment variable RUBBER_<KEY>.\nPrecedence: flag > environment > file > default.\nExit codes: 0 success, 1 operation failed, 2 bad usage, configuration or input."
)]
pub struct Cli {
    /// TOML configuration file [env: RUBBER_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address and port to listen on [default: 127.0.0.1:5080]
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// sqlite:///absolute/path.sqlite or mysql://user@host:3306/database [default: sqlite:registry-rubber.sqlite]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// File holding the MySQL/MariaDB password (one trailing newline dropped)
    #[arg(long, global = true, value_name = "FILE")]
    pub database_password_file: Option<String>,
    /// sha1, md5, bcrypt, sha256 or sha512 [default: md5]
    #[arg(long, global = true, value_name = "TYPE")]
    pub hash_type: Option<String>,
    /// bcrypt cost, 4 to 17 [default: 10]
    #[arg(long, global = true, value_name = "COST")]
    pub bcrypt_cost: Option<String>,
    /// Default age in seconds beyond which cleanup removes users [default: 600]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub cleanup_threshold: Option<String>,
    /// Seconds a credential lives when add names no ttl [default: 3600]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub default_ttl: Option<String>,
    /// Most seconds one add or renew may grant [default: 43200]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub max_ttl: Option<String>,
    /// Most seconds a credential may live from its creation [default: 86400]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub max_lifetime: Option<String>,
    /// Seconds between sweeps of expired users; 0 turns it off [default: 60]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub sweep_interval: Option<String>,
    /// Table holding the users [default: users]
    #[arg(long, global = true, value_name = "NAME")]
    pub table: Option<String>,
    /// PEM certificate chain: with --tls-key, the API speaks HTTPS only
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// PEM private key of --tls-cert
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_key: Option<String>,
    /// PEM CA bundle: every client must present a certificate it issued
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_client_ca: Option<String>,
    /// Client certificate subjects allowed to call, such as OU=pipelines,OU=ops+CN=deployer
    #[arg(long, global = true, value_name = "LIST")]
    pub allowed_subjects: Option<String>,
    /// Addresses allowed to call, as CIDRs [default: 127.0.0.0/8,::1/128]
    #[arg(long, global = true, value_name = "CIDRS")]
    pub allow_from: Option<String>,
    /// Proxies whose X-Forwarded-For is believed, as CIDRs [default: none]
    #[arg(long, global = true, value_name = "CIDRS")]
    pub trusted_proxies: Option<String>,
    /// Whether add, remove, delete, renew and cleanup accept GET [default: true]
    #[arg(long, global = true, value_name = "BOOL")]
    pub allow_get_mutations: Option<String>,
    /// text or json [default: text]
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// error, warn, info, debug, trace, or a tracing filter [default: info]
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the JSON API
    Serve,
    /// Add a user, or replace its password; the password is read from standard input
    Add {
        user: String,
        /// Seconds until the credential expires [default: default_ttl; at most max_ttl]
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<String>,
    },
    /// Remove a user (succeeds whether or not it existed)
    Remove { user: String },
    /// Remove users created more than --older-than seconds ago
    Cleanup {
        /// Age in seconds [default: cleanup_threshold]
        #[arg(long, value_name = "SECONDS")]
        older_than: Option<u64>,
    },
    /// Print the hash of the password read from standard input
    Hash {
        /// sha1, md5, bcrypt, sha256 or sha512 [default: hash_type]
        #[arg(long = "type", value_name = "TYPE")]
        hash_type: Option<String>,
    },
    /// Create the database if missing and bring its schema up to date
    Migrate,
    /// Validate the configuration and print every key's value
    CheckConfig,
}

impl Cli {
    fn flag_values(&self) -> FlagValues {
        let flags = [
            ("listen", &self.listen),
            ("database_url", &self.database_url),
            ("database_password_file", &self.database_password_file),
            ("hash_type", &self.hash_type),
            ("bcrypt_cost", &self.bcrypt_cost),
            ("cleanup_threshold", &self.cleanup_threshold),
            ("default_ttl", &self.default_ttl),
            ("max_ttl", &self.max_ttl),
            ("max_lifetime", &self.max_lifetime),
            ("sweep_interval", &self.sweep_interval),
            ("table", &self.table),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("tls_client_ca", &self.tls_client_ca),
            ("allowed_subjects", &self.allowed_subjects),
            ("allow_from", &self.allow_from),
            ("trusted_proxies", &self.trusted_proxies),
            ("allow_get_mutations", &self.allow_get_mutations),
            ("log_format", &self.log_format),
            ("log_level", &self.log_level),
        ];
        flags
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
            .collect()
    }

    fn config_file(&self) -> Option<PathBuf> {
        self.config
            .clone()
            .or_else(|| std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from))
    }
}

/// A failure and its exit code; the message goes to standard error.
struct Failure(u8, String);

fn usage(message: impl std::fmt::Display) -> Failure {
    Failure(EXIT_USAGE, message.to_string())
}

fn failed(message: impl std::fmt::Display) -> Failure {
    Failure(EXIT_FAILED, message.to_string())
}

pub async fn run(cli: Cli) -> ExitCode {
    let settings = match Settings::load(cli.config_file().as_deref(), &cli.flag_values()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("registry-rubber: configuration error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let _log_guard = crate::telemetry::init(settings.log_format, &settings.log_level);
    match dispatch(cli.command, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("registry-rubber: {message}");
            ExitCode::from(code)
        }
    }
}

async fn dispatch(command: Command, settings: Settings) -> Result<(), Failure> {
    match command {
        Command::Serve => {
            let app = Application::build(&settings).await.map_err(|e| match e {
                // A missing database or bad TLS files: 2. The database failed
                // (unreachable, broken): 1.
                StartupError::Tls(_) => usage(e),
                StartupError::Store(ref s) if s.is_setup() => usage(e),
                other => failed(other),
            })?;
            app.run_until_stopped(shutdown_signal()).await;
        }
        Command::CheckConfig => {
            for (key, value) in config::describe(&settings) {
                println!("{key} = {}", toml_string(&value));
            }
        }
        Command::Migrate => {
            let store = Store::open(&settings, Create::IfMissing)
                .await
                .map_err(failed)?;
            store.close().await;
            println!("database {} is up to date", settings.database);
        }
        Command::Hash { hash_type } => {
            let kind = match hash_type {
                Some(t) => t.parse::<HashType>().map_err(usage)?,
                None => settings.hash_type,
            };
            let password = read_password(kind)?;
            let hash =
                htpasswd::hash(kind, password.expose(), settings.bcrypt_cost).map_err(usage)?;
            println!("{hash}");
        }
        Command::Add { user, ttl } => {
            let user = Username::parse(&user).map_err(usage)?;
            let granted = settings.ttl.grant(ttl.as_deref()).map_err(usage)?;
            let password = read_password(settings.hash_type)?;
            let creds = open_credentials(&settings).await?;
            let added = creds
                .add(Some(user), Some(password), granted, &Caller::local("cli"))
                .await;
            creds.store.close().await;
            let added = added.map_err(failed)?;
            let how = if added.replaced {
                " (password replaced)"
            } else {
                ""
            };
            let clamped = if granted.clamped {
                ", ttl clamped to max_ttl"
            } else {
                ""
            };
            println!(
                "Added user {}{how}, expires {}{clamped}",
                added.user,
                rfc3339(added.expires_at)
            );
        }
        Command::Remove { user } => {
            let user = Username::parse(&user).map_err(usage)?;
            let creds = open_credentials(&settings).await?;
            let found = creds.remove(&user, &Caller::local("cli")).await;
            creds.store.close().await;
            let how = if found.map_err(failed)? {
                ""
            } else {
                " (it was not present)"
            };
            println!("removed user {user}{how}");
        }
        Command::Cleanup { older_than } => {
            let older_than = older_than.unwrap_or(settings.cleanup_threshold);
            let creds = open_credentials(&settings).await?;
            let removed = creds.cleanup(older_than, &Caller::local("cli")).await;
            creds.store.close().await;
            let removed = removed.map_err(failed)?;
            println!("removed {removed} users older than {older_than} seconds");
        }
    }
    Ok(())
}

/// The credential service on the configured database, which must exist.
async fn open_credentials(settings: &Settings) -> Result<Credentials, Failure> {
    let store = Store::open(settings, Create::Never).await.map_err(|e| {
        if e.is_setup() {
            usage(e)
        } else {
            failed(e)
        }
    })?;
    Ok(Credentials::new(settings, store, Arc::new(SystemClock)))
}

/// Reads a password from standard input: everything up to the end, less one
/// trailing line break.
fn read_password(kind: HashType) -> Result<Password, Failure> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| usage(format!("cannot read the password from standard input: {e}")))?;
    let trimmed = input
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&input);
    Password::parse(trimmed.to_owned(), kind)
        .map_err(|e| usage(format!("{e} (the password is read from standard input)")))
}

fn toml_string(value: &str) -> String {
    match value.parse::<i64>() {
        Ok(_) => value.to_owned(),
        Err(_) => format!("{value:?}"),
    }
}
