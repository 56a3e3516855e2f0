"""Search-phase simulation over a table: a policy asks for architectures, the table answers, time is charged.

Two oracles, as in the paper: ``standalone`` (an architecture trained alone: its validation ppl at a checkpoint,
mean over ok seeds or one seed; it costs that run's recorded seconds to the checkpoint) and ``ws`` (its
validation ppl under one weight-sharing super-net; the super-net's training is charged once, at the first WS
query). Each unique architecture is charged once. Budgets are in queries and/or simulated seconds; a query
beyond the budget raises :class:`BudgetExhausted`. Everything random comes from the run's own generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .schema import Status, Table
from .summary import mean_over_ok, worst_last


class BudgetExhausted(Exception):
    """The run has spent its query or time budget."""


@dataclass(frozen=True)
class Budget:
    queries: int | None = None
    seconds: float | None = None


class Simulator:
    def __init__(self, table: Table, rng: np.random.Generator, budget: Budget = Budget(), checkpoint: int = -1,
                 seed: int | None = None, ws_seed: int | None = None):
        self.table, self.rng, self.budget = table, rng, budget
        self.space = table.space
        sa = table.standalone
        if sa is None:
            raise ValueError("search simulation needs a table with a standalone part")
        cols = slice(None) if seed is None else [int(np.flatnonzero(sa.seeds == seed)[0])]
        status = sa.status[:, cols]
        valid = mean_over_ok(sa.valid_ppl[:, cols, checkpoint], status)
        self._valid = worst_last(valid)  # diverged everywhere: worst
        secs = sa.seconds[:, cols, checkpoint]
        has = np.isfinite(secs)
        self._cost = np.where(has, secs, 0.0).sum(axis=1) / np.maximum(has.sum(axis=1), 1)
        self.candidates = np.flatnonzero((status != Status.MISSING).any(axis=1))
        if len(self.candidates) == 0:
            raise ValueError("no architecture of this table has a standalone run")
        self.ws_seed = ws_seed
        self._ws_valid = None
        self._ws_cost = 0.0
        if table.ws is not None and ws_seed is not None:
            k = int(np.flatnonzero(table.ws.seeds == ws_seed)[0])
            if table.ws.status[k] != Status.OK:
                raise ValueError(f"WS seed {ws_seed} is not ok in this table")
            self._ws_valid = np.where(np.isfinite(table.ws.valid_ppl[k, -1]), table.ws.valid_ppl[k, -1], np.inf)
            self._ws_cost = float(table.ws.seconds[k, -1])
        self.queries = 0
        self.seconds = 0.0
        self.history: list[tuple[int, float]] = []  # (arch, value) of standalone queries, in order
        self._seen: set[int] = set()
        self._ws_paid = False

    def _check_budget(self) -> None:
        b = self.budget
        if (b.queries is not None and self.queries >= b.queries) or (b.seconds is not None and self.seconds >= b.seconds):
            raise BudgetExhausted

    def can_query(self) -> bool:
        try:
            self._check_budget()
            return True
        except BudgetExhausted:
            return False

    def query(self, arch: int) -> float:
        """Standalone validation ppl of ``arch`` (inf if it diverged); charged once per architecture."""
        arch = int(arch)
        if arch not in self._seen:
            self._check_budget()
            self._seen.add(arch)
            self.queries += 1
            self.seconds += float(self._cost[arch])
        value = float(self._valid[arch])
        self.history.append((arch, value))
        return value

    def ws_query(self, arch: int) -> float:
        """Validation ppl of ``arch`` under the run's WS super-net (inf where it blew up)."""
        if self._ws_valid is None:
            raise ValueError("this run has no WS oracle (table without /ws, or no ws_seed)")
        if not self._ws_paid:
            self._ws_paid = True
            self.seconds += self._ws_cost
        return float(self._ws_valid[int(arch)])

    def random_arch(self) -> int:
        return int(self.rng.choice(self.candidates))

    def best_seen(self) -> int:
        if not self.history:
            raise ValueError("no architecture queried yet")
        return min(self.history, key=lambda h: (h[1], h[0]))[0]
