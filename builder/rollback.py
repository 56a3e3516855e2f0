"""DARTS's rollback (preset ``rollbacks``): a run whose training blows up returns to its best checkpoint.

Shared by standalone runs (:mod:`builder.standalone`) and weight-sharing super-nets (:mod:`builder.ws`): the
trainer calls ``on_diverge`` with the dying slots (``SlotTrainer.kill``), :meth:`Rollbacks.revive` restores those
with rollbacks left — weights = the evaluation weights saved at the best checkpoint (the averaged ones once
switched, which the optimiser also averages from), ASGD switch and averaging count of then; the trainer zeroes
their hidden state — and the client re-validates them. What "best" means is the client's: the lowest validation
ppl of a run, the lowest mean validation ppl over architectures of a super-net (the quantity its ASGD switch reads).
"""
from __future__ import annotations

import numpy as np
import torch

from .optim import SlotSGD


class Rollbacks:
    """Per slot (run or super-net): the switch and averaging count at its best checkpoint, how often it was rolled
    back, and where."""

    def __init__(self, A: int, C: int, device: torch.device):
        self.best_switched = torch.zeros(A, dtype=torch.bool, device=device)
        self.best_avg_steps = torch.zeros(A, device=device)
        self.used = np.zeros(A, dtype=np.int64)
        self.at = np.zeros((A, C))  # 1 at the checkpoint that recorded a rollback
        self.since = np.zeros(A, dtype=bool)  # rolled back since the last checkpoint

    def remember(self, improved: torch.Tensor, opt: SlotSGD) -> None:
        """Keep the optimiser's switch and count for the runs whose best checkpoint this is."""
        self.best_switched[improved] = opt.switched[improved]
        self.best_avg_steps[improved] = opt.avg_steps[improved]

    def revive(self, dying: np.ndarray, limit: int, opt: SlotSGD, best: dict) -> np.ndarray:
        """Return the dying runs that have rollbacks left to their best checkpoint; which ones it did."""
        ok = dying & (self.used < limit)
        if ok.any():
            opt.restore(torch.as_tensor(ok, device=self.best_switched.device), best, self.best_switched,
                        self.best_avg_steps)
            self.used[ok] += 1
            self.since |= ok
        return ok

    def state(self) -> dict:
        """What resuming needs (``since`` is empty after every checkpoint, when states are saved)."""
        return {"best_switched": self.best_switched, "best_avg_steps": self.best_avg_steps, "used": self.used,
                "at": self.at}

    @torch.no_grad()
    def load_state(self, state: dict) -> None:
        """Continue from :meth:`state`'s record; a state saved before rollbacks existed holds none (its runs were
        never rolled back, and without rollbacks it never needs the best switch)."""
        if not state:
            return
        self.best_switched.copy_(torch.as_tensor(state["best_switched"]))
        self.best_avg_steps.copy_(torch.as_tensor(state["best_avg_steps"]))
        self.used[...], self.at[...] = state["used"], state["at"]


class BestCheckpoint:
    """Per slot: the evaluation weights at its best checkpoint so far and that checkpoint's score (lower is
    better); the initialisation, scored +inf, until a checkpoint. For a client that keeps them only to roll back
    (super-nets; standalone runs keep their own, also to test at)."""

    def __init__(self, params: dict):
        self.weights = {k: v.detach().clone() for k, v in params.items()}
        self.score = np.full(next(iter(params.values())).shape[0], np.inf)

    @torch.no_grad()
    def update(self, score: np.ndarray, live: np.ndarray, eval_params: dict) -> np.ndarray:
        """Keep the live slots whose ``score`` beats their best; returns which ones did."""
        improved = live & (score < self.score)
        if improved.any():
            mask = torch.as_tensor(improved, device=next(iter(self.weights.values())).device)
            for k in self.weights:
                self.weights[k][mask] = eval_params[k][mask]
            self.score[improved] = score[improved]
        return improved

    def state(self) -> dict:
        return {"weights": self.weights, "score": self.score}

    @torch.no_grad()
    def load_state(self, state: dict) -> None:
        """Continue from :meth:`state`'s record; a state saved before super-nets rolled back holds none."""
        if not state:
            return
        for k, v in self.weights.items():
            v.copy_(torch.as_tensor(state[f"weights/{k}"]))
        self.score[...] = state["score"]
