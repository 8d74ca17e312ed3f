"""Peer baseline for `llmeff bench --baseline`: transformers (PyTorch eager, CPU, 2 threads) on
random-weight Llama models of real shapes. Prefill time for a 32-token prompt, then decode tokens/s for 64 new tokens
(greedy, EOS ignored), batch 1 and 8 (env BATCHES, e.g. "1 4 8"). Median of RUNS after one warm-up; cpu_steal_pct is the share of
the CPUs' time a hypervisor gave other guests during the timed runs (/proc/stat).
Usage: python benches/transformers_shapes.py [shape ...] > baseline.jsonl
       shapes: tiny-stories-dir smollm-135m tinyllama-1.1b (default: the last two), and llmeff's presets
       meta-llama/Llama-3.2-1B, meta-llama/Llama-3.2-3B (random weights, as `llmeff bench --models llama-3.2`)
Needs torch and transformers (pip install torch transformers). Copied from the bundled models'
scripts (models were made with them); the last line printed is the JSON llmeff bench reads."""
import json, statistics, sys, time, os
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, AutoModelForCausalLM
from cpu_steal import cpu_times, steal_pct  # benches/ is the script's folder, so on sys.path

SHAPES = {
    "smollm-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                        num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "tinyllama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False),
    # llmeff's presets, by the Hub id `llmeff bench --models llama-3.2-1b` labels them with.
    "meta-llama/Llama-3.2-1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                    num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                                    vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
    "meta-llama/Llama-3.2-3B": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                                    num_attention_heads=24, num_key_value_heads=8, head_dim=128,
                                    vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
}
DEFAULT_SHAPES = ["smollm-135m", "tinyllama-1.1b"]
PROMPT, NEW, RUNS = 32, 64, int(os.environ.get("RUNS", "3"))
# Batch sizes (env BATCHES, space-separated; default "1 8", as llmeff bench's default).
BATCHES = [int(b) for b in os.environ.get("BATCHES", "1 8").split()]

def model_for(shape):
    if shape == "tiny-stories-dir":
        shape = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "tiny-stories")
    if shape in SHAPES:
        cfg = LlamaConfig(**{"rope_theta": 10000.0, **SHAPES[shape]}, rms_norm_eps=1e-5, max_position_embeddings=2048)
        torch.manual_seed(0)
        return LlamaForCausalLM(cfg).eval(), cfg.vocab_size
    m = AutoModelForCausalLM.from_pretrained(shape, dtype=torch.float32).eval()
    return m, m.config.vocab_size

def bench(shape):
    model, vocab = model_for(shape)
    out = {}
    for bs in BATCHES:
        ids = torch.randint(3, vocab, (bs, PROMPT), generator=torch.Generator().manual_seed(1))
        kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=NEW, **kw)
            pre, full = [], []
            t_from = cpu_times()
            for _ in range(RUNS):
                t0 = time.perf_counter(); model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw); pre.append(time.perf_counter() - t0)
                t0 = time.perf_counter(); model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, **kw); full.append(time.perf_counter() - t0)
            steal = steal_pct(t_from, cpu_times())
        p, f = statistics.median(pre), statistics.median(full)
        out[f"batch{bs}"] = {"prefill_s": round(p, 4), "decode_tokens_per_s": round(bs * (NEW - 1) / (f - p), 1),
                             "generate_s": round(f, 4), "cpu_steal_pct": steal}
    return out

if __name__ == "__main__":
    torch.set_num_threads(2)
    res = {"tool": f"transformers {transformers.__version__} (torch {torch.__version__})", "torch": torch.__version__, "threads": 2}
    # First line names the tool, so an interrupted run's output is still labelled.
    print(json.dumps({"tool": res["tool"]}), flush=True)
    for s in sys.argv[1:] or DEFAULT_SHAPES:
        res[s] = bench(s)
        print(s, json.dumps(res[s]), flush=True)
    print(json.dumps(res))
