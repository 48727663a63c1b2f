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
//! changes, or when the file on disk is no longer the one last written
//! (removed, replaced, edited by hand), and always atomically and durably: a
//! temporary file in the same directory, written and synced, renamed over
//! the old one, and the directory synced; the registry never reads a
//! half-written file. Each new file's modification time is later than that
//! of every file before it, since the registry notices a new file by that
//! time alone. A failed write (a full disk, a permission) is logged, counted
//! and retried; it never loses a database change (the database is the
//! truth, the file a view of it) and never holds up the API.
//!
//! Only what the format can carry is written: a live user whose name breaks
//! the user name rule, whose hash is not a well-formed bcrypt hash, or whose
//! name or hash is not text at all is left out, counted and warned about
//! (never with the hash, nor with a name that is not a valid one).

use std::fs::{File, Metadata, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::config::HtpasswdFileSettings;
use crate::credentials::Credentials;
use crate::domain::Username;
use crate::htpasswd::bcrypt;
use crate::metrics::inc;
use crate::telemetry::RateLimitedLines;

/// Pause before retrying a failed read or write.
const RETRY: Duration = Duration::from_secs(1);
/// How long after the expiry second the rewrite runs, so that the clock has
/// surely passed it.
const EXPIRY_MARGIN: Duration = Duration::from_millis(20);
/// Steps tried, smallest first, to move a new file's modification time past
/// the last one: the first the file system keeps is used (nanoseconds on
/// ext4, XFS, Btrfs and tmpfs; whole seconds on some others; two seconds
/// on FAT), so that the time stays as close to the clock as it can.
const MTIME_STEPS: [Duration; 5] = [
    Duration::from_nanos(1),
    Duration::from_micros(1),
    Duration::from_millis(1),
    Duration::from_secs(1),
    Duration::from_secs(2),
];
/// The warning about users left out of the file.
static LEFT_OUT_LINES: RateLimitedLines = RateLimitedLines::new();

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
                crate::host::group_id(group)
                    .ok_or_else(|| HtpasswdFileError::UnknownGroup(group.to_owned()))?,
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

    /// What identifies the file now at the path (a symbolic link put there
    /// is not the file written, wherever it points).
    fn stamp(&self) -> std::io::Result<Stamp> {
        std::fs::symlink_metadata(&self.path).map(|m| Stamp::of(&m))
    }

    /// Replaces the file with `content`, atomically and durably, with a
    /// modification time later than `last` and than the file it replaces.
    /// Returns what identifies the new file.
    fn write(&self, content: &[u8], last: Option<SystemTime>) -> std::io::Result<Stamp> {
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
            // time differs from the one it last saw: the new file's must
            // differ from every earlier one's, which a time later than all
            // of them ensures, however coarse the file system's timestamps.
            let replaced = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok()
                .filter(|t| believable(*t, &self.path));
            advance_mtime(file.metadata()?.modified()?, last.max(replaced), |t| {
                file.set_modified(t)?;
                file.metadata()?.modified()
            })?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)?;
            // After the rename, which changes the file's ctime.
            let stamp = Stamp::of(&file.metadata()?);
            File::open(&self.dir)?.sync_all()?;
            Ok(stamp)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }
}

/// What identifies a file as written: another file renamed over it, an edit
/// in place, a change of its mode or owner, or its removal, all change one
/// of these (the ctime, which no one can set, catches an edit whose writer
/// put the old modification time back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    modified: Option<SystemTime>,
    ctime: (i64, i64),
    mode: u32,
    owner: (u32, u32),
}

impl Stamp {
    fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            modified: meta.modified().ok(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mode: meta.mode(),
            owner: (meta.uid(), meta.gid()),
        }
    }
}

/// Gives a new file whose modification time is `current` one later than
/// `floor` (the latest the registry may have seen), when it is not already:
/// `floor` plus the smallest of [`MTIME_STEPS`] that the file system keeps.
/// `set` sets the time and returns the one the file system kept. Returns
/// the file's time.
fn advance_mtime(
    current: SystemTime,
    floor: Option<SystemTime>,
    mut set: impl FnMut(SystemTime) -> std::io::Result<SystemTime>,
) -> std::io::Result<SystemTime> {
    let Some(floor) = floor else {
        return Ok(current);
    };
    let mut current = current;
    for step in MTIME_STEPS {
        if current > floor {
            break;
        }
        current = set(floor + step)?;
    }
    if current <= floor {
        // The file system keeps no later time (the floor is at its
        // largest): the registry would never notice this file.
        return Err(std::io::Error::other(
            "the file system keeps no modification time later than the last file's; the registry would not read the new file",
        ));
    }
    Ok(current)
}

/// How far ahead of the clock a modification time found on disk may be and
/// still be taken for one the registry saw (a coarse file system's rewrites
/// run ahead by a second each, at most a few hours in the worst burst).
const BELIEVABLE_AHEAD: Duration = Duration::from_secs(24 * 3600);

/// Whether a modification time found on `path` is one to stay later than:
/// not one far in the future, set by hand or by a clock gone wrong, which
/// would pin every later file at the file system's largest time.
fn believable(t: SystemTime, path: &Path) -> bool {
    let ok = t <= SystemTime::now() + BELIEVABLE_AHEAD;
    if !ok {
        tracing::warn!(
            path = %path.display(),
            "the htpasswd file's modification time is more than a day ahead of the clock; new files get the clock's time instead"
        );
    }
    ok
}

/// Keeps the file at one path: what this process last wrote there, to
/// write it again when the file on disk is no longer that one, and the
/// latest modification time it gave a file, so that each new one's is
/// later.
pub struct Keeper {
    target: Target,
    kept: Option<(Vec<u8>, Stamp)>,
    last_mtime: Option<SystemTime>,
}

/// What [`Keeper::keep`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// The file on disk is the one last written, with this content.
    Unchanged,
    /// The content changed (or nothing was written yet): written.
    Written,
    /// The content is the same, but the file on disk is not the one last
    /// written (removed, replaced, edited, its mode changed): written again.
    Restored,
}

impl Keeper {
    pub fn new(target: Target) -> Self {
        // The registry may have read the file found here already.
        let last_mtime = std::fs::metadata(&target.path)
            .and_then(|m| m.modified())
            .ok()
            .filter(|t| believable(*t, &target.path));
        Self {
            target,
            kept: None,
            last_mtime,
        }
    }

    /// Makes the file hold `content`, writing it when it differs from what
    /// was last written or when the file on disk is not the one written.
    pub fn keep(&mut self, content: &[u8]) -> std::io::Result<Kept> {
        let outcome = match &self.kept {
            Some((kept, stamp)) if kept.as_slice() == content => {
                if self.target.stamp().ok().as_ref() == Some(stamp) {
                    return Ok(Kept::Unchanged);
                }
                Kept::Restored
            }
            _ => Kept::Written,
        };
        let stamp = self.target.write(content, self.last_mtime)?;
        self.last_mtime = self.last_mtime.max(stamp.modified);
        self.kept = Some((content.to_vec(), stamp));
        Ok(outcome)
    }
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

/// Live users left out of the file, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// A hash that is not a well-formed bcrypt hash: the registry reads
    /// only bcrypt (users added with another hash type, or a hash that is
    /// not one line).
    pub not_bcrypt: usize,
    /// A name outside the user name rule (a newline or `:` in it would
    /// break the file's lines for every user).
    pub bad_name: usize,
    /// A name or hash that is not UTF-8 text in the database.
    pub unreadable: usize,
}

impl LeftOut {
    fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// The file's content for these live users: one `user:hash` line each, in
/// name order, for each user with a valid name (the rule the API applies)
/// and a well-formed bcrypt hash. Returns the content, how many lines it
/// holds, and what it leaves out.
pub fn render(users: &[(String, String)]) -> (Vec<u8>, usize, LeftOut) {
    let mut out = Vec::with_capacity(users.len() * 80);
    let mut lines = 0;
    let mut left_out = LeftOut::default();
    for (user, hash) in users {
        if Username::parse(user).is_err() {
            left_out.bad_name += 1;
            continue;
        }
        if !bcrypt::is_well_formed(hash) {
            left_out.not_bcrypt += 1;
            continue;
        }
        out.extend_from_slice(user.as_bytes());
        out.push(b':');
        out.extend_from_slice(hash.as_bytes());
        out.push(b'\n');
        lines += 1;
    }
    (out, lines, left_out)
}

/// Keeps the file equal to the live users until the task is dropped.
pub async fn run(credentials: Arc<Credentials>, target: Target, poll_interval: Duration) {
    let changes = credentials.changes();
    let metrics = Arc::clone(credentials.metrics());
    let path = target.path().to_owned();
    let keeper = Arc::new(Mutex::new(Keeper::new(target)));
    // What the last warning said; a new one is due when this changes.
    let mut warned = LeftOut::default();
    loop {
        // Registered before reading, so that a change committed while this
        // pass runs wakes the next one.
        let changed = changes.notified();
        let mut wait = poll_interval;
        match credentials.live_credentials().await {
            Ok(view) => {
                let (content, users, mut left_out) = render(&view.users);
                left_out.unreadable = view.unreadable;
                for (gauge, n) in [
                    (&metrics.htpasswd_left_out_not_bcrypt, left_out.not_bcrypt),
                    (&metrics.htpasswd_left_out_bad_name, left_out.bad_name),
                    (&metrics.htpasswd_left_out_unreadable, left_out.unreadable),
                ] {
                    gauge.store(n as u64, Ordering::Relaxed);
                }
                if left_out != warned {
                    // Counts only: a name that breaks the rule may hold
                    // anything, and a hash is never logged. Until a line
                    // gets through the limit, each pass tries again.
                    if !left_out.any() {
                        warned = left_out;
                    } else if let Some(suppressed) = LEFT_OUT_LINES.admit() {
                        tracing::warn!(
                            path = %path.display(),
                            not_bcrypt = left_out.not_bcrypt,
                            bad_name = left_out.bad_name,
                            unreadable = left_out.unreadable,
                            suppressed,
                            "live users are left out of the htpasswd file: not_bcrypt have a hash the registry cannot read (it reads only bcrypt), bad_name a name outside the user name rule, unreadable a name or hash that is not UTF-8 text"
                        );
                        warned = left_out;
                    }
                }
                metrics
                    .htpasswd_users
                    .store(users as u64, Ordering::Relaxed);
                let keeper = Arc::clone(&keeper);
                let span = tracing::Span::current();
                let result = tokio::task::spawn_blocking(move || {
                    let _entered = span.enter();
                    keeper
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .keep(&content)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                match result {
                    Ok(Kept::Unchanged) => {}
                    Ok(Kept::Written) => {
                        inc(&metrics.htpasswd_writes);
                        tracing::debug!(path = %path.display(), users, "htpasswd file written");
                    }
                    Ok(Kept::Restored) => {
                        inc(&metrics.htpasswd_writes);
                        tracing::warn!(path = %path.display(), users, "the htpasswd file was removed or changed by something else; written again");
                    }
                    Err(e) => {
                        inc(&metrics.htpasswd_write_failures);
                        tracing::error!(path = %path.display(), error = %e, "cannot write the htpasswd file; retrying");
                        wait = RETRY;
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

    fn settings(path: &Path) -> HtpasswdFileSettings {
        HtpasswdFileSettings {
            path: Some(path.to_owned()),
            poll_interval: 5,
            mode: crate::config::values::FileMode(0o640),
            group: None,
        }
    }

    /// A well-formed bcrypt hash (it verifies no password, which does not
    /// matter here).
    fn hash(c: char) -> String {
        format!("$2y$04${}", c.to_string().repeat(53))
    }

    fn user(name: &str, hash: &str) -> (String, String) {
        (name.to_owned(), hash.to_owned())
    }

    fn mtime(path: &Path) -> SystemTime {
        std::fs::metadata(path).unwrap().modified().unwrap()
    }

    fn set_mtime(path: &Path, t: SystemTime) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn only_bcrypt_lines_in_name_order() {
        let users = vec![
            user("a", &hash('a')),
            user("b", "$apr1$salt$hash"),
            user("c", &hash('c')),
        ];
        let (content, lines, left_out) = render(&users);
        assert_eq!(lines, 2);
        assert_eq!(
            left_out,
            LeftOut {
                not_bcrypt: 1,
                ..LeftOut::default()
            }
        );
        assert_eq!(
            String::from_utf8(content).unwrap(),
            format!("a:{}\nc:{}\n", users[0].1, users[2].1)
        );
    }

    #[test]
    fn names_and_hashes_the_format_cannot_carry_are_left_out() {
        let good = hash('g');
        let users = vec![
            user("ok", &good),
            // Names another writer stored: each would add a line, split one,
            // or be read as another user.
            user("evil\nintruder", &good),
            user("evil\r", &good),
            user("a:b", &good),
            user("sp ace", &good),
            user("", &good),
            user("ünï", &good),
            user(&"x".repeat(129), &good),
            // Hashes that claim bcrypt and are not one well-formed line.
            user("h1", &format!("{good}\nintruder:{good}")),
            user("h2", &format!("{}:x", &good[..58])),
            user("h3", &good[..59]),
            user("h4", &format!("{good} ")),
            user("h5", ""),
        ];
        let (content, lines, left_out) = render(&users);
        assert_eq!(String::from_utf8(content).unwrap(), format!("ok:{good}\n"));
        assert_eq!(lines, 1);
        assert_eq!(
            left_out,
            LeftOut {
                not_bcrypt: 5,
                bad_name: 7,
                unreadable: 0,
            }
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
        target.write(b"u:$2y$04$x\n", None).unwrap();
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
        let mut off = settings(&dir.path().join("htpasswd"));
        off.path = None;
        assert!(Target::check(&off).unwrap().is_none());
    }

    /// A file system that keeps times to `tick`, as [`advance_mtime`]'s
    /// `set` sees it.
    fn coarse(tick: Duration) -> impl Fn(SystemTime) -> SystemTime {
        move |t| {
            let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
            let ticks = since.as_nanos() / tick.as_nanos();
            SystemTime::UNIX_EPOCH + Duration::from_nanos((ticks * tick.as_nanos()) as u64)
        }
    }

    /// The times of files written one after the other, each given by the
    /// file system as `natural`, on a file system keeping `tick`.
    fn successive_mtimes(natural: &[SystemTime], tick: Duration) -> Vec<SystemTime> {
        let keep = coarse(tick);
        let mut last = None;
        natural
            .iter()
            .map(|&n| {
                let t = advance_mtime(keep(n), last, |t| Ok(keep(t))).unwrap();
                last = Some(t);
                t
            })
            .collect()
    }

    #[test]
    fn successive_files_get_strictly_increasing_modification_times() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // A, B and C written within one tick of a file system that keeps
        // whole seconds: B is pushed a second ahead, and C, whose own time
        // equals A's, must pass B's, or a registry that read A, then saw B
        // and C's time equal A's, would keep serving A.
        let within_a_second = [
            t,
            t + Duration::from_millis(300),
            t + Duration::from_millis(600),
        ];
        for (tick, expected) in [
            (
                Duration::from_secs(1),
                [t, t + Duration::from_secs(1), t + Duration::from_secs(2)],
            ),
            (
                Duration::from_secs(2),
                [t, t + Duration::from_secs(2), t + Duration::from_secs(4)],
            ),
            // Nanoseconds kept: the smallest step, near the clock.
            (
                Duration::from_nanos(1),
                [
                    t,
                    t + Duration::from_millis(300),
                    t + Duration::from_millis(600),
                ],
            ),
        ] {
            assert_eq!(
                successive_mtimes(&within_a_second, tick),
                expected,
                "{tick:?}"
            );
        }
        // The timer tick of ext4 on older kernels (4 ms), files times kept to
        // the nanosecond: a step of a nanosecond is enough.
        let same_tick = [t, t, t];
        assert_eq!(
            successive_mtimes(&same_tick, Duration::from_nanos(1)),
            [t, t + Duration::from_nanos(1), t + Duration::from_nanos(2)]
        );
        // A clock set back: still later than the last.
        let back = [t, t - Duration::from_secs(60)];
        assert_eq!(
            successive_mtimes(&back, Duration::from_nanos(1)),
            [t, t + Duration::from_nanos(1)]
        );
        assert_eq!(
            advance_mtime(t, None, |_| unreachable!()).unwrap(),
            t,
            "nothing before: the file's own time"
        );
    }

    #[test]
    fn a_time_that_cannot_advance_fails_the_write() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // A file system pinned at its largest time keeps whatever is asked.
        let err = advance_mtime(t, Some(t), |_| Ok(t)).unwrap_err();
        assert!(
            err.to_string().contains("no modification time later"),
            "{err}"
        );
    }

    #[test]
    fn a_time_far_ahead_of_the_clock_is_not_kept_ahead_of() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let target = Target::check(&settings(&path)).unwrap().unwrap();
        let mut keeper = Keeper::new(target);
        keeper.keep(b"a:x\n").unwrap();
        // Someone sets the file a century ahead: the next file is not
        // pushed past it, but gets the clock's time (which differs, so the
        // registry reads it).
        let far = SystemTime::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        set_mtime(&path, far);
        let fresh = Keeper::new(Target::check(&settings(&path)).unwrap().unwrap());
        assert_eq!(fresh.last_mtime, None);
        keeper.keep(b"b:x\n").unwrap();
        let now = mtime(&path);
        assert!(
            now < far && now <= SystemTime::now() + Duration::from_secs(60),
            "{now:?}"
        );
    }

    #[test]
    fn real_files_get_times_later_than_every_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        // A file found at start, its time ahead of the clock (as a previous
        // run on a coarse file system may leave it).
        std::fs::write(&path, "").unwrap();
        let asked = SystemTime::now() + Duration::from_secs(100);
        set_mtime(&path, asked);
        let ahead = mtime(&path);
        // Whether the file system (TMPDIR's) keeps nanoseconds.
        let fine = ahead == asked;
        let mut keeper = Keeper::new(Target::check(&settings(&path)).unwrap().unwrap());
        // Unlinked before the first write: only the time taken at start
        // knows what the registry may have seen.
        std::fs::remove_file(&path).unwrap();
        let mut times = vec![ahead];
        for content in ["a:1\n", "b:2\n", "c:3\n"] {
            assert_eq!(keeper.keep(content.as_bytes()).unwrap(), Kept::Written);
            times.push(mtime(&path));
        }
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "strictly increasing: {times:?}"
        );
        if fine {
            assert!(
                times[3] < ahead + Duration::from_secs(1),
                "the smallest step the file system keeps, not whole seconds: {times:?}"
            );
        }
        // The file replaced behind the keeper's back by one with an older
        // time (a backup restored): the next is later than the last written.
        let last = times[3];
        std::fs::write(&path, "restored\n").unwrap();
        set_mtime(&path, SystemTime::now() - Duration::from_secs(3600));
        assert_eq!(keeper.keep(b"d:4\n").unwrap(), Kept::Written);
        assert!(mtime(&path) > last);
    }

    #[test]
    fn a_file_changed_or_removed_behind_the_keeper_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let mut keeper = Keeper::new(Target::check(&settings(&path)).unwrap().unwrap());
        let content = b"u:x\n";
        assert_eq!(keeper.keep(content).unwrap(), Kept::Written);
        assert_eq!(keeper.keep(content).unwrap(), Kept::Unchanged);
        assert_eq!(keeper.keep(content).unwrap(), Kept::Unchanged);

        // A line appended in place.
        let mut file = File::options().append(true).open(&path).unwrap();
        file.write_all(b"intruder:y\n").unwrap();
        drop(file);
        assert_eq!(keeper.keep(content).unwrap(), Kept::Restored);
        assert_eq!(std::fs::read(&path).unwrap(), content);
        assert_eq!(keeper.keep(content).unwrap(), Kept::Unchanged);

        // Removed.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(keeper.keep(content).unwrap(), Kept::Restored);
        assert_eq!(std::fs::read(&path).unwrap(), content);

        // Replaced by another file of the same size and time.
        let before = std::fs::metadata(&path).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"v:z\n").unwrap();
        set_mtime(&other, before.modified().unwrap());
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(keeper.keep(content).unwrap(), Kept::Restored);
        assert_eq!(std::fs::read(&path).unwrap(), content);

        // Its mode opened to everyone.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(keeper.keep(content).unwrap(), Kept::Restored);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        assert_eq!(keeper.keep(content).unwrap(), Kept::Unchanged);
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
        target.write(b"old\n", None).unwrap();
        // The temporary file's name taken by a directory: the write fails
        // before the rename.
        std::fs::create_dir(temp_path(&path, &std::process::id().to_string())).unwrap();
        assert!(target.write(b"new\n", None).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old\n");
    }
}
