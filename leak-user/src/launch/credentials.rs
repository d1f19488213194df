//! `run --user USER[:GROUP]`: whom the command runs as, looked up before the fork (the lookups
//! are not async-signal-safe), and the environment it gets, as `sudo -u` gives it.
use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CredentialsError {
    #[error("--user: no such user: {0}")]
    NoUser(String),
    #[error("--user: no such group: {0}")]
    NoGroup(String),
    #[error("--user: {0:?} contains a NUL byte")]
    NulByte(String),
}

/// The identity the command takes between fork and exec.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub user: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups: the user's, as `initgroups` would set them.
    pub groups: Vec<libc::gid_t>,
    home: OsString,
    shell: OsString,
}

/// What the passwd database says about one user.
struct PasswdEntry {
    name: String,
    uid: libc::uid_t,
    gid: libc::gid_t,
    home: OsString,
    shell: OsString,
}

impl RunAs {
    /// `USER[:GROUP]`, each a name or a number. GROUP replaces the user's primary group.
    pub fn lookup(spec: &str) -> Result<Self, CredentialsError> {
        let (user, group) = match spec.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (spec, None),
        };
        let entry = passwd_entry(user)?.ok_or_else(|| CredentialsError::NoUser(user.into()))?;
        let gid = match group {
            Some(group) => {
                group_id(group)?.ok_or_else(|| CredentialsError::NoGroup(group.into()))?
            }
            None => entry.gid,
        };
        let groups = supplementary_groups(&entry.name, gid)?;
        Ok(RunAs {
            user: entry.name,
            uid: entry.uid,
            gid,
            groups,
            home: entry.home,
            shell: entry.shell,
        })
    }

    /// The command's environment: PATH, TERM, TZ and the locale from ours, HOME, USER, LOGNAME
    /// and SHELL the user's; nothing else (no LD_*, no secrets of the caller's session).
    pub fn environment(&self, ours: impl Iterator<Item = (OsString, OsString)>) -> Vec<CString> {
        let kept = ours.filter(|(name, _)| is_kept(name));
        let own = [
            ("HOME", self.home.clone()),
            ("USER", self.user.clone().into()),
            ("LOGNAME", self.user.clone().into()),
            ("SHELL", self.shell.clone()),
        ]
        .map(|(name, value)| (OsString::from(name), value));
        kept.chain(own)
            .filter_map(|(name, value)| {
                let mut pair = name.into_vec();
                pair.push(b'=');
                pair.extend_from_slice(value.as_bytes());
                CString::new(pair).ok()
            })
            .collect()
    }
}

/// Variables passed through to a command run as another user.
fn is_kept(name: &OsStr) -> bool {
    let name = name.as_bytes();
    matches!(name, b"PATH" | b"TERM" | b"TZ" | b"LANG" | b"LANGUAGE") || name.starts_with(b"LC_")
}

fn c_string(s: &str) -> Result<CString, CredentialsError> {
    CString::new(s).map_err(|_| CredentialsError::NulByte(s.into()))
}

/// The user named `user`, or with that number.
fn passwd_entry(user: &str) -> Result<Option<PasswdEntry>, CredentialsError> {
    let name = c_string(user)?;
    let mut buffer = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain data; the buffer outlives every use of the pointers into it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: valid pointers to our own buffers, with their true sizes.
    unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &mut found,
        );
        if found.is_null()
            && let Ok(uid) = user.parse::<libc::uid_t>()
        {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut found,
            );
        }
    }
    if found.is_null() {
        return Ok(None);
    }
    // SAFETY: getpw*_r filled pwd with NUL-terminated strings inside `buffer`.
    let text = |p: *const libc::c_char| unsafe { CStr::from_ptr(p) }.to_bytes().to_vec();
    Ok(Some(PasswdEntry {
        name: String::from_utf8_lossy(&text(pwd.pw_name)).into_owned(),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        home: OsString::from_vec(text(pwd.pw_dir)),
        shell: OsString::from_vec(text(pwd.pw_shell)),
    }))
}

/// The group named `group`, or that number (which needs no entry, as with `sudo -g`).
fn group_id(group: &str) -> Result<Option<libc::gid_t>, CredentialsError> {
    let name = c_string(group)?;
    let mut buffer = vec![0u8; 64 * 1024];
    // SAFETY: group is plain data.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: valid pointers to our own buffers, with their true sizes.
    unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &mut found,
        );
    }
    if !found.is_null() {
        return Ok(Some(grp.gr_gid));
    }
    Ok(group.parse().ok())
}

/// The user's groups, with `gid` among them.
fn supplementary_groups(
    user: &str,
    gid: libc::gid_t,
) -> Result<Vec<libc::gid_t>, CredentialsError> {
    let name = c_string(user)?;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut count = groups.len() as libc::c_int;
        // SAFETY: `groups` has room for `count` entries.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return Ok(groups);
        }
        // Too small: `count` now holds the number needed.
        groups.resize((count.max(groups.len() as libc::c_int) as usize) * 2, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nobody_by_name_and_number() {
        let by_name = RunAs::lookup("nobody").expect("nobody exists");
        assert_eq!(by_name.uid, 65534);
        let by_number = RunAs::lookup("65534:0").expect("by number");
        assert_eq!(by_number.user, "nobody");
        assert_eq!(by_number.gid, 0);
        assert!(by_number.groups.contains(&0), "{:?}", by_number.groups);
    }

    #[test]
    fn unknown_names_are_errors() {
        let error = RunAs::lookup("no-such-user-here").expect_err("unknown user");
        assert_eq!(error.to_string(), "--user: no such user: no-such-user-here");
        let error = RunAs::lookup("nobody:no-such-group").expect_err("unknown group");
        assert_eq!(error.to_string(), "--user: no such group: no-such-group");
    }

    #[test]
    fn environment_is_reset_like_sudo() {
        let run_as = RunAs::lookup("root").expect("root exists");
        let ours = [
            ("PATH", "/usr/bin:/bin"),
            ("LC_ALL", "C"),
            ("HOME", "/home/caller"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
        ]
        .map(|(n, v)| (OsString::from(n), OsString::from(v)));
        let env: Vec<String> = run_as
            .environment(ours.into_iter())
            .into_iter()
            .map(|c| c.into_string().expect("utf-8"))
            .collect();
        assert_eq!(
            env,
            [
                "PATH=/usr/bin:/bin",
                "LC_ALL=C",
                "HOME=/root",
                "USER=root",
                "LOGNAME=root",
                "SHELL=/bin/bash"
            ]
        );
    }
}
