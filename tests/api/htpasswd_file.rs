//! The registry's htpasswd file, kept by the real application on either
//! backend: the live bcrypt users and nobody else, after every change, at
//! expiry, after another instance's writes, through a failing disk, and the
//! same after a restart.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_rubber::htpasswd::{self, HashType};

use crate::helpers::{
    captured_logs, spawn_app_with, spawn_second_app_with, spawn_with_settings, test_settings,
    TestApp,
};

/// A temporary directory for the file, and the file's path in it.
fn file_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("htpasswd")
}

fn keep_file(s: &mut registry_rubber::config::Settings, path: &Path) {
    s.hash_type = HashType::Bcrypt;
    s.bcrypt_cost = 4;
    s.htpasswd_file.path = Some(path.to_owned());
    s.htpasswd_file.poll_interval = 1;
}

async fn app_keeping(path: &Path) -> TestApp {
    spawn_app_with(|s| keep_file(s, path)).await
}

/// The file's lines, `user:hash`.
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn users(path: &Path) -> Vec<String> {
    lines(path)
        .iter()
        .map(|l| l.split(':').next().unwrap_or_default().to_owned())
        .collect()
}

/// How soon a change must reach the file when the poll interval is 1 s:
/// ten polls, room for a busy shared two-core machine; beyond it the
/// change waited for something else than the next poll.
const POLL_BOUND: Duration = Duration::from_secs(10);

/// Waits until the file's users are `expected`, for at most 30 s (then the
/// keeper hangs).
async fn until_users(path: &Path, expected: &[&str]) -> Duration {
    let started = Instant::now();
    loop {
        if users(path) == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the file holds {:?}, not {expected:?}",
            users(path)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metric(app: &TestApp, series: &str) -> u64 {
    crate::helpers::metric_value(app, series).await
}

#[tokio::test]
async fn the_file_holds_exactly_the_live_users_after_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let app = app_keeping(&path).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "written at start, even empty");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"");
    app.add("ci-b", "File-Pass-1").await;
    app.add("ci-a", "File-Pass-2").await;
    until_users(&path, &["ci-a", "ci-b"]).await;
    for line in lines(&path) {
        let (user, hash) = line.split_once(':').unwrap();
        assert_eq!(app.stored_hash(user).await.as_deref(), Some(hash));
        assert!(hash.starts_with("$2y$04$"), "{line}");
    }
    let (_, hash) = lines(&path)[0]
        .split_once(':')
        .map(|(u, h)| (u.to_owned(), h.to_owned()))
        .unwrap();
    assert!(htpasswd::verify("File-Pass-2", &hash));
    app.post_form("/remove", &[("user", "ci-b")]).await;
    until_users(&path, &["ci-a"]).await;
    // A replaced password reaches the file too.
    app.add("ci-a", "File-Pass-3").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines(&path)
        .first()
        .and_then(|l| l.split_once(':'))
        .is_some_and(|(_, h)| htpasswd::verify("File-Pass-3", h))
    {
        assert!(Instant::now() < deadline, "{:?}", lines(&path));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert!(metric(&app, "rubber_htpasswd_writes_total").await >= 4);
    assert_eq!(metric(&app, "rubber_htpasswd_users").await, 1);
}

#[tokio::test]
async fn an_expired_user_leaves_the_file_without_a_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let app = spawn_app_with(|s| {
        keep_file(s, &path);
        s.sweep_interval = 0;
    })
    .await;
    app.post_form(
        "/add",
        &[("user", "short"), ("passwd", "Short-File-1"), ("ttl", "5")],
    )
    .await;
    app.add("long", "Long-File-1").await;
    until_users(&path, &["long", "short"]).await;
    app.clock.advance(5);
    until_users(&path, &["long"]).await;
    assert_eq!(app.row_count().await, 2, "no sweep: the row is still there");
}

#[tokio::test]
async fn users_of_other_hash_formats_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let app = app_keeping(&path).await;
    app.store_row("legacy", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=")
        .await;
    app.add("modern", "Modern-File-1").await;
    until_users(&path, &["modern"]).await;
}

#[tokio::test]
async fn a_hand_edited_file_is_corrected_at_start_and_a_restart_writes_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let app = app_keeping(&path).await;
    app.add("kept", "Kept-File-1").await;
    until_users(&path, &["kept"]).await;
    let written = std::fs::read(&path).unwrap();
    std::fs::write(
        &path,
        "intruder:$2y$04$xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
    )
    .unwrap();
    // A second service on the same database, as a restarted one starts.
    let mut settings = test_settings(&app.db);
    keep_file(&mut settings, &path);
    let _restarted = spawn_with_settings(settings, Arc::clone(&app.db)).await;
    until_users(&path, &["kept"]).await;
    assert_eq!(std::fs::read(&path).unwrap(), written, "byte for byte");
}

#[tokio::test]
async fn another_instances_writes_reach_the_file_within_the_poll_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let keeper = app_keeping(&path).await;
    let other = spawn_second_app_with(&keeper, |s| {
        s.hash_type = HashType::Bcrypt;
        s.bcrypt_cost = 4;
    })
    .await;
    other.add("elsewhere", "Elsewhere-File-1").await;
    let added = until_users(&path, &["elsewhere"]).await;
    other.post_form("/remove", &[("user", "elsewhere")]).await;
    let removed = until_users(&path, &[]).await;
    assert!(
        added < POLL_BOUND && removed < POLL_BOUND,
        "within the 1 s poll interval, with room for a busy machine: {added:?}, {removed:?}"
    );
}

#[tokio::test]
async fn a_failing_write_is_counted_retried_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let app = app_keeping(&path).await;
    app.add("before", "Before-File-1").await;
    until_users(&path, &["before"]).await;
    // The file's name taken by a directory that is not empty: every rename
    // onto it fails.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("blocker"), "x").unwrap();
    app.add("during", "During-File-1").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&app, "rubber_htpasswd_write_failures_total").await == 0 {
        assert!(Instant::now() < deadline, "no failure counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The API is unaffected meanwhile.
    app.add("also-during", "During-File-2").await;
    std::fs::remove_dir_all(&path).unwrap();
    until_users(&path, &["also-during", "before", "during"]).await;
}

#[test]
fn start_refuses_a_file_the_registry_could_not_use_naming_the_fix() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_registry-rubber"));
        for (k, _) in std::env::vars() {
            if k.starts_with("RUBBER_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let file = dir.path().join("htpasswd");
    let file = file.to_str().unwrap();
    let (code, err) = run(&["check-config"], &[("RUBBER_HTPASSWD_FILE", file)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("htpasswd_file.path")
            && err.contains("bcrypt")
            && err.contains("RUBBER_HASH_TYPE=bcrypt"),
        "{err}"
    );
    let missing = dir.path().join("nowhere/htpasswd");
    let (code, err) = run(
        &["serve"],
        &[
            ("RUBBER_HTPASSWD_FILE", missing.to_str().unwrap()),
            ("RUBBER_HASH_TYPE", "bcrypt"),
            ("RUBBER_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("does not exist") && err.contains("RUBBER_HTPASSWD_FILE"),
        "{err}"
    );
    let (code, err) = run(
        &["check-config"],
        &[
            ("RUBBER_HTPASSWD_MODE", "0666"),
            ("RUBBER_HTPASSWD_FILE", file),
            ("RUBBER_HASH_TYPE", "bcrypt"),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("htpasswd_file.mode"), "{err}");
    assert!(
        !dir.path().join("registry-rubber.sqlite").exists(),
        "nothing created"
    );
}

/// Waits until `series` of /metrics is `expected`, for at most 10 s.
async fn until_metric(app: &TestApp, series: &str, expected: u64) {
    let started = Instant::now();
    loop {
        let value = metric(app, series).await;
        if value == expected {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{series} is {value}, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_file_edited_or_removed_by_hand_is_corrected_within_a_poll() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let app = app_keeping(&path).await;
    // The first pass writes the file with no users; the add is a second
    // write, not one merged into the first.
    until_metric(&app, "rubber_htpasswd_writes_total", 1).await;
    app.add("kept", "Kept-File-2").await;
    until_users(&path, &["kept"]).await;
    let written = std::fs::read(&path).unwrap();

    // Left alone, the file is not written again. (A write is counted just
    // after the file is in place: wait for the add's count first.)
    until_metric(&app, "rubber_htpasswd_writes_total", 2).await;
    let writes = 2;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        metric(&app, "rubber_htpasswd_writes_total").await,
        writes,
        "no rewrite of a file nobody touched"
    );

    // A line appended by hand, no change in the database: gone within the
    // 1 s poll interval (with room for a busy machine).
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(
        &mut file,
        b"intruder:$2y$04$xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
    )
    .unwrap();
    drop(file);
    let corrected = until_users(&path, &["kept"]).await;
    assert!(corrected < POLL_BOUND, "{corrected:?}");
    assert_eq!(std::fs::read(&path).unwrap(), written);

    // Deleted: back within the poll interval.
    std::fs::remove_file(&path).unwrap();
    let restored = until_users(&path, &["kept"]).await;
    assert!(restored < POLL_BOUND, "{restored:?}");
    assert_eq!(std::fs::read(&path).unwrap(), written);

    // Its mode opened to everyone: put back.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::metadata(&path).map_or(0, |m| m.mode() & 0o777) != 0o640 {
        assert!(Instant::now() < deadline, "the mode was not put back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path_text = path.display().to_string();
    app.wait_for_log("the file written again", |e| {
        e.message == "the htpasswd file was removed or changed by something else; written again"
            && e.has(&[("path", &path_text)])
    })
    .await;
}

#[tokio::test]
async fn rows_the_file_cannot_carry_are_left_out_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    let app = app_keeping(&path).await;
    app.add("good", "Good-File-1").await;
    until_users(&path, &["good"]).await;
    let good_hash = app.stored_hash("good").await.unwrap();
    let sqlite = app.db.backend() == "sqlite";

    // Rows another writer stored. Each name or hash carries a marker that
    // must reach neither the file nor the log.
    let db = &app.db;
    db.insert_raw_user(b"smuggled-n1\nintruder", &good_hash, false)
        .await;
    db.insert_raw_user(b"smuggled-n2:x", &good_hash, false)
        .await;
    db.insert_raw_user(b"smuggled-n3\xff", &good_hash, false)
        .await;
    if sqlite {
        // A BLOB name: no lookup by name finds it, Apache's included.
        db.insert_raw_user(b"smuggledblob", &good_hash, true).await;
    }
    let bad_hash = format!("{good_hash}\nsmuggled-h1:{good_hash}");
    db.insert_raw_user(b"oddhash", &bad_hash, false).await;

    // A change through the API: the file follows, with the good users only.
    app.add("later", "Later-File-1").await;
    until_users(&path, &["good", "later"]).await;
    until_metric(&app, "rubber_htpasswd_left_out{reason=\"bad_name\"}", 2).await;
    until_metric(
        &app,
        "rubber_htpasswd_left_out{reason=\"unreadable\"}",
        if sqlite { 2 } else { 1 },
    )
    .await;
    until_metric(&app, "rubber_htpasswd_left_out{reason=\"not_bcrypt\"}", 1).await;
    assert_eq!(metric(&app, "rubber_htpasswd_users").await, 2);

    // Reads keep working: a removal reaches the file.
    app.post_form("/remove", &[("user", "good")]).await;
    until_users(&path, &["later"]).await;
    assert_eq!(
        metric(&app, "rubber_htpasswd_write_failures_total").await,
        0,
        "no read failed on the odd rows"
    );
    let content = std::fs::read(&path).unwrap();
    assert!(
        !String::from_utf8_lossy(&content).contains("smuggled"),
        "{}",
        String::from_utf8_lossy(&content)
    );

    // One warning, with counts only.
    let path_text = path.display().to_string();
    let unreadable = if sqlite { "2" } else { "1" };
    app.wait_for_log("the warning with the counts", |e| {
        e.message
            .starts_with("live users are left out of the htpasswd file:")
            && e.has(&[
                ("path", &path_text),
                ("not_bcrypt", "1"),
                ("bad_name", "2"),
                ("unreadable", unreadable),
            ])
    })
    .await;
    let logs = captured_logs();
    assert!(!logs.contains("smuggled"), "a marker reached the log");
    assert!(!logs.contains(&good_hash[7..]), "a hash reached the log");
}

#[tokio::test]
async fn leftovers_of_a_previous_run_neither_stop_the_start_nor_hold_the_registry_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(&dir);
    // A previous run that crashed left its probe and a temporary file, and
    // a file whose time is ahead of the clock (pushed there to differ from
    // the one before it).
    std::fs::write(dir.path().join(".htpasswd.probe.tmp"), "").unwrap();
    std::fs::write(dir.path().join(".htpasswd.4242.tmp"), "half").unwrap();
    std::fs::write(
        &path,
        "old:$2y$04$xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
    )
    .unwrap();
    let ahead = std::time::SystemTime::now() + Duration::from_secs(30);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(ahead)
        .unwrap();
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();

    let app = app_keeping(&path).await;
    until_users(&path, &[]).await;
    // The registry may have read the old file: the new one's time must
    // differ from it, and from every later one's, so each is later.
    let first = mtime(&path);
    assert!(first > ahead, "{first:?} is not after {ahead:?}");
    app.add("next", "Next-File-1").await;
    until_users(&path, &["next"]).await;
    let second = mtime(&path);
    assert!(second > first, "{second:?} is not after {first:?}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["htpasswd"], "no temporary file left");
}
