//! The Apache sample's processes serve as a user of their own,
//! registry-apache, never www-data: the database is writable by its group,
//! and anything else running as www-data on the host could otherwise write
//! credentials. Apache reaches the database through the group
//! registry-rubber alone.

use std::time::Duration;

use crate::support::accounts::apache_account;
use crate::support::apache::sample_directive;
use crate::support::process::poll;
use crate::support::{unique, Creds, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_serves_as_its_own_user_through_the_database_group() {
    let stack = Stack::start();
    let account = apache_account();
    let written = std::fs::read_to_string(stack.dir().join("httpd.conf"))
        .expect("read the written httpd.conf");
    assert_eq!(
        sample_directive(&written, "User"),
        Some("registry-apache"),
        "the sample's own User, not substituted"
    );
    assert_ne!(account.user, "www-data");

    // Apache's children serve the requests. One just forked is still root
    // until it has switched to the User and Group: wait until none is.
    let parent = stack.apache_pid();
    let statuses = poll(Duration::from_secs(15), || {
        let statuses: Vec<(i32, String)> = children_of(parent)
            .into_iter()
            .filter_map(|child| {
                let status = std::fs::read_to_string(format!("/proc/{child}/status")).ok()?;
                Some((child, status))
            })
            .collect();
        let settled = !statuses.is_empty()
            && statuses
                .iter()
                .all(|(_, status)| !ids(status, "Uid:").contains(&0));
        settled.then_some(statuses)
    })
    .unwrap_or_else(|| {
        panic!(
            "Apache (PID {parent}) has no children, or they still run as root after 15 s: {:?}",
            children_of(parent)
        )
    });
    for (child, status) in statuses {
        assert!(
            ids(&status, "Uid:").iter().all(|uid| *uid == account.uid),
            "child {child} of Apache does not run as {} ({}):\n{status}",
            account.user,
            account.uid
        );
        assert!(
            ids(&status, "Gid:").iter().all(|gid| *gid == account.gid),
            "child {child} of Apache does not run with group {}:\n{status}",
            account.group
        );
        assert!(
            ids(&status, "Groups:").contains(&account.database_gid),
            "child {child} of Apache is not in the database's group:\n{status}"
        );
    }

    // Through that group alone, Apache reads (and in WAL mode writes beside)
    // the database.
    let user = unique("own-user");
    let password = unique("pw-");
    stack.add(&user, &password).await;
    let answer = stack.get_registry("/v2/", Some(Creds::new(&user, &password)));
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// The numeric IDs on the line `field` of a /proc/PID/status file.
fn ids(status: &str, field: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|id| id.parse().ok())
        .collect()
}

/// The PIDs whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<i32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}
