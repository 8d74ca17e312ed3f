//! One writer per study (or per shard of a study): kernel advisory locks (`flock`) on lock
//! files held open for the process's life.
//!
//! The kernel releases a lock when its holder dies, however it dies, so there is no stale
//! lock to detect and a reused pid cannot block; the holder's pid, host and start time are
//! written into the file only to name it in the refusal. The files:
//! - `lock`: a plain run holds it exclusively; every shard holds it shared, so a plain run and
//!   a shard run refuse each other.
//! - `lock.shards-N`: shards of count N hold it shared; a shard of another count finds it held
//!   and refuses, since two layouts would run the same work twice.
//! - `lock.shard-I-of-N`: one shard's slice, held exclusively.
//! - `lock.gate`: held exclusively for the moment a shard takes the locks above, so two shard
//!   layouts starting together cannot both see the other's count free.
//! - `lock.compact`: held exclusively (waiting up to a timeout) while the tables are rebuilt.
//!
//! A holder that is the last one removes its file before releasing it; a taker checks after
//! locking that the path still names the file it locked (else it locked a removed file and
//! tries again).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::StoreError;

/// How long a shard waits for another shard to finish taking its locks.
const GATE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long compaction waits for another process's compaction.
pub const COMPACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// How a lock is asked for.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Exclusive,
    Shared,
    /// Exclusive, waiting up to the duration.
    Wait(Duration),
}

/// One held lock file.
#[derive(Debug)]
struct Held {
    file: File,
    path: PathBuf,
    exclusive: bool,
}

/// Whether `file` (open) is still the file at `path`.
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// Takes the lock of `path` (creating the file); `None` when another holder has it.
fn take(path: &Path, mode: Mode) -> Result<Option<Held>, StoreError> {
    // A few tries: each retry means a holder removed the file between our open and our lock.
    for _ in 0..16 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        let attempt = match mode {
            Mode::Exclusive => file.try_lock(),
            Mode::Shared => file.try_lock_shared(),
            Mode::Wait(timeout) => {
                let start = Instant::now();
                loop {
                    match file.try_lock() {
                        Err(TryLockError::WouldBlock) if start.elapsed() < timeout => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        other => break other,
                    }
                }
            }
        };
        match attempt {
            Ok(()) if same_file(&file, path) => {
                return Ok(Some(Held {
                    file,
                    path: path.to_path_buf(),
                    exclusive: mode != Mode::Shared,
                }));
            }
            Ok(()) => continue,
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(StoreError::io(path, e)),
        }
    }
    Err(StoreError::Locked {
        path: path.to_path_buf(),
        holder: "processes that keep replacing the lock file".into(),
    })
}

impl Held {
    /// Writes who holds the lock, for the refusal of the next taker.
    fn describe(&self, role: &str) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            let text = format!(
                "{role}pid {} on {} since {}\n",
                std::process::id(),
                hostname(),
                started()
            );
            // Best effort: the kernel lock, not this text, is what excludes.
            if self.file.set_len(0).is_ok() {
                let _ = self.file.write_all_at(text.as_bytes(), 0);
            }
        }
        #[cfg(not(unix))]
        let _ = role;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // The last holder removes the file; a shared holder is the last when it can take the
        // lock exclusively. The lock is released when `file` closes, after the removal.
        let last = self.exclusive || self.file.try_lock().is_ok();
        if last && same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "an unknown host".into())
}

/// This process's start, as an ISO 8601 UTC time.
fn started() -> String {
    static START: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    START
        .get_or_init(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            crate::time::UtcTime::from_unix_s(now).iso8601()
        })
        .clone()
}

/// Who holds `path`, as its holder wrote it.
fn holder(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        "another process".into()
    } else {
        text.to_string()
    }
}

fn locked(path: &Path) -> StoreError {
    StoreError::Locked {
        path: path.to_path_buf(),
        holder: holder(path),
    }
}

/// Holds a study's (or a shard's) locks until dropped.
#[derive(Debug)]
pub struct StudyLock {
    /// Dropped in order: the narrowest lock first, the study-wide one last.
    _held: Vec<Held>,
    removed_temporaries: usize,
}

impl StudyLock {
    /// Takes the study folder `dir` exclusively (a plain run), and removes the temporary
    /// files writers killed before left there.
    pub fn acquire(dir: &Path) -> Result<StudyLock, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let path = dir.join("lock");
        let study = take(&path, Mode::Exclusive)?.ok_or_else(|| locked(&path))?;
        study.describe("");
        let removed_temporaries = crate::store::remove_stale_temporaries(dir)?;
        Ok(StudyLock {
            _held: vec![study],
            removed_temporaries,
        })
    }

    /// Takes one shard of a study: its slice exclusively, the study and its shard count
    /// shared. Refused while a plain run, the same shard, or shards of another count are live.
    /// When no other shard is live, stale temporary files are removed too.
    pub fn acquire_shard(dir: &Path, index: usize, count: usize) -> Result<StudyLock, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let gate_path = dir.join("lock.gate");
        let gate = take(&gate_path, Mode::Wait(GATE_TIMEOUT))?.ok_or_else(|| locked(&gate_path))?;
        let role = format!("shard {index}/{count}: ");
        let study_path = dir.join("lock");
        let mut removed_temporaries = 0;
        let study = match take(&study_path, Mode::Exclusive)? {
            Some(mut study) => {
                // Alone in the study: no live writer owns a temporary file. Then share the
                // lock with the other shards (a plain run taking it in between makes the
                // downgrade fail, and this shard refuses; as a non-exclusive holder it then
                // leaves the file to the new owner).
                removed_temporaries = crate::store::remove_stale_temporaries(dir)?;
                study.exclusive = false;
                if study.file.try_lock_shared().is_err() {
                    drop(study);
                    return Err(locked(&study_path));
                }
                study
            }
            None => take(&study_path, Mode::Shared)?.ok_or_else(|| locked(&study_path))?,
        };
        let own_count = format!("lock.shards-{count}");
        let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with("lock.shards-") || name == own_count {
                continue;
            }
            let path = entry.path();
            // A count file nobody holds is left by a dead layout: taking it exclusively
            // removes it on drop.
            if take(&path, Mode::Exclusive)?.is_none() {
                return Err(StoreError::LayoutConflict {
                    holder: holder(&path),
                    path,
                });
            }
        }
        let count_path = dir.join(own_count);
        let shards = take(&count_path, Mode::Shared)?.ok_or_else(|| locked(&count_path))?;
        let slice_path = dir.join(format!("lock.shard-{index}-of-{count}"));
        let slice = take(&slice_path, Mode::Exclusive)?.ok_or_else(|| locked(&slice_path))?;
        for held in [&study, &shards, &slice] {
            held.describe(&role);
        }
        drop(gate);
        Ok(StudyLock {
            _held: vec![slice, shards, study],
            removed_temporaries,
        })
    }

    /// How many temporary files of killed writers were removed when the lock was taken.
    pub fn removed_temporaries(&self) -> usize {
        self.removed_temporaries
    }
}

/// Held while a study's tables are rebuilt, so two processes finishing together do not
/// overwrite each other's compaction with an older one.
#[derive(Debug)]
pub struct CompactionLock {
    _held: Held,
}

impl CompactionLock {
    /// Takes the compaction lock of `dir`, waiting up to `timeout` for another compaction.
    pub fn acquire(dir: &Path, timeout: Duration) -> Result<CompactionLock, StoreError> {
        let path = dir.join("lock.compact");
        let held = take(&path, Mode::Wait(timeout))?.ok_or_else(|| locked(&path))?;
        held.describe("compaction: ");
        Ok(CompactionLock { _held: held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_without_a_kernel_lock_does_not_block() {
        // A reused pid (pid 1 is always alive) named in a leftover file.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lock"), "pid 1 on elsewhere since 1970\n").unwrap();
        let lock = StudyLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("lock")).unwrap();
        assert!(
            text.starts_with(&format!("pid {} on ", std::process::id())),
            "{text}"
        );
        drop(lock);
        assert!(!dir.path().join("lock").exists());
    }

    #[test]
    fn a_held_study_refuses_a_second_writer_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = StudyLock::acquire(dir.path()).unwrap();
        let err = StudyLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("locked by pid {}", std::process::id())),
            "{err}"
        );
        assert!(StudyLock::acquire_shard(dir.path(), 0, 2).is_err());
        drop(first);
        StudyLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn shards_share_the_study_but_not_a_slice_nor_another_count() {
        let dir = tempfile::tempdir().unwrap();
        let a = StudyLock::acquire_shard(dir.path(), 0, 2).unwrap();
        let b = StudyLock::acquire_shard(dir.path(), 1, 2).unwrap();
        let same = StudyLock::acquire_shard(dir.path(), 1, 2)
            .unwrap_err()
            .to_string();
        assert!(same.contains("shard 1/2"), "{same}");
        let other = StudyLock::acquire_shard(dir.path(), 0, 3).unwrap_err();
        assert!(
            matches!(other, StoreError::LayoutConflict { .. }),
            "{other}"
        );
        let plain = StudyLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(plain.contains("locked by shard"), "{plain}");
        drop(a);
        // One shard of the count still live keeps other counts and plain runs out.
        assert!(StudyLock::acquire_shard(dir.path(), 0, 3).is_err());
        assert!(StudyLock::acquire(dir.path()).is_err());
        drop(b);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(names.is_empty(), "{names:?}");
        StudyLock::acquire_shard(dir.path(), 0, 3).unwrap();
    }

    #[test]
    fn compaction_waits_for_the_holder_then_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let held = CompactionLock::acquire(dir.path(), Duration::ZERO).unwrap();
        let err = CompactionLock::acquire(dir.path(), Duration::from_millis(20)).unwrap_err();
        assert!(err.to_string().contains("compaction: pid"), "{err}");
        drop(held);
        CompactionLock::acquire(dir.path(), Duration::ZERO).unwrap();
    }
}
