#!/usr/bin/env bash
# One-command proof that an llmeff binary computes, meters and benchmarks on a GPU, for a
# machine with no Rust toolchain: golden exactness on the device (f32 exact, bf16 within
# tolerance), `llmeff env`, one study whose NVML energy is set beside nvidia-smi's own counter
# over the same window, and `llmeff bench` on the device. Every step is bounded by `timeout`
# and recorded (command, exit status, figures) in one JSON file. See benches/gpu_proof.md.
#
#   bash benches/gpu_proof.sh --binary ./llmeff --device cuda:0 --models models --out proof.json
#   bash benches/gpu_proof.sh --binary target/debug/llmeff --device wgpu --quick --out /tmp/p.json
#
# Exit status: 0 when every step ran and every check passed, 1 when one did not (the JSON says
# which), 2 for bad arguments.

set -u -o pipefail

usage() {
    cat <<'EOF'
usage: gpu_proof.sh [--binary PATH] [--device NAME] [--models DIR] [--out FILE.json]
                    [--quick] [--steps LIST] [--timeout-scale X]

  --binary PATH       the llmeff binary (default ./llmeff)
  --device NAME       cuda:N (default cuda:0), wgpu or wgpu:N
  --models DIR        the bundled models folder (default models/): its tiny-stories/golden.json
                      is the reference, and the binary reads its models from it
  --out FILE.json     where the figures go (default gpu_proof.json); raw outputs go to a
                      folder beside it, named in the JSON
  --quick             small sizes, for a slow device (lavapipe): one golden prompt of 8
                      tokens, a 2-prompt study, bench on tiny-stories at batch 1, 4 new tokens
  --steps LIST        a comma-separated subset of golden,env,study,bench (default all)
  --timeout-scale X   multiply every step's time limit by X (default 1)
EOF
}

BINARY=./llmeff
DEVICE=cuda:0
MODELS=models
OUT=gpu_proof.json
QUICK=0
STEPS=golden,env,study,bench
TIMEOUT_SCALE=1

while [ $# -gt 0 ]; do
    case "$1" in
        --binary | --device | --models | --out | --steps | --timeout-scale)
            if [ $# -lt 2 ]; then
                echo "gpu_proof.sh: $1 needs a value" >&2
                exit 2
            fi
            case "$1" in
                --binary) BINARY=$2 ;;
                --device) DEVICE=$2 ;;
                --models) MODELS=$2 ;;
                --out) OUT=$2 ;;
                --steps) STEPS=$2 ;;
                --timeout-scale) TIMEOUT_SCALE=$2 ;;
            esac
            shift 2
            ;;
        --quick) QUICK=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *)
            echo "gpu_proof.sh: unknown argument $1" >&2
            usage >&2
            exit 2
            ;;
    esac
done

say() { echo "[gpu_proof] $*" >&2; }
die() { echo "gpu_proof.sh: $*" >&2; exit 2; }

case "$DEVICE" in
    cuda | cuda:[0-9]* | wgpu | wgpu:[0-9]*) ;;
    *) die "--device must be cuda:N, wgpu or wgpu:N (got $DEVICE)" ;;
esac
for step in ${STEPS//,/ }; do
    case "$step" in
        golden | env | study | bench) ;;
        *) die "--steps: unknown step $step (golden, env, study, bench)" ;;
    esac
done
case "$TIMEOUT_SCALE" in
    '' | *[!0-9.]* | *.*.*) die "--timeout-scale must be a positive number (got $TIMEOUT_SCALE)" ;;
esac
command -v timeout >/dev/null || die "needs coreutils' timeout"
[ -x "$BINARY" ] || die "--binary $BINARY is not an executable file"
GOLDEN=$MODELS/tiny-stories/golden.json
[ -f "$GOLDEN" ] || die "--models $MODELS has no tiny-stories/golden.json"

abs() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd -P)" "$(basename "$1")"); }
BIN=$(abs "$BINARY")
GOLDEN=$(abs "$GOLDEN")
MODELS_ABS=$(cd "$MODELS" && pwd -P)
mkdir -p "$(dirname "$OUT")" || die "cannot create the folder of --out $OUT"
OUT=$(abs "$OUT")
WORK=$(mktemp -d "${OUT%.json}.XXXXXX") || die "cannot create a work folder beside $OUT"
STEPS_TSV=$WORK/steps.tsv
: >"$STEPS_TSV"

# The binary finds its bundled models here, and never touches the network: the study's and
# the bench's larger models are random-weight presets that need no download.
export LLMEFF_MODELS_DIR=$MODELS_ABS
export HF_HUB_OFFLINE=1

wants() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
limit() { awk -v s="$1" -v k="$TIMEOUT_SCALE" 'BEGIN { printf "%d", s * k + 0.5 }'; }
now() { date +%s.%N; }

# run_step NAME LIMIT_S COMMAND...: runs COMMAND under `timeout`, stdout and stderr into the
# work folder, and appends name, exit status, start, end, limit and command to steps.tsv.
run_step() {
    local name=$1 limit_s=$2 started ended rc
    shift 2
    say "$name: $*"
    started=$(now)
    timeout --kill-after=30 "$limit_s" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
    rc=$?
    ended=$(now)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$started" "$ended" "$limit_s" \
        "$(printf '%q ' "$@")" >>"$STEPS_TSV"
    say "$name: exit $rc after $(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.1f", b - a }') s"
    return "$rc"
}

# GPU_PROOF_ASSEMBLER=jq or printf tries the fallbacks where python3 is installed.
if [ -n "${GPU_PROOF_ASSEMBLER:-}" ]; then
    ASSEMBLER=$GPU_PROOF_ASSEMBLER
elif command -v python3 >/dev/null; then
    ASSEMBLER=python3
elif command -v jq >/dev/null; then
    ASSEMBLER=jq
else
    ASSEMBLER=printf
fi
case "$ASSEMBLER" in python3 | jq | printf) ;; *) die "GPU_PROOF_ASSEMBLER must be python3, jq or printf" ;; esac
say "device $DEVICE, binary $BIN, work folder $WORK, JSON by $ASSEMBLER"

if [ "$QUICK" = 1 ]; then
    GOLDEN_PROMPTS=1 GOLDEN_TOKENS=8
    STUDY_MODEL=tiny-stories STUDY_WEIGHTS=pretrained STUDY_PROMPTS=2 STUDY_BATCH=2 STUDY_TOKENS=4
    BENCH_ARGS=(--models tiny-stories --batches 1 --new-tokens 4 --repeats 1)
else
    # All the golden prompts, at their full 32 tokens.
    GOLDEN_PROMPTS=1000 GOLDEN_TOKENS=32
    # A TinyLlama-1.1B shape for 3 batches of 8 x 192 tokens: seconds of steady load on a
    # datacenter GPU, long beside the 100 ms at which the script samples nvidia-smi.
    STUDY_MODEL=TinyLlama/TinyLlama-1.1B-Chat-v1.0 STUDY_WEIGHTS=random
    STUDY_PROMPTS=24 STUDY_BATCH=8 STUDY_TOKENS=192
    BENCH_ARGS=(--models tiny-stories,smollm,tinyllama --batches 1,8,32)
fi
# burn-wgpu refuses bf16 (WGSL has no bf16 type), and one format that cannot load ends the
# bench: on wgpu it measures f32 alone, and the golden step records the refusal.
case "$DEVICE" in
    wgpu*) BENCH_DTYPES=f32 BENCH_NOTE="bf16 left out: burn-wgpu has no bf16 (WGSL has no bf16 type)" ;;
    *) BENCH_DTYPES=f32,bf16 BENCH_NOTE= ;;
esac

# --- (a) golden exactness --------------------------------------------------------------------
# The prompts are read from golden.json with whichever JSON reader there is.
golden_prompts() {
    if command -v python3 >/dev/null; then
        python3 -c 'import json, sys
for p in json.load(open(sys.argv[1]))["prompts"][: int(sys.argv[2])]:
    print(p["prompt"])' "$GOLDEN" "$GOLDEN_PROMPTS"
    elif command -v jq >/dev/null; then
        jq -r --argjson n "$GOLDEN_PROMPTS" '.prompts[:$n][].prompt' "$GOLDEN"
    fi
}
if wants golden; then
    mapfile -t PROMPTS < <(golden_prompts)
    if [ "${#PROMPTS[@]}" -eq 0 ]; then
        say "golden: skipped, no python3 or jq to read $GOLDEN"
    fi
    for dtype in f32 bf16; do
        for i in "${!PROMPTS[@]}"; do
            run_step "golden_${dtype}_$i" "$(limit 900)" "$BIN" generate --model tiny-stories \
                --device "$DEVICE" --dtype "$dtype" --prompt "${PROMPTS[$i]}" \
                --max-new-tokens "$GOLDEN_TOKENS" --ignore-eos --json
        done
    done
fi

# --- (b) llmeff env --------------------------------------------------------------------------
if wants env; then
    run_step env "$(limit 120)" "$BIN" env --json
fi

# --- (c) a study with NVML energy beside nvidia-smi's ------------------------------------------
# nvidia-smi's index of a CUDA ordinal: under CUDA_VISIBLE_DEVICES, the ordinal's entry there
# (an index or a UUID, both of which -i takes).
nvidia_index() {
    local ordinal=${DEVICE#cuda}
    ordinal=${ordinal#:}
    ordinal=${ordinal:-0}
    if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
        local visible
        IFS=, read -r -a visible <<<"$CUDA_VISIBLE_DEVICES"
        printf '%s\n' "${visible[$ordinal]:-$ordinal}"
    else
        printf '%s\n' "$ordinal"
    fi
}
smi_energy() {
    nvidia-smi --query-gpu=total_energy_consumption --format=csv,noheader,nounits -i "$SMI_INDEX" 2>&1 | head -1
}
SMI_APPLICABLE=0
SMI_REASON="device $DEVICE is not a CUDA device"
if wants study; then
    STUDY_DIR=$WORK/study
    mkdir -p "$STUDY_DIR"
    cat >"$STUDY_DIR/gpu_proof.rhai" <<EOF
// Written by benches/gpu_proof.sh: one run on $DEVICE, its energy and latency metered.
study(#{ name: "gpu_proof", quality: false });
let model = load("$STUDY_MODEL", #{ weights: "$STUDY_WEIGHTS", dtype: "f32", device: "$DEVICE" });
let stories = prompts("builtin:stories", #{ count: $STUDY_PROMPTS });
let run = infer(model, batch(stories, #{ size: $STUDY_BATCH }), #{
    max_new_tokens: $STUDY_TOKENS,
    min_new_tokens: $STUDY_TOKENS,
});
measure(run, #{ meters: ["energy", "latency"], interval_ms: 100 });
EOF
    case "$DEVICE" in
        cuda*)
            if command -v nvidia-smi >/dev/null; then
                SMI_APPLICABLE=1
                SMI_INDEX=$(nvidia_index)
            else
                SMI_REASON="nvidia-smi is not on PATH"
            fi
            ;;
    esac
    if [ "$SMI_APPLICABLE" = 1 ]; then
        # The counter every 100 ms with nvidia-smi's own timestamps, so the run's window
        # (from runs.json) can be cut out of it; and one reading on each side of the process.
        nvidia-smi --query-gpu=timestamp,total_energy_consumption --format=csv,noheader,nounits \
            -i "$SMI_INDEX" -lms 100 >"$WORK/nvidia_smi_trace.csv" 2>"$WORK/nvidia_smi_trace.err" &
        TRACE_PID=$!
        sleep 1
        SMI_BEFORE=$(smi_energy)
        SMI_BEFORE_AT=$(now)
    fi
    run_step study "$(limit 1800)" "$BIN" run "$STUDY_DIR/gpu_proof.rhai" \
        --out "$STUDY_DIR/runs" --plain
    if [ "$SMI_APPLICABLE" = 1 ]; then
        SMI_AFTER_AT=$(now)
        SMI_AFTER=$(smi_energy)
        sleep 1
        kill "$TRACE_PID" 2>/dev/null
        wait "$TRACE_PID" 2>/dev/null
    fi
fi

# --- (d) llmeff bench on the device ----------------------------------------------------------
if wants bench; then
    run_step bench "$(limit 3600)" "$BIN" bench --device "$DEVICE" "${BENCH_ARGS[@]}" \
        --dtypes "$BENCH_DTYPES" --growth-tokens 0 --json
fi

# --- the JSON ---------------------------------------------------------------------------------
export GP_WORK=$WORK GP_OUT=$OUT GP_DEVICE=$DEVICE GP_QUICK=$QUICK GP_BIN=$BIN
export GP_GOLDEN=$GOLDEN GP_GOLDEN_TOKENS=$GOLDEN_TOKENS GP_MODELS=$MODELS_ABS GP_STEPS=$STEPS
export GP_SMI_APPLICABLE=$SMI_APPLICABLE GP_SMI_REASON=$SMI_REASON GP_BENCH_NOTE=$BENCH_NOTE
export GP_SMI_BEFORE=${SMI_BEFORE:-} GP_SMI_AFTER=${SMI_AFTER:-}
export GP_SMI_BEFORE_AT=${SMI_BEFORE_AT:-} GP_SMI_AFTER_AT=${SMI_AFTER_AT:-}
export GP_VERSION="$("$BIN" --version 2>&1 | head -1)"
export GP_HOST="$(uname -a)"

case "$ASSEMBLER" in
python3)
    python3 - <<'PY'
"""Assembles gpu_proof.sh's figures into one JSON file; prints PASS or FAIL."""
import csv
import datetime
import hashlib
import json
import os
import pathlib
import sys
import time

E = os.environ
work = pathlib.Path(E["GP_WORK"])
# bf16 is held to the repo's own bar for half precision on the trained model
# (backends/tests/formats.rs: the first 4 greedy tokens of the golden continuation).
BF16_PREFIX = 4


def read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def tail(path, lines=15):
    """The last lines of a log, without Mesa's WSI complaint about XDG_RUNTIME_DIR (noise)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join([l for l in text if "XDG_RUNTIME_DIR is invalid" not in l][-lines:])


steps = {}
for line in (work / "steps.tsv").read_text().splitlines():
    name, rc, start, end, limit, command = line.split("\t", 5)
    rc = int(rc)
    steps[name] = {
        "name": name,
        "command": command.strip(),
        "exit_status": rc,
        "timed_out": rc in (124, 137),
        "limit_s": int(limit),
        "started_at_unix_s": float(start),
        "wall_s": round(float(end) - float(start), 3),
        "stdout": str(work / f"{name}.out"),
        "stderr_tail": tail(work / f"{name}.err"),
    }
# Steps whose failure is a finding rather than a fault (a dtype the backend refuses) leave this.
failed_steps = {n for n, s in steps.items() if s["exit_status"]}
failures = []
wanted = E["GP_STEPS"].split(",")
out = {
    "tool": "benches/gpu_proof.sh",
    "schema": 1,
    "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    "host": E["GP_HOST"],
    "binary": {
        "path": E["GP_BIN"],
        "version": E["GP_VERSION"],
        "sha256": hashlib.sha256(pathlib.Path(E["GP_BIN"]).read_bytes()).hexdigest(),
    },
    "device": E["GP_DEVICE"],
    "quick": E["GP_QUICK"] == "1",
    "models_dir": E["GP_MODELS"],
    "work_dir": str(work),
    "assembler": "python3",
    "steps": list(steps.values()),
}

# (a) golden
if "golden" in wanted:
    golden = json.load(open(E["GP_GOLDEN"]))
    n = int(E["GP_GOLDEN_TOKENS"])
    section = {"reference": E["GP_GOLDEN"], "new_tokens": n}
    for dtype in ("f32", "bf16"):
        cases = []
        for i, case in enumerate(golden["prompts"]):
            step = f"golden_{dtype}_{i}"
            if step not in steps:
                continue
            got = read_json(work / f"{step}.out") or {}
            expected = case["greedy_new_ids"][:n]
            ids = got.get("output_ids")
            entry = {"step": step, "prompt": case["prompt"], "expected_ids": expected, "output_ids": ids}
            if isinstance(ids, list):
                prefix = 0
                while prefix < min(len(ids), n) and ids[prefix] == expected[prefix]:
                    prefix += 1
                entry.update(
                    input_ids_match=got.get("input_ids") == case["input_ids"],
                    exact=ids == expected,
                    common_prefix=prefix,
                    agreement_ratio=sum(a == b for a, b in zip(ids, expected)) / n,
                    decode_tokens_per_s=got.get("decode_tokens_per_s"),
                )
            cases.append(entry)
        ran = [c for c in cases if "exact" in c]
        refusals = [
            tail(work / f"{c['step']}.err", 1)
            for c in cases
            if "exact" not in c and "is not supported on device" in tail(work / f"{c['step']}.err", 1)
        ]
        if cases and not ran and len(refusals) == len(cases) and not E["GP_DEVICE"].startswith("cuda"):
            # A backend without the dtype (burn-wgpu and bf16) says so at load: recorded, not
            # failed; on CUDA every dtype must run.
            reason = refusals[0].strip().removeprefix("error: ")
            section[dtype] = {"supported": False, "reason": reason, "passed": None, "prompts": cases}
            failed_steps -= {c["step"] for c in cases}
            continue
        if dtype == "f32":
            passed = bool(cases) and len(ran) == len(cases) and all(c["exact"] and c["input_ids_match"] for c in ran)
            rule = "every prompt's greedy ids equal transformers' f32 ids"
        else:
            need = min(BF16_PREFIX, n)
            passed = bool(cases) and len(ran) == len(cases) and all(c["common_prefix"] >= need for c in ran)
            rule = f"every prompt's first {need} greedy ids equal the f32 golden ids (backends/tests/formats.rs's bar for bf16)"
        section[dtype] = {
            "passed": passed,
            "rule": rule,
            "agreement_ratio": sum(c["agreement_ratio"] for c in ran) / len(ran) if ran else None,
            "prompts": cases,
        }
        if not passed:
            failures.append(f"golden {dtype}: {rule}: not met")
    out["golden"] = section

# (b) env
if "env" in wanted:
    out["env"] = read_json(work / "env.out")
    if out["env"] is None:
        failures.append("env: no JSON")


# (c) study and nvidia-smi
def mj(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def trace_points():
    """(unix s, mJ) from the nvidia-smi trace, its local-time stamps read as local time."""
    points = []
    try:
        rows = list(csv.reader(open(work / "nvidia_smi_trace.csv")))
    except OSError:
        return points
    for row in rows:
        if len(row) < 2:
            continue
        try:
            at = datetime.datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f")
        except ValueError:
            continue
        value = mj(row[1].strip())
        if value is not None:
            points.append((time.mktime(at.timetuple()) + at.microsecond / 1e6, value))
    return points


def at(points, t):
    """The counter at t, linear between the samples around it; None outside them."""
    for (t0, e0), (t1, e1) in zip(points, points[1:]):
        if t0 <= t <= t1:
            return e0 if t1 == t0 else e0 + (e1 - e0) * (t - t0) / (t1 - t0)
    return None


if "study" in wanted:
    runs_dir = work / "study" / "runs" / "gpu_proof"
    rows = read_json(runs_dir / "runs.json") or []
    keep = (
        "status", "error", "device", "model", "dtype", "compute", "adapter", "started_at_unix_s",
        "warmup_s", "wall_s", "output_tokens", "output_tokens_per_s", "energy_gpu_j",
        "energy_gpu_source", "energy_cpu_j", "energy_cpu_source", "energy_ram_j",
        "energy_total_j", "energy_meters", "gpu_util_mean_pct", "meter_notes",
    )
    run = {k: rows[0].get(k) for k in keep} if rows else None
    study = {
        "script": str(work / "study" / "gpu_proof.rhai"),
        "results": str(runs_dir),
        "run": run,
    }
    if not run or run.get("status") != "ok":
        failures.append("study: no successful run in runs.json")
    smi = {"applicable": E["GP_SMI_APPLICABLE"] == "1"}
    if smi["applicable"]:
        before, after = mj(E["GP_SMI_BEFORE"]), mj(E["GP_SMI_AFTER"])
        smi.update(
            query="nvidia-smi --query-gpu=total_energy_consumption --format=csv,noheader,nounits",
            before_raw=E["GP_SMI_BEFORE"],
            after_raw=E["GP_SMI_AFTER"],
            before_mj=before,
            after_mj=after,
            process_window_s=round(float(E["GP_SMI_AFTER_AT"]) - float(E["GP_SMI_BEFORE_AT"]), 3)
            if E["GP_SMI_BEFORE_AT"] and E["GP_SMI_AFTER_AT"] else None,
            process_energy_j=(after - before) / 1e3 if before is not None and after is not None else None,
            process_note="before and after the whole `llmeff run` process: load, warm-up and exit included, so above the run's own energy",
        )
        points = trace_points()
        window = {"samples": len(points), "trace": str(work / "nvidia_smi_trace.csv")}
        if run and run.get("started_at_unix_s") is not None and run.get("wall_s") is not None:
            # The run's metered window opens after its warm-up (no idle baseline here).
            start = run["started_at_unix_s"] + (run.get("warmup_s") or 0.0)
            end = start + run["wall_s"]
            e0, e1 = at(points, start), at(points, end)
            window.update(start_unix_s=start, end_unix_s=end)
            if e0 is not None and e1 is not None:
                window["energy_j"] = (e1 - e0) / 1e3
                if run.get("energy_gpu_j") is not None and window["energy_j"] > 0:
                    window["llmeff_over_nvidia_smi"] = run["energy_gpu_j"] / window["energy_j"]
        window["note"] = (
            "nvidia-smi's counter sampled every 100 ms, interpolated at the run's window "
            "(started_at_unix_s + warmup_s, + wall_s); the start is placed to within the "
            "milliseconds between the run's start and its warm-up"
        )
        smi["run_window"] = window
        if "llmeff_over_nvidia_smi" not in window:
            failures.append("study: no nvidia-smi energy over the run's window to compare")
    else:
        smi["reason"] = E["GP_SMI_REASON"]
    study["nvidia_smi"] = smi
    out["study"] = study

# (d) bench
if "bench" in wanted:
    out["bench"] = read_json(work / "bench.out")
    if E["GP_BENCH_NOTE"]:
        out["bench_note"] = E["GP_BENCH_NOTE"]
    if out["bench"] is None:
        failures.append("bench: no JSON")

out["failures"] = [f"step {n} exited {steps[n]['exit_status']}" for n in steps if n in failed_steps] + failures
out["passed"] = not out["failures"]
pathlib.Path(E["GP_OUT"]).write_text(json.dumps(out, indent=1) + "\n")
print("PASS" if out["passed"] else "FAIL")
PY
    ;;
jq)
    # Without python3: the steps, the raw JSON of each, and golden agreement; the nvidia-smi
    # readings before and after the process (the run-window cut needs python3).
    steps_json=$(jq -R -s 'split("\n") | map(select(length > 0) | split("\t")
        | {name: .[0], exit_status: (.[1] | tonumber), wall_s: ((.[3] | tonumber) - (.[2] | tonumber)),
           limit_s: (.[4] | tonumber), command: .[5]})' "$STEPS_TSV")
    raw() { if jq -e . "$1" >/dev/null 2>&1; then cat "$1"; else echo null; fi; }
    golden_json=null
    if wants golden; then
        golden_json=$(for f in "$WORK"/golden_*.out; do
            [ -f "$f" ] || continue
            name=$(basename "$f" .out)
            i=${name##*_}
            jq -c --arg step "$name" --argjson i "$i" --argjson n "$GOLDEN_TOKENS" \
                --slurpfile g "$GOLDEN" '
                ($g[0].prompts[$i].greedy_new_ids[:$n]) as $want
                | .output_ids as $got
                | {step: $step, output_ids: $got, expected_ids: $want, exact: ($got == $want),
                   agreement_ratio: (([range(0; $n) as $k | select($got[$k] == $want[$k])] | length) / $n)}' \
                "$f" 2>/dev/null || echo "{\"step\": \"$name\", \"output_ids\": null}"
        done | jq -s .)
    fi
    jq -n --arg device "$DEVICE" --arg bin "$BIN" --arg version "$GP_VERSION" --arg work "$WORK" \
        --argjson quick "$QUICK" --argjson steps "$steps_json" --argjson golden "$golden_json" \
        --argjson env "$(raw "$WORK/env.out")" --argjson bench "$(raw "$WORK/bench.out")" \
        --argjson runs "$(raw "$WORK/study/runs/gpu_proof/runs.json")" \
        --arg smi_before "${SMI_BEFORE:-}" --arg smi_after "${SMI_AFTER:-}" \
        --argjson smi_applicable "$SMI_APPLICABLE" --arg smi_reason "$SMI_REASON" '
        {tool: "benches/gpu_proof.sh", schema: 1, assembler: "jq", device: $device,
         binary: {path: $bin, version: $version}, quick: ($quick == 1), work_dir: $work,
         steps: $steps, golden: $golden, env: $env, bench: $bench,
         study: {runs: $runs, nvidia_smi: (if $smi_applicable == 1
             then {applicable: true, before_mj: ($smi_before | tonumber? // null),
                   after_mj: ($smi_after | tonumber? // null)}
             else {applicable: false, reason: $smi_reason} end)},
         passed: (all($steps[]; .exit_status == 0) and (($golden // [])
             | map(select(.step | startswith("golden_f32"))) | all(.exact // false)))}' \
        >"$OUT" && jq -r 'if .passed then "PASS" else "FAIL" end' "$OUT"
    ;;
printf)
    # Neither python3 nor jq: the steps and their exit statuses; figures stay in the work folder.
    {
        printf '{"tool": "benches/gpu_proof.sh", "schema": 1, "assembler": "printf",\n'
        printf ' "device": "%s", "work_dir": "%s", "figures": "not assembled: no python3 or jq; see work_dir",\n' \
            "$DEVICE" "$WORK"
        printf ' "nvidia_smi": {"before_mj": "%s", "after_mj": "%s"},\n' "${SMI_BEFORE:-}" "${SMI_AFTER:-}"
        printf ' "steps": ['
        sep=
        while IFS=$'\t' read -r name rc started ended limit_s command; do
            printf '%s\n  {"name": "%s", "exit_status": %s, "limit_s": %s}' "$sep" "$name" "$rc" "$limit_s"
            sep=,
        done <"$STEPS_TSV"
        printf '\n ]}\n'
    } >"$OUT"
    echo "FAIL (figures not assembled)"
    ;;
esac | tee "$WORK/verdict.txt"

say "figures in $OUT, raw outputs in $WORK"
grep -qx PASS "$WORK/verdict.txt"
