#!/usr/bin/env bash
# SmolLM2-135M-Instruct Q4_1 as stored, side by side in one run: `zoo bench` (flex, weights kept
# in the file's Q4_1/Q8_0 blocks) and llama.cpp (llama-cpp-python) on the same GGUF file, the
# same prompt ids, lengths and threads; the zoo with its default exact products (f32
# activations) and with --int8-activations (llama.cpp's arithmetic); then `zoo chat` peak RSS.
# Prints a markdown table with ratios (zoo / llama.cpp).
#
#   PYTHON=/tmp/zoo-venv/bin/python tests/bench/smollm2_vs_llama_cpp.sh [ZOO] [RUNS]
#
# PYTHON must have llama-cpp-python==0.3.36 (CMAKE_ARGS="-DGGML_NATIVE=ON" pip install …), or
# LLAMA_BENCH=path/to/llama-bench uses llama.cpp's own benchmark tool instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
ZOO=${1:-target/release/zoo}
RUNS=${2:-5}
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-2}
GGUF=$("$ZOO" fetch smollm2-135m-instruct --json | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["path"])')
export RAYON_NUM_THREADS=$THREADS
for round in 1 2; do
  "$ZOO" bench "$GGUF" --backend flex --prompt-len 128 --gen-len 64 --runs "$RUNS" --json > /tmp/zoo-bench.$round.json
  "$ZOO" bench "$GGUF" --backend flex --prompt-len 128 --gen-len 64 --runs "$RUNS" --int8-activations --json > /tmp/zoo-bench-int8.$round.json
  "$PYTHON" tests/bench/llama_cpp_bench.py "$GGUF" --threads "$THREADS" --prompt-len 128 --gen-len 64 --runs "$RUNS" ${LLAMA_BENCH:+--llama-bench "$LLAMA_BENCH"} > /tmp/cpp-bench.$round.json
done
/usr/bin/time -v "$ZOO" chat smollm2-135m-instruct --backend flex --message "What is the capital of France?" --max-new-tokens 32 --json > /tmp/zoo-chat.json 2> /tmp/zoo-chat.time
"$PYTHON" - "$RUNS" <<'PY'
import json, re, sys
rows = []
for r in (1, 2):
    z = json.load(open(f"/tmp/zoo-bench.{r}.json")); q = json.load(open(f"/tmp/zoo-bench-int8.{r}.json"))
    c = json.load(open(f"/tmp/cpp-bench.{r}.json"))
    rows.append((z, q, c))
chat_rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open("/tmp/zoo-chat.time").read()).group(1)) * 1024
print(f"| round | measure | zoo (flex, exact) | zoo (flex, --int8-activations) | {rows[0][2]['engine']} | ratios |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
cell = lambda s: f"{s['median']:.1f} ({s['min']:.1f}–{s['max']:.1f})"
for i, (z, q, c) in enumerate(rows, 1):
    for key, name in (("prefill_tok_s", "prefill tok/s (128)"), ("decode_tok_s", "decode tok/s (64)")):
        a, a8, b = z[key]["median"], q[key]["median"], c[key]["median"]
        print(f"| {i} | {name} | {cell(z[key])} | {cell(q[key])} | {cell(c[key])} | {a / b:.2f}× / {a8 / b:.2f}× |")
    mb = lambda r: r["peak_rss_bytes"] / 1e6
    print(f"| {i} | peak RSS (bench) | {mb(z):.0f} MB | {mb(q):.0f} MB | {mb(c):.0f} MB | {mb(z) / mb(c):.2f}× / {mb(q) / mb(c):.2f}× |")
print(f"| | peak RSS of `zoo chat` | {chat_rss / 1e6:.0f} MB | | | |")
PY
