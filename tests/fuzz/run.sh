#!/bin/sh
# Runs the fuzz targets, niced, each for SECONDS, from seed corpora: the repository's fixtures
# plus tests/fuzz/seeds/TARGET. Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   tests/fuzz/run.sh SECONDS [TARGET ...]      (from the repository root)
#
# Corpora grow in $ZOO_FUZZ_CORPUS (default /tmp/zoo-fuzz-corpus/TARGET), crashes land in
# tests/fuzz/artifacts/TARGET/; each target's last libFuzzer stats line is printed at the end.
set -eu
secs=${1:?usage: tests/fuzz/run.sh SECONDS [TARGET ...]}
shift
targets=${*:-gguf safetensors pytorch_bin word_vectors npy_parquet sentencepiece tiktoken config chat_template}
corpus_root=${ZOO_FUZZ_CORPUS:-/tmp/zoo-fuzz-corpus}
fx=tests/fixtures
for t in $targets; do
    c=$corpus_root/$t
    mkdir -p "$c"
    case $t in
        gguf) cp $fx/gguf/*.gguf $fx/llama/gqa.gguf "$c"/ ;;
        safetensors) cp $fx/gpt2/tiny-a/model.safetensors "$c"/ ;;
        pytorch_bin) cp $fx/glm/hf_tiny_bin/pytorch_model.bin $fx/hostile/*.bin "$c"/ ;;
        word_vectors) cp $fx/word2vec/tiny_gensim.* "$c"/ ;;
        sentencepiece) cp $fx/glm/tokenizers/*.model "$c"/ ;;
        tiktoken) cp $fx/glm/tokenizers/glm4.tiktoken "$c"/ ;;
        config) i=0; for f in $(find $fx -name config.json); do i=$((i+1)); cp "$f" "$c/config$i.json"; done ;;
    esac
    if [ -d tests/fuzz/seeds/$t ]; then cp tests/fuzz/seeds/$t/* "$c"/; fi
    nice -n 15 cargo +nightly fuzz run --fuzz-dir tests/fuzz -s none -a "$t" "$c" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
        -print_final_stats=1 > "/tmp/zoo-fuzz-$t.log" 2>&1 || echo "$t: stopped with a finding (see /tmp/zoo-fuzz-$t.log)"
    echo "$t: $(grep -E '^#[0-9]+' /tmp/zoo-fuzz-$t.log | tail -1)"
    grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "/tmp/zoo-fuzz-$t.log" || true
done
