"""Epochs as a fidelity: a table as it stood after ``e`` epochs of training.

:func:`at_epoch` cuts every curve at the last checkpoint at or before ``e`` and answers as if training had
stopped there: the final validation ppl is that checkpoint's; a run is ok when it was still finite there (a run
that diverged later was ok at ``e``); the best epoch is the best checkpoint up to ``e``; the test ppl exists only
where that best checkpoint is the one the run was tested at (the table tests once, at the overall best), else
NaN — never imputed. Super-nets are cut at their own last checkpoint at or before ``e``; their test ppl (measured
after the last epoch) exists only at the full fidelity.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import schema
from .errors import FidelityError
from .schema import Standalone, Status, Table, WeightSharing

TOLERANCE = 0.01
"""Epochs by which a recorded checkpoint may pass the epoch asked for and still be "at" it: a table records where
the training stream stood at each checkpoint, up to one mini-batch (≈ 0.002 epochs of PTB) past its nominal
position, so epoch 0.5 means the checkpoint recorded at 0.50003."""


def checkpoint_of(epochs: np.ndarray, epoch: float) -> int:
    """Index of the last checkpoint at or before ``epoch`` (within :data:`TOLERANCE`).

    Raises:
        FidelityError: ``epoch`` is not a finite number or lies before the first checkpoint.
    """
    try:
        e = float(epoch)
    except (TypeError, ValueError):
        e = float("nan")
    if not np.isfinite(e):
        raise FidelityError(f"epoch {epoch!r} is not a finite number of epochs")
    epochs = np.asarray(epochs, dtype=float)
    c = int(np.searchsorted(epochs, e + TOLERANCE, side="right")) - 1
    if c < 0:
        raise FidelityError(f"epoch {e:g} is before the table's first checkpoint (epoch {epochs[0]:.3g}); its "
                            f"checkpoints are at epochs {', '.join(f'{x:.3g}' for x in epochs)}")
    return c


def _standalone(sa: Standalone, c: int) -> Standalone:
    valid = sa.valid_ppl[:, :, : c + 1]
    trained = sa.status != Status.MISSING
    finite_now = np.isfinite(valid[:, :, -1])
    status = np.where(~trained, Status.MISSING, np.where(finite_now, Status.OK, Status.DIVERGED)).astype(np.int8)
    ok = status == Status.OK
    # the best checkpoint up to c (ties: the earliest, as the trainer keeps the first strictly better one)
    masked = np.where(np.isfinite(valid), valid, np.inf)
    best_c = np.argmin(masked, axis=2)
    best_epoch = np.where(ok, sa.epochs[best_c], np.nan)
    tested_here = np.isclose(best_epoch, sa.best_epoch, rtol=0, atol=1e-6)
    # every curve cut at c; every other per-run final (measured at the best checkpoint, as the test ppl) kept
    # only where that checkpoint is still the best one
    curves = {k: np.where(trained[:, :, None], getattr(sa, k)[:, :, : c + 1], np.nan)
              for k in schema.columns("standalone", "NSC")}
    finals = {k: np.where(ok & tested_here, getattr(sa, k), np.nan) for k in schema.columns("standalone", "NS")
              if k not in ("status", "best_epoch")}
    return dataclasses.replace(sa, epochs=sa.epochs[: c + 1], **curves, **finals, best_epoch=best_epoch,
                               status=status)


def _ws(ws: WeightSharing, epoch: float) -> WeightSharing | None:
    if not np.isfinite(ws.epochs).any():  # no super-net trained yet (a partial build): nothing to cut
        return ws
    if epoch + TOLERANCE < ws.epochs[0]:
        return None
    c = checkpoint_of(ws.epochs, epoch)
    if c == len(ws.epochs) - 1:
        return ws
    alive = np.isfinite(ws.valid_ppl[:, c]).any(axis=1)
    status = np.where(ws.status == Status.MISSING, Status.MISSING,
                      np.where(alive, Status.OK, Status.DIVERGED)).astype(np.int8)
    # every per-checkpoint dataset cut at c; the per-architecture finals (measured after the last epoch) do not
    # exist yet; counts are kept
    layout = schema.layout("ws")
    cut = {k: getattr(ws, k)[(slice(None),) * dims.index("C") + (slice(0, c + 1),)]
           for k, (dims, _) in layout.items() if "C" in dims}
    finals = {k: np.full_like(getattr(ws, k), np.nan) for k, (dims, integer) in layout.items()
              if dims == "SN" and not integer}
    return dataclasses.replace(ws, **cut, **finals, status=status)


def at_epoch(table: Table, epoch: float) -> Table:
    """The table as it stood after ``epoch`` epochs (see the module docstring); the table itself at or past its
    last checkpoint.

    Raises:
        FidelityError: ``epoch`` is not a number or lies before the first standalone checkpoint.
    """
    sa = table.standalone
    if sa is None:
        raise FidelityError("this table has no standalone runs to cut at an epoch")
    c = checkpoint_of(sa.epochs, epoch)
    if c == len(sa.epochs) - 1:
        return table
    e = float(sa.epochs[c])
    return dataclasses.replace(
        table, standalone=_standalone(sa, c),
        ws=_ws(table.ws, e) if table.ws is not None else None,
        ws_subspace=_ws(table.ws_subspace, e) if table.ws_subspace is not None else None,
        attrs={**table.attrs, "fidelity_epoch": e},
    )
