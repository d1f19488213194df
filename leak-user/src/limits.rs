//! Process resource limits leaktrace adjusts for itself.
use std::io;

/// Raises the soft limit on open descriptors to the hard limit (often 1024 soft for 512 Ki
/// hard): a target with many mapped objects needs more than the default. Returns the soft
/// limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = open_files_limit()?;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: a valid `rlimit` for RLIMIT_NOFILE.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// The soft limit on open descriptors.
pub fn open_files_soft_limit() -> u64 {
    open_files_limit().map_or(1024, |limit| limit.rlim_cur)
}

fn open_files_limit() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid `rlimit` to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_ends_at_the_hard_one() {
        let soft = raise_open_files_limit().expect("raise RLIMIT_NOFILE");
        let limit = open_files_limit().expect("read RLIMIT_NOFILE");
        assert_eq!((soft, limit.rlim_cur), (limit.rlim_max, limit.rlim_max));
        assert_eq!(open_files_soft_limit(), limit.rlim_max);
    }
}
