//! What the service asks of the host's account database.

/// The group id of a group name or number; None when the host knows no
/// such group.
pub fn group_id(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Some(gid);
    }
    let name = std::ffi::CString::new(group).ok()?;
    // A group with many members needs a larger buffer than most: grow it
    // while the call says it is too small.
    let mut size = 16 * 1024;
    loop {
        let mut entry: libc::group = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; size];
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
        if rc == libc::ERANGE && size < 16 * 1024 * 1024 {
            size *= 4;
            continue;
        }
        return (rc == 0 && !found.is_null()).then_some(entry.gr_gid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_of_groups() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("4242"), Some(4242));
        assert_eq!(group_id("no-such-group-rr"), None);
        assert_eq!(group_id("nul\0byte"), None);
    }
}
