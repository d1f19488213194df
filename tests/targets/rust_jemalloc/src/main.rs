//! Test target: a Rust program whose global allocator is tikv-jemallocator, i.e. jemalloc built
//! into the executable with the `_rjem_` prefix. It speaks the protocol of tests/targets/common.h
//! (`ready`, one line on stdin, the allocations, `done`, then sleeps) and leaks exact sizes from
//! the lines marked `@line NAME` (see tests/tests/allocator_families.rs for the numbers).
//!
//! tikv-jemallocator maps Rust's allocator calls onto jemalloc: an alignment of at most 16 goes
//! to `malloc`/`calloc`/`realloc`, a larger one to `mallocx`/`rallocx`; every free is `sdallocx`.

use std::hint::black_box;
use std::io::Read;
use std::mem;
use std::time::Duration;

use tikv_jemallocator::Jemalloc;

#[global_allocator]
static GLOBAL: Jemalloc = Jemalloc;

/// Over-aligned: allocated with `mallocx(size, MALLOCX_ALIGN(64))`. Only its layout matters.
#[repr(align(64))]
#[allow(dead_code)]
struct Aligned([u8; 192]);

/// 10 x 1000 bytes through `malloc`.
#[inline(never)]
fn leak_box(n: usize, size: usize) {
    for i in 0..n {
        let block = vec![i as u8 | 1; size].into_boxed_slice(); /* @line leak_box */
        Box::leak(black_box(block));
    }
}

/// 4 x 2048 zeroed bytes through `calloc`.
#[inline(never)]
fn leak_zeroed(n: usize, size: usize) {
    for _ in 0..n {
        let block: Vec<u8> = vec![0; size]; /* @line leak_zeroed */
        mem::forget(black_box(block));
    }
}

/// 3 x 192 bytes aligned to 64 through `mallocx`.
#[inline(never)]
fn leak_aligned(n: usize) {
    for i in 0..n {
        let block = Box::new(Aligned([i as u8 | 1; 192])); /* @line leak_aligned */
        Box::leak(black_box(block));
    }
}

/// 2 x 5000 bytes: a 100-byte vector grown with `realloc`; the first block is freed by it.
#[inline(never)]
fn leak_grown(n: usize) {
    for _ in 0..n {
        let mut v: Vec<u8> = Vec::with_capacity(100);
        v.push(1);
        v.reserve_exact(4999); /* @line leak_grown */
        mem::forget(black_box(v));
    }
}

/// 2 x 768 bytes: a vector of one aligned element grown to four with `rallocx`.
#[inline(never)]
fn leak_aligned_grown(n: usize) {
    for _ in 0..n {
        let mut v: Vec<Aligned> = Vec::with_capacity(1);
        v.push(Aligned([7; 192]));
        v.reserve_exact(3); /* @line leak_aligned_grown */
        mem::forget(black_box(v));
    }
}

/// Allocations of every kind above, all dropped again (`sdallocx`): never reported.
#[inline(never)]
fn transient(rounds: usize) {
    for i in 0..rounds {
        let a = black_box(vec![i as u8 | 1; 1000 + i]);
        let b: Vec<u8> = black_box(vec![0; 2048]);
        let c = black_box(Box::new(Aligned([3; 192])));
        let mut d: Vec<u8> = Vec::with_capacity(100);
        d.push(1);
        d.reserve_exact(4999 + i);
        let mut e: Vec<Aligned> = Vec::with_capacity(1);
        e.push(Aligned([5; 192]));
        e.reserve_exact(3);
        drop((a, b, c, black_box(d), black_box(e)));
    }
}

fn run_leaks() {
    leak_box(10, 1000); /* @line run_leaks */
    leak_zeroed(4, 2048);
    leak_aligned(3);
    leak_grown(2);
    leak_aligned_grown(2);
    transient(200);
}

/// Blocks until one line arrives on stdin; exits quietly on EOF (the harness went away).
fn wait_go(stdin: &std::io::Stdin) {
    let mut byte = [0u8; 1];
    loop {
        match stdin.lock().read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return,
            Ok(1) => continue,
            _ => std::process::exit(0),
        }
    }
}

fn main() {
    // Made before `ready`: stdin's buffer is allocated here, not while the tracer watches.
    let stdin = std::io::stdin();
    println!("ready");
    wait_go(&stdin);
    run_leaks(); /* @line main */
    println!("done");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
