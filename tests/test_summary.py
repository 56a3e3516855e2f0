"""Table summaries and the search simulator pinned by hand on the synthetic table (helpers.synthetic_table):
final valid ppl = 100 + key_valid(id) + seed, test = 90 + key_test(id) + seed, arch 1 missing, arch 2 diverged
on seed 0, arch 3 on both; WS final valid = 1000 − key_valid, WS seed 2 diverged."""
import numpy as np
import pytest
from scipy.stats import kendalltau

from nasbench_ptb import summary
from nasbench_ptb.simulator import Budget, BudgetExhausted, Simulator

from helpers import key_test, key_valid, synthetic_table

OK_ARCHS = [a for a in range(32) if a not in (1, 3)]


@pytest.fixture()
def table(tmp_path):
    return synthetic_table(tmp_path / "t.h5")


def hand_mean(a: int) -> float:
    return {1: np.nan, 3: np.nan, 2: 100 + key_valid(2) + 1}.get(a, 100 + key_valid(a) + 0.5)


def test_coverage_counts_every_status(table):
    cov = summary.coverage(table)
    assert (cov.runs, cov.ok, cov.missing, cov.diverged, cov.archs_with_ok_run) == (64, 59, 2, 3, 30)
    assert not cov.full
    table.standalone.status[1] = 0
    assert summary.coverage(table).full and summary.coverage(table).ok == 61
    assert cov.rolled_back == 0
    table.standalone.rollback[5, 0, :] = 0.0
    table.standalone.rollback[5, 0, 1] = table.standalone.rollback[6, 1, 0] = table.standalone.rollback[6, 1, 2] = 1
    assert summary.coverage(table).rolled_back == 2  # runs, not rollbacks; NaN (not recorded) counts as none


def test_means_ranks_and_best_by_hand(table):
    mean = summary.standalone_final(table)
    want = np.array([hand_mean(a) for a in range(32)])
    assert np.array_equal(np.isnan(mean), np.isnan(want)) and np.allclose(mean[OK_ARCHS], want[OK_ARCHS])
    assert summary.ranks(np.array([3.0, 1.0, np.nan, 1.0, 2.0])).tolist() == [4, 1, 5, 1, 3]
    order = sorted(OK_ARCHS, key=hand_mean) + [1, 3]
    assert summary.ranking(table).tolist() == order
    rows = summary.best(table, 3)
    assert [r["id"] for r in rows] == order[:3] and rows[0]["id"] == 27
    r = rows[0]
    assert r["valid_ppl"] == pytest.approx(100.5) and r["test_ppl"] == pytest.approx(90.5 + key_test(27))
    assert r["seeds_ok"] == 2 and r["genotype"] == table.space.from_id(27).canonical and len(r["hash"]) == 16
    assert len(summary.best(table, 40)) == 30  # stops at the first architecture without an ok run
    two = [row for row in summary.best(table, 40) if row["id"] == 2][0]
    assert two["seeds_ok"] == 1 and two["valid_ppl"] == pytest.approx(118.0)


def test_ws_vs_standalone_tau_by_pair_counting(table):
    rows = summary.ws_vs_standalone_tau(table)
    # 31 attempted architectures: the 30 ok ones perfectly reversed (435 discordant pairs); arch 3 (standalone
    # worst) against them: concordant where WS also ranks it worse (key_valid > 24: 7), else discordant (23)
    assert [(r.seed, r.status, r.archs) for r in rows] == [(0, 0, 31), (1, 0, 31), (2, 2, 31)]
    assert rows[0].tau == pytest.approx((7 - 435 - 23) / 465) and rows[1].tau == rows[0].tau
    assert np.isnan(rows[2].tau) and np.isnan(rows[2].pvalue) and 0 <= rows[0].pvalue < 1e-6


def test_seed_taus_by_pair_counting(table):
    (row,) = summary.seed_taus(table)
    # arch 2: worst on seed 0 (diverged), 118 on seed 1: concordant with the 16 clean keys below 17, discordant
    # with the 13 above; arch 3 tied with arch 2 on seed 0 only
    assert row["pair"] == "0-1" and row["archs"] == 31 and row["sample"] is None
    assert row["tau"] == pytest.approx((406 + 29 + 16 - 13) / np.sqrt(464 * 465))
    assert summary.sharing(table) is None


def test_simulator_oracles_seed_checkpoint_and_ws_seed(table):
    mean = Simulator(table, np.random.default_rng(0))
    one = Simulator(table, np.random.default_rng(0), seed=1)
    early = Simulator(table, np.random.default_rng(0), checkpoint=0)
    assert mean.query(0) == pytest.approx(100.5 + key_valid(0)) and one.query(0) == pytest.approx(101 + key_valid(0))
    assert early.query(0) == pytest.approx(100.5 + key_valid(0) + 4 * (20 + (5 * 0 + 1) % 32))
    assert mean.query(3) == np.inf and one.query(2) == pytest.approx(118.0)
    assert 1 not in mean.candidates and len(mean.candidates) == 31
    table.ws.valid_ppl[1, :, 5] += 7.0  # WS seed 1 differs from seed 0 at arch 5
    table.ws.valid_ppl[0, -1, 6] = np.nan  # seed 0 blew up at arch 6 at the end only
    w0 = Simulator(table, np.random.default_rng(0), ws_seed=0)
    w1 = Simulator(table, np.random.default_rng(0), ws_seed=1)
    assert w0.ws_query(5) == pytest.approx(1000 - key_valid(5)) and w1.ws_query(5) == pytest.approx(1007 - key_valid(5))
    assert w0.ws_query(6) == np.inf and w0.ws_seed == 0
    with pytest.raises(ValueError, match=r"^WS seed 2 is not ok in this table$"):
        Simulator(table, np.random.default_rng(0), ws_seed=2)
    with pytest.raises(ValueError, match=r"^this run has no WS oracle \(table without /ws, or no ws_seed\)$"):
        mean.ws_query(0)


def test_simulator_charges_budgets_at_their_exact_boundary(table):
    sim = Simulator(table, np.random.default_rng(0), Budget(seconds=20.0), ws_seed=0)
    assert sim.can_query()
    sim.query(0)
    sim.query(4)  # 10 s each (2 s per checkpoint, 5 checkpoints): the budget is now spent exactly
    assert sim.seconds == 20.0 and not sim.can_query()
    with pytest.raises(BudgetExhausted):
        sim.query(5)
    sim.ws_query(0)
    sim.ws_query(1)  # the super-net is paid once, on top of what was spent
    assert sim.seconds == 20.0 + 30.0


def test_simulator_best_seen_breaks_ties_by_id_and_refuses_empty(table):
    sim = Simulator(table, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"^no architecture queried yet$"):
        sim.best_seen()
    sim._valid[[9, 4]] = 50.0  # two architectures with the same value: the lower id wins
    sim.query(9)
    sim.query(4)
    sim.query(0)
    assert sim.best_seen() == 4


def test_simulator_refuses_tables_without_standalone_runs(table):
    import dataclasses

    with pytest.raises(ValueError, match=r"^search simulation needs a table with a standalone part$"):
        Simulator(dataclasses.replace(table, standalone=None), np.random.default_rng(0))
    table.standalone.status[:] = 1
    with pytest.raises(ValueError, match=r"^no architecture of this table has a standalone run$"):
        Simulator(table, np.random.default_rng(0))
    table.standalone.status[7, 0] = 0  # one architecture is enough
    assert Simulator(table, np.random.default_rng(0)).candidates.tolist() == [7]


def test_kendall_counting_convention():
    """The hand counts above use scipy's tau-b; a 3-element check of the convention."""
    assert kendalltau([1, 2, 3], [3, 1, 2], variant="b").statistic == pytest.approx((1 - 2) / 3)


def test_rankings_with_many_ties_are_stable_by_id():
    """top-k overlap and the paper code's id-sequence tau order ties by id (a stable sort): with 300 values in
    5 tied levels an unstable sort would pick other members of a tied level."""
    from nasbench_ptb import analyses as an

    a = np.random.default_rng(0).permutation(np.repeat(np.arange(5.0), 60))
    b = a.copy()
    b[np.flatnonzero(a == 0)[:30]] = np.nan  # half of the best level diverged: ranked last
    want_a = set(np.flatnonzero(a == 0)[:20].tolist())  # the 20 lowest ids of the best level
    want_b = set(np.flatnonzero(a == 0)[30:50].tolist())
    assert an.top_k_overlap(a, b, 20) == pytest.approx(len(want_a & want_b) / 20) == 0.0
    ids_a, ids_b = np.argsort(an.worst_last(a), kind="stable"), np.argsort(an.worst_last(b), kind="stable")
    assert an.legacy_id_sequence_tau(a, b) == pytest.approx(kendalltau(ids_a, ids_b).statistic)
    assert an.legacy_id_sequence_tau(a, a) == pytest.approx(1.0)


def test_seed_pairs_need_two_shared_architectures(table):
    from nasbench_ptb import analyses as an

    table.standalone.status[2:, 1] = 1  # seed 1 trained on archs 0 and 1 only; arch 1 is missing on seed 0
    table.standalone.status[1, 1] = 0
    assert np.isnan(an.seed_pair_taus(table)["0-1"][0]) and an.seed_pair_taus(table)["0-1"][1] == 1
    table.standalone.status[2, 1] = 0  # now archs 0 and 2 (diverged on seed 0: last)
    tau, n = an.seed_pair_taus(table)["0-1"]
    assert n == 2 and tau == pytest.approx(1.0)


def test_seed_agreement_ws_pairs_and_over_training_with_a_diverged_first_seed(table):
    from nasbench_ptb import analyses as an

    ws = table.ws
    ws.status[:] = [2, 0, 0]  # the first super-net diverged, the other two ok
    ws.valid_ppl[0], ws.valid_ppl[2] = np.nan, ws.valid_ppl[1]
    agree = an.seed_agreement(table)
    assert sorted(agree["ws_seed_tau"]) == ["0-1", "0-2", "1-2"] and agree["ws_seed_tau"]["1-2"] == pytest.approx(1.0)
    assert np.isnan(agree["ws_seed_tau"]["0-1"]) and np.isnan(agree["ws_seed_tau"]["0-2"])  # a diverged super-net
    assert sorted(agree["standalone_seed_tau"]) == ["0-1"]
    t = an.ws_tau_over_training(table)
    assert np.isnan(t.tau[0]).all() and np.isfinite(t.tau[1:]).all()  # seed 0 skipped, the later ones computed
    assert t.tau[1, -1] == pytest.approx((7 - 435 - 23) / 465) and t.spearman[1, -1] < -0.9


def test_iso_twins_of_the_two_node_space(table):
    from nasbench_ptb import analyses as an

    twins = an.iso_twins(table)
    # both nodes read s0: swapping them is the same cell; 6 unordered pairs of distinct ops, arch 1 is missing
    pairs = {(a, b) for a, b, _, _ in twins}
    want = set()
    for g in table.space:
        (o1, p1), (o2, p2) = g.nodes
        if p1 == p2 == 0 and o1 < o2:
            other = table.space.parse(f"{o2}:0|{o1}:0").id
            if 1 not in (g.id, other):
                want.add(tuple(sorted((g.id, other))))
    assert pairs == want and len(twins) == len(want) and all(a < b for a, b in pairs)
    a, b, va, vb = twins[0]
    assert va == pytest.approx(hand_mean(a)) and vb == pytest.approx(hand_mean(b))


def test_summaries_of_partial_and_one_sided_tables(table):
    """A table without standalone runs, without super-nets, with a diverged first super-net, with fewer than two
    attempted cells, and with a recorded sample: each summary says what exists and nothing else."""
    import dataclasses

    assert summary.coverage(dataclasses.replace(table, standalone=None)) == summary.Coverage(0, 0, 0, 0, 0)
    assert summary.ws_vs_standalone_tau(dataclasses.replace(table, ws=None)) == []
    assert summary.ws_vs_standalone_tau(dataclasses.replace(table, standalone=None)) == []
    ws = table.ws
    ws.status[:] = [2, 0, 0]
    rows = summary.ws_vs_standalone_tau(table)
    assert np.isnan(rows[0].tau) and rows[1].tau == pytest.approx((7 - 435 - 23) / 465)  # later seeds still computed
    # the sample's own seed-to-seed tau: on archs 27, 18, 9, 2 seed 1 reverses the order of the first three
    table.standalone.valid_ppl[[27, 18, 9], 1, -1] = [300.0, 200.0, 100.0]
    table.attrs["samples"] = [{"ids": [27, 18, 9, 2], "n": 4, "seed": 5, "method": "stratified"}]
    whole, sample = summary.seed_taus(table)
    assert whole["sample"] is None and whole["archs"] == 31
    assert sample["sample"] == {"n": 4, "seed": 5, "method": "stratified"} and sample["archs"] == 4
    # pairs among 27, 18, 9: all 3 discordant; arch 2 (last on seed 0, 118 on seed 1): concordant with 9 only
    assert sample["tau"] == pytest.approx((1 - 5) / 6)
    table.standalone.status[:] = 1
    table.standalone.status[7] = 0  # one attempted cell: no ranking to compare
    rows = summary.ws_vs_standalone_tau(table)
    assert [r.archs for r in rows] == [1, 1, 1] and all(np.isnan(r.tau) for r in rows)


def test_sharing_summary_of_a_table_with_subspace_supernets(table):
    """info's amount-of-sharing line: the subspace, its super-nets, how many are ok, and per seed the tau-b with
    subspace-only and whole-space sharing (taus only where every subspace cell has a standalone run)."""
    import dataclasses

    from nasbench_ptb import schema

    ids = np.array([4, 6, 9, 12, 20])
    sub = schema.WeightSharing.empty(32, [0, 1], np.array([0.5, 1.0]), [100, 1000], ids)
    sub.valid_ppl[0, :, ids] = (10.0 + key_valid(ids))[:, None]  # seed 0 ranks the subspace like standalone
    sub.valid_ppl[1, :, ids] = np.nan
    sub.status[:] = [schema.Status.OK, schema.Status.DIVERGED]
    t = dataclasses.replace(table, ws_subspace=sub)
    out = summary.sharing(t)
    assert out["ids"] == [4, 6, 9, 12, 20] and out["seeds"] == [0, 1] and out["ok"] == 1
    taus = {row["seed"]: row for row in out["taus"]}
    assert sorted(taus) == [0, 1, 2]  # the union of the whole-space and subspace super-nets' seeds
    assert taus[0]["subspace_only"] == pytest.approx(1.0) and taus[0]["whole_space"] == pytest.approx(-1.0)
    assert np.isnan(taus[1]["subspace_only"]) and taus[1]["whole_space"] == pytest.approx(-1.0)
    assert np.isnan(taus[2]["whole_space"])  # whole-space WS seed 2 diverged
    t.standalone.status[6] = schema.Status.MISSING  # a subspace cell without standalone runs: no taus at all
    assert summary.sharing(t)["taus"] == [] and summary.sharing(t)["ok"] == 1
    assert summary.sharing(dataclasses.replace(t, standalone=None))["taus"] == []


def test_iso_classes_pool_the_twins_runs_by_hand(table):
    """Issue 25.14: twins are one function, so their runs are replicates of one mean."""
    classes = summary.iso_classes(table)
    assert sum(len(c.ids) for c in classes) == 32 and len({c.iso_hash for c in classes}) == len(classes)
    pair = next(c for c in classes if c.ids == (19, 26))  # sigmoid:0|identity:0 and identity:0|sigmoid:0
    runs = [100 + 8 + 0, 100 + 8 + 1, 100 + 25 + 0, 100 + 25 + 1]  # key_valid 19 → 8, 26 → 25
    assert pair.n == 4 and pair.valid_ppl == pytest.approx(117.0)
    assert pair.valid_ppl_std == pytest.approx(np.sqrt((81 + 64 + 64 + 81) / 3)) == pytest.approx(np.std(runs, ddof=1))
    assert pair.test_ppl == pytest.approx((112 + 113 + 93 + 94) / 4)  # key_test 19 → 22, 26 → 3
    ok_runs = {1: 0, 2: 1, 3: 0}  # arch 1 missing, 2 diverged on seed 0, 3 on both; the others 2 ok runs
    assert all(c.n == sum(ok_runs.get(a, 2) for a in c.ids) for c in classes)
    ranked = [c for c in classes if c.rank is not None]
    assert [c.rank for c in ranked] == sorted(c.rank for c in ranked) and ranked[0].rank == 1
    means = [c.valid_ppl for c in ranked]
    assert means == sorted(means) and all(c.n >= 1 for c in ranked)
    assert [c for c in classes if c.rank is None] == [c for c in classes if c.n == 0]
    # min_n 3: only classes of two cells with both ok seeds stay ranked; the others follow unranked
    strict = summary.iso_classes(table, min_n=3)
    assert {c.ids for c in strict if c.rank is not None} == {c.ids for c in classes if c.n >= 3}
    assert all(c.n >= 3 for c in strict if c.rank is not None) and strict[0].rank == 1


def test_best_with_a_minimum_n_skips_one_seed_cells(table):
    """Issue 25.14: the winner's curse: a one-seed cell on top of the list."""
    from nasbench_ptb import schema

    best = int(np.argmin(key_valid(np.arange(32))))  # 27
    table.standalone.status[best, 1] = schema.Status.MISSING
    top = summary.best(table, 3)
    assert top[0]["id"] == best and top[0]["seeds_ok"] == 1
    strict = summary.best(table, 3, min_n=2)
    assert best not in [r["id"] for r in strict] and len(strict) == 3 and all(r["seeds_ok"] == 2 for r in strict)
    assert [r["id"] for r in strict] == [r["id"] for r in summary.best(table, 5)[1:] if r["seeds_ok"] == 2][:3]
