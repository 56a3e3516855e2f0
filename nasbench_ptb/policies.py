"""Search policies behind one protocol: ``search(sim) -> architecture id``.

A policy asks the :class:`~nasbench_ptb.simulator.Simulator` for standalone (``sim.query``) or weight-sharing
(``sim.ws_query``) validation perplexities, within the run's budget, and returns the architecture it would hand
to the user. Write your own by implementing ``name`` and ``search``; randomness only from ``sim.rng``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .schema import Status, Table
from .simulator import BudgetExhausted, Simulator
from .space import OPS, Genotype, SearchSpace


class Policy(Protocol):
    """A *simulated* search policy: it searches the table through a :class:`Simulator` (which charges each
    standalone query its recorded training time and enforces the budget) and returns its choice. The real search
    phases that train a super-net are :class:`nasbench_ptb.builder.search.Method`. A policy may also give
    ``exact(table) -> ids``: a uniform choice among those ids, which ``evaluate`` reports as an expectation, and
    ``uses_proxies = True``: it asks ``sim.proxy`` (a proxy seed per run; :mod:`nasbench_ptb.proxy_policies`)."""

    name: str  # unique among the policies evaluated together
    uses_ws: bool  # needs a WS oracle (a WS seed per run)

    def search(self, sim: Simulator) -> int:
        """The chosen architecture id. Ask ``sim.query`` / ``sim.query_at`` / ``sim.ws_query``; they raise
        :class:`BudgetExhausted` when the budget is spent (catch it and return the best seen). Raises: whatever
        the policy raises is reported by ``evaluate`` as that policy's failure, in one line."""
        ...


def neighbours(sp: SearchSpace, arch: int) -> list[int]:
    """Architectures one edit away: one node's activation or predecessor changed."""
    g = sp.from_id(arch)
    out = []
    for k, (op, pred) in enumerate(g.nodes):
        for new in [(o, pred) for o in OPS if o != op] + [(op, p) for p in range(k + 1) if p != pred]:
            nodes = list(g.nodes)
            nodes[k] = new
            out.append(Genotype(tuple(nodes)).id)
    return out


def encode(sp: SearchSpace, ids: np.ndarray) -> np.ndarray:
    """One-hot encoding of (op, pred) per node, plus a bias column: the predictors' features."""
    cols = [(k, o, p) for k in range(sp.n) for o in range(len(OPS)) for p in range(k + 1)]
    index = {c: i for i, c in enumerate(cols)}
    x = np.zeros((len(ids), len(cols) + 1))
    x[:, -1] = 1.0
    for row, a in enumerate(ids):
        g = sp.from_id(int(a))
        for k, (o, p) in enumerate(zip(g.ops, g.preds)):
            x[row, index[(k, o, p)]] = 1.0
    return x


def most_probable(sp: SearchSpace, logits: list[np.ndarray], candidates: np.ndarray) -> int:
    """The candidate most probable under independent per-node softmax choices (``logits[k]`` over node k+1's
    ``4·pred + op``): the per-node argmax when that cell is a candidate, else the next most probable one."""
    logp = [z - z.max() - np.log(np.exp(z - z.max()).sum()) for z in logits]
    digits = np.array([sp.from_id(int(c)).choices for c in candidates])
    score = sum(lp[digits[:, k]] for k, lp in enumerate(logp))
    return int(candidates[int(np.argmax(score))])


def score_function(probs: np.ndarray, slot: int) -> np.ndarray:
    """The gradient of ``log softmax(logits)[slot]`` with respect to the logits, ``onehot(slot) − probs``: the
    direction REINFORCE moves a categorical choice's logits, scaled by the advantage."""
    grad = -np.asarray(probs, dtype=float)
    grad[slot] += 1.0
    return grad


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Ridge regression weights ``(XᵀX + λI)⁻¹ Xᵀy`` (λ > 0 keeps a pool smaller than the encoding solvable)."""
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)


def regression_targets(y: np.ndarray) -> np.ndarray:
    """A predictor's targets from WS log-ppl: a diverged (non-finite) value becomes 1 worse than the worst finite
    one, so the predictor learns to avoid it without an infinite target; all diverged: all 0 (nothing to learn)."""
    finite = np.isfinite(y)
    if not finite.any():
        return np.zeros(len(y))
    return np.where(finite, y, y[finite].max() + 1.0)


def _in(sim: Simulator, ids) -> list[int]:
    allowed = set(sim.candidates.tolist())
    return [i for i in ids if i in allowed]


@dataclass
class RandomChoice:
    """The paper's random policy: one uniformly sampled architecture, no search. ``evaluate`` reports its exact
    expectation over every candidate (:meth:`exact`), not a sample of draws (ten draws of the 2-node table read
    mean rank 12.4 where the expectation is 16.5)."""

    name: str = "random"
    uses_ws: bool = False

    def search(self, sim: Simulator) -> int:
        return sim.random_arch()

    def exact(self, table: Table) -> np.ndarray:
        """The ids a draw picks among, each with the same probability: every attempted architecture."""
        return np.flatnonzero((table.standalone.status != Status.MISSING).any(axis=1))


@dataclass
class RandomSearch:
    """Query distinct random architectures (standalone) until the budget ends, return the best."""

    name: str = "random_search"
    uses_ws: bool = False

    def search(self, sim: Simulator) -> int:
        order = sim.rng.permutation(sim.candidates)
        try:
            for a in order:
                sim.query(a)
        except BudgetExhausted:
            pass
        return sim.best_seen() if sim.history else int(order[0])


@dataclass
class RegularizedEvolution:
    """Real et al.: a population of ``population``; tournament of ``sample``; mutate the winner; age out the oldest."""

    population: int = 5
    sample: int = 2
    name: str = "evolution"
    uses_ws: bool = False

    def search(self, sim: Simulator) -> int:
        pop: list[tuple[int, float]] = []
        try:
            for a in self.initial(sim):
                pop.append((int(a), sim.query(a)))
            for _ in range(20 * len(sim.candidates)):  # the budget ends it; this only bounds an unbudgeted run
                picks = sim.rng.choice(len(pop), size=min(self.sample, len(pop)), replace=False)
                parent = min((pop[i] for i in picks), key=lambda t: t[1])[0]
                options = _in(sim, neighbours(sim.space, parent)) or [sim.random_arch()]
                child = int(options[sim.rng.integers(len(options))])
                pop.append((child, sim.query(child)))
                pop.pop(0)
        except BudgetExhausted:
            pass
        return sim.best_seen() if sim.history else sim.random_arch()

    def initial(self, sim: Simulator) -> list[int]:
        """The first population: ``population`` distinct random candidates."""
        return [int(a) for a in sim.rng.permutation(sim.candidates)[: self.population]]


@dataclass
class LocalSearch:
    """First-improvement hill climbing over one-edit neighbours, restarting at random local optima."""

    name: str = "local_search"
    uses_ws: bool = False

    def search(self, sim: Simulator) -> int:
        try:
            while sim.queries < len(sim.candidates):  # the budget ends it; every architecture seen ends it too
                cur = sim.random_arch()
                cur_v = sim.query(cur)
                improved = True
                while improved:
                    improved = False
                    for nb in sim.rng.permutation(_in(sim, neighbours(sim.space, cur))):
                        v = sim.query(int(nb))
                        if v < cur_v:
                            cur, cur_v, improved = int(nb), v, True
                            break
        except BudgetExhausted:
            pass
        return sim.best_seen() if sim.history else sim.random_arch()


@dataclass
class WSTop1:
    """What weight-sharing methods hand back: the best architecture under one super-net's shared weights."""

    name: str = "ws_top1"
    uses_ws: bool = True

    def search(self, sim: Simulator) -> int:
        values = np.array([sim.ws_query(a) for a in sim.candidates])
        return int(sim.candidates[int(np.argmin(values))])


@dataclass
class EnasLike:
    """REINFORCE over independent (pred, op) choices per node; reward = −log of the WS validation ppl of the
    sampled cell; moving-average baseline. Returns the controller's most probable architecture."""

    steps: int = 200
    batch: int = 4
    lr: float = 0.5
    baseline_decay: float = 0.9
    name: str = "enas_like"
    uses_ws: bool = True

    def search(self, sim: Simulator) -> int:
        sp = sim.space
        logits = [np.zeros(4 * (k + 1)) for k in range(sp.n)]  # slot = 4·pred + op, as in the ids
        allowed = set(sim.candidates.tolist())
        baseline = None
        for _ in range(self.steps):
            grads = [np.zeros_like(z) for z in logits]
            for _ in range(self.batch):
                probs = [np.exp(z - z.max()) / np.exp(z - z.max()).sum() for z in logits]
                slots = [int(sim.rng.choice(len(p), p=p)) for p in probs]
                g = Genotype.of_choices(slots)
                reward = -np.log(sim.ws_query(g.id)) if g.id in allowed else -np.inf
                reward = reward if np.isfinite(reward) else -50.0
                baseline = reward if baseline is None else self.baseline_decay * baseline + (1 - self.baseline_decay) * reward
                for k, (p, s) in enumerate(zip(probs, slots)):
                    grads[k] += (reward - baseline) * score_function(p, s)
            for k in range(sp.n):
                logits[k] += self.lr * grads[k] / self.batch
        return most_probable(sp, logits, sim.candidates)


@dataclass
class NaoLike:
    """A random pool of ``pool`` (fraction of the space) evaluated with the WS oracle, a ridge predictor over the
    genotype encoding, at most ``per_iter`` new candidates (the predicted best unseen) per iteration; final
    choice: the top-1 of the evaluated candidates."""

    pool: float = 0.2
    per_iter: int = 3
    iterations: int = 3
    ridge: float = 1e-2
    name: str = "nao_like"
    uses_ws: bool = True

    def search(self, sim: Simulator) -> int:
        cands = sim.candidates
        n0 = max(2, int(round(self.pool * len(cands))))
        seen = {int(a): np.log(sim.ws_query(a)) for a in sim.rng.choice(cands, size=min(n0, len(cands)), replace=False)}
        for _ in range(self.iterations):
            ids = np.array(list(seen))
            y = regression_targets(np.array([seen[a] for a in ids]))
            x = encode(sim.space, ids)
            w = ridge_fit(x, y, self.ridge)
            unseen = np.array([a for a in cands if int(a) not in seen])
            if unseen.size == 0:
                break
            pred = encode(sim.space, unseen) @ w
            for a in unseen[np.argsort(pred, kind="stable")[: self.per_iter]]:
                seen[int(a)] = np.log(sim.ws_query(a))
        return min(seen, key=lambda a: (seen[a] if np.isfinite(seen[a]) else np.inf, a))


def rungs(sim: Simulator, eta: int, s: int, min_epochs: float | None) -> list[int]:
    """Checkpoints of one successive-halving bracket with ``s + 1`` rungs: the resource ``R · η^(i−s)`` for
    ``i = 0 … s`` (``R`` the table's last epoch), each at the last checkpoint at or before it, never below
    ``min_epochs`` (default: the first checkpoint); duplicates merged, the last rung always the run's fidelity."""
    top = float(sim.epochs[sim.checkpoint])
    low = float(sim.epochs[0]) if min_epochs is None else min_epochs
    out = []
    for i in range(s + 1):
        c = sim.checkpoint_at(max(top * float(eta) ** (i - s), low))
        if not out or c > out[-1]:
            out.append(min(c, sim.checkpoint))
    if out[-1] != sim.checkpoint:
        out.append(sim.checkpoint)
    return out


def max_bracket(sim: Simulator, eta: int, min_epochs: float | None) -> int:
    """``s_max = ⌊log_η(R / r_min)⌋`` (Li et al. 2018): the most aggressive bracket the table's fidelities allow."""
    top = float(sim.epochs[sim.checkpoint])
    low = float(sim.epochs[0]) if min_epochs is None else min_epochs
    return max(int(np.floor(np.log(top / low) / np.log(eta) + 1e-9)), 0)


def successive_halving(sim: Simulator, n: int, rung_list: list[int], eta: int) -> None:
    """One bracket (Jamieson & Talwalkar 2016): ``n`` architectures not queried before, at random, at the first
    rung; the best ``⌊n_i / η⌋`` (at least one) promoted to the next, up to the last rung."""
    alive = [int(a) for a in sim.rng.permutation(sim.unseen())[:n]]
    for c in rung_list:
        scored = sorted((sim.query_at(a, c), a) for a in alive)
        alive = [a for _, a in scored[: max(len(scored) // eta, 1)]]


def _pick(sim: Simulator) -> int:
    """The best architecture at the highest checkpoint any reached (the run's fidelity once one got there):
    a budget that ends mid-bracket still returns the best measured at the highest fidelity."""
    if not sim.fidelity_history:
        return sim.random_arch()
    c_max = max(c for _, c, _ in sim.fidelity_history)
    return min((v, a) for a, c, v in sim.fidelity_history if c == c_max)[1]


@dataclass
class SuccessiveHalving:
    """Successive halving over epochs (Jamieson & Talwalkar 2016; the bracket of Li et al.'s Hyperband with the
    most rungs): ``n = η^s`` random cells at ``R·η^(−s)`` epochs, the best ``1/η`` promoted at each rung to the
    table's last epoch; brackets repeat with new cells until the budget ends. Returns the best cell at the last
    epoch. Training continues across rungs (a cell promoted pays only its extra epochs)."""

    eta: int = 3
    min_epochs: float | None = None  # the first rung's floor (default: the table's first checkpoint)
    name: str = "successive_halving"
    uses_ws: bool = False

    def search(self, sim: Simulator) -> int:
        s = max_bracket(sim, self.eta, self.min_epochs)
        rung_list = rungs(sim, self.eta, s, self.min_epochs)
        try:
            while len(sim.unseen()):
                successive_halving(sim, self.eta ** (len(rung_list) - 1), rung_list, self.eta)
        except BudgetExhausted:
            pass
        return _pick(sim)


@dataclass
class Hyperband:
    """Hyperband over epochs (Li et al. 2018): brackets ``s = s_max … 0`` of successive halving, bracket ``s``
    starting ``⌈(s_max + 1)/(s + 1) · η^s⌉`` cells at ``R·η^(−s)`` epochs (``s = 0``: a few cells trained to the
    end), repeated until the budget ends. Returns the best cell at the table's last epoch."""

    eta: int = 3
    min_epochs: float | None = None
    name: str = "hyperband"
    uses_ws: bool = False

    def search(self, sim: Simulator) -> int:
        s_max = max_bracket(sim, self.eta, self.min_epochs)
        try:
            while len(sim.unseen()):
                for s in range(s_max, -1, -1):
                    n = int(np.ceil((s_max + 1) / (s + 1) * self.eta ** s))
                    successive_halving(sim, n, rungs(sim, self.eta, s, self.min_epochs), self.eta)
        except BudgetExhausted:
            pass
        return _pick(sim)


def default_policies() -> dict[str, Policy]:
    """The built-in simulated policies by name (the registry behind ``evaluate --policies``), in the order Table 3
    lists them, then the zero-cost ones."""
    from .proxy_policies import ProxyWarmEvolution, ZeroCostTop1, ZeroCostTopK  # they build on this module

    return {p.name: p for p in (RandomChoice(), RandomSearch(), RegularizedEvolution(), LocalSearch(),
                                SuccessiveHalving(), Hyperband(), EnasLike(), NaoLike(), WSTop1(), ZeroCostTop1(),
                                ZeroCostTopK(), ProxyWarmEvolution())}


def load_policy(spec: str) -> Policy:
    """A user's policy from ``package.module:Name``: ``Name`` is a policy object, or a class or function that
    returns one when called without arguments. It must follow :class:`Policy` (``name``, ``uses_ws``,
    ``search(sim) -> architecture id``); anything else is refused naming what is wrong. The working directory is
    importable, so a policy file beside the user's command works."""
    import importlib
    import os
    import sys

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--policy {spec!r}: expected package.module:Name")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 — whatever the user's module raises on import
        raise ValueError(f"--policy {spec}: cannot import {module_name} ({type(exc).__name__}: {exc})") from None
    finally:
        if added:
            sys.path.remove(cwd)
    if not hasattr(module, attr):
        raise ValueError(f"--policy {spec}: {module_name} has no {attr!r}")
    obj = getattr(module, attr)
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "search")):
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"--policy {spec}: calling {attr}() failed ({type(exc).__name__}: {exc})") from None
    problems = [p for p, ok in (("a str attribute 'name'", isinstance(getattr(obj, "name", None), str)),
                                ("a bool attribute 'uses_ws'", isinstance(getattr(obj, "uses_ws", None), bool)),
                                ("a method search(sim)", callable(getattr(obj, "search", None)))) if not ok]
    if problems:
        raise ValueError(f"--policy {spec}: not a search policy: it lacks {', '.join(problems)}")
    return obj
