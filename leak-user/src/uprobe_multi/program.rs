//! A second copy of some of the object's uprobe programs, verified for `uprobe_multi` links or
//! uprobe sessions.
//!
//! aya 0.14 loads uprobe programs without an expected attach type, and the kernel accepts a
//! `uprobe_multi` link only for a program loaded with `BPF_TRACE_UPROBE_MULTI`. So the object is
//! parsed again with aya-obj (aya's own object model), its map references are resolved to the
//! maps aya already created (the same maps, so both copies share every table and the globals
//! aya patched in), and the programs are loaded here with that attach type.
use std::{
    collections::{HashMap, HashSet},
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use aya::{Ebpf, maps::Map, maps::MapData};
use aya_obj::{
    Object,
    generated::{bpf_attach_type, bpf_cmd, bpf_prog_type},
};

use super::{LinkKind, MultiError, session};
use crate::collect::bpf_sys;

/// Bytes of verifier log kept when a program is refused (its end says why).
const VERIFIER_LOG_BYTES: usize = 1 << 20;
/// Bytes for the verifier's statistics of an accepted program (a few lines).
const STATS_LOG_BYTES: usize = 1 << 16;

/// Loads `wanted` from `object_bytes` as programs for `uprobe_multi` links or uprobe sessions,
/// using `ebpf`'s maps.
pub fn load(
    object_bytes: &[u8],
    ebpf: &Ebpf,
    wanted: &[(&'static str, LinkKind)],
) -> Result<HashMap<&'static str, OwnedFd>, MultiError> {
    let mut object = Object::parse(object_bytes).map_err(|e| MultiError::Object(e.to_string()))?;
    // Owned for the duration of the loads: the programs keep their own reference after.
    let btf = load_btf(&mut object)?;
    relocate(&mut object, ebpf)?;
    let session_kfunc = match wanted.iter().any(|(_, kind)| *kind == LinkKind::Session) {
        true => Some(session::kfunc_id()?),
        false => None,
    };
    let mut programs = HashMap::new();
    for &(name, kind) in wanted {
        let attach_type = match kind {
            LinkKind::Multi => bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32,
            LinkKind::Session => session::ATTACH_TYPE,
        };
        let fd = load_program(
            &object,
            name,
            attach_type,
            session_kfunc.filter(|_| kind == LinkKind::Session),
            btf.as_ref().map(|fd| fd.as_raw_fd()),
        )?;
        programs.insert(name, fd);
    }
    Ok(programs)
}

/// The object's BTF, in the kernel: bpf_loop callbacks are checked against its func_info.
fn load_btf(object: &mut Object) -> Result<Option<OwnedFd>, MultiError> {
    let Some(features) = aya::features().btf() else {
        return Ok(None);
    };
    let btf = object
        .fixup_and_sanitize_btf(features)
        .map_err(|e| MultiError::Object(e.to_string()))?;
    let Some(btf) = btf else {
        return Ok(None);
    };
    let bytes = btf.to_bytes();
    let mut attr = bpf_sys::zeroed_attr();
    // `bytes` outlives the call below.
    attr.__bindgen_anon_7.btf = bytes.as_ptr() as u64;
    attr.__bindgen_anon_7.btf_size = len_u32(bytes.len())?;
    let fd = bpf_sys::bpf(bpf_cmd::BPF_BTF_LOAD, &mut attr).map_err(MultiError::Btf)?;
    Ok(Some(owned_fd(fd)))
}

/// Map references become `ebpf`'s map descriptors; calls between functions are linked.
fn relocate(object: &mut Object, ebpf: &Ebpf) -> Result<(), MultiError> {
    if object.has_btf_relocations() {
        return Err(MultiError::Object(
            "the object has CO-RE relocations, which this loader does not apply".into(),
        ));
    }
    let text_sections: HashSet<usize> = object.functions.keys().map(|(s, _)| *s).collect();
    let maps: Vec<(String, aya_obj::Map)> = object.maps.drain().collect();
    let mut resolved: Vec<(&str, RawFd, &aya_obj::Map)> = Vec::with_capacity(maps.len());
    for (name, map) in &maps {
        let data = ebpf
            .map(name)
            .and_then(map_data)
            .ok_or_else(|| MultiError::MissingMap(name.clone()))?;
        resolved.push((name, data.fd().as_fd().as_raw_fd(), map));
    }
    object
        .relocate_maps(resolved.into_iter(), &text_sections)
        .map_err(|e| MultiError::Object(e.to_string()))?;
    object
        .relocate_calls(&text_sections)
        .map_err(|e| MultiError::Object(e.to_string()))?;
    object.sanitize_functions(aya::features());
    Ok(())
}

/// The descriptor-holding part of the kinds of map the object declares.
fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(data)
        | Map::HashMap(data)
        | Map::LruHashMap(data)
        | Map::PerCpuArray(data)
        | Map::PerCpuHashMap(data)
        | Map::RingBuf(data) => Some(data),
        _ => None,
    }
}

/// Loads program `name` for links of `attach_type`, its session kfunc calls linked to
/// `session_kfunc` if given.
fn load_program(
    object: &Object,
    name: &str,
    attach_type: u32,
    session_kfunc: Option<u32>,
    btf: Option<RawFd>,
) -> Result<OwnedFd, MultiError> {
    let program = object
        .programs
        .get(name)
        .ok_or_else(|| MultiError::MissingProgram(name.to_owned()))?;
    let function = object
        .functions
        .get(&program.function_key())
        .ok_or_else(|| MultiError::MissingProgram(name.to_owned()))?;
    let mut instructions = function.instructions.clone();
    if let Some(kfunc) = session_kfunc
        && session::link_kfunc_calls(&mut instructions, kfunc) == 0
    {
        return Err(MultiError::Object(format!(
            "{name} calls no session kfunc: not a session program"
        )));
    }
    let func_info = function.func_info.func_info_bytes();
    let line_info = function.line_info.line_info_bytes();
    let mut attr = bpf_sys::zeroed_attr();
    // SAFETY: writing plain integers into the union's PROG_LOAD member; every pointer stored
    // (instructions, license, infos) outlives the calls below.
    unsafe {
        let load = &mut attr.__bindgen_anon_3;
        load.prog_type = bpf_prog_type::BPF_PROG_TYPE_KPROBE as u32;
        load.expected_attach_type = attach_type;
        load.insns = instructions.as_ptr() as u64;
        load.insn_cnt = len_u32(instructions.len())?;
        load.license = program.license.as_ptr() as u64;
        for (slot, byte) in load.prog_name.iter_mut().zip(name.bytes().take(15)) {
            *slot = byte as libc::c_char;
        }
        if let Some(btf) = btf {
            load.prog_btf_fd = btf as u32;
            if function.func_info.num_info > 0 {
                load.func_info_rec_size = len_u32(function.func_info_rec_size)?;
                load.func_info = func_info.as_ptr() as u64;
                load.func_info_cnt = function.func_info.num_info;
            }
            if function.line_info.num_info > 0 {
                load.line_info_rec_size = len_u32(function.line_info_rec_size)?;
                load.line_info = line_info.as_ptr() as u64;
                load.line_info_cnt = function.line_info.num_info;
            }
        }
    }
    // The verifier's statistics only (log level 4): how much it walked, for `RUST_LOG=debug`.
    let mut stats = vec![0u8; STATS_LOG_BYTES];
    // SAFETY: as above; `stats` outlives the call.
    unsafe {
        let load = &mut attr.__bindgen_anon_3;
        load.log_level = 4;
        load.log_buf = stats.as_mut_ptr() as u64;
        load.log_size = len_u32(stats.len())?;
    }
    let started = std::time::Instant::now();
    let source = match bpf_sys::bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => {
            log::debug!(
                "{name} verified in {:.1} ms: {}",
                started.elapsed().as_secs_f64() * 1e3,
                log_tail(&stats).replace('\n', "; ")
            );
            return Ok(owned_fd(fd));
        }
        Err(source) => {
            log::debug!("{name} refused: {source}; {}", log_tail(&stats));
            source
        }
    };
    // Refused: once more with the verifier's log, for the message.
    let mut log = vec![0u8; VERIFIER_LOG_BYTES];
    // SAFETY: as above; `log` outlives the call.
    unsafe {
        let load = &mut attr.__bindgen_anon_3;
        load.log_level = 1;
        load.log_buf = log.as_mut_ptr() as u64;
        load.log_size = len_u32(log.len())?;
    }
    let log = match bpf_sys::bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
        // Accepted the second time (a transient failure): keep it.
        Ok(fd) => return Ok(owned_fd(fd)),
        Err(_) => log_tail(&log),
    };
    Err(MultiError::Verifier {
        program: name.to_owned(),
        source,
        log,
    })
}

/// The last lines of a verifier log: where it stopped and why.
fn log_tail(log: &[u8]) -> String {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

fn len_u32(len: usize) -> Result<u32, MultiError> {
    u32::try_from(len).map_err(|_| MultiError::Object("a section larger than 4 GiB".into()))
}

/// A descriptor a bpf(2) command just returned.
pub(super) fn owned_fd(fd: i64) -> OwnedFd {
    // SAFETY: the kernel returned this descriptor to us and nothing else owns it. Descriptors
    // fit in an i32.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// `io::Error` for a refused bpf(2) command, kept apart to tell "unsupported" from failure.
pub(super) fn is_unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::E2BIG)
    )
}
