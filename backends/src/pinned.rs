//! A model on a core set (`cpu:0-3`): the loaded model plus a rayon pool pinned to those
//! cores, entered for every computation (starting a generation, each step, logits, setting up
//! a serving batch, each prefill and decode), so the model's work, its products split over the
//! pool included, runs on those cores only.

use api::runtime::{GenerateOptions, Generation, LoadedModel, ModelInfo, RuntimeError, StepOutput};
use api::serving::{ServeOptions, ServeRequest, ServingBatch, SlotToken};
use rayon::ThreadPool;

use crate::cores::{self, AffinityError, CoreSet};
use crate::handle::{ErasedModel, LogitPositions, Logits};
use crate::llama::as_step_owner;

/// A loaded model whose computations run on its own pool pinned to `cores`.
pub(crate) struct PinnedModel {
    inner: Box<dyn ErasedModel>,
    cores: CoreSet,
    /// One thread per core of `cores`, each pinned to the whole set ([`cores::pinned_pool`]).
    pool: ThreadPool,
}

impl PinnedModel {
    /// `inner` run on `pool`, whose threads are pinned to `cores`.
    pub(crate) fn new(inner: Box<dyn ErasedModel>, cores: CoreSet, pool: ThreadPool) -> Self {
        Self { inner, cores, pool }
    }
}

/// Runs `work` on a thread of `pool` as the owner of its steps: the caller blocks until it
/// returns, and the host pass spins the pool's other threads through each step as it does for
/// a step called from outside a pool (`as_step_owner`).
fn on_pool<R: Send>(pool: &ThreadPool, work: impl FnOnce() -> R + Send) -> R {
    pool.install(|| as_step_owner(work))
}

impl LoadedModel for PinnedModel {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        self.inner.encode(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, RuntimeError> {
        self.inner.decode(ids)
    }

    fn start<'a>(
        &'a self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Box<dyn Generation + 'a>, RuntimeError> {
        Ok(self.start_send(prompts, options)?)
    }

    fn prompt_logits(&self, prompts: &[Vec<u32>]) -> Result<Logits, RuntimeError> {
        self.logits(prompts, LogitPositions::All)
    }

    fn serve<'a>(
        &'a self,
        options: &ServeOptions,
    ) -> Result<Box<dyn ServingBatch + 'a>, RuntimeError> {
        Ok(self.serve_send(options)?)
    }
}

impl ErasedModel for PinnedModel {
    fn logits(
        &self,
        prompts: &[Vec<u32>],
        positions: LogitPositions,
    ) -> Result<Logits, RuntimeError> {
        let inner = &*self.inner;
        on_pool(&self.pool, || inner.logits(prompts, positions))
    }

    fn executed_flops(&self) -> u64 {
        self.inner.executed_flops()
    }

    fn start_send<'a>(
        &'a self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Box<dyn Generation + Send + 'a>, RuntimeError> {
        let inner = &*self.inner;
        // On the pool: the KV cache and scratch are first touched by a pinned thread, so
        // their pages are placed near those cores.
        let generation = on_pool(&self.pool, || inner.start_send(prompts, options))?;
        Ok(Box::new(PinnedGeneration {
            inner: generation,
            pool: &self.pool,
        }))
    }

    fn serve_send<'a>(
        &'a self,
        options: &ServeOptions,
    ) -> Result<Box<dyn ServingBatch + Send + 'a>, RuntimeError> {
        let inner = &*self.inner;
        // On the pool, as a generation starts: the slots' cache is first touched there.
        let batch = on_pool(&self.pool, || inner.serve_send(options))?;
        Ok(Box::new(PinnedServing {
            inner: batch,
            pool: &self.pool,
        }))
    }

    fn cores(&self) -> Option<&CoreSet> {
        Some(&self.cores)
    }

    fn step_thread_cores(&self) -> Result<CoreSet, AffinityError> {
        on_pool(&self.pool, cores::current_affinity)
    }
}

/// A generation of a [`PinnedModel`]: each step runs on the model's pinned pool.
struct PinnedGeneration<'a> {
    inner: Box<dyn Generation + Send + 'a>,
    pool: &'a ThreadPool,
}

impl Generation for PinnedGeneration<'_> {
    fn step(&mut self) -> Result<StepOutput, RuntimeError> {
        let inner = &mut self.inner;
        on_pool(self.pool, || inner.step())
    }

    fn kv_cache_bytes(&self) -> u64 {
        self.inner.kv_cache_bytes()
    }
}

/// A serving batch of a [`PinnedModel`]: each prefill and decode runs on the model's pinned
/// pool. Admission, release and the counts only update the batch's bookkeeping, which a
/// hand-over to the pool would cost more than.
struct PinnedServing<'a> {
    inner: Box<dyn ServingBatch + Send + 'a>,
    pool: &'a ThreadPool,
}

impl ServingBatch for PinnedServing<'_> {
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    fn occupied(&self) -> usize {
        self.inner.occupied()
    }

    fn admit(&mut self, request: ServeRequest) -> Result<usize, RuntimeError> {
        self.inner.admit(request)
    }

    fn pending_prompt(&self, slot: usize) -> usize {
        self.inner.pending_prompt(slot)
    }

    fn prefill(&mut self, chunks: &[(usize, usize)]) -> Result<Vec<SlotToken>, RuntimeError> {
        let inner = &mut self.inner;
        on_pool(self.pool, || inner.prefill(chunks))
    }

    fn decode(&mut self, slots: &[usize]) -> Result<Vec<SlotToken>, RuntimeError> {
        let inner = &mut self.inner;
        on_pool(self.pool, || inner.decode(slots))
    }

    fn release(&mut self, slot: usize) {
        self.inner.release(slot);
    }

    fn kv_cache_bytes(&self) -> u64 {
        self.inner.kv_cache_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use api::runtime::Decoding;

    use super::*;

    /// Where each computation of a [`Probe`] ran: the thread's name and its cores.
    #[derive(Debug, Clone, PartialEq)]
    struct Seen {
        what: &'static str,
        thread: Option<String>,
        cores: CoreSet,
        owner: bool,
    }

    /// A model that computes nothing and records where it was asked to.
    struct Probe {
        info: ModelInfo,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Probe {
        fn record(&self, what: &'static str) {
            let seen = Seen {
                what,
                thread: std::thread::current().name().map(str::to_string),
                cores: cores::current_affinity().expect("reading this thread's cores"),
                owner: crate::llama::is_step_owner(),
            };
            self.seen.lock().expect("probe lock").push(seen);
        }
    }

    struct ProbeGeneration<'a> {
        probe: &'a Probe,
    }

    /// A serving batch that computes nothing and records where its calls ran.
    struct ProbeServing<'a> {
        probe: &'a Probe,
    }

    impl ServingBatch for ProbeServing<'_> {
        fn capacity(&self) -> usize {
            1
        }

        fn occupied(&self) -> usize {
            0
        }

        fn admit(&mut self, _request: ServeRequest) -> Result<usize, RuntimeError> {
            Ok(0)
        }

        fn pending_prompt(&self, _slot: usize) -> usize {
            0
        }

        fn prefill(&mut self, _chunks: &[(usize, usize)]) -> Result<Vec<SlotToken>, RuntimeError> {
            self.probe.record("prefill");
            Ok(Vec::new())
        }

        fn decode(&mut self, _slots: &[usize]) -> Result<Vec<SlotToken>, RuntimeError> {
            self.probe.record("decode");
            Ok(Vec::new())
        }

        fn release(&mut self, _slot: usize) {}

        fn kv_cache_bytes(&self) -> u64 {
            0
        }
    }

    impl Generation for ProbeGeneration<'_> {
        fn step(&mut self) -> Result<StepOutput, RuntimeError> {
            self.probe.record("step");
            Ok(StepOutput {
                tokens: vec![Some(7)],
                finished: true,
            })
        }

        fn kv_cache_bytes(&self) -> u64 {
            0
        }
    }

    impl LoadedModel for Probe {
        fn info(&self) -> &ModelInfo {
            &self.info
        }

        fn encode(&self, _text: &str) -> Result<Vec<u32>, RuntimeError> {
            Ok(vec![1])
        }

        fn decode(&self, _ids: &[u32]) -> Result<String, RuntimeError> {
            Ok(String::new())
        }

        fn start<'a>(
            &'a self,
            prompts: &[Vec<u32>],
            options: &GenerateOptions,
        ) -> Result<Box<dyn Generation + 'a>, RuntimeError> {
            Ok(self.start_send(prompts, options)?)
        }
    }

    impl ErasedModel for Probe {
        fn logits(
            &self,
            _prompts: &[Vec<u32>],
            _positions: LogitPositions,
        ) -> Result<Logits, RuntimeError> {
            self.record("logits");
            Ok(Vec::new())
        }

        fn executed_flops(&self) -> u64 {
            0
        }

        fn start_send<'a>(
            &'a self,
            _prompts: &[Vec<u32>],
            _options: &GenerateOptions,
        ) -> Result<Box<dyn Generation + Send + 'a>, RuntimeError> {
            self.record("start");
            Ok(Box::new(ProbeGeneration { probe: self }))
        }

        fn serve_send<'a>(
            &'a self,
            _options: &ServeOptions,
        ) -> Result<Box<dyn ServingBatch + Send + 'a>, RuntimeError> {
            self.record("serve");
            Ok(Box::new(ProbeServing { probe: self }))
        }
    }

    fn probe_info() -> ModelInfo {
        ModelInfo {
            name: "probe".into(),
            architecture: "none".into(),
            compute: "nothing".into(),
            parameters: 0,
            weight_bytes: 0,
            step_weight_bytes: 0,
            hidden_size: 0,
            num_layers: 0,
            num_heads: 0,
            num_kv_heads: 0,
            head_dim: 0,
            intermediate_size: 0,
            vocab_size: 0,
            max_position_embeddings: 0,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            adapter: None,
            adapter_driver: None,
        }
    }

    #[test]
    fn start_steps_logits_and_serving_run_on_the_pinned_pool_as_step_owners() {
        let allowed = cores::allowed_cores().expect("this process's cores");
        let first = CoreSet::from_cores([allowed.cores()[0]]).expect("one core");
        let pool = cores::pinned_pool(&first).expect("a pool on one core");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let probe = Box::new(Probe {
            info: probe_info(),
            seen: Arc::clone(&seen),
        });
        let model = PinnedModel::new(probe, first.clone(), pool);
        let options = GenerateOptions {
            max_new_tokens: 1,
            min_new_tokens: 0,
            stop_at_eos: false,
            decoding: Decoding::Greedy,
        };
        let mut generation = model.start(&[vec![1]], &options).expect("start");
        assert!(generation.step().expect("step").finished);
        drop(generation);
        model.prompt_logits(&[vec![1]]).expect("logits");
        let serve = ServeOptions {
            max_batch: 1,
            slot_capacity: 2,
            min_new_tokens: 0,
            stop_at_eos: false,
            decoding: Decoding::Greedy,
        };
        let mut serving = model.serve(&serve).expect("serve");
        serving.prefill(&[(0, 1)]).expect("prefill");
        serving.decode(&[0]).expect("decode");
        drop(serving);
        assert_eq!(model.cores(), Some(&first));
        assert_eq!(model.step_thread_cores().expect("probe"), first);
        // The caller itself stays unpinned.
        assert_eq!(cores::current_affinity().expect("cores"), allowed);
        let seen = seen.lock().expect("probe lock").clone();
        let what: Vec<&str> = seen.iter().map(|s| s.what).collect();
        assert_eq!(
            what,
            ["start", "step", "logits", "serve", "prefill", "decode"]
        );
        for s in seen {
            assert_eq!(s.cores, first, "{}", s.what);
            assert_eq!(s.thread, Some(format!("llmeff-cpu{first}-0")), "{}", s.what);
            assert!(s.owner, "{} ran without the step-owner mark", s.what);
        }
    }
}
