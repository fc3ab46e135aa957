"""LoRA training speed and memory: `zoo finetune` against PyTorch + transformers + PEFT.

Both sides train the same LoRA on the same weights, the same tokens and the same settings:

- weights: SmolLM2-135M-Instruct's GGUF (Q4_1), dequantized to f32 by both (transformers'
  `from_pretrained(dir, gguf_file=...)`; the zoo opens the .gguf itself);
- data: tests/fixtures/finetune/in_short/train.jsonl (chat records) tokenized ONCE here with the
  GGUF's tokenizer and chat template into pre-tokenized JSONL (`input_ids`, `labels`, -100 on the
  system and user turns), which both sides read: batches in file order, right padded with id 0;
- adapters: PEFT creates the initial adapter (seeded), saves it, and both start from it
  (`zoo finetune --adapter`), so the losses of every step should agree, not only the first;
- loop: AdamW (betas 0.9/0.999, eps 1e-8, no weight decay), constant lr, clip_grad_norm_ 1.0,
  no dropout, `--batch-size`, `--steps`, 2 threads (torch.set_num_threads; RAYON_NUM_THREADS
  for the zoo).

Tokens/s = tokens of the batches (padding excluded) / seconds of the training steps (loading
excluded; each side times its own loop). Peak RSS = /usr/bin/time -v's maximum resident set
size of the whole process. The zoo and PyTorch runs alternate, `--reps` times each, so that
both see the same machine load.

Usage (torch 2.15.0, transformers 5.23.0, peft 0.21.2, gguf in the venv):

    /work/venv-torch/bin/python tests/bench/finetune_vs_peft.py --zoo target/release/zoo \\
        [--steps 20] [--batch-size 4] [--max-len 80] [--reps 3] [--work /tmp/ft-bench]

Writes WORK/results.json and prints a table.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GGUF = Path.home() / ".cache/burn-zoo/smollm2-135m-instruct/pip/SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = ROOT / "tests/fixtures/finetune/in_short/train.jsonl"
RANK, ALPHA, TARGETS, LR, SEED = 8, 16, ["q_proj", "v_proj"], 2e-4, 0
THREADS = 2


def load_model_and_tokenizer(gguf):
    import torch
    import transformers

    d, f = str(gguf.parent), gguf.name
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    return model, tok


def tokenize(args, work):
    """The chat records as pre-tokenized JSONL: loss on the assistant answer and its <|im_end|>."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(args.gguf.parent), gguf_file=args.gguf.name)
    out = work / "tokens.jsonl"
    with open(out, "w") as f:
        for line in open(args.data):
            messages = json.loads(line)["messages"]
            prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
            full = prompt + messages[-1]["content"] + "<|im_end|>"
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            ids = tok(full, add_special_tokens=False)["input_ids"]
            assert ids[: len(p_ids)] == p_ids, "the prompt's tokens are not a prefix of the record's"
            labels = [-100] * len(p_ids) + ids[len(p_ids):]
            f.write(json.dumps({"input_ids": ids[: args.max_len], "labels": labels[: args.max_len]}) + "\n")
    return out


def init_adapter(args, work):
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(SEED)
    model, _ = load_model_and_tokenizer(args.gguf)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0,
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    # B starts at zero (PEFT's init); give it small values so that the adapters matter from the
    # first step and a mismatch in how B·A is applied would show in the first loss.
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.01)
    out = work / "init_adapter"
    peft_model.save_pretrained(str(out))
    return out


def batches(tokens_path, batch_size, steps):
    records = [json.loads(l) for l in open(tokens_path)]
    for step in range(steps):
        rows = [records[(step * batch_size + i) % len(records)] for i in range(batch_size)]
        t = max(len(r["input_ids"]) for r in rows)
        ids = [r["input_ids"] + [0] * (t - len(r["input_ids"])) for r in rows]
        labels = [r["labels"] + [-100] * (t - len(r["labels"])) for r in rows]
        yield ids, labels, sum(len(r["input_ids"]) for r in rows)


def torch_worker(args):
    """One PyTorch + PEFT training run; prints {"losses", "tokens_per_s"} as JSON."""
    import torch
    from peft import PeftModel

    torch.set_num_threads(THREADS)
    model, _ = load_model_and_tokenizer(args.gguf)
    model = PeftModel.from_pretrained(model, str(args.work / "init_adapter"), is_trainable=True)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    losses, tokens = [], 0
    start = time.perf_counter()
    for ids, labels, n in batches(args.work / "tokens.jsonl", args.batch_size, args.steps):
        out = model(input_ids=torch.tensor(ids), labels=torch.tensor(labels))
        losses.append(out.loss.item())
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        tokens += n
    seconds = time.perf_counter() - start
    print(json.dumps({"losses": losses, "tokens_per_s": tokens / seconds}))


def timed(cmd, env):
    """Runs cmd under /usr/bin/time -v: (its stdout's last JSON line, peak RSS in MiB)."""
    proc = subprocess.run(["/usr/bin/time", "-v"] + cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    last = [l for l in proc.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(last), rss_kb / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", type=Path, default=ROOT / "target/release/zoo")
    ap.add_argument("--gguf", type=Path, default=GGUF)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=80)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--backend", default="flex")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ft-bench"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return torch_worker(args)

    args.work.mkdir(parents=True, exist_ok=True)
    tokens = tokenize(args, args.work)
    init_adapter(args, args.work)
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS))
    zoo_cmd = [str(args.zoo), "finetune", str(args.gguf), "--data", str(tokens), "--format", "tokens",
               "--adapter", str(args.work / "init_adapter"), "--no-shuffle",
               "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--max-len", str(args.max_len), "--optimizer", "adamw", "--lr", str(LR),
               "--schedule", "constant", "--max-grad-norm", "1", "--out", str(args.work / "zoo_out"),
               "--force", "--backend", args.backend, "--json"]
    torch_cmd = [sys.executable, __file__, "--worker", "--gguf", str(args.gguf), "--work", str(args.work),
                 "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    runs = {"zoo": [], "torch": []}
    for rep in range(args.reps):
        for name, cmd in (("zoo", zoo_cmd), ("torch", torch_cmd)):
            result, rss = timed(cmd, env)
            runs[name].append({"tokens_per_s": result["tokens_per_s"], "rss_mib": rss,
                               "losses": result["losses"]})
            print(f"rep {rep + 1} {name:5} {result['tokens_per_s']:8.1f} tok/s  {rss:7.0f} MiB  "
                  f"first loss {result['losses'][0]:.5f}  last {result['losses'][-1]:.5f}", flush=True)

    zl, tl = runs["zoo"][0]["losses"], runs["torch"][0]["losses"]
    summary = {
        "steps": args.steps, "batch_size": args.batch_size, "max_len": args.max_len,
        "rank": RANK, "alpha": ALPHA, "targets": TARGETS, "lr": LR, "threads": THREADS,
        "backend": args.backend,
        "zoo_tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs["zoo"]),
        "torch_tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs["torch"]),
        "zoo_rss_mib": statistics.median(r["rss_mib"] for r in runs["zoo"]),
        "torch_rss_mib": statistics.median(r["rss_mib"] for r in runs["torch"]),
        "first_loss": {"zoo": zl[0], "torch": tl[0]},
        "max_loss_diff": max(abs(a - b) for a, b in zip(zl, tl)),
        "runs": runs,
    }
    summary["speed_ratio_zoo_over_torch"] = summary["zoo_tokens_per_s"] / summary["torch_tokens_per_s"]
    summary["rss_ratio_zoo_over_torch"] = summary["zoo_rss_mib"] / summary["torch_rss_mib"]
    (args.work / "results.json").write_text(json.dumps(summary, indent=1))
    print(f"\nmedian of {args.reps}: zoo {summary['zoo_tokens_per_s']:.1f} tok/s, "
          f"torch {summary['torch_tokens_per_s']:.1f} tok/s, ratio {summary['speed_ratio_zoo_over_torch']:.2f}x; "
          f"peak RSS zoo {summary['zoo_rss_mib']:.0f} MiB, torch {summary['torch_rss_mib']:.0f} MiB, "
          f"ratio {summary['rss_ratio_zoo_over_torch']:.2f}x")
    print(f"first loss zoo {zl[0]:.6f} torch {tl[0]:.6f}; max |loss diff| over {args.steps} steps "
          f"{summary['max_loss_diff']:.2e}")


if __name__ == "__main__":
    main()
