//! Uprobe sessions (Linux 6.12+): the program is loaded with `BPF_TRACE_UPROBE_SESSION` as its
//! expected attach type, and its calls of the `bpf_session_is_return` kfunc are linked here:
//! aya 0.14 neither knows that attach type nor relocates kfunc calls, so `leak-ebpf` calls a
//! placeholder helper id that is rewritten into a kfunc call by the kernel's BTF id.
use aya_obj::generated::{BPF_CALL, BPF_JMP, BPF_PSEUDO_KFUNC_CALL, bpf_insn};
use btf_rs::{Backend, Btf, Type};
use leak_common::SESSION_IS_RETURN_PLACEHOLDER;

use super::MultiError;

/// `BPF_TRACE_UPROBE_SESSION` of `enum bpf_attach_type` (Linux 6.12+; after aya-obj 0.3.0's
/// bindings).
pub const ATTACH_TYPE: u32 = 57;

const KFUNC: &str = "bpf_session_is_return";
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The kfunc's BTF id in the running kernel; `NoSessions` where it has none (before 6.12).
/// btf-rs over a mapping of the kernel's BTF finds it in a few ms, where parsing all of it
/// (aya-obj's `Btf`) took 130 ms of the startup.
pub fn kfunc_id() -> Result<u32, MultiError> {
    let btf = Btf::from_file_with_backend(VMLINUX_BTF, Backend::Mmap)
        .or_else(|_| Btf::from_file(VMLINUX_BTF))
        .map_err(|_| MultiError::NoSessions)?;
    kfunc_in(&btf).ok_or(MultiError::NoSessions)
}

fn kfunc_in(btf: &Btf) -> Option<u32> {
    btf.resolve_ids_by_name(KFUNC)
        .ok()?
        .into_iter()
        .find(|&id| matches!(btf.resolve_type_by_id(id), Ok(Type::Func(_))))
}

/// Rewrites each placeholder call in `instructions` into a call of the kfunc `btf_id` of the
/// kernel's own BTF. Returns how many calls were linked.
pub fn link_kfunc_calls(instructions: &mut [bpf_insn], btf_id: u32) -> usize {
    let call = (BPF_JMP | BPF_CALL) as u8;
    let mut linked = 0;
    for insn in instructions
        .iter_mut()
        .filter(|i| i.code == call && i.src_reg() == 0 && i.imm == SESSION_IS_RETURN_PLACEHOLDER)
    {
        insn.set_src_reg(BPF_PSEUDO_KFUNC_CALL as u8);
        // `off` 0: the kfunc is in vmlinux, not in a module's BTF.
        insn.off = 0;
        insn.imm = btf_id as i32;
        linked += 1;
    }
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(imm: i32) -> bpf_insn {
        // SAFETY: bpf_insn is plain integers; all-zero is a valid value.
        let mut insn: bpf_insn = unsafe { std::mem::zeroed() };
        insn.code = (BPF_JMP | BPF_CALL) as u8;
        insn.imm = imm;
        insn
    }

    #[test]
    fn only_placeholder_helper_calls_become_kfunc_calls() {
        let mut helper = call(14);
        let mut local = call(SESSION_IS_RETURN_PLACEHOLDER);
        // A bpf-to-bpf call with the same immediate is not a helper call.
        local.set_src_reg(1);
        let mut insns = [helper, call(SESSION_IS_RETURN_PLACEHOLDER), local];
        assert_eq!(link_kfunc_calls(&mut insns, 65008), 1);
        helper = insns[0];
        assert_eq!((helper.imm, helper.src_reg()), (14, 0));
        assert_eq!((insns[1].imm, insns[1].src_reg()), (65008, 2));
        assert_eq!(
            (insns[2].imm, insns[2].src_reg()),
            (SESSION_IS_RETURN_PLACEHOLDER, 1)
        );
    }

    #[test]
    fn this_kernel_has_the_kfunc() {
        // Linux 6.12+ (the project's machines run 6.18): the id aya-obj's full parse finds.
        let full = aya_obj::btf::Btf::from_sys_fs().expect("kernel BTF");
        let expected = full
            .id_by_type_name_kind(KFUNC, aya_obj::btf::BtfKind::Func)
            .expect("the kfunc");
        assert_eq!(kfunc_id().expect("the kfunc"), expected);
    }
}
