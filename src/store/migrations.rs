//! Schema migrations, embedded in the binary. Each backend has its own
//! directory under `migrations/` with the same version numbers; `{table}` in a
//! file stands for the configured table name (a validated SQL identifier).

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
];

impl Migration {
    pub fn file_name(&self) -> String {
        format!("{:04}_{}.sql", self.version, self.name)
    }

    /// The SQL with the table name filled in.
    pub fn sql_for(&self, table: &str) -> String {
        self.sql.replace("{table}", table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under migrations/sqlite is listed, in order, and nothing else.
    #[test]
    fn embedded_list_matches_the_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let listed: Vec<String> = SQLITE.iter().map(Migration::file_name).collect();
        assert_eq!(listed, on_disk);
        for (i, m) in SQLITE.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "versions are 1, 2, 3, ...");
        }
    }
}
