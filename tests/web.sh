#!/usr/bin/env bash
# The zoo's WebGPU page (examples/web) in headless Chromium on SwiftShader WebGPU, checked
# against the native `zoo`: the greedy SmolLM2 chat answer (ids and text) equals `zoo generate`
# and `zoo chat` on the same GGUF file and names Paris; the MiniLM sentence embeddings equal
# `zoo embed` (cosine >= 0.9999); the tiny GPT-2 fixture's greedy ids from its folder equal
# `zoo generate`. Called by tests/run.sh after the native build:
#
#     ZOO_SMOLLM2_GGUF=F ZOO_MINILM_DIR=D tests/web.sh
#
# Installs the wasm toolchain when missing and builds the page (examples/web/build.sh; cached
# in the zoo cache and $CARGO_TARGET_DIR/wasm). Needs node, Debian's chromium and
# playwright-core ($ZOO_PLAYWRIGHT_DIR), as tests/run.sh sets up. Prints the times, the wasm
# size and the page's tokens/s.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${ZOO_CACHE:-$HOME/.cache/burn-zoo}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
ZOO=${ZOO:-$CARGO_TARGET_DIR/release/zoo}
gguf=${ZOO_SMOLLM2_GGUF:?set ZOO_SMOLLM2_GGUF (zoo fetch smollm2-135m-instruct)}
minilm=${ZOO_MINILM_DIR:?set ZOO_MINILM_DIR (zoo fetch all-minilm-l6-v2)}
playwright=${ZOO_PLAYWRIGHT_DIR:-$cache/playwright-core-1.65.1}
chromium=${ZOO_CHROMIUM:-$(command -v chromium)}
if [ -d "$gguf" ]; then gguf=$(ls "$gguf"/*.gguf | head -1); fi
max_new=${ZOO_WEB_MAX_NEW:-12}
question="What is the capital of France?"
texts='["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]'
pkg=$cache/web/pkg
tmp=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

t0=$(date +%s)
examples/web/build.sh "$pkg" 2> >(tee "$tmp/build.log" >&2)
t_build=$(( $(date +%s) - t0 ))

gpt2=tests/fixtures/gpt2/tiny-a
"$ZOO" web --port 0 --pkg "$pkg" "$gguf" "$minilm" "$gpt2" > "$tmp/url" 2> "$tmp/server.log" &
server=$!
for _ in $(seq 100); do [ -s "$tmp/url" ] && break; sleep 0.1; done
base=$(head -1 "$tmp/url"); base=${base%/}
[ -n "$base" ] || { cat "$tmp/server.log" >&2; echo "zoo web did not start" >&2; exit 1; }
enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
page() { NODE_PATH="$playwright/node_modules" node tests/web/page.mjs "$base/?$1" "$chromium" 1200; }

t1=$(date +%s)
page "model=/models/$(basename "$gguf")&task=chat&prompt=$(enc "$question")&max_new_tokens=$max_new&greedy=1" > "$tmp/chat.json"
t_chat=$(( $(date +%s) - t1 ))
prompt_ids=$(python3 -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["prompt_ids"])))' "$tmp/chat.json")
"$ZOO" generate "$gguf" --ids "$prompt_ids" --greedy --max-new-tokens "$max_new" --json > "$tmp/generate.json"
"$ZOO" chat "$gguf" --message "$question" --greedy --max-new-tokens "$max_new" --json > "$tmp/native_chat.json"

t2=$(date +%s)
page "model=/models/$(basename "$minilm")&task=embed&prompt=$(enc "$texts")" > "$tmp/embed.json"
t_embed=$(( $(date +%s) - t2 ))
python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$texts" | "$ZOO" embed "$minilm" --json > "$tmp/native_embed.json"

# GPT-2 from a Hugging Face folder (the tiny fixture: vocab.json + merges.txt + safetensors).
page "model=/models/tiny-a&task=generate&prompt=$(enc "hello world")&max_new_tokens=8&greedy=1" > "$tmp/gpt2.json"
gpt2_ids=$(python3 -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["prompt_ids"])))' "$tmp/gpt2.json")
"$ZOO" generate "$gpt2" --ids "$gpt2_ids" --greedy --max-new-tokens 8 --json > "$tmp/gpt2_native.json"

python3 - "$tmp" "$pkg/zoo_web_bg.wasm" "$t_build" "$t_chat" "$t_embed" <<'PY'
import gzip, json, math, os, sys
tmp, wasm, t_build, t_chat, t_embed = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
load = lambda n: json.load(open(os.path.join(tmp, n)))
chat, gen, native = load("chat.json"), load("generate.json"), load("native_chat.json")
assert "error" not in chat, chat
assert chat["ids"] == gen["ids"], f"page ids {chat['ids']} != zoo generate {gen['ids']}"
assert chat["text"] == native["reply"], f"page {chat['text']!r} != zoo chat {native['reply']!r}"
assert "Paris" in chat["text"], chat["text"]
emb, want = load("embed.json"), load("native_embed.json")
assert "error" not in emb, emb
assert len(emb["embeddings"]) == len(want["embeddings"]) == 3
cos = lambda a, b: sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
cosines = [cos(a, b) for a, b in zip(emb["embeddings"], want["embeddings"])]
assert min(cosines) >= 0.9999, cosines
e = emb["embeddings"]
assert cos(e[0], e[1]) > cos(e[0], e[2]), "similar sentences are not the closest"
g, gn = load("gpt2.json"), load("gpt2_native.json")
assert "error" not in g, g
assert g["ids"] == gn["ids"], f"GPT-2: page ids {g['ids']} != zoo generate {gn['ids']}"
data = open(wasm, "rb").read()
print(json.dumps({
    "chat_text": chat["text"], "chat_ids": chat["ids"], "adapter": chat.get("adapter"),
    "prefill_s": round(chat["prefill_s"], 2), "decode_tok_s": round(chat["decode_tok_s"], 2),
    "embed_cosines_vs_native": [round(c, 7) for c in cosines], "gpt2_ids": g["ids"],
    "wasm_bytes": len(data), "wasm_gzip_bytes": len(gzip.compress(data, 9)),
    "build_s": t_build, "chat_page_s": t_chat, "embed_page_s": t_embed,
}, indent=1))
PY
echo "web page test: ok" >&2
