"""Search policies and the paper's protocol on synthetic tables whose answers are known."""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from nasbench_ptb import schema
from nasbench_ptb.evaluate import applicable_policies, evaluate, format_table, real_best
from nasbench_ptb.policies import (EnasLike, LocalSearch, NaoLike, RandomChoice, RandomSearch, RegularizedEvolution,
                                   WSTop1, default_policies, encode, neighbours)
from nasbench_ptb.simulator import Budget, BudgetExhausted, Simulator
from nasbench_ptb.space import space

from helpers import key_early, key_valid, synthetic_table


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    # final standalone valid ppl = 100 + key_valid(id) (+ seed): best is id 27; id 1 missing, id 3 diverged;
    # WS reversed (best: key_valid = 31, id 4)
    return synthetic_table(tmp_path_factory.mktemp("t") / "t.h5")


def hand_mean(a: int) -> float:
    """Mean final valid ppl over ok seeds by hand: 100 + key_valid + mean seed (arch 2: seed 1 only)."""
    return 100 + key_valid(a) + (1 if a == 2 else 0.5)


def with_ws(table, values):
    ws = dataclasses.replace(table.ws, valid_ppl=np.broadcast_to(values, table.ws.valid_ppl.shape).copy())
    return dataclasses.replace(table, ws=ws)


def test_simulator_charges_once_and_enforces_budgets(table):
    sim = Simulator(table, np.random.default_rng(0), Budget(queries=2))
    assert 1 not in sim.candidates  # never trained: not offered
    assert sim.query(5) == pytest.approx(100 + key_valid(5) + 0.5) == 106.5 and sim.seconds == 10.0
    sim.query(5)
    assert sim.queries == 1 and sim.seconds == 10.0  # the same architecture is not charged twice
    assert sim.query(3) == np.inf  # diverged on every seed: worst
    with pytest.raises(BudgetExhausted):
        sim.query(7)
    assert not sim.can_query() and sim.best_seen() == 5
    timed = Simulator(table, np.random.default_rng(0), Budget(seconds=15))
    timed.query(4), timed.query(6)
    with pytest.raises(BudgetExhausted):
        timed.query(8)
    one = Simulator(table, np.random.default_rng(0), seed=1)
    assert one.query(2) == pytest.approx(100 + key_valid(2) + 1) == 118


@pytest.mark.parametrize("policy", [RandomSearch(), RegularizedEvolution(), LocalSearch()])
def test_budget_of_the_whole_space_finds_the_best(table, policy):
    res = evaluate(table, [policy], runs=5, budget=Budget(queries=32))[0]
    assert res.choices == (27,) * 5 and res.p_best == 1.0 and res.regret == pytest.approx(0) and res.mean_rank == 1


def test_small_budget_is_respected_and_reproducible(table):
    a = evaluate(table, [RandomSearch(), RegularizedEvolution(), LocalSearch()], runs=6, budget=Budget(queries=4))
    b = evaluate(table, [RandomSearch(), RegularizedEvolution(), LocalSearch()], runs=6, budget=Budget(queries=4))
    assert a == b
    for r in a:
        assert r.cost_seconds <= 4 * 10.0 + 1e-9  # 4 queries at 10 s each at most
        assert r.p_best < 1.0  # 4 of 31 cannot always find it


def test_random_is_uniform_over_trained_architectures(table):
    from nasbench_ptb.simulator import Simulator

    sim = Simulator(table, np.random.default_rng(0), Budget(queries=10))
    counts = np.bincount([RandomChoice().search(sim) for _ in range(620)], minlength=32)
    assert counts[1] == 0 and (counts[np.arange(32) != 1] > 5).all()


def test_random_row_is_its_exact_expectation_by_hand(table):
    """Issue 26: ten draws read mean rank 12.4 on the 2-node table where the expectation is 16.5. The row is the
    expectation over the 31 attempted cells (arch 1 was never run), each with probability 1/31."""
    res = evaluate(table, [RandomChoice()], runs=3)[0]
    ids = [a for a in range(32) if a != 1]
    assert res.exact and res.runs == 31 and res.choices == tuple(ids) and res.cost_seconds == 0
    # ranks 1..30 by hand_mean for the 30 with a value (all distinct), arch 3 (no ok run) ranks last, tied at 31
    assert res.mean_rank == pytest.approx((sum(range(1, 31)) + 31) / 31)
    finite = np.array([hand_mean(a) for a in ids if a != 3])
    assert res.valid_mean == pytest.approx(finite.mean()) and res.valid_std == pytest.approx(finite.std())
    assert res.p_best == pytest.approx(1 / 31) and res.regret == pytest.approx(finite.mean() - finite.min())
    assert "| random (exact expectation over 31 cells) |" in format_table([res], real_best(table))


def test_ws_top1_returns_the_ws_best(table):
    res = evaluate(table, [WSTop1()], runs=4)[0]
    # WS best: key_valid(4) = 31, the standalone worst of the 30 with a value (id 1 unranked, id 3 last)
    assert res.choices == (4,) * 4 and res.mean_rank == 30
    assert res.cost_seconds == 30.0  # one super-net's training


def test_enas_like_follows_its_ws_reward(table):
    values = np.full(32, 1000.0)
    values[21] = 50.0
    res = evaluate(with_ws(table, values), [EnasLike(steps=150)], runs=3)[0]
    assert res.choices == (21,) * 3


def test_enas_like_never_rewards_a_cell_without_standalone_results(table):
    """Id 1 has no standalone run (not a candidate): however good under WS, the controller gets the penalty for
    it, learns the best candidate (21) instead, and never returns it."""
    values = np.full(32, 1000.0)
    values[1], values[21] = 1.0, 50.0
    res = evaluate(with_ws(table, values), [EnasLike(steps=150)], runs=3)[0]
    assert res.choices == (21,) * 3


def test_most_probable_skips_a_non_candidate_argmax_by_hand():
    from nasbench_ptb.policies import most_probable
    sp = space("2node")  # id = 8 · c1 + c2
    node1, node2 = np.array([2.0, 1.9, 0, 0]), np.array([0, 3.0, 2.8, 0, 0, 0, 0, 0])
    everything = np.arange(32)
    assert most_probable(sp, [node1, node2], everything) == 1  # the per-node argmax: c1 = 0, c2 = 1
    # without id 1, the next most probable: (1, 1) = 9 at 1.9 + 3.0 beats (0, 2) = 2 at 2.0 + 2.8
    assert most_probable(sp, [node1, node2], np.delete(everything, 1)) == 9
    assert most_probable(sp, [node1, node2], np.array([30, 2, 31])) == 2
    assert most_probable(sp, [np.zeros(4), np.zeros(8)], np.array([5, 3, 7])) == 5  # ties: the first


def test_score_function_is_the_gradient_of_the_log_softmax():
    from nasbench_ptb.policies import score_function
    np.testing.assert_allclose(score_function(np.array([0.2, 0.3, 0.5]), 1), [-0.2, 0.7, -0.5])
    logits, eps = np.array([0.3, -1.0, 2.0, 0.5]), 1e-6
    logp = lambda z: z[2] - np.log(np.exp(z).sum())  # noqa: E731
    numeric = [(logp(logits + eps * np.eye(4)[i]) - logp(logits - eps * np.eye(4)[i])) / (2 * eps) for i in range(4)]
    probs = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(score_function(probs, 2), numeric, atol=1e-8)


def test_nao_like_predictor_finds_the_best_of_a_linear_landscape(table):
    sp = space("2node")
    x = encode(sp, np.arange(32))
    w = np.random.default_rng(3).normal(size=x.shape[1])
    logppl = 5 + x @ w * 0.3
    logppl[1] = 50  # not a candidate anyway
    best = int(np.argmin(np.where(np.arange(32) == 1, np.inf, logppl)))
    res = evaluate(with_ws(table, np.exp(logppl)), [NaoLike()], runs=5)[0]
    assert res.choices == (best,) * 5


def test_neighbours_are_one_edit_away():
    sp = space("3node")
    for a in (0, 100, 383):
        g = sp.from_id(a)
        nbs = neighbours(sp, a)
        assert len(nbs) == len(set(nbs)) == sum(3 + k for k in range(3))
        for n in nbs:
            assert sum(x != y for x, y in zip(g.nodes, sp.from_id(n).nodes)) == 1


def test_table3_format_and_cli(table, tmp_path):
    res = evaluate(table, applicable_policies(table), runs=3)
    assert [r.policy for r in res] == [n for n in default_policies() if not n.startswith("zc_")]  # no proxies here
    text = format_table(res, real_best(table))
    assert text.count("\n") == 2 + len(res) and "REAL-BEST (identity:0|identity:0)" in text
    path = tmp_path / "t.h5"
    schema.write(table, path)
    run = lambda *a: subprocess.run([sys.executable, "-m", "nasbench_ptb.cli", "evaluate", "--table", str(path), *a],  # noqa: E731
                                    capture_output=True, text=True)
    out = run("--runs", "3", "--policies", "random,ws_top1")
    assert out.returncode == 0 and "| ws_top1 |" in out.stdout and "REAL-BEST" in out.stdout
    assert '"p_best"' in run("--runs", "2", "--json").stdout
    low = run("--runs", "2", "--checkpoint", "0", "--seed", "1", "--policies", "random_search", "--json")
    assert low.returncode == 0 and '"random_search"' in low.stdout
    for args, msg in ((("--policies", "magic"), "unknown policy magic"), (("--runs", "0"), "--runs"),
                      (("--checkpoint", "9"), "5 checkpoints"), (("--seed", "4"), "standalone seeds are [0, 1]")):
        bad = run(*args)
        assert bad.returncode == 1 and msg in bad.stderr and "Traceback" not in bad.stderr


def test_checkpoint_and_seed_change_what_policies_see_and_what_they_are_charged(table):
    ids = np.arange(32)
    final = 100.5 + key_valid(ids).astype(float)
    final[2] = 101 + key_valid(2)
    early = final + 4 * (20 + key_early(ids))  # checkpoint 0 of the synthetic table
    early[2] = 101 + key_valid(2) + 4 * (20 + key_early(2))
    early[[1, 3]] = final[[1, 3]] = np.inf  # 1 missing (never offered), 3 diverged (worst)
    want = int(np.argmin(early))
    assert want != 27  # the cheap fidelity ranks differently from the final one
    res = evaluate(table, [RandomSearch()], runs=2, budget=Budget(queries=31), checkpoint=0)[0]
    assert res.choices == (want,) * 2  # exhaustive at checkpoint 0: the checkpoint-0 best
    assert res.cost_seconds == pytest.approx(31 * 2.0)  # every run's seconds to checkpoint 0 (2 s), not to the end
    assert res.regret == pytest.approx(final[want] - final[27])  # judged by the final result over all ok seeds
    full = evaluate(table, [RandomSearch()], runs=2, budget=Budget(queries=31))[0]
    # to the end: 10 s per architecture with an ok run, and nothing for the one that diverged everywhere
    assert full.choices == (27,) * 2 and full.cost_seconds == pytest.approx(30 * 10.0)
    one = evaluate(table, [RandomSearch()], runs=1, budget=Budget(queries=31), checkpoint=0, seed=1)[0]
    seed1 = 101.0 + key_valid(ids) + 4 * (20 + key_early(ids))
    seed1[[1, 3]] = np.inf
    assert one.choices == (int(np.argmin(seed1)),)


def bowl(target: int, sp_name: str = "3node"):
    """A table whose standalone value is 100 + the number of node fields (op, predecessor) that differ from
    ``target``: every other cell has a strictly better one-edit neighbour, so hill climbing must reach it."""
    from nasbench_ptb.schema import Status
    sp = space(sp_name)
    t = synthetic_table_in_memory(sp_name)
    g = sp.from_id(target)
    dist = np.array([sum(a != b for a, b in zip(sp.from_id(i).ops + sp.from_id(i).preds, g.ops + g.preds))
                     for i in range(sp.size)], dtype=float)
    sa = t.standalone
    valid = np.broadcast_to((100.0 + dist)[:, None, None], sa.valid_ppl.shape).copy()
    sa = dataclasses.replace(sa, valid_ppl=valid, status=np.full(sa.status.shape, Status.OK, dtype=np.int8),
                             seconds=np.ones_like(sa.seconds), test_ppl=valid[:, :, -1].copy())
    return dataclasses.replace(t, standalone=sa), dist


def synthetic_table_in_memory(sp_name):
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        return synthetic_table(f"{d}/t.h5", sp_name)


def test_local_search_climbs_to_the_best_with_a_budget_far_below_the_space():
    table, dist = bowl(200)
    # from anywhere: at most 6 improving moves, each found within the 12 neighbours: 1 + 6·12 = 73 queries
    res = evaluate(table, [LocalSearch()], runs=10, budget=Budget(queries=80))[0]
    assert res.choices == (200,) * 10 and res.p_best == 1.0


def test_evolution_selects_by_tournament_and_improves_on_random_search():
    table, dist = bowl(77)
    evo = evaluate(table, [RegularizedEvolution()], runs=20, budget=Budget(queries=60))[0]
    rnd = evaluate(table, [RandomSearch()], runs=20, budget=Budget(queries=60))[0]
    d_evo, d_rnd = dist[list(evo.choices)].mean(), dist[list(rnd.choices)].mean()
    # 60 random draws of 384 leave the best unseen most of the time; mutating tournament winners climbs the bowl
    assert evo.p_best >= 0.5 and d_evo < d_rnd


def test_random_search_returns_the_best_it_queried_within_a_small_budget():
    table, dist = bowl(5)
    for r in range(5):
        sim = Simulator(table, np.random.default_rng(r), Budget(queries=4))
        choice = RandomSearch().search(sim)
        assert len(sim.history) == 4 and len({a for a, _ in sim.history}) == 4
        assert dist[choice] == min(v for _, v in sim.history) - 100


def test_nao_like_pool_and_proposals_by_the_numbers():
    """NaoLike's budget of WS evaluations: a random pool of round(pool · N) distinct cells (at least 2), then
    ``per_iter`` predicted-best unseen cells per iteration; on an additive (linear) landscape the predictor,
    fitted on the pool, proposes the optimum in its first iteration even when the pool misses it."""
    base = synthetic_table_in_memory("3node")
    sp = base.space
    x = encode(sp, np.arange(sp.size))
    logppl = 5 + x @ np.random.default_rng(7).normal(size=x.shape[1]) * 0.3
    logppl[[1, 3]] = np.inf  # not candidates (missing, diverged everywhere standalone)
    best = int(np.argmin(logppl))
    table = with_ws(base, np.exp(logppl))
    for pool, per_iter, iterations, n0 in ((0.2, 3, 3, 77), (0.0, 2, 4, 2)):
        for r in range(3):
            sim = Simulator(table, np.random.default_rng(r), ws_seed=0)
            asked = []
            ask = sim.ws_query
            sim.ws_query = lambda a, asked=asked, ask=ask: asked.append(int(a)) or ask(a)
            choice = NaoLike(pool=pool, per_iter=per_iter, iterations=iterations).search(sim)
            assert len(asked) == len(set(asked)) == n0 + per_iter * iterations, (pool, r)
            assert choice == min(asked, key=lambda a: logppl[a])
            if pool:
                assert best in asked[: n0 + per_iter] and choice == best  # found by the first proposals


def test_regression_targets_make_diverged_values_the_worst_by_one():
    from nasbench_ptb.policies import regression_targets
    np.testing.assert_array_equal(regression_targets(np.array([1.0, np.inf, 3.0, np.nan])), [1.0, 4.0, 3.0, 4.0])
    np.testing.assert_array_equal(regression_targets(np.array([np.inf, np.nan])), [0.0, 0.0])
    np.testing.assert_array_equal(regression_targets(np.array([2.0, 5.0])), [2.0, 5.0])


def test_nao_like_that_sees_the_whole_space_stops_and_returns_its_best(table):
    """A pool of all but one candidate: one proposal completes the space, the next iteration has nothing to
    propose; the choice is the WS best of all 31 candidates (id 4: WS reverses key_valid)."""
    sim = Simulator(table, np.random.default_rng(0), ws_seed=0)
    asked = []
    ask = sim.ws_query
    sim.ws_query = lambda a: asked.append(int(a)) or ask(a)
    assert NaoLike(pool=0.97, per_iter=3, iterations=3).search(sim) == 4
    assert sorted(asked) == sim.candidates.tolist() and len(asked) == 31


def test_table3_text_and_the_real_best_record_exactly(table):
    """The printed Table 3 and the REAL-BEST record (also in --json) to the character: a budget of the whole space
    finds id 27 (valid 100 + 0 + mean seed offset 0.5; test 90 + key_test 14 + 0.5); the search cost is the final
    checkpoint's 10 s for each of the 30 queried candidates with a timed run (id 3 diverged on every seed)."""
    best = real_best(table)
    assert best == {"policy": "REAL-BEST", "arch": 27, "genotype": "identity:0|identity:0", "valid": 100.5,
                    "test": 104.5}
    res = evaluate(table, [RandomSearch()], runs=2, budget=Budget(queries=32))
    assert format_table(res, best).split("\n") == [
        "| policy | valid ppl (mean ± std) | test ppl (mean ± std) | best valid | best test | mean rank | P(best) | "
        "P(best iso) | regret | search cost (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        "| random_search | 100.50 ± 0.00 | 104.50 ± 0.00 | 100.50 | 104.50 | 1.0 | 1.00 | 1.00 | 0.00 | 300 |",
        "| REAL-BEST (identity:0|identity:0) | 100.50 | 104.50 | 100.50 | 104.50 | 1.0 | 1.00 | 1.00 | 0.00 | – |",
    ]


def test_ridge_fit_by_hand():
    from nasbench_ptb.policies import ridge_fit
    np.testing.assert_allclose(ridge_fit(np.eye(2), np.array([2.0, 4.0]), 1.0), [1.0, 2.0])  # y / (1 + λ)
    x = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])  # an intercept and a slope, λ → 0: least squares
    np.testing.assert_allclose(ridge_fit(x, np.array([1.0, 3.0, 5.0]), 1e-12), [1.0, 2.0], atol=1e-9)


def test_evaluate_defaults_messages_and_choices_refused_by_the_numbers(table):
    import dataclasses

    from nasbench_ptb.evaluate import judge
    from nasbench_ptb.schema import Status
    assert len(evaluate(table, [RandomSearch()])[0].choices) == 10  # the paper's 10 runs by default
    with pytest.raises(ValueError, match="^policy ws_top1 needs a table with weight-sharing results$"):
        evaluate(dataclasses.replace(table, ws=None), [WSTop1()], runs=1)
    # super-nets that all diverged answer nothing: refused by name, and left out of the default policies
    dead = dataclasses.replace(table, ws=dataclasses.replace(
        table.ws, status=np.full(len(table.ws.seeds), Status.DIVERGED, dtype=np.int8)))
    with pytest.raises(ValueError, match=r"needs a table with weight-sharing results \(none of its 3 super-nets is ok\)"):
        evaluate(dead, [WSTop1()], runs=1)
    assert [p.name for p in applicable_policies(dead)] == [
        p.name for p in applicable_policies(table) if not p.uses_ws]

    class Returns:
        uses_ws = False

        def __init__(self, value):
            self.value, self.name = value, f"returns_{value!r}"

        def search(self, sim):
            if isinstance(self.value, Exception):
                raise self.value
            return self.value

    for value in (True, "3", 32, -1, 2.0):
        with pytest.raises(ValueError) as err:
            evaluate(table, [Returns(value)], runs=1)
        assert str(err.value) == f"policy returns_{value!r} returned {value!r}, not an architecture id of 2node (0..31)"
    assert evaluate(table, [Returns(np.int64(31))], runs=1)[0].choices == (31,)
    with pytest.raises(ValueError) as err:
        evaluate(table, [Returns(KeyError("x"))], runs=1)
    assert str(err.value) == ("policy returns_KeyError('x') failed: KeyError: 'x' (call nasbench_ptb.evaluate."
                              "evaluate(table, [policy]) in Python for the traceback)")
    none_ok = dataclasses.replace(table.standalone, status=np.full_like(table.standalone.status, Status.DIVERGED))
    with pytest.raises(ValueError, match="^the table has no ok standalone run to judge choices with$"):
        judge(dataclasses.replace(table, standalone=none_ok), "x", [0], [0.0])


def test_seed_picks_what_the_policies_see(table):
    """Seed 1's final values reversed: a search over the whole space under --seed 1 returns seed 1's best (id 4,
    key_valid 31), under --seed 0 seed 0's best (27); both are judged over all seeds."""
    import dataclasses
    sa = table.standalone
    valid = sa.valid_ppl.copy()
    valid[:, 1, -1] = 300.0 - valid[:, 1, -1]
    t = dataclasses.replace(table, standalone=dataclasses.replace(sa, valid_ppl=valid))
    full = Budget(queries=32)
    assert evaluate(t, [RandomSearch()], runs=2, budget=full, seed=1)[0].choices == (4, 4)
    assert evaluate(t, [RandomSearch()], runs=2, budget=full, seed=0)[0].choices == (27, 27)


@pytest.mark.parametrize("policy", [RandomSearch(), RegularizedEvolution(), LocalSearch()])
def test_a_budget_of_no_query_still_returns_a_candidate(table, policy):
    sim = Simulator(table, np.random.default_rng(3), Budget(queries=0))
    choice = policy.search(sim)
    assert choice in sim.candidates.tolist() and sim.queries == 0
    if isinstance(policy, RandomSearch):  # the first of its random order
        assert choice == int(np.random.default_rng(3).permutation(sim.candidates)[0])


def test_local_search_moves_only_to_strictly_better_neighbours():
    """On a flat landscape no neighbour is better: local search queries its start and all 12 of its neighbours
    before restarting (moving on ties would query a neighbour's neighbours instead)."""
    table, _ = bowl(0)
    flat = table.standalone.valid_ppl.copy()
    flat[:] = 100.0
    import dataclasses
    t = dataclasses.replace(table, standalone=dataclasses.replace(table.standalone, valid_ppl=flat))
    for r in range(3):
        sim = Simulator(t, np.random.default_rng(r), Budget(queries=13))
        LocalSearch().search(sim)
        start, *rest = [a for a, _ in sim.history]
        assert sorted(rest) == sorted(neighbours(t.space, start)) and len(rest) == 12
