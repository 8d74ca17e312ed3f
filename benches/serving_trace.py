#!/usr/bin/env python3
"""Writes the request traces the serving benchmark replays (benches/serving-*.csv).

Poisson arrivals far above what one CPU can serve (so the server saturates), prompt and
output lengths drawn uniformly (outputs 16-256 tokens, the mix issue H's target names), in the
`arrival_s,input_tokens,output_tokens` columns llmeff's trace replay reads. Seeded: the files
are reproducible and checked in, so this script only documents how they were made.

    python3 benches/serving_trace.py
"""
import random
import sys


def write(path, n, rate_per_s, inputs, outputs, seed):
    rng = random.Random(seed)
    t = 0.0
    with open(path, "w") as f:
        f.write("arrival_s,input_tokens,output_tokens\n")
        for i in range(n):
            if i:
                t += rng.expovariate(rate_per_s)
            f.write(f"{t:.6f},{rng.randint(*inputs)},{rng.randint(*outputs)}\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--long"]:
        # The memory-flatness check: 10 minutes of traffic at 20 requests/s on tiny-stories
        # (not checked in: 12,000 rows), written where the second argument says.
        write(sys.argv[2], 12_000, 20.0, (8, 200), (8, 200), seed=3)
        sys.exit(0)
    # SmolLM-135M shape: 128 requests, outputs 16-256, offered 200 requests/s.
    write("benches/serving-mixed.csv", 128, 200.0, (32, 256), (16, 256), seed=1)
    # TinyLlama-1.1B shape: the scheduler's own time at batch 16 (short outputs: 2 cores).
    write("benches/serving-short.csv", 48, 200.0, (32, 128), (16, 48), seed=2)
