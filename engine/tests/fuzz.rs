//! The planner under mutated scripts: every experiment and every reference example, mutated
//! token by token with a seeded generator (huge, negative and NaN-like numbers, dropped and
//! duplicated characters, swapped identifiers, repeated lines), must plan or fail with an
//! error: never panic, and never take longer than a robustness bound per script.
//!
//! The bound is not a speed target: it catches scripts that would hang or grow without end
//! (the budgets in `engine::limits` exist so none can).

use engine::plan::Plan;
use engine::schedule::Schedule;
use engine::shuffle::SplitMix64;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mutated scripts per run: a few thousand, well under a minute.
const MUTATIONS: usize = 3_000;
/// Longest one script may take to plan (and schedule) before the test fails.
const BOUND: Duration = Duration::from_secs(2);
/// Fixed, so a failure reproduces; the failing mutation's number is in the message.
const SEED: u64 = 0x11_3e_ff;

/// Values a number is replaced with: huge, negative, zero, tiny, overflowing and NaN-like.
const NUMBERS: &[&str] = &[
    "1_000_000_000_000_000_000",
    "9223372036854775807",
    "-9223372036854775808",
    "-1",
    "0",
    "0.0",
    "-0.5",
    "1e20",
    "1e308",
    "-1e308",
    "1e-300",
    "(0.0/0.0)",
    "(1e308*10.0)",
    "4294967296",
    "100001",
    "1048577",
];

/// Fragments spliced in: loops and growth that must hit a limit rather than run forever.
const SPLICES: &[&str] = &[
    "let zz = []; loop { zz.push(1); }\n",
    "for i in 0..1_000_000_000 { }\n",
    "timestamp();\n",
    "sleep(1e20);\n",
    "print(\"x\");\n",
    "study(#{ cycles: 10000 });\n",
];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(String),
    Ident(String),
    Other(String),
}

fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "._".contains(chars[i])) {
                i += 1;
            }
            out.push(Token::Number(chars[start..i].iter().collect()));
        } else if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            i += 1;
            out.push(Token::Other(c.to_string()));
        }
    }
    out
}

fn text(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(|t| match t {
            Token::Number(s) | Token::Ident(s) | Token::Other(s) => s.as_str(),
        })
        .collect()
}

fn pick<'a, T>(rng: &mut SplitMix64, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u64) as usize]
}

fn positions(tokens: &[Token], want: fn(&Token) -> bool) -> Vec<usize> {
    (0..tokens.len()).filter(|&i| want(&tokens[i])).collect()
}

/// One random token-level edit of `tokens`.
fn mutate(tokens: &mut Vec<Token>, rng: &mut SplitMix64) {
    if tokens.is_empty() {
        return;
    }
    match rng.below(7) {
        0 | 1 => {
            let numbers = positions(tokens, |t| matches!(t, Token::Number(_)));
            if !numbers.is_empty() {
                let at = *pick(rng, &numbers);
                tokens[at] = Token::Number(pick(rng, NUMBERS).to_string());
            }
        }
        2 => {
            let at = rng.below(tokens.len() as u64) as usize;
            tokens.remove(at);
        }
        3 => {
            let at = rng.below(tokens.len() as u64) as usize;
            let copy = tokens[at].clone();
            tokens.insert(at, copy);
        }
        4 => {
            let idents = positions(tokens, |t| matches!(t, Token::Ident(_)));
            if idents.len() >= 2 {
                let a = *pick(rng, &idents);
                let b = *pick(rng, &idents);
                tokens.swap(a, b);
            }
        }
        5 => {
            // Repeat a line, as a copy-paste slip would (and a grid would grow).
            let newlines = positions(tokens, |t| *t == Token::Other("\n".into()));
            if newlines.len() >= 2 {
                let i = rng.below(newlines.len() as u64 - 1) as usize;
                let line: Vec<Token> = tokens[newlines[i] + 1..=newlines[i + 1]].to_vec();
                let at = newlines[i + 1] + 1;
                tokens.splice(at..at, line);
            }
        }
        _ => {
            let newlines = positions(tokens, |t| *t == Token::Other("\n".into()));
            let at = newlines.get(rng.below(newlines.len().max(1) as u64) as usize);
            let at = at.map_or(0, |&n| n + 1);
            tokens.splice(at..at, [Token::Other(pick(rng, SPLICES).to_string())]);
        }
    }
}

fn sources() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "experiments not found in {}", dir.display());
    for t in engine::vocabulary::TOPICS {
        out.push((
            dir.join(format!("example-{}.rhai", t.name)),
            t.example.to_string(),
        ));
    }
    out
}

/// Plans `source` as the binary would (plan, runs, schedule); `Err` on a planning error.
fn plan_all(path: &Path, source: &str) -> Result<usize, String> {
    let plan: Plan =
        engine::script::plan_script(path, source, "fuzz").map_err(|e| e.to_string())?;
    let runs = plan.runs().len();
    let schedule = Schedule::from_plan(&plan);
    let _ = plan.to_json();
    Ok(runs + schedule.loads())
}

#[test]
fn mutated_experiments_never_panic_and_plan_within_the_bound() {
    let sources = sources();
    let mut rng = SplitMix64::new(SEED);
    let mut failures = Vec::new();
    let mut planned = 0;
    // Panics are caught and reported below; the default hook would print each one.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for n in 0..MUTATIONS {
        let (path, source) = pick(&mut rng, &sources);
        let mut toks = tokens(source);
        for _ in 0..=rng.below(3) {
            mutate(&mut toks, &mut rng);
        }
        let mutated = text(&toks);
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| plan_all(path, &mutated)));
        let took = start.elapsed();
        match outcome {
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("#{n} panicked ({why}):\n{mutated}"));
            }
            Ok(result) => {
                planned += usize::from(result.is_ok());
                if took > BOUND {
                    failures.push(format!("#{n} took {took:?}:\n{mutated}"));
                }
            }
        }
    }
    std::panic::set_hook(hook);
    assert!(
        failures.is_empty(),
        "{} of {MUTATIONS} mutated scripts failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    // Mutations that leave a script valid must be common, or the planner's deeper paths
    // would go untested.
    assert!(
        planned > MUTATIONS / 10,
        "only {planned} mutated scripts planned"
    );
}

#[test]
fn mutations_are_reproducible_and_change_the_script() {
    let source = "let a = 4;\nlet b = load(\"m\", #{ seed: 2 });\n";
    let run = |seed| {
        let mut rng = SplitMix64::new(seed);
        let mut toks = tokens(source);
        for _ in 0..3 {
            mutate(&mut toks, &mut rng);
        }
        text(&toks)
    };
    assert_eq!(run(7), run(7));
    assert_eq!(text(&tokens(source)), source);
    assert!((0..20).any(|seed| run(seed) != source));
}
