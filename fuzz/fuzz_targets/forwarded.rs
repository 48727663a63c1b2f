//! Forwarded-address parsing: `AccessPolicy::client_ip`.
//!
//! Input: `trusted proxies (CIDR list)\npeer address\n` then the
//! X-Forwarded-For lines, one per line (raw bytes).
//!
//! Checked against the rule as documented: a peer that is not a trusted
//! proxy is the caller, whatever it forwards; from a trusted proxy, every
//! line must be visible ASCII (spaces and tabs allowed) and every
//! comma-separated entry a bare IP address, or the caller is unknown; the
//! caller is then the rightmost entry that is not a trusted proxy (or the
//! leftmost, when all are), so always an address that was in the header,
//! and the proxy itself only when it sent no header at all.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use registry_rubber::access::{parse_cidrs, AccessPolicy, UnreadableForward};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let (Some(proxies), Some(peer)) = (lines.next(), lines.next()) else {
        return;
    };
    let Ok(trusted_proxies) = std::str::from_utf8(proxies).map(parse_cidrs) else {
        return;
    };
    let Ok(trusted_proxies) = trusted_proxies else {
        return;
    };
    let Some(peer) = std::str::from_utf8(peer)
        .ok()
        .and_then(|p| p.parse::<IpAddr>().ok())
    else {
        return;
    };
    let forwarded: Vec<&[u8]> = lines.collect();
    let policy = AccessPolicy {
        trusted_proxies,
        ..AccessPolicy::default()
    };
    let got = policy.client_ip(peer, forwarded.iter().copied());
    assert_eq!(got, expected(&policy, peer, &forwarded), "{forwarded:?}");
    if let Ok(ip) = got {
        assert!(
            ip == peer && (forwarded.is_empty() || !trusted(&policy, peer))
                || in_header(ip, &forwarded),
            "{ip} is neither the untrusted peer nor in the header"
        );
    }
});

fn expected(
    policy: &AccessPolicy,
    peer: IpAddr,
    lines: &[&[u8]],
) -> Result<IpAddr, UnreadableForward> {
    if !trusted(policy, peer) {
        return Ok(peer);
    }
    let mut hops = Vec::new();
    for line in lines {
        let readable = line
            .iter()
            .all(|&b| b == b' ' || b == b'\t' || (b'!'..=b'~').contains(&b));
        if !readable {
            return Err(UnreadableForward);
        }
        // Visible ASCII only, so this cannot fail.
        let text = std::str::from_utf8(line).expect("ASCII");
        for entry in text.split(',') {
            let entry = entry.trim_matches([' ', '\t']);
            hops.push(entry.parse::<IpAddr>().map_err(|_| UnreadableForward)?);
        }
    }
    let rightmost_untrusted = hops.iter().rev().find(|ip| !trusted(policy, **ip));
    Ok(*rightmost_untrusted.or(hops.first()).unwrap_or(&peer))
}

/// Trusted, reading an IPv4 address written in IPv6 as the IPv4 address.
fn trusted(policy: &AccessPolicy, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    policy.trusted_proxies.iter().any(|n| n.contains(&ip))
}

fn in_header(ip: IpAddr, lines: &[&[u8]]) -> bool {
    lines.iter().any(|line| {
        String::from_utf8_lossy(line)
            .split(',')
            .any(|e| e.trim().parse::<IpAddr>() == Ok(ip))
    })
}
