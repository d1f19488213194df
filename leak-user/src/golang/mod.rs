//! Go-specific knowledge read from a Go binary without running it: toolchain version
//! (`.go.buildinfo`), `runtime.g`/`runtime.m` field offsets (DWARF, or a per-version table
//! for stripped binaries), function symbols and pc → file:line (`.symtab` or `.gopclntab`),
//! and the RET sites where return probes go (uretprobes are unsafe on Go functions).
//! Only linux/amd64 ELF binaries from Go >= 1.18 are handled.

pub mod buildinfo;
mod elf_data;
mod moduledata;
pub mod offsets;
mod pclntab;
pub mod ret_sites;
pub mod symbols;

#[cfg(test)]
pub mod testutil;
