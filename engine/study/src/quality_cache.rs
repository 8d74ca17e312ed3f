//! The study folder's cache of quality references: `<study>/quality/<key>.bin`, one file per
//! (reference model, prompt ids, generation length), written atomically, so later runs, later
//! invocations and resumed studies reuse a reference instead of recomputing it.

use std::path::{Path, PathBuf};

use engine::quality_run::{CacheError, ReferenceCache};

/// Reference outputs kept as files in a study folder.
#[derive(Debug, Clone)]
pub struct StudyReferenceCache {
    dir: PathBuf,
}

impl StudyReferenceCache {
    /// The cache of the study folder `study_dir` (its `quality/` folder, created on first
    /// store).
    pub fn new(study_dir: &Path) -> Self {
        StudyReferenceCache {
            dir: study_dir.join("quality"),
        }
    }

    /// The file a key is kept in.
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.bin"))
    }
}

impl ReferenceCache for StudyReferenceCache {
    fn load(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        match std::fs::read(self.path(key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Box::new(e)),
        }
    }

    fn store(&self, key: &str, bytes: &[u8]) -> Result<(), CacheError> {
        std::fs::create_dir_all(&self.dir)?;
        results::parquet_io::write_bytes(&self.path(key), bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_reference_reads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let cache = StudyReferenceCache::new(dir.path());
        assert!(cache.load("abc").unwrap().is_none());
        cache.store("abc", b"bytes").unwrap();
        assert_eq!(cache.load("abc").unwrap().as_deref(), Some(&b"bytes"[..]));
        assert!(dir.path().join("quality/abc.bin").is_file());
        // Only the file itself: no temporary is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("quality"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("abc.bin")]);
    }
}
