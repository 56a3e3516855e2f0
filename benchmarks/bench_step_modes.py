"""Eager vs ``torch.compile`` of the cell step vs CUDA graphs over the BPTT window, and the evaluation phase.

    python benchmarks/bench_step_modes.py --preset gpu --space 2node [--slots 160] [--steps 10] [--json out.json]

Training: every mode trains the same slots (the first ``--slots`` runs of the space in unit order) from the same
initial weights over the same fixed-length windows of real PTB with the same dropout masks (drawn each step, as
the trainer does), so their per-step objectives must agree: each mode's largest relative difference to eager is
printed beside its arch-tokens/s (the first step is a warm-up, timed apart: it holds the compilation). Modes:

- ``eager``: the engine's step as the trainer takes it (``train_loss``, backward, ``SlotSGD.step``).
- ``compile``: the same with the cell step (builder/cell.py, one time step of every slot) through
  ``torch.compile`` (``--compile-backend``, ``--compile-mode``).
- ``graph`` (CUDA): the whole step (forward over the window, backward, optimiser) captured once in a CUDA graph
  and replayed; tokens, hidden state and masks are copied into static buffers. The learning rate scales with the
  window length, so a build over the awd stream would need one graph per distinct length: their number over one
  epoch is printed.
- ``graph+compile`` (CUDA): the captured step with the compiled cell step inside.

Evaluation: ``engine.evaluate`` (what every checkpoint runs) at the preset's ``eval_batch_size`` (and any
``--eval-batches``) on a prefix of the valid split, eager and with the compiled cell step, in arch-tokens/s; then
the projected seconds of one validation of the preset's ``valid_tokens`` beside the eager training seconds of one
checkpoint interval (``epochs / checkpoints`` of the training split).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_engine import batches, runs_of, sync  # noqa: E402

from nasbench_ptb.builder import data, presets  # noqa: E402
from nasbench_ptb.builder.build import device_name, resolve_device  # noqa: E402
from nasbench_ptb.builder.cell import cell_step  # noqa: E402
from nasbench_ptb.builder.engine import (AMP_MODES, MaskSampler, SlotGenotypes, autocast, evaluate,  # noqa: E402
                                         init_params, train_loss)
from nasbench_ptb.builder.optim import SlotSGD  # noqa: E402
from nasbench_ptb.builder.trainer import BpttStream, batchify  # noqa: E402
from nasbench_ptb.space import space  # noqa: E402

MODES = ("eager", "graph", "compile", "graph+compile")


class CompiledCell:
    """Discrete genotypes whose cell step runs through ``torch.compile`` (``run_rnn`` takes anything with
    ``slots`` and ``step``)."""

    def __init__(self, geno: SlotGenotypes, backend: str, mode: str | None):
        self.geno, self.slots, self.calls = geno, geno.slots, 0
        self.fn = torch.compile(cell_step, backend=backend, mode=mode, dynamic=False)

    def step(self, x, h, params, m_x, m_h):
        g = self.geno
        self.calls += 1
        return self.fn(x, h, params["W0"], params["Ws"], g.preds, g.ops, m_x, m_h, g.uniform)


class Bench:
    """The runs, windows and precision every mode shares."""

    def __init__(self, args, corpus, p, device):
        self.args, self.corpus, self.p, self.device = args, corpus, p, device
        self.genos, self.seeds = runs_of(space(args.space), args.slots)
        self.windows = batches(corpus, p, args.steps + 1, device)

    def cell(self, compiled: bool):
        geno = SlotGenotypes.of(self.genos, self.device)
        return CompiledCell(geno, self.args.compile_backend, self.args.compile_mode) if compiled else geno

    def fresh(self):
        p = self.p
        params = init_params(self.seeds, self.corpus.ntokens, p.hidden, self.genos[0].n, self.device)
        return params, SlotSGD(params, p.weight_decay, p.clip), MaskSampler(self.seeds, self.device)

    def draw(self, masks: MaskSampler) -> dict:
        return masks.draw(self.p.batch_size, self.corpus.ntokens, self.p.hidden, self.p.dropouts)

    def autocast(self):
        # autocast's weight cache must be off while a CUDA graph is captured; every mode runs the same way
        return autocast(self.device, self.p.amp, cache=False)

    def tokens_per_step(self) -> int:
        return len(self.seeds) * self.p.bptt * self.p.batch_size

    def timed(self, t0: float, step) -> tuple[np.ndarray, float, float]:
        """``step(x, y) -> objectives [A]`` over every window: (objectives [steps + 1, A], seconds from ``t0`` to
        the end of the first step, arch-tokens/s over the other steps)."""
        losses = []
        for s, (x, y) in enumerate(self.windows):
            if s == 1:
                sync(self.device)
                first, t0 = time.perf_counter() - t0, time.perf_counter()
            losses.append(step(x, y))
        sync(self.device)
        rate = self.args.steps * self.tokens_per_step() / (time.perf_counter() - t0)
        return torch.stack(losses).cpu().numpy(), first, rate

    def train_eager(self, compiled: bool) -> tuple[np.ndarray, float, float, int]:
        """(objectives [steps + 1, A], first-step seconds, arch-tokens/s over the other steps, Python calls of
        the compiled cell step)."""
        p, device = self.p, self.device
        params, opt, masks = self.fresh()
        geno, active = self.cell(compiled), torch.ones(len(self.seeds), dtype=torch.bool, device=device)
        h = torch.zeros(len(self.seeds), p.batch_size, p.hidden, device=device)

        def step(x, y):
            nonlocal h
            m = self.draw(masks)
            with self.autocast():
                obj, _, h = train_loss(params, geno, x, y, h.detach(), m, p.beta, p.alpha)
            obj.sum().backward()
            opt.step(p.lr, active)
            return obj.detach()

        return (*self.timed(time.perf_counter(), step), getattr(geno, "calls", 0))

    def train_graph(self, compiled: bool) -> tuple[np.ndarray, float, float, int]:
        """The same steps replayed from one captured CUDA graph; the first value is warm-up + capture seconds."""
        p, device = self.p, self.device
        t0 = time.perf_counter()
        params, opt, warm = self.fresh()
        geno, active = self.cell(compiled), torch.ones(len(self.seeds), dtype=torch.bool, device=device)
        initial = {k: v.detach().clone() for k, v in params.items()}
        x0, y0 = self.windows[0]
        static_x, static_y = x0.clone(), y0.clone()
        static_h = torch.zeros(len(self.seeds), p.batch_size, p.hidden, device=device)
        static_m = self.draw(warm)

        def step():
            with self.autocast():
                obj, _, h_out = train_loss(params, geno, static_x, static_y, static_h, static_m, p.beta, p.alpha)
            obj.sum().backward()
            opt.step(p.lr, active)
            return obj.detach(), h_out.detach()

        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up off the capture stream (compiles, if compiled)
            for _ in range(3):
                step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_obj, static_h_out = step()
        with torch.no_grad():  # capturing runs nothing; undo the warm-up's steps
            for k, v in params.items():
                v.copy_(initial[k])
        static_h.zero_()
        masks = MaskSampler(self.seeds, device)

        def replay(x, y):
            static_x.copy_(x)
            static_y.copy_(y)
            for k, m in self.draw(masks).items():
                if m is not None:
                    static_m[k].copy_(m)
            graph.replay()
            static_h.copy_(static_h_out)
            return static_obj.clone()

        return (*self.timed(t0, replay), getattr(geno, "calls", 0))

    def evaluation(self, batch: int, compiled: bool) -> tuple[np.ndarray, float]:
        """(validation loss per slot, arch-tokens/s) of ``engine.evaluate`` at ``batch`` (after one warm-up)."""
        p, device = self.p, self.device
        valid = batchify(self.corpus.valid[: self.args.eval_tokens], batch, device)
        params, _, _ = self.fresh()
        geno = self.cell(compiled)
        evaluate(params, geno, valid[: p.bptt + 1], p.bptt, p.amp)
        sync(device)
        t0 = time.perf_counter()
        ce = evaluate(params, geno, valid, p.bptt, p.amp)
        sync(device)
        return ce.cpu().numpy(), len(self.seeds) * (valid.shape[0] - 1) * batch / (time.perf_counter() - t0)


def window_lengths(p, train_tokens: int) -> dict:
    """Distinct window lengths of the preset's training stream over one epoch (one CUDA graph each)."""
    stream = BpttStream(p.bptt, "awd" if p.variable_bptt else "fixed", p.stream_seed, train_tokens // p.batch_size)
    counts = Counter()
    while True:
        _, seq, new_epoch = stream.next()
        if new_epoch:
            break
        counts[seq] += 1
    common = counts.most_common(1)[0]
    return {"windows": sum(counts.values()), "distinct_lengths": len(counts), "most_common": common[0],
            "most_common_share": common[1] / sum(counts.values())}


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def failure(exc: Exception) -> dict:
    """The record of a measurement that failed (out of memory, a capture or a compiler refusing)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()
        return {"error": "out of memory"}
    return {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}


def run(args, corpus, p, device, save=lambda report: None) -> dict:
    """Every selected measurement, eager first, then graphs, then the compiled modes (a compiler may take long);
    ``save`` is called with the report so far after each, so that a run stopped early still leaves its figures."""
    b = Bench(args, corpus, p, device)
    train_tokens = len(corpus.train[: p.train_tokens])
    report = {"device": device_name(device), "torch": torch.__version__, "preset": p.name, "space": args.space,
              "slots": len(b.seeds), "steps": args.steps, "amp": p.amp, "hidden": p.hidden,
              "batch_size": p.batch_size, "bptt": p.bptt, "compile_backend": args.compile_backend,
              "compile_mode": args.compile_mode, "train": {}, "eval": {},
              "stream": window_lengths(p, train_tokens)}
    tol = 2e-2 if p.amp == "bf16" else 1e-3
    losses_of, ce_of = {}, {}

    def train(mode: str) -> None:
        fn = b.train_graph if mode.startswith("graph") else b.train_eager
        try:
            losses, first, rate, calls = fn(compiled=mode.endswith("compile"))
        except Exception as exc:  # noqa: BLE001 - an OOM or a failed capture/compile is a figure, not the end
            report["train"][mode] = failure(exc)
            return
        row = {"arch_tokens_s": rate, "first_step_s": first, "finite": bool(np.isfinite(losses).all()),
               "compiled_step_calls": calls}
        losses_of[mode] = losses
        if mode != "eager" and "eager" in losses_of:
            row["max_rel_diff_to_eager"] = relative_difference(losses, losses_of["eager"])
            row["agrees"] = row["max_rel_diff_to_eager"] < tol
        report["train"][mode] = row
        agreeing = {m: r["arch_tokens_s"] for m, r in report["train"].items() if r.get("agrees", m == "eager")}
        report["fastest"] = max(agreeing, key=agreeing.get) if agreeing else None

    def evaluation(mode: str, batch: int) -> None:
        try:
            ce, rate = b.evaluation(batch, compiled=mode == "compile")
        except Exception as exc:  # noqa: BLE001
            report["eval"].setdefault(str(batch), {})[mode] = failure(exc)
            return
        row = {"arch_tokens_s": rate}
        report["eval"].setdefault(str(batch), {})[mode] = row
        ce_of[mode, batch] = ce
        if mode != "eager" and ("eager", batch) in ce_of:
            row["max_rel_diff_to_eager"] = relative_difference(ce, ce_of["eager", batch])

    batches_ = args.eval_batches or [p.eval_batch_size]
    tasks = [(train, ("eager",))] if "eager" in args.modes else []
    tasks += [(evaluation, ("eager", batch)) for batch in batches_ if "eager" in args.modes]
    tasks += [(train, (m,)) for m in MODES[1:] if m in args.modes]  # a failed capture may spoil what follows
    tasks += [(evaluation, ("compile", batch)) for batch in batches_ if "compile" in args.modes]
    for fn, task_args in tasks:
        fn(*task_args)
        eager = report["train"].get("eager", {}).get("arch_tokens_s")
        evals = report["eval"].get(str(p.eval_batch_size), {}).get("eager", {}).get("arch_tokens_s")
        if eager and evals:
            valid = len(corpus.valid[: p.valid_tokens])
            report["projected"] = {
                "train_s_per_checkpoint": len(b.seeds) * train_tokens * p.epochs / p.checkpoints / eager,
                "validation_s": len(b.seeds) * valid / evals, "valid_tokens": valid,
            }
        save(report)
    return report


def show(r: dict) -> None:
    print(f"device {r['device']} | torch {r['torch']} | preset {r['preset']} (hidden {r['hidden']}, batch "
          f"{r['batch_size']}, bptt {r['bptt']}, amp {r['amp']}) | {r['space']}, {r['slots']} slots x {r['steps']} "
          f"steps | compile: {r['compile_backend']} {r['compile_mode'] or ''}")
    for mode, row in r["train"].items():
        if "error" in row:
            print(f"train {mode:14s}: {row['error']}")
            continue
        diff = f"; max rel diff to eager {row['max_rel_diff_to_eager']:.1e}" if "max_rel_diff_to_eager" in row else ""
        print(f"train {mode:14s}: {row['arch_tokens_s']:12,.0f} arch-tokens/s (first step {row['first_step_s']:.1f} s"
              f"{diff}{'' if row['finite'] else '; NOT FINITE'}{'; DISAGREES' if row.get('agrees') is False else ''})")
    print(f"fastest that agrees with eager: {r.get('fastest')}")
    s = r["stream"]
    print(f"training stream: {s['windows']} windows per epoch of {s['distinct_lengths']} distinct lengths "
          f"(one CUDA graph each); the most common, {s['most_common']}, is {s['most_common_share']:.0%} of them")
    for batch, rows in r["eval"].items():
        for mode, row in rows.items():
            if "error" in row:
                print(f"eval batch {batch:>4s} {mode:8s}: {row['error']}")
                continue
            diff = f"; max rel diff to eager {row['max_rel_diff_to_eager']:.1e}" if "max_rel_diff_to_eager" in row \
                else ""
            print(f"eval batch {batch:>4s} {mode:8s}: {row['arch_tokens_s']:12,.0f} arch-tokens/s{diff}")
    if "projected" in r:
        pr = r["projected"]
        print(f"projected per checkpoint: training {pr['train_s_per_checkpoint']:.1f} s, validation of "
              f"{pr['valid_tokens']} tokens {pr['validation_s']:.1f} s "
              f"({pr['validation_s'] / (pr['validation_s'] + pr['train_s_per_checkpoint']):.0%} of the two)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpu")
    ap.add_argument("--space", default="2node")
    ap.add_argument("--slots", type=int, default=None, help="default: the space's runs, at most the preset's unit")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=None)
    ap.add_argument("--amp", choices=AMP_MODES, default=None, help="precision (default: the preset's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset value")
    ap.add_argument("--modes", default=None, help=f"comma-separated from {', '.join(MODES)} (default: all that "
                                                  "the device runs)")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (inductor only), e.g. max-autotune")
    ap.add_argument("--eval-tokens", type=int, default=20_000, help="valid-split prefix the evaluation runs on")
    ap.add_argument("--eval-batches", default=None, help="comma-separated (default: the preset's eval_batch_size)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    try:  # the same --set parsing and refusals as `nasbench_ptb build`
        p = presets.resolve(args.preset, args.set, {"amp": args.amp})
    except ValueError as exc:
        ap.error(str(exc))
    args.modes = args.modes.split(",") if args.modes else [m for m in MODES if device.type == "cuda" or
                                                           not m.startswith("graph")]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode {unknown[0]!r} (known: {', '.join(MODES)})")
    if device.type != "cuda" and any(m.startswith("graph") for m in args.modes):
        ap.error(f"CUDA graphs need a CUDA device; this one is {device.type}")
    args.eval_batches = [int(v) for v in args.eval_batches.split(",")] if args.eval_batches else None
    if args.steps < 1 or (args.slots is not None and args.slots < 1):
        ap.error("--steps and --slots must be at least 1")
    if args.eval_tokens < (p.bptt + 2) * max(args.eval_batches or [p.eval_batch_size]):
        ap.error(f"--eval-tokens {args.eval_tokens} is too few: at least bptt + 2 rows of the largest eval batch")
    if args.compile_mode and args.compile_backend != "inductor":
        ap.error(f"--compile-mode applies to the inductor backend only, not {args.compile_backend!r}")
    sp = space(args.space)
    args.slots = args.slots or min(sp.size * p.seeds, p.slots_per_unit)
    def save(report: dict) -> None:
        if args.json:
            tmp = args.json + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(report, fh, indent=1)
            os.replace(tmp, args.json)

    show(run(args, data.load(args.data), p, device, save))
    return 0


if __name__ == "__main__":
    sys.exit(main())
