//! Whole BPF maps in a few system calls: reading a hash map with `BPF_MAP_LOOKUP_BATCH`, where
//! walking keys one by one takes two calls per entry (seconds for a million), and writing array
//! slots with `BPF_MAP_UPDATE_BATCH` (tens of thousands of unwind rows at attach time). aya has
//! no batch API; the syscalls are small and stable (Linux 5.6+).
use std::{
    io, mem,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{Pod, maps::MapData};
use aya_obj::generated::{bpf_attr, bpf_attr__bindgen_ty_3 as BatchAttr, bpf_cmd};

use super::bpf_sys;

/// The kernel's own "not supported" (not the libc EOPNOTSUPP), from map types without batch ops.
const ENOTSUPP: i32 = 524;
/// Entries per call.
const CHUNK: usize = 8192;

/// A `bpf_attr` whose `batch` member is `batch`, the rest zero.
fn batch_attr(batch: BatchAttr) -> bpf_attr {
    let mut attr = bpf_sys::zeroed_attr();
    attr.batch = batch;
    attr
}

/// The zero batch: every field set explicitly by the callers that matter.
fn empty_batch() -> BatchAttr {
    BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: 0,
        values: 0,
        count: 0,
        map_fd: 0,
        elem_flags: 0,
        flags: 0,
    }
}

/// Every (key, value) of a hash map. Errors with `Unsupported` on kernels without batch ops, so
/// the caller can fall back to iteration.
pub fn lookup_all<K: Pod + Default, V: Pod + Default>(map: &MapData) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    lookup_batches::<K, V>(map, 1, |key, values| out.push((key, values[0])))?;
    Ok(out)
}

/// Every key of a per-CPU hash map with its values on each possible CPU, handed to `sink`.
pub fn lookup_all_per_cpu<K: Pod + Default, V: Pod + Default>(
    map: &MapData,
    cpus: usize,
    sink: impl FnMut(K, &[V]),
) -> io::Result<()> {
    // The kernel lays each CPU's value out at 8-byte strides.
    assert_eq!(
        mem::size_of::<V>() % 8,
        0,
        "per-CPU values are 8-byte multiples"
    );
    lookup_batches(map, cpus.max(1), sink)
}

/// The batch loop: each key comes with `per_key` values.
fn lookup_batches<K: Pod + Default, V: Pod + Default>(
    map: &MapData,
    per_key: usize,
    mut sink: impl FnMut(K, &[V]),
) -> io::Result<()> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut keys = vec![K::default(); CHUNK];
    let mut values = vec![V::default(); CHUNK * per_key];
    // The batch token: an opaque cursor the kernel fills (a bucket index for hash maps), sized
    // generously for any map.
    let mut token_in = [0u8; 16];
    let mut token_out = [0u8; 16];
    let mut first = true;
    loop {
        let mut attr = batch_attr(BatchAttr {
            in_batch: if first { 0 } else { token_in.as_ptr() as u64 },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..empty_batch()
        });
        // The pointers are buffers of `count` keys and `count * per_key` values that outlive
        // the call.
        let error = bpf_sys::bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr).err();
        // SAFETY: the kernel filled in the `batch` member it was given.
        let got = (unsafe { attr.batch.count } as usize).min(CHUNK);
        for (key, values) in keys[..got].iter().zip(values.chunks(per_key)) {
            sink(*key, values);
        }
        match error {
            None => {}
            // The end of the map (the last chunk may still carry entries).
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Err(io::Error::new(io::ErrorKind::Unsupported, e));
            }
            Some(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}

/// Writes `values[i]` at `keys[i]`. Errors with `Unsupported` on kernels without batch ops, so
/// the caller can fall back to one update per entry.
pub fn update_all<K: Pod, V: Pod>(map: &MapData, keys: &[K], values: &[V]) -> io::Result<()> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    let fd = map.fd().as_fd().as_raw_fd();
    for (keys, values) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
        let mut attr = batch_attr(BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: keys.len() as u32,
            map_fd: fd as u32,
            ..empty_batch()
        });
        // The pointers are `count` keys and values that outlive the call; the kernel only
        // reads them.
        if let Err(e) = bpf_sys::bpf(bpf_cmd::BPF_MAP_UPDATE_BATCH, &mut attr) {
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(ENOTSUPP) => {
                    io::Error::new(io::ErrorKind::Unsupported, e)
                }
                _ => e,
            });
        }
    }
    Ok(())
}
