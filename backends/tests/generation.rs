//! Generation mechanics: EOS stopping, the token cap, finished sequences, KV cache size,
//! sampling reproducibility, and what `ModelInfo` reports.

mod common;

use api::runtime::{DType, Decoding, GenerateOptions, LoadedModel};
use common::*;

/// "Once upon a time" on tiny-stories: golden greedy ids, used to place EOS deterministically.
const PROMPT: [u32; 5] = [1, 403, 407, 261, 378];

fn golden_continuation() -> Vec<u32> {
    ids(&golden("tiny-stories")["prompts"][0]["greedy_new_ids"])
}

#[test]
fn info_comes_from_the_config() {
    let model = load("tiny-stories", DType::F32);
    let info = model.info();
    assert_eq!(info.name, "tiny-stories");
    assert_eq!(info.architecture, "llama");
    // 260,032 shared parameters plus the untied 512x64 lm_head.
    assert_eq!(info.parameters, 260_032 + 512 * 64);
    assert_eq!(info.weight_bytes, info.parameters * 4);
    // A decode step gathers rows of the untied input embedding instead of reading it whole.
    assert_eq!(info.step_weight_bytes, info.weight_bytes - 512 * 64 * 4);
    assert_eq!(
        (info.hidden_size, info.num_layers, info.vocab_size),
        (64, 5, 512)
    );
    assert_eq!(
        (info.num_heads, info.num_kv_heads, info.head_dim),
        (8, 4, 8)
    );
    assert_eq!(info.max_position_embeddings, 512);
    assert_eq!(info.bos_token_id, Some(1));
    assert_eq!(info.eos_token_ids, vec![2]);
    assert_eq!(
        load("tiny-llama3-gqa", DType::F32).info().parameters,
        (512 * 64 + 2 * (2 * 64 + 64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 172 * 64) + 64) as u64
    );
}

#[test]
fn kv_cache_grows_by_one_position_per_step() {
    let model = load("tiny-llama3-gqa", DType::F32);
    let prompts = vec![PROMPT.to_vec(), vec![1, 2]];
    let (_, kv) = generate(&model, &prompts, &greedy(4));
    // 2 layers x (K+V) x batch 2 x 2 kv heads x head_dim 16 x 4 bytes per position.
    let per_position = 2 * 2 * 2 * 2 * 16 * 4;
    // Prefill caches the padded width (5); each later step adds one position.
    assert_eq!(
        kv,
        vec![
            5 * per_position,
            6 * per_position,
            7 * per_position,
            8 * per_position
        ]
    );
}

#[test]
fn stops_at_eos_only_after_min_new_tokens() {
    // A copy of tiny-stories whose generation_config.json also lists the 3rd greedy token as
    // EOS, so the stopping point is known in advance.
    let continuation = golden_continuation();
    let eos = continuation[2];
    let first_eos = continuation.iter().position(|&t| t == eos).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(models_dir().join("tiny-stories")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let gen_config = serde_json::json!({"bos_token_id": 1, "eos_token_id": [2, eos]});
    std::fs::write(
        tmp.path().join("generation_config.json"),
        gen_config.to_string(),
    )
    .unwrap();
    let model = runtime()
        .load_model(&spec(
            tmp.path().to_str().unwrap(),
            DType::F32,
            api::runtime::WeightsKind::Pretrained,
            0,
        ))
        .unwrap();
    assert_eq!(model.info().eos_token_ids, vec![2, eos]);

    let options = |min_new_tokens, stop_at_eos| GenerateOptions {
        max_new_tokens: 20,
        min_new_tokens,
        stop_at_eos,
        decoding: Decoding::Greedy,
    };
    // A second sequence keeps the batch stepping after the first has finished.
    let prompts = vec![PROMPT.to_vec(), vec![1]];
    let mut generation = model.start(&prompts, &options(0, true)).unwrap();
    let mut first = Vec::new();
    let mut steps = 0;
    loop {
        let step = generation.step().unwrap();
        steps += 1;
        if let Some(t) = step.tokens[0] {
            first.push(t);
        } else {
            // Once finished, a sequence yields None.
            assert_eq!(first.len(), first_eos + 1);
        }
        if step.finished {
            break;
        }
    }
    assert_eq!(first, continuation[..=first_eos].to_vec());
    assert!(steps <= 20);
    // Stepping a finished generation is harmless.
    let after = generation.step().unwrap();
    assert!(after.finished && after.tokens.iter().all(Option::is_none));

    // min_new_tokens past the EOS position: as in transformers, EOS logits are −inf until then,
    // so the step that gave EOS picks the best other token instead of EOS.
    let min_new_tokens = first_eos + 2;
    let (out, _) = generate(&model, &prompts[..1], &options(min_new_tokens, true));
    assert!(out[0].len() >= min_new_tokens, "{:?}", out[0]);
    assert_eq!(out[0][..first_eos], continuation[..first_eos]);
    assert!(
        out[0][..min_new_tokens]
            .iter()
            .all(|t| *t != eos && *t != 2),
        "EOS before min_new_tokens: {:?}",
        out[0]
    );
    let mut context = PROMPT.to_vec();
    context.extend_from_slice(&continuation[..first_eos]);
    let logits = model
        .logits(&[context], backends::LogitPositions::Last)
        .unwrap()
        .remove(0)
        .remove(0);
    let best_other = (0..logits.len())
        .filter(|&i| i as u32 != eos && i != 2)
        .fold(0, |best, i| if logits[i] > logits[best] { i } else { best });
    assert_eq!(out[0][first_eos], best_other as u32);
    // stop_at_eos false: always max_new_tokens.
    let (out, _) = generate(&model, &prompts[..1], &options(0, false));
    assert_eq!(out[0].len(), 20);
}

#[test]
fn sampling_is_seeded_and_temperature_zero_is_greedy() {
    let model = load("tiny-stories", DType::F32);
    let sample = |seed, temperature| GenerateOptions {
        max_new_tokens: 24,
        min_new_tokens: 0,
        stop_at_eos: false,
        decoding: Decoding::Sample {
            temperature,
            top_k: 40,
            top_p: 0.95,
            seed,
        },
    };
    let prompts = vec![PROMPT.to_vec(), vec![1, 291, 376, 400, 428]];
    let (a, _) = generate(&model, &prompts, &sample(5, 1.0));
    let (b, _) = generate(&model, &prompts, &sample(5, 1.0));
    let (c, _) = generate(&model, &prompts, &sample(6, 1.0));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let (zero, _) = generate(&model, &prompts[..1], &sample(5, 0.0));
    assert_eq!(zero[0], golden_continuation()[..24].to_vec());
}

/// min_new_tokens holds for sampling too: with a frequent token made an EOS id, sampled
/// sequences that end early without it never do so with it.
#[test]
fn sampled_eos_is_suppressed_before_min_new_tokens() {
    let continuation = golden_continuation();
    let eos = continuation[2];
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(models_dir().join("tiny-stories")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let gen_config = serde_json::json!({"bos_token_id": 1, "eos_token_id": [2, eos]});
    std::fs::write(
        tmp.path().join("generation_config.json"),
        gen_config.to_string(),
    )
    .unwrap();
    let model = runtime()
        .load_model(&spec(
            tmp.path().to_str().unwrap(),
            DType::F32,
            api::runtime::WeightsKind::Pretrained,
            0,
        ))
        .unwrap();
    let min_new_tokens = 8;
    let options = |min_new_tokens, seed| GenerateOptions {
        max_new_tokens: 12,
        min_new_tokens,
        stop_at_eos: true,
        decoding: Decoding::Sample {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            seed,
        },
    };
    let prompts = vec![PROMPT.to_vec(); 4];
    let is_eos = |t: &u32| *t == eos || *t == 2;
    let mut ended_early_without = false;
    for seed in 0..4 {
        let (free, _) = generate(&model, &prompts, &options(0, seed));
        ended_early_without |= free.iter().any(|s| {
            s.iter()
                .position(is_eos)
                .is_some_and(|p| p < min_new_tokens)
        });
        let (held, _) = generate(&model, &prompts, &options(min_new_tokens, seed));
        for seq in &held {
            assert!(seq.len() > min_new_tokens, "{seq:?}");
            assert!(!seq[..min_new_tokens].iter().any(is_eos), "{seq:?}");
        }
    }
    assert!(
        ended_early_without,
        "no sampled sequence met EOS early without min_new_tokens; the test proves nothing"
    );
}
