"""Standalone runs: ``A`` (architecture, seed) runs trained together as slots, a client of the shared trainer.

At each checkpoint: validation ppl of every run on its evaluation weights (averaged after an ASGD switch), runs
whose ppl is no longer finite marked diverged, and a copy of each run's weights at its best validation so far.
At the end: each run's test ppl at its best-validation checkpoint.

With the preset's ``rollbacks`` > 0 a run whose loss, weights or validation stop being finite is first returned
to its best checkpoint, as DARTS's train.py does on a NaN loss: its weights become the evaluation weights saved
there (the averaged ones once switched, which its optimiser also averages from), its ASGD switch and averaging
count those of then, its hidden state zero; it trains on from where the unit is (the runs of a unit share the
data stream, so the lost epochs are not repeated as DARTS repeats them) with its dropout masks drawn on. Before
any checkpoint, its best is its initialisation. Its checkpoint records ``rollback`` 1 and the ppl of the restored
weights; the interval's training loss, not finite, is NaN. Past ``rollbacks`` times the run is diverged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from nasbench_ptb.schema import Status
from nasbench_ptb.space import Genotype

from .engine import SlotGenotypes, evaluate
from .presets import Preset
from .rollback import Rollbacks
from .trainer import SlotTrainer, batchify, checkpoint_loop, to_ppl

if TYPE_CHECKING:
    from .resume import Resume


@dataclass(frozen=True)
class RunCurves:
    """Results of ``A`` runs trained together: ``[A, C]`` curves and ``[A]`` finals (NaN where not valid) — the
    per-run datasets of the table's /standalone group (``nasbench_ptb.schema.per_run``)."""

    epochs: np.ndarray  # [C] epochs over the training slice at each checkpoint
    train_loss: np.ndarray
    valid_ppl: np.ndarray
    seconds: np.ndarray  # cumulative wall-clock seconds per run (unit time shared evenly by its runs)
    test_ppl: np.ndarray
    best_epoch: np.ndarray
    status: np.ndarray
    rollback: np.ndarray  # [A, C] 1 where the run was returned to its best checkpoint before this one, else 0


def train_runs(
    corpus,
    genotypes: Sequence[Genotype],
    seeds: Sequence[int],
    p: Preset,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
    resume: "Resume | None" = None,
) -> RunCurves:
    """Train run ``a`` = (``genotypes[a]``, ``seeds[a]``) for every ``a`` together; see the module docstring.

    ``resume``: continue from and save to a unit state (:mod:`builder.resume`; the curves so far and the best
    weights are part of it).

    Raises:
        builder.resume.Paused: ``resume``'s deadline came first (the state is saved).
    """
    device = torch.device(device)
    schedule = p.schedule("standalone")
    A, C = len(genotypes), len(schedule)
    valid = batchify(corpus.valid[: p.valid_tokens], p.eval_batch_size, device)
    test = batchify(corpus.test[: p.test_tokens], p.eval_batch_size, device)
    geno = SlotGenotypes.of(genotypes, device)
    tr = SlotTrainer(corpus, seeds, genotypes[0].n, p, device, "awd" if p.variable_bptt else "fixed")
    valid_ppl = np.full((A, C), np.nan)
    best_val, best_epoch = np.full(A, np.inf), np.full(A, np.nan)
    best = {k: v.detach().clone() for k, v in tr.params.items()}  # the initialisation until a checkpoint
    rb = Rollbacks(A, C, device)
    if p.rollbacks > 0:
        tr.on_diverge = lambda dying: rb.revive(dying, p.rollbacks, tr.opt, best)

    def validate(c: int, eval_params: dict, live: np.ndarray) -> np.ndarray:
        val_ppl = to_ppl(evaluate(eval_params, geno, valid, p.bptt, p.amp).cpu().numpy(), live)
        while True:
            tr.kill(~np.isfinite(val_ppl))
            live = tr.alive.cpu().numpy()
            again = live & ~np.isfinite(val_ppl)  # rolled back just now: validate the restored weights
            if not again.any():
                break
            redo = to_ppl(evaluate(tr.opt.eval_params(), geno, valid, p.bptt, p.amp).cpu().numpy(), live)
            val_ppl = np.where(again, redo, val_ppl)
        valid_ppl[:, c] = np.where(live, val_ppl, np.nan)
        rb.at[:, c], rb.since[:] = rb.since, False
        improved = live & (val_ppl < best_val)
        if improved.any():
            mask = torch.as_tensor(improved, device=device)
            with torch.no_grad():  # (a run rolled back here is not better than its best: eval_params holds)
                for k in best:
                    best[k][mask] = eval_params[k][mask]
            rb.remember(mask, tr.opt)
            best_val[improved] = val_ppl[improved]
            best_epoch[improved] = tr.stream.position
        return np.log(val_ppl)

    keep = {"valid_ppl": valid_ppl, "best_val": best_val, "best_epoch": best_epoch, "best": best, "rollbacks": rb}
    prog = checkpoint_loop(tr, schedule, lambda: geno, validate, p.asgd, on_batch, resume, keep)
    live = tr.alive.cpu().numpy()
    test_ppl = to_ppl(evaluate(best, geno, test, p.bptt, p.amp).cpu().numpy(), live & np.isfinite(best_val))
    status = np.where(live, Status.OK, Status.DIVERGED).astype(np.int8)
    return RunCurves(prog.epochs, prog.train_loss, valid_ppl, prog.seconds, test_ppl,
                     np.where(live, best_epoch, np.nan), status, np.where(np.isfinite(valid_ppl), rb.at, np.nan))
