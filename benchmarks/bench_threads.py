"""Thread policy and hidden-size cost of CPU training: arch-tokens/s of a real unit, measured side by side.

    python benchmarks/bench_threads.py [--preset cpu] [--slots 16] [--steps 6] [--hidden 32,64,128] [--json F]

Part 1 (the thread policy, at the preset's hidden size), each on an idle machine and beside one competing
CPU-bound process (a pure-Python spin loop, as a test suite or an editor would be):
  - one process at 1 torch thread, one process at 2 threads (the default torch picks on 2 cores),
  - two processes at once with 1 thread each (two units trained in parallel): their summed throughput.
Part 2 (the cost study): arch-tokens/s per slot at 1 thread for each ``--hidden``, beside the competitor, and
the CPU-hours the 2-node table of the multi-epoch preset would cost at that rate.

Every figure is a fresh subprocess training the same ``slots`` standalone runs of the 2-node space for
``steps`` mini-batches of real PTB (after one untimed warm-up step) with :class:`builder.trainer.SlotTrainer`,
so it measures exactly what a build runs. Ratios are within this one run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


class _Done(Exception):
    pass


def worker(args) -> None:
    """One measurement: train ``slots`` runs for ``steps`` batches at ``threads`` threads; print JSON."""
    import torch

    torch.set_num_threads(args.threads)
    from nasbench_ptb.builder import data, presets
    from nasbench_ptb.builder.engine import SlotGenotypes
    from nasbench_ptb.builder.trainer import SlotTrainer
    from nasbench_ptb.space import space

    p = presets.override(presets.get(args.preset), {"hidden": args.hidden})
    sp = space(2)
    genos = [sp.from_id(i % sp.size) for i in range(args.slots)]
    corpus = data.load(None)
    tr = SlotTrainer(corpus, list(range(args.slots)), sp.n, p, torch.device("cpu"),
                     "awd" if p.variable_bptt else "fixed")
    geno = SlotGenotypes.of(genos, torch.device("cpu"))
    counted = {"steps": -1, "tokens": 0, "t0": 0.0}  # the first step is the warm-up

    def on_batch(tokens: int) -> None:
        counted["steps"] += 1
        if counted["steps"] == 0:
            counted["t0"] = time.perf_counter()
            return
        counted["tokens"] += tokens
        if counted["steps"] >= args.steps:
            raise _Done

    try:
        tr.train_until(1e9, lambda: geno, on_batch)
    except _Done:
        pass
    seconds = time.perf_counter() - counted["t0"]
    print(json.dumps({"tokens_per_s": counted["tokens"] / seconds, "seconds": seconds}))


def _spawn(threads: int, hidden: int, args) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--hidden", str(hidden),
           "--preset", args.preset, "--slots", str(args.slots), "--steps", str(args.steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def _collect(procs: list[subprocess.Popen]) -> list[float]:
    out = []
    for proc in procs:
        text, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a measurement failed (exit {proc.returncode})")
        out.append(json.loads(text.strip().splitlines()[-1])["tokens_per_s"])
    return out


def measure(threads: int, processes: int, hidden: int, args) -> float:
    """Summed arch-tokens/s of ``processes`` concurrent workers at ``threads`` threads each."""
    return sum(_collect([_spawn(threads, hidden, args) for _ in range(processes)]))


def _spin() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def table_hours(rate_per_slot: float, slots: int, epochs: float, train_tokens: int, ws_seeds: int,
                eval_factor: float) -> float:
    """CPU-hours of the 2-node table: 32 cells × 2 seeds standalone plus ``ws_seeds`` super-nets, each trained
    for ``epochs`` (one super-net is one run), validation adding ``eval_factor`` of the training time."""
    runs = 32 * 2 + ws_seeds
    return runs * epochs * train_tokens / (rate_per_slot * slots) * (1 + eval_factor) / 3600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--hidden", default="32,64,128", help="part 2: comma-separated hidden sizes ('' skips)")
    ap.add_argument("--epochs", type=float, default=10, help="part 2: epochs of the projected table")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    if args.worker:
        args.hidden = int(args.hidden)
        worker(args)
        return
    from nasbench_ptb.builder import presets

    p = presets.get(args.preset)
    res: dict = {"preset": args.preset, "slots": args.slots, "steps": args.steps, "policy": {}, "hidden": {}}
    for load in ("idle", "beside a competing process"):
        spin = _spin() if load != "idle" else None
        try:
            one = measure(1, 1, p.hidden, args)
            two = measure(2, 1, p.hidden, args)
            pair = measure(1, 2, p.hidden, args)
        finally:
            if spin is not None:
                spin.kill()
        res["policy"][load] = {"1 process x 1 thread": one, "1 process x 2 threads": two,
                               "2 processes x 1 thread": pair}
        print(f"{load}: arch-tokens/s  1 thread {one:,.0f}  2 threads {two:,.0f} ({two / one:.2f}x)  "
              f"2 units x 1 thread {pair:,.0f} ({pair / one:.2f}x)", flush=True)
    hiddens = [int(h) for h in args.hidden.split(",") if h]
    train_tokens = 929_589  # PTB train split with <eos>
    for h in hiddens:
        spin = _spin()
        try:
            rate = measure(1, 1, h, args)
        finally:
            spin.kill()
        per_slot = rate / args.slots
        hours = table_hours(per_slot, args.slots, args.epochs, train_tokens, p.ws_seeds, 0.1)
        res["hidden"][h] = {"tokens_per_s": rate, "per_slot": per_slot, "table_cpu_hours": hours}
        print(f"hidden {h}: {rate:,.0f} arch-tokens/s at 1 thread beside a competitor ({per_slot:,.0f} per slot); "
              f"2-node table at {args.epochs:g} epochs ≈ {hours:.1f} CPU-hours (+10 % validation)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
