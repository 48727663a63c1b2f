//! Who may call a door: an address allowlist (with forwarded addresses
//! believed only from trusted proxies) and an optional list of client
//! certificate subjects. Every door applies its own policy before anything
//! else runs, and answers a refusal in its own format.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::tls::ClientIdentity;

/// The access policy in force at a door, swapped whole when the
/// configuration is reloaded.
pub struct AccessCell(std::sync::RwLock<std::sync::Arc<AccessPolicy>>);

impl AccessCell {
    pub fn new(policy: AccessPolicy) -> Self {
        Self(std::sync::RwLock::new(std::sync::Arc::new(policy)))
    }

    pub fn current(&self) -> std::sync::Arc<AccessPolicy> {
        match self.0.read() {
            Ok(p) => std::sync::Arc::clone(&p),
            Err(poisoned) => std::sync::Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn set(&self, policy: AccessPolicy) {
        let policy = std::sync::Arc::new(policy);
        match self.0.write() {
            Ok(mut p) => *p = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }
}

/// The default allowlist: loopback only.
pub const DEFAULT_ALLOW_FROM: &str = "127.0.0.0/8,::1/128";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    pub allow_from: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
    pub allowed_subjects: Vec<SubjectPattern>,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self {
            allow_from: parse_cidrs(DEFAULT_ALLOW_FROM).expect("the default allowlist parses"),
            trusted_proxies: Vec::new(),
            allowed_subjects: Vec::new(),
        }
    }
}

impl AccessPolicy {
    /// The address a request comes from: the peer's, unless the peer is a
    /// trusted proxy, in which case X-Forwarded-For (every line of it, in
    /// order, as one list) is read from the right, past every trusted proxy,
    /// to the first address that is not one. A trusted proxy that sends no
    /// X-Forwarded-For is itself the caller.
    ///
    /// Anything in the list that is not a bare IP address (a port, brackets,
    /// `unknown`, an empty entry, a byte that is not visible ASCII) makes
    /// the caller unknown: refused, never taken to be the proxy.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<IpAddr, UnreadableForward> {
        if !contains(&self.trusted_proxies, peer) {
            return Ok(peer);
        }
        let mut hops = Vec::new();
        for line in forwarded_for {
            let text = std::str::from_utf8(line)
                .ok()
                .filter(|t| {
                    t.bytes()
                        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
                })
                .ok_or(UnreadableForward)?;
            hops.extend(text.split(',').map(str::trim));
        }
        // Every entry is read, those left of the caller included: a list
        // that is not all addresses is refused whole.
        let hops = hops
            .into_iter()
            .map(|hop| hop.parse::<IpAddr>().map_err(|_| UnreadableForward))
            .collect::<Result<Vec<_>, _>>()?;
        let mut client = peer;
        for ip in hops.into_iter().rev() {
            client = ip;
            if !contains(&self.trusted_proxies, ip) {
                break;
            }
        }
        Ok(client)
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        contains(&self.allow_from, canonical(ip))
    }

    /// True when no subjects are listed, or the client's certificate matches
    /// one of them.
    pub fn allows_subject(&self, identity: Option<&ClientIdentity>) -> bool {
        if self.allowed_subjects.is_empty() {
            return true;
        }
        identity.is_some_and(|id| self.allowed_subjects.iter().any(|p| p.matches(id)))
    }
}

/// A trusted proxy forwarded an X-Forwarded-For that is not a list of bare
/// IP addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("X-Forwarded-For from a trusted proxy is not a list of IP addresses")]
pub struct UnreadableForward;

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// An IPv4 address written in IPv6 (::ffff:a.b.c.d) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A comma-separated list of CIDRs; a bare address is a /32 or /128.
pub fn parse_cidrs(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    format!("`{s}` is not an address or CIDR such as 10.0.0.0/8 or ::1/128")
                })
        })
        .collect()
}

/// Required attributes of a client certificate's subject: `CN=name`,
/// `OU=unit`, or both joined with `+` (`OU=pipelines+CN=deployer`). A
/// certificate matches when it carries every attribute given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectPattern {
    pub common_name: Option<String>,
    pub org_unit: Option<String>,
}

impl SubjectPattern {
    /// Whether the certificate carries exactly the attributes asked for. A
    /// subject with two CNs (or two OUs, when an OU is asked for) matches
    /// nothing: which one counts would be a guess, and "CN=other, CN=deployer"
    /// must not pass for CN=deployer.
    pub fn matches(&self, id: &ClientIdentity) -> bool {
        let has = |want: &Option<String>, got: &[String]| match want {
            None => true,
            Some(w) => matches!(got, [only] if only == w),
        };
        has(&self.common_name, &id.common_names) && has(&self.org_unit, &id.org_units)
    }
}

impl std::fmt::Display for SubjectPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [("OU", &self.org_unit), ("CN", &self.common_name)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        f.write_str(&parts.join("+"))
    }
}

impl FromStr for SubjectPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut pattern = SubjectPattern {
            common_name: None,
            org_unit: None,
        };
        for part in s.split('+') {
            let (attr, value) = part
                .split_once('=')
                .map(|(a, v)| (a.trim().to_ascii_uppercase(), v.trim()))
                .filter(|(_, v)| !v.is_empty())
                .ok_or_else(|| format!("`{s}`: write CN=name, OU=unit, or OU=unit+CN=name"))?;
            let slot = match attr.as_str() {
                "CN" => &mut pattern.common_name,
                "OU" => &mut pattern.org_unit,
                _ => return Err(format!("`{s}`: only CN and OU can be matched")),
            };
            if slot.replace(value.to_owned()).is_some() {
                return Err(format!("`{s}`: {attr} is given twice"));
            }
        }
        Ok(pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(proxies: &str) -> AccessPolicy {
        AccessPolicy {
            trusted_proxies: parse_cidrs(proxies).unwrap(),
            ..AccessPolicy::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_allows_loopback_only() {
        let p = AccessPolicy::default();
        assert!(p.allows_ip(ip("127.0.0.1")));
        assert!(p.allows_ip(ip("127.8.9.10")));
        assert!(p.allows_ip(ip("::1")));
        assert!(p.allows_ip(ip("::ffff:127.0.0.1")));
        assert!(!p.allows_ip(ip("10.0.0.1")));
        assert!(!p.allows_ip(ip("::2")));
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let p = policy("10.0.0.0/8");
        let lines = |l: &[&'static str]| l.iter().map(|s| s.as_bytes()).collect::<Vec<_>>();
        let xff = lines(&["203.0.113.7, 10.1.1.1"]);
        assert_eq!(
            p.client_ip(ip("192.0.2.1"), xff.clone()),
            Ok(ip("192.0.2.1")),
            "untrusted peer: its header is ignored"
        );
        assert_eq!(
            p.client_ip(ip("10.0.0.2"), xff.clone()),
            Ok(ip("203.0.113.7"))
        );
        assert_eq!(p.client_ip(ip("10.0.0.2"), lines(&[])), Ok(ip("10.0.0.2")));
        // A client cannot smuggle an address past the first untrusted hop.
        assert_eq!(
            p.client_ip(ip("10.0.0.2"), lines(&["127.0.0.1, 198.51.100.9"])),
            Ok(ip("198.51.100.9"))
        );
        // Several lines are one list, read from the right.
        assert_eq!(
            p.client_ip(ip("10.0.0.2"), lines(&["127.0.0.1", "198.51.100.9"])),
            Ok(ip("198.51.100.9"))
        );
        // Anything unreadable makes the caller unknown, never the proxy.
        for bad in [
            &["garbage"][..],
            &["198.51.100.7:4444"],
            &["[2001:db8::1]"],
            &["198.51.100.7, unknown"],
            &["198.51.100.7,,10.0.0.3"],
            &["\u{e9}, 198.51.100.7"],
            // Left of the caller, too: the list is not all addresses.
            &["garbage, 198.51.100.7"],
            &["unknown", "198.51.100.7"],
        ] {
            assert_eq!(
                p.client_ip(ip("10.0.0.2"), lines(bad)),
                Err(UnreadableForward),
                "{bad:?}"
            );
        }
        assert_eq!(
            p.client_ip(ip("10.0.0.2"), vec![&b"\xff, 198.51.100.7"[..]]),
            Err(UnreadableForward)
        );
        assert_eq!(
            policy("").client_ip(ip("127.0.0.1"), xff),
            Ok(ip("127.0.0.1"))
        );
    }

    #[test]
    fn cidr_lists() {
        let nets = parse_cidrs("10.0.0.0/8, 192.168.1.7 ,::1/128,").unwrap();
        assert_eq!(nets.len(), 3);
        assert_eq!(nets[1].to_string(), "192.168.1.7/32");
        assert!(parse_cidrs("10.0.0.0/33").is_err());
        assert!(parse_cidrs("example.org").is_err());
        assert!(parse_cidrs("").unwrap().is_empty());
    }

    #[test]
    fn subject_patterns() {
        let id = ClientIdentity {
            subject: "CN=deployer, OU=pipelines".into(),
            common_names: vec!["deployer".into()],
            org_units: vec!["pipelines".into()],
        };
        let p = |s: &str| s.parse::<SubjectPattern>().unwrap();
        assert!(p("CN=deployer").matches(&id));
        assert!(p("ou=pipelines").matches(&id));
        assert!(p("OU=pipelines+CN=deployer").matches(&id));
        assert!(!p("OU=pipelines+CN=other").matches(&id));
        assert!(!p("OU=ops").matches(&id));
        // Two CNs (or two OUs): matches nothing that names a CN (an OU).
        let doubled = ClientIdentity {
            subject: "CN=other, CN=deployer, OU=pipelines".into(),
            common_names: vec!["other".into(), "deployer".into()],
            org_units: vec!["pipelines".into()],
        };
        assert!(!p("CN=deployer").matches(&doubled));
        assert!(!p("CN=other").matches(&doubled));
        assert!(!p("OU=pipelines+CN=deployer").matches(&doubled));
        assert!(p("OU=pipelines").matches(&doubled), "only the OU asked for");
        let two_units = ClientIdentity {
            subject: "CN=deployer, OU=ops, OU=pipelines".into(),
            common_names: vec!["deployer".into()],
            org_units: vec!["ops".into(), "pipelines".into()],
        };
        assert!(!p("OU=pipelines").matches(&two_units));
        assert!(p("CN=deployer").matches(&two_units));
        for bad in ["", "CN", "CN=", "O=acme", "CN=a+CN=b"] {
            assert!(bad.parse::<SubjectPattern>().is_err(), "{bad}");
        }
        let mut pol = AccessPolicy::default();
        assert!(pol.allows_subject(None), "no list: anyone");
        pol.allowed_subjects = vec![p("OU=pipelines")];
        assert!(pol.allows_subject(Some(&id)));
        assert!(!pol.allows_subject(None));
    }
}
