"""Slot engine vs a plain per-model PyTorch loop: arch-tokens/s on the same runs and the same config.

    python benchmarks/bench_engine.py --preset cpu --space 2node --slots 16 --steps 8 [--device auto]

Both sides train the same ``slots`` (architecture, seed) runs for ``steps`` mini-batches of real PTB with the
preset's hidden size, batch, bptt, dropouts, lr, clipping and TAR. The baseline is what one would write per
model: an ``nn.Module`` cell, ``F.cross_entropy`` over the logits, ``clip_grad_norm_`` and ``torch.optim.SGD``,
one model after another. The engine trains them as slots of one batched step. Runs unchanged on CUDA.
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

from builder import data, presets  # noqa: E402
from builder.build import device_name, resolve_device  # noqa: E402
from builder.engine import MaskSampler, SlotGenotypes, init_params, train_loss  # noqa: E402
from builder.optim import SlotSGD  # noqa: E402
from nasbench_ptb.space import space  # noqa: E402

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
        obj, _, h = train_loss(params, geno, x, y, h.detach(), m, p.beta, p.alpha)
        obj.sum().backward()
        opt.step(p.lr, active)
    sync(device)
    return len(genos) * steps * p.bptt * p.batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--space", default="2node")
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    p = presets.get(args.preset)
    corpus = data.load(args.data)
    sp = space(args.space)
    genos = [sp.from_id(i % sp.size) for i in range(args.slots)]
    seeds = [i // sp.size for i in range(args.slots)]
    name = device_name(device)
    print(f"device {name} | torch {torch.__version__} | preset {p.name} (hidden {p.hidden}, batch {p.batch_size}, "
          f"bptt {p.bptt}) | {args.space}, {args.slots} runs x {args.steps} steps")
    plain = run_plain(genos, seeds, corpus, p, args.steps, device)
    engine = run_engine(genos, seeds, corpus, p, args.steps, device)
    single = run_engine(genos[:1], seeds[:1], corpus, p, args.steps, device)
    print(f"plain per-model loop : {plain:10.0f} arch-tokens/s")
    print(f"slot engine, 1 slot  : {single:10.0f} arch-tokens/s")
    print(f"slot engine, {args.slots:2d} slots: {engine:10.0f} arch-tokens/s")
    print(f"ratio engine / plain : {engine / plain:10.2f}x")


if __name__ == "__main__":
    main()
