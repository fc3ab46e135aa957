#!/usr/bin/env bash
# The GPU check, one prepared script: the parity tests on `cuda` (and on `wgpu` when the machine
# has a Vulkan loader), then a benchmark table — SmolLM2-135M, GPT-2, all-MiniLM-L6-v2 and a
# LLaMA-7B-shape model at f16 and Q4_0, all with random weights — against PyTorch (eager,
# transformers) on the same GPU, written as JSON and markdown. Meant for an H100/H200 machine
# with CUDA and PyTorch installed and no internet (the device machines here): under 8 minutes.
#
#     tests/gpu.sh pack   # on a machine with cargo and the crates: builds `zoo` and the test
#                         # binary with flex,wgpu,cuda into .gpu/ (git-ignored, xz, < 64 MiB)
#     tests/gpu.sh        # on the GPU machine: uses .gpu/ (or builds, where cargo works)
#     tests/gpu.sh dry    # no GPU: the same steps on flex and PyTorch-on-CPU at toy sizes
#                         # (checks the script itself; the numbers mean nothing)
#
# Results go to $ZOO_GPU_OUT (default: $OUT where that is set, else target/gpu-report):
# gpu_bench.json, gpu_bench.md, parity_<backend>.log, and summary.txt.
# UNTESTED ON A REAL GPU so far: written and dry-run on a CPU-only machine (see docs/gpu.md).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:-run}
PACK=$ROOT/.gpu
OUTDIR=${ZOO_GPU_OUT:-${OUT:-$ROOT/target/gpu-report}}
FEATURES=${ZOO_GPU_FEATURES:-flex,wgpu,cuda}
PYTHON=${ZOO_GPU_PYTHON:-python3}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
start=$(date +%s)
mkdir -p "$OUTDIR"
SUMMARY=$OUTDIR/summary.txt
: >"$SUMMARY"

step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
die() { echo "tests/gpu.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# pack: build the two binaries once where cargo works, for a machine where it does not.
# ---------------------------------------------------------------------------------------------
if [ "$MODE" = pack ]; then
  command -v cargo >/dev/null || die "pack needs cargo"
  command -v xz >/dev/null || die "pack needs xz"
  step "building zoo and the test binary with --features $FEATURES"
  cargo build --release --features "$FEATURES" --bin zoo || exit 1
  testbin=$(cargo test --release --features "$FEATURES" --test zoo --no-run --message-format=json 2>/dev/null |
    "$PYTHON" -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "zoo" and m["profile"]["test"]:
        print(m["executable"])' | tail -1)
  [ -x "$testbin" ] || die "no test binary found"
  target=${CARGO_TARGET_DIR:-$ROOT/target}
  rm -rf "$PACK" && mkdir -p "$PACK"
  # The test binary has these paths compiled in; `run` links them to where things are there.
  echo "$ROOT" >"$PACK/manifest_dir"
  echo "$target/release/zoo" >"$PACK/zoo_path"
  echo "$FEATURES" >"$PACK/features"
  cp "$target/release/zoo" "$PACK/zoo" && cp "$testbin" "$PACK/zoo-tests"
  strip "$PACK/zoo" "$PACK/zoo-tests" 2>/dev/null
  xz -T0 -6 "$PACK/zoo" "$PACK/zoo-tests"
  if [ -d ../shared/reference/chatglm ]; then cp -r ../shared/reference "$PACK/reference"; fi
  du -sh "$PACK"
  size=$(du -sm "$PACK" | cut -f1)
  [ "$size" -lt 60 ] || echo "warning: .gpu is ${size} MiB: the device carries at most 64 MiB with the tree" >&2
  echo "carry .gpu to the GPU machine and run tests/gpu.sh there"
  exit 0
fi

[ "$MODE" = run ] || [ "$MODE" = dry ] || die "usage: tests/gpu.sh [pack|run|dry]"

# ---------------------------------------------------------------------------------------------
# The binaries: carried (.gpu), else built here, else (dry) the CI build.
# ---------------------------------------------------------------------------------------------
BIN=$(mktemp -d)
if [ -f "$PACK/zoo.xz" ]; then
  step "unpacking the carried binaries ($(cat "$PACK/features"))"
  xz -dc "$PACK/zoo.xz" >"$BIN/zoo" && xz -dc "$PACK/zoo-tests.xz" >"$BIN/zoo-tests" || die "cannot unpack .gpu"
  chmod +x "$BIN/zoo" "$BIN/zoo-tests"
  # Paths compiled into the test binary: the fixtures and the `zoo` it runs.
  manifest=$(cat "$PACK/manifest_dir")
  if [ "$manifest" != "$ROOT" ] && [ ! -e "$manifest" ]; then
    mkdir -p "$(dirname "$manifest")" && ln -s "$ROOT" "$manifest"
  fi
  zoo_path=$(cat "$PACK/zoo_path")
  if [ ! -e "$zoo_path" ]; then mkdir -p "$(dirname "$zoo_path")" && ln -s "$BIN/zoo" "$zoo_path"; fi
  [ -d "$PACK/reference" ] && export ZOO_CHATGLM_REFERENCE=$PACK/reference
elif command -v cargo >/dev/null && [ "$MODE" = run ]; then
  step "building with --features $FEATURES"
  "$0" pack || die "build failed"
  exec "$0" run
elif [ "$MODE" = dry ]; then
  # The CI build's binaries (ZOO_GPU_ZOO / ZOO_GPU_TESTS name others).
  target=${CARGO_TARGET_DIR:-$ROOT/target}
  zoo_bin=${ZOO_GPU_ZOO:-$target/release/zoo}
  [ -x "$zoo_bin" ] || die "dry mode needs $zoo_bin (cargo build --release, or set ZOO_GPU_ZOO)"
  ln -s "$zoo_bin" "$BIN/zoo"
  testbin=${ZOO_GPU_TESTS:-$(cargo test --release --features flex,ndarray,wgpu --test zoo --no-run 2>&1 |
    sed -n 's/.*Executable tests\/zoo\/main.rs (\(.*\))/\1/p')}
  [ -n "$testbin" ] && ln -s "$testbin" "$BIN/zoo-tests"
  if [ -z "${ZOO_CHATGLM_REFERENCE:-}" ] && [ -d ../shared/reference ]; then
    export ZOO_CHATGLM_REFERENCE=$(cd ../shared/reference && pwd)
  fi
else
  die "no .gpu/ binaries and no cargo: run 'tests/gpu.sh pack' where cargo works and carry .gpu"
fi
ZOO=$BIN/zoo

if [ "$MODE" = dry ]; then
  GPU_BACKENDS=flex TORCH_DEVICE=cpu
  PROMPT=8 GEN=4 RUNS=1 BATCH=4 TIMEOUT=600
  note "DRY RUN on the CPU (flex, PyTorch on cpu, toy sizes): checks the script, not the GPU"
else
  GPU_BACKENDS=cuda TORCH_DEVICE=cuda
  PROMPT=128 GEN=64 RUNS=3 BATCH=32 TIMEOUT=150
  if ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 '; then
    GPU_BACKENDS="cuda wgpu"
  else
    note "wgpu/vulkan: skipped (no Vulkan loader, libvulkan.so.1, on this machine)"
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$SUMMARY"
fi

step "zoo backends"
"$ZOO" backends | tee "$OUTDIR/backends.txt"

# ---------------------------------------------------------------------------------------------
# Parity tests: every module that compares with a reference (transformers, the ChatGLM golden
# files, PEFT), on each GPU backend; the command-line, server and real-weight tests are left to
# CI (they need the cache and fetched weights).
# ---------------------------------------------------------------------------------------------
SKIP=(--skip cli:: --skip serve:: --skip hostile:: --skip measure:: --skip survey::
  --skip real_weights:: --skip word2vec_gensim:: --skip tokenizer:: --skip glm_tokenizer::)
if [ -e "$BIN/zoo-tests" ]; then
  for backend in $GPU_BACKENDS; do
    step "parity tests on $backend"
    filter=()
    [ "$MODE" = dry ] && filter=(glm_golden::chatglm6b_golden)
    ZOO_TEST_BACKENDS=$backend timeout "$((TIMEOUT * 2))" "$BIN/zoo-tests" "${filter[@]}" "${SKIP[@]}" \
      >"$OUTDIR/parity_$backend.log" 2>&1
    rc=$?
    result=$(grep -E '^test result:' "$OUTDIR/parity_$backend.log" | tail -1)
    note "parity tests on $backend: exit $rc; ${result:-no result line (see parity_$backend.log)}"
    grep -E '^test .* FAILED$|^    [a-z_:]+$' "$OUTDIR/parity_$backend.log" | head -20 | tee -a "$SUMMARY"
  done
else
  note "parity tests: skipped (no test binary)"
fi

# ---------------------------------------------------------------------------------------------
# Benchmarks: `zoo bench --random-weights` and the same shapes in PyTorch, one JSON line each.
# ---------------------------------------------------------------------------------------------
LINES=$OUTDIR/bench_lines.jsonl
: >"$LINES"
have_torch=1
"$PYTHON" -c 'import torch, transformers' 2>/dev/null || { have_torch=0; note "PyTorch rows: skipped (no torch + transformers for $PYTHON)"; }

record() { # record ROW IMPL -- command…: runs it, appends its JSON (or the error) to $LINES
  local row=$1 impl=$2; shift 3
  local out rc
  out=$(timeout "$TIMEOUT" "$@" 2>"$OUTDIR/last_stderr.txt"); rc=$?
  if [ $rc -eq 0 ] && [ -n "$out" ]; then
    printf '{"row":"%s","impl":"%s","result":%s}\n' "$row" "$impl" "$(echo "$out" | tail -1)" >>"$LINES"
  else
    err=$(tail -c 300 "$OUTDIR/last_stderr.txt" | tr '\n"\\' '   ')
    [ $rc -eq 124 ] && err="timed out after ${TIMEOUT}s"
    printf '{"row":"%s","impl":"%s","error":"%s"}\n' "$row" "$impl" "$err" >>"$LINES"
  fi
  echo "  $row / $impl: exit $rc"
}

# MiniLM: its real config with random weights, written by transformers (no weights travel);
# the tokenizer of the tiny test fixture (the ids' values do not change the speed).
MINILM=$(mktemp -d)/all-minilm-l6-v2-random
if [ $have_torch -eq 1 ]; then
  "$PYTHON" - "$MINILM" <<'EOF' || note "MiniLM folder: could not be written"
import shutil, sys
from pathlib import Path
import torch
from transformers import BertConfig, BertModel
out = Path(sys.argv[1])
config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536, max_position_embeddings=512, layer_norm_eps=1e-12)
torch.manual_seed(0)
BertModel(config).save_pretrained(out)
fix = Path("tests/fixtures/bert/tiny_mlm")
for name in ["tokenizer.json", "vocab.txt", "tokenizer_config.json"]:
    shutil.copy(fix / name, out / name)
EOF
fi

step "benchmarks (prompt $PROMPT, generate $GEN, $RUNS runs; BERT batch $BATCH)"
for backend in $GPU_BACKENDS; do
  zb=("$ZOO" --backend "$backend" --json bench --prompt-len "$PROMPT" --gen-len "$GEN" --runs "$RUNS")
  record "SmolLM2-135M f16" "zoo $backend" -- "${zb[@]}" smollm2-135m-instruct --random-weights --dtype f16
  record "GPT-2 124M f32" "zoo $backend" -- "${zb[@]}" gpt2 --random-weights
  if [ -f "$MINILM/config.json" ]; then
    record "MiniLM-L6 f32 (batch $BATCH)" "zoo $backend" -- "$ZOO" --backend "$backend" --json bench "$MINILM" \
      --prompt-len 12 --batch "$BATCH" --runs "$RUNS"
  fi
  if [ "$MODE" = run ]; then
    record "LLaMA-7B shape f16" "zoo $backend" -- "${zb[@]}" llama-2-7b --random-weights --dtype f16
    record "LLaMA-7B shape Q4_0" "zoo $backend" -- "${zb[@]}" llama-2-7b --random-weights --quantize q4_0
  fi
done
if [ $have_torch -eq 1 ]; then
  tb=("$PYTHON" tests/bench/gpu_torch_bench.py --device "$TORCH_DEVICE" --prompt-len "$PROMPT" --gen-len "$GEN" --runs "$RUNS")
  record "SmolLM2-135M f16" "PyTorch" -- "${tb[@]}" smollm2-135m-instruct --dtype f16
  record "GPT-2 124M f32" "PyTorch" -- "${tb[@]}" gpt2 --dtype f32
  if [ -f "$MINILM/config.json" ]; then
    record "MiniLM-L6 f32 (batch $BATCH)" "PyTorch" -- "${tb[@]}" --bert-folder "$MINILM" --dtype f32 \
      --prompt-len 12 --batch "$BATCH"
  fi
  [ "$MODE" = run ] && record "LLaMA-7B shape f16" "PyTorch" -- "${tb[@]}" llama-2-7b --dtype f16
fi
[ "$MODE" = run ] || note "LLaMA-7B rows: skipped in dry mode"

step "table"
"$PYTHON" - "$LINES" "$OUTDIR" "$MODE" <<'EOF'
import json, sys
from pathlib import Path
lines, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for l in lines.read_text().splitlines() if l.strip()]
(out / "gpu_bench.json").write_text(json.dumps({"mode": mode, "rows": rows}, indent=1))
def cell(r, key):
    if "error" in r:
        return "error: " + r["error"][:60]
    v = r["result"].get(key)
    return f'{v["median"]:.1f}' if v else "–"
md = ["| model | implementation | prefill tok/s | decode tok/s | sentences/s |",
      "| --- | --- | ---: | ---: | ---: |"]
for r in rows:
    md.append(f'| {r["row"]} | {r["impl"]} | {cell(r, "prefill_tok_s")} | {cell(r, "decode_tok_s")} | {cell(r, "sentences_per_s")} |')
note = "DRY RUN on the CPU: these numbers say nothing about a GPU.\n\n" if mode == "dry" else ""
(out / "gpu_bench.md").write_text(note + "\n".join(md) + "\n")
print(note + "\n".join(md))
EOF
note "total: $(( $(date +%s) - start )) s"
echo "results in $OUTDIR"
