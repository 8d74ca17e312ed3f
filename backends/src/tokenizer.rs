//! Text to token ids and back: a model's `tokenizer.json` through the `tokenizers` crate (the
//! same library transformers uses, so ids match it exactly), or, for built-in presets with no
//! tokenizer available, a deterministic byte-level fallback.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{BackendError, FileProblem};

/// File name of a Hugging Face fast tokenizer.
pub(crate) const TOKENIZER_FILE: &str = "tokenizer.json";

/// A model's tokenizer.
pub(crate) enum TextTokenizer {
    /// The model's own `tokenizer.json`.
    HuggingFace(Box<Tokenizer>),
    /// Stand-in for presets without a tokenizer; see [`ByteTokenizer`].
    Bytes(ByteTokenizer),
}

impl TextTokenizer {
    /// Loads `tokenizer.json` from a model folder.
    pub(crate) fn from_dir(dir: &Path) -> Result<Self, BackendError> {
        let path = dir.join(TOKENIZER_FILE);
        let invalid = |problem| BackendError::ModelFile {
            path: path.clone(),
            problem,
        };
        if !path.is_file() {
            return Err(invalid(FileProblem::Missing {
                file: TOKENIZER_FILE,
            }));
        }
        let inner = Tokenizer::from_file(&path).map_err(|e| invalid(FileProblem::Tokenizer(e)))?;
        Ok(Self::HuggingFace(Box::new(inner)))
    }

    /// Token ids with the tokenizer's special tokens (BOS for Llama) added.
    pub(crate) fn encode(&self, text: &str) -> Result<Vec<u32>, BackendError> {
        match self {
            Self::HuggingFace(t) => t
                .encode(text, true)
                .map(|e| e.get_ids().to_vec())
                .map_err(BackendError::Tokenizer),
            Self::Bytes(t) => Ok(t.encode(text)),
        }
    }

    /// Text for ids, special tokens skipped.
    pub(crate) fn decode(&self, ids: &[u32]) -> Result<String, BackendError> {
        match self {
            Self::HuggingFace(t) => t.decode(ids, true).map_err(BackendError::Tokenizer),
            Self::Bytes(t) => Ok(t.decode(ids)),
        }
    }
}

/// A byte-level tokenizer for built-in presets whose `tokenizer.json` is not available
/// offline: BOS (if the model has one), then one id per UTF-8 byte, `BYTE_OFFSET + byte`,
/// clamped to the vocabulary.
///
/// It exists so random-weight runs of preset shapes can encode prompts and decode outputs
/// without any download. Ids are deterministic but are *not* the model's real token ids, so
/// prompts are longer (one token per byte) than with the real tokenizer; figures from such runs
/// measure the architecture's cost at the token counts recorded, not text quality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ByteTokenizer {
    vocab_size: usize,
    bos: Option<u32>,
    /// BOS and EOS ids, skipped when decoding.
    specials: Vec<u32>,
}

/// Id of byte 0. Llama 2-style vocabularies keep ids 0-2 for `<unk>`, `<s>`, `</s>` and their
/// byte-fallback tokens `<0x00>`…`<0xFF>` at 3-258, so with this offset the fallback agrees with
/// TinyLlama's own byte tokens.
const BYTE_OFFSET: u32 = 3;

impl ByteTokenizer {
    /// A fallback for a model with this vocabulary and special tokens.
    pub(crate) fn new(vocab_size: usize, bos: Option<u32>, eos: &[u32]) -> Self {
        let mut specials: Vec<u32> = bos.into_iter().chain(eos.iter().copied()).collect();
        specials.sort_unstable();
        specials.dedup();
        Self {
            vocab_size,
            bos,
            specials,
        }
    }

    /// The largest valid id; 0 for an (invalid) empty vocabulary, which the config parser
    /// already refuses.
    fn max_id(&self) -> u32 {
        u32::try_from(self.vocab_size.saturating_sub(1)).unwrap_or(u32::MAX)
    }

    fn encode(&self, text: &str) -> Vec<u32> {
        let max = self.max_id();
        self.bos
            .into_iter()
            .chain(text.bytes().map(|b| (BYTE_OFFSET + u32::from(b)).min(max)))
            .collect()
    }

    /// Byte ids become their bytes (invalid UTF-8 is replaced, as lossy decoding does); any
    /// other non-special id, which a random model emits freely, is shown as `<id>` so output
    /// length stays visible.
    fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        let mut bytes = Vec::new();
        for &id in ids {
            if self.specials.binary_search(&id).is_ok() {
                continue;
            }
            match id
                .checked_sub(BYTE_OFFSET)
                .and_then(|b| u8::try_from(b).ok())
            {
                Some(byte) => bytes.push(byte),
                None => {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                    bytes.clear();
                    out.push_str(&format!("<{id}>"));
                }
            }
        }
        out.push_str(&String::from_utf8_lossy(&bytes));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_with_bos_first() {
        let t = ByteTokenizer::new(32000, Some(1), &[2]);
        let ids = t.encode("Hé!");
        assert_eq!(
            ids,
            vec![1, 3 + b'H' as u32, 3 + 0xC3, 3 + 0xA9, 3 + b'!' as u32]
        );
        assert_eq!(t.decode(&ids), "Hé!");
        // EOS is skipped, other ids are shown by number.
        assert_eq!(
            t.decode(&[3 + b'a' as u32, 2, 5000, 3 + b'b' as u32]),
            "a<5000>b"
        );
    }

    #[test]
    fn ids_stay_in_the_vocabulary() {
        let t = ByteTokenizer::new(100, None, &[]);
        let ids = t.encode("\u{ff}");
        assert!(ids.iter().all(|&id| id < 100), "{ids:?}");
        assert_eq!(t.encode("").len(), 0);
    }

    #[test]
    fn same_bos_and_eos_is_one_special() {
        // SmolLM uses id 0 for both.
        let t = ByteTokenizer::new(49152, Some(0), &[0]);
        assert_eq!(t.encode("a"), vec![0, 3 + b'a' as u32]);
        assert_eq!(t.decode(&[0, 3 + b'a' as u32, 0]), "a");
    }
}
