//! Clean stops: while a [`StopGuard`] lives, SIGINT, SIGTERM or SIGHUP raise one cancel flag
//! instead of ending the process, so a study abandons its current run (writing nothing),
//! compacts its table, releases its lock and says how to resume. The REPL's `:run` and
//! `llmeff run` share this one handler.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Raised by the handler; the executor's cancel flag.
static STOP: AtomicBool = AtomicBool::new(false);
/// The first signal caught since the guard was installed (0: none).
static CAUGHT: AtomicI32 = AtomicI32::new(0);

/// Said at once, from the handler, so a stop is seen to be taken while the run winds down.
const NOTICE: &[u8] =
    b"\nstopping: the current run is abandoned and the table kept; the same signal again stops at once\n";

extern "C" fn on_signal(signal: libc::c_int) {
    // Only atomic stores and `write(2)`: the kinds of work a signal handler may do.
    let _ = CAUGHT.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
    // SAFETY: `write` is async-signal-safe and reads only the static notice.
    unsafe {
        libc::write(2, NOTICE.as_ptr().cast(), NOTICE.len());
    }
}

/// While alive, the signals it was installed for raise [`StopGuard::flag`] instead of ending
/// the process; dropping it puts back the actions there were before.
pub struct StopGuard {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl StopGuard {
    /// Installs the handler for those of `signals` not ignored already; `None` where the
    /// system refuses one, and those signals then end llmeff as before.
    pub fn install(signals: &[libc::c_int]) -> Option<StopGuard> {
        STOP.store(false, Ordering::SeqCst);
        CAUGHT.store(0, Ordering::SeqCst);
        let mut guard = StopGuard {
            previous: Vec::with_capacity(signals.len()),
        };
        for &signal in signals {
            // SAFETY: `sigaction` structs are plain data for which all-zero is valid; the
            // handler only stores to atomics, which is async-signal-safe.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                libc::sigemptyset(&mut action.sa_mask);
                // SA_RESETHAND: the same signal a second time (a second Ctrl-C, e.g. while a
                // large model loads or the table compacts) ends llmeff at once, as usual.
                action.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
                let mut previous: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, std::ptr::null(), &mut previous) != 0 {
                    return None;
                }
                // A signal ignored by whoever started llmeff (`nohup` ignores SIGHUP, a
                // shell's background job SIGINT) stays ignored: they asked it not to stop.
                if previous.sa_sigaction == libc::SIG_IGN {
                    continue;
                }
                if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                    // Dropping `guard` restores the ones already installed.
                    return None;
                }
                guard.previous.push((signal, previous));
            }
        }
        Some(guard)
    }

    /// The flag the handler raises, for `Executor::with_cancel`.
    pub fn flag(&self) -> &'static AtomicBool {
        &STOP
    }

    /// The first signal caught while the guard lived, if any.
    pub fn caught(&self) -> Option<libc::c_int> {
        match CAUGHT.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        for (signal, previous) in self.previous.iter().rev() {
            // SAFETY: restores an action saved by `install`, which the system gave back.
            unsafe {
                libc::sigaction(*signal, previous, std::ptr::null_mut());
            }
        }
    }
}

/// The usual name of a stop signal (`SIGTERM`), for messages.
pub fn name(signal: libc::c_int) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        other => format!("signal {other}"),
    }
}

/// The exit status a shell reports for a process ended by `signal`: 128 + its number (130
/// for SIGINT, 143 for SIGTERM, 129 for SIGHUP), so scripts and schedulers see a stop.
pub fn exit_code(signal: libc::c_int) -> u8 {
    u8::try_from(128 + signal).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // One test, as the guard's flag is process-wide: tests running in parallel would see each
    // other's signals.
    fn caught_signals_raise_the_flag_and_ignored_ones_stay_ignored() {
        // A signal ignored by whoever started llmeff stays ignored.
        // SAFETY: SIGUSR2 is used by no other test; ignoring it, then raising it, is harmless.
        unsafe {
            libc::signal(libc::SIGUSR2, libc::SIG_IGN);
        }
        let ignored = StopGuard::install(&[libc::SIGUSR2]).expect("guard installs");
        // SAFETY: SIGUSR2 is ignored, so raising it does nothing.
        unsafe {
            libc::raise(libc::SIGUSR2);
        }
        assert!(!ignored.flag().load(Ordering::SeqCst));
        assert_eq!(ignored.caught(), None);
        // SAFETY: queries the current action into a zeroed struct.
        let current = unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGUSR2, std::ptr::null(), &mut current);
            current
        };
        assert_eq!(current.sa_sigaction, libc::SIG_IGN);
        drop(ignored);

        // Under `nohup` SIGHUP arrives ignored and the guard rightly leaves it so (above): the
        // rest wants the handler, so it starts from the default action.
        // SAFETY: sets SIGHUP's disposition for this test process.
        unsafe {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
        }
        let guard = StopGuard::install(&[libc::SIGHUP]).expect("handler installs");
        assert!(!guard.flag().load(Ordering::SeqCst));
        // SAFETY: raising a signal whose handler was just installed by this test.
        unsafe {
            libc::raise(libc::SIGHUP);
        }
        assert!(guard.flag().load(Ordering::SeqCst));
        assert_eq!(guard.caught(), Some(libc::SIGHUP));
        // SA_RESETHAND: the next SIGHUP takes the default action, ending the process at once.
        // SAFETY: queries the current action into a zeroed struct.
        let current = unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut current);
            current
        };
        assert_eq!(current.sa_sigaction, libc::SIG_DFL);
        assert_eq!(exit_code(libc::SIGHUP), 129);
        assert_eq!(exit_code(libc::SIGTERM), 143);
        assert_eq!(exit_code(libc::SIGINT), 130);
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
    }
}
