//! What the fuzz targets in `fuzz/` need beyond the public API: hashing
//! with a salt they choose, so that a run is reproducible, and the names of
//! the parameters the admin API reads. Not for other uses.

use crate::htpasswd::{HashError, HashType};

/// [`crate::htpasswd::hash`] with the salt given instead of drawn.
pub fn hash_with_salt(
    kind: HashType,
    password: &str,
    bcrypt_cost: u32,
    salt: [u8; 16],
) -> Result<String, HashError> {
    crate::htpasswd::hash_with_salt(kind, password, bcrypt_cost, salt)
}

/// The parameter names the admin API reads; others are dropped.
pub fn known_params() -> &'static [&'static str] {
    crate::doors::api::params::KNOWN
}
