//! deploy/registry-htpasswd.yml.sample as the tests use it: read at run
//! time and given values for its `${RR_*}` placeholders only, with the same
//! functions as the nginx sample (see [`super::nginx`]).

use std::path::{Path, PathBuf};

pub fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/registry-htpasswd.yml.sample")
}

pub fn read_sample() -> String {
    let path = sample_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
