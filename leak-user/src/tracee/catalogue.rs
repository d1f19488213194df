//! Every allocator entry point leaktrace probes, by symbol: what it is called in reports, which
//! API family it belongs to, and how its arguments are read (`leak_common::call`). An entry's
//! index here is its id in the probes' cookies and in the records they keep.
use leak_common::call;

/// Which API an entry point belongs to; decides where it is looked for (see `allocator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// The C heap (`malloc`, `free`, ...): every allocator provides it under these names, and
    /// the dynamic linker binds them to the first object in its lookup order that exports them.
    CHeap,
    /// `mmap`/`munmap`: bound the same way, usually to libc.
    Map,
    /// C++ `operator new`/`delete` in all variants.
    Cxx,
    /// jemalloc's own API (`mallocx`, ...).
    Jemalloc,
    /// gperftools' `tc_*` API.
    Tcmalloc,
    /// mimalloc's `mi_*` API.
    Mimalloc,
}

/// What a probe on an entry point does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Makes (or resizes) a block: an entry probe and a return probe.
    Allocates,
    /// Releases a block: an entry probe only.
    Releases,
    /// Unmaps memory: an entry probe only.
    Unmaps,
}

#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub symbol: &'static str,
    /// The name reports give the allocation site (`operator new` for `_Znwm`).
    pub name: &'static str,
    pub api: Api,
    /// `leak_common::call`.
    pub call: u32,
    /// Which System V arguments (0 = the first) the call layout reads, in its order.
    pub args: &'static [u8],
}

impl Entry {
    pub fn role(&self) -> Role {
        match self.call {
            call::FREE => Role::Releases,
            call::MUNMAP => Role::Unmaps,
            _ => Role::Allocates,
        }
    }
}

/// jemalloc built with a symbol prefix: `je_` (`--with-jemalloc-prefix`), `_rjem_` (Rust's
/// tikv-jemallocator). Its C heap names and its own API both carry it.
pub const JEMALLOC_PREFIXES: [&str; 2] = ["_rjem_", "je_"];

const fn entry(
    symbol: &'static str,
    name: &'static str,
    api: Api,
    call: u32,
    args: &'static [u8],
) -> Entry {
    Entry {
        symbol,
        name,
        api,
        call,
        args,
    }
}

/// An entry point reported under its own symbol name.
const fn own(symbol: &'static str, api: Api, call: u32, args: &'static [u8]) -> Entry {
    entry(symbol, symbol, api, call, args)
}

const NEW: &str = "operator new";
const NEW_ARRAY: &str = "operator new[]";
const DELETE: &str = "operator delete";
const DELETE_ARRAY: &str = "operator delete[]";

use Api::{CHeap, Cxx, Jemalloc, Map, Mimalloc, Tcmalloc};
use call::{
    COUNT_SIZE, EXPAND, FREE, MMAP, MUNMAP, PAGES, POSIX_MEMALIGN, REALLOC, REALLOC_COUNT, RESIZE,
    SIZE, STRING,
};

/// The catalogue. Where two names share an address in one object (`aligned_alloc` and
/// `memalign` in glibc, `malloc` and `tc_malloc` in tcmalloc), the one listed first is probed
/// and names the site: the standard names come first.
pub static ENTRIES: &[Entry] = &[
    own("malloc", CHeap, SIZE, &[0]),
    own("calloc", CHeap, COUNT_SIZE, &[0, 1]),
    own("realloc", CHeap, REALLOC, &[0, 1]),
    own("reallocarray", CHeap, REALLOC_COUNT, &[0, 1, 2]),
    own("posix_memalign", CHeap, POSIX_MEMALIGN, &[0, 2]),
    // Before memalign: glibc 2.36 exports both at one address, and C11 code calls this one.
    own("aligned_alloc", CHeap, SIZE, &[1]),
    own("memalign", CHeap, SIZE, &[1]),
    own("valloc", CHeap, SIZE, &[0]),
    own("pvalloc", CHeap, PAGES, &[0]),
    own("reallocf", CHeap, REALLOC, &[0, 1]),
    own("free", CHeap, FREE, &[0]),
    own("cfree", CHeap, FREE, &[0]),
    own("mmap", Map, MMAP, &[1, 2, 3]),
    own("munmap", Map, MUNMAP, &[0]),
    // C++: new, nothrow, aligned, aligned nothrow; then the deletes, plain, sized, nothrow,
    // aligned.
    entry("_Znwm", NEW, Cxx, SIZE, &[0]),
    entry("_ZnwmRKSt9nothrow_t", NEW, Cxx, SIZE, &[0]),
    entry("_ZnwmSt11align_val_t", NEW, Cxx, SIZE, &[0]),
    entry("_ZnwmSt11align_val_tRKSt9nothrow_t", NEW, Cxx, SIZE, &[0]),
    entry("_Znam", NEW_ARRAY, Cxx, SIZE, &[0]),
    entry("_ZnamRKSt9nothrow_t", NEW_ARRAY, Cxx, SIZE, &[0]),
    entry("_ZnamSt11align_val_t", NEW_ARRAY, Cxx, SIZE, &[0]),
    entry(
        "_ZnamSt11align_val_tRKSt9nothrow_t",
        NEW_ARRAY,
        Cxx,
        SIZE,
        &[0],
    ),
    entry("_ZdlPv", DELETE, Cxx, FREE, &[0]),
    entry("_ZdlPvm", DELETE, Cxx, FREE, &[0]),
    entry("_ZdlPvRKSt9nothrow_t", DELETE, Cxx, FREE, &[0]),
    entry("_ZdlPvSt11align_val_t", DELETE, Cxx, FREE, &[0]),
    entry("_ZdlPvmSt11align_val_t", DELETE, Cxx, FREE, &[0]),
    entry(
        "_ZdlPvSt11align_val_tRKSt9nothrow_t",
        DELETE,
        Cxx,
        FREE,
        &[0],
    ),
    entry("_ZdaPv", DELETE_ARRAY, Cxx, FREE, &[0]),
    entry("_ZdaPvm", DELETE_ARRAY, Cxx, FREE, &[0]),
    entry("_ZdaPvRKSt9nothrow_t", DELETE_ARRAY, Cxx, FREE, &[0]),
    entry("_ZdaPvSt11align_val_t", DELETE_ARRAY, Cxx, FREE, &[0]),
    entry("_ZdaPvmSt11align_val_t", DELETE_ARRAY, Cxx, FREE, &[0]),
    entry(
        "_ZdaPvSt11align_val_tRKSt9nothrow_t",
        DELETE_ARRAY,
        Cxx,
        FREE,
        &[0],
    ),
    // jemalloc (nallocx only computes a size).
    own("mallocx", Jemalloc, SIZE, &[0]),
    own("rallocx", Jemalloc, REALLOC, &[0, 1]),
    own("xallocx", Jemalloc, RESIZE, &[0, 1]),
    own("sdallocx", Jemalloc, FREE, &[0]),
    own("dallocx", Jemalloc, FREE, &[0]),
    // gperftools: most are aliases of the standard names at the same address.
    own("tc_malloc", Tcmalloc, SIZE, &[0]),
    own("tc_malloc_skip_new_handler", Tcmalloc, SIZE, &[0]),
    own("tc_calloc", Tcmalloc, COUNT_SIZE, &[0, 1]),
    own("tc_realloc", Tcmalloc, REALLOC, &[0, 1]),
    own("tc_memalign", Tcmalloc, SIZE, &[1]),
    own("tc_posix_memalign", Tcmalloc, POSIX_MEMALIGN, &[0, 2]),
    own("tc_valloc", Tcmalloc, SIZE, &[0]),
    own("tc_pvalloc", Tcmalloc, PAGES, &[0]),
    entry("tc_new", NEW, Tcmalloc, SIZE, &[0]),
    entry("tc_new_nothrow", NEW, Tcmalloc, SIZE, &[0]),
    entry("tc_new_aligned", NEW, Tcmalloc, SIZE, &[0]),
    entry("tc_new_aligned_nothrow", NEW, Tcmalloc, SIZE, &[0]),
    entry("tc_newarray", NEW_ARRAY, Tcmalloc, SIZE, &[0]),
    entry("tc_newarray_nothrow", NEW_ARRAY, Tcmalloc, SIZE, &[0]),
    entry("tc_newarray_aligned", NEW_ARRAY, Tcmalloc, SIZE, &[0]),
    entry(
        "tc_newarray_aligned_nothrow",
        NEW_ARRAY,
        Tcmalloc,
        SIZE,
        &[0],
    ),
    own("tc_free", Tcmalloc, FREE, &[0]),
    own("tc_cfree", Tcmalloc, FREE, &[0]),
    own("tc_free_sized", Tcmalloc, FREE, &[0]),
    own("tc_delete", Tcmalloc, FREE, &[0]),
    own("tc_delete_nothrow", Tcmalloc, FREE, &[0]),
    own("tc_delete_sized", Tcmalloc, FREE, &[0]),
    own("tc_delete_aligned", Tcmalloc, FREE, &[0]),
    own("tc_delete_sized_aligned", Tcmalloc, FREE, &[0]),
    own("tc_delete_aligned_nothrow", Tcmalloc, FREE, &[0]),
    own("tc_deletearray", Tcmalloc, FREE, &[0]),
    own("tc_deletearray_nothrow", Tcmalloc, FREE, &[0]),
    own("tc_deletearray_sized", Tcmalloc, FREE, &[0]),
    own("tc_deletearray_aligned", Tcmalloc, FREE, &[0]),
    own("tc_deletearray_sized_aligned", Tcmalloc, FREE, &[0]),
    own("tc_deletearray_aligned_nothrow", Tcmalloc, FREE, &[0]),
    // mimalloc: the default heap...
    own("mi_malloc", Mimalloc, SIZE, &[0]),
    own("mi_zalloc", Mimalloc, SIZE, &[0]),
    own("mi_malloc_small", Mimalloc, SIZE, &[0]),
    own("mi_zalloc_small", Mimalloc, SIZE, &[0]),
    own("mi_calloc", Mimalloc, COUNT_SIZE, &[0, 1]),
    own("mi_mallocn", Mimalloc, COUNT_SIZE, &[0, 1]),
    own("mi_realloc", Mimalloc, REALLOC, &[0, 1]),
    own("mi_reallocf", Mimalloc, REALLOC, &[0, 1]),
    own("mi_rezalloc", Mimalloc, REALLOC, &[0, 1]),
    own("mi_reallocn", Mimalloc, REALLOC_COUNT, &[0, 1, 2]),
    own("mi_recalloc", Mimalloc, REALLOC_COUNT, &[0, 1, 2]),
    own("mi_reallocarray", Mimalloc, REALLOC_COUNT, &[0, 1, 2]),
    own("mi_expand", Mimalloc, EXPAND, &[0, 1]),
    own("mi__expand", Mimalloc, EXPAND, &[0, 1]),
    own("mi_strdup", Mimalloc, STRING, &[]),
    own("mi_strndup", Mimalloc, STRING, &[]),
    own("mi_mbsdup", Mimalloc, STRING, &[]),
    own("mi_malloc_aligned", Mimalloc, SIZE, &[0]),
    own("mi_malloc_aligned_at", Mimalloc, SIZE, &[0]),
    own("mi_zalloc_aligned", Mimalloc, SIZE, &[0]),
    own("mi_zalloc_aligned_at", Mimalloc, SIZE, &[0]),
    own("mi_calloc_aligned", Mimalloc, COUNT_SIZE, &[0, 1]),
    own("mi_calloc_aligned_at", Mimalloc, COUNT_SIZE, &[0, 1]),
    own("mi_realloc_aligned", Mimalloc, REALLOC, &[0, 1]),
    own("mi_realloc_aligned_at", Mimalloc, REALLOC, &[0, 1]),
    own("mi_rezalloc_aligned", Mimalloc, REALLOC, &[0, 1]),
    own("mi_rezalloc_aligned_at", Mimalloc, REALLOC, &[0, 1]),
    own("mi_recalloc_aligned", Mimalloc, REALLOC_COUNT, &[0, 1, 2]),
    own(
        "mi_recalloc_aligned_at",
        Mimalloc,
        REALLOC_COUNT,
        &[0, 1, 2],
    ),
    own("mi_aligned_recalloc", Mimalloc, REALLOC_COUNT, &[0, 1, 2]),
    own(
        "mi_aligned_offset_recalloc",
        Mimalloc,
        REALLOC_COUNT,
        &[0, 1, 2],
    ),
    own("mi_posix_memalign", Mimalloc, POSIX_MEMALIGN, &[0, 2]),
    own("mi_memalign", Mimalloc, SIZE, &[1]),
    own("mi_aligned_alloc", Mimalloc, SIZE, &[1]),
    own("mi_valloc", Mimalloc, SIZE, &[0]),
    own("mi_pvalloc", Mimalloc, PAGES, &[0]),
    own("mi_new", Mimalloc, SIZE, &[0]),
    own("mi_new_nothrow", Mimalloc, SIZE, &[0]),
    own("mi_new_aligned", Mimalloc, SIZE, &[0]),
    own("mi_new_aligned_nothrow", Mimalloc, SIZE, &[0]),
    own("mi_new_n", Mimalloc, COUNT_SIZE, &[0, 1]),
    own("mi_new_realloc", Mimalloc, REALLOC, &[0, 1]),
    own("mi_new_reallocn", Mimalloc, REALLOC_COUNT, &[0, 1, 2]),
    // ... a heap of its own (the first argument)...
    own("mi_heap_malloc", Mimalloc, SIZE, &[1]),
    own("mi_heap_zalloc", Mimalloc, SIZE, &[1]),
    own("mi_heap_malloc_small", Mimalloc, SIZE, &[1]),
    own("mi_heap_calloc", Mimalloc, COUNT_SIZE, &[1, 2]),
    own("mi_heap_mallocn", Mimalloc, COUNT_SIZE, &[1, 2]),
    own("mi_heap_realloc", Mimalloc, REALLOC, &[1, 2]),
    own("mi_heap_reallocf", Mimalloc, REALLOC, &[1, 2]),
    own("mi_heap_rezalloc", Mimalloc, REALLOC, &[1, 2]),
    own("mi_heap_reallocn", Mimalloc, REALLOC_COUNT, &[1, 2, 3]),
    own("mi_heap_recalloc", Mimalloc, REALLOC_COUNT, &[1, 2, 3]),
    own("mi_heap_strdup", Mimalloc, STRING, &[]),
    own("mi_heap_strndup", Mimalloc, STRING, &[]),
    own("mi_heap_malloc_aligned", Mimalloc, SIZE, &[1]),
    own("mi_heap_malloc_aligned_at", Mimalloc, SIZE, &[1]),
    own("mi_heap_zalloc_aligned", Mimalloc, SIZE, &[1]),
    own("mi_heap_zalloc_aligned_at", Mimalloc, SIZE, &[1]),
    own("mi_heap_calloc_aligned", Mimalloc, COUNT_SIZE, &[1, 2]),
    own("mi_heap_calloc_aligned_at", Mimalloc, COUNT_SIZE, &[1, 2]),
    own("mi_heap_realloc_aligned", Mimalloc, REALLOC, &[1, 2]),
    own("mi_heap_realloc_aligned_at", Mimalloc, REALLOC, &[1, 2]),
    own("mi_heap_rezalloc_aligned", Mimalloc, REALLOC, &[1, 2]),
    own("mi_heap_rezalloc_aligned_at", Mimalloc, REALLOC, &[1, 2]),
    own(
        "mi_heap_recalloc_aligned",
        Mimalloc,
        REALLOC_COUNT,
        &[1, 2, 3],
    ),
    own(
        "mi_heap_recalloc_aligned_at",
        Mimalloc,
        REALLOC_COUNT,
        &[1, 2, 3],
    ),
    own("mi_heap_alloc_new", Mimalloc, SIZE, &[1]),
    own("mi_heap_alloc_new_n", Mimalloc, COUNT_SIZE, &[1, 2]),
    // ... and its frees.
    own("mi_free", Mimalloc, FREE, &[0]),
    own("mi_cfree", Mimalloc, FREE, &[0]),
    own("mi_free_size", Mimalloc, FREE, &[0]),
    own("mi_free_aligned", Mimalloc, FREE, &[0]),
    own("mi_free_size_aligned", Mimalloc, FREE, &[0]),
];

/// A symbol that names a catalogue entry, perhaps behind a jemalloc prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub id: u16,
    pub prefixed: bool,
}

/// The entry a symbol names: exactly, or a C heap or jemalloc name behind a jemalloc prefix.
pub fn lookup(symbol: &str) -> Option<Match> {
    if let Some(id) = position(symbol) {
        return Some(Match {
            id,
            prefixed: false,
        });
    }
    let base = JEMALLOC_PREFIXES
        .iter()
        .find_map(|prefix| symbol.strip_prefix(prefix))?;
    let id = position(base)?;
    matches!(ENTRIES[usize::from(id)].api, CHeap | Jemalloc).then_some(Match { id, prefixed: true })
}

fn position(symbol: &str) -> Option<u16> {
    ENTRIES
        .iter()
        .position(|e| e.symbol == symbol)
        .and_then(|i| u16::try_from(i).ok())
}

/// The entry with this id.
pub fn get(id: u16) -> Option<&'static Entry> {
    ENTRIES.get(usize::from(id))
}

/// The name reports give sites made through entry `id`.
pub fn site_name(id: u16) -> &'static str {
    get(id).map_or("unknown", |e| e.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_unique_and_ids_fit_the_cookie() {
        for (i, e) in ENTRIES.iter().enumerate() {
            assert_eq!(
                position(e.symbol),
                Some(i as u16),
                "{} listed twice",
                e.symbol
            );
            assert!(
                e.args.len() <= leak_common::probe_cookie::ARGS,
                "{}",
                e.symbol
            );
            assert!(e.args.iter().all(|&a| a < 6), "{}", e.symbol);
        }
    }

    #[test]
    fn jemalloc_prefixes_name_the_base_entry() {
        let m = lookup("_rjem_mallocx").expect("tikv-jemallocator's mallocx");
        assert!(m.prefixed);
        assert_eq!(site_name(m.id), "mallocx");
        assert_eq!(
            site_name(lookup("je_malloc").expect("je_malloc").id),
            "malloc"
        );
        // Only C heap and jemalloc names carry the prefix.
        assert_eq!(lookup("je_mi_malloc"), None);
        assert_eq!(lookup("_rjem__Znwm"), None);
    }

    #[test]
    fn cxx_variants_share_two_names() {
        for symbol in ["_Znwm", "_ZnwmRKSt9nothrow_t", "_ZnwmSt11align_val_t"] {
            assert_eq!(site_name(lookup(symbol).expect(symbol).id), "operator new");
        }
        assert_eq!(
            site_name(lookup("_Znam").expect("_Znam").id),
            "operator new[]"
        );
        let sized_delete = get(lookup("_ZdlPvm").expect("sized delete").id).expect("entry");
        assert_eq!(sized_delete.role(), Role::Releases);
    }
}
