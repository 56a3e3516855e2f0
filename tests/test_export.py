"""export: the long format (Parquet, CSV) checked value by value against the table and read by pandas and
DuckDB; the Syne Tune blackbox deserialized by Syne Tune and searched by ASHA and random search."""
import numpy as np
import pytest

from nasbench_ptb import schema
from nasbench_ptb.cli import main
from nasbench_ptb.export import long_columns, syne_tune_arrays

from helpers import synthetic_table


@pytest.fixture()
def table(tmp_path):
    return synthetic_table(tmp_path / "t.h5")


def test_long_columns_hold_every_value_once_and_never_impute(table):
    cols = long_columns(table)
    part = cols["part"]
    assert (part == "standalone").sum() == 32 * 2 * 5 and (part == "ws").sum() == 3 * 3 * 32
    sa = table.standalone
    row = np.flatnonzero((part == "standalone") & (cols["id"] == 5) & (cols["seed"] == 1) & (cols["checkpoint"] == 4))
    (r,) = row
    assert cols["valid_ppl"][r] == sa.valid_ppl[5, 1, 4] and cols["test_ppl"][r] == sa.test_ppl[5, 1]
    assert cols["genotype"][r] == "tanh:0|relu:1" and cols["node2_op"][r] == "relu" and cols["node2_pred"][r] == 1
    assert cols["status"][r] == "ok" and cols["epoch"][r] == sa.epochs[4]
    early = (part == "standalone") & (cols["checkpoint"] < 4)
    assert np.isnan(cols["test_ppl"][early]).all() and np.isnan(cols["best_epoch"][early]).all()
    missing = (part == "standalone") & (cols["id"] == 1)
    assert (cols["status"][missing] == "missing").all() and np.isnan(cols["valid_ppl"][missing]).all()
    div = (part == "standalone") & (cols["id"] == 2) & (cols["seed"] == 0)
    assert (cols["status"][div] == "diverged").all()
    assert np.isfinite(cols["valid_ppl"][div][:2]).all() and np.isnan(cols["valid_ppl"][div][2:]).all()
    w = np.flatnonzero((part == "ws") & (cols["id"] == 7) & (cols["seed"] == 1) & (cols["checkpoint"] == 2))[0]
    assert cols["valid_ppl"][w] == table.ws.valid_ppl[1, 2, 7] and cols["samples"][w] == 7
    assert cols["train_loss"][w] == table.ws.train_loss[1, 2] and cols["test_ppl"][w] == table.ws.test_ppl[1, 7]
    assert (cols["status"][(part == "ws") & (cols["seed"] == 2)] == "diverged").all()


def test_parquet_and_csv_read_back_by_pandas_and_duckdb(table, tmp_path):
    pd = pytest.importorskip("pandas")
    duckdb = pytest.importorskip("duckdb")
    pytest.importorskip("pyarrow")
    t = tmp_path / "t.h5"
    assert main(["export", str(t), "--format", "parquet", "--out", str(tmp_path / "t.parquet")]) == 0
    assert main(["export", str(t), "--format", "csv", "--out", str(tmp_path / "t.csv")]) == 0
    df = pd.read_parquet(tmp_path / "t.parquet")
    csv = pd.read_csv(tmp_path / "t.csv")
    assert len(df) == len(csv) == 320 + 288 and list(df.columns) == list(csv.columns)
    assert np.allclose(df["valid_ppl"], csv["valid_ppl"], equal_nan=True)
    best = duckdb.sql(f"select genotype, avg(valid_ppl) v from '{tmp_path / 't.parquet'}' where part = 'standalone' "
                      "and checkpoint = 4 and status = 'ok' group by genotype order by v limit 1").fetchall()
    assert best[0][0] == table.space.from_id(27).canonical and best[0][1] == pytest.approx(100.5)
    n = duckdb.sql(f"select count(*) from '{tmp_path / 't.parquet'}' where valid_ppl is null or isnan(valid_ppl)")
    assert n.fetchall()[0][0] == 2 * 5 + 3 * 3 + 1 * 3 * 32  # missing arch 1, diverged runs, the diverged super-net


def test_syne_tune_arrays_represent_divergence_and_refuse_missing_runs(table):
    with pytest.raises(ValueError, match="2 standalone runs are missing .architectures 1.; Syne Tune has no"):
        syne_tune_arrays(table)
    table.standalone.status[1] = schema.Status.OK
    table.standalone.valid_ppl[1] = 150.0
    table.standalone.test_ppl[1] = 140.0
    table.standalone.seconds[1] = table.standalone.seconds[0]
    table.config["ntokens"] = 40
    arr = syne_tune_arrays(table)
    obj = arr["objectives"]
    assert obj.shape == (32, 2, 5, 3) and np.isfinite(obj).all() and arr["fidelities"].tolist() == [1, 2, 3, 4, 5]
    assert obj[2, 0, 1, 0] == table.standalone.valid_ppl[2, 0, 1] and (obj[2, 0, 2:, 0] == 40).all()  # diverged
    assert (obj[2, 0, :, 1] == 40).all() and (obj[5, 1, :, 1] == table.standalone.test_ppl[5, 1]).all()
    assert obj[2, 0, 4, 2] == table.standalone.seconds[2, 0, 1]  # the clock stopped when the run diverged
    assert arr["hyperparameters"]["node2_op"][5] == "relu"


def test_syne_tune_blackbox_is_searched_by_asha_and_random_search(table, tmp_path, monkeypatch):
    pytest.importorskip("syne_tune")
    monkeypatch.setenv("SYNETUNE_FOLDER", str(tmp_path / "syne-tune"))  # its result files stay in the test's folder
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
    from syne_tune.blackbox_repository.blackbox_tabular import deserialize
    from syne_tune.blackbox_repository.simulated_tabular_backend import UserBlackboxBackend
    from syne_tune.optimizer.baselines import ASHA, RandomSearch

    table.standalone.status[1] = schema.Status.OK
    table.standalone.valid_ppl[1], table.standalone.test_ppl[1] = 150.0, 140.0
    table.standalone.seconds[1] = table.standalone.seconds[0]
    table.config["ntokens"] = 40  # a diverged run reads as ppl 40 (uniform over the vocabulary)
    schema.write(table, tmp_path / "full.h5")
    assert main(["export", str(tmp_path / "full.h5"), "--format", "syne-tune", "--out", str(tmp_path / "bb")]) == 0
    bb = deserialize(str(tmp_path / "bb"))["ptb-2node"]
    assert len(bb.hyperparameters) == 32 and bb.objectives_names[0] == "metric_valid_ppl"
    config = {**bb.configuration_space, "hp_checkpoint": 5}
    for scheduler in (ASHA(config, metric="metric_valid_ppl", time_attr="hp_checkpoint", max_t=5, random_seed=0),
                      RandomSearch(config, metrics=["metric_valid_ppl"], random_seed=0)):
        backend = UserBlackboxBackend(blackbox=bb, elapsed_time_attr="metric_elapsed_time",
                                      max_resource_attr="hp_checkpoint")
        tuner = Tuner(trial_backend=backend, scheduler=scheduler, n_workers=2, sleep_time=0, save_tuner=False,
                      stop_criterion=StoppingCriterion(max_num_trials_started=24), callbacks=[SimulatorCallback()],
                      print_update_interval=10_000, results_update_interval=10_000)
        tuner.run()
        df = tuner.tuning_status.get_dataframe()
        assert tuner.tuning_status.num_trials_started >= 24
        # what the tuner saw is the table: each trial's last reported value is its genotype's value at the last
        # checkpoint it reached, for one of its seeds (the backend draws a seed per trial)
        sa = table.standalone
        reported = df[df["iter"] > 0]
        assert len(reported) >= 20
        for _, row in reported.iterrows():
            g = table.space.parse(f"{row.node1_op}:{row.node1_pred}|{row.node2_op}:{row.node2_pred}")
            c = int(row["iter"]) - 1
            seen = row["metric_valid_ppl"]
            candidates = np.where(np.isfinite(sa.valid_ppl[g.id, :, c]), sa.valid_ppl[g.id, :, c], 40.0)
            assert np.isclose(candidates, seen, rtol=1e-5).any(), (g.canonical, c, seen)


def test_export_refuses_bad_input_in_one_line(table, tmp_path, capsys):
    t = tmp_path / "t.h5"
    assert main(["export", str(t), "--format", "syne-tune", "--out", str(tmp_path / "bb")]) == 1
    assert "missing" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope.h5"), "--format", "csv", "--out", str(tmp_path / "x.csv")]) == 1
    assert "no such table file" in capsys.readouterr().err
    assert main(["export", str(t), "--format", "csv", "--out", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err


def test_syne_tune_fidelity_is_the_epoch_for_a_multi_epoch_table(table):
    """Checkpoints at 0.5, 1, 2, 3: the blackbox's fidelity is hp_epoch = 1..3 (the sub-epoch one left out);
    a table without a checkpoint at every whole epoch keeps the checkpoint index."""
    import dataclasses

    sa = table.standalone
    sa.status[1] = schema.Status.OK  # the missing architecture trained, so the blackbox has every run
    sa.valid_ppl[1], sa.test_ppl[1], sa.seconds[1] = 150.0, 140.0, sa.seconds[0]
    cut = dataclasses.replace(sa, epochs=np.array([0.5, 1.0005, 2.0, 3.001]), train_loss=sa.train_loss[:, :, 1:],
                              valid_ppl=sa.valid_ppl[:, :, 1:], seconds=sa.seconds[:, :, 1:])
    multi = dataclasses.replace(table, standalone=cut)
    arr = syne_tune_arrays(multi)
    assert arr["fidelity_name"] == "hp_epoch" and arr["fidelities"].tolist() == [1, 2, 3]
    assert arr["epochs"].tolist() == [1.0005, 2.0, 3.001] and arr["left_out_epochs"].tolist() == [0.5]
    assert (arr["objectives"][:, :, :, 0] == np.where(np.isfinite(cut.valid_ppl[:, :, 1:]), cut.valid_ppl[:, :, 1:],
                                                      arr["objectives"][:, :, :, 0])).all()
    assert arr["objectives"][5, 1, 0, 0] == cut.valid_ppl[5, 1, 1]  # epoch 1 is the second checkpoint
    gap = dataclasses.replace(table, standalone=dataclasses.replace(cut, epochs=np.array([0.5, 1.0, 2.0, 4.0])))
    assert syne_tune_arrays(gap)["fidelity_name"] == "hp_checkpoint"  # no checkpoint at epoch 3
    assert syne_tune_arrays(table)["fidelity_name"] == "hp_checkpoint"  # the 1-epoch table: checkpoints 0.2 … 1.0


def test_export_never_destroys_its_input_or_an_existing_file(table, tmp_path, capsys):
    """Issue 25.3: `export t.h5 --format csv --out t.h5` destroyed its input, and any file was overwritten."""
    schema.write(table, tmp_path / "t.h5")
    before = (tmp_path / "t.h5").read_bytes()
    for extra in ((), ("--force",)):
        assert main(["export", str(tmp_path / "t.h5"), "--format", "csv", "--out", str(tmp_path / "t.h5"), *extra]) == 1
        assert "is the table being exported" in capsys.readouterr().err
    assert (tmp_path / "t.h5").read_bytes() == before
    (tmp_path / "notes.csv").write_text("mine")
    assert main(["export", str(tmp_path / "t.h5"), "--format", "csv", "--out", str(tmp_path / "notes.csv")]) == 1
    assert "notes.csv exists; give another --out, or --force" in capsys.readouterr().err
    assert (tmp_path / "notes.csv").read_text() == "mine"
    assert main(["export", str(tmp_path / "t.h5"), "--format", "csv", "--out", str(tmp_path / "notes.csv"),
                 "--force"]) == 0
    assert (tmp_path / "notes.csv").read_text().startswith("part,")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_failed_export_leaves_the_old_file_in_place(table, tmp_path, monkeypatch):
    import pandas as pd

    from nasbench_ptb.export import export

    (tmp_path / "out.csv").write_text("old")

    def full(self, path, *a, **k):
        with open(path, "w") as fh:
            fh.write("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    with pytest.raises(OSError):
        export(table, "csv", tmp_path / "out.csv", force=True)
    assert (tmp_path / "out.csv").read_text() == "old"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the half-written temporary is gone


def test_a_syne_tune_folder_is_replaced_only_with_force_and_whole(table, tmp_path, capsys):
    pytest.importorskip("syne_tune")
    sa = table.standalone
    sa.status[1] = schema.Status.OK
    sa.valid_ppl[1], sa.test_ppl[1], sa.seconds[1] = 150.0, 140.0, sa.seconds[0]
    schema.write(table, tmp_path / "full.h5")
    args = ["export", str(tmp_path / "full.h5"), "--format", "syne-tune", "--out", str(tmp_path / "bb")]
    assert main(args) == 0
    (tmp_path / "bb" / "mine.txt").write_text("x")
    assert main(args) == 1 and "bb exists" in capsys.readouterr().err
    assert (tmp_path / "bb" / "mine.txt").exists()
    assert main([*args, "--force"]) == 0
    assert not (tmp_path / "bb" / "mine.txt").exists() and any((tmp_path / "bb").iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_long_format_carries_the_proxies_as_their_own_part(table, tmp_path):
    from helpers import with_proxies

    values = np.arange(64.0).reshape(32, 2)
    cols = long_columns(with_proxies(table, [0, 1], {"synflow": values}))
    part = cols["part"]
    assert (part == "proxies").sum() == 32 * 2 and (part == "standalone").sum() == 32 * 2 * 5
    (r,) = np.flatnonzero((part == "proxies") & (cols["id"] == 9) & (cols["seed"] == 1))
    assert cols["proxy_synflow"][r] == values[9, 1] == 19.0 and cols["genotype"][r] == table.space.from_id(9).canonical
    assert cols["checkpoint"][r] == -1 and cols["epoch"][r] == 0.0 and cols["status"][r] == "ok"
    assert np.isnan(cols["valid_ppl"][part == "proxies"]).all() and np.isnan(cols["proxy_grasp"][r])
    assert np.isnan(cols["proxy_synflow"][part != "proxies"]).all()  # never spread onto training rows
    assert "proxy_synflow" not in long_columns(table)  # a table without proxies has no such columns
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    schema.write(with_proxies(table, [0, 1], {"synflow": values}), tmp_path / "z.h5")
    assert main(["export", str(tmp_path / "z.h5"), "--format", "parquet", "--out", str(tmp_path / "z.parquet")]) == 0
    df = pd.read_parquet(tmp_path / "z.parquet")
    assert df.loc[(df.part == "proxies") & (df.id == 9) & (df.seed == 1), "proxy_synflow"].item() == 19.0
