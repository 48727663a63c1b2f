//! Every hash format's verify.
//!
//! Input: a format letter (`s` {SHA}, `m` $apr1$, `b` bcrypt, `5`, `6`
//! SHA-crypt; anything else: a stored string taken as it is), 16 salt
//! bytes, then `password\nother\nstored` (bytes, lossily UTF-8).
//!
//! Properties: verify never panics; a hash the crate makes verifies with its
//! password, not with another, and not once any one of its bytes is changed
//! (Apache compares the whole string, so must we); `detect` names its format
//! and `same_work` holds against itself; a password with a NUL byte, or over
//! bcrypt's 72 bytes, is refused by hash and by verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_rubber::fuzzing::hash_with_salt;
use registry_rubber::htpasswd::{detect, same_work, verify, HashType, MIN_BCRYPT_COST};

fuzz_target!(|data: &[u8]| {
    let Some((&format, rest)) = data.split_first() else {
        return;
    };
    let Some((salt, rest)) = rest.split_first_chunk::<16>() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut fields = text.splitn(3, '\n');
    let password = fields.next().unwrap_or_default();
    let other = fields.next().unwrap_or_default();
    let stored = fields.next().unwrap_or_default();

    // Any stored string: no panic, and the cost must stay bounded. Stored
    // hashes carry the work they ask for (up to 999999999 SHA-crypt rounds,
    // bcrypt cost 31): the service only reads hashes it wrote or was given
    // by the operator, so the slow ones are left out here.
    if cheap(stored) {
        let accepted = verify(password, stored);
        if accepted {
            assert!(detect(stored).is_some(), "accepted an unknown format");
            assert!(!password.contains('\0'), "accepted a password with NUL");
            assert_eq!(verify(password, stored), accepted, "not deterministic");
        }
    }

    let kind = match format {
        b's' => HashType::Sha1,
        b'm' => HashType::Md5,
        b'b' => HashType::Bcrypt,
        b'5' => HashType::Sha256,
        b'6' => HashType::Sha512,
        _ => return,
    };
    let hashed = hash_with_salt(kind, password, MIN_BCRYPT_COST, *salt);
    let refused = password.contains('\0')
        || kind
            .max_password_bytes()
            .is_some_and(|max| password.len() > max);
    let Ok(hash) = hashed else {
        assert!(refused, "{kind}: hashing failed for an acceptable password");
        return;
    };
    assert!(!refused, "{kind}: hashed a password it must refuse");
    assert_eq!(detect(&hash), Some(kind));
    assert!(same_work(&hash, &hash));
    assert!(verify(password, &hash), "{kind}: own hash does not verify");
    if other != password {
        assert!(!verify(other, &hash), "{kind}: another password verifies");
    }
    // The whole string counts: one byte changed, anywhere, and it fails.
    if let Some(&replacement) = other.as_bytes().first() {
        let mut changed = hash.clone().into_bytes();
        let at = usize::from(salt[0]) % changed.len();
        changed[at] = replacement;
        if let Ok(changed) = String::from_utf8(changed) {
            if changed != hash && cheap(&changed) {
                assert!(
                    !verify(password, &changed),
                    "{kind}: verifies after byte {at} changed: {changed}"
                );
            }
        }
    }
});

/// Whether checking against `stored` is quick: bcrypt at cost 4 or 5,
/// SHA-crypt at 20000 rounds or fewer.
fn cheap(stored: &str) -> bool {
    match detect(stored) {
        Some(HashType::Bcrypt) => matches!(stored.get(4..7), Some("04$" | "05$")),
        Some(HashType::Sha256 | HashType::Sha512) => match stored[3..].strip_prefix("rounds=") {
            None => true,
            Some(after) => {
                let digits = after.split('$').next().unwrap_or_default();
                digits.len() < 6 && digits.parse::<u32>().is_ok_and(|r| r <= 20_000)
            }
        },
        _ => true,
    }
}
