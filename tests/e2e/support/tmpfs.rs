//! A small filesystem of a test's own.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of its own mounted on a fresh directory, unmounted when dropped.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: PathBuf, size: &str) -> Self {
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("registry-rubber-test")
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed (the test runs as root and needs CAP_SYS_ADMIN): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy: detach it now, the kernel frees it when unused.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
