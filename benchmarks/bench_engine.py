"""Slot engine vs a plain per-model PyTorch loop: arch-tokens/s on the same runs and the same config.

    python benchmarks/bench_engine.py --preset cpu --space 2node --slots 16 --steps 8 [--device auto] [--amp off]

Both sides train the same ``slots`` (architecture, seed) runs for ``steps`` mini-batches of real PTB with the
preset's hidden size, batch, bptt, dropouts, lr, clipping and TAR, under the same precision (``--amp``, default
the preset's). The baseline is what one would write per model: an ``nn.Module`` cell, ``F.cross_entropy`` over
the logits, ``clip_grad_norm_`` and ``torch.optim.SGD``, one model after another. The engine trains them as slots
of one batched step. Runs unchanged on CUDA.

It also prints the engine's matmul rate against a matmul ceiling measured in the same run (a large square
product in the training precision): the FLOPs counted are the tied decoder's (6·H·V per arch-token: forward,
grad of input, grad of weight) and the cell's (6·2H·2H + 6·n·H·2H per arch-token).

On CPU, where the fused decoder runs, it also measures in the same run: the engine with the reference decoder
the first CPU tables were built with (``reference_decoder.py``: the "before" column of a decoder change), the
fused decoder alone, and the limit that the decoder's shape allows: its three skinny GEMMs per chunk
(``[c, H+1]·[H+1, V]``, ``[c, V]·[V, H+1]``, ``[H+1, c]·[c, V]``) timed alone, which a 1024³ ceiling overstates.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nasbench_ptb.builder import data, presets  # noqa: E402
from nasbench_ptb.builder import engine as engine_module  # noqa: E402
from nasbench_ptb.builder.build import device_name, resolve_device  # noqa: E402
from nasbench_ptb.builder.decoder import CHUNK, tied_cross_entropy  # noqa: E402
from nasbench_ptb.builder.engine import AMP_MODES, MaskSampler, SlotGenotypes, autocast, init_params, train_loss  # noqa: E402
from nasbench_ptb.builder.optim import SlotSGD  # noqa: E402
from nasbench_ptb.space import space  # noqa: E402
from reference_decoder import reference_cross_entropy  # noqa: E402

ACTS = (torch.tanh, torch.relu, torch.sigmoid, lambda t: t)


class PlainCellLM(nn.Module):
    """One DARTS-cell language model written the usual way (the baseline)."""

    def __init__(self, geno, ntokens: int, hidden: int, p):
        super().__init__()
        self.geno, self.p, self.H = geno, p, hidden
        self.encoder = nn.Embedding(ntokens, hidden)
        self.W0 = nn.Parameter(torch.empty(2 * hidden, 2 * hidden).uniform_(-0.04, 0.04))
        self.Ws = nn.ParameterList(
            [nn.Parameter(torch.empty(hidden, 2 * hidden).uniform_(-0.04, 0.04)) for _ in geno.nodes]
        )
        self.bias = nn.Parameter(torch.zeros(ntokens))
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)

    def forward(self, tokens, h):
        p, H = self.p, self.H
        T, B = tokens.shape
        w = self.encoder.weight
        if p.dropout_embedding:
            w = w * torch.bernoulli(torch.full((w.shape[0], 1), 1 - p.dropout_embedding, device=w.device)) / (
                1 - p.dropout_embedding)
        x = F.embedding(tokens, w)
        lock = lambda rate, t: t * torch.bernoulli(torch.full((1, B, H), 1 - rate, device=t.device)) / (1 - rate)  # noqa: E731
        x = lock(p.dropout_input, x) if p.dropout_input else x
        mx = torch.bernoulli(torch.full((B, H), 1 - p.dropout_x, device=x.device)) / (1 - p.dropout_x)
        mh = torch.bernoulli(torch.full((B, H), 1 - p.dropout_hidden, device=x.device)) / (1 - p.dropout_hidden)
        outs = []
        for t in range(T):
            c0, h0 = torch.cat([x[t] * mx, h * mh], -1).mm(self.W0).chunk(2, -1)
            states = [h + torch.sigmoid(c0) * (torch.tanh(h0) - h)]
            for k, (op, pred) in enumerate(zip(self.geno.ops, self.geno.preds)):
                c, hh = (states[pred] * mh).mm(self.Ws[k]).chunk(2, -1)
                states.append(states[pred] + torch.sigmoid(c) * (ACTS[op](hh) - states[pred]))
            h = torch.stack(states[1:]).mean(0)
            outs.append(h)
        raw = torch.stack(outs)
        out = lock(p.dropout_output, raw) if p.dropout_output else raw
        logits = F.linear(out.view(T * B, H), self.encoder.weight, self.bias)
        return logits, raw, h


def batches(corpus, p, steps, device):
    B = p.batch_size
    data_ = torch.as_tensor(corpus.train[: B * (steps * p.bptt + 1)].reshape(B, -1).T.copy(), device=device)
    return [(data_[s * p.bptt:(s + 1) * p.bptt], data_[s * p.bptt + 1:(s + 1) * p.bptt + 1]) for s in range(steps)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_plain(genos, seeds, corpus, p, steps, device) -> float:
    bs = batches(corpus, p, steps + 1, device)
    total = 0.0
    for geno, seed in zip(genos, seeds):
        torch.manual_seed(seed)
        model = PlainCellLM(geno, corpus.ntokens, p.hidden, p).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        h = torch.zeros(p.batch_size, p.hidden, device=device)
        for s, (x, y) in enumerate(bs):
            if s == 1:  # the first step warms up
                sync(device)
                t0 = time.perf_counter()
            with autocast(device, p.amp):
                logits, raw, h = model(x, h.detach())
                loss = F.cross_entropy(logits, y.reshape(-1)) + p.beta * (raw[1:] - raw[:-1]).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), p.clip)
            opt.step()
        sync(device)
        total += time.perf_counter() - t0
    return len(genos) * steps * p.bptt * p.batch_size / total


def run_engine(genos, seeds, corpus, p, steps, device) -> float:
    bs = batches(corpus, p, steps + 1, device)
    params = init_params(seeds, corpus.ntokens, p.hidden, genos[0].n, device)
    geno = SlotGenotypes.of(genos, device)
    opt = SlotSGD(params, p.weight_decay, p.clip)
    masks = MaskSampler(seeds, device)
    active = torch.ones(len(seeds), dtype=torch.bool, device=device)
    h = torch.zeros(len(seeds), p.batch_size, p.hidden, device=device)
    for s, (x, y) in enumerate(bs):
        if s == 1:
            sync(device)
            t0 = time.perf_counter()
        m = masks.draw(p.batch_size, corpus.ntokens, p.hidden, p.dropouts)
        with autocast(device, p.amp):
            obj, _, h = train_loss(params, geno, x, y, h.detach(), m, p.beta, p.alpha)
        obj.sum().backward()
        opt.step(p.lr, active)
    sync(device)
    return len(genos) * steps * p.bptt * p.batch_size / (time.perf_counter() - t0)


def run_engine_reference(genos, seeds, corpus, p, steps, device) -> float:
    """The engine with the reference (first-build) fused decoder swapped in."""
    saved = engine_module.tied_cross_entropy
    engine_module.tied_cross_entropy = reference_cross_entropy
    try:
        return run_engine(genos, seeds, corpus, p, steps, device)
    finally:
        engine_module.tied_cross_entropy = saved


def _median_seconds(fn, reps: int = 7) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[reps // 2]


def decoder_rates(slots: int, tokens: int, hidden: int, ntokens: int, amp: str) -> tuple[float, float]:
    """(fused decoder forward + backward alone, its three skinny GEMMs alone) in tokens/s on CPU, at the
    training shapes (``tokens`` per slot per mini-batch) and in the training precision."""
    g = torch.Generator().manual_seed(0)
    out = (torch.randn(slots, tokens, hidden, generator=g) * 0.5).requires_grad_()
    weight = (torch.randn(slots, ntokens, hidden, generator=g) * 0.1).requires_grad_()
    bias = torch.zeros(slots, ntokens, requires_grad=True)
    targets = torch.randint(0, ntokens, (tokens,), generator=g)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float32
    decoder = slots * tokens / _median_seconds(
        lambda: tied_cross_entropy(out, weight, bias, targets, dtype=dtype).sum().backward(), reps=3)
    c, k = min(CHUNK, tokens), hidden + 1  # the logits GEMM in fp32, the two gradient GEMMs in the GEMM precision
    x1, wt = torch.randn(c, k), torch.randn(k, ntokens)
    x1g, e, w1 = x1.to(dtype), torch.randn(c, ntokens, dtype=dtype), torch.randn(ntokens, k, dtype=dtype)
    logits = torch.empty(c, ntokens)
    gemms = c / _median_seconds(lambda: (torch.mm(x1, wt, out=logits), torch.mm(e, w1), torch.mm(x1g.t(), e)), 15)
    return decoder, gemms


def runs_of(sp, n: int) -> tuple[list, list[int]]:
    """The first ``n`` runs of a space in unit order: every architecture with seed 0, then seed 1, ..."""
    return [sp.from_id(i % sp.size) for i in range(n)], [i // sp.size for i in range(n)]


def matmul_ceiling(device, amp: str, n: int | None = None) -> float:
    """FLOP/s of an ``n``-cube matrix product in the training precision (median of 5 after 2 warm-ups);
    ``n`` defaults to 8192 on CUDA, 1024 on CPU."""
    n = n or (8192 if device.type == "cuda" else 1024)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    times = []
    for i in range(7):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / sorted(times)[len(times) // 2]


def flops_per_arch_token(hidden: int, ntokens: int, nodes: int) -> tuple[float, float]:
    """(decoder, cell) training FLOPs per arch-token: forward + both backward products of each matmul."""
    return 6.0 * hidden * ntokens, 6.0 * (2 * hidden) * (2 * hidden) + 6.0 * nodes * hidden * 2 * hidden


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--space", default="2node")
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=None)
    ap.add_argument("--amp", choices=AMP_MODES, default=None, help="precision (default: the preset's)")
    ap.add_argument("--skip-plain", action="store_true", help="engine only (the plain loop is slow on big presets)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    p = presets.get(args.preset)
    if args.amp is not None:
        p = presets.override(p, {"amp": args.amp})
    corpus = data.load(args.data)
    sp = space(args.space)
    genos, seeds = runs_of(sp, args.slots)
    name = device_name(device)
    print(f"device {name} | torch {torch.__version__} | preset {p.name} (hidden {p.hidden}, batch {p.batch_size}, "
          f"bptt {p.bptt}, amp {p.amp}) | {args.space}, {args.slots} runs x {args.steps} steps", flush=True)
    plain = None if args.skip_plain else run_plain(genos, seeds, corpus, p, args.steps, device)
    on_cpu = device.type == "cpu"
    reference = run_engine_reference(genos, seeds, corpus, p, args.steps, device) if on_cpu and p.amp == "off" \
        else None
    engine = run_engine(genos, seeds, corpus, p, args.steps, device)
    single = run_engine(genos[:1], seeds[:1], corpus, p, args.steps, device)
    ceiling = matmul_ceiling(device, p.amp)
    dec, cell = flops_per_arch_token(p.hidden, corpus.ntokens, sp.n)
    if plain is not None:
        print(f"plain per-model loop : {plain:12.0f} arch-tokens/s")
    print(f"slot engine, 1 slot  : {single:12.0f} arch-tokens/s")
    if reference is not None:
        print(f"slot engine, {args.slots:3d} slots, reference decoder: {reference:12.0f} arch-tokens/s")
    print(f"slot engine, {args.slots:3d} slots: {engine:12.0f} arch-tokens/s")
    if plain is not None:
        print(f"ratio engine / plain : {engine / plain:12.2f}x")
    if reference is not None:
        print(f"ratio engine / engine with the reference decoder: {engine / reference:.2f}x")
    if on_cpu:
        dec_rate, gemm_rate = decoder_rates(args.slots, p.batch_size * p.bptt, p.hidden, corpus.ntokens, p.amp)
        print(f"fused decoder alone  : {dec_rate:12.0f} tokens/s; its skinny GEMMs alone (the shape's limit): "
              f"{gemm_rate:.0f} tokens/s; decoder at {dec_rate / gemm_rate:.0%} of that limit")
    print(f"matmul ceiling (measured, {'bf16' if p.amp == 'bf16' else 'fp32'}): {ceiling / 1e12:.2f} TFLOP/s; "
          f"FLOPs per arch-token: decoder {dec:.3g} + cell {cell:.3g}")
    print(f"engine matmul rate   : decoder {engine * dec / 1e12:.3f} TFLOP/s = {engine * dec / ceiling:.1%} of the "
          f"ceiling; decoder + cell {engine * (dec + cell) / ceiling:.1%}")


if __name__ == "__main__":
    main()
