//! The timing rule on an asynchronous device, tested on wgpu (lavapipe in CI): a generation
//! step returns only once the device has finished its work, because it hands back the picked
//! token ids, which must be read to the host. So a clock read when `step` returns (first token,
//! each decode step, end of run) times the work, not its launch.
//!
//! The test gives the device a step long enough to see: after `step` returns, waiting for the
//! device (`B::sync`) must take almost nothing. A control launches the same forward pass
//! without reading anything back, and there the wait is most of the work: so the check can
//! tell a launch-timed step from a work-timed one.

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use std::time::Instant;

    use api::runtime::{DType, Decoding, GenerateOptions, Generation};
    use burn::tensor::backend::Backend;
    use burn_wgpu::{Wgpu, WgpuDevice};

    use crate::llama::batch::PaddedBatch;
    use crate::llama::config::LlamaConfig;
    use crate::llama::forward::{ForwardPass, LogitRows};
    use crate::llama::generation::LlamaGeneration;
    use crate::llama::model::BurnPass;
    use crate::llama::rope::{RopeConfig, RopeScaling};
    use crate::llama::weights::{LlamaWeights, WeightSource};

    /// Big enough that one prefill takes a visible time on lavapipe (a CPU running Vulkan).
    fn config() -> LlamaConfig {
        LlamaConfig {
            hidden_size: 512,
            intermediate_size: 1536,
            num_layers: 4,
            num_heads: 8,
            num_kv_heads: 4,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope: RopeConfig {
                theta: 10_000.0,
                scaling: RopeScaling::None,
            },
            tie_word_embeddings: true,
            vocab_size: 4096,
            max_position_embeddings: 512,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            initializer_range: 0.02,
            arch: crate::llama::families::Architecture::llama(4),
        }
    }

    /// The device, or `None` (with a note) where wgpu lists no adapter; required in CI.
    fn device() -> Option<WgpuDevice> {
        match crate::wgpu_adapter::select("wgpu", None) {
            Ok(adapter) => Some(adapter.device),
            Err(e) => {
                assert!(
                    std::env::var("LLMEFF_REQUIRE_WGPU").as_deref() != Ok("1"),
                    "LLMEFF_REQUIRE_WGPU=1 but {e}"
                );
                eprintln!("skipped: {e}");
                None
            }
        }
    }

    fn prompts() -> Vec<Vec<u32>> {
        (0..4)
            .map(|b| {
                (0..64)
                    .map(|t| 3 + ((b * 131 + t * 17) % 4000) as u32)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_step_returns_after_the_device_finished_its_work() {
        let Some(device) = device() else { return };
        let c = config();
        let weights =
            LlamaWeights::<Wgpu>::build(&c, &WeightSource::Random { seed: 3 }, &device, DType::F32)
                .unwrap();
        let pass = BurnPass::new(c, weights, device.clone(), DType::F32);
        let prompts = prompts();
        let options = GenerateOptions {
            max_new_tokens: 2,
            min_new_tokens: 0,
            stop_at_eos: false,
            decoding: Decoding::Greedy,
        };
        // Warm up: shader compilation and autotuning belong to no timed step.
        for _ in 0..2 {
            let mut g =
                LlamaGeneration::start(&pass, &[2], &prompts, &options, |_, _| Ok(())).unwrap();
            g.step().unwrap();
            <Wgpu as Backend>::sync(&device).unwrap();
        }

        // The control: the same prefill launched, nothing read back.
        let batch = PaddedBatch::new(prompts.iter().map(Vec::len).collect());
        let mut state = pass.new_state(batch.batch(), batch.width() + 1, batch.width() + 1);
        let t0 = Instant::now();
        let logits = pass
            .step(batch.prefill(&prompts), &mut state, LogitRows::Last)
            .unwrap();
        let launched_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        <Wgpu as Backend>::sync(&device).unwrap();
        let control_wait_s = t1.elapsed().as_secs_f64();
        drop(logits);

        // A generation step, as the executor times it.
        let mut g = LlamaGeneration::start(&pass, &[2], &prompts, &options, |_, _| Ok(())).unwrap();
        let t2 = Instant::now();
        let out = g.step().unwrap();
        let step_s = t2.elapsed().as_secs_f64();
        let t3 = Instant::now();
        <Wgpu as Backend>::sync(&device).unwrap();
        let wait_s = t3.elapsed().as_secs_f64();
        assert_eq!(out.tokens.len(), 4);
        eprintln!(
            "control: launch {launched_s:.4} s, then wait {control_wait_s:.4} s; step {step_s:.4} s, then wait {wait_s:.4} s"
        );
        // The control shows the device runs behind the host: most of the work came after the
        // launch returned, so timing a launch would miss it.
        assert!(
            control_wait_s > launched_s,
            "the control did not run asynchronously (launch {launched_s} s, wait {control_wait_s} s): the check could not tell"
        );
        // After a step, nothing is left to wait for.
        assert!(
            wait_s < 0.1 * step_s + 0.005,
            "the step returned before the device finished: step {step_s} s, wait after {wait_s} s"
        );
    }
}
