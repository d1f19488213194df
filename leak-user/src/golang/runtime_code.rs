//! The Go runtime's own machine code, decoded: stripped binaries have no symbols for the
//! runtime's variables, so they are found by how known runtime functions use them (see
//! `runtime_vars` and `heap_profile::locate`, which add the searches).
use iced_x86::{Decoder, DecoderOptions, Instruction};

use super::elf_data::read_va;
use super::symbols::GoSymbols;

/// Runtime functions decoded are small (`runtime.allgadd`, `runtime.waitReason.String`,
/// `(*mheap).allocSpan`, `runtime.mProf_FlushLocked`: under 8 KiB up to Go 1.27); a size beyond
/// this comes from a corrupt table and would only cost time and memory (40 bytes per decoded
/// instruction).
const MAX_DECODED_BYTES: u64 = 1 << 16;

/// A Go binary's code, with its functions found through `.gopclntab`.
pub(super) struct RuntimeCode<'a> {
    pub(super) file: &'a object::File<'a>,
    pub(super) symbols: &'a GoSymbols,
}

impl RuntimeCode<'_> {
    /// The instructions of a function, decoded linearly from its entry (Go puts no data in
    /// text) and bounded by its size.
    pub(super) fn decode(&self, name: &str) -> Option<Vec<Instruction>> {
        let (entry, size) = self.symbols.function(name)?;
        if size > MAX_DECODED_BYTES {
            return None;
        }
        let code = read_va(self.file, entry, size)?;
        let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
        let mut instructions = Vec::new();
        while decoder.can_decode() {
            instructions.push(decoder.decode());
        }
        Some(instructions)
    }
}
