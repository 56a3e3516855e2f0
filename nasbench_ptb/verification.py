"""Do the table's numbers hold? Architectures retrained with new seeds, compared with what the table says.

Per architecture: the table's final validation/test ppl (mean ± std over its ok seeds) next to the retrained
ones, and a z-score of the difference of the means, ``(retrained − table) / sqrt(s_t²/n_t + s_r²/n_r)`` with
each side's sample std (ddof 1; a side with a single seed contributes the other side's variance, so one seed
each gives NaN). With two seeds a side that std is itself noise (a cell whose two seeds happen to agree makes
any retraining look significant), so a second z-score uses the table's **pooled** seed std — the within-cell
spread of every architecture with two or more ok seeds, ``sqrt(Σ_a Σ_s (v_as − v̄_a)² / Σ_a (n_a − 1))`` — for both
sides: ``(retrained − table) / (s_pool · sqrt(1/n_t + 1/n_r))`` (retrained runs share the table's protocol).
Over the verified architectures: Kendall tau-b between the retrained and the table rankings.
numpy only: the builder's ``verify`` trains, this module judges.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .analyses import tau_b
from .schema import Status, Table
from .stats import final_valid, mean_over_ok, ranks, sample_std


@dataclass(frozen=True)
class Verified:
    """One retrained architecture: the table's and the retrained (mean, std, n) of valid and test ppl and their z."""
    arch: int
    genotype: str
    table_valid: tuple[float, float, int]  # mean, std, ok seeds
    retrained_valid: tuple[float, float, int]
    table_test: tuple[float, float, int]
    retrained_test: tuple[float, float, int]
    z_valid: float
    z_test: float
    z_valid_pooled: float  # the difference in units of the table's pooled seed std (see the module docstring)
    z_test_pooled: float


def default_archs(table: Table) -> list[int]:
    """The table's top 3 by mean final validation ppl and its median cell (among architectures with an ok run)."""
    valid = mean_over_ok(final_valid(table), table.standalone.status)
    r = ranks(valid)
    ok = np.flatnonzero(np.isfinite(valid))
    if len(ok) == 0:
        raise ValueError("the table has no ok standalone run to verify")
    order = ok[np.argsort(r[ok], kind="stable")]
    return [int(a) for a in dict.fromkeys([*order[:3], order[len(order) // 2]])]


def _stats(values: np.ndarray) -> tuple[float, float, int]:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return (float("nan"), float("nan"), 0)
    return (float(v.mean()), sample_std(v), len(v))


def z_score(table: tuple[float, float, int], new: tuple[float, float, int]) -> float:
    """Welch's z of the retrained mean against the table's, each ``(mean, std, n)`` (a side with one seed borrows
    the other's std); NaN where either side has no ok seed."""
    (mt, st, nt), (mr, sr, nr) = table, new
    if nt == 0 or nr == 0:
        return float("nan")
    st, sr = (sr if np.isnan(st) else st), (st if np.isnan(sr) else sr)
    se = np.sqrt(st**2 / nt + sr**2 / nr)
    if not np.isfinite(se):
        return float("nan")
    if se == 0:
        return 0.0 if mr == mt else float(np.sign(mr - mt) * np.inf)
    return float((mr - mt) / se)


def pooled_seed_sd(values: np.ndarray) -> float:
    """``values [N, S]`` (NaN where a run is not ok): the std of one run around its architecture's mean, pooled
    over every architecture with at least two values; NaN when there is none."""
    v = np.asarray(values, float)
    n = np.isfinite(v).sum(axis=1)
    use = n >= 2
    if not use.any():
        return float("nan")
    dev = v[use] - np.nanmean(v[use], axis=1, keepdims=True)
    return float(np.sqrt(np.nansum(dev**2) / (n[use] - 1).sum()))


def pooled_z(table: tuple[float, float, int], new: tuple[float, float, int], sd: float) -> float:
    """The difference of the means in units of the table's pooled seed std ``sd``."""
    (mt, _, nt), (mr, _, nr) = table, new
    if nt == 0 or nr == 0 or not np.isfinite(sd) or sd == 0:
        return float("nan")
    return float((mr - mt) / (sd * np.sqrt(1 / nt + 1 / nr)))


def compare(table: Table, archs: Sequence[int], valid: np.ndarray, test: np.ndarray) -> tuple[list[Verified], float]:
    """``valid``/``test``: ``[len(archs), K]`` retrained final ppl (NaN where a run diverged)."""
    sa = table.standalone
    ok = sa.status == Status.OK
    fv = np.where(ok, final_valid(table), np.nan)
    ft = np.where(ok, sa.test_ppl, np.nan)
    sd_v, sd_t = pooled_seed_sd(fv), pooled_seed_sd(ft)
    out = []
    for j, a in enumerate(archs):
        tv, tt = _stats(fv[a]), _stats(ft[a])
        rv, rt = _stats(np.asarray(valid[j], float)), _stats(np.asarray(test[j], float))
        out.append(Verified(int(a), table.space.from_id(int(a)).canonical, tv, rv, tt, rt, z_score(tv, rv),
                            z_score(tt, rt), pooled_z(tv, rv, sd_v), pooled_z(tt, rt, sd_t)))
    if len(out) > 1:
        tau = tau_b(np.array([v.retrained_valid[0] for v in out]), np.array([v.table_valid[0] for v in out]))
    else:
        tau = float("nan")
    return out, tau


def format_rows(rows: Sequence[Verified], tau: float) -> str:
    """The verification table as text, with the tau-b of the retrained ranking against the table's."""
    fmt = lambda m: (f"{m[0]:.2f} ± {m[1]:.2f} ({m[2]})" if m[2] > 1 else f"{m[0]:.2f} (1)") if m[2] else "–"  # noqa: E731
    z = lambda v: "n/a" if np.isnan(v) else f"{v:+.2f}"  # noqa: E731
    lines = ["| architecture | table valid | retrained valid | z | z (pooled sd) | table test | retrained test | z | "
             "z (pooled sd) |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {v.genotype} (id {v.arch}) | {fmt(v.table_valid)} | {fmt(v.retrained_valid)} | {z(v.z_valid)} | "
              f"{z(v.z_valid_pooled)} | {fmt(v.table_test)} | {fmt(v.retrained_test)} | {z(v.z_test)} | "
              f"{z(v.z_test_pooled)} |" for v in rows]
    lines.append(f"\nKendall tau-b, retrained vs table ranking of these {len(rows)} architectures: "
                 + ("n/a" if np.isnan(tau) else f"{tau:+.3f}"))
    return "\n".join(lines)
