#!/usr/bin/env bash
# The whole test suite, on every backend compiled in: flex, ndarray and wgpu (on Mesa's
# lavapipe Vulkan driver when the machine has no GPU). Run from anywhere:
#
#     ./tests/run.sh
#
# It installs what it needs (Debian's mesa-vulkan-drivers, as root, when missing), fetches the
# real weights the tests use from the package registries into the zoo cache ($ZOO_CACHE,
# default ~/.cache/burn-zoo), then runs fmt, clippy and `cargo test` in release mode.
# ZOO_FEATURES overrides the backends (default flex,ndarray,wgpu).
set -euo pipefail
cd "$(dirname "$0")/.."

FEATURES=${ZOO_FEATURES:-flex,ndarray,wgpu}
export ZOO_TEST_BACKENDS=${ZOO_TEST_BACKENDS:-$FEATURES}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/burn-zoo/target}
# Mesa's Vulkan loader complains on every start without it.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
start=$(date +%s)

step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

if [[ ",$FEATURES," == *",wgpu,"* || ",$FEATURES," == *",vulkan,"* ]]; then
  if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1 || ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
    step "installing Vulkan (mesa-vulkan-drivers: lavapipe runs wgpu on the CPU)"
    if [ "$(id -u)" -ne 0 ]; then
      echo "wgpu needs a Vulkan driver: run 'sudo apt-get install mesa-vulkan-drivers libvulkan1' or set ZOO_FEATURES=flex,ndarray" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
  fi
fi

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --release --workspace --all-targets --no-default-features --features "$FEATURES" -- -D warnings

step "build (the zoo binary and every test, with one feature set)"
cargo test --release --workspace --no-default-features --features "$FEATURES" --no-run
ZOO="$CARGO_TARGET_DIR/release/zoo"

step "fetching real weights from the package registries"
fetch() { "$ZOO" fetch "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])'; }
export ZOO_GPT2_TOKENIZER_DIR=$(fetch gpt2-tokenizer)
export ZOO_MINILM_DIR=$(fetch all-minilm-l6-v2)
export ZOO_SMOLLM2_GGUF=$(fetch smollm2-135m-instruct)
export ZOO_GLOVE_6B_DIR=$(fetch glove-6b-50d)
# gensim's wheel ships vectors written by the C tool and by gensim, and the evaluation sets.
gensim_dir=${ZOO_CACHE:-$HOME/.cache/burn-zoo}/gensim-4.4.0
if [ ! -f "$gensim_dir/test_data/questions-words.txt" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: gensim==4.4.0 -d "$tmp"
  mkdir -p "$gensim_dir.part"
  python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [z.extract(n, sys.argv[2]) for n in z.namelist() if n.startswith("gensim/test/test_data/")]' "$tmp"/gensim-*.whl "$gensim_dir.part"
  rm -rf "$gensim_dir" && mkdir -p "$gensim_dir" && mv "$gensim_dir.part/gensim/test/test_data" "$gensim_dir/test_data"
  rm -rf "$gensim_dir.part" "$tmp"
fi
export ZOO_GENSIM_TEST_DATA=$gensim_dir/test_data
# The official OpenAI Python client for the `zoo serve` tests (tests/zoo/serve.rs), in a venv
# in the cache: installed once (about 15 s and 10 MB), then reused.
openai_venv=${ZOO_CACHE:-$HOME/.cache/burn-zoo}/openai-venv-3.51.0
if [ ! -f "$openai_venv/.installed" ]; then
  step "installing the openai client into $openai_venv"
  rm -rf "$openai_venv"
  python3 -m venv "$openai_venv"
  "$openai_venv/bin/pip" install --quiet openai==3.51.0
  touch "$openai_venv/.installed"
fi
export ZOO_OPENAI_PYTHON=$openai_venv/bin/python
# Headless Chromium (Debian's package, as root) and playwright-core (npm, in the cache) for the
# chat page test of `zoo serve`: about 25 s and 300 MB once, then reused.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  step "installing chromium (the chat page test)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
playwright_dir=${ZOO_CACHE:-$HOME/.cache/burn-zoo}/playwright-core-1.65.1
if command -v chromium >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  if [ ! -f "$playwright_dir/.installed" ]; then
    step "installing playwright-core into $playwright_dir"
    rm -rf "$playwright_dir" && mkdir -p "$playwright_dir"
    (cd "$playwright_dir" && npm install --silent --no-audit --no-fund playwright-core@1.65.1)
    touch "$playwright_dir/.installed"
  fi
  export ZOO_PLAYWRIGHT_DIR=$playwright_dir ZOO_CHROMIUM=$(command -v chromium)
fi
# The ChatGLM golden tensors live beside the repository, never inside it.
if [ -d ../shared/reference/chatglm ]; then
  export ZOO_CHATGLM_REFERENCE=${ZOO_CHATGLM_REFERENCE:-$(cd ../shared/reference && pwd)}
fi
export ZOO_TEST_REGISTRY=1

step "tests on: $ZOO_TEST_BACKENDS"
cargo test --release --workspace --no-default-features --features "$FEATURES" --no-fail-fast

# The zoo in a browser page on WebGPU (SwiftShader in headless Chromium) against the native
# binary; installs the wasm toolchain once (ZOO_SKIP_WEB=1 skips it). About 14 minutes here
# with the toolchain installed: the wasm build of the zoo's crates (-j 1), then SmolLM2 at
# ~0.1 tok/s on SwiftShader.
if [ -z "${ZOO_SKIP_WEB:-}" ] && [ -n "${ZOO_PLAYWRIGHT_DIR:-}" ]; then
  step "the WebGPU page in headless Chromium (tests/web.sh)"
  ZOO="$ZOO" tests/web.sh
fi

step "done"
