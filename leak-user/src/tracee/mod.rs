//! Target discovery: the process, its mapped objects, and the allocator it really uses.
pub mod allocator;
pub mod catalogue;
pub mod elf;
pub mod files;
pub mod lock;
pub mod pinned;
pub mod probe_site;
pub mod process;
pub mod remote_memory;
pub mod sections;

pub use allocator::{Allocator, EntryPoint};
pub use process::{MappedObject, TargetProcess};
