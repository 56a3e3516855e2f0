"""Query library and HTTP server speed: table open time, in-process query latency, HTTP req/s and latency.

    python benchmarks/bench_api.py [--table artifacts/2node-cpu.h5] [--requests 20000] [--connections 8]

1. ``api.load`` of the table (median of repeated opens, modules already imported).
2. ``Benchmark.query`` by canonical string and by hash over all architectures (p50, p99 per call).
3. ``GET /arch/{hash}`` against a real ``nasbench_ptb serve`` (uvicorn, one worker) on 127.0.0.1, driven by a
   bounded load generator: ``--connections`` keep-alive connections in threads, ``--requests`` in total,
   cycling over every architecture; reports req/s, p50/p99 latency and errors.
Targets (issue 5): open ≤ 50 ms, query p50 ≤ 20 µs, ≥ 3,000 req/s on one worker with zero errors.
"""
from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nasbench_ptb import api  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_open(path: Path, repeats: int = 30) -> float:
    api.load(path)  # warm imports and the page cache
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        api.load(path)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_query(path: Path, rounds: int = 200) -> dict:
    bench = api.load(path)
    genos = [g.canonical for g in bench.space]
    hashes = [g.hash for g in bench.space]
    for key in genos:
        bench.query(key)
    out = {}
    for name, keys in (("genotype", genos), ("hash", hashes)):
        lat = []
        for _ in range(rounds):
            for key in keys:
                t0 = time.perf_counter_ns()
                bench.query(key)
                lat.append(time.perf_counter_ns() - t0)
        out[name] = (np.percentile(lat, 50) / 1e3, np.percentile(lat, 99) / 1e3)
    return out


def load_generator(port: int, paths: list[str], total: int, connections: int) -> dict:
    per = total // connections
    lat: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for j in range(per):
            path = paths[(i * per + j) % len(paths)]
            t0 = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors[i] += 1
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            lat[i].append(time.perf_counter() - t0)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    all_lat = np.concatenate([np.array(x) for x in lat]) * 1e3
    return {"requests": per * connections, "seconds": wall, "rps": per * connections / wall,
            "p50_ms": float(np.percentile(all_lat, 50)), "p99_ms": float(np.percentile(all_lat, 99)),
            "errors": int(sum(errors))}


def bench_http(path: Path, total: int, connections: int, curves: bool) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nasbench_ptb.cli", "serve", "--port", str(port), "--tables",
                             str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/health")
                c.getresponse().read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"server did not start: {proc.stderr.read().decode()}")
                time.sleep(0.1)
        bench = api.load(path)
        suffix = "" if curves else "?curves=false"
        paths = [f"/arch/{g.hash}{suffix}" for g in bench.space]
        load_generator(port, paths, min(2000, total), connections)  # warm the record cache
        return load_generator(port, paths, total, connections)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=None, help="default: the default 2node table")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    path = Path(args.table) if args.table else api.default_tables()["2node"]
    print(f"table {path} ({path.stat().st_size / 1e6:.2f} MB), {os.cpu_count()} CPUs")
    print(f"open (api.load, median of 30)     : {bench_open(path) * 1e3:8.2f} ms   (target ≤ 50 ms)")
    for name, (p50, p99) in bench_query(path).items():
        print(f"query by {name:<8} p50 / p99      : {p50:8.2f} / {p99:.2f} µs   (target p50 ≤ 20 µs)")
    for curves in (True, False):
        r = bench_http(path, args.requests, args.connections, curves)
        print(f"GET /arch/{{hash}}{'' if curves else '?curves=false'}: {r['rps']:8.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
              f"p99 {r['p99_ms']:.2f} ms, {r['errors']} errors, {r['requests']} requests over "
              f"{args.connections} connections (target ≥ 3,000 req/s, 0 errors)")


if __name__ == "__main__":
    main()
