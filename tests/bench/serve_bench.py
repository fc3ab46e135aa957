"""Aggregate decode tokens/s and time to first token of an OpenAI-compatible server at several
numbers of concurrent streams: `zoo serve` (started here) or any server already running.

    python tests/bench/serve_bench.py --zoo target/release/zoo --model SmolLM2.gguf \\
        [--backend flex] [--parallel 16] [--streams 1,4,16] [--max-tokens 64] [--rounds 2]
    python tests/bench/serve_bench.py --url http://127.0.0.1:8080 --model-id NAME ...
    python tests/bench/serve_bench.py --zoo target/release/zoo --model SmolLM2.gguf \\
        --llama-server /path/to/llama-server [--threads 2] ...

With `--llama-server`, llama.cpp's own server is started on the same file with the same number
of threads and parallel slots (`-t`, `-np`, a context of `slots × --slot-context` tokens,
continuous batching on), and the two servers are measured side by side: each wave runs on the
zoo, then on llama.cpp, so both see the same load and the same drift. Peak RSS of each server
(VmHWM) is reported at the end.

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


IGNORE_EOS = False


def stream_once(host, port, model, question, max_tokens):
    """One streaming chat request: (seconds to first token, seconds to the end, tokens)."""
    request = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if IGNORE_EOS:
        request["ignore_eos"] = True
    body = json.dumps(request)
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
    cmd += args.zoo_arg
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        if "http://" in line:
            url = line[line.index("http://"):].split()[0]
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, url
    raise RuntimeError("zoo serve did not start")


def start_llama_server(args):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [args.llama_server, "-m", args.model, "--host", "127.0.0.1", "--port", str(port),
           "-t", str(args.threads), "-tb", str(args.threads), "-np", str(args.parallel),
           "-c", str(args.parallel * args.slot_context), "-cb", "--no-webui", "--log-disable"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, url
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {proc.returncode}: {' '.join(cmd)}")
        time.sleep(0.2)
    raise RuntimeError("llama-server did not become healthy")


def peak_rss_mb(proc):
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(servers, streams, rounds, max_tokens):
    """Per server name, one row per number of streams; waves interleaved across servers."""
    samples = {name: {n: ([], [], []) for n in streams} for name in servers}
    for n in streams:
        for _ in range(rounds):
            for name, (host, port, model) in servers.items():
                wall, results = wave(host, port, model, n, max_tokens)
                agg, dec, ttft = samples[name][n]
                tokens = sum(r[5] for r in results)
                agg.append(tokens / wall)
                firsts = [r[3] for r in results]
                last = max(r[4] for r in results)
                after_first = sum(max(r[5] - 1, 0) for r in results)
                dec.append(after_first / max(last - statistics.median(firsts), 1e-9))
                ttft.extend(r[0] for r in results)
    table = {}
    for name in servers:
        rows = []
        for n in streams:
            agg, dec, ttft = samples[name][n]
            rows.append({
                "streams": n,
                "aggregate_tok_s": statistics.median(agg),
                "decode_tok_s": statistics.median(dec),
                "ttft_p50_s": percentile(ttft, 50),
                "ttft_p99_s": percentile(ttft, 99),
                "requests": len(ttft),
            })
            print(f"{name}, {n} streams: {rows[-1]}", file=sys.stderr)
        table[name] = rows
    return table


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
    ap.add_argument("--zoo-arg", action="append", default=[],
                    help="one more argument for `zoo serve` (repeat), e.g. --int8-activations")
    ap.add_argument("--llama-server", help="llama.cpp's llama-server binary: measured side by side")
    ap.add_argument("--threads", type=int, default=2, help="llama-server's threads")
    ap.add_argument("--slot-context", type=int, default=512,
                    help="llama-server's context per slot (its -c is slots times this)")
    ap.add_argument("--ignore-eos", action="store_true",
                    help="every stream generates exactly --max-tokens tokens (the `ignore_eos` "
                         "extension of llama.cpp's server, vLLM and `zoo serve`), so that servers "
                         "whose answers differ in length are compared on equal work")
    args = ap.parse_args()
    global IGNORE_EOS
    IGNORE_EOS = args.ignore_eos

    procs = {}
    servers = {}
    try:
        if args.url:
            urls = {"server": args.url}
        else:
            proc, url = start_zoo(args)
            procs["zoo"] = proc
            urls = {"zoo": url}
        if args.llama_server:
            proc, url = start_llama_server(args)
            procs["llama.cpp"] = proc
            urls["llama.cpp"] = url
        for name, url in urls.items():
            parsed = urllib.parse.urlparse(url)
            host, port = parsed.hostname, parsed.port
            conn = http.client.HTTPConnection(host, port)
            conn.request("GET", "/v1/models")
            models = json.loads(conn.getresponse().read())["data"]
            model = args.model_id or models[0]["id"]
            stream_once(host, port, model, "Hello!", 8)  # warm-up
            servers[name] = (host, port, model)
        streams = [int(s) for s in args.streams.split(",")]
        table = measure(servers, streams, args.rounds, args.max_tokens)
        rss = {name: peak_rss_mb(proc) for name, proc in procs.items()}
        names = list(servers)
        head = "| streams |" + "".join(
            f" {n} aggregate tok/s | {n} decode tok/s | {n} TTFT p50 (s) | {n} TTFT p99 (s) |"
            for n in names)
        if len(names) == 2:
            head += f" aggregate {names[0]} / {names[1]} |"
        print(head)
        print("| ---: |" + " ---: |" * (4 * len(names) + (len(names) == 2)))
        for i, n in enumerate(streams):
            line = f"| {n} |"
            for name in names:
                r = table[name][i]
                line += (f" {r['aggregate_tok_s']:.1f} | {r['decode_tok_s']:.1f} | "
                         f"{r['ttft_p50_s']:.3f} | {r['ttft_p99_s']:.3f} |")
            if len(names) == 2:
                a, b = (table[name][i]["aggregate_tok_s"] for name in names)
                line += f" {a / b:.2f}x |"
            print(line)
        for name, mb in rss.items():
            if mb is not None:
                print(f"peak RSS {name}: {mb:.0f} MB")
        print(json.dumps({"max_tokens": args.max_tokens, "rounds": args.rounds,
                          "ignore_eos": args.ignore_eos,
                          "models": {n: servers[n][2] for n in names}, "rows": table,
                          "peak_rss_mb": rss}))
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
