//! The registry's own htpasswd door: a file kept equal to the live users,
//! one `user:hash` line each, for a registry that checks Basic credentials
//! itself (`auth: htpasswd: {realm, path}`) and reads the file again when
//! its modification time changes.
//!
//! The file has no expiry column, so this writer removes a line itself: it
//! rewrites the file after every committed change that reaches this
//! instance, at the moment the next credential expires, and every
//! `poll_interval` (which brings in the writes of other instances sharing a
//! MySQL/MariaDB database). A rewrite happens only when the content
//! changes, and always atomically and durably: a temporary file in the same
//! directory, written and synced, renamed over the old one, and the
//! directory synced; the registry never reads a half-written file. A failed
//! write (a full disk, a permission) is logged, counted and retried; it
//! never loses a database change (the database is the truth, the file a
//! view of it) and never holds up the API.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::HtpasswdFileSettings;
use crate::credentials::Credentials;
use crate::htpasswd::{self, HashType};
use crate::metrics::inc;

/// Pause before retrying a failed read or write.
const RETRY: Duration = Duration::from_secs(1);
/// How long after the expiry second the rewrite runs, so that the clock has
/// surely passed it.
const EXPIRY_MARGIN: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdFileError {
    #[error("htpasswd_file.path {path}: its directory {dir} does not exist; create it (writable by the service's user, readable by the registry's), or correct htpasswd_file.path (RUBBER_HTPASSWD_FILE)")]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("htpasswd_file.path {path}: the service cannot write in {dir} ({source}); make the directory writable by the service's user, or correct htpasswd_file.path (RUBBER_HTPASSWD_FILE)")]
    NotWritable {
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("htpasswd_file.group `{0}` is not a group on this host; name an existing group (the registry's) or a numeric group id (RUBBER_HTPASSWD_GROUP)")]
    UnknownGroup(String),
    #[error("htpasswd_file.group `{group}`: the service cannot give its files that group ({source}); add the service's user to the group, or correct htpasswd_file.group (RUBBER_HTPASSWD_GROUP)")]
    GroupNotPermitted {
        group: String,
        source: std::io::Error,
    },
    #[error("htpasswd_file.path {0} is a directory; name a file in it (RUBBER_HTPASSWD_FILE)")]
    IsDirectory(PathBuf),
}

/// The file's place, mode and group, checked at start.
#[derive(Debug, Clone)]
pub struct Target {
    path: PathBuf,
    dir: PathBuf,
    mode: u32,
    gid: Option<u32>,
}

impl Target {
    /// Checks what the configuration cannot: the directory exists and the
    /// service can create files in it, and the group exists.
    pub fn check(settings: &HtpasswdFileSettings) -> Result<Option<Self>, HtpasswdFileError> {
        let Some(path) = settings.path.clone() else {
            return Ok(None);
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("/"))
            .to_owned();
        if !dir.is_dir() {
            return Err(HtpasswdFileError::NoDirectory { path, dir });
        }
        if path.is_dir() {
            return Err(HtpasswdFileError::IsDirectory(path));
        }
        let gid = match settings.group.as_deref() {
            None => None,
            Some(group) => Some(
                group_id(group).ok_or_else(|| HtpasswdFileError::UnknownGroup(group.to_owned()))?,
            ),
        };
        // A crash may have left temporary files, the probe's own among
        // them: gone first, so that none is taken for a directory the
        // service cannot write in.
        remove_stale_temp_files(&path);
        // Permissions alone do not tell (root passes every check): try to
        // create a file there, and to give it the group.
        let probe = temp_path(&path, "probe");
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&probe);
        let file = match created {
            Ok(file) => file,
            Err(source) => return Err(HtpasswdFileError::NotWritable { path, dir, source }),
        };
        let grouped = gid.map(|gid| std::os::unix::fs::fchown(&file, None, Some(gid)));
        drop(file);
        let _ = std::fs::remove_file(&probe);
        if let Some(Err(source)) = grouped {
            return Err(HtpasswdFileError::GroupNotPermitted {
                group: settings.group.clone().unwrap_or_default(),
                source,
            });
        }
        Ok(Some(Self {
            path,
            dir,
            mode: settings.mode.0,
            gid,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file with `content`, atomically and durably.
    pub fn write(&self, content: &[u8]) -> std::io::Result<()> {
        let temp = temp_path(&self.path, &std::process::id().to_string());
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(self.mode)
                .open(&temp)?;
            // The umask may have taken bits the mode asks for.
            file.set_permissions(std::fs::Permissions::from_mode(self.mode))?;
            if let Some(gid) = self.gid {
                std::os::unix::fs::fchown(&file, None, Some(gid))?;
            }
            file.write_all(content)?;
            // The registry reads the file again only when its modification
            // time changes: on a file system with coarse timestamps, two
            // rewrites in one tick would look alike. Make them differ.
            let old = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            if let Some(distinct) = distinct_mtime(old, file.metadata()?.modified()?) {
                file.set_modified(distinct)?;
            }
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }
}

/// The modification time to give a new file whose own is `new`, when it
/// equals the old file's: one second later (a whole second, as some file
/// systems keep no finer time). None when they differ already.
fn distinct_mtime(old: Option<SystemTime>, new: SystemTime) -> Option<SystemTime> {
    (old == Some(new)).then(|| new + Duration::from_secs(1))
}

/// `DIR/.NAME.TAG.tmp`, beside the file, so that the rename stays within
/// one file system.
fn temp_path(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "htpasswd".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{tag}.tmp"))
}

/// Temporary files a crash left behind.
fn remove_stale_temp_files(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix) && file.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The group id of a group name or number.
pub fn group_id(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Some(gid);
    }
    let name = std::ffi::CString::new(group).ok()?;
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; the result, when not
    // null, points at `entry`, whose strings live in `buf`.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some(entry.gr_gid)
}

/// The file's content for these live users: the bcrypt ones, one
/// `user:hash` line each, in name order. Returns the content and how many
/// live users it leaves out for another hash format.
pub fn render(users: &[(String, String)]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(users.len() * 80);
    let mut left_out = 0;
    for (user, hash) in users {
        if htpasswd::detect(hash) != Some(HashType::Bcrypt) || hash.contains(['\n', '\r']) {
            left_out += 1;
            continue;
        }
        out.extend_from_slice(user.as_bytes());
        out.push(b':');
        out.extend_from_slice(hash.as_bytes());
        out.push(b'\n');
    }
    (out, left_out)
}

/// Keeps the file equal to the live users until the task is dropped.
pub async fn run(credentials: Arc<Credentials>, target: Target, poll_interval: Duration) {
    let changes = credentials.changes();
    let metrics = Arc::clone(credentials.metrics());
    let mut written: Option<Vec<u8>> = None;
    let mut warned_left_out = 0;
    loop {
        // Registered before reading, so that a change committed while this
        // pass runs wakes the next one.
        let changed = changes.notified();
        let mut wait = poll_interval;
        match credentials.live_credentials().await {
            Ok(view) => {
                let (content, left_out) = render(&view.users);
                if left_out != warned_left_out {
                    if left_out > 0 {
                        tracing::warn!(
                            path = %target.path().display(),
                            left_out,
                            "live users whose hash is not bcrypt are left out of the htpasswd file: the registry reads only bcrypt"
                        );
                    }
                    warned_left_out = left_out;
                }
                let users = view.users.len() - left_out;
                metrics
                    .htpasswd_users
                    .store(users as u64, Ordering::Relaxed);
                if written.as_deref() != Some(content.as_slice()) {
                    let (writer, bytes) = (target.clone(), content.clone());
                    let result = tokio::task::spawn_blocking(move || writer.write(&bytes))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                    match result {
                        Ok(()) => {
                            inc(&metrics.htpasswd_writes);
                            tracing::debug!(path = %target.path().display(), users, "htpasswd file written");
                            written = Some(content);
                        }
                        Err(e) => {
                            inc(&metrics.htpasswd_write_failures);
                            tracing::error!(path = %target.path().display(), error = %e, "cannot write the htpasswd file; retrying");
                            wait = RETRY;
                        }
                    }
                }
                if let Some(expiry) = view.next_expiry {
                    let millis = expiry
                        .saturating_mul(1000)
                        .saturating_sub(credentials.now_millis())
                        .max(0) as u64;
                    wait = wait.min(Duration::from_millis(millis) + EXPIRY_MARGIN);
                }
            }
            Err(e) => {
                inc(&metrics.htpasswd_write_failures);
                tracing::warn!(error = %e, "cannot read the live users for the htpasswd file; retrying");
                wait = RETRY;
            }
        }
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn settings(path: &Path) -> HtpasswdFileSettings {
        HtpasswdFileSettings {
            path: Some(path.to_owned()),
            poll_interval: 5,
            mode: crate::config::values::FileMode(0o640),
            group: None,
        }
    }

    #[test]
    fn only_bcrypt_lines_in_name_order() {
        let users = vec![
            (
                "a".to_owned(),
                "$2y$04$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXY".to_owned(),
            ),
            ("b".to_owned(), "$apr1$salt$hash".to_owned()),
            (
                "c".to_owned(),
                "$2y$04$zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONMLKJIHGFEDCBA".to_owned(),
            ),
        ];
        let (content, left_out) = render(&users);
        assert_eq!(left_out, 1);
        assert_eq!(
            String::from_utf8(content).unwrap(),
            format!("a:{}\nc:{}\n", users[0].1, users[2].1)
        );
    }

    #[test]
    fn writes_replace_the_file_atomically_with_its_mode_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, "edited:by hand\n").unwrap();
        std::fs::write(temp_path(&path, "999"), "left by a crash").unwrap();
        let mut s = settings(&path);
        s.group = Some("0".into());
        let target = Target::check(&s).unwrap().unwrap();
        assert!(
            !temp_path(&path, "999").exists(),
            "stale temporary files are removed"
        );
        let before = std::fs::metadata(&path).unwrap().ino();
        target.write(b"u:$2y$04$x\n").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_ne!(meta.ino(), before, "a new file renamed over the old");
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert_eq!(meta.gid(), 0);
        assert_eq!(std::fs::read(&path).unwrap(), b"u:$2y$04$x\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }

    #[test]
    fn a_probe_file_left_by_a_crash_does_not_stop_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(temp_path(&path, "probe"), "").unwrap();
        Target::check(&settings(&path))
            .expect("the stale probe is no sign of a directory the service cannot write in")
            .unwrap();
        assert!(!temp_path(&path, "probe").exists());
    }

    #[test]
    fn start_refuses_what_cannot_work_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = Target::check(&settings(&dir.path().join("missing/htpasswd")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not exist") && err.contains("RUBBER_HTPASSWD_FILE"),
            "{err}"
        );
        let err = Target::check(&settings(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a directory"), "{err}");
        let mut s = settings(&dir.path().join("htpasswd"));
        s.group = Some("no-such-group-rr".into());
        let err = Target::check(&s).unwrap_err().to_string();
        assert!(err.contains("not a group"), "{err}");
        assert!(group_id("root") == Some(0));
        let mut off = settings(&dir.path().join("htpasswd"));
        off.path = None;
        assert!(Target::check(&off).unwrap().is_none());
    }

    #[test]
    fn a_rewrite_in_the_same_tick_gets_another_modification_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(distinct_mtime(Some(t), t), Some(t + Duration::from_secs(1)));
        assert_eq!(distinct_mtime(Some(t), t + Duration::from_nanos(1)), None);
        assert_eq!(distinct_mtime(None, t), None, "no old file");
    }

    #[test]
    fn a_group_the_service_cannot_give_is_refused_at_start() {
        // As root every group can be given; as another user, a group the
        // user is not in cannot. Run the check as nobody in a child.
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("htpasswd");
        let mut s = settings(&path);
        s.group = Some("0".into());
        // SAFETY: fork in a test: the child only calls setuid, runs the
        // check and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = unsafe {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    3
                } else {
                    match Target::check(&s) {
                        Err(HtpasswdFileError::GroupNotPermitted { .. }) => 0,
                        _ => 1,
                    }
                }
            };
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "the child ran");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "refused as nobody with group 0"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let target = Target::check(&settings(&path)).unwrap().unwrap();
        target.write(b"old\n").unwrap();
        // The temporary file's name taken by a directory: the write fails
        // before the rename.
        std::fs::create_dir(temp_path(&path, &std::process::id().to_string())).unwrap();
        assert!(target.write(b"new\n").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");
    }
}
