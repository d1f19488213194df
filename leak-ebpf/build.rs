use which::which;

/// Rebuild the eBPF object when bpf-linker changes: cargo does not track linkers on its own.
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
    // BPF ISA v3 (kernel 5.12+; uprobe cookies already need 5.15): compare-and-exchange, and
    // 32-bit jumps that make smaller programs.
    println!("cargo:rustc-link-arg=--cpu-features=+alu32");
}
