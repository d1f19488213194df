//! Where the running kernel keeps the return addresses that return probes took over.
//!
//! A return probe replaces its function's return address on the stack with the kernel's
//! trampoline and keeps the real one in the thread's list of return instances. Another
//! tracer's return probe on an allocator's first instruction fires before our entry probe
//! placed further in, so the stack walk finds the trampoline where the caller should be. The
//! walk reads the real address from that list (`leak-ebpf`'s `unwind`), at the field offsets
//! the kernel's BTF gives, written here into `UNWIND_STATE`.
use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use btf_rs::{Backend, Btf, Type};
use leak_common::unwind_state;
use thiserror::Error;

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum OffsetsError {
    #[error("cannot read the kernel's BTF ({VMLINUX_BTF}): {0}")]
    Btf(#[from] btf_rs::Error),
    #[error("the kernel's BTF has no field {field} in struct {strukt}")]
    NoField {
        strukt: &'static str,
        field: &'static str,
    },
}

/// The path from the current task to its return instances, as byte offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnInstanceOffsets {
    task_utask: u32,
    utask_return_instances: u32,
    stack: u32,
    orig_ret_vaddr: u32,
    next: u32,
}

impl ReturnInstanceOffsets {
    /// The running kernel's offsets.
    pub fn of_running_kernel() -> Result<Self, OffsetsError> {
        let btf = Btf::from_file_with_backend(VMLINUX_BTF, Backend::Mmap)
            .or_else(|_| Btf::from_file(VMLINUX_BTF))?;
        Self::from_btf(&btf)
    }

    fn from_btf(btf: &Btf) -> Result<Self, OffsetsError> {
        Ok(Self {
            task_utask: field_offset(btf, "task_struct", "utask")?,
            utask_return_instances: field_offset(btf, "uprobe_task", "return_instances")?,
            stack: field_offset(btf, "return_instance", "stack")?,
            orig_ret_vaddr: field_offset(btf, "return_instance", "orig_ret_vaddr")?,
            next: field_offset(btf, "return_instance", "next")?,
        })
    }

    /// Writes the offsets where the probes read them.
    pub fn install(&self, ebpf: &mut Ebpf) -> Result<(), aya::maps::MapError> {
        let map = ebpf
            .map_mut("UNWIND_STATE")
            .ok_or(aya::maps::MapError::InvalidName {
                name: "UNWIND_STATE".into(),
            })?;
        let mut state: Array<&mut MapData, u32> = Array::try_from(map)?;
        // The utask offset last: it tells the probes the others are in place.
        for (index, value) in [
            (
                unwind_state::UTASK_RETURN_INSTANCES,
                self.utask_return_instances,
            ),
            (unwind_state::RETURN_STACK, self.stack),
            (unwind_state::RETURN_ORIG_RET_VADDR, self.orig_ret_vaddr),
            (unwind_state::RETURN_NEXT, self.next),
            (unwind_state::TASK_UTASK, self.task_utask),
        ] {
            state.set(index, value, 0)?;
        }
        Ok(())
    }
}

/// The byte offset of a named, byte-aligned field declared directly in a named struct.
fn field_offset(btf: &Btf, strukt: &'static str, field: &'static str) -> Result<u32, OffsetsError> {
    let missing = OffsetsError::NoField { strukt, field };
    for candidate in btf.resolve_types_by_name(strukt)? {
        let Type::Struct(candidate) = candidate else {
            continue;
        };
        for member in &candidate.members {
            let named = btf.resolve_name(member).is_ok_and(|name| name == field);
            if named
                && member.bitfield_size().unwrap_or(0) == 0
                && member.bit_offset().is_multiple_of(8)
            {
                return Ok(member.bit_offset() / 8);
            }
        }
    }
    Err(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel (6.x) has every field; `utask` lies well into `task_struct`, and the
    /// three `return_instance` fields are distinct words.
    #[test]
    fn running_kernel_offsets() {
        let offsets = ReturnInstanceOffsets::of_running_kernel().expect("offsets");
        assert!(
            offsets.task_utask > 0 && offsets.task_utask.is_multiple_of(8),
            "{offsets:?}"
        );
        assert!(offsets.utask_return_instances.is_multiple_of(8));
        let words = [offsets.stack, offsets.orig_ret_vaddr, offsets.next];
        assert!(words.iter().all(|w| w.is_multiple_of(8)), "{offsets:?}");
        assert_eq!(offsets.orig_ret_vaddr, offsets.stack + 8, "{offsets:?}");
        assert!(offsets.next > offsets.orig_ret_vaddr, "{offsets:?}");
    }

    #[test]
    fn unknown_fields_are_errors() {
        let btf = Btf::from_file(VMLINUX_BTF).expect("btf");
        let error = field_offset(&btf, "return_instance", "no_such_field").unwrap_err();
        assert!(matches!(error, OffsetsError::NoField { .. }), "{error}");
        let error = field_offset(&btf, "no_such_struct_here", "next").unwrap_err();
        assert!(matches!(error, OffsetsError::NoField { .. }), "{error}");
    }
}
