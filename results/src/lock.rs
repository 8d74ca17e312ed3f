//! One writer per study folder: a lock file holding the owner's pid.
//!
//! A second `llmeff run` on the same study refuses with the holder's pid; a lock left by a
//! process that no longer exists (killed, machine rebooted) is taken over.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::StoreError;

/// Holds a study's lock until dropped.
#[derive(Debug)]
pub struct StudyLock {
    path: PathBuf,
}

fn process_alive(pid: u32) -> bool {
    // /proc exists on Linux; elsewhere assume the holder is alive rather than risk two writers.
    let proc_root = Path::new("/proc");
    if !proc_root.is_dir() {
        return true;
    }
    proc_root.join(pid.to_string()).exists()
}

impl StudyLock {
    /// Takes the lock of the study folder `dir`.
    pub fn acquire(dir: &Path) -> Result<StudyLock, StoreError> {
        Self::acquire_named(dir, "lock")
    }

    /// Takes the lock of one shard of a study: shards of one plan write disjoint parts, so each
    /// shard (not the whole folder) has one writer.
    pub fn acquire_shard(dir: &Path, index: usize, count: usize) -> Result<StudyLock, StoreError> {
        Self::acquire_named(dir, &format!("lock.shard-{index}-of-{count}"))
    }

    fn acquire_named(dir: &Path, name: &str) -> Result<StudyLock, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let path = dir.join(name);
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    writeln!(file, "{}", std::process::id())
                        .map_err(|e| StoreError::io(&path, e))?;
                    return Ok(StudyLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    match text.trim().parse::<u32>() {
                        Ok(pid) if pid != std::process::id() && process_alive(pid) => {
                            return Err(StoreError::Locked {
                                path,
                                pid: Some(pid),
                            });
                        }
                        // Stale (dead holder or unreadable): take it over.
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        Err(StoreError::Locked { path, pid: None })
    }
}

impl Drop for StudyLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_holder_blocks_and_a_dead_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // pid 1 is always alive on Linux.
        std::fs::write(dir.path().join("lock"), "1\n").unwrap();
        let err = StudyLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("pid 1"), "{err}");
        // A pid beyond the kernel's maximum cannot be alive.
        std::fs::write(dir.path().join("lock"), "4294967\n").unwrap();
        let lock = StudyLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("lock")).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(lock);
        assert!(!dir.path().join("lock").exists());
    }
}
