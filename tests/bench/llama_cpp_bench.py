#!/usr/bin/env python3
"""llama.cpp's side of the SmolLM2 speed comparison (`zoo bench` on the same GGUF file):
prefill tokens/s of a fixed pseudo-random prompt and decode tokens/s of greedy generation,
with the same lengths, threads and run counts as `zoo bench`, median and spread, and the peak
RSS of this process. Prints one JSON object.

    python tests/bench/llama_cpp_bench.py FILE.gguf --threads 2 --prompt-len 128 --gen-len 64 --runs 5

The prompt ids are the zoo's (`(i * 2654435761 + 12345) % min(vocab, 30000)`), so both sides
do the same work. Pinned: llama-cpp-python==0.3.36 built with -DGGML_NATIVE=ON.

    python tests/bench/llama_cpp_bench.py FILE.gguf --llama-bench PATH/llama-bench ...

runs llama.cpp's own `llama-bench` instead (for instance built from the llama.cpp sources that
llama-cpp-python's sdist vendors, `cmake -DGGML_NATIVE=ON`): prefill = its `pp` test of
--prompt-len tokens, decode = its `tg` test of --gen-len tokens at a depth of --prompt-len
(decoding after the prompt, as the zoo does), --runs repetitions each; its own random prompt.
"""
import argparse
import json
import resource
import statistics
import subprocess
import time


def spread(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}


def with_llama_bench(a):
    """Both rates from llama-bench's JSON (one sample per repetition)."""
    def samples(*args):
        cmd = [a.llama_bench, "-m", a.gguf, "-t", str(a.threads), "-r", str(a.runs), "-o", "json",
               *args]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        (test,) = json.loads(out)
        return test["samples_ts"], test.get("build_commit", "?")

    prefill, commit = samples("-p", str(a.prompt_len), "-n", "0", "-b", str(a.prompt_len))
    decode, _ = samples("-p", "0", "-n", str(a.gen_len), "-d", str(a.prompt_len))
    print(json.dumps({
        "engine": f"llama.cpp (llama-bench, {commit})",
        "threads": a.threads,
        "prompt_len": a.prompt_len,
        "gen_len": a.gen_len,
        "prefill_tok_s": spread(prefill),
        "decode_tok_s": spread(decode),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }))


def last_logits(llm):
    """The logits of the last evaluated position, read from llama.cpp's context (the Python
    wrapper's `scores` are not filled without logits_all)."""
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("gguf")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--gen-len", type=int, default=64)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--llama-bench", help="llama.cpp's llama-bench binary, used instead of llama-cpp-python")
    a = p.parse_args()
    if a.llama_bench:
        return with_llama_bench(a)
    global llama_cpp, np
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(a.gguf, n_ctx=a.prompt_len + a.gen_len + 8, n_threads=a.threads,
                          n_threads_batch=a.threads, n_batch=a.prompt_len, verbose=False)
    vocab = llm.n_vocab()
    prompt = [(i * 2654435761 + 12345) % min(vocab, 30000) for i in range(a.prompt_len)]

    def run():
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        logits = last_logits(llm)
        nxt = int(np.argmax(logits))
        t1 = time.perf_counter()
        for _ in range(a.gen_len - 1):
            llm.eval([nxt])
            logits = last_logits(llm)
            nxt = int(np.argmax(logits))
        t2 = time.perf_counter()
        return a.prompt_len / (t1 - t0), (a.gen_len - 1) / (t2 - t1)

    run()  # warm-up
    rates = [run() for _ in range(a.runs)]

    print(json.dumps({
        "engine": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
        "threads": a.threads,
        "prompt_len": a.prompt_len,
        "gen_len": a.gen_len,
        "prefill_tok_s": spread([r[0] for r in rates]),
        "decode_tok_s": spread([r[1] for r in rates]),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    main()
