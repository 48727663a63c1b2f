//! System users and groups the tests need: looked up in /etc/passwd and
//! /etc/group, and the account the Apache sample serves as, created as
//! README.md "Deploy behind Apache" creates it when the host lacks it.

use std::process::Command;
use std::sync::OnceLock;

use super::apache::{read_sample, sample_directive};
use super::tools::{find_in_path, tools};

/// The group that owns registry-rubber's SQLite database and that Apache's
/// user joins (README.md "Deploy behind Apache", step 2).
pub const DATABASE_GROUP: &str = "registry-rubber";

/// Accounts other software on a Debian host runs as.
pub const SHARED_ACCOUNTS: [&str; 6] = [
    "www-data",
    "root",
    "nobody",
    "nogroup",
    "daemon",
    DATABASE_GROUP,
];

/// The account the sample's Apache processes serve requests as.
#[derive(Debug)]
pub struct ApacheAccount {
    /// The sample's `User` and `Group`.
    pub user: String,
    pub group: String,
    pub uid: u32,
    pub gid: u32,
    /// The ID of [`DATABASE_GROUP`], one of the user's supplementary groups.
    pub database_gid: u32,
}

/// The user and group named by the sample's `User` and `Group` lines, and
/// [`DATABASE_GROUP`] with that user in it: created on first use if the host
/// lacks them, with the shadow tools' equivalents of the README's
///
///     adduser --system --group --no-create-home --home /nonexistent registry-apache
///     adduser registry-apache registry-rubber
///
/// (a system user with no shell and no home). They are left in place: the
/// next run, or a deployment as the README describes it, finds them as it
/// would have made them.
pub fn apache_account() -> &'static ApacheAccount {
    static ACCOUNT: OnceLock<ApacheAccount> = OnceLock::new();
    ACCOUNT.get_or_init(ensure_apache_account)
}

fn ensure_apache_account() -> ApacheAccount {
    // Root, and the packages, first.
    tools();
    let sample = read_sample();
    let user = sample_directive(&sample, "User")
        .expect("the Apache sample has a `User` line")
        .to_owned();
    let group = sample_directive(&sample, "Group")
        .expect("the Apache sample has a `Group` line")
        .to_owned();
    // Never hand the database's group to an account other software shares.
    for shared in SHARED_ACCOUNTS {
        assert!(
            user != shared && group != shared,
            "the Apache sample serves as {user}:{group}; it must name a user of its own, and the \
             tests will not put {shared} in the group {DATABASE_GROUP}"
        );
    }
    if group_entry(DATABASE_GROUP).is_none() {
        // Another test run may create it at the same moment: the lookup
        // below is what counts.
        run("groupadd", &["--system", DATABASE_GROUP]);
    }
    if user_entry(&user).is_none() {
        let mut args = vec![
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
        ];
        if user == group {
            args.push("--user-group");
        } else {
            if group_entry(&group).is_none() {
                run("groupadd", &["--system", &group]);
            }
            args.extend(["--gid", &group]);
        }
        args.push(&user);
        run("useradd", &args);
    }
    if group_entry(&group).is_none() {
        run("groupadd", &["--system", &group]);
    }
    let in_database_group = |user: &str| {
        group_entry(DATABASE_GROUP).is_some_and(|entry| entry.members.iter().any(|m| m == user))
    };
    if !in_database_group(&user) {
        run("usermod", &["--append", "--groups", DATABASE_GROUP, &user]);
    }
    assert!(
        in_database_group(&user),
        "{user} is not in the group {DATABASE_GROUP} after usermod"
    );
    ApacheAccount {
        uid: user_id(&user),
        gid: group_id(&group),
        database_gid: group_id(DATABASE_GROUP),
        user,
        group,
    }
}

/// Runs one of the shadow tools (Debian package passwd); its failure is
/// judged by the lookups that follow, since a concurrent run may have
/// created the same account first.
fn run(program: &str, args: &[&str]) {
    let path = find_in_path(program)
        .unwrap_or_else(|| panic!("`{program}` not found (Debian package passwd)"));
    let output = Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    if !output.status.success() {
        eprintln!(
            "{program} {args:?} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
}

/// A line of /etc/group.
struct GroupEntry {
    gid: u32,
    members: Vec<String>,
}

fn group_entry(name: &str) -> Option<GroupEntry> {
    let groups = std::fs::read_to_string("/etc/group").expect("read /etc/group");
    groups.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            [group, _, gid, members] if *group == name => Some(GroupEntry {
                gid: gid.parse().ok()?,
                members: members
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            }),
            _ => None,
        }
    })
}

fn user_entry(name: &str) -> Option<u32> {
    let users = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    users.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1))
            .flatten()
            .and_then(|uid| uid.parse().ok())
    })
}

/// The numeric ID of a group, from /etc/group.
pub fn group_id(name: &str) -> u32 {
    group_entry(name)
        .map(|entry| entry.gid)
        .unwrap_or_else(|| panic!("no group {name} in /etc/group"))
}

/// The numeric ID of a user, from /etc/passwd.
pub fn user_id(name: &str) -> u32 {
    user_entry(name).unwrap_or_else(|| panic!("no user {name} in /etc/passwd"))
}
