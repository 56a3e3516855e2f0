"""Evaluating every architecture under one super-net's shared weights: batched slots vs one by one.

    python benchmarks/bench_ws_eval.py --space 3node --preset cpu --valid-tokens 4000 [--device auto]

Both sides compute the validation loss of all architectures of the space with the same (randomly initialised)
shared weights on the same prefix of the validation split; the batched side broadcasts the weights over
architecture slots (``builder.ws.evaluate_all``), the other calls the evaluator once per architecture. Prints
seconds for each, the ratio, and the projection to the whole validation split (73,760 tokens).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nasbench_ptb.builder import data, presets  # noqa: E402
from nasbench_ptb.builder.build import device_name, resolve_device  # noqa: E402
from nasbench_ptb.builder.engine import SlotGenotypes, evaluate, init_params  # noqa: E402
from nasbench_ptb.builder.trainer import batchify  # noqa: E402
from nasbench_ptb.builder.ws import evaluate_all  # noqa: E402
from nasbench_ptb.space import space  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="3node")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--valid-tokens", type=int, default=4000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    p = presets.get(args.preset)
    corpus = data.load(args.data)
    sp = space(args.space)
    valid = batchify(corpus.valid[: args.valid_tokens], p.eval_batch_size, device)
    params = {k: v.detach() for k, v in init_params([0], corpus.ntokens, p.hidden, sp.n, device).items()}
    genos = list(sp)
    all_genos = SlotGenotypes.of(genos, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    evaluate_all(params, 0, SlotGenotypes.of(genos[:2], device), valid[:12], p.bptt)  # warm-up
    sync()
    t0 = time.perf_counter()
    batched = evaluate_all(params, 0, all_genos, valid, p.bptt)
    sync()
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = np.array([evaluate(params, SlotGenotypes.of([g], device), valid, p.bptt).item() for g in genos])
    sync()
    t_single = time.perf_counter() - t0
    assert np.allclose(batched, single, rtol=1e-4), "batched and one-by-one evaluations disagree"
    tokens = (valid.shape[0] - 1) * valid.shape[1]
    full = len(corpus.valid) / tokens
    name = device_name(device)
    print(f"device {name} | torch {torch.__version__} | {sp.name}: {sp.size} architectures | preset {p.name} "
          f"(hidden {p.hidden}, eval batch {p.eval_batch_size}) | {tokens} validation tokens")
    print(f"batched (shared weights over slots): {t_batched:8.2f} s  ({sp.size * tokens / t_batched:,.0f} arch-tokens/s)")
    print(f"one by one                         : {t_single:8.2f} s  ({sp.size * tokens / t_single:,.0f} arch-tokens/s)")
    print(f"ratio one-by-one / batched         : {t_single / t_batched:8.2f}x")
    print(f"projected, whole validation split  : batched {t_batched * full / 60:.1f} min, "
          f"one by one {t_single * full / 60:.1f} min")


if __name__ == "__main__":
    main()
