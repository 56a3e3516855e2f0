"""Standalone training protocol for a group of runs trained together as slots (AWD-LSTM/DARTS style).

Per mini-batch: variable bptt from the shared stream, lr scaled by seq_len/bptt, fresh per-run dropout masks,
CE + TAR, per-run gradient clipping, SGD (→ ASGD per run with the non-monotone rule). At each checkpoint
(evenly spaced fractions of the budget): per-run training loss, validation ppl on the evaluation weights,
divergence check, best-checkpoint copy. At the end: test ppl of each run at its best-validation checkpoint.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from nasbench_ptb.schema import Status
from nasbench_ptb.space import Genotype

from .engine import MaskSampler, SlotGenotypes, evaluate, init_params, train_loss
from .optim import SlotSGD
from .presets import Preset


@dataclass(frozen=True)
class RunCurves:
    """Results of ``A`` runs trained together: ``[A, C]`` curves and ``[A]`` finals (NaN where not valid)."""

    epochs: np.ndarray  # [C] epochs over the training slice at each checkpoint
    train_loss: np.ndarray
    valid_ppl: np.ndarray
    seconds: np.ndarray  # cumulative wall-clock seconds per run (unit time shared evenly by its runs)
    test_ppl: np.ndarray
    best_epoch: np.ndarray
    status: np.ndarray


def batchify(tokens: np.ndarray, batch: int, device: torch.device) -> torch.Tensor:
    """``[L, batch]`` columns of the token stream (remainder dropped), as AWD-LSTM does."""
    L = len(tokens) // batch
    if L < 2:
        raise ValueError(f"{len(tokens)} tokens are too few for batch size {batch}")
    return torch.as_tensor(tokens[: L * batch].reshape(batch, L).T.copy(), device=device)


class BpttStream:
    """The shared sequence of (start, seq_len) windows over ``L`` rows; identical for every run of a preset."""

    def __init__(self, p: Preset, rows: int):
        self.p, self.rows = p, rows
        self.rng = np.random.RandomState(p.stream_seed)
        self.epoch, self.i = 0, 0

    def next(self) -> tuple[int, int, bool]:
        """Returns (start, seq_len, new_epoch)."""
        new_epoch = False
        if self.i >= self.rows - 2:
            self.epoch, self.i, new_epoch = self.epoch + 1, 0, True
        if self.p.variable_bptt:
            bptt = self.p.bptt if self.rng.random_sample() < 0.95 else self.p.bptt / 2.0
            seq = min(max(5, int(self.rng.normal(bptt, 5))), self.p.bptt + 20)
        else:
            seq = self.p.bptt
        seq = min(seq, self.rows - 1 - self.i)
        start = self.i
        self.i += seq
        return start, seq, new_epoch

    @property
    def position(self) -> float:
        return self.epoch + self.i / (self.rows - 1)


def train_runs(
    corpus,
    genotypes: Sequence[Genotype],
    seeds: Sequence[int],
    p: Preset,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> RunCurves:
    """Train run ``a`` = (``genotypes[a]``, ``seeds[a]``) for every ``a`` together; see the module docstring."""
    device = torch.device(device)
    A, V, C = len(genotypes), corpus.ntokens, p.checkpoints
    train = batchify(corpus.train[: p.train_tokens], p.batch_size, device)
    valid = batchify(corpus.valid[: p.valid_tokens], p.eval_batch_size, device)
    test = batchify(corpus.test[: p.test_tokens], p.eval_batch_size, device)
    geno = SlotGenotypes.of(genotypes, device)
    params = init_params(seeds, V, p.hidden, genotypes[0].n, device)
    opt = SlotSGD(params, p.weight_decay, p.clip)
    masks = MaskSampler(seeds, device)
    stream = BpttStream(p, train.shape[0])
    targets_epochs = [(c + 1) * p.epochs / C for c in range(C)]

    out = {k: np.full((A, C), np.nan) for k in ("train_loss", "valid_ppl", "seconds")}
    epochs = np.zeros(C)
    alive = torch.ones(A, dtype=torch.bool, device=device)
    history: list[list[float]] = [[] for _ in range(A)]
    best_val = np.full(A, np.inf)
    best_epoch = np.full(A, np.nan)
    best = {k: v.detach().clone() for k, v in params.items()}
    hidden = torch.zeros(A, p.batch_size, p.hidden, device=device)
    loss_sum = torch.zeros(A, dtype=torch.float64, device=device)
    loss_tokens = 0
    elapsed, t0 = 0.0, time.perf_counter()

    for c, target in enumerate(targets_epochs):
        while stream.position < target - 1e-9:
            start, seq, new_epoch = stream.next()
            if new_epoch:
                hidden = torch.zeros_like(hidden)
            m = masks.draw(p.batch_size, V, p.hidden, p.dropouts)
            objective, ce, hidden = train_loss(
                params, geno, train[start : start + seq], train[start + 1 : start + 1 + seq],
                torch.where(alive.view(-1, 1, 1), hidden.detach(), 0.0), m, p.beta, p.alpha,
            )
            torch.where(alive, objective, torch.zeros_like(objective)).sum().backward()
            opt.step(p.lr * seq / p.bptt, alive)
            loss_sum += ce.detach().double() * seq
            loss_tokens += seq
            if on_batch is not None:
                on_batch(seq * p.batch_size * A)
        # checkpoint c
        epochs[c] = stream.position
        mean_loss = (loss_sum / max(loss_tokens, 1)).cpu().numpy()
        loss_sum.zero_()
        loss_tokens = 0
        finite = torch.tensor(np.isfinite(mean_loss), device=device)
        for v in params.values():
            finite &= torch.isfinite(v.detach()).flatten(1).all(1)
        newly = alive & ~finite
        if bool(newly.any()):
            with torch.no_grad():
                for v in params.values():
                    v[newly] = 0.0  # keep a dead slot's arithmetic finite; it no longer trains
            alive &= ~newly
        live = alive.cpu().numpy()
        eval_params = opt.eval_params()
        val = evaluate(eval_params, geno, valid, p.bptt).cpu().numpy().astype(np.float64)
        val_ppl = np.where(live & np.isfinite(val), np.exp(np.minimum(val, 700.0)), np.nan)
        live &= np.isfinite(val_ppl)
        alive &= torch.as_tensor(live, device=device)
        elapsed += time.perf_counter() - t0
        t0 = time.perf_counter()
        out["train_loss"][:, c] = np.where(live, mean_loss, np.nan)
        out["valid_ppl"][:, c] = val_ppl
        out["seconds"][:, c] = np.where(live, elapsed / A, np.nan)
        improved = live & (val_ppl < best_val)
        if improved.any():
            mask = torch.as_tensor(improved, device=device)
            with torch.no_grad():
                for k in best:
                    best[k][mask] = eval_params[k][mask]
            best_val[improved] = val_ppl[improved]
            best_epoch[improved] = epochs[c]
        if p.asgd:
            switch = np.zeros(A, dtype=bool)
            for a in np.flatnonzero(live):
                h = history[a]
                if len(h) > p.nonmono and math.log(val_ppl[a]) > min(h[: -p.nonmono]):
                    switch[a] = True
                h.append(math.log(val_ppl[a]))
            opt.switch(torch.as_tensor(switch, device=device))

    live = alive.cpu().numpy()
    test_ce = evaluate(best, geno, test, p.bptt).cpu().numpy().astype(np.float64)
    test_ppl = np.where(live & np.isfinite(best_val), np.exp(np.minimum(test_ce, 700.0)), np.nan)
    status = np.where(live, Status.OK, Status.DIVERGED).astype(np.int8)
    best_epoch = np.where(live, best_epoch, np.nan)
    return RunCurves(epochs, out["train_loss"], out["valid_ppl"], out["seconds"], test_ppl, best_epoch, status)
