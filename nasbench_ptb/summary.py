"""Summaries of a table for ``nasbench_ptb info``: coverage, fidelity and the best architectures."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .schema import Status, Table


@dataclass(frozen=True)
class Coverage:
    runs: int
    ok: int
    missing: int
    diverged: int
    archs_with_ok_run: int

    @property
    def full(self) -> bool:
        return self.missing == 0


def coverage(table: Table) -> Coverage:
    st = table.standalone.status
    return Coverage(
        runs=int(st.size), ok=int((st == Status.OK).sum()), missing=int((st == Status.MISSING).sum()),
        diverged=int((st == Status.DIVERGED).sum()), archs_with_ok_run=int((st == Status.OK).any(axis=1).sum()),
    )


def final_valid(table: Table) -> np.ndarray:
    """``[N, S]`` validation ppl at the last checkpoint; NaN where the run is not ``ok``."""
    sa = table.standalone
    return np.where(sa.status == Status.OK, sa.valid_ppl[:, :, -1], np.nan)


def mean_over_ok(values: np.ndarray, status: np.ndarray) -> np.ndarray:
    """Mean over the ``ok`` seeds of each architecture; NaN where none is ``ok`` (never imputed)."""
    ok = status == Status.OK
    total = np.where(ok, values, 0.0).sum(axis=1)
    count = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def ranking(table: Table) -> np.ndarray:
    """Architecture ids, best first, by mean final validation ppl; those without an ok run come last."""
    mean = mean_over_ok(final_valid(table), table.standalone.status)
    return np.argsort(np.where(np.isnan(mean), np.inf, mean), kind="stable")


def best(table: Table, k: int = 5) -> list[dict]:
    sa = table.standalone
    valid = mean_over_ok(final_valid(table), sa.status)
    test = mean_over_ok(sa.test_ppl, sa.status)
    rows = []
    for a in ranking(table)[:k]:
        if np.isnan(valid[a]):
            break
        g = table.space.from_id(int(a))
        rows.append({"id": int(a), "genotype": g.canonical, "hash": g.hash, "valid_ppl": float(valid[a]),
                     "test_ppl": float(test[a]), "seeds_ok": int((sa.status[a] == Status.OK).sum())})
    return rows
