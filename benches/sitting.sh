#!/usr/bin/env bash
# One interleaved sitting of `llmeff bench` and its peers, for figures that can be set side by
# side on a machine whose speed drifts (a VM's neighbours steal CPU time and share the memory
# bandwidth, and that changes from minute to minute).
#
# Per model, back to back: llmeff ("a", JSON), transformers, candle, llama.cpp, then llmeff
# again with all three as --baseline ("b", the table). A tool whose figures differ between "a"
# and "b" by more than the peers differ from llmeff was measured in a drifting state. Last, the
# memory growth over a 1,000-token generation.
#
# With DTYPES, llmeff measures each model in every listed weight format (`llmeff bench
# --dtypes`), the formats of a model back to back in each of its runs, and llama.cpp measures
# the matching types (`llama_cpp_shapes.py --types`: int8 as Q8_0, int4 as Q4_0, f16 and bf16
# as F16 and BF16); fp8 and nf4 have no llama.cpp type, and transformers and candle measure
# f32 only, so their figures stand beside the f32 rows alone.
#
# Usage: benches/sitting.sh OUT_DIR
# Environment (each peer is skipped, with a line in OUT_DIR/times.txt, where it is missing):
#   LLMEFF     the llmeff binary (default: target/release/llmeff, built with --release here;
#              copy it elsewhere first if you will rebuild during the sitting)
#   PYTHON     a Python with torch and transformers, and numpy for llama.cpp's script
#              (default: python3)
#   CANDLE     the candle-shapes binary (cd benches/candle-shapes && cargo build --release)
#   LLAMA_CPP_DIR  a llama.cpp build, as benches/llama_cpp_shapes.py describes
#   MODELS     llmeff bench model names (default: "tiny-stories smollm tinyllama")
#   RUNS       timed repeats per figure, every tool (default 3)
#   DTYPES     llmeff bench --dtypes list: f32, f16, bf16, fp8, int8, int4, nf4 (default f32)
set -u
out=${1:?usage: benches/sitting.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
mkdir -p "$out"
out=$(cd "$out" && pwd)
llmeff=${LLMEFF:-$repo/target/release/llmeff}
python=${PYTHON:-python3}
runs=${RUNS:-3}
models=${MODELS:-"tiny-stories smollm tinyllama"}
dtypes=${DTYPES:-f32}
if [ ! -x "$llmeff" ]; then
    echo "no llmeff binary at $llmeff: cargo build --release, or set LLMEFF" >&2
    exit 2
fi

log() { echo "$(date -u +%H:%M:%S) $*" >> "$out/times.txt"; }

# peer NAME FILE COMMAND...: runs one peer for $model into $out/FILE and, if it succeeded, adds
# it as a baseline (a failed peer's empty file would make llmeff refuse the whole table).
peer() {
    local name=$1 file=$2 rc
    shift 2
    "$@" > "$out/$file" 2>> "$out/err.log"
    rc=$?
    log "$name $model: rc $rc"
    if [ "$rc" = 0 ]; then
        baselines+=(--baseline "$out/$file")
    fi
}

# The peers' names for the bench's models.
shape_of() {
    case $1 in
        tiny-stories) echo tiny-stories-dir ;;
        smollm) echo smollm-135m ;;
        tinyllama) echo tinyllama-1.1b ;;
        *) echo "$1" ;;
    esac
}

# llama.cpp's weight types for the --dtypes list, comma-separated (empty where none has one).
llama_types_of() {
    local format types=()
    local list=${1,,}
    for format in ${list//,/ }; do
        case $format in
            f32 | f16 | bf16) types+=("$format") ;;
            int8) types+=(q8_0) ;;
            int4) types+=(q4_0) ;;
        esac
    done
    local IFS=,
    echo "${types[*]}"
}
llama_types=$(llama_types_of "$dtypes")

have_torch=0
"$python" -c "import torch, transformers" 2>/dev/null && have_torch=1
log "start: llmeff $llmeff, python $python (torch: $have_torch), candle ${CANDLE:-none}, llama.cpp ${LLAMA_CPP_DIR:-none} (types: ${llama_types:-none}), formats $dtypes, $runs runs"
for model in $models; do
    shape=$(shape_of "$model")
    "$llmeff" bench --models "$model" --dtypes "$dtypes" --threads 2 --repeats "$runs" \
        --growth-tokens 0 --json > "$out/llmeff-a-$model.json" 2>> "$out/err.log"
    log "llmeff a $model: rc $?"
    baselines=()
    if [ "$have_torch" = 1 ]; then
        peer transformers "transformers-$model.jsonl" \
            env RUNS="$runs" "$python" "$here/transformers_shapes.py" "$shape"
    else
        log "transformers $model: skipped (no torch/transformers in $python)"
    fi
    if [ -n "${CANDLE:-}" ] && [ -x "$CANDLE" ]; then
        # candle-shapes finds tiny-stories relative to its own folder.
        peer candle "candle-$model.jsonl" env -C "$here/candle-shapes" RUNS="$runs" \
            RAYON_NUM_THREADS=2 "$CANDLE" "$shape"
    else
        log "candle $model: skipped (set CANDLE)"
    fi
    if [ -n "${LLAMA_CPP_DIR:-}" ] && [ -z "$llama_types" ]; then
        log "llama.cpp $model: skipped (no llama.cpp type for formats $dtypes)"
    elif [ -n "${LLAMA_CPP_DIR:-}" ]; then
        peer llama.cpp "llamacpp-$model.jsonl" env RUNS="$runs" "$python" \
            "$here/llama_cpp_shapes.py" --types "$llama_types" "$shape"
    else
        log "llama.cpp $model: skipped (set LLAMA_CPP_DIR)"
    fi
    "$llmeff" bench --models "$model" --dtypes "$dtypes" --threads 2 --repeats "$runs" \
        --growth-tokens 0 "${baselines[@]}" > "$out/llmeff-b-$model.txt" 2>> "$out/err.log"
    log "llmeff b $model: rc $?"
done
"$llmeff" bench --models tiny-stories --batches 1 --repeats 1 --growth-tokens 1000 \
    > "$out/growth.txt" 2>> "$out/err.log"
log "growth: rc $?"
echo "sitting done: $out (tables in llmeff-b-*.txt, timings in times.txt)"
