"""Wall time of the paper's protocol: every policy × 10 runs on a table (target ≤ 5 s for 2node on 2 cores).

    python benchmarks/bench_evaluate.py [--table artifacts/2node-cpu.h5] [--runs 10]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nasbench_ptb import api  # noqa: E402
from nasbench_ptb.evaluate import evaluate  # noqa: E402
from nasbench_ptb.policies import default_policies  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=None)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    t0 = time.perf_counter()
    bench = api.load(args.table) if args.table else api.spaces(["2node"])[0]
    t_load = time.perf_counter() - t0
    policies = list(default_policies().values())
    t0 = time.perf_counter()
    results = evaluate(bench.table, policies, args.runs)
    total = time.perf_counter() - t0
    print(f"table {bench.path} ({bench.space.name}/{bench.table.preset}), load {t_load * 1e3:.0f} ms")
    for p in policies:
        t1 = time.perf_counter()
        evaluate(bench.table, [p], args.runs)
        print(f"  {p.name:<14} {time.perf_counter() - t1:6.2f} s")
    print(f"evaluate: {len(results)} policies x {args.runs} runs in {total:.2f} s (target ≤ 5 s)")


if __name__ == "__main__":
    main()
