"""Summaries of a table for ``nasbench_ptb info``: coverage, fidelity and the best architectures."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .analyses import seed_pair_taus, sharing_amount
from .schema import Status, Table
from .stats import (attempted, final_valid, mean_over_ok, ranking, ranks, sample_std,  # noqa: F401 (re-exported)
                    standalone_final, worst_last)


@dataclass(frozen=True)
class Coverage:
    """How many standalone runs a table holds, by status."""
    runs: int
    ok: int
    missing: int
    diverged: int
    archs_with_ok_run: int
    rolled_back: int = 0  # runs returned to their best checkpoint at least once (preset rollbacks)

    @property
    def full(self) -> bool:
        """Whether every run was trained."""
        return self.missing == 0


def coverage(table: Table) -> Coverage:
    """The standalone runs of ``table`` counted by status (all zero without a standalone part)."""
    if table.standalone is None:
        return Coverage(0, 0, 0, 0, 0)
    st = table.standalone.status
    return Coverage(
        runs=int(st.size), ok=int((st == Status.OK).sum()), missing=int((st == Status.MISSING).sum()),
        diverged=int((st == Status.DIVERGED).sum()), archs_with_ok_run=int((st == Status.OK).any(axis=1).sum()),
        rolled_back=int((np.nan_to_num(table.standalone.rollback) > 0).any(axis=2).sum()),
    )


def best(table: Table, k: int = 5, min_n: int = 1) -> list[dict]:
    """The ``k`` best architectures by mean final validation ppl among those with at least ``min_n`` ok seeds (a
    one-seed mean is noisier, so an unfiltered top list favours one-seed cells: the winner's curse)."""
    sa = table.standalone
    valid = mean_over_ok(final_valid(table), sa.status)
    test = mean_over_ok(sa.test_ppl, sa.status)
    n_ok = (sa.status == Status.OK).sum(axis=1)
    rows = []
    for a in ranking(table):
        if len(rows) == k or np.isnan(valid[a]):
            break
        if n_ok[a] < min_n:
            continue
        g = table.space.from_id(int(a))
        rows.append({"id": int(a), "genotype": g.canonical, "hash": g.hash, "valid_ppl": float(valid[a]),
                     "test_ppl": float(test[a]), "seeds_ok": int(n_ok[a])})
    return rows


@dataclass(frozen=True)
class IsoClass:
    """The cells of one iso class (renumberings of one function: :attr:`Genotype.iso_hash`) pooled: their ok runs
    are replicates of the same function, so a class's mean rests on more runs than any member's."""

    iso_hash: str
    ids: tuple[int, ...]  # its cells, ascending
    genotypes: tuple[str, ...]
    n: int  # ok runs pooled over the cells
    valid_ppl: float  # mean final validation ppl over those runs; NaN for none
    valid_ppl_std: float  # sample std (ddof 1) over those runs; NaN for fewer than two
    test_ppl: float  # mean test ppl over those runs
    rank: int | None  # 1 = best, among the classes with at least min_n runs; None below it or without a run


def iso_classes(table: Table, min_n: int = 1) -> list[IsoClass]:
    """Every iso class of the table's space with its cells' ok runs pooled (each run weighs the same), best
    first; classes with fewer than ``min_n`` runs (or none) follow, unranked."""
    sa = table.standalone
    ok = sa.status == Status.OK
    valid, test = final_valid(table), sa.test_ppl
    groups: dict[str, list[int]] = {}
    for g in table.space:
        groups.setdefault(g.iso_hash, []).append(g.id)
    out = []
    for iso, ids in groups.items():
        runs = ok[ids]
        v, t = valid[ids][runs], test[ids][runs]
        out.append(IsoClass(iso, tuple(ids), tuple(table.space.from_id(i).canonical for i in ids), int(runs.sum()),
                            float(v.mean()) if v.size else float("nan"), sample_std(v),
                            float(t.mean()) if t.size else float("nan"), None))
    ranked = sorted((c for c in out if c.n >= max(min_n, 1)), key=lambda c: (c.valid_ppl, c.ids))
    rest = sorted((c for c in out if c.n < max(min_n, 1)), key=lambda c: c.ids)
    values = np.array([c.valid_ppl for c in ranked])
    return [dataclasses.replace(c, rank=int(r)) for c, r in zip(ranked, ranks(values))] + rest


@dataclass(frozen=True)
class SeedTau:
    """One super-net's ranking against the standalone one: tau-b, its p-value and how many architectures."""
    seed: int
    status: int
    tau: float  # Kendall tau-b, WS final valid ppl vs standalone mean final valid ppl
    pvalue: float
    archs: int  # architectures compared
    rollback_epochs: tuple[float, ...] = ()  # checkpoints before which it blew up and was returned to its best

    def weights_from(self, epochs: np.ndarray) -> float | None:
        """When the last interval blew up too: the last checkpoint reached without a blow-up, which the final
        weights (its best checkpoint by then) are at most as trained as; None when the last interval trained."""
        last = round(float(epochs[-1]), 2)
        if last not in self.rollback_epochs:
            return None
        clean = [round(float(e), 2) for e in epochs if round(float(e), 2) not in self.rollback_epochs]
        return clean[-1] if clean else 0.0


def _rollback_epochs(ws, k: int) -> tuple[float, ...]:
    """The checkpoints (in epochs) whose interval super-net ``k`` blew up in and was rolled back (none recorded by
    tables from before rollbacks)."""
    if ws.rollback is None:
        return ()
    return tuple(round(float(e), 2) for e in ws.epochs[np.asarray(ws.rollback[k]) == 1])


def ws_vs_standalone_tau(table: Table) -> list[SeedTau]:
    """Kendall tau-b between each WS seed's final ranking and the standalone ranking (mean over ok seeds).

    Architectures without any attempted standalone run are left out; diverged values rank last (tied).
    """
    from scipy.stats import kendalltau

    sa, ws = table.standalone, table.ws
    if sa is None or ws is None:
        return []
    mask = attempted(table)
    ref = worst_last(standalone_final(table))[mask]
    rows = []
    for k, seed in enumerate(ws.seeds):
        if ws.status[k] != Status.OK or mask.sum() < 2:
            rows.append(SeedTau(int(seed), int(ws.status[k]), float("nan"), float("nan"), int(mask.sum()),
                                _rollback_epochs(ws, k)))
            continue
        res = kendalltau(worst_last(ws.valid_ppl[k, -1])[mask], ref, variant="b")
        rows.append(SeedTau(int(seed), int(ws.status[k]), float(res.statistic), float(res.pvalue), int(mask.sum()),
                            _rollback_epochs(ws, k)))
    return rows


def seed_taus(table: Table) -> list[dict]:
    """Seed-to-seed tau-b of the standalone rankings: over every architecture with both seeds, and over each
    sample the table records."""
    if table.standalone is None:
        return []
    rows = []
    for smp in [None, *table.attrs.get("samples", [])]:
        ids = None if smp is None else smp["ids"]
        for pair, (tau, n) in seed_pair_taus(table, ids).items():
            rows.append({"pair": pair, "sample": smp and {k: smp[k] for k in ("n", "seed", "method")},
                         "tau": tau, "archs": n})
    return rows


def sharing(table: Table) -> dict | None:
    """The amount-of-sharing comparison of a table with ``/ws_subspace`` (taus only where standalone exists)."""
    sub = table.ws_subspace
    if sub is None:
        return None
    out = {"ids": [int(i) for i in sub.archs], "seeds": [int(s) for s in sub.seeds],
           "ok": int((sub.status == Status.OK).sum()), "taus": []}
    if table.standalone is not None and attempted(table)[sub.archs].all():
        amount = sharing_amount(table)
        out["taus"] = [{"seed": int(s), "subspace_only": float(v), "whole_space": float(w)}
                       for s, w, v in zip(amount.seeds, amount.whole, amount.subspace)]
    return out
