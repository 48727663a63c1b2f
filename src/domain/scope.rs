//! Scopes, as the registry's token protocol writes them:
//! `type:name:action[,action...]`, such as `repository:team/app:pull,push`
//! or `registry:catalog:*`.
//!
//! - A [`RequestedScope`] is what a client asks the token door for; its name
//!   is a repository name (the registry's reference grammar), and its
//!   actions are words or `*`.
//! - A [`ScopePattern`] is what a credential may be granted: the same form,
//!   with `*` in the name matching any run of characters (`team/*`), and `*`
//!   as the action for every action. A credential carries a list of them.
//! - An [`AclRule`] is a static rule of the configuration: an account glob
//!   and a pattern; the first rule whose account and resource match decides
//!   the most a request may be granted.
//!
//! [`grant`] puts them together.

use std::collections::BTreeSet;
use std::fmt;

/// Longest scope accepted, in bytes.
pub const MAX_SCOPE_LEN: usize = 512;
/// Most scope patterns one credential carries.
pub const MAX_SCOPES: usize = 32;
/// The resource type of the registry's catalog, granted only by an ACL rule.
pub const REGISTRY_TYPE: &str = "registry";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope `{scope}`: {why}; write type:name:actions, such as repository:team/app:pull,push")]
pub struct ScopeError {
    pub scope: String,
    pub why: &'static str,
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedScope {
    pub kind: String,
    /// The resource class the type may carry, as in `repository(plugin)`
    /// (what a docker engine asks for a plugin): answered back, and
    /// otherwise ignored, as the registry ignores it.
    pub class: Option<String>,
    pub name: String,
    pub actions: Vec<String>,
}

impl RequestedScope {
    /// The type as the request wrote it: with its class, if any.
    pub fn full_kind(&self) -> String {
        match &self.class {
            Some(class) => format!("{}({class})", self.kind),
            None => self.kind.clone(),
        }
    }
}

/// What may be granted: a name glob and actions, or every action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopePattern {
    pub kind: String,
    pub name: String,
    pub actions: Actions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actions {
    All,
    Only(BTreeSet<String>),
}

impl Actions {
    fn allows(&self, action: &str) -> bool {
        match self {
            Actions::All => true,
            Actions::Only(set) => set.contains(action),
        }
    }
}

/// Splits `type:name:actions`. The name may hold one `:` (a registry
/// host's port), so the type ends at the first `:` and the actions start
/// after the last.
fn split(scope: &str) -> Result<(&str, &str, &str), ScopeError> {
    let bad = |why| ScopeError {
        scope: shorten(scope),
        why,
    };
    if scope.len() > MAX_SCOPE_LEN {
        return Err(bad("too long"));
    }
    let (kind, rest) = scope.split_once(':').ok_or_else(|| bad("no name"))?;
    let (name, actions) = rest.rsplit_once(':').ok_or_else(|| bad("no actions"))?;
    if !is_type_word(kind) {
        return Err(bad("the type must be lower-case letters and digits"));
    }
    if name.is_empty() {
        return Err(bad("no name"));
    }
    Ok((kind, name, actions))
}

/// Whether `word` is a resource type or class: lower-case letters and
/// digits.
fn is_type_word(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Text quoted in an error: at most 80 characters, visible ASCII only.
fn shorten(text: &str) -> String {
    text.chars()
        .take(80)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// Whether `name` is a repository name: slash-separated components of
/// lower-case letters and digits joined by `.`, `_`, `__` or dashes, the
/// first of which may instead be a registry host with a port.
fn is_repository_name(name: &str) -> bool {
    if name.len() > 255 {
        return false;
    }
    let mut components = name.split('/').peekable();
    let mut first = true;
    while let Some(component) = components.next() {
        let host_like = first
            && components.peek().is_some()
            && (component.contains(['.', ':']) || component == "localhost");
        first = false;
        let ok = if host_like {
            is_host(component)
        } else {
            is_component(component)
        };
        if !ok {
            return false;
        }
    }
    true
}

fn is_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__" or a run of dashes, between alnums.
        let start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_host(c: &str) -> bool {
    let (host, port) = match c.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (c, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok
        && !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_action(a: &str) -> bool {
    a == "*" || (!a.is_empty() && a.len() <= 32 && a.bytes().all(|b| b.is_ascii_lowercase()))
}

impl RequestedScope {
    pub fn parse(scope: &str) -> Result<Self, ScopeError> {
        let bad = |why| ScopeError {
            scope: shorten(scope),
            why,
        };
        // A type may carry a class: `repository(plugin):name:pull`.
        let (class, plain) = match scope.split_once(':') {
            Some((typed, rest)) if typed.ends_with(')') => {
                let (kind, class) = typed[..typed.len() - 1]
                    .split_once('(')
                    .filter(|(kind, class)| is_type_word(kind) && is_type_word(class))
                    .ok_or_else(|| {
                        bad("a class is written type(class), in lower-case letters and digits")
                    })?;
                (Some(class), format!("{kind}:{rest}"))
            }
            _ => (None, scope.to_owned()),
        };
        let (kind, name, actions) = split(&plain)?;
        let name_ok = if kind == REGISTRY_TYPE {
            name == "catalog"
        } else {
            is_repository_name(name)
        };
        if !name_ok {
            return Err(bad(
                "the name is not a repository name (lower-case components such as team/app)",
            ));
        }
        let mut wanted: Vec<String> = Vec::new();
        // The grammar allows empty actions; they ask for nothing.
        for action in actions.split(',').filter(|a| !a.is_empty()) {
            if !is_action(action) {
                return Err(bad("an action must be lower-case letters, or *"));
            }
            if !wanted.iter().any(|w| w == action) {
                wanted.push(action.to_owned());
            }
        }
        Ok(Self {
            kind: kind.to_owned(),
            class: class.map(str::to_owned),
            name: name.to_owned(),
            actions: wanted,
        })
    }
}

impl ScopePattern {
    pub fn parse(scope: &str) -> Result<Self, ScopeError> {
        let (kind, name, actions) = split(scope)?;
        let bad = |why| ScopeError {
            scope: shorten(scope),
            why,
        };
        // With each `*` read as one character, a pattern must be a name.
        let plain = name.replace('*', "x");
        let name_ok = name == "*"
            || if kind == REGISTRY_TYPE {
                plain == "catalog" || plain == "x"
            } else {
                is_repository_name(&plain)
            };
        if !name_ok {
            return Err(bad(
                "the name is not a repository name or a pattern of one (team/app, team/*, *)",
            ));
        }
        let list: Vec<&str> = actions.split(',').collect();
        let actions = if list == ["*"] {
            Actions::All
        } else {
            if list.iter().any(|a| *a == "*" || !is_action(a)) {
                return Err(bad(
                    "the actions must be lower-case words such as pull,push, or * alone",
                ));
            }
            Actions::Only(list.into_iter().map(str::to_owned).collect())
        };
        Ok(Self {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions,
        })
    }

    /// Whether the pattern speaks of this resource.
    pub fn matches(&self, kind: &str, name: &str) -> bool {
        self.kind == kind && glob(&self.name, name)
    }

    /// Parses a list: patterns separated by spaces, or by a comma and a
    /// space (as a TOML list arrives), or given one by one. (An action list
    /// never ends with a comma, so a trailing one only separates.)
    pub fn parse_list<'a>(
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<ScopePattern>, ScopeError> {
        let mut out: Vec<ScopePattern> = Vec::new();
        for value in values {
            for scope in value.split_ascii_whitespace() {
                let scope = scope.strip_suffix(',').unwrap_or(scope);
                let pattern = ScopePattern::parse(scope)?;
                if !out.contains(&pattern) {
                    out.push(pattern);
                }
            }
        }
        if out.len() > MAX_SCOPES {
            return Err(ScopeError {
                scope: format!("{} scopes", out.len()),
                why: "a credential carries at most 32 scope patterns",
            });
        }
        Ok(out)
    }

    /// The scopes given with a new credential: as [`Self::parse_list`], but
    /// a list that is empty, or a value that is, is refused rather than
    /// read as the default (which may allow far more) or as nothing.
    pub fn parse_given(values: &[&str]) -> Result<Vec<ScopePattern>, ScopeError> {
        if values.is_empty() || values.iter().any(|v| v.trim().is_empty()) {
            return Err(ScopeError {
                scope: String::new(),
                why: "an empty scope; give scope patterns, or leave scope out for the default",
            });
        }
        Self::parse_list(values.iter().copied())
    }

    /// The list as stored: space-separated, canonical.
    pub fn join(list: &[ScopePattern]) -> String {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for ScopePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.kind, self.name)?;
        match &self.actions {
            Actions::All => f.write_str("*"),
            Actions::Only(set) => {
                f.write_str(&set.iter().map(String::as_str).collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// A static rule: accounts matching `account` (a glob) get at most what
/// `pattern` allows on the resources it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    pub account: String,
    pub pattern: ScopePattern,
}

impl AclRule {
    /// `account=GLOB scope=TYPE:NAME:ACTIONS`, or the same fields as
    /// `account`, `type` (default `repository`), `name` and `actions`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut account = None;
        let mut scope = None;
        let (mut kind, mut name, mut actions) = (None, None, None);
        for field in text.split_ascii_whitespace() {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| format!("`{}` is not key=value", shorten(field)))?;
            let slot = match key {
                "account" => &mut account,
                "scope" => &mut scope,
                "type" => &mut kind,
                "name" => &mut name,
                "actions" => &mut actions,
                _ => {
                    return Err(format!(
                    "unknown field `{}`; a rule has account, and scope or type, name and actions",
                    shorten(key)
                ))
                }
            };
            if slot.replace(value.to_owned()).is_some() {
                return Err(format!("`{key}` is given twice"));
            }
        }
        let account = account.ok_or("a rule needs account (a glob such as ci-* or *)")?;
        if account.is_empty() || account.len() > 128 {
            return Err("account must be 1 to 128 characters".to_owned());
        }
        let scope = match (scope, name, actions) {
            (Some(scope), None, None) if kind.is_none() => scope,
            (None, Some(name), Some(actions)) => format!(
                "{}:{name}:{actions}",
                kind.unwrap_or_else(|| "repository".to_owned())
            ),
            _ => {
                return Err(
                    "a rule needs scope, or name and actions (and optionally type)".to_owned(),
                )
            }
        };
        let pattern = ScopePattern::parse(&scope).map_err(|e| e.to_string())?;
        Ok(Self { account, pattern })
    }

    /// A list of rules separated by `;`.
    pub fn parse_list(text: &str) -> Result<Vec<AclRule>, String> {
        text.split(';')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(AclRule::parse)
            .collect()
    }
}

impl fmt::Display for AclRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "account={} scope={}", self.account, self.pattern)
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters (`/` included) and everything else for itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

/// The actions of `requested` that `account` is granted: those its own
/// patterns allow, within what the first matching ACL rule allows. With no
/// rules the patterns alone decide; with rules, a request no rule matches
/// gets nothing. The catalog (`registry` type) is granted by a rule only.
pub fn grant(
    requested: &RequestedScope,
    account: &str,
    own: &[ScopePattern],
    acl: &[AclRule],
) -> Vec<String> {
    let (kind, name) = (requested.kind.as_str(), requested.name.as_str());
    let rule = acl
        .iter()
        .find(|r| glob(&r.account, account) && r.pattern.matches(kind, name));
    if !acl.is_empty() && rule.is_none() {
        return Vec::new();
    }
    requested
        .actions
        .iter()
        .filter(|action| {
            let by_rule = rule.is_none_or(|r| r.pattern.actions.allows(action));
            let by_credential = kind != REGISTRY_TYPE
                && own
                    .iter()
                    .any(|p| p.matches(kind, name) && p.actions.allows(action));
            let catalog_by_rule = kind == REGISTRY_TYPE && rule.is_some();
            by_rule && (by_credential || catalog_by_rule)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> RequestedScope {
        RequestedScope::parse(s).unwrap()
    }

    fn pats(s: &str) -> Vec<ScopePattern> {
        ScopePattern::parse_list([s]).unwrap()
    }

    #[test]
    fn requested_scopes_follow_the_grammar() {
        let r = req("repository:team/app:pull,push,pull");
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.actions.clone()),
            (
                "repository",
                "team/app",
                vec!["pull".to_owned(), "push".to_owned()]
            )
        );
        let r = req("repository:localhost:5000/team/app:pull");
        assert_eq!(r.name, "localhost:5000/team/app", "a host with a port");
        assert_eq!(req("registry:catalog:*").actions, ["*"]);
        assert!(
            req("repository:a/b:").actions.is_empty(),
            "empty actions ask for nothing"
        );
        for bad in [
            "repository",
            "repository:team/app",
            "Repository:team/app:pull",
            "repository:Team/app:pull",
            "repository:team//app:pull",
            "repository:team/app-:pull",
            "repository:team/app:Pull",
            "repository:team/app:pull;rm",
            "registry:other:*",
            "repository::pull",
            "repository:team/*:pull",
            "repository():team/app:pull",
            "repository(Plugin):team/app:pull",
            "(plugin):team/app:pull",
            "repository(plugin:team/app:pull",
            "repository(a)(b):team/app:pull",
        ] {
            assert!(RequestedScope::parse(bad).is_err(), "{bad}");
        }
        // A class, as a docker engine asks for a plugin: kept apart from the
        // type, which alone decides what is granted.
        let r = req("repository(plugin):team/app:pull");
        assert_eq!(
            (r.kind.as_str(), r.class.as_deref(), r.name.as_str()),
            ("repository", Some("plugin"), "team/app")
        );
        assert_eq!(r.full_kind(), "repository(plugin)");
        assert_eq!(req("repository:team/app:pull").class, None);
        assert!(RequestedScope::parse(&format!("repository:{}:pull", "a".repeat(600))).is_err());
        assert_eq!(req("repository:a__b/c.d_e--f:pull").name, "a__b/c.d_e--f");
    }

    #[test]
    fn patterns_take_globs_and_print_canonically() {
        let list = pats("repository:team/*:push,pull   repository:*:pull registry:catalog:*");
        assert_eq!(
            ScopePattern::join(&list),
            "repository:team/*:pull,push repository:*:pull registry:catalog:*"
        );
        for bad in [
            "repository:team/app:pull,*",
            "repository:Team/*:pull",
            "repository:team/app:",
            "x",
        ] {
            assert!(ScopePattern::parse(bad).is_err(), "{bad}");
        }
        assert!(ScopePattern::parse_list(std::iter::repeat_n("repository:a:pull", 1)).is_ok());
        let many: Vec<String> = (0..33).map(|i| format!("repository:r{i}:pull")).collect();
        assert!(ScopePattern::parse_list(many.iter().map(String::as_str)).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything/at/all"));
        assert!(glob("team/*", "team/app"));
        assert!(glob("team/*", "team/a/b"));
        assert!(!glob("team/*", "teams/app"));
        assert!(glob("ci-*", "ci-42"));
        assert!(glob("*-prod", "app-prod"));
        assert!(!glob("*-prod", "app-production"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("abc", "abcd"));
    }

    #[test]
    fn grants_are_the_intersection_and_partial_grants_are_not_errors() {
        let own = pats("repository:team/*:pull repository:team/app:push");
        assert_eq!(
            grant(&req("repository:team/app:pull,push,delete"), "u", &own, &[]),
            ["pull", "push"]
        );
        assert_eq!(
            grant(&req("repository:team/other:pull,push"), "u", &own, &[]),
            ["pull"]
        );
        assert!(grant(&req("repository:other/app:pull"), "u", &own, &[]).is_empty());
        // The catalog only by a rule, whatever the credential says.
        let everything = pats("repository:*:* registry:catalog:*");
        assert!(grant(&req("registry:catalog:*"), "u", &everything, &[]).is_empty());
        let acl = AclRule::parse_list(
            "account=ci-* name=team/* actions=pull ; account=admin scope=registry:catalog:* ; account=* scope=repository:*:*",
        )
        .unwrap();
        assert_eq!(grant(&req("registry:catalog:*"), "admin", &[], &acl), ["*"]);
        assert!(grant(&req("registry:catalog:*"), "ci-1", &everything, &acl).is_empty());
        // The first matching rule limits: ci-* may only pull team/*.
        assert_eq!(
            grant(
                &req("repository:team/app:pull,push"),
                "ci-1",
                &everything,
                &acl
            ),
            ["pull"]
        );
        // A later rule applies to what the first does not match.
        assert_eq!(
            grant(
                &req("repository:other/x:pull,push"),
                "ci-1",
                &everything,
                &acl
            ),
            ["pull", "push"]
        );
        // With rules, what no rule matches gets nothing.
        let narrow = AclRule::parse_list("account=* name=team/* actions=*").unwrap();
        assert!(grant(&req("repository:other/x:pull"), "u", &everything, &narrow).is_empty());
    }

    #[test]
    fn acl_rules_parse_with_clear_errors() {
        let r =
            AclRule::parse("account=ci-* type=repository name=team/* actions=pull,push").unwrap();
        assert_eq!(
            r.to_string(),
            "account=ci-* scope=repository:team/*:pull,push"
        );
        assert_eq!(
            AclRule::parse(&r.to_string()).unwrap(),
            r,
            "prints as it parses"
        );
        for (bad, why) in [
            ("name=a actions=pull", "needs account"),
            ("account=x", "needs scope"),
            ("account=x scope=repository:a:pull name=b", "needs scope"),
            ("account=x colour=red", "unknown field"),
            ("account=x account=y scope=repository:a:pull", "twice"),
            ("account=x scope=repository:A:pull", "repository name"),
        ] {
            let e = AclRule::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
