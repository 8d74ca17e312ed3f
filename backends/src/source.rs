//! Where a model named in a spec lives: bundled aliases in the repository's `models/` folder,
//! or a local folder holding `config.json`.

use std::path::{Path, PathBuf};

use engine::runtime::RuntimeError;

/// Models shipped in `models/`, loadable by name without any network.
pub(crate) const BUNDLED_ALIASES: [&str; 2] = ["tiny-stories", "tiny-llama3-gqa"];

/// Environment variable overriding the bundled models folder (e.g. for an installed binary).
pub(crate) const MODELS_DIR_ENV: &str = "LLMEFF_MODELS_DIR";

/// The bundled models folder: `$LLMEFF_MODELS_DIR`, else the repository's `models/` as seen at
/// build time.
pub(crate) fn models_dir() -> PathBuf {
    match std::env::var_os(MODELS_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("models"),
    }
}

/// A model folder and the name to show for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedSource {
    pub dir: PathBuf,
    pub name: String,
}

/// Resolves an alias or folder. Hub ids are not fetched (yet), so anything else is reported as
/// not found together with the aliases that would work.
pub(crate) fn resolve(source: &str) -> Result<ResolvedSource, RuntimeError> {
    let not_found = |reason: String| RuntimeError::ModelNotFound {
        name: source.to_string(),
        reason,
    };
    if BUNDLED_ALIASES.contains(&source) {
        let dir = models_dir().join(source);
        if dir.join("config.json").is_file() {
            return Ok(ResolvedSource {
                dir,
                name: source.to_string(),
            });
        }
        return Err(not_found(format!(
            "bundled model folder {} is missing or has no config.json (set {MODELS_DIR_ENV} to the folder holding the bundled models)",
            dir.display()
        )));
    }
    let path = Path::new(source);
    if path.is_dir() {
        if !path.join("config.json").is_file() {
            return Err(not_found(format!(
                "folder {} has no config.json",
                path.display()
            )));
        }
        let name = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| source.to_string());
        return Ok(ResolvedSource {
            dir: path.to_path_buf(),
            name,
        });
    }
    Err(not_found(format!(
        "not a bundled alias ({}) nor a folder with config.json; downloading from the Hugging Face Hub is not supported yet",
        BUNDLED_ALIASES.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_to_models_dir() {
        let r = resolve("tiny-stories").unwrap();
        assert_eq!(r.name, "tiny-stories");
        assert!(r.dir.join("model.safetensors").is_file());
    }

    #[test]
    fn folders_resolve_with_their_name() {
        let dir = models_dir().join("tiny-llama3-gqa");
        let r = resolve(dir.to_str().unwrap()).unwrap();
        assert_eq!(r.name, "tiny-llama3-gqa");
    }

    #[test]
    fn unknown_sources_list_aliases() {
        match resolve("meta-llama/Llama-3.2-1B") {
            Err(RuntimeError::ModelNotFound { name, reason }) => {
                assert_eq!(name, "meta-llama/Llama-3.2-1B");
                assert!(reason.contains("tiny-stories") && reason.contains("tiny-llama3-gqa"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
