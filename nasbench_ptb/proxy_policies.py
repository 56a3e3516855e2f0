"""Search policies that use zero-cost proxies (a table with ``/proxies``), judged by the same protocol as the
others: each run sees the proxies of one proxy seed (one initialisation, as a user computes them once) and is
charged the proxies' measured seconds per architecture scored (:meth:`Simulator.proxy`).

- ``zc_top1``: the proxy's best cell, no training at all (Abdelfattah et al. 2021, "Zero-Cost Proxies for
  Lightweight NAS", the proxy used as the whole search).
- ``zc_topk``: train the proxy's best cells in its order until the budget ends and return the best trained one
  (their "zero-cost warmup" of random search: the proxy orders which cells are sampled first).
- ``zc_evolution``: regularized evolution whose initial population is the proxy's top cells (their warmup of
  evolution), then the same tournaments and mutations as ``evolution``.

Every policy scores the whole space with the proxy: at 32 and 384 cells that costs seconds to minutes (the table's
``proxies`` attribute), where the paper's warmup scores a sample of a larger space. The default proxy,
``hidden_cov``, is the one proposed for recurrent cells (Serianni & Kalita 2023), chosen before measuring it
here; ``proxy=`` takes any stored one.
"""
from __future__ import annotations

from dataclasses import dataclass

from .policies import RegularizedEvolution
from .simulator import BudgetExhausted, Simulator

DEFAULT_PROXY = "hidden_cov"


def proxy_order(sim: Simulator, proxy: str) -> list[int]:
    """Every candidate scored by ``proxy`` (charged), best first (higher score; ties by id; undefined last); a
    seconds budget that ends while scoring leaves the cells scored until then."""
    scores: dict[int, float] = {}
    try:
        for a in sim.candidates:
            scores[int(a)] = sim.proxy(int(a), proxy)
    except BudgetExhausted:
        pass
    return sorted(scores, key=lambda a: (-scores[a], a))


@dataclass
class ZeroCostTop1:
    """The proxy's best cell: the search is one proxy evaluation of every candidate, no training."""

    proxy: str = DEFAULT_PROXY
    name: str = "zc_top1"
    uses_ws: bool = False
    uses_proxies: bool = True

    def search(self, sim: Simulator) -> int:
        order = proxy_order(sim, self.proxy)
        return order[0] if order else sim.random_arch()


@dataclass
class ZeroCostTopK:
    """Train the cells in the proxy's order (best first) until the budget ends; return the best trained one."""

    proxy: str = DEFAULT_PROXY
    name: str = "zc_topk"
    uses_ws: bool = False
    uses_proxies: bool = True

    def search(self, sim: Simulator) -> int:
        order = proxy_order(sim, self.proxy)
        try:
            for a in order:
                sim.query(a)
        except BudgetExhausted:
            pass
        return sim.best_seen() if sim.history else (order[0] if order else sim.random_arch())


@dataclass
class ProxyWarmEvolution(RegularizedEvolution):
    """Regularized evolution (``evolution``) whose first population is the proxy's ``population`` best cells."""

    proxy: str = DEFAULT_PROXY
    name: str = "zc_evolution"
    uses_proxies: bool = True

    def initial(self, sim: Simulator) -> list[int]:
        order = proxy_order(sim, self.proxy)
        if not order:
            raise BudgetExhausted  # the seconds budget ended before any cell was scored
        return order[: self.population]
