import numpy as np
import pytest
from scipy.stats import kendalltau

from nasbench_ptb import analyses as an
from nasbench_ptb.cli import main
from nasbench_ptb.schema import Status

from helpers import key_early, key_valid, synthetic_table


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


def _tau(a, b):
    """scipy's tau-b, NaN (no value) ranked last: the expectation, computed apart from the library."""
    return kendalltau(np.where(np.isnan(a), np.inf, a), np.where(np.isnan(b), np.inf, b), variant="b").statistic


def test_analyses_on_a_known_table(tmp_path):
    t = synthetic_table(tmp_path / "t.h5")  # WS's final checkpoint reverses the standalone order
    ids = np.arange(32)
    kept = ids != 1  # id 1 was never trained: out of every comparison
    final = 100.5 + key_valid(ids).astype(float)  # mean over the two ok seeds
    final[2], final[3] = 101 + key_valid(2), np.nan  # 2: seed 1 only; 3 diverged on both
    over = an.ws_tau_over_training(t)
    assert over.tau.shape == (3, 3) and np.isnan(over.tau[2]).all()  # seed 2 diverged
    for c in range(3):  # WS at checkpoint c: 1000 - key_valid + (2 - c)·3·key_early
        ws = 1000.0 - key_valid(ids) + (2 - c) * 3 * key_early(ids)
        assert over.tau[0, c] == pytest.approx(_tau(ws[kept], final[kept])) == pytest.approx(over.tau[1, c])
    assert over.tau[0, -1] < -0.8 and over.tau[0, 0] > over.tau[0, -1] and over.worst[-1] == over.tau[0, -1]
    rd_ids, sa_rank, ws_rank = an.rank_disorder(t)
    assert rd_ids.tolist() == ids[kept].tolist()
    assert sa_rank[rd_ids.tolist().index(27)] == 1 and sa_rank[rd_ids.tolist().index(3)] == 31  # diverged: last
    assert ws_rank[0, rd_ids.tolist().index(4)] == 1 and ws_rank[0, rd_ids.tolist().index(27)] == 31
    assert np.isnan(ws_rank[2]).all()  # the diverged super-net has no final ranking (not 32 cells tied first)
    changes = an.standalone_rank_changes(t)
    for c in range(5):  # checkpoint c adds (4 - c)·(20 + key_early) to each seed's final value
        at_c = final + (4 - c) * (20 + key_early(ids))
        at_c[2] = 101 + key_valid(2) + (4 - c) * (20 + key_early(2))  # seed 1 only
        at_c[3] = np.nan  # diverged runs count at no checkpoint (status-based mean)
        assert changes[c] == pytest.approx(_tau(at_c[kept], final[kept]))
    assert changes[-1] == pytest.approx(1.0) and changes[0] < 0.5  # early rankings differ from the final one
    seeds = an.seed_agreement(t)
    s0, s1 = 100.0 + key_valid(ids), 101.0 + key_valid(ids)
    s0[[2, 3]], s1[3] = np.nan, np.nan
    assert seeds["standalone_seed_tau"]["0-1"] == pytest.approx(_tau(s0[kept], s1[kept]))
    std = dict(zip(seeds["ids"].tolist(), seeds["std"]))
    # sample std (ddof 1) over ok seeds: 100, 101 → √0.5; arch 2 has one ok seed and arch 3 none → no spread
    assert std[5] == pytest.approx(np.sqrt(0.5)) and np.isnan(std[2]) and np.isnan(std[3])
    assert seeds["ws_seed_tau"]["0-1"] == pytest.approx(1.0) and np.isnan(seeds["ws_seed_tau"]["0-2"])
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
    sa.valid_ppl[10:20, 1, -1] = 500.0 - key_valid(np.arange(10, 20))
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
    sub.valid_ppl[0, 0, ids] = 50.0 - key_valid(ids)  # first checkpoint: reversed
    sub.valid_ppl[0, 1, ids] = 10.0 + key_valid(ids)  # final: the standalone order
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


def test_report_shows_the_amount_of_sharing_once_with_or_without_whole_space_supernets(tmp_path):
    pytest.importorskip("matplotlib")
    from nasbench_ptb import schema
    from nasbench_ptb.report import write_report
    t = synthetic_table(tmp_path / "t.h5")
    ids = np.array([4, 6, 9, 12, 20])
    sub = schema.WeightSharing.empty(32, [0], np.array([1.0]), [1000], ids)
    sub.valid_ppl[0, 0, ids] = 10.0 + key_valid(ids)
    sub.status[:] = Status.OK
    for ws in (t.ws, None):
        table = schema.Table(t.space, t.preset, t.config, t.standalone, ws, t.attrs, sub)
        md = write_report(table, tmp_path / f"rep-{ws is None}", runs=2).read_text()
        assert md.count("## Amount of sharing") == 1, "whole-space WS" if ws is not None else "subspace only"


def test_amount_of_sharing_edge_cases(tmp_path):
    """A diverged subspace super-net counts as absent even when its values look finite; ids outside the
    subspace get no subspace taus; a table with no super-nets at all gives empty results; the error is exact."""
    import dataclasses

    from nasbench_ptb import schema
    t = synthetic_table(tmp_path / "t.h5")
    ids = np.array([4, 6, 9, 12, 20])
    sub = schema.WeightSharing.empty(32, [0, 1], np.array([0.5, 1.0]), [100, 1000], ids)
    sub.valid_ppl[:, :, ids] = 10.0 + key_valid(ids)  # both super-nets rank like standalone...
    sub.status[:] = [Status.OK, Status.DIVERGED]  # ...but the second one diverged
    t = dataclasses.replace(t, ws_subspace=sub)
    amount = an.sharing_amount(t)
    assert amount.subspace[0] == pytest.approx(1.0) and np.isnan(amount.subspace[1])
    outside = an.sharing_amount(t, np.array([4, 6, 7]))  # 7 is not in the subspace
    assert np.isnan(outside.subspace).all() and outside.whole[0] == pytest.approx(-1.0)
    bare = an.sharing_amount(dataclasses.replace(t, ws=None, ws_subspace=None), ids)
    assert bare.seeds.size == 0 and bare.whole.size == 0 and bare.subspace_over_training.shape == (0, 0)
    with pytest.raises(ValueError, match=r"^this table has no super-nets over a subspace \(build --ws-archs\)$"):
        an.sharing_amount(dataclasses.replace(t, ws_subspace=None))
