"""Epochs as a fidelity in the simulator: query_at charges the time to a checkpoint once (training continues),
and successive halving / Hyperband promote by the values at each rung — checked on constructed tables whose
early and final orders are known."""
import numpy as np
import pytest

from nasbench_ptb import schema
from nasbench_ptb.evaluate import evaluate
from nasbench_ptb.policies import Hyperband, RandomSearch, SuccessiveHalving, default_policies, max_bracket, rungs
from nasbench_ptb.simulator import Budget, BudgetExhausted, Simulator
from nasbench_ptb.space import space

SP = space("2node")
N, C = SP.size, 10
FINAL = (7 * np.arange(N) + 3) % N  # final order: arch 27 best (0), then 18 (1) …
EPOCHS = np.arange(1, C + 1) / 10.0  # checkpoints at 0.1 … 1.0
PER_CHECKPOINT = 10.0  # seconds each interval costs


def table(early: np.ndarray) -> schema.Table:
    """One seed; checkpoints before the last ordered by ``early``, the last by FINAL; 10 s per interval."""
    sa = schema.Standalone.empty(N, [0], EPOCHS)
    for a in range(N):
        sa.valid_ppl[a, 0, :-1] = 200 + early[a] + (C - 1 - np.arange(C - 1))
        sa.valid_ppl[a, 0, -1] = 100 + FINAL[a]
        sa.train_loss[a, 0] = 5.0
        sa.seconds[a, 0] = PER_CHECKPOINT * np.arange(1, C + 1)
        sa.test_ppl[a, 0] = 90 + FINAL[a]
        sa.best_epoch[a, 0] = 1.0
        sa.status[a, 0] = schema.Status.OK
    return schema.Table(SP, "synthetic", {"hidden": 4, "params": 1, "epochs": 1.0}, sa, None, {})


AGREE, REVERSED = table(FINAL), table(N - 1 - FINAL)


def test_query_at_charges_the_time_to_each_checkpoint_once():
    sim = Simulator(AGREE, np.random.default_rng(0))
    assert sim.query_at(5, 2) == 200 + FINAL[5] + 7 and sim.seconds == 30.0 and sim.queries == 1
    assert sim.query_at(5, 0) == 200 + FINAL[5] + 9 and sim.seconds == 30.0  # already trained past it: free
    assert sim.query(5) == 100 + FINAL[5] and sim.seconds == 100.0 and sim.queries == 1  # 70 s more, same arch
    assert sim.history == [(5, 100 + FINAL[5])]  # only the run's fidelity is a standalone result
    assert [c for _, c, _ in sim.fidelity_history] == [2, 0, 9]
    assert sim.checkpoint_at(0.35) == 2 and sim.checkpoint_at(1.0) == 9 and sim.checkpoint_at(0.01) == 0
    with pytest.raises(ValueError, match="outside the table's 10 checkpoints"):
        sim.query_at(5, 10)


def test_training_further_is_refused_once_the_time_budget_is_spent_but_a_new_query_counts_only_once():
    sim = Simulator(AGREE, np.random.default_rng(0), Budget(queries=2, seconds=40))
    sim.query_at(1, 0), sim.query_at(2, 3)  # 10 + 40 s: over the time budget now
    with pytest.raises(BudgetExhausted):
        sim.query_at(1, 5)  # more training of a seen cell
    assert sim.query_at(2, 1) == 200 + FINAL[2] + 8  # a lower checkpoint of a trained cell costs nothing
    with pytest.raises(BudgetExhausted):
        sim.query_at(3, 0)  # a third cell: over both budgets


def test_rungs_follow_hyperband_on_the_table_checkpoints():
    sim = Simulator(AGREE, np.random.default_rng(0))
    assert max_bracket(sim, 3, None) == 2  # ⌊log₃(1.0 / 0.1)⌋
    assert rungs(sim, 3, 2, None) == [0, 2, 9]  # 1/9 → 0.1, 1/3 → 0.3, 1.0
    assert rungs(sim, 3, 1, None) == [2, 9] and rungs(sim, 3, 0, None) == [9]
    assert max_bracket(sim, 3, 0.5) == 0 and rungs(sim, 2, 1, 0.5) == [4, 9]  # floors at 0.5 epochs


def _first_bracket(sim_seed: int, n: int) -> list[int]:
    """The cells successive halving draws first: the run generator's first permutation of all candidates."""
    return [int(a) for a in np.random.default_rng(sim_seed).permutation(np.arange(N))[:n]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_successive_halving_promotes_by_the_rung_values(seed):
    cells = _first_bracket(seed, 9)
    # early order = final order: the best of the 9 wins; 9·10 s + 3·(30 − 10) s + 1·(100 − 30) s
    sim = Simulator(AGREE, np.random.default_rng(seed), Budget(queries=9))
    assert SuccessiveHalving().search(sim) == min(cells, key=lambda a: FINAL[a])
    assert sim.queries == 9 and sim.seconds == pytest.approx(9 * 10 + 3 * 20 + 1 * 70)
    # early order reversed: the early-best are the final-worst, and halving keeps them: the worst of the 9 wins
    sim = Simulator(REVERSED, np.random.default_rng(seed), Budget(queries=9))
    assert SuccessiveHalving().search(sim) == max(cells, key=lambda a: FINAL[a])


def test_hyperband_runs_its_brackets_and_returns_the_best_at_the_last_epoch():
    sim = Simulator(AGREE, np.random.default_rng(3))
    got = Hyperband().search(sim)  # no budget: brackets repeat until every cell was seen
    assert sim.queries == N and got == 27  # every cell ran; the best at the last epoch is the table's best
    steps = [c for _, c, _ in sim.fidelity_history]
    assert steps[:13] == [0] * 9 + [2] * 3 + [9]  # bracket s = 2: 9 cells at 0.1 epochs, 3 at 0.3, 1 at 1.0
    assert steps[13:19] == [2] * 5 + [9]  # s = 1: ⌈3/2 · 3⌉ = 5 new cells at 0.3 epochs, ⌊5/3⌋ = 1 to the end
    assert steps[19:22] == [9] * 3  # s = 0: ⌈3/1 · 1⌉ = 3 new cells trained to the end
    assert len({a for a, _, _ in sim.fidelity_history[:22]}) == 9 + 5 + 3


def test_a_budget_that_ends_mid_bracket_returns_the_best_at_the_highest_checkpoint_reached():
    sim = Simulator(AGREE, np.random.default_rng(0), Budget(seconds=95))  # 9 cells at rung 0 (90 s), then stop
    got = SuccessiveHalving().search(sim)
    reached = [(v, a) for a, c, v in sim.fidelity_history if c == max(c for _, c, _ in sim.fidelity_history)]
    assert got == min(reached)[1]


def test_the_new_policies_are_in_evaluate_and_cheaper_than_full_training_at_the_same_cells():
    assert {"successive_halving", "hyperband"} <= set(default_policies())
    sh, rs = evaluate(AGREE, [SuccessiveHalving(), RandomSearch()], runs=4, budget=Budget(queries=9))
    import zlib

    assert sh.cost_seconds < rs.cost_seconds  # 9 cells each, but SH trains only one of them to the end
    for r, choice in enumerate(sh.choices):  # each run: the best of the 9 cells its own generator drew
        rng = np.random.default_rng([r, zlib.crc32(b"successive_halving")])
        assert choice == min(rng.permutation(np.arange(N))[:9], key=lambda a: FINAL[a])


def test_a_table_at_an_epoch_answers_as_if_training_had_stopped_there(tmp_path):
    from helpers import key_early, key_test, key_valid, synthetic_table

    from nasbench_ptb.api import Benchmark
    from nasbench_ptb.fidelity import FidelityError

    bench = Benchmark(synthetic_table(tmp_path / "t.h5"))  # checkpoints 0.2 … 1.0; WS at 0.5, 0.75, 1.0
    early = bench.at_epoch(0.45)  # → the checkpoint at 0.4 (index 1)
    rec = early.query(5)
    assert rec.standalone.seeds[0].curve.epochs == (0.2, 0.4)
    # valid at checkpoint 1 = 100 + key_valid + seed + 3·(20 + key_early); mean over the two seeds adds 0.5
    assert rec.standalone.valid_ppl == pytest.approx(100 + key_valid(5) + 0.5 + 3 * (20 + key_early(5)))
    assert np.isnan(rec.standalone.test_ppl)  # tested at epoch 1.0, after the cut
    assert bench.query(5, epoch=0.45) == rec and bench.query(5, epoch=1.0) == bench.query(5)
    # arch 3 diverged on every seed at checkpoint 2: still ok at epoch 0.4, diverged at the full fidelity
    assert early.query(3).standalone.status == "ok" and bench.query(3).standalone.status == "diverged"
    # ranks at 0.4 follow the early order (key_early dominates), not the final one
    ranked = sorted((a for a in range(32) if a != 1), key=lambda a: early.query(a).standalone.rank)
    assert ranked[0] == int(np.argmin([key_early(a) * 3 + key_valid(a) if a != 1 else 1e9 for a in range(32)]))
    # WS: cut to its checkpoints at or before 0.4 — none; at 0.8 its first two, with no test ppl yet
    assert early.query(5).ws == ()
    ws = bench.query(5, epoch=0.8).ws[0]
    assert ws.epochs == (0.5, 0.75) and np.isnan(ws.test_ppl) and bench.query(5).ws[0].test_ppl == 900 - key_test(5)
    with pytest.raises(FidelityError, match="before the table's first checkpoint"):
        bench.query(5, epoch=0.1)
    with pytest.raises(FidelityError, match="not a finite number"):
        bench.query(5, epoch=float("inf"))


def test_a_partial_build_whose_super_nets_are_not_trained_yet_is_cut_at_every_epoch():
    import dataclasses

    from nasbench_ptb.analyses import by_epoch
    from nasbench_ptb.fidelity import at_epoch

    # as the build assembles it before any super-net finished: checkpoint epochs not yet known (NaN)
    untrained = schema.WeightSharing.empty(N, [0, 1], np.full(C, np.nan), np.zeros(C, dtype=int))
    t = dataclasses.replace(AGREE, ws=untrained)
    cut = at_epoch(t, 0.5)
    assert cut.ws is untrained and cut.standalone.valid_ppl.shape[2] == 5
    rows = by_epoch(t)
    assert len(rows) == C and all(r.tau_final == pytest.approx(1) for r in rows[-1:])
    assert all(len(r.ws_tau) == 2 and np.isnan(r.ws_tau).all() for r in rows)  # no super-net: no WS tau


def test_by_epoch_on_tables_whose_early_order_is_known(tmp_path):
    from helpers import synthetic_table

    from nasbench_ptb.analyses import by_epoch

    rows = by_epoch(REVERSED, reference=AGREE)
    assert [r.epoch for r in rows] == EPOCHS.tolist()
    for r in rows[:-1]:  # every checkpoint before the last ranks the cells exactly backwards
        assert r.tau_final == pytest.approx(-1) and r.tau_reference == pytest.approx(-1)
        assert r.top5_overlap == 0.0 and r.tau_top_quarter == pytest.approx(-1)
        assert np.isnan(r.seed_tau) and r.ws_tau == ()  # one seed, no super-nets
    last = rows[-1]
    assert last.tau_final == pytest.approx(1) and last.top5_overlap == 1.0 and last.tau_reference == pytest.approx(1)
    assert all(r.tau_final == pytest.approx(1) and r.top5_overlap == 1.0 for r in by_epoch(AGREE))
    with pytest.raises(ValueError, match="reference table is of space 3node"):
        by_epoch(AGREE, synthetic_table(tmp_path / "t3.h5", "3node"))
    from nasbench_ptb.analyses import seed_pair_taus

    t = synthetic_table(tmp_path / "t.h5")
    syn = by_epoch(t)  # standalone 0.2 … 1.0, super-nets from 0.5 on (the last one diverged)
    assert [len(r.ws_tau) for r in syn] == [0, 0, 3, 3, 3] and np.isnan(syn[-1].ws_tau[2])
    # the seeds differ by a constant but arch 2 diverged on seed 0 only (ranked last there): tau-b just below 1
    assert syn[-1].seed_tau == seed_pair_taus(t)["0-1"][0] and 0.9 < syn[-1].seed_tau < 1


def test_the_cli_takes_an_epoch_and_prints_the_rankings_by_epoch(tmp_path, capsys):
    import json

    from helpers import synthetic_table

    from nasbench_ptb.cli import main

    synthetic_table(tmp_path / "t.h5")
    synthetic_table(tmp_path / "t3.h5", "3node")
    assert main(["query", "tanh:0|relu:1", "--table", str(tmp_path / "t.h5"), "--epoch", "0.45", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["standalone"]["seeds"][0]["curve"]["epochs"] == [0.2, 0.4] and rec["standalone"]["test_ppl"] is None
    assert main(["query", "tanh:0|relu:1", "--table", str(tmp_path / "t.h5"), "--epoch", "0.45"]) == 0
    assert "as after 0.40 epochs" in capsys.readouterr().out
    assert main(["query", "tanh:0|relu:1", "--table", str(tmp_path / "t.h5"), "--epoch", "0.1"]) == 1
    assert "before the table's first checkpoint" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "t.h5"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["by_epoch"]
    assert np.allclose([r["epoch"] for r in rows], [0.2, 0.4, 0.6, 0.8, 1.0]) and rows[-1]["tau_final"] == 1.0
    assert main(["info", str(tmp_path / "t.h5"), "--reference", str(tmp_path / "t.h5")]) == 0
    out = capsys.readouterr().out
    assert "vs --reference" in out and "   1.00    +1.000  +1.000" in out
    assert main(["info", str(tmp_path / "t.h5"), "--reference", str(tmp_path / "t3.h5")]) == 1
    assert "reference table is of space 3node" in capsys.readouterr().err


def test_report_and_info_refuse_counts_below_their_minimum(tmp_path, capsys):
    """Issue 25.15: `report --runs 0` left an empty folder behind a warning; `info --top -3` printed 29 rows."""
    from helpers import synthetic_table

    from nasbench_ptb.cli import main

    synthetic_table(tmp_path / "t.h5")
    assert main(["report", "--table", str(tmp_path / "t.h5"), "--out", str(tmp_path / "rep"), "--runs", "0"]) == 1
    assert "--runs must be at least 1" in capsys.readouterr().err and not (tmp_path / "rep").exists()
    assert main(["info", str(tmp_path / "t.h5"), "--top", "-3"]) == 1
    assert "--top must be ≥ 0, got -3" in capsys.readouterr().err
