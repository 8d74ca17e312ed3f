//! Seeded random weights: reproducible per seed, different across seeds, shaped like the
//! config's pretrained model.

mod common;

use api::runtime::{DType, LoadedModel, WeightsKind};
use backends::LogitPositions;
use common::*;

fn random_logits(source: &str, dtype: DType, seed: u64) -> Vec<f32> {
    let model = runtime()
        .load_model(&spec(source, dtype, WeightsKind::Random, seed))
        .unwrap();
    let mut out = model
        .logits(&[vec![1, 403, 407, 261, 378]], LogitPositions::Last)
        .unwrap();
    out.remove(0).remove(0)
}

#[test]
fn same_seed_same_model_other_seed_other_model() {
    for source in ["tiny-stories", "tiny-llama3-gqa"] {
        for dtype in [DType::F32, DType::BF16] {
            let a = random_logits(source, dtype, 11);
            let b = random_logits(source, dtype, 11);
            let c = random_logits(source, dtype, 12);
            assert_eq!(a, b, "{source} {dtype}: seed 11 twice");
            assert!(
                max_abs_diff(&a, &c) > 0.0,
                "{source} {dtype}: seeds 11 and 12"
            );
            assert!(a.iter().all(|x| x.is_finite()));
        }
    }
}

#[test]
fn random_model_reports_the_pretrained_shape() {
    let pretrained = load("tiny-llama3-gqa", DType::F16);
    let random = runtime()
        .load_model(&spec("tiny-llama3-gqa", DType::F16, WeightsKind::Random, 3))
        .unwrap();
    let (p, r) = (pretrained.info(), random.info());
    assert_eq!(p.parameters, r.parameters);
    assert_eq!(p.weight_bytes, r.weight_bytes);
    // Tied embeddings: the table is read whole as the output head every step.
    assert_eq!(r.step_weight_bytes, r.weight_bytes);
    assert_eq!((r.num_heads, r.num_kv_heads, r.head_dim), (4, 2, 16));
    let (out, _) = generate(&random, &[vec![1, 2, 3]], &greedy(5));
    assert_eq!(out[0].len(), 5);
}
