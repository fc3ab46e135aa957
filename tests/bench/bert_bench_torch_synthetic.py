"""sentence-transformers' side of `zoo bench MINILM --batch B --prompt-len WORDS` (run by hand,
not by CI): the same sentence (the first WORDS words of "the quick brown fox jumps over the
lazy dog" repeated), B copies per batch, one warm-up batch, then the median and spread of
sentences/s over --runs batches, as JSON.

    /work/venv-torch/bin/python tests/bench/bert_bench_torch_synthetic.py MINILM_DIR \
        --words 12 --batch 32 --runs 10 --threads 2
    zoo bench MINILM_DIR --batch 32 --prompt-len 12 --runs 10 --backend flex

Pinned: torch 2.15.0, sentence-transformers 6.2.0.
"""

import argparse
import json
import statistics
import time

import torch
from sentence_transformers import SentenceTransformer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--words", type=int, default=12)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    words = ("the quick brown fox jumps over the lazy dog " * (a.words // 9 + 1)).split()[: a.words]
    texts = [" ".join(words)] * a.batch
    model = SentenceTransformer(a.folder, device="cpu")
    rates = []
    with torch.inference_mode():
        model.encode(texts, batch_size=a.batch)  # warm-up
        for _ in range(a.runs):
            t = time.perf_counter()
            model.encode(texts, batch_size=a.batch)
            rates.append(a.batch / (time.perf_counter() - t))
    print(json.dumps({
        "torch": torch.__version__,
        "threads": a.threads,
        "batch": a.batch,
        "words": a.words,
        "sentences_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)},
    }))


if __name__ == "__main__":
    main()
