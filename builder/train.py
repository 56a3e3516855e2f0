"""Standalone training protocol for a group of runs trained together as slots (AWD-LSTM/DARTS style).

Per mini-batch: variable bptt from the shared stream, lr scaled by seq_len/bptt, fresh per-run dropout masks,
CE + TAR, per-run gradient clipping, SGD (→ ASGD per run with the non-monotone rule). At each checkpoint
(evenly spaced fractions of the budget): per-run training loss, validation ppl on the evaluation weights,
divergence check, best-checkpoint copy. At the end: test ppl of each run at its best-validation checkpoint.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from nasbench_ptb.schema import Status
from nasbench_ptb.space import Genotype

from .engine import MaskSampler, SlotGenotypes, autocast, evaluate, init_params, train_loss
from .optim import SlotSGD
from .presets import Preset

PROTOCOL_VERSION = 1
"""What a run computes: bump it whenever a change to training or evaluation would change a run's numbers beyond
float rounding (a new loss term, another lr rule, a different evaluation); kept units of another version are then
refused instead of being mixed with new ones. Refactors that keep every run equal within float tolerance (the
slot engine's contract, e.g. a faster decoder) do not bump it."""


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
    """The shared sequence of (start, seq_len) windows over ``L`` rows; identical for every run of a preset.

    ``mode``: ``awd`` (bptt, or bptt/2 with p = 0.05, then N(·, 5), min 5, max bptt + 20), ``halving``
    (bptt, or bptt // 2 with p = 0.05: the paper's weight-sharing schedule) or ``fixed``.
    """

    def __init__(self, bptt: int, mode: str, seed: int, rows: int):
        if mode not in ("awd", "halving", "fixed"):
            raise ValueError(f"unknown bptt mode {mode!r} (awd, halving, fixed)")
        self.bptt, self.mode, self.rows = bptt, mode, rows
        self.rng = np.random.RandomState(seed)
        self.epoch, self.i = 0, 0

    def next(self) -> tuple[int, int, bool]:
        """Returns (start, seq_len, new_epoch)."""
        new_epoch = False
        if self.i >= self.rows - 2:
            self.epoch, self.i, new_epoch = self.epoch + 1, 0, True
        if self.mode == "awd":
            bptt = self.bptt if self.rng.random_sample() < 0.95 else self.bptt / 2.0
            seq = min(max(5, int(self.rng.normal(bptt, 5))), self.bptt + 20)
        elif self.mode == "halving":
            seq = self.bptt if self.rng.random_sample() < 0.95 else self.bptt // 2
        else:
            seq = self.bptt
        seq = min(seq, self.rows - 1 - self.i)
        start = self.i
        self.i += seq
        return start, seq, new_epoch

    @property
    def position(self) -> float:
        return self.epoch + self.i / (self.rows - 1)


def to_ppl(ce: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Perplexity where the run is live and the loss finite, else NaN."""
    ce = np.asarray(ce, dtype=np.float64)
    ok = live & np.isfinite(ce)
    return np.where(ok, np.exp(np.minimum(np.where(ok, ce, 0.0), 700.0)), np.nan)


class SlotTrainer:
    """Training state of ``A`` slots — weights, optimiser, masks, hidden state, which are alive — and the
    mini-batch loop. Standalone runs and weight-sharing super-nets differ only in the genotypes fed per batch.
    """

    def __init__(self, corpus, seeds: Sequence[int], nodes: int, p: Preset, device: torch.device,
                 bptt_mode: str, hidden_clip: float = 0.0):
        self.p, self.device, self.A, self.V = p, device, len(seeds), corpus.ntokens
        self.train = batchify(corpus.train[: p.train_tokens], p.batch_size, device)
        self.params = init_params(seeds, self.V, p.hidden, nodes, device)
        self.opt = SlotSGD(self.params, p.weight_decay, p.clip)
        self.masks = MaskSampler(seeds, device)
        self.stream = BpttStream(p.bptt, bptt_mode, p.stream_seed, self.train.shape[0])
        self.hidden_clip = hidden_clip
        self.alive = torch.ones(self.A, dtype=torch.bool, device=device)
        self.hidden = torch.zeros(self.A, p.batch_size, p.hidden, device=device)
        self.loss_sum = torch.zeros(self.A, dtype=torch.float64, device=device)
        self.loss_tokens = 0
        self.history: list[list[float]] = [[] for _ in range(self.A)]

    def train_until(self, epoch: float, genotypes: Callable[[], SlotGenotypes],
                    on_batch: Callable[[int], None] | None = None) -> None:
        """Mini-batches until the stream reaches ``epoch``; ``genotypes()`` gives each batch's cells."""
        p = self.p
        while self.stream.position < epoch - 1e-9:
            start, seq, new_epoch = self.stream.next()
            h = torch.zeros_like(self.hidden) if new_epoch else self.hidden.detach()
            h = torch.where(self.alive.view(-1, 1, 1), h, 0.0)
            if self.hidden_clip > 0:  # per-sample L2 norm of the carried state (the paper's WS training)
                h = h * (self.hidden_clip / (h.norm(dim=-1, keepdim=True) + 1e-12)).clamp(max=1.0)
            m = self.masks.draw(p.batch_size, self.V, p.hidden, p.dropouts)
            with autocast(self.device, p.amp):
                objective, ce, self.hidden = train_loss(
                    self.params, genotypes(), self.train[start : start + seq],
                    self.train[start + 1 : start + 1 + seq], h, m, p.beta, p.alpha,
                )
            torch.where(self.alive, objective, torch.zeros_like(objective)).sum().backward()
            self.opt.step(p.lr * seq / p.bptt, self.alive)
            self.loss_sum += ce.detach().double() * seq
            self.loss_tokens += seq
            if on_batch is not None:
                on_batch(seq * p.batch_size * self.A)

    def end_interval(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean training loss per slot since the last call, and which slots are still alive.

        A slot whose loss or weights are no longer finite is marked dead: its weights are zeroed so its
        arithmetic stays finite, and it never trains again.
        """
        mean_loss = (self.loss_sum / max(self.loss_tokens, 1)).cpu().numpy()
        self.loss_sum.zero_()
        self.loss_tokens = 0
        finite = torch.as_tensor(np.isfinite(mean_loss), device=self.device)
        for v in self.params.values():
            finite &= torch.isfinite(v.detach()).flatten(1).all(1)
        self.kill(~finite)
        live = self.alive.cpu().numpy()
        return np.where(live, mean_loss, np.nan), live

    def kill(self, mask) -> None:
        mask = torch.as_tensor(mask, device=self.device) & self.alive
        if bool(mask.any()):
            with torch.no_grad():
                for v in self.params.values():
                    v[mask] = 0.0
            self.alive &= ~mask

    def nonmono_switch(self, valid_loss: np.ndarray, live: np.ndarray) -> None:
        """AWD-LSTM's rule per slot: average from now on when the validation loss exceeds the best of all but
        the last ``nonmono`` values (more than ``nonmono`` logged)."""
        switch = np.zeros(self.A, dtype=bool)
        for a in np.flatnonzero(live):
            h = self.history[a]
            if len(h) > self.p.nonmono and valid_loss[a] > min(h[: -self.p.nonmono]):
                switch[a] = True
            h.append(float(valid_loss[a]))
        self.opt.switch(torch.as_tensor(switch, device=self.device))


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
    A, C = len(genotypes), p.checkpoints
    valid = batchify(corpus.valid[: p.valid_tokens], p.eval_batch_size, device)
    test = batchify(corpus.test[: p.test_tokens], p.eval_batch_size, device)
    geno = SlotGenotypes.of(genotypes, device)
    tr = SlotTrainer(corpus, seeds, genotypes[0].n, p, device, "awd" if p.variable_bptt else "fixed")

    out = {k: np.full((A, C), np.nan) for k in ("train_loss", "valid_ppl", "seconds")}
    epochs = np.zeros(C)
    best_val = np.full(A, np.inf)
    best_epoch = np.full(A, np.nan)
    best = {k: v.detach().clone() for k, v in tr.params.items()}
    elapsed, t0 = 0.0, time.perf_counter()
    for c in range(C):
        tr.train_until((c + 1) * p.epochs / C, lambda: geno, on_batch)
        epochs[c] = tr.stream.position
        out["train_loss"][:, c], live = tr.end_interval()
        eval_params = tr.opt.eval_params()
        val_ppl = to_ppl(evaluate(eval_params, geno, valid, p.bptt, p.amp).cpu().numpy(), live)
        tr.kill(~np.isfinite(val_ppl))
        live = tr.alive.cpu().numpy()
        elapsed += time.perf_counter() - t0
        t0 = time.perf_counter()
        out["valid_ppl"][:, c] = np.where(live, val_ppl, np.nan)
        out["train_loss"][:, c] = np.where(live, out["train_loss"][:, c], np.nan)
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
            tr.nonmono_switch(np.log(val_ppl), live)

    live = tr.alive.cpu().numpy()
    test_ppl = to_ppl(evaluate(best, geno, test, p.bptt, p.amp).cpu().numpy(), live & np.isfinite(best_val))
    status = np.where(live, Status.OK, Status.DIVERGED).astype(np.int8)
    return RunCurves(epochs, out["train_loss"], out["valid_ppl"], out["seconds"], test_ppl,
                     np.where(live, best_epoch, np.nan), status)
