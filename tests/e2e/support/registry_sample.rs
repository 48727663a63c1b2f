//! The registry's samples as the tests use them: deploy/registry-htpasswd.yml.sample
//! and deploy/registry-token.yml.sample, read at run time and given values
//! for their `${RR_*}` placeholders only, with the same functions as the
//! nginx sample (see [`super::nginx`]).

use std::path::{Path, PathBuf};

pub fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/registry-htpasswd.yml.sample")
}

pub fn read_sample() -> String {
    read(&sample_path())
}

pub fn token_sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/registry-token.yml.sample")
}

pub fn read_token_sample() -> String {
    read(&token_sample_path())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
