"""How well each zero-cost proxy of a table (``/proxies``) ranks its architectures: against the standalone ranking
at the last checkpoint or at any earlier epoch, against itself across seeds (numpy + scipy).

A proxy is oriented as its paper scores it (higher predicts better), so it is compared as ``-proxy`` with the
perplexity (lower is better): a positive tau-b means the proxy agrees with training. The parameter count is
constant in the DARTS cell spaces, so its rank correlations are NaN (undefined), reported as such.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from . import schema
from .analyses import tau_b, top_k_overlap
from .schema import Table
from .stats import attempted, standalone_final, worst_last


@dataclass(frozen=True)
class ProxyRow:
    """One proxy against the standalone ranking of the architectures trained standalone (``n`` of them)."""

    proxy: str
    tau_b: float  # Kendall tau-b of the seed-mean proxy vs the mean final validation ppl
    spearman: float
    top_overlap: float  # fraction of the proxy's top 10 % (at least 1 cell) among the standalone top 10 %
    seed_tau: float  # mean tau-b between each pair of proxy seeds (over all architectures); NaN for one seed
    n: int


def names() -> tuple[str, ...]:
    """The proxies a table stores, in declaration order: the per-seed ones, then the parameter count."""
    return (*schema.columns("proxies", "NS"), "params")


def proxy_mean(table: Table, name: str) -> np.ndarray:
    """``[N]`` the proxy's mean over its seeds (NaN where no seed gave a finite value); ``params`` as stored."""
    values = getattr(table.proxies, name)
    if values.ndim == 1:
        return values.astype(float)
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        return np.where(finite.any(axis=1), np.where(finite, values, 0.0).sum(axis=1) / finite.sum(axis=1), np.nan)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    finite = a[np.isfinite(a)]
    if finite.size < 2 or np.all(finite == finite[0]):
        return float("nan")  # a constant proxy ranks nothing
    return float(spearmanr(worst_last(a), worst_last(b)).statistic)


def proxy_agreement(table: Table, epoch: float | None = None) -> list[ProxyRow]:
    """One :class:`ProxyRow` per proxy against the standalone ranking (at ``epoch``: the table as it stood then,
    :func:`nasbench_ptb.fidelity.at_epoch`); [] for a table without proxies or standalone runs."""
    if table.proxies is None or table.standalone is None:
        return []
    if epoch is not None:
        from .fidelity import at_epoch

        table = at_epoch(table, epoch)
    mask = attempted(table)
    ppl = standalone_final(table)[mask]
    k = max(1, int(round(0.1 * mask.sum())))
    rows = []
    for name in names():
        score = -proxy_mean(table, name)[mask]
        values = getattr(table.proxies, name)
        pairs = [tau_b(-values[:, i], -values[:, j]) for i in range(values.shape[1] if values.ndim == 2 else 0)
                 for j in range(i + 1, values.shape[1])]
        finite_pairs = [t for t in pairs if np.isfinite(t)]
        rows.append(ProxyRow(name, tau_b(score, ppl), _spearman(score, ppl), top_k_overlap(score, ppl, k),
                             float(np.mean(finite_pairs)) if finite_pairs else float("nan"), int(mask.sum())))
    return rows


def proxy_by_epoch(table: Table) -> dict[str, list[float]]:
    """Per proxy, its tau-b against the standalone ranking at each standalone checkpoint
    (``table.standalone.epochs``): how the proxy compares with every fidelity of the table."""
    if table.proxies is None or table.standalone is None:
        return {}
    out: dict[str, list[float]] = {name: [] for name in names()}
    for e in table.standalone.epochs:
        for row in proxy_agreement(table, float(e)):
            out[row.proxy].append(row.tau_b)
    return out
