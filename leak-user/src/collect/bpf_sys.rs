//! The bpf(2) commands aya 0.14 has no API for, with the kernel's own ABI structs from
//! `aya_obj::generated` (the bindings aya itself is built on), not hand-written layouts.
use std::{io, mem};

use aya_obj::generated::{bpf_attr, bpf_cmd};

/// A `bpf_attr` with every byte zero: the kernel rejects attributes with stray bytes set in
/// fields a command does not use.
pub fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a union of plain integer structs; all zero is valid for each.
    unsafe { mem::zeroed() }
}

/// Runs `cmd` on `attr`. The caller guarantees that every pointer in `attr` is valid for what
/// the command does with it, for the duration of the call.
pub fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, fully initialised bpf_attr of the size passed; the pointers
    // inside it are the caller's to vouch for (see above).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            mem::size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
