#!/usr/bin/env bash
# One alternated sitting of two llmeff builds' `llmeff bench`, for "did this change move the
# figures?": A, B, A, B, ... on the same machine within minutes, so drift (a VM's neighbours,
# thermal state) falls on both alike. Each round's JSON is kept, and a summary prints, per model
# and batch, each build's median decode and prefill tokens/s, the B/A ratio, and the steal and
# copy bandwidth measured beside each row ("copy now"), so a drifting round can be seen.
#
# Usage: benches/ab.sh A_BINARY B_BINARY OUT_DIR [llmeff bench options...]
# Environment: ROUNDS (default 3) rounds of A then B; LLMEFF_MODELS_DIR as llmeff reads it.
set -eu
a=${1:?usage: benches/ab.sh A_BINARY B_BINARY OUT_DIR [bench options]}
b=${2:?usage}
out=${3:?usage}
shift 3
rounds=${ROUNDS:-3}
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
    for side in a b; do
        bin=$a
        [ "$side" = b ] && bin=$b
        echo "$(date -u +%H:%M:%S) round $round $side" >&2
        "$bin" bench --json "$@" > "$out/$side-$round.json" 2>> "$out/stderr.log"
    done
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for side in "ab":
    for r in range(1, rounds + 1):
        doc = json.load(open(f"{out}/{side}-{r}.json"))
        for row in doc["rows"]:
            rows.setdefault((row["model"], row["batch"]), {"a": [], "b": []})[side].append(row)
def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")
print(f"{'model':<14}{'batch':>6}{'decode tok/s A':>16}{'B':>10}{'B/A':>7}"
      f"{'prefill tok/s A':>17}{'B':>10}{'B/A':>7}{'steal% A/B':>12}{'copy GB/s A/B':>15}")
for (model, batch), s in sorted(rows.items()):
    da, db = med(s["a"], "decode_tokens_per_s"), med(s["b"], "decode_tokens_per_s")
    pa, pb = med(s["a"], "prefill_tokens_per_s"), med(s["b"], "prefill_tokens_per_s")
    st = f"{med(s['a'], 'cpu_steal_pct'):.1f}/{med(s['b'], 'cpu_steal_pct'):.1f}"
    cp = f"{med(s['a'], 'copy_now_bytes_per_s')/1e9:.1f}/{med(s['b'], 'copy_now_bytes_per_s')/1e9:.1f}"
    print(f"{model:<14}{batch:>6}{da:>16.0f}{db:>10.0f}{db/da:>7.3f}{pa:>17.0f}{pb:>10.0f}{pb/pa:>7.3f}{st:>12}{cp:>15}")
PY
