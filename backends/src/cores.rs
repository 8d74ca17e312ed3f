//! CPU core sets (`cpu:0-3`, `cpu:4,6`): parsing them, which cores this process may run on,
//! and rayon pools whose threads are pinned to a set (`sched_setaffinity`), so a model replica
//! on a core set computes there and nowhere else.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

/// One past the largest core number a set may name (the engine's plan-time check uses the same
/// bound), so a typo like `0-4000000000` is refused rather than building a set of billions of
/// cores; also the size of the affinity masks passed to the kernel.
pub const MAX_CORES: usize = 4096;

/// A non-empty set of CPU core numbers, sorted and without repeats.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CoreSet {
    cores: Vec<usize>,
}

/// Why a core list (the part of a device name after `cpu:`) is not a core set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreSetError {
    /// Nothing was named.
    #[error("it names no cores (write them as `0-3`, `4,6` or `0-1,4`)")]
    Empty,
    /// The list does not parse (the grammar is `api::device`'s, shared with the engine's
    /// plan-time check).
    #[error("{0}")]
    Invalid(#[from] api::device::DeviceNameError),
    /// A core number at or above [`MAX_CORES`].
    #[error("`{item}` names a core above {}, the largest a set may name", MAX_CORES - 1)]
    TooLarge {
        /// The item as written.
        item: String,
    },
}

/// Why cores could not be checked, or a thread or pool could not be pinned to them.
#[derive(Debug, thiserror::Error)]
pub enum AffinityError {
    /// Some cores of a set are outside those this process may run on (taskset, cgroups).
    #[error("{} {outside} {} this process may run on ({allowed})",
        if .outside.len() == 1 { "core" } else { "cores" },
        if .outside.len() == 1 { "is not one" } else { "are not ones" })]
    NotAllowed {
        /// The cores of the set this process may not use.
        outside: CoreSet,
        /// The cores this process may use.
        allowed: CoreSet,
    },
    /// Neither `sched_getaffinity` nor `/sys/devices/system/cpu/online` said which cores this
    /// process may run on.
    #[error("cannot tell which cores this process may run on: {reason}")]
    Unknown {
        /// Both failures, described.
        reason: String,
    },
    /// Reading a thread's affinity failed.
    #[error("cannot read a thread's cores: {0}")]
    Read(#[source] io::Error),
    /// `sched_setaffinity` refused to pin the calling thread.
    #[error("cannot pin a thread to cores {cores}: {source}")]
    Pin {
        /// The set asked for.
        cores: CoreSet,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// rayon could not start the pool's threads.
    #[error("cannot start a thread pool on cores {cores}: {source}")]
    Pool {
        /// The set asked for.
        cores: CoreSet,
        /// rayon's error.
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
    /// A worker of a pinned pool could not pin itself.
    #[error("worker {worker} of the pool on cores {cores} could not pin itself: {source}")]
    WorkerPin {
        /// The worker's index in the pool.
        worker: usize,
        /// The set asked for.
        cores: CoreSet,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// A worker of a pinned pool runs on other cores than its set (checked after pinning).
    #[error("worker {worker} of the pool on cores {cores} may run on cores {actual} instead")]
    WorkerUnpinned {
        /// The worker's index in the pool.
        worker: usize,
        /// The set asked for.
        cores: CoreSet,
        /// The cores the worker reported.
        actual: CoreSet,
    },
}

impl CoreSet {
    /// Parses a core list: comma-separated core numbers and inclusive ranges `a-b` (`0-3`,
    /// `4,6`, `0-1,4`); a core named twice, a backwards range or an empty item is an error.
    /// The grammar is [`api::device::DeviceName`]'s, so the engine's plan-time check and the
    /// runtime agree on every name.
    pub fn parse(list: &str) -> Result<Self, CoreSetError> {
        if list.is_empty() {
            return Err(CoreSetError::Empty);
        }
        match api::device::DeviceName::parse(&format!("cpu:{list}"))? {
            api::device::DeviceName::CpuCores(cores) => Self::from_cores(cores),
            // `cpu:` followed by a list always parses as a core set.
            _ => Err(CoreSetError::Empty),
        }
    }

    /// The set of `cores`, sorted, repeats dropped (for callers splitting cores between
    /// replicas); empty or too large a core number is an error.
    pub fn from_cores(cores: impl IntoIterator<Item = usize>) -> Result<Self, CoreSetError> {
        let mut cores: Vec<usize> = cores.into_iter().collect();
        if let Some(&big) = cores.iter().find(|&&c| c >= MAX_CORES) {
            return Err(CoreSetError::TooLarge {
                item: big.to_string(),
            });
        }
        cores.sort_unstable();
        cores.dedup();
        if cores.is_empty() {
            return Err(CoreSetError::Empty);
        }
        Ok(Self { cores })
    }

    /// The core numbers, ascending.
    pub fn cores(&self) -> &[usize] {
        &self.cores
    }

    /// How many cores the set holds (never 0).
    pub fn len(&self) -> usize {
        self.cores.len()
    }

    /// Always false: a set names at least one core (kept for clippy's `len` convention).
    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }

    /// Whether `core` is in the set.
    pub fn contains(&self, core: usize) -> bool {
        self.cores.binary_search(&core).is_ok()
    }

    /// `Ok` when every core of this set is in `allowed`; else which are not.
    pub fn check_within(&self, allowed: &CoreSet) -> Result<(), AffinityError> {
        let outside: Vec<usize> = self
            .cores
            .iter()
            .copied()
            .filter(|&c| !allowed.contains(c))
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        Err(AffinityError::NotAllowed {
            outside: Self { cores: outside },
            allowed: allowed.clone(),
        })
    }
}

/// The canonical form: runs of consecutive cores as ranges (`0-3,6`), which
/// [`CoreSet::parse`] reads back to the same set.
impl fmt::Display for CoreSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&api::device::format_cores(&self.cores))
    }
}

/// The cores this process may run on: its affinity mask (which taskset and cgroup cpusets
/// narrow), else the online CPUs from `/sys/devices/system/cpu/online`.
pub fn allowed_cores() -> Result<CoreSet, AffinityError> {
    // The main thread's mask (pid = the process id), not the caller's: a caller already on a
    // pinned pool thread must not see its own narrower set as the process's.
    let mask_error = match sys::affinity(sys::process_id()) {
        Ok(set) => return Ok(set),
        Err(e) => e,
    };
    let online = "/sys/devices/system/cpu/online";
    match std::fs::read_to_string(online) {
        Ok(text) => CoreSet::parse(text.trim()).map_err(|e| AffinityError::Unknown {
            reason: format!(
                "sched_getaffinity failed ({mask_error}) and {online} does not parse ({e})"
            ),
        }),
        Err(e) => Err(AffinityError::Unknown {
            reason: format!(
                "sched_getaffinity failed ({mask_error}) and {online} is unreadable ({e})"
            ),
        }),
    }
}

/// The cores the calling thread may run on now (`sched_getaffinity` of this thread).
pub fn current_affinity() -> Result<CoreSet, AffinityError> {
    sys::affinity(0).map_err(AffinityError::Read)
}

/// Pins the calling thread to `cores` (`sched_setaffinity`): from now on it runs only there.
pub fn pin_current_thread(cores: &CoreSet) -> Result<(), AffinityError> {
    sys::set_affinity(cores).map_err(|source| AffinityError::Pin {
        cores: cores.clone(),
        source,
    })
}

/// A rayon pool of one thread per core of `cores`, each pinned to the whole set and named
/// `llmeff-cpu<set>-<i>`; checked before it is returned: every worker reports exactly
/// `cores` as its affinity, so a pool never silently runs unpinned.
pub fn pinned_pool(cores: &CoreSet) -> Result<rayon::ThreadPool, AffinityError> {
    // A start handler cannot return an error; the first failure waits here for the check.
    let failure: Arc<Mutex<Option<(usize, io::Error)>>> = Arc::default();
    let name = cores.to_string();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores.len())
        .thread_name(move |i| format!("llmeff-cpu{name}-{i}"))
        .start_handler({
            let cores = cores.clone();
            let failure = Arc::clone(&failure);
            move |worker| {
                if let Err(e) = sys::set_affinity(&cores) {
                    let mut slot = failure.lock().unwrap_or_else(PoisonError::into_inner);
                    slot.get_or_insert((worker, e));
                }
            }
        })
        .build()
        .map_err(|source| AffinityError::Pool {
            cores: cores.clone(),
            source,
        })?;
    // A worker runs its start handler before any job, so once every worker has run this
    // broadcast, every handler has finished.
    let seen = pool.broadcast(|_| current_affinity());
    let failed = failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some((worker, source)) = failed {
        return Err(AffinityError::WorkerPin {
            worker,
            cores: cores.clone(),
            source,
        });
    }
    for (worker, actual) in seen.into_iter().enumerate() {
        let actual = actual?;
        if actual != *cores {
            return Err(AffinityError::WorkerUnpinned {
                worker,
                cores: cores.clone(),
                actual,
            });
        }
    }
    Ok(pool)
}

/// The affinity system calls on Linux.
#[cfg(target_os = "linux")]
mod sys {
    use std::io;

    use super::{CoreSet, MAX_CORES};

    /// A CPU mask of [`MAX_CORES`] bits, in the kernel's layout (bit `c % 64` of word
    /// `c / 64`; `cpu_set_t` is an array of unsigned longs, 64-bit here).
    type Mask = [u64; MAX_CORES / 64];

    /// This process's id (its main thread's, for the affinity calls).
    pub(super) fn process_id() -> libc::pid_t {
        // SAFETY: getpid has no preconditions and cannot fail.
        unsafe { libc::getpid() }
    }

    /// The affinity of thread `tid` (0: the calling thread).
    pub(super) fn affinity(tid: libc::pid_t) -> io::Result<CoreSet> {
        let mut mask: Mask = [0; MAX_CORES / 64];
        // SAFETY: the kernel writes at most `size_of_val(&mask)` bytes to `mask`, which is
        // that long; a mask larger than `cpu_set_t` is how the kernel takes more CPUs.
        let rc = unsafe {
            libc::sched_getaffinity(
                tid,
                std::mem::size_of_val(&mask),
                mask.as_mut_ptr().cast::<libc::cpu_set_t>(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let cores = (0..MAX_CORES).filter(|&c| mask[c / 64] & (1 << (c % 64)) != 0);
        CoreSet::from_cores(cores).map_err(|e| io::Error::other(e.to_string()))
    }

    /// Pins the calling thread to `cores`.
    pub(super) fn set_affinity(cores: &CoreSet) -> io::Result<()> {
        let mut mask: Mask = [0; MAX_CORES / 64];
        for &c in cores.cores() {
            mask[c / 64] |= 1 << (c % 64);
        }
        // SAFETY: the kernel reads `size_of_val(&mask)` bytes from `mask`, which is that long;
        // pid 0 is the calling thread.
        let rc = unsafe {
            libc::sched_setaffinity(
                0,
                std::mem::size_of_val(&mask),
                mask.as_ptr().cast::<libc::cpu_set_t>(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Elsewhere threads cannot be pinned; `cpu:<cores>` devices are refused.
#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;

    use super::CoreSet;

    fn unsupported() -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, "core sets need Linux")
    }

    pub(super) fn process_id() -> i32 {
        0
    }

    pub(super) fn affinity(_tid: i32) -> io::Result<CoreSet> {
        Err(unsupported())
    }

    pub(super) fn set_affinity(_cores: &CoreSet) -> io::Result<()> {
        Err(unsupported())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &str) -> Vec<usize> {
        CoreSet::parse(list)
            .unwrap_or_else(|e| panic!("{list}: {e}"))
            .cores()
            .to_vec()
    }

    #[test]
    fn lists_and_ranges_parse_sorted() {
        assert_eq!(set("0-3"), [0, 1, 2, 3]);
        assert_eq!(set("4,6"), [4, 6]);
        assert_eq!(set("0-1,4"), [0, 1, 4]);
        assert_eq!(set("6,4,2-3"), [2, 3, 4, 6]);
        assert_eq!(set("5-5"), [5]);
        assert_eq!(set("007"), [7]);
        assert_eq!(set(&(MAX_CORES - 1).to_string()), [MAX_CORES - 1]);
    }

    #[test]
    fn display_is_canonical_and_reads_back() {
        for (list, canonical) in [
            ("0-3", "0-3"),
            ("4,6", "4,6"),
            ("6,0-1,4", "0-1,4,6"),
            ("0,1,2,5,6,9", "0-2,5-6,9"),
            ("3", "3"),
        ] {
            let parsed = CoreSet::parse(list).unwrap();
            assert_eq!(parsed.to_string(), canonical, "{list}");
            assert_eq!(CoreSet::parse(canonical).unwrap(), parsed);
        }
    }

    #[test]
    fn each_bad_form_has_its_error() {
        for (list, expected) in [
            ("", "names no cores"),
            (",", "has an empty item"),
            ("0,,1", "has an empty item"),
            ("x", "`x` is not a core number"),
            ("-1", "`-1` is not a core number"),
            ("1-2-3", "`1-2-3` is not a core number"),
            (" 1", "` 1` is not a core number"),
            ("3-1", "`3-1` ends before it starts"),
            ("1,1", "core 1 is named twice"),
            ("0-2,1-4", "core 1 is named twice"),
            ("4096", "core 4096 is above 4095"),
        ] {
            let err = CoreSet::parse(list).unwrap_err().to_string();
            assert!(err.contains(expected), "{list:?}: {err}");
        }
    }

    #[test]
    fn from_cores_sorts_and_drops_repeats() {
        let set = CoreSet::from_cores([3, 1, 3]).unwrap();
        assert_eq!(set.cores(), [1, 3]);
        assert_eq!(CoreSet::from_cores([]), Err(CoreSetError::Empty));
        assert!(CoreSet::from_cores([MAX_CORES]).is_err());
    }

    #[test]
    fn cores_outside_the_allowed_ones_are_named() {
        let allowed = CoreSet::parse("0-1").unwrap();
        assert!(CoreSet::parse("1").unwrap().check_within(&allowed).is_ok());
        let one = CoreSet::parse("1,5")
            .unwrap()
            .check_within(&allowed)
            .unwrap_err();
        assert_eq!(
            one.to_string(),
            "core 5 is not one this process may run on (0-1)"
        );
        let many = CoreSet::parse("4-6")
            .unwrap()
            .check_within(&allowed)
            .unwrap_err();
        assert_eq!(
            many.to_string(),
            "cores 4-6 are not ones this process may run on (0-1)"
        );
    }

    #[test]
    fn this_process_may_run_on_the_cores_of_its_own_thread() {
        let allowed = allowed_cores().unwrap();
        assert!(!allowed.is_empty());
        // A test thread is never pinned narrower than the process.
        assert_eq!(current_affinity().unwrap(), allowed);
        let far = CoreSet::parse("4095").unwrap();
        match far.check_within(&allowed) {
            Err(AffinityError::NotAllowed { outside, .. }) => assert_eq!(outside, far),
            other => panic!("core 4095 accepted: {other:?}"),
        }
    }

    /// The first `n` cores this process may run on, or `None` (said) when it has fewer.
    fn first_allowed(n: usize) -> Option<CoreSet> {
        let allowed = allowed_cores().unwrap();
        if allowed.len() < n {
            eprintln!("skipped: this process may run on {allowed}, fewer than {n} cores");
            return None;
        }
        Some(CoreSet::from_cores(allowed.cores()[..n].iter().copied()).unwrap())
    }

    #[test]
    fn a_pinned_pool_runs_every_worker_on_its_set() {
        for n in [1, 2] {
            let Some(cores) = first_allowed(n) else {
                continue;
            };
            let pool = pinned_pool(&cores).unwrap();
            assert_eq!(pool.current_num_threads(), n);
            let seen = pool.broadcast(|ctx| {
                (
                    ctx.index(),
                    current_affinity().unwrap(),
                    std::thread::current().name().map(str::to_string),
                )
            });
            for (worker, affinity, name) in seen {
                assert_eq!(affinity, cores, "worker {worker}");
                assert_eq!(name, Some(format!("llmeff-cpu{cores}-{worker}")));
            }
            // Nested parallel work stays on the pool's pinned threads.
            let nested: Vec<CoreSet> = pool.install(|| {
                use rayon::prelude::*;
                (0..64)
                    .into_par_iter()
                    .map(|_| current_affinity().unwrap())
                    .collect()
            });
            assert!(nested.iter().all(|a| *a == cores));
        }
        // The caller is untouched.
        assert_eq!(current_affinity().unwrap(), allowed_cores().unwrap());
    }

    #[test]
    fn pinning_to_a_core_outside_the_machine_fails_instead_of_running_unpinned() {
        let far = CoreSet::parse("4095").unwrap();
        match pinned_pool(&far) {
            Err(AffinityError::WorkerPin {
                worker: 0, cores, ..
            }) => assert_eq!(cores, far),
            other => panic!("a pool on core 4095: {other:?}"),
        }
        assert!(matches!(
            pin_current_thread(&far),
            Err(AffinityError::Pin { .. })
        ));
    }
}
