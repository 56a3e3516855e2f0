"""The statistics every summary, analysis, evaluation and record shares — one definition each: ranks (NaN last,
ties at the best rank), the mean over ok seeds (never imputed), the sample spread (ddof 1, none for one value),
the final validation values and the standalone ranking."""
from __future__ import annotations

import numpy as np

from .schema import Status, Table


def worst_last(values: np.ndarray) -> np.ndarray:
    """NaN (diverged) becomes +inf: ranked last, tied with each other."""
    return np.where(np.isnan(values), np.inf, values)


def ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, lower is better, ties share the best rank; NaN last."""
    filled = worst_last(values)
    return np.searchsorted(np.sort(filled), filled, side="left") + 1


def final_valid(table: Table) -> np.ndarray:
    """``[N, S]`` validation ppl at the last checkpoint; NaN where the run is not ``ok``."""
    sa = table.standalone
    return np.where(sa.status == Status.OK, sa.valid_ppl[:, :, -1], np.nan)


def sample_std(values) -> float:
    """The spread of a few seeds: the sample standard deviation (ddof 1), NaN for fewer than two values — one
    seed has no spread to report (say n instead). The one definition every record and report uses."""
    v = np.asarray(values, dtype=float)
    return float(v.std(ddof=1)) if v.size >= 2 else float("nan")


def mean_over_ok(values: np.ndarray, status: np.ndarray) -> np.ndarray:
    """Mean over the ``ok`` seeds of each architecture; NaN where none is ``ok`` (never imputed)."""
    ok = status == Status.OK
    total = np.where(ok, values, 0.0).sum(axis=1)
    count = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def attempted(table: Table) -> np.ndarray:
    """``[N]`` architectures with at least one standalone run that is not ``missing``."""
    return (table.standalone.status != Status.MISSING).any(axis=1)


def standalone_final(table: Table) -> np.ndarray:
    """Mean final validation ppl over ok seeds per architecture (NaN: none ok)."""
    return mean_over_ok(final_valid(table), table.standalone.status)


def ranking(table: Table) -> np.ndarray:
    """Architecture ids, best first, by mean final validation ppl; those without an ok run come last."""
    mean = mean_over_ok(final_valid(table), table.standalone.status)
    return np.argsort(np.where(np.isnan(mean), np.inf, mean), kind="stable")


def proxy_names() -> tuple[str, ...]:
    """The zero-cost proxies a table stores (``/proxies``), in declaration order: the per-seed ones, then the
    parameter count."""
    from . import schema

    return (*schema.columns("proxies", "NS"), "params")


def proxy_mean(table: Table, name: str) -> np.ndarray:
    """``[N]`` a proxy's mean over its seeds (NaN where no seed gave a finite value); ``params`` as stored."""
    values = getattr(table.proxies, name)
    if values.ndim == 1:
        return values.astype(float)
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        return np.where(finite.any(axis=1), np.where(finite, values, 0.0).sum(axis=1) / finite.sum(axis=1), np.nan)
