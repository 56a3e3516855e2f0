"""verify and train: the judging math by hand, and a table built by the test reproduced by retraining."""
import json

import numpy as np
import pytest

from nasbench_ptb import schema
from nasbench_ptb.cli import main
from nasbench_ptb.verification import compare, default_archs, pooled_seed_sd, pooled_z, z_score

from helpers import synthetic_table


def test_z_score_by_hand():
    assert z_score((100.0, 2.0, 4), (103.0, 2.0, 4)) == pytest.approx(3.0 / np.sqrt(4 / 4 + 4 / 4))
    # a single seed has no std (NaN): the other side's stands in
    assert z_score((100.0, 3.0, 2), (97.0, np.nan, 1)) == pytest.approx(-3.0 / np.sqrt(9 / 2 + 9 / 1))
    assert np.isnan(z_score((100.0, np.nan, 1), (101.0, np.nan, 1)))
    assert z_score((100.0, 0.0, 2), (100.0, 0.0, 2)) == 0.0 and z_score((100.0, 0.0, 2), (101.0, 0.0, 2)) == np.inf
    assert np.isnan(z_score((100.0, 1.0, 2), (np.nan, np.nan, 0)))


def test_pooled_seed_sd_and_its_z_by_hand():
    values = np.array([[10.0, 12.0], [20.0, np.nan], [30.0, 31.0], [5.0, 9.0]])
    # deviations²: (1 + 1) + (0.25 + 0.25) + (4 + 4) = 10.5 over (1 + 1 + 1) degrees of freedom; the lone 20 is out
    assert pooled_seed_sd(values) == pytest.approx(np.sqrt(10.5 / 3))
    assert np.isnan(pooled_seed_sd(np.array([[1.0, np.nan], [2.0, np.nan]])))
    sd = 2.0
    assert pooled_z((100.0, 0.1, 2), (103.0, 0.0, 2), sd) == pytest.approx(3.0 / (2.0 * np.sqrt(1 / 2 + 1 / 2)))
    assert pooled_z((100.0, np.nan, 1), (98.0, np.nan, 3), sd) == pytest.approx(-2.0 / (2.0 * np.sqrt(1 + 1 / 3)))
    assert np.isnan(pooled_z((100.0, 1.0, 2), (np.nan, np.nan, 0), sd)) and np.isnan(pooled_z((1, 0, 1), (2, 0, 1), 0.0))


def test_default_archs_and_compare_on_the_synthetic_table(tmp_path):
    table = synthetic_table(tmp_path / "t.h5")  # final valid = 100 + key_valid(id) + seed; best 27, then 14, 1 (missing)...
    archs = default_archs(table)
    order = [a for a in np.argsort((7 * np.arange(32) + 3) % 32) if a not in (1, 3)]  # 1 missing, 3 diverged
    assert archs == [int(order[0]), int(order[1]), int(order[2]), int(order[len(order) // 2])]
    assert archs[0] == 27
    # retrained: the table's order reversed for the first two, and one diverged run
    valid = np.array([[110.0, 112.0], [100.0, 102.0], [120.0, np.nan], [130.0, 130.0]])
    rows, tau = compare(table, archs, valid, valid - 10)
    assert rows[0].table_valid == pytest.approx((100.5, np.std([100, 101], ddof=1), 2))
    assert rows[2].retrained_valid[2] == 1 and rows[0].retrained_valid == pytest.approx((111.0, np.sqrt(2), 2))
    assert rows[0].z_valid == pytest.approx((111.0 - 100.5) / np.sqrt(0.5 / 2 + 2 / 2))
    # every ok cell's two seeds differ by 1 (final valid 100 + key + seed): pooled sd sqrt(0.5); test likewise
    assert rows[0].z_valid_pooled == pytest.approx((111.0 - 100.5) / (np.sqrt(0.5) * np.sqrt(1 / 2 + 1 / 2)))
    assert rows[2].z_test_pooled == pytest.approx((110.0 - rows[2].table_test[0]) / (np.sqrt(0.5) * np.sqrt(1.5)))
    assert tau == pytest.approx(2 / 3)  # 5 of 6 pairs agree: (5 − 1) / 6


def test_verify_reproduces_a_table_built_by_the_test_and_train_writes_curves(tmp_path, ptb_path, capsys):
    t = tmp_path / "t.h5"
    common = ["--preset", "smoke", "--data", str(ptb_path)]
    assert main(["build", "--space", "2node", "--mode", "standalone", "--archs", "4-7", "--seeds", "2", "--quiet",
                 "--out", str(t), *common]) == 0
    capsys.readouterr()
    assert main(["verify", "--table", str(t), "--reuse-seeds", "4", "5", "--json", "--data", str(ptb_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    table = schema.read(t)
    assert out["seeds"] == [0, 1] and [a["arch"] for a in out["archs"]] == [4, 5]
    for a in out["archs"]:  # same seeds, same protocol: the same numbers (the slot engine's contract)
        want = table.standalone.valid_ppl[a["arch"], :, -1]
        assert a["retrained_valid"][0] == pytest.approx(want.mean(), rel=1e-5)
        assert a["z_valid"] == pytest.approx(0.0, abs=1e-3)
    assert main(["verify", "--table", str(t), "--seeds", "1", "--data", str(ptb_path)]) == 0
    text = capsys.readouterr().out
    assert "with seeds 2 " in text and text.count("| ") >= 4 * 7  # default: top 3 and the median of the 4 trained
    for bad, message in ((["verify", "--table", str(t), "tanh:0|relu:1|relu:2"], "in space 2node"),
                         (["verify", "--table", str(t), "--seeds", "0"], "--seeds must be at least 1"),
                         (["verify", "--table", str(t), "5", "--set", "bogus=1"], "unknown preset field"),
                         (["train", "7"], "needs --space")):
        assert main(bad) == 1, bad
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    out_t = tmp_path / "one.h5"
    assert main(["train", "relu:0|tanh:1", "--seeds", "1", "--out", str(out_t), *common]) == 0
    text = capsys.readouterr().out
    one = schema.read(out_t)
    assert schema.Status(one.standalone.status[12, 0]) == schema.Status.OK and "hash 075eea6d27e6313b" in text
    assert f"{one.standalone.valid_ppl[12, 0, -1]:8.2f}" in text


def test_z_score_edge_cases_by_hand():
    # a single table seed has no std: the retrained side's stands in for it
    assert z_score((100.0, np.nan, 1), (103.0, 2.0, 4)) == pytest.approx(3.0 / np.sqrt(4 / 1 + 4 / 4))
    assert z_score((100.0, 0.0, 2), (99.0, 0.0, 2)) == -np.inf  # lower, with no spread on either side


def test_compare_edge_cases_and_the_printed_table(tmp_path):
    from nasbench_ptb.verification import format_rows

    table = synthetic_table(tmp_path / "t.h5")
    # two architectures: a tau exists; one retrained seed only (no std); one with none (every run diverged)
    rows, tau = compare(table, [27, 14], np.array([[101.0, np.nan], [np.nan, np.nan]]), np.array([[95.0], [96.0]]))
    assert [r.genotype for r in rows] == ["identity:0|identity:0", table.space.from_id(14).canonical]
    assert rows[0].retrained_valid[0] == 101.0 and np.isnan(rows[0].retrained_valid[1]) and rows[0].retrained_valid[2] == 1
    assert np.isnan(rows[1].retrained_valid[0]) and np.isnan(rows[1].retrained_valid[1]) and rows[1].retrained_valid[2] == 0
    assert tau == 1.0  # every retrained run diverged: ranked last (NaN → last), as the table ranks 14 below 27
    rows2, tau2 = compare(table, [27, 14], np.array([[104.0], [101.0]]), np.array([[95.0], [96.0]]))
    assert tau2 == pytest.approx(-1.0)  # two architectures, order swapped
    _, tau1 = compare(table, [27], np.array([[101.0]]), np.array([[95.0]]))
    assert np.isnan(tau1)
    assert format_rows(rows, tau).split("\n") == [
        "| architecture | table valid | retrained valid | z | z (pooled sd) | table test | retrained test | z | "
        "z (pooled sd) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| identity:0|identity:0 (id 27) | 100.50 ± 0.71 (2) | 101.00 (1) | {rows[0].z_valid:+.2f} | "
        f"{rows[0].z_valid_pooled:+.2f} | 104.50 ± 0.71 (2) | 95.00 (1) | {rows[0].z_test:+.2f} | "
        f"{rows[0].z_test_pooled:+.2f} |",
        f"| {rows[1].genotype} (id 14) | {rows[1].table_valid[0]:.2f} ± 0.71 (2) | – | n/a | n/a | "
        f"{rows[1].table_test[0]:.2f} ± 0.71 (2) | 96.00 (1) | {rows[1].z_test:+.2f} | {rows[1].z_test_pooled:+.2f} |",
        "",
        "Kendall tau-b, retrained vs table ranking of these 2 architectures: +1.000",
    ]
    assert format_rows(rows[:1], float("nan")).endswith("of these 1 architectures: n/a")
    assert format_rows(rows2, tau2).endswith("of these 2 architectures: -1.000")


def test_default_archs_with_one_cell_ties_and_none(tmp_path):
    import dataclasses

    from nasbench_ptb.schema import Status

    table = synthetic_table(tmp_path / "t.h5")
    sa = table.standalone
    groups = (np.arange(32) * 5) % 3  # three tied groups, interleaved in id order
    tied = np.where(np.isnan(sa.valid_ppl), np.nan, 200.0 + groups[:, None, None])
    ok_ids = [a for a in range(32) if a not in (1, 3)]
    order = sorted(ok_ids, key=lambda a: (groups[a], a))  # ties in id order (a stable sort)
    assert default_archs(dataclasses.replace(table, standalone=dataclasses.replace(sa, valid_ppl=tied))) == \
        [order[0], order[1], order[2], order[len(order) // 2]]
    only = np.full(sa.status.shape, Status.MISSING, dtype=sa.status.dtype)
    only[5] = Status.OK
    assert default_archs(dataclasses.replace(table, standalone=dataclasses.replace(sa, status=only))) == [5]
    none = dataclasses.replace(sa, status=np.full(sa.status.shape, Status.MISSING, dtype=sa.status.dtype))
    with pytest.raises(ValueError, match="^the table has no ok standalone run to verify$"):
        default_archs(dataclasses.replace(table, standalone=none))
