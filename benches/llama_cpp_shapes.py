"""Peer baseline for `llmeff bench --baseline`: llama.cpp (CPU, 2 threads) on the shapes of
benches/transformers_shapes.py (same names; random weights, normal std 0.02, norms 1, like transformers' init),
in each weight type of --types (default f32): f32, f16, bf16, q8_0, q4_0, which llmeff bench --dtypes calls
f32, f16, bf16, int8, int4 (Q8_0 and Q4_0 are symmetric integers with one scale per 32 weights, as llmeff's int8
and int4 in blocks of 32; fp8 and nf4 have no llama.cpp type).
llama-batched-bench (f32 KV cache for every type: the types change the weights only, as llmeff's quantized formats
keep f32 activations and KV cache), 32-token prompt per sequence, 64 new tokens, batch 1 and 8, random token ids:
prefill_s = T_PP (the prompt pass of the whole batch), decode_tokens_per_s = S_TG (batch x 64 / decode time).
Median of RUNS (env, default 3) after one warm-up round, all in one process per shape and type; the types of a
shape are measured back to back, in --types order.
Usage: python benches/llama_cpp_shapes.py [--llama-cpp DIR] [--types f32,q8_0,...] [shape ...] > baseline.jsonl
       shapes: tiny-stories-dir smollm-135m tinyllama-1.1b (default: all)
       DIR (or env LLAMA_CPP_DIR; default /tmp/llamacpp) holds src/ (llama.cpp source), build/bin/ and models/,
       where the f32 GGUFs are written on first use (TinyLlama's is 4.4 GB): tiny-stories with llama.cpp's
       convert_hf_to_gguf.py (needs torch, transformers, sentencepiece), the random shapes directly with
       src/gguf-py. Each other type is made from the f32 GGUF once with llama-quantize --pure and cached beside it
       (<shape>-<type>.gguf, with llama-quantize's log in <shape>-<type>.gguf.log). For q8_0 and q4_0 the token
       embedding and output head stay f32 (--token-embedding-type/--output-tensor-type), as llmeff keeps them; a
       tensor whose rows are not a multiple of 32 (tiny-stories' ffn_down, 172) falls back to F16 in llama.cpp,
       counted in the row's fallback_tensors.
Output: a {"tool": ...} line, then per shape and type `<shape> {"format": <llmeff's name>, "llama_cpp_type": ...,
        "kv_cache_type": "f32", "batch1": {"prefill_s", "decode_tokens_per_s", "cpu_steal_pct"}, "batch8": ...}`
        (with "fallback_tensors" for a quantized type), and last {"tool", "threads", "types", "rows": [the same
        objects, each with its "shape"]}.
Getting llama.cpp without GitHub: the llama-cpp-python sdist on PyPI vendors it under vendor/llama.cpp.
  pip install cmake scikit-build-core sentencepiece
  pip download --no-deps --no-binary :all: --no-build-isolation llama-cpp-python -d DIR/dl
    (--no-build-isolation: else pip builds cmake from source just to read the sdist's metadata)
  cd DIR && tar xzf dl/llama_cpp_python-*.tar.gz && ln -s llama_cpp_python-*/vendor/llama.cpp src
  cmake -S src -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_COMMIT=<commit>
  cmake --build build -j2 --target llama-batched-bench llama-quantize
  (<commit>: the sdist has no git history; its CHANGELOG.md names the vendored commit, e.g. 0.3.36 -> 0c1e57098.)"""
import argparse, json, os, re, statistics, subprocess, sys
import numpy as np
from cpu_steal import cpu_times, steal_pct  # benches/ is the script's folder, so on sys.path

SHAPES = {
    "smollm-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                        num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "tinyllama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False),
}
PROMPT, NEW, BATCHES, THREADS, RUNS = 32, 64, (1, 8), 2, int(os.environ.get("RUNS", "3"))
# llama.cpp's weight type -> llmeff bench's --dtypes name for the same stored information.
FORMATS = {"f32": "f32", "f16": "f16", "bf16": "bf16", "q8_0": "int8", "q4_0": "int4"}
QUANTIZED = ("q8_0", "q4_0")
TINY_STORIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "tiny-stories")


def write_random_gguf(path, c, src):
    """A llama GGUF of random f32 weights; streamed tensor by tensor so TinyLlama needs no 4.4 GB in memory."""
    sys.path.insert(0, os.path.join(src, "gguf-py"))  # the writer that matches this llama.cpp
    import gguf
    h, f, v, heads, kv = (c[k] for k in ("hidden_size", "intermediate_size", "vocab_size",
                                         "num_attention_heads", "num_key_value_heads"))
    hd = h // heads
    w = gguf.GGUFWriter(path + ".part", "llama")
    w.add_name(os.path.basename(path)); w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(2048); w.add_embedding_length(h); w.add_feed_forward_length(f)
    w.add_block_count(c["num_hidden_layers"]); w.add_head_count(heads); w.add_head_count_kv(kv)
    w.add_rope_dimension_count(hd); w.add_rope_freq_base(10000.0); w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(v)
    # No tokenizer offline, and batched-bench feeds random ids anyway: a synthetic SentencePiece vocab of the right
    # size (specials, the 256 byte tokens llama.cpp's SPM loader looks up, then filler pieces).
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    toks += [f"\u2581t{i}" for i in range(v - len(toks))]
    types += [1] * (v - len(types))
    w.add_tokenizer_model("llama"); w.add_tokenizer_pre("default"); w.add_token_list(toks)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(v - 259)]); w.add_token_types(types)
    w.add_bos_token_id(1); w.add_eos_token_id(2); w.add_unk_token_id(0); w.add_add_bos_token(True)
    # (name, numpy shape = HF [out, in]); the writer reverses it to ggml order, as the converter does
    specs = [("token_embd.weight", (v, h), True), ("output_norm.weight", (h,), False)]
    if not c["tie_word_embeddings"]:
        specs.append(("output.weight", (v, h), True))
    for i in range(c["num_hidden_layers"]):
        specs += [(f"blk.{i}.{n}.weight", s, r) for n, s, r in [
            ("attn_norm", (h,), False), ("attn_q", (heads * hd, h), True), ("attn_k", (kv * hd, h), True),
            ("attn_v", (kv * hd, h), True), ("attn_output", (h, heads * hd), True), ("ffn_norm", (h,), False),
            ("ffn_gate", (f, h), True), ("ffn_up", (f, h), True), ("ffn_down", (h, f), True)]]
    for name, shape, _ in specs:
        w.add_tensor_info(name, shape, np.dtype(np.float32), 4 * int(np.prod(shape)))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for _, shape, rand in specs:
        w.write_tensor_data(rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02) if rand
                            else np.ones(shape, dtype=np.float32))
    w.close()
    os.replace(path + ".part", path)


def f32_gguf(shape, root):
    path = os.path.join(root, "models", f"{os.path.basename(os.path.normpath(shape))}-f32.gguf")  # shape may be a dir
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        src = os.path.join(root, "src")
        print(f"writing {path}", file=sys.stderr, flush=True)
        if shape in SHAPES:
            write_random_gguf(path, SHAPES[shape], src)
        else:
            model_dir = TINY_STORIES if shape == "tiny-stories-dir" else shape
            subprocess.run([sys.executable, os.path.join(src, "convert_hf_to_gguf.py"), "--outtype", "f32",
                            "--outfile", path + ".part", model_dir], check=True, stdout=sys.stderr)
            os.replace(path + ".part", path)
    return path


def gguf_for(shape, root, llama_type):
    """The shape's GGUF in `llama_type`: the f32 one, or made from it with llama-quantize once and cached."""
    f32 = f32_gguf(shape, root)
    if llama_type == "f32":
        return f32
    path = f32[: -len("-f32.gguf")] + f"-{llama_type}.gguf"
    if not os.path.exists(path):
        print(f"writing {path}", file=sys.stderr, flush=True)
        # --pure: every tensor in the type, not llama.cpp's mixture (Q4_0 files otherwise hold a Q6_K output head).
        keep_f32 = ["--token-embedding-type", "f32", "--output-tensor-type", "f32"] if llama_type in QUANTIZED else []
        cmd = [os.path.join(root, "build", "bin", "llama-quantize"), "--pure", *keep_f32, f32, path + ".part",
               llama_type.upper(), str(THREADS)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            sys.exit(f"{' '.join(cmd)} failed (rc {p.returncode}):\n{p.stderr[-3000:]}")
        with open(path + ".log", "w") as log:
            log.write(p.stdout + p.stderr)
        os.replace(path + ".part", path)
    return path


def fallback_tensors(gguf):
    """Tensors llama-quantize stored in another type because their rows do not split into its blocks."""
    try:
        with open(gguf + ".log") as log:
            m = re.search(r"WARNING: (\d+) of \d+ tensor\(s\) required fallback quantization", log.read())
    except OSError:
        return None
    return int(m.group(1)) if m else 0


def bench(shape, root, llama_type):
    exe = os.path.join(root, "build", "bin", "llama-batched-bench")
    gguf = gguf_for(shape, root, llama_type)
    # -c: room for 8 sequences of 32+64 (the default is the model's, 512 for tiny-stories, and batched-bench
    # silently skips a batch that does not fit). -ctk/-ctv: the KV cache defaults to f16; keep it f32 for every type.
    # Flash attention stays at llama.cpp's default (auto, which the CPU backend turns on). Round 0 is the warm-up.
    cmd = [exe, "-m", gguf, "-c", str(max(BATCHES) * (PROMPT + NEW)), "-ctk", "f32", "-ctv", "f32",
           "-t", str(THREADS), "-tb", str(THREADS), "-npp", str(PROMPT), "-ntg", str(NEW),
           "-npl", ",".join(map(str, BATCHES * (RUNS + 1))), "--output-format", "jsonl"]
    t_from = cpu_times()
    p = subprocess.run(cmd, capture_output=True, text=True)
    # One process runs every batch size and repeat, so both batches get its whole steal.
    steal = steal_pct(t_from, cpu_times())
    rows = [json.loads(l) for l in (p.stdout + "\n" + p.stderr).splitlines() if l.startswith('{"n_kv_max"')]
    if p.returncode or len(rows) != len(BATCHES) * (RUNS + 1):
        sys.exit(f"{' '.join(cmd)} failed (rc {p.returncode}):\n{p.stderr[-3000:]}")
    out = {"format": FORMATS[llama_type], "llama_cpp_type": llama_type, "kv_cache_type": "f32"}
    if llama_type in QUANTIZED:
        out["fallback_tensors"] = fallback_tensors(gguf)
    for bs in BATCHES:
        runs = [r for r in rows if r["pl"] == bs][1:]
        t_tg = statistics.median(r["t_tg"] for r in runs)
        out[f"batch{bs}"] = {"prefill_s": round(statistics.median(r["t_pp"] for r in runs), 4),
                             "decode_tokens_per_s": round(bs * NEW / t_tg, 1), "cpu_steal_pct": steal}
    return out


def parse_types(text):
    types = []
    for t in (t.strip().lower() for t in text.split(",") if t.strip()):
        if t not in FORMATS:
            raise argparse.ArgumentTypeError(f"unknown type {t!r}; valid types: {', '.join(FORMATS)}")
        if t not in types:
            types.append(t)
    if not types:
        raise argparse.ArgumentTypeError(f"no type given; valid types: {', '.join(FORMATS)}")
    return types


def tool_name(root):
    v = subprocess.run([os.path.join(root, "build", "bin", "llama-batched-bench"), "--version"],
                       capture_output=True, text=True)
    m = re.search(r"version: (\S+) \(build (\d+), commit (\w+)\)", v.stdout + v.stderr)
    if not m:
        return "llama.cpp"
    ver, build, commit = m.groups()
    return f"llama.cpp {commit}" if commit != "unknown" else f"llama.cpp {ver} b{build}"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", default=os.environ.get("LLAMA_CPP_DIR", "/tmp/llamacpp"))
    ap.add_argument("--types", type=parse_types, default=["f32"],
                    help=f"comma-separated llama.cpp weight types, measured in this order: {', '.join(FORMATS)}")
    ap.add_argument("shapes", nargs="*", default=["tiny-stories-dir", *SHAPES])
    a = ap.parse_args()
    res = {"tool": tool_name(a.llama_cpp), "threads": THREADS, "types": a.types, "rows": []}
    print(json.dumps({"tool": res["tool"]}), flush=True)  # labels an interrupted run's output too
    for s in a.shapes:
        for t in a.types:
            row = bench(s, a.llama_cpp, t)
            res["rows"].append({"shape": s, **row})
            print(s, json.dumps(row), flush=True)
    print(json.dumps(res))
