"""An example search policy to copy: run it with

    nasbench_ptb evaluate --space 2node --policy example_policy:GreedyOps   # from this folder (docs/)

A policy has a ``name``, says whether it needs a weight-sharing oracle (``uses_ws``), and ``search(sim)``
returns the id of the architecture it chooses. ``sim`` (nasbench_ptb.simulator.Simulator) is the table behind a
budget: ``sim.query(arch)`` returns the standalone validation ppl (charging its training time once per
architecture) and raises ``BudgetExhausted`` when the budget is spent; ``sim.ws_query(arch)`` (WS policies) the
ppl under one super-net; ``sim.candidates`` the ids that have results; ``sim.rng`` the run's random generator;
``sim.best_seen()`` the best architecture queried so far. Judged exactly as the built-in policies.
"""
from nasbench_ptb.simulator import BudgetExhausted


class GreedyOps:
    """Query random architectures, then the one-edit neighbours of the best one found, until the budget ends."""

    name = "greedy_ops"
    uses_ws = False

    def search(self, sim) -> int:
        from nasbench_ptb.policies import neighbours

        try:
            for arch in sim.rng.permutation(sim.candidates)[:3]:
                sim.query(int(arch))
            while True:
                best = sim.best_seen()
                fresh = [a for a in neighbours(sim.space, best) if a in set(sim.candidates.tolist())
                         and a not in {h[0] for h in sim.history}]
                if not fresh:
                    sim.query(int(sim.rng.choice(sim.candidates)))
                    continue
                sim.query(int(sim.rng.choice(fresh)))
        except BudgetExhausted:
            pass
        return sim.best_seen()
