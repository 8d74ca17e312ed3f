//! `llmeff generate`: one prompt, one model, print the continuation.

use std::process::ExitCode;

use crate::Failure;
use crate::cli::GenerateArgs;
use engine::runtime::{
    DType, Decoding, GenerateOptions, ModelSpec, Runtime, RuntimeError, WeightsKind,
};

/// Generates and prints.
pub fn run(args: GenerateArgs) -> Result<ExitCode, Failure> {
    let runtime = backends::BurnRuntime::new();
    let spec = ModelSpec {
        source: args.model.clone(),
        revision: args.revision.clone(),
        // clap's value_parser only admits the three names.
        dtype: DType::parse(&args.dtype).unwrap_or(DType::F32),
        weights: if args.weights == "random" {
            WeightsKind::Random
        } else {
            WeightsKind::Pretrained
        },
        device: args.device.clone(),
        seed: args.seed,
        quantization: None,
    };
    let model = runtime.load(&spec).map_err(|e| match e {
        RuntimeError::ModelNotFound { .. } | RuntimeError::DeviceUnavailable { .. } => {
            Failure::input(e.to_string())
        }
        other => Failure::work(other.to_string()),
    })?;
    let input_ids = model
        .encode(&args.prompt)
        .map_err(|e| Failure::work(e.to_string()))?;
    let decoding = match args.temperature {
        Some(temperature) => Decoding::Sample {
            temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        None => Decoding::Greedy,
    };
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: 0,
        stop_at_eos: !args.ignore_eos,
        decoding,
    };
    let mut generation = model
        .start(std::slice::from_ref(&input_ids), &options)
        .map_err(|e| Failure::input(e.to_string()))?;
    let mut output_ids = Vec::new();
    loop {
        let step = generation
            .step()
            .map_err(|e| Failure::work(e.to_string()))?;
        if let Some(Some(token)) = step.tokens.first() {
            output_ids.push(*token);
        }
        if step.finished {
            break;
        }
    }
    drop(generation);
    let text = model
        .decode(&output_ids)
        .map_err(|e| Failure::work(e.to_string()))?;
    if args.json {
        let value = serde_json::json!({
            "prompt": args.prompt,
            "input_ids": input_ids,
            "output_ids": output_ids,
            "text": text,
        });
        println!("{value}");
    } else {
        // Decoding prompt and continuation together keeps the tokenizer's spacing exact.
        let all: Vec<u32> = input_ids.iter().chain(&output_ids).copied().collect();
        let full = model
            .decode(&all)
            .map_err(|e| Failure::work(e.to_string()))?;
        println!("{full}");
    }
    Ok(ExitCode::SUCCESS)
}
