//! GGUF tokenizer metadata as a `tokenizers::Tokenizer`, built as the `tokenizer.json`
//! Hugging Face has for the same vocabulary (transformers' own GGUF loader,
//! `integrations/ggml.py`, converts the same way):
//!
//! - `tokenizer.ggml.model = "llama"` (SentencePiece, scores): a BPE model over the tokens
//!   with byte fallback (when the vocabulary has `<0xXX>` byte tokens), merges derived from the
//!   scores as transformers derives them from a SentencePiece model (every split of a normal
//!   token into two normal tokens; higher score first, then lower token id, then shorter left
//!   part), a `Metaspace` pre-tokenizer (`▁`, a leading one added when
//!   `tokenizer.ggml.add_space_prefix`, default true) and the matching decoder.
//! - `tokenizer.ggml.model = "gpt2"` (byte-level BPE): the tokens and
//!   `tokenizer.ggml.merges`, with the pre-tokenizer `tokenizer.ggml.pre` names (llama.cpp keeps
//!   only that label; the regular expressions are those of the Hugging Face tokenizers it
//!   stands for).
//!
//! Token types (`tokenizer.ggml.token_type`, SentencePiece's: 1 normal, 2 unknown, 3 control,
//! 4 user-defined, 5 unused, 6 byte): control and unknown tokens become special added tokens,
//! user-defined ones plain added tokens. BOS and EOS are added as
//! `tokenizer.ggml.add_bos_token` / `add_eos_token` say (defaults: BOS for `llama` and Llama 3
//! style BPE, as llama.cpp; no EOS).

use std::collections::HashMap;

use serde_json::{Value, json};
use tokenizers::Tokenizer;

use super::GgufFile;
use super::error::GgufError;
use super::format::MetadataValue;

/// The tokenizer models llmeff builds, as error messages list them.
pub(crate) const SUPPORTED_TOKENIZER_MODELS: &str =
    "llama (SentencePiece with scores), gpt2 (byte-level BPE with merges)";
/// The BPE pre-tokenizers llmeff knows, as error messages list them.
pub(crate) const SUPPORTED_PRE_TOKENIZERS: &str =
    "default, gpt-2, llama-bpe, llama3, llama-v3, qwen2, deepseek-r1-qwen, smollm";

/// SentencePiece's normal-token type (llama.cpp stores SentencePiece's types as they are).
const NORMAL: i64 = 1;
/// SentencePiece's unknown-token type.
const UNKNOWN: i64 = 2;
/// SentencePiece's control-token type (BOS, EOS, chat markers).
const CONTROL: i64 = 3;
/// SentencePiece's user-defined type (tokens matched whole in the input).
const USER_DEFINED: i64 = 4;
/// SentencePiece's byte-fallback type (`<0xXX>`).
const BYTE: i64 = 6;

/// The longest token merges are derived for: each split of a token hashes its halves, so the
/// work grows with the square of a token's length, and a hostile vocabulary of huge tokens
/// could otherwise stall the load. Real SentencePiece pieces are far shorter (Gemma's longest,
/// runs of spaces, are 31 characters); a longer one is only reachable as an added token.
const MAX_MERGED_TOKEN_BYTES: usize = 256;
/// Llama 3's pre-tokenizer split (its `tokenizer.json`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's pre-tokenizer split (its `tokenizer.json`): Llama 3's with single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer metadata of a file, validated.
struct Vocabulary<'a> {
    tokens: Vec<&'a str>,
    types: Vec<i64>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
}

/// Builds the tokenizer `file`'s metadata describes.
pub(crate) fn build(file: &GgufFile) -> Result<Tokenizer, GgufError> {
    let model = file.required_str("tokenizer.ggml.model")?;
    let json = match model {
        "llama" => {
            let vocab = vocabulary(file, true)?;
            let scores = match file.metadata("tokenizer.ggml.scores") {
                None => vec![0.0; vocab.tokens.len()],
                Some(v) => per_token(&vocab, "tokenizer.ggml.scores", v, MetadataValue::as_f64)?,
            };
            let space_prefix = file
                .optional_bool("tokenizer.ggml.add_space_prefix")?
                .unwrap_or(true);
            sentencepiece_json(&vocab, &scores, space_prefix)
        }
        "gpt2" => {
            let pre = file
                .optional_str("tokenizer.ggml.pre")?
                .unwrap_or("default");
            let style =
                BpeStyle::from_pre(pre).ok_or_else(|| GgufError::UnsupportedPreTokenizer {
                    pre: pre.to_string(),
                })?;
            let vocab = vocabulary(file, style.adds_bos_by_default())?;
            let merges = merges(file)?;
            byte_level_json(&vocab, &merges, style)
        }
        other => {
            return Err(GgufError::UnsupportedTokenizer {
                model: other.to_string(),
            });
        }
    };
    Tokenizer::from_bytes(json.to_string()).map_err(GgufError::Tokenizer)
}

/// Tokens, types, special ids and whether BOS/EOS are added (`default_bos` when unstated).
fn vocabulary(file: &GgufFile, default_bos: bool) -> Result<Vocabulary<'_>, GgufError> {
    let key = "tokenizer.ggml.tokens";
    let list = file
        .metadata(key)
        .ok_or_else(|| GgufError::MissingKey { key: key.into() })?;
    let tokens = list
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .map(MetadataValue::as_str)
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| GgufError::KeyType {
            key: key.into(),
            expected: "an array of strings",
            found: list.type_name(),
        })?;
    if tokens.is_empty() || u32::try_from(tokens.len()).is_err() {
        return Err(GgufError::TokenizerMetadata {
            reason: format!("{key} holds {} tokens", tokens.len()),
        });
    }
    let mut vocab = Vocabulary {
        types: vec![NORMAL; tokens.len()],
        tokens,
        bos: None,
        eos: None,
        add_bos: default_bos,
        add_eos: false,
    };
    if let Some(v) = file.metadata("tokenizer.ggml.token_type") {
        vocab.types = per_token(
            &vocab,
            "tokenizer.ggml.token_type",
            v,
            MetadataValue::as_i64,
        )?;
    }
    let id = |key: &str| -> Result<Option<u32>, GgufError> {
        match file.optional_u64(key)? {
            None => Ok(None),
            Some(id) if id < vocab.tokens.len() as u64 => Ok(Some(id as u32)),
            Some(id) => Err(GgufError::TokenizerMetadata {
                reason: format!("{key} = {id} is outside the {} tokens", vocab.tokens.len()),
            }),
        }
    };
    vocab.bos = id("tokenizer.ggml.bos_token_id")?;
    vocab.eos = id("tokenizer.ggml.eos_token_id")?;
    if let Some(add) = file.optional_bool("tokenizer.ggml.add_bos_token")? {
        vocab.add_bos = add;
    }
    if let Some(add) = file.optional_bool("tokenizer.ggml.add_eos_token")? {
        vocab.add_eos = add;
    }
    Ok(vocab)
}

/// An array with one value per token.
fn per_token<T>(
    vocab: &Vocabulary<'_>,
    key: &str,
    value: &MetadataValue,
    read: impl Fn(&MetadataValue) -> Option<T>,
) -> Result<Vec<T>, GgufError> {
    let items = value
        .as_array()
        .and_then(|items| items.iter().map(read).collect::<Option<Vec<_>>>())
        .ok_or_else(|| GgufError::KeyType {
            key: key.into(),
            expected: "an array of numbers",
            found: value.type_name(),
        })?;
    if items.len() != vocab.tokens.len() {
        return Err(GgufError::TokenizerMetadata {
            reason: format!(
                "{key} holds {} values for {} tokens",
                items.len(),
                vocab.tokens.len()
            ),
        });
    }
    Ok(items)
}

/// Token → id, the first id where a token string repeats (as a JSON vocabulary holds it).
fn vocab_map(vocab: &Vocabulary<'_>) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    for (id, token) in vocab.tokens.iter().enumerate() {
        if !map.contains_key(*token) {
            map.insert((*token).to_string(), json!(id));
        }
    }
    map
}

/// Control, unknown and user-defined tokens as `tokenizer.json`'s `added_tokens`.
fn added_tokens(vocab: &Vocabulary<'_>) -> Vec<Value> {
    vocab
        .tokens
        .iter()
        .zip(&vocab.types)
        .enumerate()
        .filter(|(_, (_, ty))| matches!(**ty, CONTROL | UNKNOWN | USER_DEFINED))
        .map(|(id, (token, ty))| {
            json!({
                "id": id,
                "content": token,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": *ty != USER_DEFINED,
            })
        })
        .collect()
}

/// The template that adds BOS and EOS as the metadata asks; `None` when neither is added.
fn template(vocab: &Vocabulary<'_>) -> Option<Value> {
    let bos = vocab.bos.filter(|_| vocab.add_bos);
    let eos = vocab.eos.filter(|_| vocab.add_eos);
    if bos.is_none() && eos.is_none() {
        return None;
    }
    let special = |id: u32, type_id: u32| json!({"SpecialToken": {"id": vocab.tokens[id as usize], "type_id": type_id}});
    let sequence = |name: &str, type_id: u32| json!({"Sequence": {"id": name, "type_id": type_id}});
    let piece = |name: &str, type_id: u32| -> Vec<Value> {
        bos.map(|id| special(id, type_id))
            .into_iter()
            .chain([sequence(name, type_id)])
            .chain(eos.map(|id| special(id, type_id)))
            .collect()
    };
    let mut pair = piece("A", 0);
    pair.extend(piece("B", 1));
    let specials: serde_json::Map<String, Value> = bos
        .into_iter()
        .chain(eos)
        .map(|id| {
            let token = vocab.tokens[id as usize];
            (
                token.to_string(),
                json!({"id": token, "ids": [id], "tokens": [token]}),
            )
        })
        .collect();
    Some(json!({
        "type": "TemplateProcessing",
        "single": piece("A", 0),
        "pair": pair,
        "special_tokens": specials,
    }))
}

/// Merges for a SentencePiece vocabulary, as transformers derives them from the model: every
/// split of a normal token into two normal tokens, ordered by the merged token's score
/// (highest first), then its id, then the left part's length (shorter first). SentencePiece
/// merges the adjacent pair whose merged piece scores highest, which this order reproduces.
fn sentencepiece_merges(vocab: &Vocabulary<'_>, scores: &[f64]) -> Vec<(String, String)> {
    let mut normal: HashMap<&str, usize> = HashMap::new();
    for (id, (token, ty)) in vocab.tokens.iter().zip(&vocab.types).enumerate() {
        if *ty == NORMAL {
            normal.entry(*token).or_insert(id);
        }
    }
    let mut merges: Vec<(f64, usize, usize, &str, &str)> = Vec::new();
    for (&token, &id) in &normal {
        if token.len() > MAX_MERGED_TOKEN_BYTES {
            continue;
        }
        for (split, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(split);
            if normal.contains_key(left) && normal.contains_key(right) {
                merges.push((scores[id], id, split, left, right));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    merges
        .into_iter()
        .map(|(_, _, _, l, r)| (l.to_string(), r.to_string()))
        .collect()
}

/// `tokenizer.json` for a SentencePiece (`llama`) vocabulary.
fn sentencepiece_json(vocab: &Vocabulary<'_>, scores: &[f64], space_prefix: bool) -> Value {
    let unk = vocab
        .types
        .iter()
        .position(|&t| t == UNKNOWN)
        .map(|id| vocab.tokens[id]);
    let byte_fallback = vocab.types.contains(&BYTE);
    let merges: Vec<[String; 2]> = sentencepiece_merges(vocab, scores)
        .into_iter()
        .map(|(l, r)| [l, r])
        .collect();
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens(vocab),
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Metaspace",
            "replacement": "▁",
            "prepend_scheme": if space_prefix { "first" } else { "never" },
            "split": false,
        },
        "post_processor": template(vocab),
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": unk,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": true,
            "byte_fallback": byte_fallback,
            "ignore_merges": false,
            "vocab": vocab_map(vocab),
            "merges": merges,
        },
    })
}

/// The byte-level BPE pre-tokenizers llama.cpp names in `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BpeStyle {
    /// GPT-2's split (`default`, `gpt-2`).
    Gpt2,
    /// Llama 3's split, whole words looked up before merging.
    Llama3,
    /// Qwen 2's split after NFC normalization.
    Qwen2,
    /// SmolLM: digits one by one, then GPT-2's split.
    SmolLm,
}

impl BpeStyle {
    /// The style `tokenizer.ggml.pre` names (llama.cpp's aliases included).
    fn from_pre(pre: &str) -> Option<Self> {
        Some(match pre {
            "default" | "gpt-2" => Self::Gpt2,
            "llama-bpe" | "llama3" | "llama-v3" => Self::Llama3,
            "qwen2" | "deepseek-r1-qwen" => Self::Qwen2,
            "smollm" => Self::SmolLm,
            _ => return None,
        })
    }

    /// llama.cpp adds BOS by default for Llama 3 style vocabularies only.
    fn adds_bos_by_default(self) -> bool {
        self == Self::Llama3
    }
}

/// `tokenizer.ggml.merges`: `"left right"` strings.
fn merges(file: &GgufFile) -> Result<Vec<[String; 2]>, GgufError> {
    let key = "tokenizer.ggml.merges";
    let list = file
        .metadata(key)
        .ok_or_else(|| GgufError::MissingKey { key: key.into() })?;
    let items = list.as_array().ok_or_else(|| GgufError::KeyType {
        key: key.into(),
        expected: "an array of strings",
        found: list.type_name(),
    })?;
    items
        .iter()
        .map(|item| {
            let text = item.as_str().ok_or_else(|| GgufError::KeyType {
                key: key.into(),
                expected: "an array of strings",
                found: item.type_name(),
            })?;
            // Byte-level tokens never hold a space (it is `Ġ`), so the first one separates.
            let (left, right) =
                text.split_once(' ')
                    .ok_or_else(|| GgufError::TokenizerMetadata {
                        reason: format!("merge `{text}` is not two tokens separated by a space"),
                    })?;
            Ok([left.to_string(), right.to_string()])
        })
        .collect()
}

/// `tokenizer.json` for a byte-level BPE (`gpt2`) vocabulary.
fn byte_level_json(vocab: &Vocabulary<'_>, merges: &[[String; 2]], style: BpeStyle) -> Value {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    let pre_tokenizer = match style {
        BpeStyle::Gpt2 => byte_level(true),
        BpeStyle::Llama3 => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]})
        }
        BpeStyle::Qwen2 => {
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]})
        }
        BpeStyle::SmolLm => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level(true),
        ]}),
    };
    let normalizer = if style == BpeStyle::Qwen2 {
        json!({"type": "NFC"})
    } else {
        Value::Null
    };
    let processors: Vec<Value> = [Some(byte_level(false)), template(vocab)]
        .into_iter()
        .flatten()
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens(vocab),
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "Sequence", "processors": processors},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": style == BpeStyle::Llama3,
            "vocab": vocab_map(vocab),
            "merges": merges,
        },
    })
}
