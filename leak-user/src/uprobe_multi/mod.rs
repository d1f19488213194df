//! `uprobe_multi` links (Linux 6.6+): one link per program and object for all its probes.
//!
//! Each per-probe link is a perf event whose release waits for an RCU tasks-trace grace period,
//! so detaching a hundred probes took seconds; a multi link's release synchronises once for all
//! of its probes, and attaching it is one system call. Detaching is closing its descriptor.
mod program;
mod session;

use std::{
    collections::HashMap,
    ffi::CString,
    io,
    num::NonZeroU32,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use aya::Ebpf;
use aya_obj::generated::{BPF_F_UPROBE_MULTI_RETURN, bpf_attach_type, bpf_cmd};
use thiserror::Error;

use crate::collect::{bpf_sys, prog_info};

#[derive(Debug, Error)]
pub enum MultiError {
    #[error("this kernel has no uprobe sessions (Linux 6.12+: the bpf_session_is_return kfunc)")]
    NoSessions,
    #[error("cannot read the eBPF object: {0}")]
    Object(String),
    #[error("the eBPF map {0} was not created")]
    MissingMap(String),
    #[error("the eBPF program {0} is missing from the object")]
    MissingProgram(String),
    #[error("cannot load the object's BTF: {0}")]
    Btf(#[source] io::Error),
    #[error("the kernel refused {program} as a uprobe_multi program: {source}\n{log}")]
    Verifier {
        program: String,
        source: io::Error,
        log: String,
    },
    #[error("the program {0} was not loaded for uprobe_multi links")]
    NotLoaded(&'static str),
    #[error("a path with a NUL byte: {0}")]
    Path(String),
    #[error("cannot create a uprobe_multi link for {program} in {path}: {source}")]
    Link {
        program: &'static str,
        path: String,
        source: io::Error,
    },
}

impl MultiError {
    /// The kernel has no uprobe_multi links (before 6.6), or not for these programs: the
    /// per-probe links remain.
    pub fn is_unsupported(&self) -> bool {
        match self {
            Self::Verifier { source, .. } | Self::Link { source, .. } | Self::Btf(source) => {
                program::is_unsupported(source)
            }
            Self::NoSessions => true,
            _ => false,
        }
    }
}

/// What a program is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// `uprobe_multi` links, at entry or at return (Linux 6.6+).
    Multi,
    /// Uprobe sessions: the program runs at entry and, if the entry returned 0, at return
    /// (Linux 6.12+).
    Session,
}

/// Whether a link fires at function entry, at return, or both (a session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Entry,
    Return,
    Session,
}

/// The probes of one link: file offsets in one object, with their attach cookies.
pub struct Probes<'a> {
    /// The object, as this process can open it (`/proc/self/fd/N`).
    pub host_path: &'a Path,
    /// The object as the target names it, for messages.
    pub path: &'a str,
    pub offsets: Vec<u64>,
    pub cookies: Vec<u64>,
}

/// Programs verified for multi links, and the links made with them: dropping it detaches them.
pub struct MultiLinks {
    programs: HashMap<&'static str, OwnedFd>,
    links: Vec<OwnedFd>,
}

impl MultiLinks {
    /// Loads `programs` from `object_bytes` (the object `ebpf` was loaded from), sharing its maps.
    pub fn load(
        object_bytes: &[u8],
        ebpf: &Ebpf,
        programs: &[(&'static str, LinkKind)],
    ) -> Result<Self, MultiError> {
        Ok(Self {
            programs: program::load(object_bytes, ebpf, programs)?,
            links: Vec::new(),
        })
    }

    /// The programs loaded here: aya need not load them.
    pub fn has_program(&self, program: &str) -> bool {
        self.programs.contains_key(program)
    }

    /// Attaches `program` to every probe in `probes`, for process `pid` only.
    pub fn attach(
        &mut self,
        program: &'static str,
        direction: Direction,
        probes: &Probes<'_>,
        pid: NonZeroU32,
    ) -> Result<(), MultiError> {
        let prog_fd = self
            .programs
            .get(program)
            .ok_or(MultiError::NotLoaded(program))?;
        let path = CString::new(probes.host_path.as_os_str().as_bytes())
            .map_err(|_| MultiError::Path(probes.path.to_owned()))?;
        let link_error = |source| MultiError::Link {
            program,
            path: probes.path.to_owned(),
            source,
        };
        let count = u32::try_from(probes.offsets.len())
            .map_err(|_| link_error(io::Error::from(io::ErrorKind::InvalidInput)))?;
        if probes.cookies.len() != probes.offsets.len() {
            return Err(link_error(io::Error::from(io::ErrorKind::InvalidInput)));
        }
        let mut attr = bpf_sys::zeroed_attr();
        // SAFETY: writing plain integers into the union's LINK_CREATE member; the path, offsets
        // and cookies outlive the call below.
        unsafe {
            let create = &mut attr.link_create;
            create.__bindgen_anon_1.prog_fd = prog_fd.as_raw_fd() as u32;
            create.attach_type = match direction {
                Direction::Session => session::ATTACH_TYPE,
                Direction::Entry | Direction::Return => {
                    bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32
                }
            };
            let multi = &mut create.__bindgen_anon_3.uprobe_multi;
            multi.path = path.as_ptr() as u64;
            multi.offsets = probes.offsets.as_ptr() as u64;
            multi.cookies = probes.cookies.as_ptr() as u64;
            multi.cnt = count;
            multi.flags = match direction {
                Direction::Entry | Direction::Session => 0,
                Direction::Return => BPF_F_UPROBE_MULTI_RETURN,
            };
            multi.pid = pid.get();
        }
        let fd = bpf_sys::bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).map_err(link_error)?;
        self.links.push(program::owned_fd(fd));
        Ok(())
    }

    /// The programs loaded here, by name (for their kernel statistics).
    pub fn programs(&self) -> impl Iterator<Item = (&'static str, BorrowedFd<'_>)> {
        self.programs.iter().map(|(&name, fd)| (name, fd.as_fd()))
    }

    /// Runs of these programs the kernel skipped (see `collect::prog_info`), summed.
    pub fn skipped_runs(&self) -> u64 {
        self.programs()
            .filter_map(|(_, fd)| prog_info::stats_of_fd(fd).ok())
            .map(|s| s.recursion_misses)
            .sum()
    }

    /// Links made so far.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }
}

impl Drop for MultiLinks {
    /// Each link's release waits for a grace period (~50 ms here): closed side by side, they
    /// wait for the same one.
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        std::thread::scope(|scope| {
            for link in links {
                if std::thread::Builder::new()
                    .spawn_scoped(scope, move || drop(link))
                    .is_err()
                {
                    // No thread: the link was dropped with the closure, in turn.
                    log::debug!("cannot start a thread to detach a uprobe_multi link");
                }
            }
        });
    }
}
