//! `llmeff repl`: build a plan statement by statement, inspect it, run it.

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::Failure;
use crate::cli::ReplArgs;
use engine::plan::StudySettings;
use engine::schedule::Schedule;
use engine::script::Session;
use results::Row;

const HELP: &str = "\
Type Rhai statements; each extends the same plan (nothing runs until :run).
  let m = load(\"tiny-stories\");
  let r = infer(m, batch(prompts(\"builtin:stories\", #{ count: 4 }), #{ size: 2 }));
Commands:
  :plan      show the plan built so far (and its schedule)
  :run       run the plan; results go to <out>/<study>/; Ctrl-C stops it and keeps
             the runs already finished (a second Ctrl-C quits)
  :results   show the last results table
  :help      this text
  :quit      leave (Ctrl-D too)
A statement left open (unbalanced brackets) continues on the next line.";

/// Completes stage names, option keys, REPL commands and variables.
struct ReplHelper {
    words: Vec<String>,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |i| i + 1);
        let prefix = &before[start..];
        if prefix.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let matches = self
            .words
            .iter()
            .filter(|w| w.starts_with(prefix))
            .map(|w| Pair {
                display: w.clone(),
                replacement: w.clone(),
            })
            .collect();
        Ok((start, matches))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}
impl Highlighter for ReplHelper {}
impl Validator for ReplHelper {}
impl Helper for ReplHelper {}

/// Whether brackets and strings in `text` are all closed.
fn is_complete(text: &str) -> bool {
    let mut depth: i64 = 0;
    let mut in_string: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        if let Some(quote) = in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == quote {
                in_string = None;
            }
            continue;
        }
        match c {
            '"' | '`' => in_string = Some(c),
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    in_string.is_none() && depth <= 0
}

fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LLMEFF_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".llmeff_history"))
}

/// Adds a line to the history and appends it to the history file at once, so a REPL that is
/// killed or crashes keeps every line entered before.
fn remember(
    editor: &mut Editor<ReplHelper, DefaultHistory>,
    path: Option<&std::path::Path>,
    line: &str,
) {
    // History is a convenience: a line that cannot be stored must not end the session.
    let _ = editor.add_history_entry(line);
    if let Some(path) = path {
        let _ = editor.append_history(path);
    }
}

/// Runs the REPL until :quit or end of input.
pub fn run(args: ReplArgs) -> Result<ExitCode, Failure> {
    super::init_threads(args.threads)?;
    super::check_study_name(&args.study)?;
    let cwd =
        std::env::current_dir().map_err(|e| Failure::work(format!("no working folder: {e}")))?;
    let mut session = Session::new(
        StudySettings::named(args.study.clone()),
        &cwd,
        engine::resolver::search_path_from_env(),
    );
    let mut words: Vec<String> = engine::vocabulary::completion_words()
        .into_iter()
        .map(str::to_string)
        .collect();
    words.extend([":plan", ":run", ":results", ":help", ":quit"].map(String::from));
    let mut editor: Editor<ReplHelper, DefaultHistory> =
        Editor::new().map_err(|e| Failure::work(format!("cannot start line editor: {e}")))?;
    editor.set_helper(Some(ReplHelper {
        words: words.clone(),
    }));
    let history = history_path();
    if let Some(path) = &history {
        // A missing history file is normal on first use.
        let _ = editor.load_history(path);
    }
    println!("llmeff repl — :help for commands");
    let mut last_results: Option<Vec<Row>> = None;
    let mut buffer = String::new();
    let mut line_no = 0usize;
    let mut transcript = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "llmeff> "
        } else {
            "   ...> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Failure::work(format!("cannot read input: {e}"))),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with(':') {
            remember(&mut editor, history.as_deref(), trimmed);
            match trimmed {
                ":quit" | ":q" | ":exit" => break,
                ":help" | ":h" => println!("{HELP}"),
                ":plan" => {
                    let plan = session.plan();
                    print!("{plan}");
                    print!("{}", Schedule::from_plan(&plan));
                }
                ":run" => {
                    // Ctrl-C stops the study at its next generation step and the REPL goes back to
                    // its prompt with the plan and history intact (at the prompt the line
                    // editor reads Ctrl-C itself).
                    let guard = crate::signals::StopGuard::install(&[libc::SIGINT]);
                    // REPL studies are exploratory: each :run supersedes what the plan no
                    // longer has.
                    let result = super::run::execute_plan(
                        &session.plan(),
                        &study::ScriptOrigin {
                            path: "<repl>",
                            text: &transcript,
                        },
                        &args.out,
                        None,
                        true,
                        super::run::Console {
                            plain: true,
                            verbosity: crate::table::Verbosity::Normal,
                            cancel: guard.as_ref().map(|g| g.flag()),
                        },
                    );
                    drop(guard);
                    match result {
                        Ok(result) => {
                            if result.outcome.cancelled {
                                eprintln!(
                                    "interrupted: the runs finished before Ctrl-C are stored; :run again runs the rest"
                                );
                            }
                            crate::table::print_runs(&result.rows);
                            last_results = Some(result.rows);
                        }
                        Err(f) => eprintln!("error: {}", f.message),
                    }
                }
                ":results" => match &last_results {
                    Some(rows) => crate::table::print_runs(rows),
                    None => println!("no results yet: use :run"),
                },
                other => eprintln!(
                    "error: unknown command `{other}`; commands: :plan, :run, :results, :help, :quit"
                ),
            }
            continue;
        }
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(&line);
        if !is_complete(&buffer) {
            continue;
        }
        let source = std::mem::take(&mut buffer);
        if source.trim().is_empty() {
            continue;
        }
        remember(&mut editor, history.as_deref(), &source);
        transcript.push_str(&source);
        transcript.push('\n');
        line_no += 1;
        match session.eval(&format!("<repl:{line_no}>"), &source) {
            Ok(value) => {
                for m in session.take_messages() {
                    println!("{m}");
                }
                if !value.is_unit() {
                    println!("{value}");
                }
            }
            Err(e) => {
                for m in session.take_messages() {
                    println!("{m}");
                }
                eprintln!("error: {e}");
            }
        }
        let mut completions = words.clone();
        completions.extend(session.variables());
        editor.set_helper(Some(ReplHelper { words: completions }));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::is_complete;

    #[test]
    fn open_brackets_and_strings_continue_the_statement() {
        assert!(is_complete("let m = load(\"x\");"));
        assert!(!is_complete("let r = infer(m, b, #{"));
        assert!(!is_complete("let s = \"unterminated ("));
        assert!(is_complete("let s = \"a ( inside\";"));
    }
}
