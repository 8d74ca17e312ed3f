//! Measuring one finished run's quality against its reference, outside every timed window.
//!
//! The reference is the same model (source, revision, weights kind, seed, device and compute
//! path) at f32 and unquantized, so the figures isolate what the run's precision and
//! quantization cost. Its prompt logits and greedy continuations are computed once per
//! (reference, prompt ids, generation length) and kept through a [`ReferenceCache`] (the study
//! folder, in a study), so later runs and resumed studies reuse them. An f32 unquantized run is
//! its own reference. Both models see the same token ids, one prompt at a time (no padding).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use api::runtime::{
    DType, Decoding, GenerateOptions, LoadedModel, ModelSpec, Runtime, RuntimeError,
};
use sha2::{Digest, Sha256};

use crate::plan::RunSpec;
use crate::quality::{QualityError, QualityMetrics, QualityTally};
use crate::stage::DecodingSpec;

/// Prompt positions compared at most: whole prompts are taken in order while they fit, so the
/// cached reference logits stay bounded (positions × vocabulary × 4 bytes).
pub const QUALITY_MAX_POSITIONS: usize = 1024;

/// The reference of a run's model: the same spec at f32, unquantized.
pub fn reference_spec(spec: &ModelSpec) -> ModelSpec {
    ModelSpec {
        dtype: DType::F32,
        quantization: None,
        ..spec.clone()
    }
}

/// The reference as the `quality_ref` column names it: `<model> f32 <device>`, with the
/// compute path when it is not `auto`.
pub fn reference_name(reference: &ModelSpec) -> String {
    let mut name = format!(
        "{} {} {}",
        reference.source,
        reference.dtype.name(),
        reference.device
    );
    if let Some(revision) = &reference.revision {
        name.push_str(&format!(" @{revision}"));
    }
    if !reference.compute.is_auto() {
        name.push_str(&format!(" compute {}", reference.compute.name()));
    }
    name
}

/// Whether the run picks tokens greedily, so its continuation can be compared token by token.
pub fn decodes_greedily(decoding: &DecodingSpec) -> bool {
    match *decoding {
        DecodingSpec::Greedy => true,
        // Temperature 0 means greedy (see `Decoding::Sample`).
        DecodingSpec::Sample { temperature, .. } => temperature == 0.0,
    }
}

/// The generation settings both models' greedy continuations use: the run's lengths and EOS
/// handling, greedy decoding.
pub fn greedy_options(run: &RunSpec) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: run.infer.max_new_tokens,
        min_new_tokens: run.infer.min_new_tokens,
        stop_at_eos: run.infer.stop_at_eos,
        decoding: Decoding::Greedy,
    }
}

/// The prompts whose positions are compared: whole prompts in order while their positions fit
/// in [`QUALITY_MAX_POSITIONS`] (always at least the first non-empty one).
pub fn select_prompts(encoded: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let mut selected = Vec::new();
    let mut positions = 0;
    for ids in encoded.iter().filter(|ids| !ids.is_empty()) {
        if !selected.is_empty() && positions + ids.len() > QUALITY_MAX_POSITIONS {
            break;
        }
        positions += ids.len();
        selected.push(ids.clone());
    }
    selected
}

/// The cache key of a reference's outputs: a hash of everything they depend on.
pub fn cache_key(reference: &ModelSpec, prompts: &[Vec<u32>], options: &GenerateOptions) -> String {
    let mut hasher = Sha256::new();
    // A versioned, explicit form: renaming a Rust field cannot silently change keys.
    hasher.update(b"llmeff-quality-ref-v1\n");
    let fields = [
        ("source", reference.source.clone()),
        ("revision", reference.revision.clone().unwrap_or_default()),
        ("dtype", reference.dtype.name().to_string()),
        ("weights", reference.weights.name().to_string()),
        ("device", reference.device.clone()),
        ("seed", reference.seed.to_string()),
        ("compute", reference.compute.name().to_string()),
        ("max_new_tokens", options.max_new_tokens.to_string()),
        ("min_new_tokens", options.min_new_tokens.to_string()),
        ("stop_at_eos", options.stop_at_eos.to_string()),
    ];
    for (key, value) in fields {
        hasher.update(format!("{key}={value}\n").as_bytes());
    }
    for ids in prompts {
        let line: Vec<String> = ids.iter().map(u32::to_string).collect();
        hasher.update(format!("prompt={}\n", line.join(",")).as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A model's outputs on the selected prompts: teacher-forced logits and greedy continuations.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceOutputs {
    /// Prompt token ids.
    pub prompts: Vec<Vec<u32>>,
    /// Per prompt, one logit row per position.
    pub logits: Vec<Vec<Vec<f32>>>,
    /// Per prompt, the greedy continuation's token ids.
    pub greedy: Vec<Vec<u32>>,
}

/// Why stored reference bytes could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceFormatError {
    /// The bytes do not start with this format's magic line.
    #[error("not an llmeff quality reference (bad magic)")]
    BadMagic,
    /// The bytes end before the counts say they should.
    #[error("truncated quality reference")]
    Truncated,
    /// Bytes follow the last prompt.
    #[error("{0} unexpected trailing bytes")]
    TrailingBytes(usize),
}

const MAGIC: &[u8] = b"llmeff-quality-ref-1\n";

impl ReferenceOutputs {
    /// The cache file's bytes: magic line, then little-endian u64 counts (prompts, vocabulary)
    /// and per prompt its length, ids (u32), logits (f32, row-major), continuation length and
    /// ids (u32).
    pub fn to_bytes(&self) -> Vec<u8> {
        let vocab = self.logits.iter().flatten().next().map_or(0, Vec::len);
        let mut out = MAGIC.to_vec();
        out.extend((self.prompts.len() as u64).to_le_bytes());
        out.extend((vocab as u64).to_le_bytes());
        for ((ids, rows), greedy) in self.prompts.iter().zip(&self.logits).zip(&self.greedy) {
            out.extend((ids.len() as u64).to_le_bytes());
            out.extend(ids.iter().flat_map(|i| i.to_le_bytes()));
            for row in rows {
                out.extend(row.iter().flat_map(|x| x.to_le_bytes()));
            }
            out.extend((greedy.len() as u64).to_le_bytes());
            out.extend(greedy.iter().flat_map(|i| i.to_le_bytes()));
        }
        out
    }

    /// Reads [`ReferenceOutputs::to_bytes`]'s format back.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReferenceFormatError> {
        let mut reader = Reader {
            rest: bytes
                .strip_prefix(MAGIC)
                .ok_or(ReferenceFormatError::BadMagic)?,
        };
        let prompts_n = reader.count()?;
        let vocab = reader.count()?;
        let mut out = ReferenceOutputs {
            prompts: Vec::new(),
            logits: Vec::new(),
            greedy: Vec::new(),
        };
        for _ in 0..prompts_n {
            let len = reader.count()?;
            let ids = reader.u32s(len)?;
            let mut rows = Vec::with_capacity(len);
            for _ in 0..len {
                rows.push(reader.f32s(vocab)?);
            }
            let greedy_len = reader.count()?;
            out.prompts.push(ids);
            out.logits.push(rows);
            out.greedy.push(reader.u32s(greedy_len)?);
        }
        if !reader.rest.is_empty() {
            return Err(ReferenceFormatError::TrailingBytes(reader.rest.len()));
        }
        Ok(out)
    }
}

/// Reads little-endian values off the front of a byte slice.
struct Reader<'b> {
    rest: &'b [u8],
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Result<&'b [u8], ReferenceFormatError> {
        if self.rest.len() < n {
            return Err(ReferenceFormatError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn words(
        &mut self,
        n: usize,
    ) -> Result<impl Iterator<Item = [u8; 4]> + 'b, ReferenceFormatError> {
        let bytes = self.take(n.checked_mul(4).ok_or(ReferenceFormatError::Truncated)?)?;
        Ok(bytes.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]))
    }

    fn count(&mut self) -> Result<usize, ReferenceFormatError> {
        let b = self.take(8)?;
        let mut word = [0; 8];
        word.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(word)).map_err(|_| ReferenceFormatError::Truncated)
    }

    fn u32s(&mut self, n: usize) -> Result<Vec<u32>, ReferenceFormatError> {
        Ok(self.words(n)?.map(u32::from_le_bytes).collect())
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, ReferenceFormatError> {
        Ok(self.words(n)?.map(f32::from_le_bytes).collect())
    }
}

/// A failure of a cache's storage, kept as its source.
pub type CacheError = Box<dyn std::error::Error + Send + Sync>;

/// Where reference outputs are kept between runs (a study keeps them in its folder). Lanes of a
/// `per-device` study use one cache from their own threads.
pub trait ReferenceCache: Send + Sync {
    /// The bytes stored under `key`, if any.
    fn load(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    /// Stores `bytes` under `key` durably (atomically: a reader sees all or nothing).
    fn store(&self, key: &str, bytes: &[u8]) -> Result<(), CacheError>;
}

/// A cache held in memory (tests, and callers without a study folder).
#[derive(Debug, Default)]
pub struct MemoryReferenceCache {
    entries: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemoryReferenceCache {
    fn entries(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        // Each update is one insert: a poisoned map is still sound.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keys stored so far.
    pub fn keys(&self) -> Vec<String> {
        self.entries().keys().cloned().collect()
    }
}

impl ReferenceCache for MemoryReferenceCache {
    fn load(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.entries().get(key).cloned())
    }

    fn store(&self, key: &str, bytes: &[u8]) -> Result<(), CacheError> {
        self.entries().insert(key.to_string(), bytes.to_vec());
        Ok(())
    }
}

/// Why a run's quality was not measured.
#[derive(Debug, thiserror::Error)]
pub enum QualityFailure {
    /// The run's or the reference's model failed (or cannot give logits).
    #[error("{which} model: {source}")]
    Runtime {
        /// `run` or `reference`.
        which: &'static str,
        /// The failure.
        #[source]
        source: RuntimeError,
    },
    /// The logits could not be compared.
    #[error(transparent)]
    Metrics(#[from] QualityError),
    /// The cancel flag was raised.
    #[error("cancelled")]
    Cancelled,
}

/// One prompt's greedy continuation, batch of one.
fn greedy_continuation(
    model: &dyn LoadedModel,
    ids: &[u32],
    options: &GenerateOptions,
) -> Result<Vec<u32>, RuntimeError> {
    let mut generation = model.start(&[ids.to_vec()], options)?;
    let mut tokens = Vec::new();
    // One step more than tokens allowed guards a runtime that never reports finished.
    for _ in 0..=options.max_new_tokens {
        let out = generation.step()?;
        tokens.extend(out.tokens.first().copied().flatten());
        if out.finished {
            break;
        }
    }
    Ok(tokens)
}

/// One prompt's teacher-forced logits.
fn prompt_logits(model: &dyn LoadedModel, ids: &[u32]) -> Result<Vec<Vec<f32>>, RuntimeError> {
    model
        .prompt_logits(&[ids.to_vec()])?
        .into_iter()
        .next()
        .ok_or_else(|| RuntimeError::Backend("no logits returned for the prompt".into()))
}

/// A model's outputs on `prompts`, one prompt at a time; `cancelled` is polled between them.
fn compute_outputs(
    model: &dyn LoadedModel,
    prompts: &[Vec<u32>],
    options: &GenerateOptions,
    cancelled: &dyn Fn() -> bool,
) -> Result<ReferenceOutputs, QualityFailure> {
    let runtime = |source| QualityFailure::Runtime {
        which: "reference",
        source,
    };
    let mut out = ReferenceOutputs {
        prompts: prompts.to_vec(),
        logits: Vec::with_capacity(prompts.len()),
        greedy: Vec::with_capacity(prompts.len()),
    };
    for ids in prompts {
        if cancelled() {
            return Err(QualityFailure::Cancelled);
        }
        out.logits.push(prompt_logits(model, ids).map_err(runtime)?);
        out.greedy
            .push(greedy_continuation(model, ids, options).map_err(runtime)?);
    }
    Ok(out)
}

/// What measuring a run's quality needs.
pub struct QualityInputs<'a> {
    /// Loads the reference when the cache lacks it.
    pub runtime: &'a dyn Runtime,
    /// The run's model, still loaded.
    pub model: &'a dyn LoadedModel,
    /// The run.
    pub run: &'a RunSpec,
    /// The run's encoded prompts (as its timed window fed them).
    pub encoded: &'a [Vec<u32>],
    /// Where reference outputs are kept.
    pub cache: &'a dyn ReferenceCache,
    /// Polled between prompts.
    pub cancelled: &'a dyn Fn() -> bool,
}

/// The run's quality against its reference, with notes a reader must know (prompts left out,
/// a cache that could not be read or written).
pub fn measure_quality(
    inputs: &QualityInputs<'_>,
) -> Result<(QualityMetrics, Vec<String>), QualityFailure> {
    let run = inputs.run;
    let run_spec = run.model_spec();
    let reference = reference_spec(&run_spec);
    let own_reference = run_spec == reference;
    let options = greedy_options(run);
    let prompts = select_prompts(inputs.encoded);
    let mut notes = Vec::new();
    let with_tokens = inputs.encoded.iter().filter(|p| !p.is_empty()).count();
    if prompts.len() < with_tokens {
        notes.push(format!(
            "quality compared on the first {} of {with_tokens} prompts (at most {QUALITY_MAX_POSITIONS} positions)",
            prompts.len()
        ));
    }
    let key = cache_key(&reference, &prompts, &options);
    let cached = match inputs.cache.load(&key) {
        Ok(Some(bytes)) => match ReferenceOutputs::from_bytes(&bytes) {
            Ok(outputs) if outputs.prompts == prompts => Some(outputs),
            Ok(_) => {
                notes.push("quality reference cache held other prompts; recomputed".into());
                None
            }
            Err(e) => {
                notes.push(format!(
                    "quality reference cache unreadable ({e}); recomputed"
                ));
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            notes.push(format!(
                "quality reference cache unreadable ({e}); recomputed"
            ));
            None
        }
    };
    let ref_outputs = match cached {
        Some(outputs) => outputs,
        None => {
            let outputs =
                if own_reference {
                    compute_outputs(inputs.model, &prompts, &options, inputs.cancelled)?
                } else {
                    // Loaded beside the run's model for as long as this takes, then dropped.
                    let model = inputs.runtime.load(&reference).map_err(|source| {
                        QualityFailure::Runtime {
                            which: "reference",
                            source,
                        }
                    })?;
                    compute_outputs(model.as_ref(), &prompts, &options, inputs.cancelled)?
                };
            if let Err(e) = inputs.cache.store(&key, &outputs.to_bytes()) {
                notes.push(format!("quality reference not cached: {e}"));
            }
            outputs
        }
    };
    let greedy = decodes_greedily(&run.infer.decoding);
    let mut tally = QualityTally::default();
    for (p, ids) in prompts.iter().enumerate() {
        if (inputs.cancelled)() {
            return Err(QualityFailure::Cancelled);
        }
        let run_failure = |source| QualityFailure::Runtime {
            which: "run",
            source,
        };
        if own_reference {
            // The run is its reference: identical logits, so KL 0 and agreement 1 exactly.
            tally.add_prompt(ids, &ref_outputs.logits[p], &ref_outputs.logits[p])?;
            if greedy {
                tally.add_greedy(&ref_outputs.greedy[p], &ref_outputs.greedy[p]);
            }
            continue;
        }
        let logits = prompt_logits(inputs.model, ids).map_err(run_failure)?;
        tally.add_prompt(ids, &ref_outputs.logits[p], &logits)?;
        if greedy {
            let tokens = greedy_continuation(inputs.model, ids, &options).map_err(run_failure)?;
            tally.add_greedy(&ref_outputs.greedy[p], &tokens);
        }
    }
    let metrics =
        tally
            .finish(&reference_name(&reference), greedy)
            .ok_or(QualityError::ShapeMismatch {
                what: "prompt positions to compare".into(),
                expected: 1,
                found: 0,
            })?;
    Ok((metrics, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::runtime::{Compute, QuantMethod, Quantization, WeightsKind};

    fn spec() -> ModelSpec {
        ModelSpec {
            source: "tiny-stories".into(),
            revision: None,
            dtype: DType::BF16,
            weights: WeightsKind::Pretrained,
            device: "cpu".into(),
            seed: 3,
            quantization: Some(Quantization {
                method: QuantMethod::Int8,
                block_size: 32,
            }),
            compute: Compute::Auto,
        }
    }

    #[test]
    fn the_reference_is_the_same_model_at_f32_unquantized() {
        let r = reference_spec(&spec());
        assert_eq!(r.dtype, DType::F32);
        assert_eq!(r.quantization, None);
        assert_eq!(
            (r.seed, r.device.as_str(), r.compute),
            (3, "cpu", Compute::Auto)
        );
        assert_eq!(reference_name(&r), "tiny-stories f32 cpu");
        assert_eq!(
            reference_spec(&r),
            r,
            "an f32 unquantized spec is its own reference"
        );
    }

    #[test]
    fn the_cache_key_depends_on_reference_prompts_and_lengths_only() {
        let options = GenerateOptions {
            max_new_tokens: 4,
            min_new_tokens: 0,
            stop_at_eos: true,
            decoding: Decoding::Greedy,
        };
        let a = cache_key(&reference_spec(&spec()), &[vec![1, 2]], &options);
        let unquantized = ModelSpec {
            quantization: None,
            ..spec()
        };
        assert_eq!(
            a,
            cache_key(&reference_spec(&unquantized), &[vec![1, 2]], &options)
        );
        assert_ne!(
            a,
            cache_key(&reference_spec(&spec()), &[vec![1, 3]], &options)
        );
        let longer = GenerateOptions {
            max_new_tokens: 5,
            ..options.clone()
        };
        assert_ne!(
            a,
            cache_key(&reference_spec(&spec()), &[vec![1, 2]], &longer)
        );
        // Pinned: a change of the key's form must be deliberate (it orphans cached files).
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn outputs_round_trip_through_bytes_and_damage_is_an_error() {
        let outputs = ReferenceOutputs {
            prompts: vec![vec![1, 2], vec![7]],
            logits: vec![
                vec![vec![0.5, -1.0, 2.0], vec![0.0; 3]],
                vec![vec![1.0, 2.0, 3.0]],
            ],
            greedy: vec![vec![4, 5, 6], vec![]],
        };
        let bytes = outputs.to_bytes();
        assert_eq!(ReferenceOutputs::from_bytes(&bytes), Ok(outputs));
        assert_eq!(
            ReferenceOutputs::from_bytes(&bytes[..bytes.len() - 1]),
            Err(ReferenceFormatError::Truncated)
        );
        assert_eq!(
            ReferenceOutputs::from_bytes(b"junk"),
            Err(ReferenceFormatError::BadMagic)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            ReferenceOutputs::from_bytes(&longer),
            Err(ReferenceFormatError::TrailingBytes(1))
        );
    }

    #[test]
    fn prompts_are_taken_whole_while_their_positions_fit() {
        let long = vec![0; QUALITY_MAX_POSITIONS - 10];
        let selected = select_prompts(&[vec![], long.clone(), vec![1; 10], vec![2]]);
        assert_eq!(selected, vec![long, vec![1; 10]]);
        // A single prompt over the bound is still compared.
        let huge = vec![0; QUALITY_MAX_POSITIONS + 1];
        assert_eq!(select_prompts(&[huge.clone(), vec![1]]), vec![huge]);
    }

    #[test]
    fn temperature_zero_sampling_is_greedy() {
        assert!(decodes_greedily(&DecodingSpec::Greedy));
        let sample = |temperature| DecodingSpec::Sample {
            temperature,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        };
        assert!(decodes_greedily(&sample(0.0)));
        assert!(!decodes_greedily(&sample(0.7)));
    }
}
