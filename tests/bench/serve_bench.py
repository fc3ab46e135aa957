"""Aggregate decode tokens/s and time to first token of an OpenAI-compatible server at several
numbers of concurrent streams: `zoo serve` (started here) or any server already running.

    python tests/bench/serve_bench.py --zoo target/release/zoo --model SmolLM2.gguf \\
        [--backend flex] [--parallel 16] [--streams 1,4,16] [--max-tokens 64] [--rounds 2]
    python tests/bench/serve_bench.py --url http://127.0.0.1:8080 --model-id NAME ...

Every request is a streaming chat completion (greedy, `max_tokens` tokens, a different
question per stream, `stream_options.include_usage` for exact token counts). For each number
of streams N the script runs `rounds` waves of N simultaneous requests and reports:

- aggregate tok/s: generated tokens of the wave / the wave's wall time (prefill included);
- decode tok/s: tokens after each stream's first, summed over streams, / the time from the
  wave's median first token to its last token (the steady state of batched decoding);
- p50 / p99 time to first token over every request of that N.

Only the standard library: no client package needed. Prints a Markdown table and JSON.
"""

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "What does a bee make?",
    "How many legs does a spider have?",
    "What is the boiling point of water?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet?",
    "What language is spoken in Brazil?",
    "Why is the sky blue?",
    "What is photosynthesis?",
    "How do airplanes fly?",
    "What is a prime number?",
    "Describe a cat in one sentence.",
    "What is the speed of light?",
    "What is an atom?",
    "Give me a tip for learning to code.",
]


def stream_once(host, port, model, question, max_tokens):
    """One streaming chat request: (seconds to first token, seconds to the end, tokens)."""
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    conn = http.client.HTTPConnection(host, port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"status {resp.status}: {resp.read()[:300]}")
    first = None
    tokens = 0
    buffer = b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n\n" in buffer:
            frame, buffer = buffer.split(b"\n\n", 1)
            if not frame.startswith(b"data: "):
                continue
            data = frame[6:]
            if data == b"[DONE]":
                continue
            event = json.loads(data)
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                if first is None and choice.get("delta", {}).get("content"):
                    first = time.perf_counter()
    end = time.perf_counter()
    conn.close()
    return (first or end) - start, end - start, start, first or end, end, tokens


def wave(host, port, model, n, max_tokens):
    results = [None] * n
    errors = []

    def run(i):
        try:
            results[i] = stream_once(host, port, model, QUESTIONS[i % len(QUESTIONS)], max_tokens)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(errors[0])
    return wall, results


def percentile(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def start_zoo(args):
    cmd = [args.zoo, "serve", args.model, "--port", "0", "--parallel", str(args.parallel),
           "--queue", "256"]
    if args.backend:
        cmd += ["--backend", args.backend]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        if "http://" in line:
            url = line[line.index("http://"):].split()[0]
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, url
    raise RuntimeError("zoo serve did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", help="the zoo binary (starts `zoo serve`)")
    ap.add_argument("--model", help="model for `zoo serve`")
    ap.add_argument("--url", help="an already running server")
    ap.add_argument("--model-id", help="the model id on that server (default: its first)")
    ap.add_argument("--backend")
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--streams", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    proc = None
    if args.url:
        url = args.url
    else:
        proc, url = start_zoo(args)
    try:
        parsed = urllib.parse.urlparse(url)
        host, port = parsed.hostname, parsed.port
        conn = http.client.HTTPConnection(host, port)
        conn.request("GET", "/v1/models")
        models = json.loads(conn.getresponse().read())["data"]
        model = args.model_id or models[0]["id"]
        stream_once(host, port, model, "Hello!", 8)  # warm-up
        rows = []
        for n in [int(s) for s in args.streams.split(",")]:
            ttft, agg, dec = [], [], []
            for _ in range(args.rounds):
                wall, results = wave(host, port, model, n, args.max_tokens)
                tokens = sum(r[5] for r in results)
                agg.append(tokens / wall)
                firsts = [r[3] for r in results]
                last = max(r[4] for r in results)
                after_first = sum(max(r[5] - 1, 0) for r in results)
                dec.append(after_first / max(last - statistics.median(firsts), 1e-9))
                ttft.extend(r[0] for r in results)
            rows.append({
                "streams": n,
                "aggregate_tok_s": statistics.median(agg),
                "decode_tok_s": statistics.median(dec),
                "ttft_p50_s": percentile(ttft, 50),
                "ttft_p99_s": percentile(ttft, 99),
                "requests": len(ttft),
            })
            print(f"{n} streams: {rows[-1]}", file=sys.stderr)
        print("| streams | aggregate tok/s | decode tok/s | TTFT p50 (s) | TTFT p99 (s) |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['streams']} | {r['aggregate_tok_s']:.1f} | {r['decode_tok_s']:.1f} | "
                  f"{r['ttft_p50_s']:.3f} | {r['ttft_p99_s']:.3f} |")
        print(json.dumps({"model": model, "max_tokens": args.max_tokens, "rows": rows}))
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
