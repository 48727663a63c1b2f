//! The command line: `serve` and the administrative subcommands, which go
//! through the same store and the same write path as the API.
//!
//! Exit codes: 0 success; 1 the operation failed (database unavailable, I/O);
//! 2 bad usage, configuration or input.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, CommandFactory, FromArgMatches, Parser, Subcommand};

use std::sync::Arc;

use crate::audit::Caller;
use crate::clock::SystemClock;
use crate::config::{self, keys, FlagValues, Key, Settings, CONFIG_FILE_ENV, DATABASE_KEYS};
use crate::credentials::{CredentialError, Credentials};
use crate::domain::{rfc3339, Password, ScopePattern, Username};
use crate::htpasswd::{self, HashType};
use crate::startup::{self, shutdown_signal, Application, SettingsSource};
use crate::store::{migrations, Create, Store, StoreError};

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// What every subcommand's help says about exit codes.
const EXIT_CODES: &str = "Exit codes: 0 success; 1 the operation failed at run time (the database failed or is unreachable, a port is taken, I/O); 2 bad usage, configuration or input (a bad key or flag, a file that cannot be read or loaded, a database that does not exist or refuses the account).";

#[derive(Debug, Parser)]
#[command(
    name = "registry-rubber",
    version,
    about = "Short-lived Docker registry credentials: a JSON API that mints them, and doors that check them (Apache mod_authn_dbd, nginx auth_request)",
    after_help = "Every configuration key is also a flag (below) and an environment variable RUBBER_<KEY>; the keys of a door's table have the door's prefix (RUBBER_AUTH_LISTEN, --auth-listen).\nA flag goes before or after the subcommand; a subcommand's --help lists the keys it uses.\nPrecedence: flag > environment > file > default.\nExit codes: 0 success, 1 the operation failed at run time, 2 bad usage, configuration or input."
)]
pub struct Cli {
    /// TOML configuration file [env: RUBBER_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the JSON API and the configured doors
    Serve,
    /// Add a user, or replace its password; the password is read from standard input
    Add {
        /// The user name: 1 to 128 ASCII letters, digits, '.', '_', '-' or '@' (the login Docker and Apache see)
        user: String,
        /// Seconds until the credential expires [default: default_ttl; at most max_ttl]
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<String>,
        /// What the credential may do through the token door, such as repository:team/app:pull (repeatable) [default: token.default_scopes]
        #[arg(long, value_name = "SCOPE")]
        scope: Vec<String>,
    },
    /// Remove a user (succeeds whether or not it existed)
    Remove {
        /// The user name to remove
        user: String,
    },
    /// Remove users created more than --older-than seconds ago
    Cleanup {
        /// Age in seconds [default: cleanup_threshold]
        #[arg(long, value_name = "SECONDS")]
        older_than: Option<u64>,
    },
    /// Print the hash of the password read from standard input, of type hash_type (--hash-type, or --type)
    Hash,
    /// Create the database if missing and bring its schema up to date
    Migrate,
    /// Check the configuration as serve would before it binds a port, and print every key's value as TOML
    CheckConfig,
    /// Print a completion script for SHELL on standard output (bash: source it, or install it as
    /// /usr/share/bash-completion/completions/registry-rubber)
    Completions {
        /// The shell the script is for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a manual page (roff) on standard output: registry-rubber(1), or COMMAND's
    /// registry-rubber-COMMAND(1)
    Man {
        /// The subcommand whose page to print [default: the page of registry-rubber itself]
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
}

/// Whether the subcommand `name` uses the key at `path`; `serve` and
/// `check-config` use them all.
fn uses(name: &str, path: &str) -> bool {
    let logs = ["log_level", "log_format"].contains(&path);
    let database = DATABASE_KEYS.contains(&path);
    match name {
        "serve" | "check-config" => true,
        "migrate" | "remove" => database || logs,
        "add" => {
            database
                || logs
                || [
                    "hash_type",
                    "bcrypt_cost",
                    "default_ttl",
                    "max_ttl",
                    "max_lifetime",
                ]
                .contains(&path)
        }
        "cleanup" => database || logs || ["cleanup_threshold", "min_older_than"].contains(&path),
        "hash" => ["hash_type", "bcrypt_cost"].contains(&path),
        "completions" | "man" => false,
        _ => true,
    }
}

/// The flag of a configuration key.
fn key_arg(key: &Key) -> Arg {
    let default = if key.default.is_empty() {
        "unset"
    } else {
        key.default
    };
    Arg::new(key.path())
        .long(key.flag())
        .value_name(key.value_name)
        .help(format!(
            "{} [default: {default}] [env: {}]",
            key.help, key.env
        ))
        .help_heading(key.section.title())
}

/// The command line: the subcommands, `--config`, and one flag for every
/// configuration key, made from the key's declaration. Every flag is taken
/// before the subcommand and after it; a subcommand's help shows the flags
/// of the keys it uses and hides the others.
pub fn command() -> clap::Command {
    let mut command = Cli::command();
    for key in keys() {
        command = command.arg(key_arg(key));
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        command = command.mut_subcommand(&name, |mut sub| {
            sub = sub.after_help(EXIT_CODES);
            for key in keys() {
                let mut arg = key_arg(key).hide(!uses(&name, &key.path()));
                if name == "hash" && key.name == "hash_type" {
                    arg = arg.visible_alias("type");
                }
                sub = sub.arg(arg);
            }
            sub
        });
    }
    // `man` takes the name of any other subcommand.
    let pages: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    command.mut_subcommand("man", |sub| {
        sub.mut_arg("command", |arg| {
            arg.value_parser(clap::builder::PossibleValuesParser::new(pages))
        })
    })
}

const BIN_NAME: &str = "registry-rubber";

/// clap_complete's bash script (4.6) names the state of a subcommand two
/// ways when the program's name has a hyphen: the loop that reads the words
/// sets `registry__rubber__subcmd__add`, the arms that complete test
/// `registry__subcmd__rubber__subcmd__add`, so nothing after a subcommand
/// would complete (clap-rs/clap#6421). The arms are given the loop's
/// spelling; once clap_complete spells them alike this changes nothing.
fn bash_subcommand_states_fixed(script: &[u8]) -> Vec<u8> {
    let loop_name = BIN_NAME.replace('-', "__");
    let arm_name = BIN_NAME.replace('-', "__subcmd__");
    String::from_utf8_lossy(script)
        .replace(
            &format!("{arm_name}__subcmd__"),
            &format!("{loop_name}__subcmd__"),
        )
        .into_bytes()
}

/// What `completions` and `man` print: generated from [`command`], so every
/// subcommand and every key's flag is in them. They read no configuration.
fn generated(command: &Command) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut self::command(), BIN_NAME, &mut out);
            if *shell == clap_complete::Shell::Bash {
                out = bash_subcommand_states_fixed(&out);
            }
        }
        Command::Man { command: page } => {
            // `help` has no page of its own: the main page lists the others.
            let mut cli = self::command();
            cli.build();
            cli = cli.mut_subcommand("help", |help| help.hide(true));
            let cmd = match page {
                Some(name) => cli
                    .find_subcommand(name)
                    .expect("the parser admits subcommand names only")
                    .clone(),
                None => cli,
            };
            clap_mangen::Man::new(cmd)
                .manual("registry-rubber manual")
                .render(&mut out)
                .expect("rendering into memory cannot fail");
        }
        _ => return None,
    }
    Some(out)
}

/// Parses the process's arguments; on bad usage prints why and exits 2.
/// A key given both before and after the subcommand takes the value after.
pub fn parse() -> (Cli, FlagValues) {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// As [`parse`], for the given arguments (the first is the program's name).
pub fn parse_from(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<(Cli, FlagValues), clap::Error> {
    let matches = command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let sub = matches.subcommand().map(|(_, m)| m);
    let flags = keys()
        .filter_map(|k| {
            let path = k.path();
            sub.and_then(|m| m.get_one::<String>(&path))
                .or_else(|| matches.get_one::<String>(&path))
                .map(|v| (path, v.clone()))
        })
        .collect();
    Ok((cli, flags))
}

impl Cli {
    fn config_file(&self) -> Option<PathBuf> {
        self.config
            .clone()
            .or_else(|| std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from))
    }
}

/// Ignores SIGHUP until the service installs its reload handler.
pub fn ignore_hangup() {
    // SAFETY: sets the disposition of one signal to "ignore"; no handler
    // code runs.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
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

/// Exit 2 when the fix is in the configuration or the set-up, 1 otherwise:
/// the same rule for every subcommand.
fn by_cause(setup: bool, message: impl std::fmt::Display) -> Failure {
    if setup {
        usage(message)
    } else {
        failed(message)
    }
}

pub async fn run(cli: Cli, flags: FlagValues) -> ExitCode {
    if let Some(text) = generated(&cli.command) {
        return match std::io::stdout().lock().write_all(&text) {
            // A reader that stopped early (`| head`) took what it wanted.
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("registry-rubber: cannot write to standard output: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    let settings = match Settings::load(cli.config_file().as_deref(), &flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("registry-rubber: configuration error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let _log_guard = crate::telemetry::init(settings.log_format, &settings.log_level);
    // A reload reads the configuration again from the same file, the
    // process's environment, and the same flags.
    let file = cli.config_file();
    let source: SettingsSource = Arc::new(move || Settings::load(file.as_deref(), &flags));
    match dispatch(cli.command, settings, source).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("registry-rubber: {message}");
            ExitCode::from(code)
        }
    }
}

async fn dispatch(
    command: Command,
    settings: Settings,
    source: SettingsSource,
) -> Result<(), Failure> {
    match command {
        Command::Serve => {
            // SIGHUP is ignored from the start (main) and caught once the
            // doors are up (the reload handler).
            // A missing database, bad TLS files, no door: 2. The database
            // failed (unreachable, broken), a port is taken: 1.
            let app = Application::build(&settings)
                .await
                .map_err(|e| by_cause(e.is_setup(), e))?;
            app.reload_settings_from(source)
                .run_until_stopped(shutdown_signal())
                .await;
        }
        Command::CheckConfig => {
            print!("{}", config::describe_toml(&settings));
            let checked = startup::check(&settings)
                .await
                .map_err(|e| by_cause(e.is_setup(), e))?;
            for line in checked {
                eprintln!("checked: {line}");
            }
            for line in not_checked(&settings) {
                eprintln!("not checked: {line}");
            }
        }
        Command::Migrate => {
            let store = Store::open(&settings, Create::IfMissing)
                .await
                .map_err(|e| store_failure(&settings, e))?;
            let applied: Vec<String> = store
                .applied_migrations()
                .iter()
                .map(|m| m.file_name())
                .collect();
            store.close().await;
            let version = schema_version(&settings);
            if applied.is_empty() {
                println!(
                    "database {} was up to date: schema version {version}, nothing applied",
                    settings.database
                );
            } else {
                println!(
                    "database {}: applied {} migration{} ({}); schema version {version}",
                    settings.database,
                    applied.len(),
                    if applied.len() == 1 { "" } else { "s" },
                    applied.join(", ")
                );
            }
        }
        Command::Hash => {
            let kind = settings.hash_type;
            let password = read_password(kind)?;
            let hash =
                htpasswd::hash(kind, password.expose(), settings.bcrypt_cost).map_err(usage)?;
            println!("{hash}");
        }
        Command::Add { user, ttl, scope } => {
            let user = Username::parse(&user).map_err(usage)?;
            let given: Vec<&str> = scope.iter().map(String::as_str).collect();
            let scopes = (!given.is_empty())
                .then(|| ScopePattern::parse_given(&given))
                .transpose()
                .map_err(usage)?;
            let granted = settings.ttl.grant(ttl.as_deref()).map_err(usage)?;
            let password = read_password(settings.hash_type)?;
            let creds = open_credentials(&settings).await?;
            let added = creds
                .add(
                    Some(user),
                    Some(password),
                    scopes,
                    granted,
                    &Caller::local("cli"),
                )
                .await;
            creds.close().await;
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
            creds.close().await;
            let how = if found.map_err(failed)? {
                ""
            } else {
                " (it was not present)"
            };
            println!("removed user {user}{how}");
        }
        Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("run prints these before it reads the configuration")
        }
        Command::Cleanup { older_than } => {
            let older_than = older_than.unwrap_or(settings.cleanup_threshold);
            let creds = open_credentials(&settings).await?;
            let removed = creds.cleanup(older_than, &Caller::local("cli")).await;
            creds.close().await;
            let removed = removed.map_err(|e| match e {
                CredentialError::BelowFloor { .. } => usage(e),
                other => failed(other),
            })?;
            println!("removed {removed} users older than {older_than} seconds");
        }
    }
    Ok(())
}

/// A failure to open the database, with where its keys' values came from.
fn store_failure(settings: &Settings, e: StoreError) -> Failure {
    let keys: Vec<String> = DATABASE_KEYS.iter().map(|k| (*k).to_owned()).collect();
    by_cause(
        e.is_setup(),
        format!("{e} ({})", settings.provenance(&keys)),
    )
}

/// What `check-config` leaves to `serve`, said plainly.
fn not_checked(settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    for (section, listener) in settings.listeners() {
        if let Some(addr) = listener.listen {
            out.push(format!(
                "whether {addr} ({}) is free to listen on: only serve binds it",
                match section.table() {
                    Some(table) => format!("{table}.listen"),
                    None => "listen".to_owned(),
                }
            ));
        }
    }
    if let Some(path) = &settings.api.unix_socket {
        out.push(format!(
            "the Unix socket {} (unix_socket): serve creates it",
            path.display()
        ));
    }
    out
}

/// The schema version this build brings the configured database to.
fn schema_version(settings: &Settings) -> i64 {
    let all = match settings.database {
        config::DatabaseUrl::Sqlite { .. } => migrations::SQLITE,
        config::DatabaseUrl::Mysql(_) => migrations::MYSQL,
    };
    all.last().map_or(0, |m| m.version)
}

/// The credential service on the configured database, which must exist.
async fn open_credentials(settings: &Settings) -> Result<Credentials, Failure> {
    let store = Store::open(settings, Create::Never)
        .await
        .map_err(|e| store_failure(settings, e))?;
    match Credentials::new(settings, store.clone(), Arc::new(SystemClock)) {
        Ok(credentials) => Ok(credentials),
        Err(e) => {
            store.close().await;
            Err(failed(e))
        }
    }
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
