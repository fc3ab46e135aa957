#!/usr/bin/env python3
"""llama.cpp's side of `zoo quantize`'s check: load a GGUF file the zoo wrote with the real
llama.cpp (llama-cpp-python, which builds it from source) and print its greedy continuation of
given ids as JSON, so a test can compare it with `zoo generate --ids … --greedy --json`.

    python tests/bench/llama_cpp_greedy.py FILE.gguf --ids 1,2,3 --n 8
    {"ids": [...], "n_vocab": ..., "logits": [...], "tokens": [...]}
    # logits: the prompt's last position; tokens: llama.cpp's own tokenization of --text

Pinned: llama-cpp-python==0.3.36 (install with CMAKE_ARGS="-DGGML_NATIVE=ON").
"""
import argparse
import json

import llama_cpp
import numpy as np


def last_logits(llm):
    """The logits of the last evaluated position, read from llama.cpp's context (the Python
    wrapper's `scores` are not filled without logits_all)."""
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("gguf")
    p.add_argument("--ids", required=True)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--text", default=None, help="also tokenize this text with llama.cpp")
    p.add_argument("--kv-f16", action="store_true", help="llama.cpp's default f16 KV cache")
    a = p.parse_args()
    ids = [int(x) for x in a.ids.split(",")]
    # The zoo keeps its KV cache in f32; llama.cpp's default f16 cache rounds keys and values,
    # which is enough to flip a greedy choice of a random tiny model. Same cache, same tokens.
    kv = 1 if a.kv_f16 else 0  # GGML_TYPE_F16 / GGML_TYPE_F32
    llm = llama_cpp.Llama(a.gguf, n_ctx=len(ids) + a.n + 8, n_threads=1, n_batch=64,
                          type_k=kv, type_v=kv, verbose=False, seed=0)
    llm.reset()
    llm.eval(ids)
    prompt_logits = last_logits(llm).tolist()
    out = []
    for _ in range(a.n):
        # Greedy: the argmax of the last position's logits, as the zoo's --greedy.
        logits = last_logits(llm)
        nxt = int(np.argmax(logits))
        out.append(nxt)
        llm.eval([nxt])
    result = {"ids": out, "n_vocab": llm.n_vocab(), "logits": prompt_logits}
    if a.text is not None:
        result["tokens"] = llm.tokenize(a.text.encode(), add_bos=True, special=False)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
