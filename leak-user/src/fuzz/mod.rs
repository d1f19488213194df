//! Mutation fuzzing of every parser of target data, seeded with real inputs: the files the
//! tests build (Go binaries of two toolchains, a C program), this machine's libc, captured
//! `/dev/kmsg` and tracefs text, `/proc` files.
//!
//! Each target ([`targets`]) is a unit test: `cargo xtask fuzz [--seconds N]` runs them alone
//! for N seconds each, `cargo xtask test` for 8 s each, a plain `cargo test` for one. A case mutates one seed (a few bytes,
//! words set to boundary values, chunks copied, a cut) inside the part its parser reads,
//! and the parser must neither panic (overflow checks are on in test builds) nor take more
//! than [`CASE_TIME_LIMIT`]. A failure is shrunk by proptest to the fewest mutations, printed,
//! and the input written to `target/fuzz-failures/`, to become a unit test.
//!
//! Why proptest and not cargo-fuzz: the parsers are private to the leaktrace binary, whose
//! build includes the eBPF object; mutation of real seeds reaches them from its own tests,
//! with shrinking, on the stable toolchain.
mod seeds;
mod targets;

use std::{
    ops::Range,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner},
};

/// Seconds each target runs (`cargo xtask fuzz --seconds N` sets it; `cargo xtask test` runs
/// each for 8 s). A plain `cargo test` gives each one second: the seeds as they are, then
/// whatever mutations fit.
const SECONDS_VAR: &str = "LEAKTRACE_FUZZ_SECONDS";
const DEFAULT_SECONDS: u64 = 1;
/// A fixed run seed (printed by every run) replays that run's cases.
const SEED_VAR: &str = "LEAKTRACE_FUZZ_SEED";

/// One case taking longer than this fails: parsers must stay linear in their input (the
/// largest seed, a Go binary, parses in well under a second in a debug build).
const CASE_TIME_LIMIT: Duration = Duration::from_secs(10);
/// Mutations per case: a few, so that most inputs still get past the first checks.
const MAX_MUTATIONS: usize = 6;
/// Cases per proptest runner; a new runner (new random stream) for each batch.
const BATCH: u32 = 64;

/// A real input and the byte range its parser reads (mutations land there).
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
    pub focus: Range<usize>,
}

impl Seed {
    pub fn whole(name: impl Into<String>, bytes: Vec<u8>) -> Seed {
        let focus = 0..bytes.len();
        Seed {
            name: name.into(),
            bytes,
            focus,
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Byte {
        at: u64,
        value: u8,
    },
    Bit {
        at: u64,
        bit: u8,
    },
    Word32 {
        at: u64,
        value: u32,
    },
    Word64 {
        at: u64,
        value: u64,
    },
    /// Copies up to `len` bytes from one place of the focus to another.
    Copy {
        from: u64,
        to: u64,
        len: u8,
    },
    /// Cuts the input short.
    Truncate {
        at: u64,
    },
    /// Replaces the run of ASCII digits at or after a place with a boundary value in decimal:
    /// text formats (kmsg, tracefs, `/proc`) carry their numbers so.
    Number {
        at: u64,
        value: u64,
    },
}

/// Boundary values: counts, offsets and sizes set to these find missing checks.
fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        Just(u64::from(u32::MAX)),
        Just(0x8000_0000),
        Just(0x7fff_ffff),
        Just(1 << 62),
        0..4096u64,
        any::<u64>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<u64>(), any::<u8>()).prop_map(|(at, value)| Mutation::Byte { at, value }),
        2 => (any::<u64>(), 0..8u8).prop_map(|(at, bit)| Mutation::Bit { at, bit }),
        3 => (any::<u64>(), interesting_u64())
            .prop_map(|(at, value)| Mutation::Word32 { at, value: value as u32 }),
        2 => (any::<u64>(), interesting_u64()).prop_map(|(at, value)| Mutation::Word64 { at, value }),
        1 => (any::<u64>(), any::<u64>(), any::<u8>())
            .prop_map(|(from, to, len)| Mutation::Copy { from, to, len }),
        1 => any::<u64>().prop_map(|at| Mutation::Truncate { at }),
        2 => (any::<u64>(), interesting_u64()).prop_map(|(at, value)| Mutation::Number { at, value }),
    ]
}

/// The seed with the mutations applied, positions taken inside its focus.
fn mutate(seed: &Seed, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = seed.bytes.clone();
    let focus = seed.focus.start.min(bytes.len())..seed.focus.end.min(bytes.len());
    if focus.is_empty() {
        return bytes;
    }
    // `index` as a fraction of the focus (u64::MAX: its end).
    let at = |index: &u64| {
        let offset = (u128::from(*index) * focus.len() as u128) >> 64;
        focus.start + offset as usize
    };
    for mutation in mutations {
        match mutation {
            Mutation::Byte { at: i, value } => set(&mut bytes, at(i), &[*value]),
            Mutation::Bit { at: i, bit } => {
                if let Some(byte) = bytes.get_mut(at(i)) {
                    *byte ^= 1 << bit;
                }
            }
            Mutation::Word32 { at: i, value } => set(&mut bytes, at(i), &value.to_le_bytes()),
            Mutation::Word64 { at: i, value } => set(&mut bytes, at(i), &value.to_le_bytes()),
            Mutation::Copy { from, to, len } => {
                let from = at(from);
                let end = (from + usize::from(*len)).min(bytes.len());
                if let Some(chunk) = bytes.get(from..end).map(<[u8]>::to_vec) {
                    set(&mut bytes, at(to), &chunk);
                }
            }
            Mutation::Truncate { at: i } => bytes.truncate(at(i)),
            Mutation::Number { at: i, value } => replace_number(&mut bytes, at(i), *value),
        }
    }
    bytes
}

fn set(bytes: &mut [u8], at: usize, value: &[u8]) {
    let end = (at + value.len()).min(bytes.len());
    if let Some(slot) = bytes.get_mut(at..end) {
        slot.copy_from_slice(&value[..end - at]);
    }
}

fn replace_number(bytes: &mut Vec<u8>, from: usize, value: u64) {
    let Some(start) = bytes
        .get(from..)
        .and_then(|rest| rest.iter().position(u8::is_ascii_digit))
        .map(|offset| from + offset)
    else {
        return;
    };
    let len = bytes[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    bytes.splice(start..start + len, value.to_string().into_bytes());
}

fn budget() -> Duration {
    let seconds = std::env::var(SECONDS_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECONDS);
    Duration::from_secs(seconds)
}

fn run_seed() -> u64 {
    std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

/// Runs `check` on each seed as is, then on mutated seeds until the time budget is spent.
/// Panics (after shrinking) on the first input that makes `check` panic or exceed
/// [`CASE_TIME_LIMIT`].
pub fn fuzz(name: &str, seeds: &[Seed], check: impl Fn(&[u8])) {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    for seed in seeds {
        let started = Instant::now();
        check(&seed.bytes);
        assert!(
            started.elapsed() < CASE_TIME_LIMIT,
            "{name}: seed {} took {:?}",
            seed.name,
            started.elapsed()
        );
    }
    let run_seed = run_seed();
    let deadline = Instant::now() + budget();
    // Shrinking re-runs a failing case hundreds of times: one report (below) is enough.
    let report_panics = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut last) = LAST_PANIC_AT.lock() {
            *last = info.location().map(ToString::to_string);
        }
    }));
    let strategy = (0..seeds.len(), vec(mutation(), 1..=MAX_MUTATIONS));
    let (mut batch, mut cases) = (0u64, 0u64);
    while Instant::now() < deadline {
        let config = Config {
            cases: BATCH,
            failure_persistence: None,
            max_shrink_iters: 4096,
            ..Config::default()
        };
        let mut rng_seed = [0u8; 32];
        rng_seed[..8].copy_from_slice(&run_seed.to_le_bytes());
        rng_seed[8..16].copy_from_slice(&batch.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &rng_seed);
        let mut runner = TestRunner::new_with_rng(config, rng);
        let result = runner.run(&strategy, |(index, mutations)| {
            let input = mutate(&seeds[index], &mutations);
            let started = Instant::now();
            check(&input);
            let took = started.elapsed();
            prop_assert!(took < CASE_TIME_LIMIT, "took {took:?}");
            Ok(())
        });
        if result.is_err() {
            std::panic::set_hook(report_panics);
            report_failure(name, seeds, run_seed, result);
            return;
        }
        batch += 1;
        cases += u64::from(BATCH);
    }
    std::panic::set_hook(report_panics);
    eprintln!(
        "fuzz {name}: {cases} cases on {} seeds (run seed {run_seed})",
        seeds.len()
    );
}

/// Where the last case panicked: printed with the shrunk case.
static LAST_PANIC_AT: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

type RunResult = Result<(), TestError<(usize, Vec<Mutation>)>>;

/// Panics with the shrunk failing case, its input saved for a unit test.
fn report_failure(name: &str, seeds: &[Seed], run_seed: u64, result: RunResult) {
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (index, mutations))) => {
            let seed = &seeds[index];
            let saved = save_failure(name, &mutate(seed, &mutations));
            let at = LAST_PANIC_AT.lock().ok().and_then(|at| at.clone());
            panic!(
                "{name}: {why} (at {}) on seed {} with {mutations:?} (run seed {run_seed}); \
                 input saved to {}",
                at.as_deref().unwrap_or("?"),
                seed.name,
                saved.display()
            );
        }
        Err(error) => panic!("{name}: {error}"),
    }
}

fn save_failure(name: &str, input: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
    let path = dir.join(format!("{name}.bin"));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input)) {
        eprintln!("cannot save {}: {e}", path.display());
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_start_inside_the_focus() {
        let seed = Seed {
            name: "zeros".into(),
            bytes: vec![0; 64],
            focus: 16..32,
        };
        let mutations = vec![
            Mutation::Word64 {
                at: u64::MAX / 2,
                value: u64::MAX,
            },
            Mutation::Byte {
                at: u64::MAX,
                value: 0xff,
            },
        ];
        let out = mutate(&seed, &mutations);
        assert_eq!(out.len(), 64);
        // Offsets 7 and 15 of the focus: bytes 23..31 and 31.
        assert!(
            out[..23].iter().chain(&out[32..]).all(|&b| b == 0),
            "{out:?}"
        );
        assert_eq!(out[23..32], [0xff; 9]);
    }

    #[test]
    fn numbers_are_replaced_whole() {
        let seed = Seed::whole("text", b"offset:8;\tsize:4;".to_vec());
        let mutations = [Mutation::Number {
            at: 0,
            value: u64::MAX,
        }];
        assert_eq!(
            mutate(&seed, &mutations),
            b"offset:18446744073709551615;\tsize:4;"
        );
    }
}
