//! The small files of a Llama model, read before any weight: `config.json`, the EOS ids of
//! `generation_config.json`, and the tokenizer, from a model folder or a built-in preset.

use std::path::Path;

use api::runtime::RuntimeError;
use serde_json::Value;

use super::config::{LlamaConfig, TokenIds};
use crate::error::{BackendError, FileProblem};
use crate::gguf::GgufFile;
use crate::source::ResolvedSource;
use crate::tokenizer::{ByteTokenizer, TOKENIZER_FILE, TextTokenizer};

/// Name of the model config in a folder.
const CONFIG_FILE: &str = "config.json";

/// A model's config, stop tokens and tokenizer.
pub(crate) struct ModelFiles {
    pub config: LlamaConfig,
    /// What generation stops at: `generation_config.json`'s ids, else `config.json`'s.
    pub eos_token_ids: Vec<u32>,
    pub tokenizer: TextTokenizer,
}

impl ModelFiles {
    /// Reads them from the source's folder; a preset fills in the config and (byte-level) the
    /// tokenizer where the folder lacks them or there is none.
    pub(crate) fn read(source: &ResolvedSource) -> Result<Self, RuntimeError> {
        if let Some(path) = &source.gguf {
            return Self::read_gguf(path);
        }
        let dir = source.dir.as_deref();
        let missing = |file: &str| RuntimeError::InvalidModelFile {
            path: dir.map_or_else(|| file.to_string(), |d| d.join(file).display().to_string()),
            reason: format!("missing: the model has no {file}"),
        };
        let config_path = dir.map(|d| d.join(CONFIG_FILE)).filter(|p| p.is_file());
        let config = match (config_path, source.preset) {
            (Some(path), _) => LlamaConfig::from_file(&path)?,
            (None, Some(preset)) => LlamaConfig::from_json(preset.config_json, &preset.label())?,
            (None, None) => return Err(missing(CONFIG_FILE)),
        };
        let eos_token_ids = match dir {
            Some(d) => generation_config_eos(d)?,
            None => None,
        }
        .unwrap_or_else(|| config.eos_token_ids.clone());
        let has_tokenizer = dir.is_some_and(|d| d.join(TOKENIZER_FILE).is_file());
        let tokenizer = match (dir, source.preset) {
            (Some(d), _) if has_tokenizer => TextTokenizer::from_dir(d)?,
            // Only presets fall back: for any other model a missing tokenizer is an error, so
            // a real model never silently runs on made-up token ids.
            (_, Some(_)) => TextTokenizer::Bytes(ByteTokenizer::new(
                config.vocab_size,
                config.bos_token_id,
                &eos_token_ids,
            )),
            (Some(d), None) => TextTokenizer::from_dir(d)?,
            (None, None) => return Err(missing(TOKENIZER_FILE)),
        };
        Ok(Self {
            config,
            eos_token_ids,
            tokenizer,
        })
    }
}

impl ModelFiles {
    /// The config and tokenizer a GGUF file's metadata implies (the config as the
    /// `config.json` it stands for, read by the same parser).
    fn read_gguf(path: &Path) -> Result<Self, RuntimeError> {
        let problem = |e| BackendError::ModelFile {
            path: path.to_path_buf(),
            problem: FileProblem::Gguf(e),
        };
        let gguf = GgufFile::open(path).map_err(problem)?;
        let config_json = gguf.hf_config().map_err(problem)?;
        let config = LlamaConfig::from_json(
            &config_json.to_string(),
            &format!("{} (its metadata as config.json)", path.display()),
        )?;
        let tokenizer = TextTokenizer::HuggingFace(Box::new(gguf.tokenizer().map_err(problem)?));
        Ok(Self {
            eos_token_ids: config.eos_token_ids.clone(),
            config,
            tokenizer,
        })
    }
}

/// EOS ids from `generation_config.json`, which is what transformers' `generate` stops on
/// (Llama 3 instruct lists several there while `config.json` has one). `None` when the file or
/// the field is absent.
fn generation_config_eos(dir: &Path) -> Result<Option<Vec<u32>>, RuntimeError> {
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let invalid = |reason: String| RuntimeError::InvalidModelFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| invalid(format!("cannot read: {e}")))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    match value.get("eos_token_id") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value::<TokenIds>(v.clone())
            .map(|ids| Some(ids.into_vec()))
            .map_err(|_| invalid("eos_token_id must be a token id or a list of them".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::rope::RopeScaling;
    use super::super::weights::parameter_count;
    use super::*;
    use crate::presets::{self, PRESETS};

    fn preset_files(id: &str) -> ModelFiles {
        let source = ResolvedSource {
            dir: None,
            preset: presets::find(id),
            gguf: None,
            name: id.to_string(),
        };
        ModelFiles::read(&source).unwrap_or_else(|e| panic!("{id}: {e}"))
    }

    #[test]
    fn every_preset_has_the_published_parameter_count() {
        // Counted analytically from the shapes (no weights are allocated); these are the
        // totals `model.num_parameters()` reports for the real checkpoints (tied weights
        // once). The model cards agree: Qwen3's "0.44B / 1.4B / 6.95B non-embedding" are these
        // minus the embedding table (twice for the untied 8B); Qwen3-1.7B's repository stores
        // a copy of its tied head, which is why its safetensors hold 2,031,739,904
        // (= 1,720,574,976 + 151936 · 2048).
        let expected = [
            ("HuggingFaceTB/SmolLM-135M", 134_515_008u64),
            ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", 1_100_048_384),
            ("meta-llama/Llama-3.2-1B", 1_235_814_400),
            ("meta-llama/Llama-3.2-3B", 3_212_749_824),
            ("meta-llama/Llama-3.1-8B", 8_030_261_248),
            ("Qwen/Qwen2.5-0.5B", 494_032_768),
            ("Qwen/Qwen2.5-1.5B", 1_543_714_304),
            ("Qwen/Qwen2.5-7B", 7_615_616_512),
            ("Qwen/Qwen3-0.6B", 596_049_920),
            ("Qwen/Qwen3-1.7B", 1_720_574_976),
            ("Qwen/Qwen3-8B", 8_190_735_360),
            ("mistralai/Mistral-7B-v0.3", 7_248_023_552),
            ("microsoft/Phi-3-mini-4k-instruct", 3_821_079_552),
            ("google/gemma-2-2b", 2_614_341_888),
            ("google/gemma-2-9b", 9_241_705_984),
        ];
        assert_eq!(PRESETS.len(), expected.len());
        for (id, count) in expected {
            let files = preset_files(id);
            assert_eq!(parameter_count(&files.config), count, "{id}");
            assert!(matches!(files.tokenizer, TextTokenizer::Bytes(_)), "{id}");
        }
    }

    #[test]
    fn preset_shapes_and_special_tokens() {
        let c = preset_files("TinyLlama/TinyLlama-1.1B-Chat-v1.0").config;
        assert_eq!(
            (
                c.hidden_size,
                c.num_layers,
                c.num_heads,
                c.num_kv_heads,
                c.head_dim
            ),
            (2048, 22, 32, 4, 64)
        );
        assert_eq!((c.intermediate_size, c.vocab_size), (5632, 32000));
        assert!(!c.tie_word_embeddings);
        assert_eq!(
            (c.bos_token_id, c.eos_token_ids.clone()),
            (Some(1), vec![2])
        );
        assert_eq!(c.rope.scaling, RopeScaling::None);

        let c = preset_files("meta-llama/Llama-3.2-1B").config;
        assert!(c.tie_word_embeddings);
        assert_eq!(
            (c.num_kv_heads, c.head_dim, c.max_position_embeddings),
            (8, 64, 131072)
        );
        assert_eq!(c.rope.theta, 500000.0);
        assert_eq!(
            c.rope.scaling,
            RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0
            }
        );
        assert_eq!(
            (c.bos_token_id, c.eos_token_ids.clone()),
            (Some(128000), vec![128001])
        );

        let c = preset_files("meta-llama/Llama-3.2-3B").config;
        assert!(c.tie_word_embeddings);
        assert_eq!(
            (c.hidden_size, c.num_layers, c.num_heads, c.head_dim),
            (3072, 28, 24, 128)
        );

        let c = preset_files("meta-llama/Llama-3.1-8B").config;
        assert!(!c.tie_word_embeddings);
        assert_eq!(
            (c.hidden_size, c.intermediate_size, c.head_dim),
            (4096, 14336, 128)
        );
        assert!(matches!(c.rope.scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));

        let c = preset_files("HuggingFaceTB/SmolLM-135M").config;
        assert_eq!(
            (
                c.hidden_size,
                c.num_layers,
                c.num_heads,
                c.num_kv_heads,
                c.intermediate_size
            ),
            (576, 30, 9, 3, 1536)
        );
        assert_eq!((c.vocab_size, c.max_position_embeddings), (49152, 2048));
        assert!(c.tie_word_embeddings);
        assert_eq!((c.rope.theta, c.rms_norm_eps), (10000.0, 1e-5));
    }

    #[test]
    fn preset_fallback_tokenizer_encodes_with_bos() {
        let files = preset_files("meta-llama/Llama-3.2-1B");
        let ids = files.tokenizer.encode("Hi").unwrap();
        assert_eq!(ids[0], 128000);
        assert_eq!(ids.len(), 3);
        assert_eq!(files.tokenizer.decode(&ids).unwrap(), "Hi");
    }

    #[test]
    fn a_cached_config_wins_over_the_preset() {
        let tmp = tempfile::tempdir().unwrap();
        let tiny = crate::source::models_dir().join("tiny-stories");
        std::fs::copy(tiny.join(CONFIG_FILE), tmp.path().join(CONFIG_FILE)).unwrap();
        let source = ResolvedSource {
            dir: Some(tmp.path().to_path_buf()),
            preset: presets::find("HuggingFaceTB/SmolLM-135M"),
            gguf: None,
            name: "HuggingFaceTB/SmolLM-135M".into(),
        };
        let files = ModelFiles::read(&source).unwrap();
        assert_eq!(files.config.hidden_size, 64);
        // No tokenizer.json next to it: the preset's fallback is used.
        assert!(matches!(files.tokenizer, TextTokenizer::Bytes(_)));

        std::fs::copy(tiny.join(TOKENIZER_FILE), tmp.path().join(TOKENIZER_FILE)).unwrap();
        let files = ModelFiles::read(&source).unwrap();
        assert!(matches!(files.tokenizer, TextTokenizer::HuggingFace(_)));
    }

    #[test]
    fn folders_without_a_tokenizer_are_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let tiny = crate::source::models_dir().join("tiny-stories");
        std::fs::copy(tiny.join(CONFIG_FILE), tmp.path().join(CONFIG_FILE)).unwrap();
        let source = ResolvedSource {
            dir: Some(tmp.path().to_path_buf()),
            preset: None,
            gguf: None,
            name: "x".into(),
        };
        assert!(matches!(
            ModelFiles::read(&source),
            Err(RuntimeError::InvalidModelFile { .. })
        ));
    }
}
