"""Query library and HTTP server speed: table open time, in-process query latency, HTTP req/s and latency.

    python benchmarks/bench_api.py [--table artifacts/2node-cpu.h5] [--requests 20000] [--connections 8]

1. ``api.load`` of the table (median of repeated opens, modules already imported).
2. ``Benchmark.query`` by canonical string and by hash over all architectures (p50, p99 per call).
3. HTTP against a real ``nasbench_ptb serve`` (uvicorn, one worker) on 127.0.0.1. With ``wrk`` installed (Debian's
   package) and 2+ cores: the servers pinned to core 0 and wrk to core 1 (``taskset``), ``--connections``
   keep-alive connections for ``--seconds`` per endpoint in ``--rounds`` interleaved rounds: ``GET /arch/{hash}``
   cycling over every architecture, with and without curves, ``GET /archs?limit=1000`` of the largest space, and FastAPI's async hello world
   (``hello_app.py``) under the same settings in the same run — the ratio to it is the figure that carries across
   machines. Without wrk: a Python load generator (threads, ``--requests`` in total), which caps the figure.
Targets (issue 13): open ≤ 20 ms, query p50 ≤ 10 µs, ``/arch/{hash}`` ≥ 8,000 req/s per worker and ≥ 0.9× the
hello world, zero errors.
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
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


def start_server(cmd: list[str], port: int, probe: str, pin: str | None = None) -> subprocess.Popen:
    """Start a server (pinned to core ``pin`` with taskset) and wait until ``probe`` answers."""
    proc = subprocess.Popen((["taskset", "-c", pin] if pin else []) + cmd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", probe)
            c.getresponse().read()
            return proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"server did not start: {proc.stderr.read().decode()}") from None
            time.sleep(0.1)


def serve_cmd(paths: list[Path], port: int) -> list[str]:
    return [sys.executable, "-m", "nasbench_ptb.cli", "serve", "--port", str(port), "--tables", *map(str, paths)]


def hello_cmd(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "hello_app:app", "--app-dir", os.path.dirname(__file__), "--port",
            str(port), "--log-level", "warning"]


_LUA = """
local paths = {%s}
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%.6f %%.3f %%.3f\\n", summary.requests,
    e.connect + e.read + e.write + e.timeout + e.status, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end
"""


def wrk(port: int, paths: list[str], connections: int, seconds: float, pin: str | None) -> dict:
    """One wrk run cycling over ``paths``: req/s, p50/p99 latency (ms), errors (socket errors and non-2xx)."""
    script = Path(f"/tmp/nasbench_wrk_{os.getpid()}.lua")
    script.write_text(_LUA % ", ".join(f'"{p}"' for p in paths))
    try:
        cmd = (["taskset", "-c", pin] if pin else []) + ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s",
                                                         "-s", str(script), f"http://127.0.0.1:{port}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    finally:
        script.unlink()
    m = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"wrk printed no result: {out}")
    n, errors, wall, p50, p99 = int(m[1]), int(m[2]), float(m[3]), float(m[4]), float(m[5])
    return {"requests": n, "seconds": wall, "rps": n / wall, "p50_ms": p50, "p99_ms": p99, "errors": errors}


def bench_wrk(path: Path, connections: int, seconds: float, rounds: int) -> dict:
    """Every HTTP figure with wrk, the servers on core 0 and wrk on core 1, hello world in the same run.

    Both servers run at once and the endpoints are measured in ``rounds`` interleaved rounds (arch, lean arch,
    leaderboard, hello, arch, …), so a change in the machine's background load hits every figure alike."""
    pins = ("0", "1") if (os.cpu_count() or 1) >= 2 and shutil.which("taskset") else (None, None)
    bench = api.load(path)
    tables = api.default_tables()  # space -> path: the largest space is known without loading anything
    big = max(tables, key=lambda name: api.get_space(name).size)
    largest, leaderboard = tables[big], f"/archs?space={big}&limit=1000"
    port, hello_port = free_port(), free_port()
    procs = [start_server(serve_cmd(sorted({path, largest}), port), port, "/health", pins[0])]
    try:
        procs.append(start_server(hello_cmd(hello_port), hello_port, "/", pins[0]))
        targets = {"/arch/{hash}": (port, [f"/arch/{g.hash}" for g in bench.space]),
                   "/arch/{hash}?curves=false": (port, [f"/arch/{g.hash}?curves=false" for g in bench.space]),
                   leaderboard: (port, [leaderboard]), "hello world": (hello_port, ["/"])}
        for p, paths in targets.values():
            wrk(p, paths, connections, 1, pins[1])  # warm the caches
        runs: dict[str, list[dict]] = {name: [] for name in targets}
        for _ in range(rounds):
            for name, (p, paths) in targets.items():
                runs[name].append(wrk(p, paths, connections, seconds / rounds, pins[1]))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
    out = {}
    for name, rs in runs.items():
        n, wall = sum(r["requests"] for r in rs), sum(r["seconds"] for r in rs)
        out[name] = {"requests": n, "seconds": wall, "rps": n / wall, "errors": sum(r["errors"] for r in rs),
                     "p50_ms": float(np.median([r["p50_ms"] for r in rs])), "p99_ms": max(r["p99_ms"] for r in rs)}
    return out


def bench_http(path: Path, total: int, connections: int, curves: bool) -> dict:
    port = free_port()
    proc = start_server(serve_cmd([path], port), port, "/health")
    try:
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
    ap.add_argument("--seconds", type=float, default=10, help="wrk: seconds per measured endpoint")
    ap.add_argument("--rounds", type=int, default=5, help="wrk: interleaved rounds over the endpoints")
    ap.add_argument("--python-load", action="store_true", help="the Python load generator even when wrk exists")
    args = ap.parse_args()
    path = Path(args.table) if args.table else api.default_tables()["2node"]
    print(f"table {path} ({path.stat().st_size / 1e6:.2f} MB), {os.cpu_count()} CPUs")
    print(f"open (api.load, median of 30)     : {bench_open(path) * 1e3:8.2f} ms   (target ≤ 20 ms)")
    for name, (p50, p99) in bench_query(path).items():
        print(f"query by {name:<8} p50 / p99      : {p50:8.2f} / {p99:.2f} µs   (target p50 ≤ 10 µs)")
    if shutil.which("wrk") and not args.python_load:
        res = bench_wrk(path, args.connections, args.seconds, args.rounds)
        hello = res["hello world"]["rps"]
        print(f"wrk, 1 thread, {args.connections} connections, {args.seconds:g} s each in {args.rounds} interleaved rounds; "
              "servers on core 0, wrk on core 1")
        for name, r in res.items():
            print(f"GET {name:<32}: {r['rps']:8.0f} req/s = {r['rps'] / hello:.2f}x hello world, p50 {r['p50_ms']:.2f} ms, "
                  f"p99 {r['p99_ms']:.2f} ms, {r['errors']} errors, {r['requests']} requests")
        print("targets: /arch/{hash} ≥ 8,000 req/s and ≥ 0.9x hello world, 0 errors")
        return
    for curves in (True, False):
        r = bench_http(path, args.requests, args.connections, curves)
        print(f"GET /arch/{{hash}}{'' if curves else '?curves=false'}: {r['rps']:8.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
              f"p99 {r['p99_ms']:.2f} ms, {r['errors']} errors, {r['requests']} requests over "
              f"{args.connections} connections (target ≥ 3,000 req/s, 0 errors)")


if __name__ == "__main__":
    main()
