//! End-to-end tests of clean stops: `llmeff run` stopped by SIGTERM, SIGINT or a double
//! SIGINT mid-study keeps what it stored, leaves no held lock nor temporary file, and the same
//! command run again resumes exactly.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

/// Four runs of two requests arriving 3 s apart: each run waits in the executor's cancellable
/// arrival wait, so a signal sent after the second run starts finds a run in progress.
const STUDY: &str = r#"
study(#{ name: "stop" });
let m = load("tiny-stories");
let p = prompts("builtin:stories", #{ count: 2, max_input_tokens: 16 });
for n in [2, 3, 4, 5] {
    let r = infer(m, batch(p, #{ size: 1 }),
                  #{ max_new_tokens: n, warmup: 0,
                     arrival: #{ pattern: "constant", interval_s: 3.0 } });
    measure(r, #{ meters: ["latency"] });
}
"#;
const RUNS: usize = 4;

/// A scratch folder with the study script in it.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("stop.rhai");
    std::fs::write(&script, STUDY).unwrap();
    (dir, script)
}

/// Starts `llmeff run --plain` with stderr lines sent to the returned channel as they come.
fn start(out: &Path, script: &Path, hold: bool) -> (Child, Receiver<String>) {
    start_with(with_default_stops(), out, script, hold)
}

/// The llmeff command with SIGINT, SIGTERM and SIGHUP at their default actions, as in a
/// terminal's foreground job: the tests may themselves run under `nohup` or as a background job
/// of a non-interactive shell, whose ignored SIGHUP or SIGINT llmeff rightly keeps.
fn with_default_stops() -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_llmeff"));
    // SAFETY: only `signal`, async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(signal, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    command
}

/// [`start`] for a prepared `command` (e.g. one that starts with a signal ignored).
fn start_with(
    mut command: Command,
    out: &Path,
    script: &Path,
    hold: bool,
) -> (Child, Receiver<String>) {
    command
        .args(["run", "--plain", "--out"])
        .arg(out)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if hold {
        command.env("LLMEFF_TEST_HOLD_AFTER_STOP", "1");
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Reads stderr lines until one satisfies `want`; returns every line read. A generous bound
/// only keeps a broken binary from hanging the suite.
#[track_caller]
fn read_until(rx: &Receiver<String>, seen: &mut Vec<String>, want: impl Fn(&str) -> bool) {
    loop {
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(line) => {
                let found = want(&line);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(e) => panic!(
                "stderr ended ({e}) before the expected line:\n{}",
                seen.join("\n")
            ),
        }
    }
}

fn send(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: signals the child this test spawned and has not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// No temporary file (`.<name>.<unique>.tmp`, see results::parquet_io) anywhere in the study.
fn assert_no_temporaries(study: &Path) {
    let temps: Vec<_> = files(study)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".tmp"))
        })
        .collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
}

/// Successful run parts stored in the study.
fn stored_parts(study: &Path) -> usize {
    std::fs::read_dir(study.join("parts"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.ends_with(".parquet") && !name.contains("failed")
        })
        .count()
}

/// Runs the same command again at once: it must not be blocked by a lock, must resume with
/// the `stored` runs already done, and must leave each run exactly once in runs.parquet.
fn assert_resumes_exactly(out: &Path, script: &Path, stored: usize) {
    let (mut child, rx) = start(out, script, false);
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    let lines: Vec<String> = rx.iter().collect();
    let stderr = lines.join("\n");
    assert!(status.success(), "resume failed ({status}):\n{stderr}");
    if stored > 0 {
        let want = format!(
            "resuming: {stored} runs already stored, {} to go",
            RUNS - stored
        );
        assert!(stderr.contains(&want), "want `{want}` in:\n{stderr}");
    }
    let study = out.join("stop");
    let rows =
        results::parquet_io::read_rows(&study.join("runs.parquet"), results::schema::RUN_COLUMNS)
            .unwrap();
    assert_eq!(rows.len(), RUNS, "{stderr}");
    let hashes: HashSet<String> = rows
        .iter()
        .map(|r| match r.get("run_hash") {
            Some(results::Cell::Text(h)) => h.clone(),
            other => panic!("run_hash: {other:?}"),
        })
        .collect();
    assert_eq!(hashes.len(), RUNS, "a run stored twice");
    let ids: HashSet<String> = rows
        .iter()
        .map(|r| format!("{:?}", r.get("experiment_id")))
        .collect();
    assert_eq!(ids.len(), RUNS, "experiment ids repeat");
    assert_no_temporaries(&study);
}

/// Stops a study with `signal` while its second run is in progress and checks the clean end.
fn stop_mid_run_and_resume(signal: libc::c_int, name: &str, code: i32) {
    let (dir, script) = setup();
    let (mut child, rx) = start(dir.path(), &script, false);
    let mut seen = Vec::new();
    read_until(&rx, &mut seen, |l| l.starts_with("[2/4]"));
    send(&child, signal);
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    seen.extend(rx.iter());
    let stderr = seen.join("\n");
    assert_eq!(status.code(), Some(code), "{status}:\n{stderr}");
    let study = dir.path().join("stop");
    // The abandoned run wrote nothing: what is stored is what the message says.
    let stored = stored_parts(&study);
    assert!((1..RUNS).contains(&stored), "{stored} stored:\n{stderr}");
    let want = format!(
        "stopped by {name}: {stored} of {RUNS} runs stored in {}; run the same command again to resume",
        study.display()
    );
    assert!(stderr.contains(&want), "want `{want}` in:\n{stderr}");
    // The table was compacted from the parts present, as at a normal end.
    let rows =
        results::parquet_io::read_rows(&study.join("runs.parquet"), results::schema::RUN_COLUMNS)
            .unwrap();
    assert_eq!(rows.len(), stored);
    assert_no_temporaries(&study);
    assert_resumes_exactly(dir.path(), &script, stored);
}

#[test]
fn sigterm_mid_run_stores_finished_runs_exits_143_and_resumes_exactly() {
    stop_mid_run_and_resume(libc::SIGTERM, "SIGTERM", 143);
}

#[test]
fn sigint_mid_run_stores_finished_runs_exits_130_and_resumes_exactly() {
    stop_mid_run_and_resume(libc::SIGINT, "SIGINT", 130);
}

#[test]
fn sighup_mid_run_exits_129_and_resumes_exactly() {
    stop_mid_run_and_resume(libc::SIGHUP, "SIGHUP", 129);
}

#[test]
fn a_second_sigint_ends_the_stopping_run_at_once() {
    let (dir, script) = setup();
    // The hook holds the process after its first stop until stdin closes, so the second
    // SIGINT surely comes after the first was taken.
    let (mut child, rx) = start(dir.path(), &script, true);
    let mut seen = Vec::new();
    read_until(&rx, &mut seen, |l| l.starts_with("[2/4]"));
    send(&child, libc::SIGINT);
    read_until(&rx, &mut seen, |l| l.starts_with("stopping:"));
    send(&child, libc::SIGINT);
    let status = child.wait().unwrap();
    drop(child.stdin.take());
    let stderr = seen.join("\n");
    // Ended by the signal itself, not by the clean stop's exit 130.
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status}:\n{stderr}");
    assert!(!stderr.contains("stopped by"), "{stderr}");
    // Even so, nothing half-written is taken for a run: the next run resumes exactly.
    assert_resumes_exactly(dir.path(), &script, stored_parts(&dir.path().join("stop")));
}

#[test]
fn the_test_hook_alone_does_not_end_the_stop() {
    // Control for the double-SIGINT test: with one SIGINT the held process ends cleanly with
    // 130 once released, so the signal death above is the second SIGINT's doing.
    let (dir, script) = setup();
    let (mut child, rx) = start(dir.path(), &script, true);
    let mut seen = Vec::new();
    read_until(&rx, &mut seen, |l| l.starts_with("[2/4]"));
    send(&child, libc::SIGINT);
    read_until(&rx, &mut seen, |l| l.starts_with("stopping:"));
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    seen.extend(rx.iter());
    assert_eq!(status.code(), Some(130), "{status}:\n{}", seen.join("\n"));
}

#[test]
fn a_sighup_ignored_by_nohup_stays_ignored() {
    use std::os::unix::process::CommandExt;
    let (dir, script) = setup();
    let mut command = Command::new(env!("CARGO_BIN_EXE_llmeff"));
    // SAFETY: only `signal`, async-signal-safe, between fork and exec; as `nohup` does.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let (mut child, rx) = start_with(command, dir.path(), &script, false);
    let mut seen = Vec::new();
    read_until(&rx, &mut seen, |l| l.starts_with("[2/4]"));
    send(&child, libc::SIGHUP);
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    seen.extend(rx.iter());
    let stderr = seen.join("\n");
    // The study went on to its end, as nohup asked.
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(!stderr.contains("stopped by"), "{stderr}");
    assert_eq!(stored_parts(&dir.path().join("stop")), RUNS, "{stderr}");
}

#[test]
fn sighup_after_the_terminal_hangs_up_still_stops_cleanly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (dir, script) = setup();
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors into the given ints; the other arguments
    // may be null.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // The child must not inherit the master side, or closing ours would not hang up.
    // SAFETY: sets a flag on a descriptor just opened.
    assert_eq!(
        unsafe { libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC) },
        0
    );
    // SAFETY: both descriptors were just opened and are owned by nothing else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = with_default_stops()
        .args(["run", "--plain", "--out"])
        .arg(dir.path())
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    {
        // Reads the terminal until the second run starts, then closes its master side: the
        // terminal is hung up and every later write to it fails with EIO.
        let mut terminal = BufReader::new(std::fs::File::from(master));
        let mut line = String::new();
        while !line.starts_with("[2/4]") {
            line.clear();
            let read = terminal.read_line(&mut line).unwrap();
            assert!(read > 0, "terminal ended early:\n{}", seen.join(""));
            seen.push(line.clone());
        }
    }
    send(&child, libc::SIGHUP);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(129), "{status}:\n{}", seen.join(""));
    let study = dir.path().join("stop");
    let rows =
        results::parquet_io::read_rows(&study.join("runs.parquet"), results::schema::RUN_COLUMNS)
            .unwrap();
    assert_eq!(rows.len(), stored_parts(&study));
    assert_no_temporaries(&study);
}
