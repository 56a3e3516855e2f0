"""How well each zero-cost proxy of a table (``/proxies``) ranks its architectures: against the standalone ranking
at the last checkpoint or at any earlier epoch, against itself across seeds (numpy + scipy).

A proxy is oriented as its paper scores it (higher predicts better), so it is compared as ``-proxy`` with the
perplexity (lower is better): a positive tau-b means the proxy agrees with training. The parameter count is
constant in the DARTS cell spaces, so its rank correlations are NaN (undefined), reported as such.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from .analyses import tau_b, top_k_overlap
from .schema import Table
from .stats import attempted, proxy_mean, proxy_names, standalone_final, worst_last


@dataclass(frozen=True)
class ProxyRow:
    """One proxy against the standalone ranking of the architectures trained standalone (``n`` of them)."""

    proxy: str
    tau_b: float  # Kendall tau-b of the seed-mean proxy vs the mean final validation ppl
    spearman: float
    top_overlap: float  # fraction of the proxy's top 10 % (at least 1 cell) among the standalone top 10 %
    seed_tau: float  # mean tau-b between each pair of proxy seeds (over all architectures); NaN for one seed
    n: int


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    finite = a[np.isfinite(a)]
    if finite.size < 2 or np.all(finite == finite[0]):
        return float("nan")  # a constant proxy ranks nothing
    return float(spearmanr(worst_last(a), worst_last(b)).statistic)


def proxy_agreement(table: Table, epoch: float | None = None, against: Table | None = None) -> list[ProxyRow]:
    """One :class:`ProxyRow` per proxy against the standalone ranking (at ``epoch``: the table as it stood then,
    :func:`nasbench_ptb.fidelity.at_epoch`); ``against``: another table of the space whose standalone ranking
    the proxies are judged by instead (e.g. a higher fidelity). [] for a table without proxies or standalone runs.

    Raises:
        ValueError: ``against`` is a table of another space.
    """
    if against is not None:
        if against.space.name != table.space.name:
            raise ValueError(f"the proxies are of {table.space.name}, the table to judge them by is {against.space.name}")
        table = dataclasses.replace(against, proxies=table.proxies)
    if table.proxies is None or table.standalone is None:
        return []
    if epoch is not None:
        from .fidelity import at_epoch

        table = at_epoch(table, epoch)
    mask = attempted(table)
    ppl = standalone_final(table)[mask]
    k = max(1, int(round(0.1 * mask.sum())))
    rows = []
    for name in proxy_names():
        score = -proxy_mean(table, name)[mask]
        values = getattr(table.proxies, name)
        pairs = [tau_b(-values[:, i], -values[:, j]) for i in range(values.shape[1] if values.ndim == 2 else 0)
                 for j in range(i + 1, values.shape[1])]
        finite_pairs = [t for t in pairs if np.isfinite(t)]
        finite = score[np.isfinite(score)]
        constant = finite.size < 2 or bool(np.all(finite == finite[0]))  # ranks nothing: no top k either
        rows.append(ProxyRow(name, tau_b(score, ppl), _spearman(score, ppl),
                             float("nan") if constant else top_k_overlap(score, ppl, k),
                             float(np.mean(finite_pairs)) if finite_pairs else float("nan"), int(mask.sum())))
    return rows


def proxy_by_epoch(table: Table) -> dict[str, list[float]]:
    """Per proxy, its tau-b against the standalone ranking at each standalone checkpoint
    (``table.standalone.epochs``): how the proxy compares with every fidelity of the table."""
    if table.proxies is None or table.standalone is None:
        return {}
    out: dict[str, list[float]] = {name: [] for name in proxy_names()}
    for e in table.standalone.epochs:
        for row in proxy_agreement(table, float(e)):
            out[row.proxy].append(row.tau_b)
    return out


@dataclass(frozen=True)
class ProxySummary:
    """A table's proxies against its standalone ranking, as ``info``, ``report`` and ``GET /proxies`` show it:
    how they were computed (the table's ``proxies`` attribute), each proxy's :class:`ProxyRow` at the final
    checkpoint and against a reference table's ranking, and its tau-b at every standalone checkpoint."""

    seeds: list[int]
    seconds: dict  # per proxy, over the whole table (every architecture × seed)
    total_seconds: float
    device: str | None  # where they were computed (None: not recorded)
    final: list[ProxyRow]
    epochs: list[float]  # the standalone checkpoints
    by_epoch: dict[str, list[float]]  # per proxy (params, constant, left out): tau-b at each checkpoint
    reference: list[ProxyRow]  # against ``reference``'s standalone ranking; [] without one


def proxy_summary(table: Table, reference: Table | None = None) -> ProxySummary | None:
    """The :class:`ProxySummary` of ``table`` (``reference``: another table of the space to judge the proxies
    by too); None without proxies or standalone runs.

    Raises:
        ValueError: ``reference`` is a table of another space.
    """
    rows = proxy_agreement(table)
    if not rows:
        return None
    how = table.attrs.get("proxies", {})
    return ProxySummary([int(s) for s in table.proxies.seeds], how.get("seconds", {}),
                        how.get("total_seconds", float("nan")), how.get("device"), rows,
                        [float(e) for e in table.standalone.epochs],
                        {k: v for k, v in proxy_by_epoch(table).items() if k != "params"},
                        proxy_agreement(table, against=reference) if reference is not None else [])


def agreement_lines(rows: list[ProxyRow], seconds: dict | None = None) -> list[str]:
    """The rows as a text table (``nasbench_ptb proxies`` and ``info``): seconds spent on the whole table when
    known, tau-b, Spearman, top-10 % overlap, seed-to-seed tau-b and n."""
    seconds = seconds or {}

    def fmt(v, spec: str) -> str:  # spec: "+6.2f"; undefined values as a dash of the same width
        width = int("".join(c for c in spec.split(".")[0] if c.isdigit()))
        return f"{'–':>{width}}" if v is None or not np.isfinite(v) else f"{v:{spec}}"

    out = [f"{'proxy':<11} {'seconds':>8} {'tau-b':>6} {'spearman':>8} {'top-10 %':>8} {'seed tau':>8}   n"]
    for r in rows:
        out.append(f"{r.proxy:<11} {fmt(seconds.get(r.proxy), '8.1f')} {fmt(r.tau_b, '+6.2f')} "
                   f"{fmt(r.spearman, '+8.2f')} {fmt(r.top_overlap, '8.2f')} {fmt(r.seed_tau, '+8.2f')} {r.n:3d}")
    return out
