//! Rayon helpers that spin, rather than sleep, for the length of one host forward step, so
//! the step's many short products do not each wake a sleeping pool thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// Set while this thread runs [`as_step_owner`]'s work.
    static STEP_OWNER: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` marked as the owner of the steps it runs, although it is on a pool thread: a
/// model pinned to a core set enters its own pool (`pool.install`) for every step, and its
/// forward pass must then spin the pool's other threads just as a step called from outside any
/// pool does ([`is_step_owner`]), rather than take the on-a-pool-thread path meant for a step
/// nested in someone else's parallel work (measured about 6 % slower: each product wakes
/// sleeping threads). The mark is restored on return and on unwinding.
pub(crate) fn as_step_owner<R>(work: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            STEP_OWNER.with(|owner| owner.set(self.0));
        }
    }
    let _restore = Restore(STEP_OWNER.with(|owner| owner.replace(true)));
    work()
}

/// Whether the calling thread runs [`as_step_owner`]'s work.
pub(crate) fn is_step_owner() -> bool {
    STEP_OWNER.with(Cell::get)
}

/// Runs `work` on a rayon pool thread (this one, if it is one) while each other thread of the
/// pool spins, running any task it can steal, until `work` returns. Left to rayon, a pool
/// thread that finds no task for a few dozen yields goes to sleep on a futex; the serial
/// stretches of a step (norms, small attentions, rotary) are that long, so every product after
/// one woke a thread again: a system call on one side and a reschedule on the other, which perf
/// put at about 6 % of a SmolLM-135M batch-8 bench's samples, and the woken thread starts its
/// share late. The helpers spin only for the length of one step, as llama.cpp's threads spin
/// between operations: the CPU time (and energy) they burn in the serial stretches is part of
/// what a run costs, and the meters count it.
///
/// Measured faster at batch 1 and 8 than letting threads sleep: `docs/perf/2026-12-host-pass.md`.
pub(super) fn with_spinning_helpers<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    let done = &AtomicBool::new(false);
    // From outside the pool, `scope` runs its body on a pool thread; from inside, right here.
    rayon::scope(|scope| {
        let owner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(move |_| {
                // The owner may pop a helper itself while it waits inside `work`; spinning
                // there would wait for `work`, which cannot go on until the helper returns.
                if rayon::current_thread_index() == owner {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        // Set on return and on unwinding alike: a panic in `work` must not leave the helpers
        // spinning, or the scope, which waits for them, would hang instead of passing it on.
        let _stop = StopOnDrop(done);
        work()
    })
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn spinning_helpers_run_the_work_and_stop_with_it() {
        let sum = |n: u64| (0..n).into_par_iter().map(|i| i * 2).sum::<u64>();
        // Called from outside a pool, and alone in one, the work runs and returns its result.
        assert_eq!(with_spinning_helpers(|| sum(1000)), 999_000);
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a small test pool");
            // Many steps in a row, each with nested parallel work whose waits may pop a helper
            // on the owner's thread: every one returns, with the work's result.
            let total: u64 = pool.install(|| {
                (0..200)
                    .map(|_| with_spinning_helpers(|| sum(10_000)))
                    .sum()
            });
            assert_eq!(total, 200 * 99_990_000, "{threads} threads");
        }
    }

    #[test]
    fn the_step_owner_mark_holds_only_inside_its_work() {
        assert!(!is_step_owner());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a small test pool");
        let (me, marks) = pool.install(|| {
            as_step_owner(|| {
                (
                    rayon::current_thread_index(),
                    rayon::broadcast(|ctx| (ctx.index(), is_step_owner())),
                )
            })
        });
        // Only the thread that entered is the owner, not the pool's other threads.
        for (thread, marked) in marks {
            assert_eq!(marked, Some(thread) == me, "thread {thread}");
        }
        assert!(!is_step_owner());
        assert!(!pool.install(is_step_owner));
        let unwound =
            std::panic::catch_unwind(|| as_step_owner(|| -> u32 { panic!("a bug in a step") }));
        assert!(unwound.is_err());
        assert!(!is_step_owner(), "the mark outlived an unwinding step");
    }

    #[test]
    fn a_panic_in_the_work_reaches_the_caller_instead_of_hanging() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a small test pool");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| with_spinning_helpers(|| -> u32 { panic!("a bug in a step") }))
        }));
        assert!(outcome.is_err());
    }
}
