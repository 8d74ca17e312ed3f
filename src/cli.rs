//! Command-line definitions (clap).

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// llmeff measures what large language models cost to run: energy, latency, throughput,
/// FLOPs and memory, across models, precisions, batch sizes, devices and decoding methods.
///
/// Studies are Rhai scripts: evaluating one builds a plan (load → batch → infer → measure),
/// which llmeff then runs and stores under runs/<study>/ as Parquet.
#[derive(Debug, Parser)]
// `llmeff help` is ours: it describes the scripting functions (and still shows a command's help).
#[command(
    name = "llmeff",
    version,
    about,
    long_about,
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a study script and store its results under <out>/<study>/.
    ///
    /// Finished runs are stored one file each as they end; running the same script again
    /// resumes and runs only what is missing.
    Run(RunArgs),
    /// Show the plan a study script builds, without running anything.
    Plan(PlanArgs),
    /// Generate a continuation of a prompt with one model and print it.
    Generate(GenerateArgs),
    /// Build a plan interactively: each statement extends it; :plan, :run, :results, :help.
    Repl(ReplArgs),
    /// Summarise a study folder: tables of each configuration's means, failed runs, and charts
    /// (SVG and PNG) with one self-contained HTML page under <dir>/report/.
    Report(ReportArgs),
    /// Show this machine: CPU, memory, devices, and which meters (NVML, RAPL, estimate, /proc,
    /// device peaks) are available here and why the others are missing.
    Env(EnvArgs),
    /// Measure llmeff's own inference speed on the CPU (or --device): prefill time and decode
    /// tokens/s at batch 1 and 8 for tiny-stories and the SmolLM-135M and TinyLlama-1.1B
    /// shapes, with MBU.
    ///
    /// Build with --release; debug builds measure the debug build.
    Bench(BenchArgs),
    /// Describe the functions study scripts can call: `llmeff help` lists them, `llmeff help
    /// load` shows one with its options (type, default, unit, valid values) and an example.
    ///
    /// `llmeff help COMMAND` shows a command's help, as `llmeff COMMAND --help` does.
    Help(HelpArgs),
}

/// Arguments of `llmeff help`.
#[derive(Debug, clap::Args)]
pub struct HelpArgs {
    /// A script function (load, infer, ...), option map (decoding, arrival, carbon), stdlib
    /// module (sweep, scenarios, models) or command.
    pub topic: Option<String>,
    /// Print the whole reference as Markdown (the text of docs/scripting.md).
    #[arg(long, conflicts_with = "topic")]
    pub markdown: bool,
    /// Print Rhai definitions of the script functions for editors (the text of
    /// docs/llmeff.d.rhai).
    #[arg(long, conflicts_with_all = ["topic", "markdown"])]
    pub definitions: bool,
}

/// Arguments of `llmeff bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Only models whose name contains one of these (tiny-stories, smollm, tinyllama); a name
    /// matching none of them selects the presets whose Hub id contains it (e.g. llama-3.2-1b),
    /// measured with random weights.
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8])]
    pub batches: Vec<usize>,
    /// Prompt length, tokens.
    #[arg(long, default_value_t = 32)]
    pub prompt_tokens: usize,
    /// New tokens per sequence (EOS ignored).
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// Timed repetitions after one warm-up; the median is reported, as the peer baselines do.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// CPU threads (default: rayon's, one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also generate this many tokens with tiny-llama3-gqa and report resident-memory growth
    /// (0 = skip; skipped too when --models names no `tiny-llama3-gqa`).
    #[arg(long, default_value_t = 1000)]
    pub growth_tokens: usize,
    /// A peer's figures measured on this machine (the output of `benches/transformers_shapes.py`,
    /// `benches/candle-shapes` or `benches/llama_cpp_shapes.py`): adds them and llmeff's speed-up
    /// beside each row. Repeat for several peers.
    #[arg(long)]
    pub baseline: Vec<PathBuf>,
    /// The device the models run on: cpu (llmeff's kernels), cuda:N (burn-cuda; a build with
    /// the `cuda` feature), wgpu or wgpu:N (burn-wgpu; the `wgpu` feature). Off the CPU, CPU
    /// steal and copy now are not measured, and MBU divides by the GPU's datasheet bandwidth
    /// where llmeff's table knows it (by NVML's name), else it is not reported.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The forward pass to measure (default: host on the CPU, burn on a GPU; studies pick it
    /// with `load(#{ compute })`).
    #[arg(long, value_enum)]
    pub forward: Option<ForwardArg>,
    /// Weight formats, each model measured in every one: f32, f16, bf16 (the load dtype) and
    /// fp8, int8, int4, nf4 (weights quantized in blocks of 32, computed at f32). A baseline's
    /// figures are matched by format: llama.cpp's F16, BF16, Q8_0 and Q4_0 for f16, bf16, int8
    /// and int4; fp8 and nf4 have no llama.cpp counterpart.
    #[arg(long, value_delimiter = ',', default_value = "f32", value_parser = bench::Format::parse)]
    pub dtypes: Vec<bench::Format>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The forward passes `llmeff bench` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ForwardArg {
    /// llmeff's host kernels (the default on the CPU; the CPU only).
    Host,
    /// burn's tensor ops: burn-flex on the CPU, burn-cuda or burn-wgpu on a GPU.
    Burn,
}

/// Arguments of `llmeff env`.
#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `llmeff report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The study folder, e.g. runs/single (it holds runs.parquet).
    pub dir: PathBuf,
}

/// Arguments of `llmeff repl`.
#[derive(Debug, clap::Args)]
pub struct ReplArgs {
    /// Study name for :run.
    #[arg(long, default_value = "repl")]
    pub study: String,
    /// Folder that holds one sub-folder per study.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// CPU threads the models run on (default: rayon's, one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Arguments of `llmeff run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The study script (.rhai).
    pub script: PathBuf,
    /// Folder that holds one sub-folder per study.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Study name (default: the script's `study(#{ name })`, else its file name).
    #[arg(long)]
    pub study: Option<String>,
    /// Run only shard I of N (0-based, `I/N`); defaults from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX with SLURM_ARRAY_TASK_COUNT / LLMEFF_SHARDS.
    ///
    /// A shard from those variables must have the count the study is laid out in (its
    /// manifest.json records it) unless --force; --shard may name any, e.g. to resume one task
    /// of an array resubmitted alone (`sbatch --array=2 job.sh ... --shard 2/4`).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Plain log lines instead of a progress bar.
    #[arg(long)]
    pub plain: bool,
    /// Print only errors and the final summary line (no progress, no results table).
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also print each run's details as it is stored: run hash, what computed it, energy
    /// sources and meters, and the meters' notes.
    #[arg(short, long)]
    pub verbose: bool,
    /// CPU threads the models run on (default: rayon's, one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run even if the study folder holds results of a different plan; results of runs no
    /// longer planned move to superseded/ (nothing is deleted).
    #[arg(long)]
    pub force: bool,
}

/// Output formats of `llmeff plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// EXPLAIN-style text: loads, runs and their configs, then the schedule.
    Text,
    /// Graphviz DOT of the DAG.
    Dot,
    /// Nodes (kind, options), edges and runs as JSON.
    Json,
}

/// Arguments of `llmeff plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The study script (.rhai).
    pub script: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Also show what each of N tasks runs when the study is split into N shards (a Slurm
    /// array `sbatch --array=0-<N-1>`, an Indexed Job of N completions, or `llmeff run --shard
    /// I/N`): each shard's loads and runs, in the order it runs them (text and json).
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
            .range(1..=engine::schedule::MAX_SHARDS as u64)
    )]
    pub shards: Option<usize>,
}

/// Arguments of `llmeff generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Model: bundled alias (tiny-stories, tiny-llama3-gqa, tiny-qwen2, tiny-qwen3,
    /// tiny-mistral, tiny-phi3, tiny-gemma2), local folder (a Hugging Face Llama, Mistral, Qwen2,
    /// Qwen3, Phi-3 or Gemma 2 checkpoint), or Hub id (org/name, from the Hugging Face cache;
    /// HF_HUB_OFFLINE=1 never touches the network). With --weights random, the built-in presets
    /// need no download: `llmeff help load` lists them.
    #[arg(long, default_value = "tiny-stories")]
    pub model: String,
    /// Hub revision (branch, tag or commit) of a Hub id.
    #[arg(long)]
    pub revision: Option<String>,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Precision.
    #[arg(long, value_parser = ["f32", "f16", "bf16"], default_value = "f32")]
    pub dtype: String,
    /// Trained weights or seeded random weights shaped by the model's config.
    #[arg(long, value_parser = ["pretrained", "random"], default_value = "pretrained")]
    pub weights: String,
    /// Weight-only quantization of the linear layers, in blocks of --block-size (a GGUF file
    /// stored as Q8_0 or Q4_0 needs the matching int8 or int4 at block 32).
    #[arg(long, value_parser = ["int8", "int4", "nf4", "fp8"])]
    pub quantize: Option<String>,
    /// Weights per quantization block along the input dimension (with --quantize).
    #[arg(long, default_value_t = 32, requires = "quantize")]
    pub block_size: usize,
    /// Device: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Sample with this temperature instead of greedy decoding.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Top-k cut when sampling (0 = off); needs --temperature.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Top-p cut when sampling, in (0, 1] (1 = off); needs --temperature.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Seed for sampling and random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// CPU threads the model runs on (default: rayon's, one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print {prompt, input_ids, output_ids, text, ttft_s, decode_tokens_per_s,
    /// output_tokens_per_s, ...} as JSON.
    #[arg(long)]
    pub json: bool,
}
