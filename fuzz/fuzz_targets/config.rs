//! The configuration loader: a TOML file through `Settings::load_from`, as
//! `--config` reads it.
//!
//! Input: the file's text. Properties: loading never panics; what
//! `check-config` prints for loaded settings loads back to the same settings
//! (printed the same again); a database password shows in neither that
//! output nor the settings' `Debug`; and no error message repeats the
//! password of the file's `database_url`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use registry_rubber::config::{describe_toml, DatabaseUrl, Settings};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let loaded = load(&text);
    let settings = match loaded {
        Ok(settings) => settings,
        Err(message) => {
            if let Some(password) = url_password(&text) {
                // Unless the same text with another password says it too
                // (the password is a word of the message itself).
                let other = "Q".repeat(password.len());
                let echoed = message.contains(&password)
                    && load(&text.replace(&password, &other))
                        .err()
                        .is_none_or(|m| !m.contains(&password));
                assert!(!echoed, "the error repeats the password: {message}");
            }
            return;
        }
    };
    let shown = describe_toml(&settings);
    if let DatabaseUrl::Mysql(url) = &settings.database {
        if let Some(password) = &url.password {
            let password = password.expose();
            let elsewhere = [&url.user, &url.host, &url.database]
                .iter()
                .any(|s| s.contains(password));
            if password.len() >= 4 && !elsewhere {
                assert!(!format!("{:?}", settings.database).contains(password));
                let line = shown
                    .lines()
                    .find(|l| l.starts_with("database_url ="))
                    .expect("database_url is shown");
                assert!(!line.contains(password), "{line}");
            }
            // Shown as `***`, which does not load back to the same URL.
            return;
        }
    }
    let again =
        load(&shown).unwrap_or_else(|e| panic!("check-config output does not load: {e}\n{shown}"));
    assert_eq!(
        describe_toml(&again),
        shown,
        "loaded again, the settings differ"
    );
});

/// Loads `text` as a configuration file (no environment, no flags).
fn load(text: &str) -> Result<Settings, String> {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("registry-rubber-fuzz-{}.toml", std::process::id()))
    });
    std::fs::write(path, text).expect("the file is written");
    Settings::load_from(Some(path), &[], &vec![]).map_err(|e| e.to_string())
}

/// The password of the file's `database_url`, when it is a MySQL URL with
/// one long enough not to turn up in a message by chance.
fn url_password(text: &str) -> Option<String> {
    let table: toml::Table = text.parse().ok()?;
    let url = table.get("database_url")?.as_str()?;
    let rest = url
        .strip_prefix("mysql://")
        .or_else(|| url.strip_prefix("mariadb://"))?;
    let authority = rest.split('/').next()?;
    let (credentials, host) = authority.rsplit_once('@')?;
    let (user, password) = credentials.split_once(':')?;
    let usable = password.len() >= 8
        && text.matches(password).count() == 1
        && !user.contains(password)
        && !host.contains(password);
    usable.then(|| password.to_owned())
}
