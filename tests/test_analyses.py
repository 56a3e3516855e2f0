import numpy as np
import pytest
from scipy.stats import kendalltau

from nasbench_ptb import analyses as an
from nasbench_ptb.cli import main
from nasbench_ptb.schema import Status

from helpers import synthetic_table


def test_tau_b_matches_scipy_with_ties_and_nan_last():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 5, 30).astype(float)  # many ties
        b = rng.integers(0, 5, 30).astype(float)
        assert an.tau_b(a, b) == pytest.approx(kendalltau(a, b).statistic)
    a = np.array([1.0, np.nan, np.nan, 2.0])
    assert an.tau_b(a, np.arange(4.0)) == pytest.approx(kendalltau([1, 9, 9, 2], [0, 1, 2, 3]).statistic)
    assert an.tau_b(np.arange(5.0), np.arange(5.0)) == pytest.approx(1.0)
    assert an.tau_b(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)


def test_legacy_id_sequence_tau_hand_example():
    a, b = np.array([3.0, 1.0, 4.0, 2.0]), np.array([2.0, 1.0, 4.0, 3.0])
    # per-architecture: 5 concordant pairs, 1 discordant -> +2/3
    assert an.tau_b(a, b) == pytest.approx(2 / 3)
    # the paper's code compared the id sequences [1, 3, 0, 2] and [1, 0, 3, 2]: 1 concordant, 5 discordant
    assert an.legacy_id_sequence_tau(a, b) == pytest.approx(-2 / 3)


def test_ranks_and_overlap():
    v = np.array([3.0, 1.0, np.nan, 1.0])
    assert an.ranks(v).tolist() == [3, 1, 4, 1]
    assert an.top_k_overlap(np.array([1.0, 2, 3, 4]), np.array([2.0, 1, 4, 3]), 2) == 1.0
    assert an.top_k_overlap(np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1]), 2) == 0.0


def test_analyses_on_a_known_table(tmp_path):
    t = synthetic_table(tmp_path / "t.h5")  # WS exactly reverses the standalone order
    over = an.ws_tau_over_training(t)
    assert over.tau.shape == (3, 3) and np.isnan(over.tau[2]).all()  # seed 2 diverged
    assert over.tau[0, -1] < -0.8 and over.worst[-1] == over.tau[0, -1]
    ids, sa_rank, ws_rank = an.rank_disorder(t)
    assert 1 not in ids and len(ids) == 31 and sa_rank[ids.tolist().index(0)] == 1
    assert (an.standalone_rank_changes(t)[-1]) == pytest.approx(1.0)
    seeds = an.seed_agreement(t)
    assert seeds["standalone_seed_tau"]["0-1"] > 0.8  # arch 2 diverged on seed 0 only: last there
    twins = an.iso_twins(t)
    assert (2, 16) in [(a, b) for a, b, _, _ in twins]  # tanh:0|sigmoid:0 ~ sigmoid:0|tanh:0


def test_report_writes_figures_and_markdown(tmp_path):
    pytest.importorskip("matplotlib")
    synthetic_table(tmp_path / "t.h5")
    assert main(["report", "--table", str(tmp_path / "t.h5"), "--out", str(tmp_path / "rep"), "--runs", "3"]) == 0
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"report.md", "policies.png", "ws_tau_over_training.png", "rank_disorder.png",
            "standalone_rank_changes.png", "seed_variance.png"} <= names
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "REAL-BEST" in md and "legacy id-sequence tau" in md and "Iso twins" in md
    for png in names - {"report.md"}:
        assert (tmp_path / "rep" / png).read_bytes()[:4] == b"\x89PNG"


def test_seed_pair_tau_compares_only_architectures_both_seeds_were_trained_on(tmp_path):
    t = synthetic_table(tmp_path / "t.h5")
    sa = t.standalone
    sa.status[:, 1] = Status.MISSING  # seed 1 trained on a sample (ids 10..19) only, in seed 0's reverse order
    sa.status[10:20, 1] = Status.OK
    sa.valid_ppl[10:20, 1, -1] = 500.0 - np.arange(10, 20)
    tau, n = an.seed_pair_taus(t)["0-1"]
    assert n == 10 and tau == pytest.approx(-1.0)  # "missing" ranked last would pull this towards +1
    tau, n = an.seed_pair_taus(t, [10, 12, 15, 3])["0-1"]
    assert n == 3 and tau == pytest.approx(-1.0)
    assert an.seed_agreement(t)["standalone_seed_tau"]["0-1"] == pytest.approx(-1.0)
    sa.status[11:20, 1] = Status.MISSING  # one architecture in common: no ranking to compare
    tau, n = an.seed_pair_taus(t)["0-1"]
    assert n == 1 and np.isnan(tau)


def test_amount_of_sharing_on_a_known_table(tmp_path):
    from nasbench_ptb import schema
    t = synthetic_table(tmp_path / "t.h5")  # standalone: ppl grows with id; whole-space WS reverses it
    ids = np.array([4, 6, 9, 12, 20])
    sub = schema.WeightSharing.empty(32, [0, 1], np.array([0.5, 1.0]), [100, 1000], ids)
    sub.valid_ppl[0, 0, ids] = [14.0, 13, 12, 11, 10]  # first checkpoint: reversed
    sub.valid_ppl[0, 1, ids] = [10.0, 11, 12, 13, 14]  # final: the standalone order
    sub.valid_ppl[1, :, ids] = np.nan
    sub.status[:] = [Status.OK, Status.DIVERGED]
    t = schema.Table(t.space, t.preset, t.config, t.standalone, t.ws, t.attrs, sub)
    schema.write(t, tmp_path / "s.h5")
    t = schema.read(tmp_path / "s.h5")
    amount = an.sharing_amount(t)
    assert list(amount.ids) == list(ids) and list(amount.seeds) == [0, 1, 2]
    assert amount.subspace[0] == pytest.approx(1.0) and np.isnan(amount.subspace[1:]).all()
    np.testing.assert_allclose(amount.subspace_over_training[0], [-1.0, 1.0])
    assert amount.whole[:2] == pytest.approx([-1.0, -1.0]) and np.isnan(amount.whole[2])  # WS seed 2 diverged
    with pytest.raises(ValueError, match="no super-nets over a subspace"):
        an.sharing_amount(synthetic_table(tmp_path / "u.h5"))
