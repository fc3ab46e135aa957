#!/usr/bin/env python3
"""PyTorch side of `tests/gpu.sh`: the same shapes `zoo bench --random-weights` builds, on the GPU.

A catalog model (LLaMA family or GPT-2) is built from its `[model.config]` in zoo.toml with
transformers' random initialisation, directly on the device in the asked dtype; the prompt is
the pseudo-random ids `zoo bench` uses, decoding is greedy with the KV cache (one token per
forward, `logits_to_keep=1`), timed with CUDA synchronisation. A BERT folder (config.json) is
run as a batch of sentences of `--prompt-len` words (+ [CLS] and [SEP]). Prints one JSON object
with the median and spread over --runs runs after one warm-up, in `zoo bench --json`'s keys.

    python3 tests/bench/gpu_torch_bench.py llama-2-7b --dtype f16 --prompt-len 128 --gen-len 64
    python3 tests/bench/gpu_torch_bench.py --bert-folder DIR --batch 32 --prompt-len 12

Needs torch and transformers (both in the GPU image); runs on the CPU too (--device cpu), which
is how the script is checked on a machine without a GPU.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

import torch

ROOT = Path(__file__).resolve().parents[2]
DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


def spread(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def catalog_entry(model_id):
    if tomllib is None:
        sys.exit("Python 3.11+ is needed to read zoo.toml")
    with open(ROOT / "zoo.toml", "rb") as f:
        catalog = tomllib.load(f)
    for entry in catalog["model"]:
        if entry["id"] == model_id:
            return entry
    sys.exit(f"{model_id} is not in zoo.toml")


def hf_config(entry):
    """The transformers config of a catalog entry's architecture facts."""
    c = entry["config"]
    arch = entry["architecture"]
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=c["vocab_size"],
            hidden_size=c["hidden_size"],
            intermediate_size=c["intermediate_size"],
            num_hidden_layers=c["layers"],
            num_attention_heads=c["heads"],
            num_key_value_heads=c.get("kv_heads", c["heads"]),
            max_position_embeddings=c["max_positions"],
            rope_theta=c.get("rope_theta", 10000.0),
            rms_norm_eps=c.get("norm_eps", 1e-5),
            tie_word_embeddings=c.get("tied_embeddings", False),
        )
    if arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=c["vocab_size"],
            n_positions=c["max_positions"],
            n_embd=c["hidden_size"],
            n_layer=c["layers"],
            n_head=c["heads"],
            n_inner=c.get("intermediate_size"),
        )
    sys.exit(f"{entry['id']}: architecture {arch} is not benchmarked here")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def causal(a, device, dtype):
    from transformers import AutoModelForCausalLM

    entry = catalog_entry(a.model)
    config = hf_config(entry)
    torch.manual_seed(a.seed)
    t = time.time()
    torch.set_default_dtype(dtype)
    with device:
        model = AutoModelForCausalLM.from_config(config).eval()
    torch.set_default_dtype(torch.float32)
    sync(device)
    load = time.time() - t
    vocab = config.vocab_size
    prompt = [((i * 2_654_435_761 + 12_345) % min(vocab, 30_000)) for i in range(a.prompt_len)]
    ids = torch.tensor([prompt], device=device)

    def run():
        with torch.inference_mode():
            sync(device)
            t0 = time.perf_counter()
            out = model(ids, use_cache=True, logits_to_keep=1)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            sync(device)
            t1 = time.perf_counter()
            for _ in range(a.gen_len - 1):
                out = model(nxt, past_key_values=past, use_cache=True, logits_to_keep=1)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            sync(device)
            t2 = time.perf_counter()
        return a.prompt_len / (t1 - t0), (a.gen_len - 1) / (t2 - t1)

    run()
    results = [run() for _ in range(a.runs)]
    return {
        "model": a.model,
        "family": entry["architecture"],
        "weights": a.dtype,
        "load_secs": load,
        "prompt_len": a.prompt_len,
        "gen_len": a.gen_len,
        "runs": a.runs,
        "prefill_tok_s": spread([r[0] for r in results]),
        "decode_tok_s": spread([r[1] for r in results]),
    }


def encoder(a, device, dtype):
    from transformers import BertConfig, BertModel

    config = BertConfig.from_pretrained(a.bert_folder)
    torch.manual_seed(a.seed)
    t = time.time()
    torch.set_default_dtype(dtype)
    with device:
        model = BertModel(config).eval()
    torch.set_default_dtype(torch.float32)
    sync(device)
    load = time.time() - t
    n = a.prompt_len + 2
    ids = torch.randint(1000, 2000, (a.batch, n), device=device)
    mask = torch.ones_like(ids)

    def run():
        with torch.inference_mode():
            sync(device)
            t0 = time.perf_counter()
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state
            # Mean pooling and L2 normalisation, as sentence-transformers does.
            e = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            torch.nn.functional.normalize(e, dim=-1).float().cpu()
            sync(device)
            return a.batch / (time.perf_counter() - t0)

    run()
    rates = [run() for _ in range(a.runs)]
    return {
        "model": str(a.bert_folder),
        "family": "bert",
        "weights": a.dtype,
        "load_secs": load,
        "words_per_sentence": a.prompt_len,
        "batch": a.batch,
        "runs": a.runs,
        "sentences_per_s": spread(rates),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?", help="a catalog id (LLaMA family or GPT-2)")
    p.add_argument("--bert-folder", help="a BERT folder's config.json (random weights)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="f16")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--gen-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    if (a.model is None) == (a.bert_folder is None):
        sys.exit("give a catalog id or --bert-folder")
    device = torch.device(a.device)
    dtype = DTYPES[a.dtype]
    out = encoder(a, device, dtype) if a.bert_folder else causal(a, device, dtype)
    out["implementation"] = f"PyTorch {torch.__version__} eager, transformers, {a.device}"
    if device.type == "cuda":
        out["device"] = torch.cuda.get_device_name(device)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
