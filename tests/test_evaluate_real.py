"""Judging real searches by a table (``evaluate --real``, ``report --real``): numpy only, no torch — the search
files are constructed so that every figure is known by hand."""
import numpy as np
import pytest

from nasbench_ptb import search_results
from nasbench_ptb.cli import main
from nasbench_ptb.space import space

SP = space("2node")


def _constructed_search(algo="nao", final=(27, 27, 4, 0), status=(0, 0, 0, 2)):
    """A search file whose answer is known: on the synthetic table (best 27, worst ok 4 — key_valid 0 and 31)."""
    R, E = len(final), 3
    choice = np.array([[5, 6, f] for f in final])
    est = np.full((R, E), 300.0)
    est[np.array(status) != 0, -1] = np.nan
    secs = np.array([[10.0, 15.0, 20.0 + r] for r in range(R)])  # cumulative: the cost is the last epoch's
    return search_results.Search(algo, np.arange(R), np.array([1 / 3, 2 / 3, 1.0]), choice, est, secs,
                                 np.array(final), np.array(status, dtype=np.int8))


def test_evaluate_real_judges_the_final_choices_by_hand(tmp_path):
    from helpers import key_test, synthetic_table
    from nasbench_ptb.evaluate import evaluate_real, trajectory_ranks

    table = synthetic_table(tmp_path / "2node-x.h5")
    res = search_results.SearchResults(SP, "cpu", {}, {"nao": _constructed_search()})
    (row,) = evaluate_real(table, res)
    v = np.array([100.5, 100.5, 131.5])  # 100 + key_valid + mean seed offset; the diverged 4th run is left out
    t = 90.5 + key_test(np.array([27, 27, 4]))
    assert row.policy == "nao (real, cpu)" and row.runs == 3 and row.choices == (27, 27, 4)
    assert row.valid_mean == pytest.approx(v.mean()) and row.valid_std == pytest.approx(31 / np.sqrt(3))  # ddof 1 of [0, 0, 31] by hand
    assert row.test_mean == pytest.approx(t.mean()) and row.regret == pytest.approx(31 / 3)
    assert row.mean_rank == pytest.approx((1 + 1 + 30) / 3) and row.p_best == pytest.approx(2 / 3)
    assert row.cost_seconds == pytest.approx(np.mean([20.0, 21.0, 22.0]))
    ranks = trajectory_ranks(table, res.searches["nao"])
    assert ranks.shape == (4, 3) and ranks[:, 2].tolist()[:3] == [1.0, 1.0, 30.0] and np.isnan(ranks[3, 2])
    assert len(set(ranks[:, 0])) == 1 and ranks[0, 0] != ranks[0, 1] and not np.isnan(ranks[3, :2]).any()
    with pytest.raises(ValueError, match="^no nao search of the file ended ok$"):
        evaluate_real(table, search_results.SearchResults(SP, "cpu", {}, {"nao": _constructed_search(
            final=(27, 4), status=(2, 2))}))
    with pytest.raises(ValueError, match="ran on 3node"):
        evaluate_real(table, search_results.SearchResults(space("3node"), "cpu", {}, {}))


def test_cli_evaluate_and_report_with_real_searches(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from helpers import synthetic_table

    synthetic_table(tmp_path / "2node-x.h5")
    path = tmp_path / "s.h5"
    search_results.write(search_results.SearchResults(SP, "cpu", {}, {"enas": _constructed_search("enas")}), path)
    assert main(["evaluate", "--table", str(tmp_path / "2node-x.h5"), "--real", str(path), "--runs", "2",
                 "--policies", "random"]) == 0
    out = capsys.readouterr().out
    assert "| enas (real, cpu) | 110.83 ± 17.90 |" in out and "| random (exact expectation over 31 cells) |" in out
    assert main(["report", "--table", str(tmp_path / "2node-x.h5"), "--real", str(path), "--runs", "2",
                 "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert (tmp_path / "rep" / "search_trajectories.png").stat().st_size > 1000
    assert "| enas | 4 |" in md and "enas (real, cpu)" in md
