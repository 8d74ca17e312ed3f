//! The script vocabulary, declared once: every function a study script can call and, per
//! stage, every option key with its type, default, unit, valid values, meaning and an example.
//!
//! Everything else is generated from it: option checking ([`crate::options::OptionMap`]),
//! "did you mean", REPL completion ([`completion_words`]), `llmeff help` and
//! `docs/scripting.md` and the editors' `docs/llmeff.d.rhai` ([`crate::reference`]).

/// What a topic describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// A stage function that adds a plan node (or sets study settings).
    Stage,
    /// A map passed as one option of a stage (`decoding`, `arrival`, `carbon`).
    OptionMap,
    /// Another function llmeff registers.
    Helper,
    /// A standard-library module (`import "NAME" as NAME;`).
    Module,
}

impl TopicKind {
    /// Heading of the topics of this kind.
    pub fn heading(self) -> &'static str {
        match self {
            TopicKind::Stage => "Stage functions",
            TopicKind::OptionMap => "Option maps",
            TopicKind::Helper => "Helper functions",
            TopicKind::Module => "Standard library modules",
        }
    }

    /// Every kind, in the order the reference lists them.
    pub const ALL: [TopicKind; 4] = [
        TopicKind::Stage,
        TopicKind::OptionMap,
        TopicKind::Helper,
        TopicKind::Module,
    ];
}

/// The type of an option's value, as scripts write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// A string.
    Str,
    /// An integer written without a point.
    Int,
    /// An integer or a float.
    Number,
    /// `true` or `false`.
    Bool,
    /// An array of strings.
    Strings,
    /// A nested option map `#{...}`.
    Map,
}

impl KeyType {
    /// The name the reference shows (`string`, `integer`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Str => "string",
            KeyType::Int => "integer",
            KeyType::Number => "number",
            KeyType::Bool => "bool",
            KeyType::Strings => "array of strings",
            KeyType::Map => "map",
        }
    }

    /// What a value of this type is called in a wrong-type error (`expects an integer`).
    pub fn expected(self) -> &'static str {
        match self {
            KeyType::Str => "a string",
            KeyType::Int => "an integer",
            KeyType::Number => "a number",
            KeyType::Bool => "true or false",
            KeyType::Strings => "an array of strings",
            KeyType::Map => "a map `#{...}`",
        }
    }

    /// The type in Rhai's definition files (`.d.rhai`).
    pub fn rhai(self) -> &'static str {
        match self {
            KeyType::Str => "String",
            KeyType::Int => "int",
            KeyType::Number => "float",
            KeyType::Bool => "bool",
            KeyType::Strings => "Array",
            KeyType::Map => "Map",
        }
    }
}

/// One option key: the single declaration its checking, completion, help and editor
/// definitions are generated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionKey {
    /// The key as written in the map.
    pub name: &'static str,
    /// Value type.
    pub ty: KeyType,
    /// The value used when the key is left out.
    pub default: &'static str,
    /// Unit of the value, empty when it has none.
    pub unit: &'static str,
    /// Values or range accepted.
    pub values: &'static str,
    /// What it does.
    pub meaning: &'static str,
    /// A value other than the default, as a script writes it (`\"bf16\"`, `64`).
    pub example: &'static str,
}

/// One function of a standard-library module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionDoc {
    /// Name as called after the module's alias.
    pub name: &'static str,
    /// Call form.
    pub signature: &'static str,
    /// What it returns or does.
    pub meaning: &'static str,
}

/// One help topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic {
    /// Name, as given to `llmeff help NAME`.
    pub name: &'static str,
    /// What it describes.
    pub kind: TopicKind,
    /// Call forms (for option maps: where the map goes).
    pub signatures: &'static [&'static str],
    /// One line.
    pub summary: &'static str,
    /// A paragraph or two.
    pub description: &'static str,
    /// What a call returns.
    pub returns: &'static str,
    /// Option keys, in the order they are documented.
    pub options: &'static [OptionKey],
    /// A module's functions.
    pub functions: &'static [FunctionDoc],
    /// A complete script that plans.
    pub example: &'static str,
}

const fn opt(
    name: &'static str,
    ty: KeyType,
    default: &'static str,
    unit: &'static str,
    values: &'static str,
    meaning: &'static str,
    example: &'static str,
) -> OptionKey {
    OptionKey {
        name,
        ty,
        default,
        unit,
        values,
        meaning,
        example,
    }
}

const fn func(name: &'static str, signature: &'static str, meaning: &'static str) -> FunctionDoc {
    FunctionDoc {
        name,
        signature,
        meaning,
    }
}

/// Every topic, in the order `llmeff help` and `docs/scripting.md` list them.
pub const TOPICS: &[Topic] = &[
    Topic {
        name: "study",
        kind: TopicKind::Stage,
        signatures: &["study(#{ options })"],
        summary: "Study-wide settings: the results folder's name, cycles, run order, retries, placement.",
        description: "Call it once, usually first. Without it the study is named after the script \
            file (`llmeff run --study NAME` overrides either) and every run executes once.",
        returns: "nothing",
        options: &[
            opt(
                "name",
                KeyType::Str,
                "the script's file name",
                "",
                "letters, digits, `-`, `_`, `.`; not starting with `.`",
                "Folder of the results under the output folder: `runs/<name>/`.",
                "\"sweep-1\"",
            ),
            opt(
                "cycles",
                KeyType::Int,
                "1",
                "",
                "1 to 10000; runs x cycles at most 100000",
                "How many times every run executes. With more than one, the order of model \
                 groups and of runs within each group is shuffled per cycle (seeded), so slow \
                 drifts such as heat do not line up with one setting.",
                "3",
            ),
            opt(
                "seed",
                KeyType::Int,
                "0",
                "",
                ">= 0",
                "Seed of the per-cycle run-order shuffle.",
                "7",
            ),
            opt(
                "retries",
                KeyType::Int,
                "3",
                "attempts",
                "0 to 100",
                "Extra attempts after a run fails with a backend error (device busy, memory \
                 pressure). Load failures and invalid input are not retried: they would fail \
                 the same way.",
                "0",
            ),
            opt(
                "retry_delay_s",
                KeyType::Number,
                "5",
                "s",
                "finite, 0 to 86400",
                "Seconds to wait before each retry.",
                "0.5",
            ),
            opt(
                "quality",
                KeyType::Bool,
                "true",
                "",
                "true or false",
                "Measure each run's quality against the same model at f32, unquantized, on the \
                 same device (the `quality_*` columns): KL divergence and top-1 agreement of \
                 the teacher-forced prompt logits, perplexity of the prompts under both, and \
                 greedy-token agreement. Computed after the run, outside its timed window and \
                 meters; the reference's outputs are cached in the study folder (`quality/`). \
                 `false` leaves the columns null and loads no reference.",
                "false",
            ),
            opt(
                "placement",
                KeyType::Str,
                "\"one-at-a-time\"",
                "",
                "one-at-a-time, per-device",
                "Whether runs execute one at a time, each with the machine to itself, or \
                 `per-device`: runs whose devices share no hardware (`cuda:0` and `cuda:1`, \
                 `cpu:0-3` and `cpu:4-7`) run at the same time, one lane per group of \
                 overlapping devices, each lane in schedule order with its own model, so an \
                 8-GPU node measures 8 runs at once. A run's GPU energy stays its own GPUs'; \
                 CPU package and DRAM energy are machine-wide, so each run holds its \
                 time-share of them (the window's energy over the mean number of runs in \
                 flight), `shared` in `energy_cpu_source`/`energy_ram_source`, and its energy \
                 is not split into prefill and decode. Not part of a run's identity; the \
                 study's manifest records it. `llmeff plan` shows the lanes.",
                "\"per-device\"",
            ),
        ],
        functions: &[],
        example: "study(#{ name: \"batch-sweep\", cycles: 3, seed: 7, retries: 0 });\n\
            let m = load(\"tiny-stories\");\n\
            infer(m, batch(prompts(\"builtin:stories\", #{ count: 8 }), #{ size: 4 }));\n",
    },
    Topic {
        name: "load",
        kind: TopicKind::Stage,
        signatures: &["load(model)", "load(model, #{ options })"],
        summary: "A model on a device, in a precision.",
        description: "`model` is a bundled alias (`tiny-stories`, `tiny-llama3-gqa`, `tiny-qwen2`, \
            `tiny-qwen3`, `tiny-mistral`, `tiny-phi3`, `tiny-gemma2`: read from \
            `LLMEFF_MODELS_DIR`, else beside the binary or unpacked from its built-in copy into the data folder), a local folder holding a Hugging Face \
            checkpoint of a supported family (`model_type` llama, mistral, qwen2, qwen3, phi3 or \
            gemma2: `config.json`, `tokenizer.json`, safetensors), a llama.cpp `.gguf` file of \
            those families (F32/F16/BF16/Q8_0/Q4_0; a Q8_0 or Q4_0 file runs as \
            `quantize(load(\"m.gguf\"), #{ method: \"int8\" or \"int4\", block_size: 32 })`, from its \
            own codes), or a Hub id (`org/name`) \
            found in the Hugging Face cache (`HF_HUB_CACHE`, `HF_HOME`; `HF_HUB_OFFLINE=1` never \
            touches the network). With `weights: \"random\"` these Hub ids need no download at \
            all: HuggingFaceTB/SmolLM-135M, TinyLlama/TinyLlama-1.1B-Chat-v1.0, \
            meta-llama/Llama-3.2-1B, meta-llama/Llama-3.2-3B, meta-llama/Llama-3.1-8B, \
            Qwen/Qwen2.5-0.5B, Qwen/Qwen2.5-1.5B, Qwen/Qwen2.5-7B, Qwen/Qwen3-0.6B, \
            Qwen/Qwen3-1.7B, Qwen/Qwen3-8B, mistralai/Mistral-7B-v0.3, \
            microsoft/Phi-3-mini-4k-instruct, google/gemma-2-2b, google/gemma-2-9b. \
            Equal calls return the same node, so a model is loaded once per cycle for all the \
            runs that use it.",
        returns: "a model (pass it to `quantize` or `infer`)",
        options: &[
            opt(
                "dtype",
                KeyType::Str,
                "\"f32\"",
                "",
                "f32, f16, bf16",
                "Precision of weights and activations. On the CPU every dtype runs on llmeff's \
                 own kernels (see `compute`): f16 and bf16 weights are held at 16 bits and \
                 widened in registers. fp8, int8, int4 and nf4 are quantizations: \
                 `quantize(m, #{ method: \"fp8\" })`.",
                "\"bf16\"",
            ),
            opt(
                "weights",
                KeyType::Str,
                "\"pretrained\"",
                "",
                "pretrained, random",
                "The checkpoint's trained weights, or seeded random weights of the model's \
                 shape (for speed and energy, not for text).",
                "\"random\"",
            ),
            opt(
                "revision",
                KeyType::Str,
                "none (the Hub's `main`)",
                "",
                "a branch, tag or commit",
                "Hub revision of a Hub id.",
                "\"main\"",
            ),
            opt(
                "device",
                KeyType::Str,
                "\"cpu\"",
                "",
                "cpu, cpu:<cores>, cuda:N, wgpu, wgpu:N",
                "Where the model runs: `cpu` is every core this process may use, `cpu:0-3` or \
                 `cpu:4,6` a core set (its own thread pool, pinned there); `cuda:N` needs a \
                 build with `--features cuda`; `wgpu` (the adapter wgpu prefers) and `wgpu:N` \
                 a build with `--features wgpu`.",
                "\"cpu:0-3\"",
            ),
            opt(
                "devices",
                KeyType::Strings,
                "none (one device)",
                "",
                "two or more devices of one kind, sharing no GPU or core",
                "Data-parallel replicas, one per device, as Hugging Face Accelerate runs them: \
                 each run splits its prompts between the replicas (contiguous shares, the first \
                 replicas taking the remainder), starts them together and runs each share on its \
                 own thread with its own batches. Per-replica figures go to \
                 `replicas.parquet`. Instead of `device`.",
                "[\"cpu:0\", \"cpu:1\"]",
            ),
            opt(
                "seed",
                KeyType::Int,
                "0",
                "",
                ">= 0",
                "Seed of the random weights (`weights: \"random\"`).",
                "1",
            ),
            opt(
                "compute",
                KeyType::Str,
                "\"auto\"",
                "",
                "auto, host, burn",
                "The forward pass: `host` runs llmeff's own kernels (fused layers over host \
                 memory; the CPU, every dtype and quantization with blocks a multiple of 32), \
                 `burn` runs burn's tensor ops (burn-flex on the CPU, burn-cuda on GPUs), `auto` \
                 the host kernels where they apply and burn elsewhere. Part of the run's \
                 identity: the same model on two passes is two runs.",
                "\"burn\"",
            ),
        ],
        functions: &[],
        example: "let m = load(\"tiny-stories\", #{ dtype: \"f32\", device: \"cpu\" });\n\
            let shape = load(\"HuggingFaceTB/SmolLM-135M\", #{ weights: \"random\", seed: 1 });\n\
            infer(m, prompts(\"builtin:stories\", #{ count: 2 }));\n",
    },
    Topic {
        name: "quantize",
        kind: TopicKind::Stage,
        signatures: &["quantize(model, #{ options })"],
        summary: "Weight-only quantization of a loaded model.",
        description: "Weights are stored in blocks that share one scale. On the CPU's host \
            kernels they stay packed in memory and are widened to f32 in registers inside each \
            matrix product; int8 and int4 on AVX-512 VNNI multiply as integers, with \
            activations rounded to int8 per 32 columns. On burn, int8 (and on CUDA int4 and \
            fp8) are burn's own quantized tensors; the rest are dequantized per product. The \
            `compute` column names the exact scheme. Embeddings and the LM head stay in the \
            load's dtype. A dtype, device and method that do not go together \
            fail the run with an error: a run never silently runs at another precision.",
        returns: "a quantized model (pass it to `infer`)",
        options: &[
            opt(
                "method",
                KeyType::Str,
                "required",
                "",
                "int8, int4, nf4, fp8",
                "Quantization format: symmetric 8-bit or 4-bit integers, 4-bit NormalFloat \
                 (QLoRA's code book), or float8 E4M3 (the format of published fp8 \
                 checkpoints), each with one f32 scale per block.",
                "\"nf4\"",
            ),
            opt(
                "block_size",
                KeyType::Int,
                "32",
                "weights",
                "a power of two >= 8",
                "Weights that share one scale, along each row of a weight matrix; a block at \
                 least as long as the rows gives one scale per row (the per-channel scale of \
                 published fp8 checkpoints). The host kernels take multiples of 32.",
                "64",
            ),
        ],
        functions: &[],
        example: "let m = load(\"tiny-stories\");\n\
            let q = quantize(m, #{ method: \"int8\", block_size: 32 });\n\
            infer(q, prompts(\"builtin:stories\", #{ count: 2 }));\n",
    },
    Topic {
        name: "prompts",
        kind: TopicKind::Stage,
        signatures: &["prompts(source)", "prompts(source, #{ options })"],
        summary: "A deterministic list of prompts.",
        description: "`source` is a bundled set, `\"builtin:stories\"` (24 story openings), \
            `\"builtin:chat\"` (12 short questions) or `\"builtin:long\"` (3 paragraph-long \
            prompts), or an array of strings written in the script.",
        returns: "prompts (pass them to `batch`, or straight to `infer` for batches of one)",
        options: &[
            opt(
                "count",
                KeyType::Int,
                "the source's size",
                "prompts",
                "1 to 100000",
                "How many prompts; a source with fewer is cycled through.",
                "8",
            ),
            opt(
                "max_input_tokens",
                KeyType::Int,
                "no limit",
                "tokens",
                "1 to 1048576",
                "Each prompt is cut to its first N tokens (with the model's tokenizer, at run \
                 time).",
                "64",
            ),
            opt(
                "seed",
                KeyType::Int,
                "0",
                "",
                ">= 0",
                "Shuffle of the source before `count` are taken; 0 keeps the source's order.",
                "3",
            ),
        ],
        functions: &[],
        example: "let stories = prompts(\"builtin:stories\", #{ count: 8, max_input_tokens: 64, seed: 3 });\n\
            let mine = prompts([\"Hello\", \"The weather today\"]);\n\
            infer(load(\"tiny-stories\"), stories);\n",
    },
    Topic {
        name: "batch",
        kind: TopicKind::Stage,
        signatures: &["batch(prompts)", "batch(prompts, #{ options })"],
        summary: "How prompts are grouped into generation batches.",
        description: "Consecutive prompts form a batch, left-padded to its longest prompt. \
            Prompts passed straight to `infer` are `batch(prompts)`: one at a time.",
        returns: "batches (pass them to `infer`)",
        options: &[
            opt(
                "size",
                KeyType::Int,
                "1; with token_budget, every prompt",
                "prompts",
                "1 to 4096",
                "Prompts per batch at most; the last batch may be smaller.",
                "4",
            ),
            opt(
                "token_budget",
                KeyType::Int,
                "none",
                "tokens",
                "1 to 1073741824",
                "Adaptive batching: a batch stops growing before batch x (longest prompt + \
                 max_new_tokens) would exceed this; a prompt over the budget runs alone.",
                "512",
            ),
        ],
        functions: &[],
        example: "let p = prompts(\"builtin:chat\", #{ count: 12 });\n\
            let fixed = batch(p, #{ size: 4 });\n\
            let adaptive = batch(p, #{ size: 8, token_budget: 512 });\n\
            infer(load(\"tiny-stories\"), fixed);\n",
    },
    Topic {
        name: "infer",
        kind: TopicKind::Stage,
        signatures: &[
            "infer(model, batches)",
            "infer(model, batches, #{ options })",
        ],
        summary: "A generation workload: one model over batches of prompts.",
        description: "`model` comes from `load` or `quantize`, `batches` from `batch` (or \
            `prompts`). An inference run that no `measure` call measures is a run with every \
            meter at its defaults.",
        returns: "an inference run (pass it to `measure`)",
        options: &[
            opt(
                "max_new_tokens",
                KeyType::Int,
                "32",
                "tokens",
                "1 to 1048576",
                "New tokens per prompt at most.",
                "64",
            ),
            opt(
                "min_new_tokens",
                KeyType::Int,
                "0",
                "tokens",
                "0 to max_new_tokens",
                "New tokens per prompt at least: the end-of-sequence token is ignored before.",
                "8",
            ),
            opt(
                "stop_at_eos",
                KeyType::Bool,
                "true",
                "",
                "true, false",
                "Whether the end-of-sequence token ends a sequence.",
                "false",
            ),
            opt(
                "decoding",
                KeyType::Map,
                "#{ method: \"greedy\" }",
                "",
                "see `decoding`",
                "How the next token is chosen.",
                "#{ method: \"sample\", temperature: 0.7 }",
            ),
            opt(
                "warmup",
                KeyType::Int,
                "1",
                "generations",
                "0 to 1000",
                "Untimed generations of the first batch before the timed window opens.",
                "0",
            ),
            opt(
                "arrival",
                KeyType::Map,
                "#{ pattern: \"closed_loop\" }",
                "",
                "see `arrival`",
                "When requests arrive.",
                "#{ pattern: \"poisson\", rate_per_s: 5.0 }",
            ),
            opt(
                "serve",
                KeyType::Map,
                "none (fixed batches)",
                "",
                "see `serve`",
                "Continuous batching: requests join the running batch as they arrive and \
                 leave at their own end, as serving engines schedule them.",
                "#{ max_batch: 16, max_batch_tokens: 2048 }",
            ),
            opt(
                "slo",
                KeyType::Map,
                "none",
                "",
                "see `slo`",
                "Latency targets; goodput counts the requests per second meeting them.",
                "#{ ttft_s: 0.5, tpot_s: 0.05 }",
            ),
        ],
        functions: &[],
        example: "let m = load(\"tiny-stories\");\n\
            let b = batch(prompts(\"builtin:stories\", #{ count: 8 }), #{ size: 4 });\n\
            let run = infer(m, b, #{ max_new_tokens: 64, min_new_tokens: 8, warmup: 1,\n\
            \x20                       decoding: #{ method: \"sample\", temperature: 0.8, seed: 1 } });\n",
    },
    Topic {
        name: "decoding",
        kind: TopicKind::OptionMap,
        signatures: &["infer(model, batches, #{ decoding: #{ options } })"],
        summary: "How `infer` chooses tokens: greedy or sampled.",
        description: "With method \"greedy\" (the default) the other keys are rejected: they \
            only apply to sampling.",
        returns: "",
        options: &[
            opt(
                "method",
                KeyType::Str,
                "\"greedy\"",
                "",
                "greedy, sample",
                "The most likely token, or a random draw from the (cut) distribution.",
                "\"sample\"",
            ),
            opt(
                "temperature",
                KeyType::Number,
                "1.0",
                "",
                "finite, >= 0; sample only",
                "Softmax temperature.",
                "0.7",
            ),
            opt(
                "top_k",
                KeyType::Int,
                "0 (off)",
                "tokens",
                ">= 0; sample only",
                "Draw only from the k most likely tokens.",
                "40",
            ),
            opt(
                "top_p",
                KeyType::Number,
                "1.0 (off)",
                "",
                "above 0, at most 1; sample only",
                "Draw only from the smallest set of tokens whose probability reaches p.",
                "0.9",
            ),
            opt(
                "seed",
                KeyType::Int,
                "0",
                "",
                ">= 0; sample only",
                "Seed of the sampler.",
                "2",
            ),
        ],
        functions: &[],
        example: "let m = load(\"tiny-stories\");\n\
            let p = prompts(\"builtin:stories\", #{ count: 4 });\n\
            infer(m, p, #{ decoding: #{ method: \"sample\", temperature: 0.7, top_k: 40, top_p: 0.9, seed: 2 } });\n",
    },
    Topic {
        name: "arrival",
        kind: TopicKind::OptionMap,
        signatures: &["infer(model, batches, #{ arrival: #{ options } })"],
        summary: "When `infer`'s requests arrive: all at once, or over time.",
        description: "A pattern takes only its own keys: `constant` takes interval_s, \
            `poisson` rate_per_s and seed, `bursty` burst and off_s, `gamma` rate_per_s, \
            burstiness and seed, `trace` path and time_scale; others are rejected. A trace \
            holds one request per row: its arrival (seconds, or a `YYYY-MM-DD HH:MM:SS.fff` \
            time), prompt tokens and output tokens, in columns `TIMESTAMP, ContextTokens, \
            GeneratedTokens` (the public Azure LLM inference traces, loaded as they are) or \
            `arrival_s, input_tokens, output_tokens`. Its requests replace the prompt set's: \
            request i's prompt is prompt i (cycled) cut or repeated to its token count (the \
            contents are synthetic, the lengths are the trace's); it generates at most its \
            output tokens (at least 1, at most max_new_tokens; with stop_at_eos false, \
            exactly); in fixed batches a batch runs until its longest request ends, as a static \
            batch does.",
        returns: "",
        options: &[
            opt(
                "pattern",
                KeyType::Str,
                "\"closed_loop\"",
                "",
                "closed_loop, constant, poisson, bursty, gamma, trace",
                "closed_loop: every request is waiting when the run starts; constant: one \
                 every interval_s; poisson: a seeded Poisson process of rate_per_s; bursty: \
                 burst requests at once, then off_s of silence; gamma: gamma-distributed gaps \
                 of mean 1/rate_per_s and shape burstiness; trace: the requests of a CSV or \
                 JSON Lines file.",
                "\"poisson\"",
            ),
            opt(
                "interval_s",
                KeyType::Number,
                "required by constant",
                "s",
                "above 0, at most 86400",
                "Seconds between arrivals.",
                "0.5",
            ),
            opt(
                "rate_per_s",
                KeyType::Number,
                "required by poisson and gamma",
                "requests/s",
                "1/86400 to 1000000",
                "Mean arrival rate.",
                "5.0",
            ),
            opt(
                "burstiness",
                KeyType::Number,
                "1.0",
                "",
                "0.01 to 1000; gamma only",
                "Shape of the gamma-distributed gaps (vLLM's --burstiness): 1 is Poisson, \
                 below 1 burstier, above 1 more regular; the gaps' coefficient of variation \
                 is 1/sqrt(burstiness).",
                "0.5",
            ),
            opt(
                "seed",
                KeyType::Int,
                "0",
                "",
                ">= 0; poisson and gamma only",
                "Seed of the arrival times.",
                "1",
            ),
            opt(
                "path",
                KeyType::Str,
                "required by trace",
                "",
                "a readable .csv or .jsonl file; relative to the working directory",
                "The trace to replay.",
                "\"traces/azure_conv.csv\"",
            ),
            opt(
                "time_scale",
                KeyType::Number,
                "1.0",
                "",
                "above 0; trace only",
                "Multiplies the trace's gaps (0.5 replays twice as fast).",
                "0.5",
            ),
            opt(
                "burst",
                KeyType::Int,
                "required by bursty",
                "requests",
                "1 to 100000",
                "Requests per burst.",
                "4",
            ),
            opt(
                "off_s",
                KeyType::Number,
                "required by bursty",
                "s",
                "above 0, at most 86400",
                "Seconds between bursts.",
                "0.5",
            ),
        ],
        functions: &[],
        example: "let m = load(\"tiny-stories\");\n\
            let p = prompts(\"builtin:chat\", #{ count: 12 });\n\
            infer(m, p, #{ arrival: #{ pattern: \"poisson\", rate_per_s: 5.0, seed: 1 } });\n\
            infer(m, p, #{ arrival: #{ pattern: \"bursty\", burst: 4, off_s: 0.5 } });\n",
    },
    Topic {
        name: "serve",
        kind: TopicKind::OptionMap,
        signatures: &["infer(model, prompts, #{ serve: #{ options } })"],
        summary: "Continuous (iteration-level) batching: the scheduler of vLLM, TGI and \
            llama.cpp's server.",
        description: "Requests queue as the arrival pattern delivers them. Every iteration \
            the running batch admits queued requests (first come, first served) while it has \
            a free slot and the iteration's token budget allows, prefills them, decodes every \
            running sequence one token, and retires those that end; a retired sequence's KV \
            slot goes to the next request. The budget counts one token per decoding sequence \
            plus the prompt tokens prefilled. With `prefill: \"whole\"` a request is admitted \
            when its whole prompt fits the remaining budget (a prompt longer than the whole \
            budget fails the run); `\"chunked\"` cuts prompts to the remaining budget and \
            prefills them over several iterations beside the decodes. `batch` sizes are \
            ignored: requests are scheduled one by one.",
        returns: "",
        options: &[
            opt(
                "max_batch",
                KeyType::Int,
                "16",
                "sequences",
                "1 to 4096",
                "Sequences the running batch holds at most (KV slots, reserved up front).",
                "32",
            ),
            opt(
                "max_batch_tokens",
                KeyType::Int,
                "2048",
                "tokens",
                "at least max_batch",
                "Tokens one iteration processes at most (vLLM's max_num_batched_tokens).",
                "4096",
            ),
            opt(
                "prefill",
                KeyType::Str,
                "\"whole\"",
                "",
                "whole, chunked",
                "Prefill a prompt in one pass, or in chunks over several iterations.",
                "\"chunked\"",
            ),
        ],
        functions: &[],
        example: "let m = load(\"tiny-stories\");\n\
            let p = prompts(\"builtin:stories\", #{ count: 32 });\n\
            infer(m, p, #{ serve: #{ max_batch: 8, max_batch_tokens: 512 },\n\
            \x20              arrival: #{ pattern: \"poisson\", rate_per_s: 20.0, seed: 1 },\n\
            \x20              slo: #{ ttft_s: 0.2, tpot_s: 0.02 } });\n",
    },
    Topic {
        name: "slo",
        kind: TopicKind::OptionMap,
        signatures: &["infer(model, prompts, #{ slo: #{ options } })"],
        summary: "Latency targets for goodput (vLLM's --goodput).",
        description: "A request meets the SLO when its TTFT (from arrival) and its TPOT are \
            both within their targets; a target left out always holds, and a request with one \
            token has no TPOT. `goodput_requests_per_s` is the requests meeting it per second \
            of the run, `slo_attainment_ratio` their share.",
        returns: "",
        options: &[
            opt(
                "ttft_s",
                KeyType::Number,
                "none",
                "s",
                "above 0",
                "Arrival to first token, at most.",
                "0.5",
            ),
            opt(
                "tpot_s",
                KeyType::Number,
                "none",
                "s",
                "above 0",
                "Mean time per output token after the first, at most.",
                "0.05",
            ),
        ],
        functions: &[],
        example: "infer(load(\"tiny-stories\"), prompts(\"builtin:chat\", #{ count: 8 }),\n\
            \x20     #{ slo: #{ ttft_s: 0.1 } });\n",
    },
    Topic {
        name: "measure",
        kind: TopicKind::Stage,
        signatures: &["measure(run)", "measure(run, #{ options })"],
        summary: "What to measure while an inference run executes; each call is one run.",
        description: "Measuring the same inference run twice with different options makes two \
            runs. Where a meter has no sensor its columns are null with a reason, never 0 \
            (`llmeff env` lists what this machine has). Background meters sample into \
            `runs/<study>/samples/`.",
        returns: "a measured run",
        options: &[
            opt(
                "meters",
                KeyType::Strings,
                "all five",
                "",
                "latency, energy, flops, memory, utilisation",
                "Which meters run.",
                "[\"latency\", \"energy\"]",
            ),
            opt(
                "interval_ms",
                KeyType::Int,
                "100",
                "ms",
                "1 to 60000",
                "Sampling interval of the background meters (power, utilisation, memory).",
                "50",
            ),
            opt(
                "idle_baseline_s",
                KeyType::Number,
                "0 (none)",
                "s",
                "finite, 0 to 86400",
                "Seconds of idle measurement before the run, for the baseline power behind \
                 `energy_net_j`.",
                "2",
            ),
            opt(
                "carbon",
                KeyType::Map,
                "world average, pue 1",
                "",
                "see `carbon`",
                "Grid intensity and PUE for `co2e_g`.",
                "#{ country: \"GBR\" }",
            ),
            opt(
                "estimate",
                KeyType::Str,
                "\"machine\"",
                "",
                "machine, process",
                "Where no energy sensor exists, how CodeCarbon's estimate charges the run: \
                 `machine` (the whole machine's CPU load and memory, CodeCarbon's default) or \
                 `process` (only llmeff's CPU time and resident memory, so other tenants' load \
                 is not charged to the run).",
                "\"process\"",
            ),
        ],
        functions: &[],
        example: "let run = infer(load(\"tiny-stories\"), prompts(\"builtin:stories\", #{ count: 4 }));\n\
            measure(run, #{ meters: [\"latency\", \"energy\"], interval_ms: 50, idle_baseline_s: 0,\n\
            \x20               carbon: #{ country: \"GBR\", pue: 1.2 } });\n",
    },
    Topic {
        name: "carbon",
        kind: TopicKind::OptionMap,
        signatures: &["measure(run, #{ carbon: #{ options } })"],
        summary: "Where the electricity comes from, for `co2e_g`.",
        description: "Intensities come from `engine/data/carbon_intensity.csv` (Our World in \
            Data 2021 by country, ENTSO-E 2025 bidding zones); with no country the world \
            average, 475 g/kWh. An unknown country or region fails while planning.",
        returns: "",
        options: &[
            opt(
                "country",
                KeyType::Str,
                "none (world average)",
                "",
                "an ISO 3166-1 alpha-3 code in the table, any case",
                "Country whose grid intensity applies.",
                "\"GBR\"",
            ),
            opt(
                "region",
                KeyType::Str,
                "none",
                "",
                "a zone of the country in the table (e.g. SE3 of SWE)",
                "Sub-national bidding zone; needs `country`.",
                "\"SE3\"",
            ),
            opt(
                "intensity_g_per_kwh",
                KeyType::Number,
                "from the table",
                "gCO2e/kWh",
                ">= 0",
                "An explicit grid intensity, overriding the table.",
                "120",
            ),
            opt(
                "pue",
                KeyType::Number,
                "1.0",
                "",
                "finite, >= 1",
                "Power usage effectiveness of the facility: the energy is multiplied by it.",
                "1.2",
            ),
        ],
        functions: &[],
        example: "let run = infer(load(\"tiny-stories\"), prompts(\"builtin:stories\", #{ count: 2 }));\n\
            measure(run, #{ carbon: #{ country: \"swe\", region: \"SE3\", pue: 1.1 } });\n",
    },
    Topic {
        name: "aggregate",
        kind: TopicKind::Stage,
        signatures: &["aggregate(#{ options })"],
        summary: "Summary statistics over the study's successful runs, in summary.parquet.",
        description: "After the study runs, its successful executions are grouped by the `by` \
            columns and each metric (wall_s, prefill_s, decode_s, output_tokens_per_s, \
            total_tokens_per_s, requests_per_s, ttft/tpot/e2e p50 and p99) gets each statistic \
            as `<metric>_<stat>` (ci95: `<metric>_ci95_low` and `_ci95_high`, Student's t), \
            with the group's size `n`. The first aggregate writes \
            `runs/<study>/summary.parquet` and `summary.csv`, later ones `summary-2`, ...",
        returns: "an aggregate",
        options: &[
            opt(
                "by",
                KeyType::Strings,
                "none (one group)",
                "",
                "columns of runs.parquet, e.g. model, dtype, batch_size",
                "Group-by columns.",
                "[\"model\", \"batch_size\"]",
            ),
            opt(
                "stats",
                KeyType::Strings,
                "[\"mean\", \"std\"]",
                "",
                "mean, std, min, max, p50, p90, p99, ci95",
                "Statistics of every metric.",
                "[\"mean\", \"ci95\"]",
            ),
        ],
        functions: &[],
        example: "study(#{ name: \"cycles\", cycles: 3 });\n\
            infer(load(\"tiny-stories\"), prompts(\"builtin:stories\", #{ count: 4 }));\n\
            aggregate(#{ by: [\"model\", \"batch_size\"], stats: [\"mean\", \"ci95\"] });\n",
    },
    Topic {
        name: "builtin_prompt_sets",
        kind: TopicKind::Helper,
        signatures: &["builtin_prompt_sets()"],
        summary: "Names of the bundled prompt sets, for `prompts(\"builtin:NAME\")`.",
        description: "Returns `[\"stories\", \"chat\", \"long\"]`.",
        returns: "an array of strings",
        options: &[],
        functions: &[],
        example: "let m = load(\"tiny-stories\");\n\
            for name in builtin_prompt_sets() {\n\
            \x20   infer(m, prompts(\"builtin:\" + name, #{ count: 2 }));\n\
            }\n",
    },
    Topic {
        name: "sweep",
        kind: TopicKind::Module,
        signatures: &["import \"sweep\" as sweep;"],
        summary: "Lists of configurations to loop over.",
        description: "A configuration is a map; loop over the list and call the stages with \
            its values.",
        returns: "",
        options: &[],
        functions: &[
            func(
                "grid",
                "sweep::grid(axes)",
                "The cartesian product of a map of arrays, keys in sorted order, the last key \
                 varying fastest: `grid(#{ a: [1, 2], b: [\"x\"] })` is \
                 `[#{a: 1, b: \"x\"}, #{a: 2, b: \"x\"}]`.",
            ),
            func(
                "controlled",
                "sweep::controlled(base, variations)",
                "One parameter varied at a time: `base` first, then for each key of \
                 `variations` (sorted) one copy of `base` per value that differs from it.",
            ),
            func(
                "request_rates",
                "sweep::request_rates(rates, seed)",
                "A Poisson `arrival` map per rate of `rates` (requests per second), all with \
                 `seed`: a request-rate sweep for served runs (`serve`).",
            ),
        ],
        example: "import \"sweep\" as sweep;\n\
            for c in sweep::grid(#{ dtype: [\"f32\", \"bf16\"], size: [1, 4] }) {\n\
            \x20   let m = load(\"tiny-stories\", #{ dtype: c.dtype });\n\
            \x20   infer(m, batch(prompts(\"builtin:stories\", #{ count: 4 }), #{ size: c.size }));\n\
            }\n",
    },
    Topic {
        name: "scenarios",
        kind: TopicKind::Module,
        signatures: &["import \"scenarios\" as scenarios;"],
        summary: "Named, realistic workloads: chat, summarise, offline.",
        description: "A scenario is a map with `name`, `prompts` (a source), `count`, \
            `max_input_tokens`, `batch_size` and `max_new_tokens`; edit a copy to make your own.",
        returns: "",
        options: &[],
        functions: &[
            func(
                "chat",
                "scenarios::chat()",
                "12 short chat turns answered one at a time (latency-bound), 48 new tokens.",
            ),
            func(
                "summarise",
                "scenarios::summarise()",
                "3 long prompts (up to 256 tokens) condensed to 24 new tokens (prefill-bound).",
            ),
            func(
                "offline",
                "scenarios::offline()",
                "24 stories in batches of 8, 32 new tokens (throughput-bound).",
            ),
            func(
                "all",
                "scenarios::all()",
                "Every scenario, in a fixed order.",
            ),
            func(
                "named",
                "scenarios::named(name)",
                "The scenario called `name`; an unknown name is an error listing the valid ones.",
            ),
            func(
                "run",
                "scenarios::run(model, scenario)",
                "Plans a scenario (a map, or its name) on a model; returns the inference run.",
            ),
        ],
        example: "import \"scenarios\" as scenarios;\n\
            let m = load(\"tiny-stories\");\n\
            for s in scenarios::all() {\n\
            \x20   measure(scenarios::run(m, s), #{ meters: [\"latency\", \"energy\"] });\n\
            }\n",
    },
    Topic {
        name: "models",
        kind: TopicKind::Module,
        signatures: &["import \"models\" as models;"],
        summary: "Model lists for studies.",
        description: "Hub ids of `original()` and `small_open()` need their weights in the \
            Hugging Face cache, or `weights: \"random\"` (built from their configs, no download).",
        returns: "",
        options: &[],
        functions: &[
            func(
                "original",
                "models::original()",
                "The four models the original Python tool compared (TinyLlama-1.1B, Llama 3.2 \
                 1B and 3B, Llama 3.1 8B), as Hub ids.",
            ),
            func(
                "small_open",
                "models::small_open()",
                "Small open models of every supported family (Qwen2.5-0.5B, Qwen3-0.6B, \
                 Llama-3.2-1B, gemma-2-2b, Phi-3-mini-4k-instruct), as Hub ids.",
            ),
            func(
                "bundled",
                "models::bundled()",
                "Models bundled with llmeff: `[\"tiny-stories\"]`.",
            ),
            func(
                "families",
                "models::families()",
                "One bundled fixture per model family (tiny-llama3-gqa, tiny-qwen2, tiny-qwen3, \
                 tiny-mistral, tiny-phi3, tiny-gemma2): random weights, exact against \
                 transformers.",
            ),
        ],
        example: "import \"models\" as models;\n\
            for name in models::bundled() {\n\
            \x20   infer(load(name), prompts(\"builtin:stories\", #{ count: 2 }));\n\
            }\n",
    },
];

/// Looks a topic up by name.
pub fn topic(name: &str) -> Option<&'static Topic> {
    TOPICS.iter().find(|t| t.name == name)
}

/// Names of every topic.
pub fn topic_names() -> Vec<&'static str> {
    TOPICS.iter().map(|t| t.name).collect()
}

/// `(module, function)` for every standard-library function.
pub fn stdlib_functions() -> Vec<(&'static str, &'static FunctionDoc)> {
    TOPICS
        .iter()
        .filter(|t| t.kind == TopicKind::Module)
        .flat_map(|t| t.functions.iter().map(move |f| (t.name, f)))
        .collect()
}

/// Meters a run gets when its script does not call `measure` on it.
pub const DEFAULT_METERS: &[&str] = &["energy", "flops", "latency", "memory", "utilisation"];

/// Meter names `measure` accepts.
pub const METERS: &[&str] = &["latency", "energy", "flops", "memory", "utilisation"];

/// Statistics `aggregate` accepts.
pub const STATS: &[&str] = &["mean", "std", "min", "max", "p50", "p90", "p99", "ci95"];

/// Columns `aggregate(#{ by })` may group by: every column of `runs.parquet`, in the results
/// schema's order (the engine does not depend on the results crate; a test of the binary
/// checks this list against `results::schema::RUN_COLUMNS`).
pub const GROUP_BY_COLUMNS: &[&str] = &[
    "study",
    "run_hash",
    "cycle_id",
    "experiment_id",
    "status",
    "error",
    "started_at_unix_s",
    "started_at",
    "model",
    "revision",
    "dtype",
    "weights",
    "quantization",
    "device",
    "prompts",
    "num_prompts",
    "max_input_tokens",
    "batch_size",
    "token_budget",
    "arrival",
    "arrival_rate_per_s",
    "arrival_burstiness",
    "arrival_trace",
    "arrival_time_scale",
    "offered_rate_per_s",
    "serve_max_batch",
    "serve_max_batch_tokens",
    "serve_prefill",
    "slo_ttft_s",
    "slo_tpot_s",
    "arrival_interval_s",
    "arrival_burst",
    "arrival_off_s",
    "arrival_seed",
    "max_new_tokens",
    "min_new_tokens",
    "stop_at_eos",
    "decoding",
    "temperature",
    "top_k",
    "top_p",
    "warmup_runs",
    "meters",
    "energy_estimate",
    "architecture",
    "compute",
    "adapter",
    "adapter_driver",
    "model_parameters",
    "model_bytes",
    "num_requests",
    "num_batches",
    "input_tokens",
    "output_tokens",
    "wall_s",
    "prefill_s",
    "decode_s",
    "warmup_s",
    "output_tokens_per_s",
    "total_tokens_per_s",
    "requests_per_s",
    "goodput_requests_per_s",
    "slo_attainment_ratio",
    "serve_iterations",
    "serve_running_mean",
    "serve_schedule_s",
    "idle_s",
    "ttft_mean_s",
    "ttft_p50_s",
    "ttft_p90_s",
    "ttft_p99_s",
    "ttft_service_mean_s",
    "ttft_service_p50_s",
    "ttft_service_p90_s",
    "ttft_service_p99_s",
    "queue_mean_s",
    "queue_p50_s",
    "queue_p90_s",
    "queue_p99_s",
    "tpot_mean_s",
    "tpot_p50_s",
    "tpot_p90_s",
    "tpot_p99_s",
    "itl_mean_s",
    "itl_p50_s",
    "itl_p90_s",
    "itl_p99_s",
    "e2e_mean_s",
    "e2e_p50_s",
    "e2e_p90_s",
    "e2e_p99_s",
    "kv_cache_peak_bytes",
    "flops_prefill",
    "flops_decode",
    "flops_per_s",
    "energy_cpu_j",
    "energy_cpu_source",
    "energy_gpu_j",
    "energy_gpu_source",
    "energy_ram_j",
    "energy_ram_source",
    "energy_total_j",
    "energy_total_source",
    "energy_prefill_j",
    "energy_decode_j",
    "energy_other_j",
    "energy_split",
    "idle_power_w",
    "energy_net_j",
    "j_per_output_token",
    "energy_per_request_j",
    "energy_idle_j",
    "energy_idle_ratio",
    "carbon_intensity_g_per_kwh",
    "carbon_intensity_source",
    "pue",
    "co2e_g",
    "energy_meters",
    "peak_flops_per_s",
    "peak_bytes_per_s",
    "peak_source",
    "peak_measured_at",
    "peak_threads",
    "peak_conditions",
    "mfu",
    "decode_bytes",
    "decode_bytes_per_s",
    "mbu",
    "peak_rss_bytes",
    "rss_hwm_bytes",
    "gpu_mem_peak_bytes",
    "device_memory_peak_bytes",
    "process_cpu_mean_pct",
    "process_cpu_peak_pct",
    "system_cpu_mean_pct",
    "cpu_steal_mean_pct",
    "gpu_util_mean_pct",
    "gpu_util_peak_pct",
    "num_samples",
    "meter_notes",
    "quality_ref",
    "quality_kl_mean_nats",
    "quality_top1_agreement_ratio",
    "quality_perplexity_run",
    "quality_perplexity_ref",
    "quality_greedy_agreement_ratio",
    "quality_positions",
    "config_json",
    "llmeff_version",
    "git_commit",
    "git_dirty",
    "build_profile",
    "rustc_version",
    "threads",
    "cpu_model",
    "cpu_flags",
    "kernel",
    "hostname",
];

/// Names of the stage functions, in the reference's order.
pub fn stage_functions() -> Vec<&'static str> {
    names_of(TopicKind::Stage)
}

/// Names of the other functions llmeff registers for scripts.
pub fn helper_functions() -> Vec<&'static str> {
    names_of(TopicKind::Helper)
}

fn names_of(kind: TopicKind) -> Vec<&'static str> {
    TOPICS
        .iter()
        .filter(|t| t.kind == kind)
        .map(|t| t.name)
        .collect()
}

/// The option keys a stage function or nested option map (`decoding`, `arrival`, `carbon`)
/// accepts; empty for a name that takes none.
pub fn options_of(name: &str) -> &'static [OptionKey] {
    topic(name)
        .filter(|t| matches!(t.kind, TopicKind::Stage | TopicKind::OptionMap))
        .map_or(&[], |t| t.options)
}

/// Words the REPL completes: stage and helper functions, then every option key, sorted and
/// without repeats after the functions.
pub fn completion_words() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = TOPICS
        .iter()
        .flat_map(|t| t.options.iter().map(|o| o.name))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut words = stage_functions();
    words.extend(helper_functions());
    words.extend(keys);
    words
}
