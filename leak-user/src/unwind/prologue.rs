//! Unwind rows derived from machine code, for code that no CFI describes (musl's libc is built
//! without unwind tables; so are some hand-built libraries).
//!
//! Each function is followed from its entry along its branches, simulating the stack height:
//! pushes, pops, `sub`/`add`/`lea` on RSP, frame-pointer setups and `leave`. Calls leave the
//! height as it was. The result is the CFA at every instruction, as ORC-style unwinders compute
//! it; anything the simulation cannot follow (`and rsp, -16` without a frame pointer, RSP
//! computed from registers, code no branch reaches) is `cfa::UNKNOWN`, which makes the probe fall
//! back to frame pointers.
use std::collections::{BTreeMap, BTreeSet};

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};
use leak_common::{UnwindRow, cfa};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

/// A function's code: `[start, end)` in the object's virtual address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub start: u64,
    pub end: u64,
    /// The end comes from a symbol's size, not from where the next function begins.
    pub sized: bool,
}

/// Where the CFA is, as far as the simulation knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cfa {
    /// CFA = RSP + height + 8 (`height`: bytes below the return address).
    Rsp {
        height: i64,
    },
    /// CFA = RBP + offset; `height` is RSP's, while it is known.
    Rbp {
        offset: i64,
        height: Option<i64>,
    },
    Unknown,
}

/// The simulated state before one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    cfa: Cfa,
    /// Where the caller's RBP was pushed, relative to the CFA.
    rbp_saved_at: Option<i64>,
}

impl State {
    const ENTRY: State = State {
        cfa: Cfa::Rsp { height: 0 },
        rbp_saved_at: None,
    };

    fn row(self, pc: u64) -> UnwindRow {
        let (cfa_reg, cfa_offset) = match self.cfa {
            Cfa::Rsp { height } => (cfa::RSP, height + 8),
            Cfa::Rbp { offset, .. } => (cfa::RBP, offset),
            Cfa::Unknown => return unknown(pc),
        };
        let Ok(cfa_offset) = i32::try_from(cfa_offset) else {
            return unknown(pc);
        };
        let rbp_offset = self.rbp_saved_at.and_then(|at| i16::try_from(at).ok());
        UnwindRow {
            pc,
            cfa_offset,
            rbp_offset: rbp_offset.unwrap_or(0),
            cfa_reg,
            rbp_saved: u8::from(rbp_offset.is_some()),
        }
    }
}

/// A row telling the probe that no rule is known from `pc` on.
pub fn unknown(pc: u64) -> UnwindRow {
    UnwindRow {
        pc,
        cfa_reg: cfa::UNKNOWN,
        ..UnwindRow::default()
    }
}

/// The functions of an object: symbols with a size (`.symtab`, else `.dynsym`), plus, with
/// `call_targets`, for functions no symbol names (stripped objects keep only exported ones), the
/// targets of direct calls, each running to the next known start (decoding all the code: worth
/// it only where CFI does not describe the functions already).
pub fn functions(file: &object::File, call_targets: bool) -> Vec<Function> {
    let mut sized: BTreeMap<u64, u64> = BTreeMap::new();
    for symbol in file.symbols().chain(file.dynamic_symbols()) {
        // gcc's `f.cold` parts run inside f's frame, not from an entry of their own.
        let cold = symbol.name().is_ok_and(|name| name.contains(".cold"));
        if symbol.kind() == SymbolKind::Text && symbol.address() != 0 && symbol.size() > 0 && !cold
        {
            let end = symbol.address() + symbol.size();
            let entry = sized.entry(symbol.address()).or_insert(end);
            *entry = (*entry).max(end);
        }
    }
    let mut starts: BTreeSet<u64> = sized.keys().copied().collect();
    if call_targets {
        starts.extend(direct_call_targets(file));
    }
    let texts = text_sections(file);
    let starts: Vec<u64> = starts.into_iter().collect();
    let mut out = Vec::with_capacity(starts.len());
    let mut covered = 0;
    for (i, &start) in starts.iter().enumerate() {
        let (end, is_sized) = match sized.get(&start) {
            Some(&end) => (end, true),
            // A call target inside a named function is a label of that function, not another.
            None if start < covered => continue,
            None => {
                let next = starts.get(i + 1).copied().unwrap_or(u64::MAX);
                let section_end = texts
                    .iter()
                    .find(|(addr, data)| (*addr..*addr + data.len() as u64).contains(&start))
                    .map_or(start, |(addr, data)| addr + data.len() as u64);
                (next.min(section_end), false)
            }
        };
        if end > start {
            out.push(Function {
                start,
                end,
                sized: is_sized,
            });
            covered = covered.max(end);
        }
    }
    out
}

/// Executable sections' addresses and bytes.
fn text_sections<'data>(file: &object::File<'data>) -> Vec<(u64, &'data [u8])> {
    file.sections()
        .filter(|s| s.kind() == SectionKind::Text)
        .filter_map(|s| Some((s.address(), s.data().ok()?)))
        .collect()
}

/// Targets of the direct calls in the object's code, found by decoding it linearly.
fn direct_call_targets(file: &object::File) -> BTreeSet<u64> {
    let mut targets = BTreeSet::new();
    let texts = text_sections(file);
    let inside = |pc: u64| {
        texts
            .iter()
            .any(|(addr, data)| (*addr..*addr + data.len() as u64).contains(&pc))
    };
    for (addr, data) in &texts {
        let mut decoder = Decoder::with_ip(64, data, *addr, DecoderOptions::NONE);
        let mut instruction = Instruction::default();
        while decoder.can_decode() {
            decoder.decode_out(&mut instruction);
            if instruction.flow_control() == FlowControl::Call
                && inside(instruction.near_branch_target())
            {
                targets.insert(instruction.near_branch_target());
            }
        }
    }
    targets
}

/// The bytes of `function`, when one executable section holds all of them.
pub fn code<'data>(file: &object::File<'data>, function: Function) -> Option<&'data [u8]> {
    text_sections(file).into_iter().find_map(|(addr, data)| {
        let from = usize::try_from(function.start.checked_sub(addr)?).ok()?;
        let to = usize::try_from(function.end.checked_sub(addr)?).ok()?;
        data.get(from..to)
    })
}

/// The rows of one function, sorted by pc, the first at its start. They say nothing past
/// `function.end`: the caller closes the range.
pub fn derive(function: Function, code: &[u8]) -> Vec<UnwindRow> {
    let instructions = decode(function, code);
    let states = simulate(function, &instructions);
    let mut rows: Vec<UnwindRow> = Vec::new();
    for (instruction, state) in instructions.iter().zip(&states) {
        let pc = instruction.ip();
        let row = state.map_or_else(|| unknown(pc), |state| state.row(pc));
        if rows.last().is_none_or(|last| !same_rule(last, &row)) {
            rows.push(row);
        }
    }
    rows
}

/// Two rows with the same rule (their pcs aside).
pub fn same_rule(a: &UnwindRow, b: &UnwindRow) -> bool {
    UnwindRow { pc: 0, ..*a } == UnwindRow { pc: 0, ..*b }
}

fn decode(function: Function, code: &[u8]) -> Vec<Instruction> {
    let mut decoder = Decoder::with_ip(64, code, function.start, DecoderOptions::NONE);
    let mut out = Vec::with_capacity(code.len() / 4);
    while decoder.can_decode() {
        out.push(decoder.decode());
    }
    out
}

/// The state before each reachable instruction, by index in `instructions`.
///
/// Where paths meet with different states the first one found stands. Paths along branches go
/// first; the path past a call comes last, as calls to `noreturn` functions fall into unrelated
/// code. Code no direct branch reaches (the cases of a `switch`, reached through a jump table)
/// starts from the state of the function's indirect jump, when it has one.
fn simulate(function: Function, instructions: &[Instruction]) -> Vec<Option<State>> {
    // Decoded in order: sorted by pc.
    let index = |pc: u64| instructions.binary_search_by_key(&pc, Instruction::ip).ok();
    let mut states: Vec<Option<State>> = vec![None; instructions.len()];
    let mut branches = vec![(function.start, State::ENTRY)];
    let mut after_calls = Vec::new();
    let mut indirect_jump: Option<State> = None;
    loop {
        let (pc, state) = match branches.pop().or_else(|| after_calls.pop()) {
            Some(next) => next,
            None => {
                let Some(state) = indirect_jump.take() else {
                    break;
                };
                // Where the extent is a guess, a neighbour without a symbol may begin past the
                // last instruction reached: jump tables point before it.
                let last = match function.sized {
                    true => function.end,
                    false => states
                        .iter()
                        .rposition(Option::is_some)
                        .map_or(0, |i| instructions[i].ip()),
                };
                let unreached = instructions
                    .iter()
                    .zip(&states)
                    .filter(|(instruction, state)| state.is_none() && instruction.ip() < last)
                    .map(|(instruction, _)| (instruction.ip(), state));
                branches.extend(unreached.collect::<Vec<_>>());
                continue;
            }
        };
        let Some(i) = index(pc) else { continue };
        if states[i].is_some() {
            continue;
        }
        states[i] = Some(state);
        let instruction = &instructions[i];
        let after = step(state, instruction);
        let next = instruction.next_ip();
        match instruction.flow_control() {
            FlowControl::Next | FlowControl::XbeginXabortXend => branches.push((next, after)),
            // Padding after a call means the call does not return (`__stack_chk_fail`):
            // what follows is another function.
            FlowControl::Call | FlowControl::IndirectCall => {
                if !index(next).is_some_and(|j| is_padding(&instructions[j])) {
                    after_calls.push((next, after));
                }
            }
            FlowControl::ConditionalBranch => {
                branches.push((next, after));
                branches.push((instruction.near_branch_target(), after));
            }
            FlowControl::UnconditionalBranch => {
                // Outside the function: a tail call, which ends the path.
                branches.push((instruction.near_branch_target(), after));
            }
            FlowControl::IndirectBranch => {
                if indirect_jump.is_none() && after.cfa != (Cfa::Rsp { height: 0 }) {
                    indirect_jump = Some(after);
                }
            }
            FlowControl::Return | FlowControl::Interrupt | FlowControl::Exception => {}
        }
    }
    states
}

/// Alignment filler between functions.
fn is_padding(instruction: &Instruction) -> bool {
    matches!(instruction.mnemonic(), Mnemonic::Nop | Mnemonic::Int3)
        || (instruction.mnemonic() == Mnemonic::Xchg
            && instruction.op0_register() == instruction.op1_register())
}

/// The state after `instruction`.
fn step(state: State, instruction: &Instruction) -> State {
    let mut next = state;
    let op0 = register_operand(instruction, 0);
    match instruction.mnemonic() {
        Mnemonic::Push | Mnemonic::Pushfq => {
            next.cfa = moved(state.cfa, 8);
            if op0 == Some(Register::RBP)
                && state.rbp_saved_at.is_none()
                && let Cfa::Rsp { height } = state.cfa
            {
                next.rbp_saved_at = Some(-(height + 16));
            }
        }
        Mnemonic::Pop | Mnemonic::Popfq => {
            next.cfa = moved(state.cfa, -8);
            if op0 == Some(Register::RBP) {
                next.rbp_saved_at = None;
                // The CFA hung on RBP: only RSP can say where it is now.
                if let Cfa::Rbp { height, .. } = next.cfa {
                    next.cfa = height.map_or(Cfa::Unknown, |height| Cfa::Rsp { height });
                }
            }
        }
        Mnemonic::Leave => {
            next.cfa = match state.cfa {
                Cfa::Rbp { offset, .. } => Cfa::Rsp {
                    height: offset - 16,
                },
                _ => Cfa::Unknown,
            };
            next.rbp_saved_at = None;
        }
        Mnemonic::Sub | Mnemonic::Add if op0 == Some(Register::RSP) => {
            next.cfa = match immediate(instruction, 1) {
                Some(n) if instruction.mnemonic() == Mnemonic::Sub => moved(state.cfa, n),
                Some(n) => moved(state.cfa, -n),
                None => rsp_lost(state.cfa),
            };
        }
        Mnemonic::Lea if op0 == Some(Register::RSP) => {
            next.cfa = lea_rsp(state.cfa, instruction);
        }
        Mnemonic::Mov
            if op0 == Some(Register::RBP)
                && register_operand(instruction, 1) == Some(Register::RSP) =>
        {
            // A frame pointer when RSP points at the caller's saved RBP (`push rbp; mov rbp,
            // rsp`); elsewhere RBP is just a register holding a pointer to the locals.
            next.cfa = match state.cfa {
                Cfa::Rsp { height } if state.rbp_saved_at == Some(-(height + 8)) => Cfa::Rbp {
                    offset: height + 8,
                    height: Some(height),
                },
                other => other,
            };
        }
        Mnemonic::Mov
            if op0 == Some(Register::RSP)
                && register_operand(instruction, 1) == Some(Register::RBP) =>
        {
            next.cfa = match state.cfa {
                Cfa::Rbp { offset, .. } => Cfa::Rsp { height: offset - 8 },
                _ => Cfa::Unknown,
            };
        }
        Mnemonic::Cmp | Mnemonic::Test | Mnemonic::Call | Mnemonic::Jmp | Mnemonic::Ret => {}
        Mnemonic::Enter => next.cfa = Cfa::Unknown,
        _ if op0 == Some(Register::RSP) => next.cfa = rsp_lost(state.cfa),
        _ if op0 == Some(Register::RBP) => {
            // The frame pointer the CFA hangs on is overwritten.
            if let Cfa::Rbp { height, .. } = state.cfa {
                next.cfa = height.map_or(Cfa::Unknown, |height| Cfa::Rsp { height });
            }
        }
        _ => {}
    }
    next
}

/// RSP moved down by `bytes` (up when negative).
fn moved(cfa: Cfa, bytes: i64) -> Cfa {
    match cfa {
        Cfa::Rsp { height } if height + bytes >= 0 => Cfa::Rsp {
            height: height + bytes,
        },
        Cfa::Rbp { offset, height } => Cfa::Rbp {
            offset,
            height: height.map(|h| h + bytes),
        },
        _ => Cfa::Unknown,
    }
}

/// RSP changed in a way the simulation cannot follow.
fn rsp_lost(cfa: Cfa) -> Cfa {
    match cfa {
        Cfa::Rbp { offset, .. } => Cfa::Rbp {
            offset,
            height: None,
        },
        _ => Cfa::Unknown,
    }
}

/// `lea rsp, [rsp + d]` or `lea rsp, [rbp + d]`.
fn lea_rsp(cfa: Cfa, instruction: &Instruction) -> Cfa {
    if instruction.memory_index() != Register::None {
        return rsp_lost(cfa);
    }
    let displacement = instruction.memory_displacement64() as i64;
    match (instruction.memory_base(), cfa) {
        (Register::RSP, _) => moved(cfa, -displacement),
        // RSP = RBP + d = CFA - offset + d.
        (Register::RBP, Cfa::Rbp { offset, .. }) => Cfa::Rbp {
            offset,
            height: Some(offset - 8 - displacement),
        },
        _ => rsp_lost(cfa),
    }
}

fn register_operand(instruction: &Instruction, operand: u32) -> Option<Register> {
    if operand >= instruction.op_count() || instruction.op_kind(operand) != OpKind::Register {
        return None;
    }
    Some(instruction.op_register(operand))
}

fn immediate(instruction: &Instruction, operand: u32) -> Option<i64> {
    if operand >= instruction.op_count() {
        return None;
    }
    match instruction.op_kind(operand) {
        OpKind::Immediate8to64 | OpKind::Immediate32to64 | OpKind::Immediate8 => {
            Some(instruction.immediate(operand) as i64)
        }
        OpKind::Immediate32 => Some(instruction.immediate(operand) as u32 as i32 as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind::table;
    use std::path::PathBuf;
    use std::process::Command;

    fn rule_at(rows: &[UnwindRow], pc: u64) -> Option<UnwindRow> {
        let i = rows.partition_point(|r| r.pc <= pc);
        i.checked_sub(1).map(|i| UnwindRow { pc: 0, ..rows[i] })
    }

    /// The pcs the walker looks up for the callers: each call's return address minus one.
    fn call_sites(function: Function, code: &[u8]) -> Vec<u64> {
        decode(function, code)
            .iter()
            .filter(|i| {
                matches!(
                    i.flow_control(),
                    FlowControl::Call | FlowControl::IndirectCall
                )
            })
            .map(|i| i.next_ip() - 1)
            .collect()
    }

    fn build(args: &[&str], out: &str) -> Vec<u8> {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/unwind/testdata/prologue.c");
        let out = std::env::temp_dir().join(format!("leaktrace-{}-{out}", std::process::id()));
        let status = Command::new("gcc")
            .args(args)
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .status()
            .expect("these tests need gcc");
        assert!(status.success(), "gcc {args:?} failed");
        let elf = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        elf
    }

    /// Compares the rules derived from code with the object's own CFI at every call site of
    /// every function the CFI describes; returns (sites compared, sites left unknown, wrong
    /// rules).
    fn compare(elf: &[u8]) -> (usize, usize, Vec<String>) {
        let file = object::File::parse(elf).unwrap();
        let cfi = table::build_rows(elf).unwrap();
        let (mut sites, mut unknown, mut mismatches) = (0, 0, Vec::new());
        for function in functions(&file, true) {
            let Some(code) = code(&file, function) else {
                continue;
            };
            let derived = derive(function, code);
            for pc in call_sites(function, code) {
                let Some(expected) = rule_at(&cfi, pc) else {
                    continue;
                };
                if expected.cfa_reg == cfa::END || expected.cfa_reg == cfa::UNKNOWN {
                    continue;
                }
                sites += 1;
                let got = rule_at(&derived, pc);
                if got.is_none_or(|got| got.cfa_reg == cfa::UNKNOWN) {
                    unknown += 1;
                } else if got != Some(expected) {
                    mismatches.push(format!(
                        "{pc:#x} in {:#x}: cfi {expected:?}, code {got:?}",
                        function.start
                    ));
                }
            }
        }
        (sites, unknown, mismatches)
    }

    #[test]
    fn agrees_with_cfi_at_every_call_site() {
        for flags in [
            &[
                "-O2",
                "-fomit-frame-pointer",
                "-fasynchronous-unwind-tables",
            ][..],
            &[
                "-O2",
                "-fno-omit-frame-pointer",
                "-fasynchronous-unwind-tables",
            ][..],
            &["-O0", "-fasynchronous-unwind-tables"][..],
        ] {
            let elf = build(flags, "agree");
            let (sites, unknown, wrong) = compare(&elf);
            assert!(sites >= 20, "{flags:?}: only {sites} call sites");
            assert_eq!(unknown, 0, "{flags:?}: {wrong:#?}");
            assert!(wrong.is_empty(), "{flags:?}: {wrong:#?}");
        }
    }

    /// The same library built with and without unwind tables (identical code): the table built
    /// from the code alone gives the CFI's rule at every call site, in the probe's own lookup.
    #[test]
    fn object_without_cfi_gets_the_cfi_rules() {
        let common = [
            "-O2",
            "-fomit-frame-pointer",
            "-fPIC",
            "-shared",
            "-nostartfiles",
        ];
        let with = build(
            &[&common[..], &["-fasynchronous-unwind-tables"]].concat(),
            "with.so",
        );
        let without = build(
            &[
                &common[..],
                &["-fno-asynchronous-unwind-tables", "-fno-unwind-tables"],
            ]
            .concat(),
            "without.so",
        );
        let text = |elf: &[u8]| {
            let file = object::File::parse(elf).unwrap();
            let text = file.section_by_name(".text").unwrap();
            (text.address(), text.data().unwrap().to_vec())
        };
        assert_eq!(
            text(&with),
            text(&without),
            "unwind tables changed the code"
        );
        let file = object::File::parse(&*without).unwrap();
        assert!(
            file.section_by_name(".eh_frame")
                .is_none_or(|s| s.size() == 0)
        );

        let expected = table::build(&with).unwrap();
        let derived = table::build(&without).unwrap();
        assert_eq!(expected.functions_from_code, 0);
        assert!(derived.mostly_from_code());
        assert!(derived.functions_from_code >= 7, "{derived:?}");
        let mut sites = 0;
        for function in functions(&file, true) {
            for pc in call_sites(function, code(&file, function).unwrap()) {
                sites += 1;
                assert_eq!(
                    rule_at(&derived.rows, pc),
                    rule_at(&expected.rows, pc),
                    "call site {pc:#x}"
                );
            }
        }
        assert!(sites >= 20, "{sites}");
    }

    /// glibc's own CFI against its code, hand-written assembly included: the analysis may give
    /// up (the walker then falls back to frame pointers) but must hardly ever be wrong.
    #[test]
    fn libc_call_sites() {
        let elf = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let (sites, unknown, wrong) = compare(&elf);
        eprintln!(
            "{sites} call sites, {unknown} unknown, {} wrong: {wrong:#?}",
            wrong.len()
        );
        assert!(sites > 10_000, "{sites}");
        // Measured: 1408 unknown and 65 wrong of 13092 (stripped: extents of static functions
        // are guessed from call targets).
        assert!(unknown * 100 < sites * 12, "{unknown} of {sites} unknown");
        assert!(
            wrong.len() * 100 < sites,
            "{} of {sites} wrong",
            wrong.len()
        );
    }
}
