//! Go-specific knowledge read from a Go binary without running it: toolchain version
//! (`.go.buildinfo`), `runtime.g`/`runtime.m` field offsets (DWARF, or a per-version table
//! for stripped binaries), function symbols and pc → file:line (`.symtab` or `.gopclntab`,
//! with the functions inlined at a pc from the runtime's inline trees),
//! the RET sites where return probes go (uretprobes are unsafe on Go functions), the runtime
//! variables a sampler reads from a live process (goroutine list, wait reason names, heap
//! in-use bytes) and the decoding of the goroutines read there.
//! Only linux/amd64 ELF binaries from Go >= 1.18 are handled.

pub mod buildinfo;
mod elf_data;
pub mod goroutines;
pub mod heap_profile;
mod inltree;
mod moduledata;
pub mod offsets;
mod pclntab;
pub mod probes;
pub mod reader;
pub mod ret_sites;
mod runtime_code;
pub mod runtime_vars;
pub mod symbols;
pub mod tracker;

#[cfg(test)]
pub mod testutil;
