"""Load test of `merc serve`: requests per second and latency of POST /v1/predict, and the server's memory.

Starts `merc serve RUN` in a subprocess on a free loopback port (default RUN: the bundled demo run, MiniLM text
encoder + bidirectional Mamba), then for conversations of 10 and 100 utterances (built by cycling the demo
conversations' lines) and concurrency 1, 4 and 16 sends a bounded number of requests with an asyncio httpx
client: each of ``concurrency`` workers sends its share back to back. Reports per cell requests/s (requests /
wall time), p50 and p99 latency, errors (any non-200), and the server's resident memory (VmRSS from /proc,
sampled every 0.25 s) at the start and end of each cell and its peak over the whole run.

The server labels under one lock (one model call at a time; see merc.inference.predictor), so concurrency
raises latency rather than throughput; it shows that requests queue without errors or growing memory.
CPU on the measuring machine may be shared: the load average before and after is recorded.

Usage:
  .venv/bin/python benchmarks/bench_serve.py [--run merc/assets/demo_run] [--requests-10 48] [--requests-100 16]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, results_dir, write_json  # noqa: E402

from merc.io import atomic_write_text, provenance, provenance_markdown  # noqa: E402

SIZES = (10, 100)
CONCURRENCY = (1, 4, 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.stop = pid, every, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.samples.append((time.time(), rss_mb(self.pid)))
            time.sleep(self.every)


def conversation(n: int) -> dict:
    lines = [u for line in (ROOT / "merc/assets/demo_conversations.jsonl").read_text().splitlines() if line.strip()
             for u in json.loads(line)["utterances"]]
    return {"conversation_id": f"load{n}", "utterances": [
        {"speaker": lines[i % len(lines)]["speaker"], "text": lines[i % len(lines)]["text"]} for i in range(n)]}


async def cell(url: str, body: dict, requests: int, concurrency: int) -> dict:
    import httpx
    latencies, errors = [], []
    per_worker = [requests // concurrency + (k < requests % concurrency) for k in range(concurrency)]

    async def worker(n: int, client):
        for _ in range(n):
            t = time.perf_counter()
            try:
                r = await client.post(url + "/v1/predict", json=body)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
            except httpx.HTTPError as e:
                errors.append(repr(e))
            latencies.append(time.perf_counter() - t)

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(n, client) for n in per_worker))
        wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"requests": requests, "concurrency": concurrency, "wall_s": wall, "rps": requests / wall,
            "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * q[98], "errors": len(errors),
            "error_examples": errors[:3]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(ROOT / "merc/assets/demo_run"), help="run directory to serve")
    ap.add_argument("--requests-10", type=int, default=48, help="requests per cell, 10-utterance conversations")
    ap.add_argument("--requests-100", type=int, default=16, help="requests per cell, 100-utterance conversations")
    ap.add_argument("--passes", type=int, default=2,
                    help="run every cell this many times: memory that keeps growing shows in a later pass")
    ap.add_argument("--out", default=str(results_dir("serve")), help="results folder")
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()
    server = subprocess.Popen([sys.executable, "-m", "merc.cli", "--quiet", "serve", args.run, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import httpx
        for _ in range(600):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
            if server.poll() is not None:
                raise SystemExit(f"the server exited: {server.stderr.read().decode()[-2000:]}")
        model = httpx.get(url + "/v1/model").json()
        sampler = Sampler(server.pid)
        sampler.start()
        rows = []
        for n in SIZES:
            asyncio.run(cell(url, conversation(n), 2, 1))  # warm-up (not counted)
        for k in range(args.passes):
            for n in SIZES:
                body = conversation(n)
                for c in CONCURRENCY:
                    before = rss_mb(server.pid)
                    r = asyncio.run(cell(url, body, args.requests_10 if n == 10 else args.requests_100, c))
                    rows.append({"pass": k + 1, "utterances": n, **r, "rss_start_mb": before,
                                 "rss_end_mb": rss_mb(server.pid)})
                    print(f"pass {k + 1} {n:>3} utt  c={c:<2}  {r['rps']:6.2f} req/s  p50 {r['p50_ms']:7.1f} ms  p99 "
                          f"{r['p99_ms']:7.1f} ms  errors {r['errors']}  rss {rows[-1]['rss_end_mb']:.0f} MB",
                          flush=True)
        sampler.stop.set()
        sampler.join()
    finally:
        server.terminate()
        server.wait(30)
    rss = [m for _, m in sampler.samples]
    result = {"run": args.run, "model": model, "machine": machine(), "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "rss_mb": {"first": rss[0], "last": rss[-1], "peak": max(rss),
                                                                  "samples": len(rss)},
              "cells": rows, "provenance": provenance()}
    out = Path(args.out)
    write_json(out / "load.json", result)
    lines = ["# merc serve under load: the predict endpoint", "",
             f"Run `{Path(args.run).name}` ({model['model']}, {'causal' if model['causal'] else 'bidirectional'}, "
             f"text encoder {', '.join(model['encoders'].get('text', []))}); server and client on one machine over "
             "loopback; POST /v1/predict with a JSON conversation; the server labels one request at a time (one model "
             "thread, one lock around the model and encoders).", "",
             f"Load average (1, 5, 15 min) before {', '.join(f'{x:.1f}' for x in load_before)}, after "
             f"{', '.join(f'{x:.1f}' for x in result['load_average_after'])}: the CPU was shared with other work, "
             "so absolute figures are pessimistic.", "",
             "| pass | utterances | concurrency | requests | req/s | p50 ms | p99 ms | errors | RSS start → end MB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['pass']} | {r['utterances']} | {r['concurrency']} | {r['requests']} | {r['rps']:.2f} | "
                     f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} | "
                     f"{r['rss_start_mb']:.0f} → {r['rss_end_mb']:.0f} |")
    m = result["rss_mb"]
    ends = [max(r["rss_end_mb"] for r in rows if r["pass"] == k + 1) for k in range(args.passes)]
    lines += ["", "Highest RSS at the end of a cell, per pass: " + ", ".join(f"{e:.0f} MB" for e in ends)
              + " (the first pass includes the growth to working size: thread pools, allocator arenas).", ""]
    lines += [f"Server memory (VmRSS, {m['samples']} samples every 0.25 s from before the warm-up requests): "
              f"first {m['first']:.0f} MB, "
              f"last {m['last']:.0f} MB, peak {m['peak']:.0f} MB.", "", "## Provenance", "",
              f"- {machine()}", provenance_markdown(result["provenance"]), ""]
    # written as is: the endpoint's path (/v1/predict) is no machine path for _common.portable to rewrite
    atomic_write_text(out / "load.md", "\n".join(lines))
    print(f"wrote {out / 'load.md'}")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
