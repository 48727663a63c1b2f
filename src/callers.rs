//! Named callers of the admin API, from the callers file: each proves
//! itself by a bearer token (the file holds only its SHA-256) or by a
//! client certificate subject, and has rights: the actions it may take,
//! the user names it may act on, and whether it may replace a credential.
//!
//! ```toml
//! [[caller]]
//! name = "ci"
//! token_sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
//! actions = ["add", "remove", "renew"]
//! users = "ci-"
//! ```
//!
//! `users = "*"` lets a caller act on every name; `users` may not be left
//! out.
//!
//! Without a callers file every caller the door admits has every right,
//! as with the original tool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::http::{header, HeaderMap};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::access::SubjectPattern;
use crate::domain::{NamePrefix, Right, Rights};
use crate::tls::ClientIdentity;

/// Longest bearer token read.
const MAX_TOKEN_LEN: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum CallersError {
    #[error("cannot read callers_file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("callers_file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One caller of the file.
#[derive(Debug)]
struct Entry {
    name: Arc<str>,
    proof: Proof,
    rights: Arc<Rights>,
}

#[derive(Debug)]
enum Proof {
    /// The SHA-256 of its bearer token.
    Token([u8; 32]),
    Subject(SubjectPattern),
}

/// The callers a file names.
#[derive(Debug)]
pub struct Callers {
    entries: Vec<Entry>,
}

/// A caller the file names, with its rights.
#[derive(Debug, Clone)]
pub struct Named {
    pub name: Arc<str>,
    pub rights: Arc<Rights>,
}

/// The request named no caller of the file: no bearer token, one the file
/// does not hold, or no client certificate it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unnamed;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    #[serde(default)]
    caller: Vec<EntryText>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryText {
    name: String,
    token_sha256: Option<String>,
    subject: Option<String>,
    actions: Vec<String>,
    /// Required, so that a caller whose line went missing (a file cut short,
    /// a slip) is refused rather than let act on every name.
    users: Option<String>,
}

impl Callers {
    /// Reads and checks the file: every caller named once, proving itself
    /// one way, with known actions and a valid user-name prefix.
    pub fn load(path: &Path) -> Result<Self, CallersError> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let read_error = |source| CallersError::Read {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        let meta = file.metadata().map_err(read_error)?;
        // Whoever may write the file may give itself every right.
        let invalid = |message: String| CallersError::Invalid {
            path: path.to_owned(),
            message,
        };
        if meta.mode() & 0o022 != 0 {
            return Err(invalid(format!(
                "others than its owner may write it (mode {:04o}); chmod go-w it",
                meta.mode() & 0o7777
            )));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != 0 && meta.uid() != euid {
            return Err(invalid(format!(
                "its owner (uid {}) is neither root nor the service's user (uid {euid}); chown it",
                meta.uid()
            )));
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(read_error)?;
        Self::parse(&text).map_err(|message| CallersError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        // The TOML parser's own message may quote the line; the file holds
        // digests only, never a token.
        let file: FileText = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut entries: Vec<Entry> = Vec::new();
        for raw in file.caller {
            let entry = Entry::parse(raw)?;
            if entries.iter().any(|e| e.name == entry.name) {
                return Err(format!("caller {} is named twice", entry.name));
            }
            if let Proof::Token(digest) = &entry.proof {
                if entries
                    .iter()
                    .any(|e| matches!(&e.proof, Proof::Token(d) if d == digest))
                {
                    return Err(format!(
                        "caller {}: its token_sha256 is another caller's too",
                        entry.name
                    ));
                }
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err("names no caller; add [[caller]] tables, or unset callers_file".into());
        }
        Ok(Self { entries })
    }

    /// The caller a request names: by its `Authorization: Bearer` token
    /// when it sends one (a token the file does not hold names nobody,
    /// whatever certificate comes with it), otherwise by its client
    /// certificate.
    pub fn identify(
        &self,
        headers: &HeaderMap,
        identity: Option<&ClientIdentity>,
    ) -> Result<Named, Unnamed> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let found = match (values.next(), values.next()) {
            (Some(value), None) => {
                let digest = bearer(value.as_bytes()).ok_or(Unnamed)?;
                // Every entry compared, in constant time.
                let mut found = None;
                for entry in &self.entries {
                    if let Proof::Token(d) = &entry.proof {
                        if bool::from(d.ct_eq(&digest)) {
                            found = Some(entry);
                        }
                    }
                }
                found
            }
            (None, _) => identity.and_then(|id| {
                self.entries
                    .iter()
                    .find(|e| matches!(&e.proof, Proof::Subject(p) if p.matches(id)))
            }),
            (Some(_), Some(_)) => None,
        };
        found
            .map(|e| Named {
                name: Arc::clone(&e.name),
                rights: Arc::clone(&e.rights),
            })
            .ok_or(Unnamed)
    }
}

impl Entry {
    fn parse(raw: EntryText) -> Result<Self, String> {
        let name = raw.name.trim();
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "caller name `{}` must be 1 to 64 visible ASCII characters",
                raw.name.escape_default()
            ));
        }
        let proof = match (&raw.token_sha256, &raw.subject) {
            (Some(hex), None) => Proof::Token(sha256_hex(hex).ok_or_else(|| {
                format!(
                    "caller {name}: token_sha256 must be 64 hex digits, the SHA-256 of its token"
                )
            })?),
            (None, Some(subject)) => Proof::Subject(
                subject
                    .parse()
                    .map_err(|e| format!("caller {name}: subject: {e}"))?,
            ),
            _ => {
                return Err(format!(
                    "caller {name}: give token_sha256 or subject, one of the two"
                ))
            }
        };
        let mut rights = Vec::new();
        for action in &raw.actions {
            let right = Right::parse(action).ok_or_else(|| {
                format!(
                    "caller {name}: unknown action `{}`; use {}",
                    action.escape_default(),
                    Right::ALL.map(Right::name).join(", ")
                )
            })?;
            rights.push(right);
        }
        if rights.is_empty() {
            return Err(format!("caller {name}: actions is empty"));
        }
        let users = match raw.users.as_deref() {
            None | Some("") => {
                return Err(format!(
                    "caller {name}: give users, the prefix of the names it may act on (such as \"ci-\"), or \"*\" for every name"
                ))
            }
            Some("*") => NamePrefix::none(),
            Some(prefix) => {
                NamePrefix::parse(prefix).map_err(|e| format!("caller {name}: users: {e}"))?
            }
        };
        if rights.contains(&Right::Cleanup) && !users.as_str().is_empty() {
            return Err(format!(
                "caller {name}: cleanup removes users of every name, so a caller limited by users cannot have it"
            ));
        }
        Ok(Self {
            name: name.into(),
            proof,
            rights: Arc::new(Rights::new(rights, users)),
        })
    }
}

/// The SHA-256 of the token of an `Authorization: Bearer` value.
fn bearer(value: &[u8]) -> Option<[u8; 32]> {
    let (scheme, token) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = token.trim_ascii();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || !token.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, token);
    digest.as_ref().try_into().ok()
}

fn sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The callers in force: None without a callers file. Swapped whole on
/// reload.
pub struct CallersCell(RwLock<Option<Arc<Callers>>>);

impl CallersCell {
    pub fn new(callers: Option<Callers>) -> Self {
        Self(RwLock::new(callers.map(Arc::new)))
    }

    pub fn current(&self) -> Option<Arc<Callers>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, callers: Option<Callers>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = callers.map(Arc::new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const CI_TOKEN: &str = "ci-token-0123456789abcdef";

    fn digest(token: &str) -> String {
        ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn file() -> String {
        format!(
            r#"
            [[caller]]
            name = "ci"
            token_sha256 = "{}"
            actions = ["add", "remove", "renew"]
            users = "ci-"

            [[caller]]
            name = "cron"
            token_sha256 = "{}"
            actions = ["cleanup"]
            users = "*"

            [[caller]]
            name = "deployer"
            subject = "OU=ops+CN=deployer"
            actions = ["add", "replace", "list"]
            users = "deploy-"
            "#,
            digest(CI_TOKEN),
            digest("cron-token-0123456789")
        )
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn identity(subject: &str, cn: &str, ou: &str) -> ClientIdentity {
        ClientIdentity {
            subject: subject.into(),
            common_names: vec![cn.into()],
            org_units: vec![ou.into()],
        }
    }

    #[test]
    fn callers_are_named_by_token_or_certificate() {
        let callers = Callers::parse(&file()).unwrap();
        let ci = callers
            .identify(&headers(&[&format!("Bearer {CI_TOKEN}")]), None)
            .unwrap();
        assert_eq!(&*ci.name, "ci");
        assert_eq!(ci.rights.to_string(), "add,remove,renew on ci-*");
        let ci = callers
            .identify(&headers(&[&format!("bearer   {CI_TOKEN} ")]), None)
            .unwrap();
        assert_eq!(&*ci.name, "ci", "scheme in any case, spaces around");
        let deployer = identity("CN=deployer, OU=ops", "deployer", "ops");
        let named = callers
            .identify(&HeaderMap::new(), Some(&deployer))
            .unwrap();
        assert_eq!(&*named.name, "deployer");
        // Anything else names nobody: a wrong token (even with a good
        // certificate), two headers, another scheme, nothing at all.
        for h in [
            headers(&["Bearer wrong-token"]),
            headers(&[&format!("Bearer {CI_TOKEN}"), "Bearer x"]),
            headers(&[&format!("Basic {CI_TOKEN}")]),
            headers(&["Bearer"]),
            headers(&["Bearer "]),
        ] {
            assert_eq!(
                callers.identify(&h, Some(&deployer)).err(),
                Some(Unnamed),
                "{h:?}"
            );
        }
        assert_eq!(
            callers.identify(&HeaderMap::new(), None).err(),
            Some(Unnamed)
        );
        let stranger = identity("CN=other, OU=ops", "other", "ops");
        assert_eq!(
            callers.identify(&HeaderMap::new(), Some(&stranger)).err(),
            Some(Unnamed)
        );
    }

    #[test]
    fn a_file_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("callers.toml");
        std::fs::write(&path, file()).unwrap();
        for mode in [0o600, 0o640, 0o644, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            Callers::load(&path).unwrap_or_else(|e| panic!("{mode:o}: {e}"));
        }
        for mode in [0o664, 0o646, 0o666, 0o622] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = Callers::load(&path).unwrap_err().to_string();
            assert!(err.contains("chmod go-w"), "{mode:o}: {err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Owned by another account (the tests run as root or as the owner:
        // give it to an account that is neither).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            let err = Callers::load(&path).unwrap_err().to_string();
            assert!(err.contains("neither root nor the service's user"), "{err}");
        }
    }

    #[test]
    fn users_star_is_every_name() {
        let d = digest("t");
        let callers = Callers::parse(&format!(
            "[[caller]]\nname = \"a\"\ntoken_sha256 = \"{d}\"\nactions = [\"add\"]\nusers = \"*\"\n"
        ))
        .unwrap();
        assert_eq!(callers.entries[0].rights.user_prefix().as_str(), "");
    }

    #[test]
    fn the_sample_file_reads() {
        let sample = include_str!("../deploy/callers.toml.sample");
        let callers = Callers::parse(sample).unwrap();
        let names: Vec<&str> = callers.entries.iter().map(|e| &*e.name).collect();
        assert_eq!(names, ["ci", "cron", "operator"]);
    }

    #[test]
    fn a_bad_file_is_refused_with_the_reason() {
        let d = digest("t");
        for (text, reason) in [
            ("", "names no caller"),
            ("[[caller]]\nname = \"a\"\nactions = [\"add\"]\n", "one of the two"),
            (
                &format!("[[caller]]\nname = \"a\"\ntoken_sha256 = \"{d}\"\nactions = [\"add\"]\n"),
                "give users",
            ),
            (
                &format!("[[caller]]\nname = \"a\"\ntoken_sha256 = \"{d}\"\nactions = [\"add\"]\nusers = \"\"\n"),
                "give users",
            ),
            (
                &format!("[[caller]]\nname = \"a\"\ntoken_sha256 = \"{d}\"\nsubject = \"CN=a\"\nactions = [\"add\"]\n"),
                "one of the two",
            ),
            ("[[caller]]\nname = \"a\"\ntoken_sha256 = \"abc\"\nactions = [\"add\"]\n", "64 hex digits"),
            (
                &format!("[[caller]]\nname = \"a\"\ntoken_sha256 = \"{d}\"\nactions = [\"delete\"]\n"),
                "unknown action",
            ),
            (
                &format!("[[caller]]\nname = \"a\"\ntoken_sha256 = \"{d}\"\nactions = []\n"),
                "actions is empty",
            ),
            (
                &format!("[[caller]]\nname = \"a\"\ntoken_sha256 = \"{d}\"\nactions = [\"cleanup\"]\nusers = \"ci-\"\n"),
                "cannot have it",
            ),
            (
                &format!("[[caller]]\nname = \"a\"\ntoken_sha256 = \"{d}\"\nactions = [\"add\"]\nusers = \"ci/\"\n"),
                "users",
            ),
            (
                &format!("[[caller]]\nname = \"a\"\ntoken_sha256 = \"{d}\"\nactions = [\"add\"]\nusers = \"*\"\n[[caller]]\nname = \"a\"\nsubject = \"CN=x\"\nactions = [\"add\"]\nusers = \"*\"\n"),
                "named twice",
            ),
            (
                &format!("[[caller]]\nname = \"a\"\ntoken_sha256 = \"{d}\"\nactions = [\"add\"]\nusers = \"*\"\n[[caller]]\nname = \"b\"\ntoken_sha256 = \"{d}\"\nactions = [\"add\"]\nusers = \"*\"\n"),
                "another caller's",
            ),
            (
                &format!("[[caller]]\nname = \"a\"\ntoken = \"{d}\"\nactions = [\"add\"]\n"),
                "unknown field",
            ),
        ] {
            let err = Callers::parse(text).err().unwrap();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
