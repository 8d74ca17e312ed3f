//! `llmeff generate`: one prompt, one model, print the continuation.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::Failure;
use crate::cli::GenerateArgs;
use api::runtime::{
    Compute, DType, Decoding, GenerateOptions, ModelSpec, QuantMethod, Quantization, Runtime,
    RuntimeError, WeightsKind,
};

/// The decoding `--temperature`, `--top-k`, `--top-p` and `--seed` ask for, checked as a
/// script's `decoding` options are (the same rules, the same words): the cuts only apply to
/// sampling, so without a temperature they are refused rather than silently ignored.
fn decoding_from_args(
    temperature: Option<f64>,
    top_k: Option<usize>,
    top_p: Option<f64>,
    seed: u64,
) -> Result<Decoding, String> {
    let Some(temperature) = temperature else {
        for (flag, given) in [("--top-k", top_k.is_some()), ("--top-p", top_p.is_some())] {
            if given {
                return Err(format!(
                    "option `{flag}`: only applies to method \"sample\"; add --temperature to sample"
                ));
            }
        }
        return Ok(Decoding::Greedy);
    };
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err("option `--temperature`: must be a finite number >= 0".into());
    }
    let top_p = top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err("option `--top-p`: must be in (0, 1]".into());
    }
    Ok(Decoding::Sample {
        temperature,
        top_k: top_k.unwrap_or(0),
        top_p,
        seed,
    })
}

/// How fast one generation went.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Speed {
    /// Start of the generation (prompt pass included) to its first new token, seconds.
    ttft_s: f64,
    /// Start to the last step, seconds.
    total_s: f64,
    /// New tokens.
    output_tokens: usize,
    /// Tokens after the first per second of the steps after the first; `None` with fewer than
    /// two tokens, where there was no decode phase to time.
    decode_tokens_per_s: Option<f64>,
    /// All new tokens per second of the whole generation.
    output_tokens_per_s: Option<f64>,
}

impl Speed {
    /// From the time to the first token, the whole generation's time and the tokens made.
    fn new(ttft: Duration, total: Duration, output_tokens: usize) -> Speed {
        let (ttft_s, total_s) = (ttft.as_secs_f64(), total.as_secs_f64());
        let decode_s = total_s - ttft_s;
        Speed {
            ttft_s,
            total_s,
            output_tokens,
            decode_tokens_per_s: (output_tokens >= 2 && decode_s > 0.0)
                .then(|| (output_tokens - 1) as f64 / decode_s),
            output_tokens_per_s: (output_tokens >= 1 && total_s > 0.0)
                .then(|| output_tokens as f64 / total_s),
        }
    }

    /// One line for the terminal.
    fn line(&self) -> String {
        let rate = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.1}"));
        format!(
            "TTFT {:.3} s, decode {} tokens/s; {} tokens in {:.3} s ({} tokens/s overall)",
            self.ttft_s,
            rate(self.decode_tokens_per_s),
            self.output_tokens,
            self.total_s,
            rate(self.output_tokens_per_s)
        )
    }
}

/// Generates and prints.
pub fn run(args: GenerateArgs) -> Result<ExitCode, Failure> {
    let decoding = decoding_from_args(args.temperature, args.top_k, args.top_p, args.seed)
        .map_err(Failure::input)?;
    super::init_threads(args.threads)?;
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
        // clap's value_parser only admits the methods' names.
        quantization: args
            .quantize
            .as_deref()
            .and_then(QuantMethod::parse)
            .map(|method| Quantization {
                method,
                block_size: args.block_size,
            }),
        compute: Compute::Auto,
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
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: 0,
        stop_at_eos: !args.ignore_eos,
        decoding,
    };
    // Timed as a study times a request: from handing the prompt to the model (its prompt pass
    // happens in the first step) to the step that yields each token.
    let started = Instant::now();
    let mut generation = model
        .start(std::slice::from_ref(&input_ids), &options)
        .map_err(|e| Failure::input(e.to_string()))?;
    let mut output_ids = Vec::new();
    let mut first_token = None;
    loop {
        let step = generation
            .step()
            .map_err(|e| Failure::work(e.to_string()))?;
        if let Some(Some(token)) = step.tokens.first() {
            output_ids.push(*token);
            first_token.get_or_insert_with(|| started.elapsed());
        }
        if step.finished {
            break;
        }
    }
    let total = started.elapsed();
    drop(generation);
    let speed = Speed::new(first_token.unwrap_or(total), total, output_ids.len());
    let text = model
        .decode(&output_ids)
        .map_err(|e| Failure::work(e.to_string()))?;
    if args.json {
        let value = serde_json::json!({
            "prompt": args.prompt,
            "input_ids": input_ids,
            "output_ids": output_ids,
            "text": text,
            "output_tokens": speed.output_tokens,
            "ttft_s": speed.ttft_s,
            "total_s": speed.total_s,
            "decode_tokens_per_s": speed.decode_tokens_per_s,
            "output_tokens_per_s": speed.output_tokens_per_s,
            "threads": rayon::current_num_threads(),
        });
        println!("{value}");
    } else {
        // Decoding prompt and continuation together keeps the tokenizer's spacing exact.
        let all: Vec<u32> = input_ids.iter().chain(&output_ids).copied().collect();
        let full = model
            .decode(&all)
            .map_err(|e| Failure::work(e.to_string()))?;
        println!("{full}");
        // On stderr, so stdout stays the text alone for pipes and files.
        eprintln!("{}", speed.line());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_without_a_temperature_are_refused_as_in_scripts() {
        let err = decoding_from_args(None, None, Some(0.9), 0).unwrap_err();
        assert!(err.contains("`--top-p`"), "{err}");
        assert!(err.contains("only applies to method \"sample\""), "{err}");
        let err = decoding_from_args(None, Some(5), None, 0).unwrap_err();
        assert!(err.contains("`--top-k`"), "{err}");
        assert_eq!(
            decoding_from_args(None, None, None, 0),
            Ok(Decoding::Greedy)
        );
        assert_eq!(
            decoding_from_args(Some(0.7), Some(5), Some(0.9), 3),
            Ok(Decoding::Sample {
                temperature: 0.7,
                top_k: 5,
                top_p: 0.9,
                seed: 3
            })
        );
        assert!(decoding_from_args(Some(1.0), None, Some(0.0), 0).is_err());
        assert!(decoding_from_args(Some(-1.0), None, None, 0).is_err());
        assert!(decoding_from_args(Some(f64::NAN), None, None, 0).is_err());
    }

    #[test]
    fn speed_splits_the_first_token_from_decoding() {
        let s = Speed::new(Duration::from_millis(500), Duration::from_millis(2500), 5);
        assert_eq!(s.ttft_s, 0.5);
        assert_eq!(
            s.decode_tokens_per_s,
            Some(2.0),
            "4 tokens after the first in 2 s"
        );
        assert_eq!(s.output_tokens_per_s, Some(2.0), "5 tokens in 2.5 s");
        let one = Speed::new(Duration::from_millis(500), Duration::from_millis(500), 1);
        assert_eq!(one.decode_tokens_per_s, None, "no decode phase to time");
        assert!(one.line().contains("decode - tokens/s"), "{}", one.line());
    }
}
