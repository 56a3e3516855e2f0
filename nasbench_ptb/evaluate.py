"""The paper's protocol: run each policy with N search seeds, read its choice's standalone result from the
table, and summarise (the paper's Table 3, plus rank, hit rates, regret and simulated cost)."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .policies import Policy
from .schema import Status, Table
from .search_results import Search, SearchResults
from .simulator import Budget, Simulator
from .stats import final_valid, mean_over_ok, ranks, sample_std


@dataclass(frozen=True)
class PolicyResult:
    """One row of the paper's Table 3 for one policy (or one real search algorithm) over its runs."""

    policy: str
    runs: int
    choices: tuple[int, ...]
    valid_mean: float
    valid_std: float  # sample std (ddof 1) over the runs' choices; NaN for one run
    test_mean: float
    test_std: float
    valid_best: float
    test_best: float
    mean_rank: float  # standalone rank of the chosen architecture (1 = best)
    p_best: float  # fraction of runs that found the best architecture
    p_best_iso: float  # ... or a renumbering of it (same iso hash)
    regret: float  # mean valid ppl of the choice minus the best valid ppl
    cost_seconds: float  # mean simulated search cost
    exact: bool = False  # the row is the policy's exact expectation over every choice it can make (``runs`` of them)


def _stats(table: Table):
    sa = table.standalone
    valid = mean_over_ok(final_valid(table), sa.status)
    test = mean_over_ok(sa.test_ppl, sa.status)
    return valid, test, ranks(valid)


DEFAULT_BUDGET = Budget(queries=10)


def evaluate(table: Table, policies: Sequence[Policy], runs: int = 10, budget: Budget = DEFAULT_BUDGET,
             checkpoint: int = -1, seed: int | None = None) -> list[PolicyResult]:
    """Every policy × ``runs`` search seeds; run ``r`` of a WS policy uses WS seed ``r mod S_ws``, of a proxy
    policy proxy seed ``r mod S_z``. The budget
    bounds standalone queries (WS policies pay one super-net training instead). Policies see standalone values
    at ``checkpoint`` (a cheaper, noisier fidelity; -1 = final) of every seed or of ``seed`` only; choices are
    always judged by their final standalone result over all ok seeds.

    Raises:
        ValueError: a WS policy on a table without WS results, a policy that fails or returns no architecture id of
            the space.
    """
    ws_ok = ok_supernets(table)
    proxy_seeds = [int(s) for s in table.proxies.seeds] if table.proxies is not None else []
    out = []
    for policy in policies:
        if policy.uses_ws and not ws_ok:
            raise ValueError(f"policy {policy.name} needs a table with weight-sharing results"
                             + ("" if table.ws is None else f" (none of its {len(table.ws.seeds)} super-nets is ok)"))
        uses_proxies = bool(getattr(policy, "uses_proxies", False))
        if uses_proxies and not proxy_seeds:
            raise ValueError(f"policy {policy.name} needs a table with zero-cost proxies (nasbench_ptb proxies TABLE)")
        if hasattr(policy, "exact"):  # a distribution known in closed form: its expectation, not a sample of it
            ids = [int(i) for i in policy.exact(table)]
            out.append(judge(table, policy.name, ids, [0.0] * len(ids), exact=True))
            continue
        choices, costs = [], []
        for r in range(runs):
            rng = np.random.default_rng([r, zlib.crc32(policy.name.encode())])
            sim = Simulator(table, rng, budget, checkpoint, seed, ws_seed=ws_ok[r % len(ws_ok)] if policy.uses_ws else None,
                            proxy_seed=proxy_seeds[r % len(proxy_seeds)] if uses_proxies else None)
            choices.append(_checked_choice(policy, sim, table))
            costs.append(sim.seconds)
        out.append(judge(table, policy.name, choices, costs))
    return out


def ok_supernets(table: Table) -> list[int]:
    """The seeds of the table's weight-sharing super-nets that ended ok: what a WS policy can read."""
    return [int(s) for s, st in zip(table.ws.seeds, table.ws.status) if st == Status.OK] if table.ws is not None else []


def applicable_policies(table: Table) -> list[Policy]:
    """The built-in policies the table can answer: the WS ones only with an ok super-net, the proxy ones only
    with ``/proxies`` (the default of ``evaluate`` and ``report``)."""
    from .policies import default_policies

    ws = bool(ok_supernets(table))
    return [p for p in default_policies().values() if (ws or not p.uses_ws)
            and (table.proxies is not None or not getattr(p, "uses_proxies", False))]


def _checked_choice(policy: Policy, sim: Simulator, table: Table) -> int:
    """The policy's choice, refused in one line when its search fails or returns something that is not an id."""
    try:
        choice = policy.search(sim)
    except Exception as exc:  # noqa: BLE001 — a user's policy may raise anything; name it, do not hide it
        raise ValueError(f"policy {policy.name} failed: {type(exc).__name__}: {exc} (call "
                         "nasbench_ptb.evaluate.evaluate(table, [policy]) in Python for the traceback)") from exc
    if isinstance(choice, (bool, np.bool_)) or not isinstance(choice, (int, np.integer)) \
            or not 0 <= int(choice) < table.space.size:
        raise ValueError(f"policy {policy.name} returned {choice!r}, not an architecture id of {table.space.name} "
                         f"(0..{table.space.size - 1})")
    return int(choice)


def judge(table: Table, name: str, choices: Sequence[int], costs: Sequence[float],
          exact: bool = False) -> PolicyResult:
    """One row of Table 3: the chosen architectures' final standalone results (mean over ok seeds), their ranks,
    how often the best (or a renumbering of it) was found, the regret, and the mean search cost. ``exact``: the
    choices are a uniform distribution's support, so every figure is its expectation and the spread is the
    distribution's own (ddof 0), not a sample's.

    Raises:
        ValueError: the table has no ok standalone run.
    """
    valid, test, rank = _stats(table)
    if np.isnan(valid).all():
        raise ValueError("the table has no ok standalone run to judge choices with")
    best = int(np.nanargmin(valid))
    genos = list(table.space)
    choices = [int(c) for c in choices]
    v, t = valid[choices], test[choices]
    spread = (lambda x: float(np.std(x)) if x.size else float("nan")) if exact else sample_std
    return PolicyResult(
        name, len(choices), tuple(choices), float(np.nanmean(v)), spread(v[np.isfinite(v)]),
        float(np.nanmean(t)), spread(t[np.isfinite(t)]), float(np.nanmin(v)), float(np.nanmin(t)), float(np.mean(rank[choices])),
        float(np.mean([c == best for c in choices])),
        float(np.mean([genos[c].iso_hash == genos[best].iso_hash for c in choices])),
        float(np.nanmean(v) - valid[best]), float(np.mean(costs)), exact,
    )


def evaluate_real(table: Table, results: SearchResults) -> list[PolicyResult]:
    """The real searches of a search-results file judged by the table (ok runs only; their final choices and
    their measured search seconds), one row per algorithm named ``<algo> (real)``.

    Raises:
        ValueError: the searches ran on another space, or none of an algorithm's ended ok.
    """
    if results.space.name != table.space.name:
        raise ValueError(f"the searches ran on {results.space.name}, the table is {table.space.name}")
    out = []
    for algo, s in sorted(results.searches.items()):
        ok = s.status == Status.OK
        if not ok.any():
            raise ValueError(f"no {algo} search of the file ended ok")
        out.append(judge(table, f"{algo} (real, {results.preset})", s.final[ok], s.seconds[ok, -1]))
    return out


def trajectory_ranks(table: Table, s: Search) -> np.ndarray:
    """``[R, E]`` standalone rank (1 = best) of the architecture each search would return at each search epoch
    (the paper's Fig. 3); NaN for a search that had diverged by then."""
    _, _, rank = _stats(table)
    out = rank[s.choice].astype(float)
    out[~np.isfinite(s.estimate)] = np.nan
    return out


def real_best(table: Table) -> dict:
    """The table's best architecture by mean final validation ppl: its row of Table 3 (REAL-BEST)."""
    valid, test, _ = _stats(table)
    best = int(np.nanargmin(valid))
    return {"policy": "REAL-BEST", "arch": best, "genotype": table.space.from_id(best).canonical,
            "valid": float(valid[best]), "test": float(test[best])}


def _spread(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}" if np.isfinite(std) else f"{mean:.2f} (one run)"


def format_table(results: Sequence[PolicyResult], best: dict) -> str:
    """The paper's Table 3 form (Markdown), extended with rank, hit rates, regret and cost."""
    head = ("| policy | valid ppl (mean ± std) | test ppl (mean ± std) | best valid | best test | mean rank | "
            "P(best) | P(best iso) | regret | search cost (s) |\n|---|---|---|---|---|---|---|---|---|---|")
    rows = [f"| {r.policy}{f' (exact expectation over {r.runs} cells)' if r.exact else ''} | {_spread(r.valid_mean, r.valid_std)} | {_spread(r.test_mean, r.test_std)} | "
            f"{r.valid_best:.2f} | {r.test_best:.2f} | {r.mean_rank:.1f} | {r.p_best:.2f} | {r.p_best_iso:.2f} | "
            f"{max(r.regret, 0.0):.2f} | {r.cost_seconds:.0f} |" for r in results]
    rows.append(f"| REAL-BEST ({best['genotype']}) | {best['valid']:.2f} | {best['test']:.2f} | {best['valid']:.2f} | "
                f"{best['test']:.2f} | 1.0 | 1.00 | 1.00 | 0.00 | – |")
    return "\n".join([head, *rows])
