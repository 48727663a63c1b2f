//! Schema migrations, embedded in the binary. Each backend has its own
//! directory under `migrations/` with the same version numbers and names (a
//! test checks it); `{table}` in a file stands for the configured table name
//! (a validated SQL identifier).
//!
//! SQLite runs each file as one batch inside one transaction. MySQL commits
//! every DDL statement by itself, so its runner executes a file's statements
//! one by one, in order (see [`Migration::statements`]), and records the
//! migration after the last; a MySQL file keeps to one DDL statement, plus
//! the DML that must follow it.

/// One migration: its version, its name (the file name without the version
/// and extension), and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// `migration!("dir", version, "0001", "name")` embeds
/// `migrations/dir/0001_name.sql`.
macro_rules! migration {
    ($dir:literal, $version:literal, $padded:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/",
                $dir,
                "/",
                $padded,
                "_",
                $name,
                ".sql"
            )),
        }
    };
}

pub const SQLITE: &[Migration] = &[
    migration!("sqlite", 1, "0001", "original_users"),
    migration!("sqlite", 2, "0002", "text_usernames_created_at"),
    migration!("sqlite", 3, "0003", "expires_at"),
    migration!("sqlite", 4, "0004", "expires_at_index"),
    migration!("sqlite", 5, "0005", "scopes"),
    migration!("sqlite", 6, "0006", "refresh_tokens"),
    migration!("sqlite", 7, "0007", "exact_user_names"),
];

pub const MYSQL: &[Migration] = &[
    migration!("mysql", 1, "0001", "original_users"),
    migration!("mysql", 2, "0002", "text_usernames_created_at"),
    migration!("mysql", 3, "0003", "expires_at"),
    migration!("mysql", 4, "0004", "expires_at_index"),
    migration!("mysql", 5, "0005", "scopes"),
    migration!("mysql", 6, "0006", "refresh_tokens"),
    migration!("mysql", 7, "0007", "exact_user_names"),
];

impl Migration {
    pub fn file_name(&self) -> String {
        format!("{:04}_{}.sql", self.version, self.name)
    }

    /// The SQL with the table name filled in.
    pub fn sql_for(&self, table: &str) -> String {
        self.sql.replace("{table}", table)
    }

    /// The statements of the file, with the table name filled in: comment
    /// lines (`--`) dropped, split at each `;` that ends a line. (No
    /// statement in these files has a `;` at the end of a line inside it.)
    pub fn statements(&self, table: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut current = String::new();
        for line in self.sql_for(table).lines() {
            let trimmed = line.trim();
            if trimmed.starts_with("--") || trimmed.is_empty() {
                continue;
            }
            if !current.is_empty() {
                current.push('\n');
            }
            match trimmed.strip_suffix(';') {
                Some(last) => {
                    current.push_str(last);
                    out.push(std::mem::take(&mut current));
                }
                None => current.push_str(line),
            }
        }
        if !current.trim().is_empty() {
            out.push(current);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(backend: &str) -> Vec<String> {
        let dir = format!("{}/migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        names.sort();
        names
    }

    /// Every file under migrations/<backend> is listed, in order, and nothing
    /// else, for each backend.
    #[test]
    fn embedded_lists_match_the_directories() {
        for (backend, list) in [("sqlite", SQLITE), ("mysql", MYSQL)] {
            let listed: Vec<String> = list.iter().map(Migration::file_name).collect();
            assert_eq!(listed, on_disk(backend), "{backend}");
            for (i, m) in list.iter().enumerate() {
                assert_eq!(m.version, i as i64 + 1, "versions are 1, 2, 3, ...");
            }
        }
        // Nothing but the two backends lives under migrations/.
        let mut dirs: Vec<String> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
        dirs.sort();
        assert_eq!(dirs, ["mysql", "sqlite"]);
    }

    /// Both backends go through the same migrations: same versions, same
    /// names, same order.
    #[test]
    fn the_backends_have_the_same_migrations() {
        let names =
            |list: &[Migration]| list.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(names(SQLITE), names(MYSQL));
        assert_eq!(on_disk("sqlite"), on_disk("mysql"));
    }

    /// MySQL files hold one DDL statement each; only the DML that must go
    /// with an ALTER joins it.
    #[test]
    fn mysql_files_split_into_their_statements() {
        let counts: Vec<usize> = MYSQL.iter().map(|m| m.statements("t").len()).collect();
        assert_eq!(counts, [1, 3, 1, 1, 1, 1, 1]);
        for m in MYSQL {
            let statements = m.statements("users");
            let ddl = statements
                .iter()
                .filter(|s| {
                    let head = s.trim_start().to_ascii_uppercase();
                    head.starts_with("CREATE") || head.starts_with("ALTER")
                })
                .count();
            assert_eq!(ddl, 1, "{}: one DDL statement", m.file_name());
            for s in &statements {
                assert!(!s.contains("{table}") && !s.contains("--"), "{s}");
            }
        }
        let backfill = &MYSQL[1].statements("users")[2];
        assert!(backfill.starts_with("UPDATE `users`"), "{backfill}");
        assert!(
            backfill.contains("{1,19}"),
            "braces other than {{table}} survive"
        );
    }
}
