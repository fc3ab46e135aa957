#!/usr/bin/env bash
# The accuracy table of docs/quantization.md: perplexity per weight format, measured with
# `zoo compare --measure --text` (strided windows; see docs/measure.md for the method).
#
#   tests/bench/quant_accuracy.sh [ZOO] > table.md
#
# 1. SmolLM2-135M-Instruct's GGUF as stored (Q4_1 blocks, Q8_0 embedding/head), the same
#    weights dequantized to f32, and re-quantized at load; on tests/fixtures/bert/bench_sentences.txt.
# 2. The tiny LLaMA fixture (tests/fixtures/measure/llama) at f32 / f16 / bf16 / q8_0 / q4_0 /
#    q4_1 on tests/fixtures/measure/text.txt (transformers' f32 perplexity: 614.49281).
set -euo pipefail
cd "$(dirname "$0")/../.."
ZOO=${1:-target/release/zoo}
GGUF=$("$ZOO" fetch smollm2-135m-instruct --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
row() { # model text label flags…
  local model=$1 text=$2 label=$3; shift 3
  "$ZOO" compare "$model" --measure --text "$text" --backend flex --runs 1 --prompt-len 8 --gen-len 2 "$@" --json \
    | python3 -c 'import json,sys; m=json.load(sys.stdin)["measured"][0]; print("| %s | %.4f | %d |" % (sys.argv[1], m["perplexity"], m["scored_tokens"]))' "$label"
}
echo "| SmolLM2-135M-Instruct | perplexity | tokens scored |"
echo "| --- | ---: | ---: |"
row "$GGUF" tests/fixtures/bert/bench_sentences.txt "GGUF as stored (Q4_1 + Q8_0), exact products"
row "$GGUF" tests/fixtures/bert/bench_sentences.txt "GGUF as stored, --int8-activations (llama.cpp's arithmetic)" --int8-activations
row "$GGUF" tests/fixtures/bert/bench_sentences.txt "the same weights dequantized (--dtype f32)" --dtype f32
row "$GGUF" tests/fixtures/bert/bench_sentences.txt "--dtype f16" --dtype f16
row "$GGUF" tests/fixtures/bert/bench_sentences.txt "re-quantized --quantize q8_0" --quantize q8_0
row "$GGUF" tests/fixtures/bert/bench_sentences.txt "re-quantized --quantize q4_1" --quantize q4_1
row "$GGUF" tests/fixtures/bert/bench_sentences.txt "re-quantized --quantize q4_0" --quantize q4_0
echo
echo "| tiny LLaMA fixture | perplexity | tokens scored |"
echo "| --- | ---: | ---: |"
for f in "f32:" "f16:--dtype f16" "bf16:--dtype bf16" "q8_0:--quantize q8_0" "q4_0:--quantize q4_0" "q4_1:--quantize q4_1"; do
  # shellcheck disable=SC2086
  row tests/fixtures/measure/llama tests/fixtures/measure/text.txt "${f%%:*}" ${f#*:}
done
