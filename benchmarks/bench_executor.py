"""The Ray executor's overhead against the local one, on the same build, measured side by side in one run.

    python benchmarks/bench_executor.py [--rounds 3] [--units 8] [--train-tokens 2000]

Builds the same 2-node standalone table (smoke preset, ``--units`` units of 4 runs) into fresh outputs, alternating
local and Ray (``--executor ray`` on a local Ray with 1 CPU, so one unit at a time like the local executor: the
difference is the executor's cost: task submission, result transfer, worker processes). Then the same build on a
local Ray with every core, for the speed-up when units run in parallel. Both executors train at 1 torch thread.
Prints wall seconds per build (median over rounds), the ratios, and Ray's start-up time, which a build pays once.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import ray  # noqa: E402  (before torch's thread pools: Ray forks)
import torch  # noqa: E402

from nasbench_ptb.builder import build as build_mod  # noqa: E402
from nasbench_ptb.builder import cluster, presets  # noqa: E402
from nasbench_ptb.space import space  # noqa: E402


def timed_build(sp, p, out: Path, archs, data_dir, executor) -> float:
    t0 = time.perf_counter()
    build_mod.build(build_mod.BuildRequest(sp, p, out, archs, 1, "cpu", data_dir, quiet=True, mode="standalone",
                                           executor=executor))
    return time.perf_counter() - t0


def start_ray(cpus: int) -> float:
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--units", type=int, default=8, help="units of 4 runs (at most 8 on the 2-node space)")
    ap.add_argument("--train-tokens", type=int, default=2000)
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sp = space("2node")
    p = presets.override(presets.get("smoke"), {"train_tokens": args.train_tokens, "slots_per_unit": 4})
    archs = [sp.from_id(i) for i in range(min(4 * args.units, sp.size))]
    times: dict[str, list[float]] = {"local": [], "ray, 1 CPU": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        startup = start_ray(1)
        cold = timed_build(sp, p, tmp / "warm.h5", archs, args.data, cluster.RayExecutor())  # workers start, load PTB
        timed_build(sp, p, tmp / "warm-local.h5", archs, args.data, None)  # this process's kernels warm up alike
        for r in range(args.rounds):
            times["local"].append(timed_build(sp, p, tmp / f"l{r}.h5", archs, args.data, None))
            times["ray, 1 CPU"].append(timed_build(sp, p, tmp / f"r{r}.h5", archs, args.data, cluster.RayExecutor()))
        ray.shutdown()
        cores = os.cpu_count() or 1
        start_ray(cores)
        timed_build(sp, p, tmp / "warm2.h5", archs, args.data, cluster.RayExecutor())
        key = f"ray, {cores} CPUs"
        times[key] = [timed_build(sp, p, tmp / f"p{r}.h5", archs, args.data, cluster.RayExecutor())
                      for r in range(args.rounds)]
        ray.shutdown()
    med = {k: statistics.median(v) for k, v in times.items()}
    unit_s = med["local"] / len(range(0, len(archs), 4))
    print(f"2node smoke build, {len(archs)} runs in {len(archs) // 4} units of 4, train_tokens {args.train_tokens} "
          f"(~{unit_s:.2f} s per unit locally), {args.rounds} rounds, torch {torch.__version__}, ray {ray.__version__}")
    for k, v in times.items():
        print(f"  {k:<12} {med[k]:7.2f} s  (rounds: {', '.join(f'{x:.2f}' for x in v)})  "
              f"ratio to local {med[k] / med['local']:.3f}")
    per_unit = (med["ray, 1 CPU"] - med["local"]) / (len(archs) // 4)
    print(f"  overhead of the Ray executor per unit (1 CPU): {per_unit * 1000:+.0f} ms; first build on fresh "
          f"workers {cold:.2f} s; ray.init {startup:.2f} s (once per build)")


if __name__ == "__main__":
    main()
