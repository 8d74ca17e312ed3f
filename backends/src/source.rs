//! Where a model named in a spec lives: a bundled alias (found as [`crate::bundled`] says), a
//! local folder holding `config.json`, or a Hugging Face Hub id (`org/name`) found in, or
//! downloaded to, the Hub cache; for random weights, a built-in preset config.

use std::path::{Path, PathBuf};

use api::runtime::{RuntimeError, WeightsKind};

use crate::bundled::{self, ModelsSearch};
use crate::error::InputError;
use crate::hub::{HubCache, Needed};
use crate::presets::{self, Preset};

/// The Hub revision used when a spec names none.
const DEFAULT_REVISION: &str = "main";

/// The repository's `models/` folder, for tests that read a bundled model's files directly.
#[cfg(test)]
pub(crate) fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("models")
}

/// A model's files and the name to show for it.
///
/// Files are read from `dir` when it has them; a `preset` supplies the config (and, through the
/// byte-level fallback, a tokenizer) where it does not. At least one of the two is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedSource {
    /// A folder with `config.json`, `tokenizer.json`, weights ...; `None` for a preset with
    /// nothing cached.
    pub dir: Option<PathBuf>,
    /// Built-in config for a Hub id loaded with random weights.
    pub preset: Option<&'static Preset>,
    /// A llama.cpp GGUF file holding the config, tokenizer and weights (`dir` and `preset`
    /// are then `None`).
    pub gguf: Option<PathBuf>,
    /// Alias, folder name or Hub id.
    pub name: String,
}

/// Resolves a spec's source: a bundled alias, then an existing folder, then a Hub id.
/// `revision` applies to Hub ids only; random weights need no checkpoint, and for preset ids no
/// files at all. Bundled models are searched for as this process's environment says.
pub(crate) fn resolve(
    source: &str,
    revision: Option<&str>,
    weights: WeightsKind,
    hub: &HubCache,
) -> Result<ResolvedSource, RuntimeError> {
    resolve_with(source, revision, weights, hub, &ModelsSearch::from_env())
}

/// [`resolve`] with bundled models searched for by `models`.
pub(crate) fn resolve_with(
    source: &str,
    revision: Option<&str>,
    weights: WeightsKind,
    hub: &HubCache,
    models: &ModelsSearch,
) -> Result<ResolvedSource, RuntimeError> {
    let not_found = |reason: String| RuntimeError::ModelNotFound {
        name: source.to_string(),
        reason,
    };
    let local_only = || match revision {
        Some(revision) => Err(RuntimeError::from(InputError::RevisionOfLocalModel {
            revision: revision.to_string(),
            model: source.to_string(),
        })),
        None => Ok(()),
    };
    let local = |dir: PathBuf, name: String| {
        local_only()?;
        Ok(ResolvedSource {
            dir: Some(dir),
            preset: None,
            gguf: None,
            name,
        })
    };
    if bundled::aliases().any(|alias| alias == source) {
        // The revision check first: a bundled model is not unpacked for a spec that fails.
        local_only()?;
        let dir = models
            .locate(source)
            .map_err(|e| not_found(e.to_string()))?;
        return local(dir, source.to_string());
    }
    let path = Path::new(source);
    if path.is_file() {
        let is_gguf = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        if !is_gguf {
            return Err(not_found(format!(
                "{} is a file, and the only model file llmeff reads is a llama.cpp `.gguf`; a Hugging Face model is a folder with config.json",
                path.display()
            )));
        }
        local_only()?;
        let name = path
            .file_stem()
            .map_or_else(|| source.to_string(), |n| n.to_string_lossy().into_owned());
        return Ok(ResolvedSource {
            dir: None,
            preset: None,
            gguf: Some(path.to_path_buf()),
            name,
        });
    }
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
        return local(path.to_path_buf(), name);
    }
    if !is_hub_id(source) {
        return Err(not_found(format!(
            "not a bundled alias ({}), a folder with config.json, a `.gguf` file, nor a Hugging Face Hub id of the form `org/name`",
            bundled::aliases().collect::<Vec<_>>().join(", ")
        )));
    }
    let revision = revision.unwrap_or(DEFAULT_REVISION);
    let hub_source = |dir, preset| ResolvedSource {
        dir,
        preset,
        gguf: None,
        name: source.to_string(),
    };
    match (weights, presets::find(source)) {
        // A cached config (and tokenizer) wins over the preset; otherwise nothing is fetched,
        // so preset shapes run offline.
        (WeightsKind::Random, Some(preset)) => {
            let cached = hub
                .cached_snapshot(source, revision)?
                .filter(|dir| dir.join("config.json").is_file());
            Ok(hub_source(cached, Some(preset)))
        }
        (WeightsKind::Random, None) => hub
            .resolve(source, revision, Needed::ConfigAndTokenizer)
            .map(|dir| hub_source(Some(dir), None))
            .map_err(with_preset_note),
        (WeightsKind::Pretrained, _) => hub
            .resolve(source, revision, Needed::Everything)
            .map(|dir| hub_source(Some(dir), None)),
    }
}

/// True for `org/name` with the characters the Hub allows (letters, digits, `-`, `_`, `.`),
/// neither part starting or ending with `-` or `.`, and no `--` or `..` (as huggingface_hub's
/// `validate_repo_id` requires).
pub(crate) fn is_hub_id(source: &str) -> bool {
    let Some((org, name)) = source.split_once('/') else {
        return false;
    };
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
    };
    source.len() <= 96
        && part_ok(org)
        && part_ok(name)
        && !source.contains("--")
        && !source.contains("..")
}

/// Adds the ids that would run with random weights without any download to a not-found error.
fn with_preset_note(err: RuntimeError) -> RuntimeError {
    match err {
        RuntimeError::ModelNotFound { name, reason } => RuntimeError::ModelNotFound {
            name,
            reason: format!(
                "{reason}. (With random weights these Hub ids need no download: {}.)",
                presets::preset_ids().collect::<Vec<_>>().join(", ")
            ),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline_hub() -> (tempfile::TempDir, HubCache) {
        let tmp = tempfile::tempdir().unwrap();
        let hub = HubCache::new(tmp.path()).offline(true);
        (tmp, hub)
    }

    /// Bundled models searched for in the repository's `models/` only, never unpacked into
    /// the real data folder.
    fn repository_models() -> ModelsSearch {
        ModelsSearch {
            override_dir: Some(models_dir()),
            ..ModelsSearch::default()
        }
    }

    fn resolve_offline(source: &str, weights: WeightsKind) -> Result<ResolvedSource, RuntimeError> {
        let (_tmp, hub) = offline_hub();
        resolve_with(source, None, weights, &hub, &repository_models())
    }

    #[test]
    fn aliases_resolve_to_models_dir() {
        let r = resolve_offline("tiny-stories", WeightsKind::Pretrained).unwrap();
        assert_eq!(r.name, "tiny-stories");
        assert!(r.dir.unwrap().join("model.safetensors").is_file());
        assert_eq!(r.preset, None);
    }

    #[test]
    fn aliases_with_no_folder_anywhere_are_unpacked_into_the_data_folder() {
        let (_tmp, hub) = offline_hub();
        let data = tempfile::tempdir().unwrap();
        let search = ModelsSearch {
            data_dir: Some(data.path().join("llmeff/models")),
            ..ModelsSearch::default()
        };
        let r = resolve_with(
            "tiny-llama3-gqa",
            None,
            WeightsKind::Pretrained,
            &hub,
            &search,
        )
        .unwrap();
        let dir = r.dir.unwrap();
        assert_eq!(dir, data.path().join("llmeff/models/tiny-llama3-gqa"));
        assert!(dir.join("model.safetensors").is_file());
        // A revision is refused before anything is unpacked.
        let other = tempfile::tempdir().unwrap();
        let search = ModelsSearch {
            data_dir: Some(other.path().join("models")),
            ..ModelsSearch::default()
        };
        assert!(matches!(
            resolve_with(
                "tiny-stories",
                Some("main"),
                WeightsKind::Pretrained,
                &hub,
                &search
            ),
            Err(RuntimeError::InvalidInput(_))
        ));
        assert!(!other.path().join("models").exists());
    }

    #[test]
    fn a_models_dir_override_without_the_model_says_so() {
        let (_tmp, hub) = offline_hub();
        let empty = tempfile::tempdir().unwrap();
        let search = ModelsSearch {
            override_dir: Some(empty.path().to_path_buf()),
            ..ModelsSearch::default()
        };
        match resolve_with("tiny-stories", None, WeightsKind::Pretrained, &hub, &search) {
            Err(RuntimeError::ModelNotFound { name, reason }) => {
                assert_eq!(name, "tiny-stories");
                assert!(reason.contains("LLMEFF_MODELS_DIR is set"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn folders_resolve_with_their_name() {
        let dir = models_dir().join("tiny-llama3-gqa");
        let r = resolve_offline(dir.to_str().unwrap(), WeightsKind::Pretrained).unwrap();
        assert_eq!(r.name, "tiny-llama3-gqa");
    }

    #[test]
    fn revisions_are_for_hub_ids_only() {
        let (_tmp, hub) = offline_hub();
        assert!(matches!(
            resolve_with(
                "tiny-stories",
                Some("main"),
                WeightsKind::Pretrained,
                &hub,
                &repository_models()
            ),
            Err(RuntimeError::InvalidInput(_))
        ));
    }

    #[test]
    fn unknown_sources_list_aliases() {
        match resolve_offline("no-such-model", WeightsKind::Pretrained) {
            Err(RuntimeError::ModelNotFound { name, reason }) => {
                assert_eq!(name, "no-such-model");
                assert!(reason.contains("tiny-stories") && reason.contains("tiny-llama3-gqa"));
                assert!(reason.contains("org/name"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn hub_ids_are_recognised() {
        for id in [
            "meta-llama/Llama-3.2-1B",
            "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
            "a/b_c.d",
        ] {
            assert!(is_hub_id(id), "{id}");
        }
        for not in [
            "gpt2", "a/b/c", "/abs", "./x", "a/", "a/-b", "a/b.", "a--b/c", "a/b..c", "a b/c",
        ] {
            assert!(!is_hub_id(not), "{not}");
        }
    }

    #[test]
    fn presets_need_nothing_with_random_weights() {
        let r = resolve_offline("meta-llama/Llama-3.1-8B", WeightsKind::Random).unwrap();
        assert_eq!(r.dir, None);
        assert_eq!(r.preset.map(|p| p.id), Some("meta-llama/Llama-3.1-8B"));
        assert_eq!(r.name, "meta-llama/Llama-3.1-8B");
        // Pretrained weights of a preset id still have to come from the cache.
        assert!(matches!(
            resolve_offline("meta-llama/Llama-3.1-8B", WeightsKind::Pretrained),
            Err(RuntimeError::ModelNotFound { .. })
        ));
    }

    #[test]
    fn random_weights_of_other_ids_mention_the_presets() {
        match resolve_offline("org/unknown", WeightsKind::Random) {
            Err(RuntimeError::ModelNotFound { reason, .. }) => {
                assert!(reason.contains("HuggingFaceTB/SmolLM-135M"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
