//! Unwind tables: `.eh_frame` compiled into compact rows (table) and kept in the kernel's maps
//! in step with the target's mappings (loader).
pub mod dlopen;
pub mod loader;
pub mod prologue;
pub mod return_probes;
pub mod table;
