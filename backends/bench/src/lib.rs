//! llmeff's own inference speed on the CPU or a GPU, measured: prefill time and decode
//! tokens/s per model, weight format and batch (the median of timed repeats after a warm-up),
//! the bandwidth decoding achieves against the device's memory bandwidth (MBU: the CPU's
//! measured read bandwidth, a GPU's datasheet figure), peers' figures from baseline files
//! matched by format, the caveats the figures carry, and resident-memory growth over a long
//! generation. It prints nothing: the binary renders a [`BenchReport`] as a table or JSON.

pub mod baseline;
pub mod device;
pub mod format;
pub mod growth;
pub mod harness;
pub mod measure;
pub mod models;
pub mod warnings;

pub use baseline::{
    BASELINE_NEW_TOKENS, BASELINE_PROMPT_TOKENS, Baseline, BaselineError, Peer, read_baseline,
};
pub use device::{BuiltBackends, DeviceError, forward_for, gpu_backend, parse_device};
pub use format::{Format, FormatError, QUANT_BLOCK_SIZE};
pub use growth::{GrowthError, MemoryGrowth, memory_growth};
pub use harness::{BenchError, BenchProgress, BenchReport, BenchSettings, run_bench};
pub use measure::{BenchRow, median};
pub use models::{BenchModel, GROWTH_MODEL, MODELS, is_selected, selected};
pub use warnings::{CONTENDED_SHARE, contention_note, warnings};
