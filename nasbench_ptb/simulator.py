"""Search-phase simulation over a table: a policy asks for architectures, the table answers, time is charged.

Two oracles, as in the paper: ``standalone`` (an architecture trained alone: its validation ppl at a checkpoint,
mean over ok seeds or one seed; it costs that run's recorded seconds to the checkpoint) and ``ws`` (its
validation ppl under one weight-sharing super-net; the super-net's training is charged once, at the first WS
query). Each unique architecture is charged once. Budgets are in queries and/or simulated seconds; a query
beyond the budget raises :class:`BudgetExhausted`. Everything random comes from the run's own generator.

Fidelity: :meth:`Simulator.query_at` answers at any checkpoint (``epochs[c]`` epochs of training) and charges
the time to reach it; an architecture trained further later pays only the difference (training continues from
where it stopped, as multi-fidelity methods do), so its total is the time to its highest checkpoint.
``queries`` counts distinct architectures; continuing one to a higher checkpoint is not a new query, but it is
charged against the seconds budget.

Zero-cost proxies (a table with ``/proxies``): :meth:`Simulator.proxy` answers one proxy of one architecture at
the run's proxy seed (one initialisation, as a user computes it once), charging that proxy's measured seconds per
architecture (the table's ``proxies`` attribute) once per (proxy, architecture); it spends no standalone query.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BudgetExhausted, QueryLimitExceeded
from . import schema
from .schema import Status, Table
from .stats import mean_over_ok, worst_last

MAX_CALLS = 1_000_000
"""Questions (``query``, ``query_at``, ``ws_query``, re-queries included) one run may ask: far above what any
search over these spaces needs (the whole 3-node space at every checkpoint is 7,296), low enough to end a
policy that loops in seconds."""


@dataclass(frozen=True)
class Budget:
    """What a policy may spend: standalone queries and/or simulated seconds."""
    queries: int | None = None
    seconds: float | None = None


class Simulator:
    """One simulated search run over a table: the oracle a :class:`nasbench_ptb.policies.Policy` asks.

    ``query(a)`` gives architecture ``a``'s standalone validation ppl at ``checkpoint`` (mean over the table's
    ok seeds, or seed ``seed``) and charges its recorded training seconds once; ``query_at(a, epoch)`` the same at
    a lower fidelity, charging only the extra epochs of a continued run; ``ws_query(a)`` its validation ppl under
    super-net ``ws_seed`` (the super-net's training charged once). Re-queries are free but counted
    (:data:`MAX_CALLS`). The budget (queries and/or seconds) raises :class:`BudgetExhausted` when spent.

    Raises:
        ValueError: a table without standalone runs, a checkpoint or WS seed the table lacks.
    """

    def __init__(self, table: Table, rng: np.random.Generator, budget: Budget = Budget(), checkpoint: int = -1,
                 seed: int | None = None, ws_seed: int | None = None, proxy_seed: int | None = None):
        self.table, self.rng, self.budget = table, rng, budget
        self.space = table.space
        sa = table.standalone
        if sa is None:
            raise ValueError("search simulation needs a table with a standalone part")
        cols = slice(None) if seed is None else [int(np.flatnonzero(sa.seeds == seed)[0])]
        status = sa.status[:, cols]
        self.epochs = np.asarray(sa.epochs, dtype=float)
        C = len(self.epochs)
        if not -C <= checkpoint < C:
            raise ValueError(f"checkpoint {checkpoint} is outside the table's {C} checkpoints")
        self.checkpoint = checkpoint % C  # the fidelity of query()
        # [N, C]: mean validation ppl over ok seeds (diverged everywhere: worst) and mean seconds to each checkpoint
        self._valid_at = np.stack([worst_last(mean_over_ok(sa.valid_ppl[:, cols, c], status)) for c in range(C)], 1)
        secs = sa.seconds[:, cols, :]
        has = np.isfinite(secs)
        self._cost_at = np.where(has, secs, 0.0).sum(axis=1) / np.maximum(has.sum(axis=1), 1)
        self._valid, self._cost = self._valid_at[:, self.checkpoint], self._cost_at[:, self.checkpoint]
        self._paid = np.zeros(len(self._valid))  # seconds charged so far per architecture
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
        self.proxy_seed = proxy_seed
        self._proxy_values, self._proxy_cost, self._proxy_paid = self._proxy_oracle(table, proxy_seed), {}, set()
        if self._proxy_values:
            secs = table.attrs.get("proxies", {}).get("seconds", {})
            per_run = max(table.proxies.seeds.size * table.space.size, 1)  # the seconds are over every [N, S] slot
            self._proxy_cost = {name: float(secs.get(name, 0.0)) / per_run for name in self._proxy_values}
        self.queries = 0
        self.calls = 0  # every question, re-queries included (bounded by MAX_CALLS)
        self.seconds = 0.0
        self.history: list[tuple[int, float]] = []  # (arch, value) of standalone queries at the run's checkpoint
        self.fidelity_history: list[tuple[int, int, float]] = []  # (arch, checkpoint, value) of every one
        self._seen: set[int] = set()
        self._ws_paid = False

    def _check_budget(self) -> None:
        b = self.budget
        if (b.queries is not None and self.queries >= b.queries) or (b.seconds is not None and self.seconds >= b.seconds):
            raise BudgetExhausted

    def can_query(self) -> bool:
        """Whether one more charged query fits the budget."""
        try:
            self._check_budget()
            return True
        except BudgetExhausted:
            return False

    def query(self, arch: int) -> float:
        """Standalone validation ppl of ``arch`` (inf if it diverged) at the run's checkpoint; charged once per
        architecture."""
        return self.query_at(arch, self.checkpoint)

    def query_at(self, arch: int, checkpoint: int) -> float:
        """Standalone validation ppl of ``arch`` after ``epochs[checkpoint]`` epochs (inf if it diverged),
        charging the time to reach it beyond what ``arch`` was already charged.

        Raises:
            BudgetExhausted: a new architecture beyond the query or time budget, or further training beyond the
                time budget.
            QueryLimitExceeded: more than :data:`MAX_CALLS` questions in this run.
            ValueError: a checkpoint the table does not have.
        """
        self._count()
        arch, C = int(arch), len(self.epochs)
        if not -C <= int(checkpoint) < C:
            raise ValueError(f"checkpoint {checkpoint} is outside the table's {C} checkpoints")
        c = int(checkpoint) % C
        more = max(float(self._cost_at[arch, c]) - self._paid[arch], 0.0)
        if arch not in self._seen:
            self._check_budget()
            self._seen.add(arch)
            self.queries += 1
        elif more > 0 and self.budget.seconds is not None and self.seconds >= self.budget.seconds:
            raise BudgetExhausted
        self.seconds += more
        self._paid[arch] += more
        value = float(self._valid_at[arch, c])
        if c == self.checkpoint:
            self.history.append((arch, value))
        self.fidelity_history.append((arch, c, value))
        return value

    def _count(self) -> None:
        self.calls += 1
        if self.calls > MAX_CALLS:
            raise QueryLimitExceeded(f"more than {MAX_CALLS:,} queries in one run (re-queries included): a search "
                                     "must end; does the policy re-query the same architectures in a loop?")

    def checkpoint_at(self, epochs: float) -> int:
        """The last checkpoint at or before ``epochs`` of training (:func:`nasbench_ptb.fidelity.checkpoint_of`),
        the first one if all are later."""
        from .fidelity import FidelityError, checkpoint_of

        try:
            return checkpoint_of(self.epochs, epochs)
        except FidelityError:
            return 0

    def ws_query(self, arch: int) -> float:
        """Validation ppl of ``arch`` under the run's WS super-net (inf where it blew up).

        Raises:
            ValueError: the run has no weight-sharing oracle (a table without /ws, or no ws_seed).
        """
        self._count()
        if self._ws_valid is None:
            raise ValueError("this run has no WS oracle (table without /ws, or no ws_seed)")
        if not self._ws_paid:
            self._ws_paid = True
            self.seconds += self._ws_cost
        return float(self._ws_valid[int(arch)])

    @staticmethod
    def _proxy_oracle(table: Table, proxy_seed: int | None) -> dict[str, np.ndarray]:
        if proxy_seed is None:
            return {}
        pz = table.proxies
        if pz is None:
            raise ValueError("this table has no zero-cost proxies (add them with: nasbench_ptb proxies TABLE)")
        if proxy_seed not in pz.seeds:
            raise ValueError(f"proxy seed {proxy_seed} is not in the table (its proxy seeds: {list(map(int, pz.seeds))})")
        k = int(np.flatnonzero(pz.seeds == proxy_seed)[0])
        return {name: np.asarray(getattr(pz, name)[:, k], dtype=float) for name in schema.columns("proxies", "NS")}

    def proxy(self, arch: int, name: str) -> float:
        """Zero-cost proxy ``name`` of ``arch`` at the run's proxy seed (higher predicts better, as its paper
        scores it; ``-inf`` where it is undefined); its measured seconds per architecture are charged once.

        Raises:
            ValueError: the run has no proxy oracle (no ``proxy_seed``), or no proxy of that name.
            BudgetExhausted: a new score beyond the seconds budget.
        """
        self._count()
        if not self._proxy_values:
            raise ValueError("this run has no proxy oracle (a table without /proxies, or no proxy_seed)")
        if name not in self._proxy_values:
            raise ValueError(f"unknown proxy {name!r} (the table's: {', '.join(self._proxy_values)})")
        arch = int(arch)
        if (name, arch) not in self._proxy_paid:
            if self.budget.seconds is not None and self.seconds >= self.budget.seconds:
                raise BudgetExhausted
            self._proxy_paid.add((name, arch))
            self.seconds += self._proxy_cost[name]
        value = float(self._proxy_values[name][arch])
        return value if np.isfinite(value) else -np.inf

    def unseen(self) -> np.ndarray:
        """Candidates not queried yet (in id order)."""
        return np.array([a for a in self.candidates if int(a) not in self._seen], dtype=np.int64)

    def random_arch(self) -> int:
        """A uniformly drawn candidate (an architecture with a standalone run), from the run's generator."""
        return int(self.rng.choice(self.candidates))

    def best_seen(self) -> int:
        """The queried architecture with the lowest value so far (ties: the lower id). Raises: ValueError when
        nothing has been queried."""
        if not self.history:
            raise ValueError("no architecture queried yet")
        return min(self.history, key=lambda h: (h[1], h[0]))[0]
