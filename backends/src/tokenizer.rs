//! Text to token ids and back with a model's `tokenizer.json`, through the `tokenizers` crate
//! (the same library transformers uses, so ids match it exactly).

use std::path::Path;

use engine::runtime::RuntimeError;
use tokenizers::Tokenizer;

/// File name of a Hugging Face fast tokenizer.
pub(crate) const TOKENIZER_FILE: &str = "tokenizer.json";

/// A model's tokenizer.
pub(crate) struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` from a model folder.
    pub(crate) fn from_dir(dir: &Path) -> Result<Self, RuntimeError> {
        let path = dir.join(TOKENIZER_FILE);
        let invalid = |reason: String| RuntimeError::InvalidModelFile {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(invalid(format!(
                "missing: the model folder has no {TOKENIZER_FILE}"
            )));
        }
        let inner = Tokenizer::from_file(&path).map_err(|e| invalid(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Token ids with the tokenizer's special tokens (BOS for Llama) added.
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))
    }

    /// Text for ids, special tokens skipped.
    pub(crate) fn decode(&self, ids: &[u32]) -> Result<String, RuntimeError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))
    }
}
