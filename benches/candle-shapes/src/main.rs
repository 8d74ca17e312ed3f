//! Peer baseline for `llmeff bench --baseline`: candle (CPU, f32) on the shapes
//! `benches/transformers_shapes.py` measures, printed in the same format. Prefill time for a
//! 32-token prompt, then decode tokens/s for 64 new tokens (greedy, EOS ignored), batch 1 and 8,
//! median of RUNS (default 3) after one warm-up.
//!
//! Usage (from the repository root):
//!   RAYON_NUM_THREADS=2 cargo run --release --manifest-path benches/candle-shapes/Cargo.toml \
//!     -- [tiny-stories-dir smollm-135m tinyllama-1.1b] > /tmp/candle.jsonl
//!
//! The model code is candle-transformers' own Llama (the one its llama example runs), so what is
//! measured is candle as its users run it, not a re-implementation.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama::{Cache, Config, Llama, LlamaConfig};

const PROMPT: usize = 32;
const NEW: usize = 64;

/// The random-weight shapes, as `benches/transformers_shapes.py` defines them.
fn random_shape(name: &str) -> Option<Config> {
    // hidden, ffn, layers, heads, kv heads, vocab, tied
    let (h, ffn, layers, heads, kv, vocab, tied) = match name {
        "smollm-135m" => (576, 1536, 30, 9, 3, 49152, true),
        "tinyllama-1.1b" => (2048, 5632, 22, 32, 4, 32000, false),
        _ => return None,
    };
    Some(Config {
        hidden_size: h,
        intermediate_size: ffn,
        vocab_size: vocab,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        use_flash_attn: false,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: 2048,
        tie_word_embeddings: tied,
    })
}

/// Random weights as transformers initialises them: normal(0, 0.02), norms at one.
fn random_weights(cfg: &Config, dev: &Device) -> candle_core::Result<HashMap<String, Tensor>> {
    let (h, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let hd = h / cfg.num_attention_heads;
    let kv = cfg.num_key_value_heads * hd;
    let mut w = HashMap::new();
    let randn = |r: usize, c: usize| Tensor::randn(0f32, 0.02, (r, c), dev);
    w.insert("model.embed_tokens.weight".into(), randn(v, h)?);
    if !cfg.tie_word_embeddings {
        w.insert("lm_head.weight".into(), randn(v, h)?);
    }
    w.insert(
        "model.norm.weight".into(),
        Tensor::ones(h, DType::F32, dev)?,
    );
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for (name, r, c) in [
            ("self_attn.q_proj", h, h),
            ("self_attn.k_proj", kv, h),
            ("self_attn.v_proj", kv, h),
            ("self_attn.o_proj", h, h),
            ("mlp.gate_proj", f, h),
            ("mlp.up_proj", f, h),
            ("mlp.down_proj", h, f),
        ] {
            w.insert(format!("{p}.{name}.weight"), randn(r, c)?);
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            w.insert(
                format!("{p}.{norm}.weight"),
                Tensor::ones(h, DType::F32, dev)?,
            );
        }
    }
    Ok(w)
}

fn load(name: &str, dev: &Device) -> candle_core::Result<(Llama, Config)> {
    if let Some(cfg) = random_shape(name) {
        let vb = VarBuilder::from_tensors(random_weights(&cfg, dev)?, DType::F32, dev);
        return Ok((Llama::load(vb, &cfg)?, cfg));
    }
    let dir = if name == "tiny-stories-dir" {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-stories")
    } else {
        Path::new(name).to_path_buf()
    };
    let text = std::fs::read_to_string(dir.join("config.json"))?;
    let cfg: LlamaConfig = serde_json::from_str(&text).map_err(candle_core::Error::wrap)?;
    let cfg = cfg.into_config(false);
    // SAFETY: the file is not modified while mapped (it is the bundled model).
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, dev)?
    };
    Ok((Llama::load(vb, &cfg)?, cfg))
}

/// One generation: (prefill seconds, total seconds). Greedy, like the transformers baseline.
fn generate(
    model: &Llama,
    cfg: &Config,
    ids: &Tensor,
    dev: &Device,
) -> candle_core::Result<(f64, f64)> {
    let mut cache = Cache::new(true, DType::F32, cfg, dev)?;
    let start = Instant::now();
    let mut logits = model.forward(ids, 0, &mut cache)?;
    let mut next = logits.argmax(candle_core::D::Minus1)?.unsqueeze(1)?;
    next.to_vec2::<u32>()?;
    let prefill = start.elapsed().as_secs_f64();
    for step in 1..NEW {
        logits = model.forward(&next, PROMPT + step - 1, &mut cache)?;
        next = logits.argmax(candle_core::D::Minus1)?.unsqueeze(1)?;
        next.to_vec2::<u32>()?;
    }
    Ok((prefill, start.elapsed().as_secs_f64()))
}

/// (steal, total) jiffies of all CPUs from `/proc/stat`, where it is readable.
fn cpu_times() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some((v.get(7).copied().unwrap_or(0), v.iter().sum()))
}

/// Share of the CPUs' time a hypervisor gave other guests between two readings, percent; `None`
/// for a window too short to tell.
fn steal_pct(from: Option<(u64, u64)>, to: Option<(u64, u64)>) -> Option<f64> {
    let ((s0, t0), (s1, t1)) = (from?, to?);
    // Under 1 s of one CPU (100 ticks of 10 ms) a single tick would read as tens of percent.
    (t1 >= t0 + 100).then(|| ((s1 - s0) as f64 / (t1 - t0) as f64 * 1000.0).round() / 10.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(name: &str, runs: usize) -> candle_core::Result<serde_json::Value> {
    let dev = Device::Cpu;
    let (model, cfg) = load(name, &dev)?;
    let mut out = serde_json::Map::new();
    for bs in [1usize, 8] {
        // Prompt ids spread over the vocabulary, different per sequence.
        let ids: Vec<u32> = (0..bs * PROMPT)
            .map(|i| (3 + (i * 7919) % (cfg.vocab_size - 3)) as u32)
            .collect();
        let ids = Tensor::from_vec(ids, (bs, PROMPT), &dev)?;
        generate(&model, &cfg, &ids, &dev)?;
        let (mut pre, mut full) = (Vec::new(), Vec::new());
        let from = cpu_times();
        for _ in 0..runs {
            let (p, f) = generate(&model, &cfg, &ids, &dev)?;
            pre.push(p);
            full.push(f);
        }
        let steal = steal_pct(from, cpu_times());
        let (p, f) = (median(pre), median(full));
        out.insert(
            format!("batch{bs}"),
            serde_json::json!({
                "prefill_s": (p * 1e4).round() / 1e4,
                "decode_tokens_per_s": ((bs * (NEW - 1)) as f64 / (f - p) * 10.0).round() / 10.0,
                "generate_s": (f * 1e4).round() / 1e4,
                "cpu_steal_pct": steal,
            }),
        );
    }
    Ok(serde_json::Value::Object(out))
}

fn main() -> candle_core::Result<()> {
    let runs = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        names = ["tiny-stories-dir", "smollm-135m", "tinyllama-1.1b"]
            .map(String::from)
            .to_vec();
    }
    let mut all = serde_json::Map::new();
    all.insert("tool".into(), "candle 0.11.1".into());
    // First line names the tool, so an interrupted run's output is still labelled.
    println!("{{\"tool\": \"candle 0.11.1\"}}");
    all.insert(
        "threads".into(),
        candle_core::utils::get_num_threads().into(),
    );
    for name in &names {
        let res = bench(name, runs)?;
        println!("{name} {res}");
        all.insert(name.clone(), res);
    }
    println!("{}", serde_json::Value::Object(all));
    Ok(())
}
