#!/usr/bin/env python3
"""PyTorch side of `zoo bench` for a LLaMA-family GGUF (run by hand, not by CI).

transformers (with accelerate==1.15.0 installed) dequantises the GGUF to fp32, the same weights the zoo runs; the prompt is the same
pseudo-random ids `zoo bench` uses, decoding is greedy with the KV cache. Prints JSON with the
median and spread of prefill and decode tokens/s over --runs runs after one warm-up.

    /tmp/zoo-venv/bin/python tests/bench/llama_bench_torch.py PATH/TO/model.gguf \
        --prompt-len 128 --gen-len 64 --runs 5 --threads 2
    zoo bench PATH/TO/model.gguf --prompt-len 128 --gen-len 64 --runs 5 --backend flex
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("gguf")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--gen-len", type=int, default=64)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    path = Path(a.gguf)
    t = time.time()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, torch_dtype=torch.float32
    ).eval()
    load = time.time() - t
    vocab = model.config.vocab_size
    prompt = [((i * 2_654_435_761 + 12_345) % min(vocab, 30_000)) for i in range(a.prompt_len)]
    ids = torch.tensor([prompt])

    def run():
        with torch.no_grad():
            t0 = time.perf_counter()
            # Logits of the last position only, as transformers' generate() and the zoo do.
            out = model(ids, use_cache=True, logits_to_keep=1)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            t1 = time.perf_counter()
            for _ in range(a.gen_len - 1):
                out = model(nxt, past_key_values=past, use_cache=True, logits_to_keep=1)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            t2 = time.perf_counter()
        return a.prompt_len / (t1 - t0), (a.gen_len - 1) / (t2 - t1)

    run()
    results = [run() for _ in range(a.runs)]
    pre = [r[0] for r in results]
    dec = [r[1] for r in results]
    print(json.dumps({
        "torch": torch.__version__,
        "threads": a.threads,
        "load_secs": load,
        "prefill": {"median": statistics.median(pre), "min": min(pre), "max": max(pre)},
        "decode": {"median": statistics.median(dec), "min": min(dec), "max": max(dec)},
    }))


if __name__ == "__main__":
    main()
