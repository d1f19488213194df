//! Telling the kernel side to trace a call site exactly (`ESCALATED`, `ESCALATED_COUNT`).
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError},
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("eBPF map {0} is missing")]
    MissingMap(&'static str),
    #[error("cannot update eBPF map {map}: {source}")]
    Map { map: &'static str, source: MapError },
}

/// Traces every allocator call returning to `return_address` exactly from now on; `count` is
/// how many sites are escalated with it (the probes skip the lookup while it is 0).
pub fn install(ebpf: &mut Ebpf, return_address: u64, count: u32) -> Result<(), KernelError> {
    const SITES: &str = "ESCALATED";
    const COUNT: &str = "ESCALATED_COUNT";
    {
        let map = ebpf.map_mut(SITES).ok_or(KernelError::MissingMap(SITES))?;
        let mut sites: HashMap<&mut MapData, u64, u32> =
            HashMap::try_from(map).map_err(|source| KernelError::Map { map: SITES, source })?;
        sites
            .insert(return_address, 1, 0)
            .map_err(|source| KernelError::Map { map: SITES, source })?;
    }
    // After the entry: a probe that sees the count finds the site.
    let map = ebpf.map_mut(COUNT).ok_or(KernelError::MissingMap(COUNT))?;
    let mut counter: Array<&mut MapData, u32> =
        Array::try_from(map).map_err(|source| KernelError::Map { map: COUNT, source })?;
    counter
        .set(0, count, 0)
        .map_err(|source| KernelError::Map { map: COUNT, source })
}
