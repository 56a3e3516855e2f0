"""End-to-end builds through the CLI: coverage, resume after SIGKILL, clear errors."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from nasbench_ptb import schema
from nasbench_ptb.cli import main
from nasbench_ptb.schema import Status

from helpers import kill_after_parts

# Small enough for seconds per unit on one core, real PTB and the real 10k vocabulary.
FAST = ["--preset", "smoke", "--set", "train_tokens=600", "--set", "valid_tokens=200", "--set", "test_tokens=200",
        "--set", "checkpoints=3", "--epochs", "1", "--quiet", "--mode", "standalone"]
WS = ["--set", "ws_epochs=1", "--set", "ws_checkpoints=2", "--set", "ws_valid_tokens=200",
      "--set", "ws_final_valid_tokens=400", "--set", "ws_slots_per_unit=3"]


def build(tmp_path, ptb_path, *extra, out="t.h5"):
    return main(["build", "--space", "2node", "--data", str(ptb_path), "--out", str(tmp_path / out), *FAST, *extra])


def test_partial_build_is_visible_through_status(tmp_path, ptb_path, capsys):
    assert build(tmp_path, ptb_path, "--archs", "3,tanh:0|relu:1", "--archs", "30-31", "--seeds", "2") == 0
    table = schema.read(tmp_path / "t.h5")
    sa = table.standalone
    done = [3, parse_id("tanh:0|relu:1"), 30, 31]
    assert sa.status.shape == (32, 2) and list(sa.seeds) == [0, 1]
    assert (sa.status[done] == Status.OK).all()
    missing = np.setdiff1d(np.arange(32), done)
    assert (sa.status[missing] == Status.MISSING).all()
    assert np.isnan(sa.valid_ppl[missing]).all() and np.isnan(sa.test_ppl[missing]).all()
    assert np.isfinite(sa.valid_ppl[done]).all() and np.isfinite(sa.test_ppl[done]).all()
    assert (np.diff(sa.seconds[done], axis=-1) > 0).all() and len(sa.epochs) == 3
    assert table.config["train_tokens"] == 600 and table.config["checkpoints"] == 3  # overrides recorded
    assert table.attrs["software"]["torch"] and table.attrs["ptb_sha256"]["train"].startswith("fcea919f")
    # seeds differ, so runs differ
    assert not np.array_equal(sa.valid_ppl[3, 0], sa.valid_ppl[3, 1])
    assert main(["info", str(tmp_path / "t.h5")]) == 0
    out = capsys.readouterr().out
    assert "8/64 runs ok" in out and "56 missing" in out and "(partial)" in out


def parse_id(text):
    from nasbench_ptb.space import parse
    return parse(text).id


def _cli(*args, env=None):
    return [sys.executable, "-m", "nasbench_ptb.cli", *args]


def test_sigkill_mid_build_then_resume_gives_the_same_table(tmp_path, ptb_path):
    args = ["build", "--space", "2node", "--data", str(ptb_path), "--archs", "0-7", *FAST,
            "--set", "slots_per_unit=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parts = tmp_path / "killed.h5.parts"
    finished = kill_after_parts(_cli(*args, "--out", str(tmp_path / "killed.h5")), parts, 1, env)
    assert 1 <= len(finished) < 4, "the kill should land between units"
    assert not (tmp_path / "killed.h5").exists()  # no half-written table

    resumed = subprocess.run(_cli(*args, "--out", str(tmp_path / "killed.h5")), env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    for name, mtime in finished.items():  # finished units were not redone
        assert (parts / name).stat().st_mtime_ns == mtime
    straight = subprocess.run(_cli(*args, "--out", str(tmp_path / "straight.h5")), env=env, capture_output=True,
                              text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    a, b = schema.read(tmp_path / "killed.h5"), schema.read(tmp_path / "straight.h5")
    assert (a.standalone.status[:8] == Status.OK).all()
    for name in ("valid_ppl", "train_loss", "test_ppl"):
        np.testing.assert_allclose(getattr(a.standalone, name), getattr(b.standalone, name), rtol=1e-5)


def test_rerun_with_other_config_is_refused_and_keeps_results(tmp_path, ptb_path, capsys):
    assert build(tmp_path, ptb_path, "--archs", "0") == 0
    before = (tmp_path / "t.h5").read_bytes()
    assert build(tmp_path, ptb_path, "--archs", "0", "--set", "lr=5") == 1
    err = capsys.readouterr().err
    assert "holds standalone results of another configuration" in err and err.count("\n") == 1
    assert (tmp_path / "t.h5").read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["build", "--space", "fivenode"], "unknown search space"),
        (["build", "--space", "2node", "--preset", "huge"], "unknown preset 'huge'"),
        (["build", "--space", "2node", "--set", "learning=3"], "unknown preset field 'learning'"),
        (["build", "--space", "2node", "--set", "lr"], "expected KEY=VALUE"),
        (["build", "--space", "2node", "--epochs", "many"], "epochs='many'"),
        (["build", "--space", "2node", "--archs", "tanh:0|tanh:5"], "predecessor 5"),
        (["build", "--space", "2node", "--archs", "99"], "out of range"),
        (["build", "--space", "2node", "--seeds", "0"], "--seeds must be at least 1"),
        (["build", "--space", "2node", "--ws-seeds", "0"], "--ws-seeds must be at least 1"),
        (["build", "--space", "2node", "--set", "ws_bptt=wobbly"], "ws_bptt must be"),
        (["build", "--space", "2node", "--out", "/proc/nasbench/t.h5"], "cannot write the output"),
        (["build", "--space", "2node", "--data", "/nonexistent/ptb"], "/nonexistent/ptb is not a folder; it must hold the three PTB files"),
        (["build", "--space", "2node", "--time-limit", "-1"], "--time-limit must be a number of minutes"),
        (["build", "--space", "2node", "--workers", "0"], "--workers must be at least 1, got 0"),
        (["build", "--space", "2node", "--workers", "2", "--executor", "ray"], "--workers applies to --executor local"),
        (["info", "/nonexistent.h5"], "no such table file"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_usage_errors_are_one_line(tmp_path):
    res = subprocess.run(_cli("build", "--space", "2node", "--device", "tpu"), capture_output=True, text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "--device" in res.stderr


def test_missing_data_without_network(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "NASBENCH_PTB_URL": "http://127.0.0.1:9/ptb"}
    env.pop("NASBENCH_PTB_DATA", None)
    res = subprocess.run(_cli("build", "--space", "2node", "--out", str(tmp_path / "x.h5")), env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "cannot download" in res.stderr and "Traceback" not in res.stderr


def test_corrupt_part_is_retrained(tmp_path, ptb_path):
    assert build(tmp_path, ptb_path, "--archs", "5") == 0
    part = next((tmp_path / "t.h5.parts").glob("unit-*.h5"))
    good = schema.read(tmp_path / "t.h5").standalone.valid_ppl[5].copy()
    part.write_bytes(b"garbage")
    assert build(tmp_path, ptb_path, "--archs", "5") == 0
    with h5py.File(part) as f:
        assert "valid_ppl" in f
    np.testing.assert_allclose(schema.read(tmp_path / "t.h5").standalone.valid_ppl[5], good, rtol=1e-5)


def test_both_parts_end_to_end_and_ws_added_later(tmp_path, ptb_path, capsys):
    assert build(tmp_path, ptb_path, "--archs", "0-31") == 0
    assert schema.read(tmp_path / "t.h5").ws is None
    # a later WS build into the same --out keeps the standalone results and adds the super-nets
    assert build(tmp_path, ptb_path, *WS, "--mode", "ws", "--ws-seeds", "3") == 0
    ws_part = next((tmp_path / "t.h5.parts").glob("ws-*.h5"))
    mtime = ws_part.stat().st_mtime_ns
    assert build(tmp_path, ptb_path, *WS, "--mode", "ws", "--ws-seeds", "3") == 0  # finished: nothing retrained
    assert ws_part.stat().st_mtime_ns == mtime
    table = schema.read(tmp_path / "t.h5")
    assert (table.standalone.status == Status.OK).all()
    ws = table.ws
    assert list(ws.status) == [Status.OK] * 3 and ws.valid_ppl.shape == (3, 2, 32)
    assert np.isfinite(ws.valid_ppl).all() and np.isfinite(ws.test_ppl).all()
    assert ws.valid_tokens.tolist() == [196, 396]  # smoke eval batch 4: (rows - 1) · 4 predicted tokens
    assert (ws.samples.sum(axis=1) == ws.samples[0].sum()).all()
    capsys.readouterr()
    assert main(["info", str(tmp_path / "t.h5")]) == 0
    out = capsys.readouterr().out
    for seed in range(3):
        assert f"ws seed {seed}: Kendall tau-b vs standalone = " in out
    assert "3/3 super-nets ok" in out


def test_units_are_planned_per_run_so_overlapping_requests_train_each_run_once():
    from nasbench_ptb.builder.build import plan_units
    done = frozenset({(1, 0), (2, 0), (5, 1)})
    units = plan_units(range(6), [0, 1], 4, done)
    runs = [(a, s) for u in units for a, s in zip(u.arch_ids, u.seeds)]
    assert runs == [(0, 0), (3, 0), (4, 0), (5, 0), (0, 1), (1, 1), (2, 1), (3, 1), (4, 1)]  # seed, then id
    assert [len(u.seeds) for u in units] == [4, 4, 1]
    # a rerun after the first unit finished plans the same remaining units
    first = frozenset(zip(units[0].arch_ids, units[0].seeds))
    assert [u.key for u in plan_units(range(6), [0, 1], 4, done | first)] == [u.key for u in units[1:]]


def test_sample_gets_extra_seeds_recorded_in_the_table_and_compared_seed_to_seed(tmp_path, ptb_path, capsys):
    from nasbench_ptb.sampling import stratified_sample
    from nasbench_ptb.space import space
    assert build(tmp_path, ptb_path, "--archs", "0-9", "--seeds", "1") == 0
    assert build(tmp_path, ptb_path, "--sample", "6", "--sample-seed", "2", "--seeds", "2") == 0
    capsys.readouterr()
    table = schema.read(tmp_path / "t.h5")
    ids = stratified_sample(space("2node"), 6, 2).ids
    sa = table.standalone
    assert (sa.status[list(ids), 1] == Status.OK).all()  # seed 1 on the sample, and only there
    assert (sa.status[np.setdiff1d(np.arange(32), ids), 1] == Status.MISSING).all()
    assert set(np.flatnonzero(sa.status[:, 0] == Status.OK)) == set(range(10)) | set(ids)
    [recorded] = table.attrs["samples"]
    assert recorded["ids"] == list(ids) and recorded["seed"] == 2 and recorded["n"] == 6 and recorded["seeds"] == [0, 1]
    assert main(["info", str(tmp_path / "t.h5")]) == 0
    out = capsys.readouterr().out
    # compared over the 6 cells with both seeds, not over all cells with "missing" ranked last
    assert "0-1 on all: Kendall tau-b" in out and "over 6 architectures" in out
    assert "0-1 on the sample of 6 (seed 2)" in out


def test_sample_errors_name_the_problem(tmp_path, ptb_path, capsys):
    assert build(tmp_path, ptb_path, "--sample", "40") == 1
    assert "--sample 40: sample size 40 is out of range: the 2node space has 32" in capsys.readouterr().err
    assert build(tmp_path, ptb_path, "--sample", "4", "--archs", "1") == 1
    assert "--sample and --archs" in capsys.readouterr().err
    assert not (tmp_path / "t.h5").exists()


def test_ws_archs_builds_supernets_over_a_subspace_beside_the_whole_space_ones(tmp_path, ptb_path, capsys):
    ws_only = FAST[:FAST.index("--mode")]  # FAST without "--mode standalone"
    args = (*WS, "--set", "ws_seeds=2")
    assert main(["build", "--space", "2node", "--data", str(ptb_path), "--out", str(tmp_path / "t.h5"), *ws_only,
                 "--mode", "both", "--archs", "0-5", "--seeds", "1", "--ws-archs", "0-2,tanh:0|relu:1", *args]) == 0
    t = schema.read(tmp_path / "t.h5")
    sub = t.ws_subspace
    assert t.ws is None and list(sub.archs) == [0, 1, 2, 5]
    assert np.isfinite(sub.valid_ppl[:, -1][:, [0, 1, 2, 5]]).all() and np.isnan(sub.valid_ppl[:, -1][:, 6:]).all()
    assert (sub.samples[:, 6:] == 0).all() and list(sub.seeds) == [0, 1]
    # the whole-space super-nets can join the same table later; the subspace stays
    assert main(["build", "--space", "2node", "--data", str(ptb_path), "--out", str(tmp_path / "t.h5"), *ws_only,
                 "--mode", "ws", *args]) == 0
    t = schema.read(tmp_path / "t.h5")
    assert t.ws is not None and t.ws.archs is None and np.isfinite(t.ws.valid_ppl[:, -1]).all()
    assert list(t.ws_subspace.archs) == [0, 1, 2, 5]
    capsys.readouterr()
    assert main(["info", str(tmp_path / "t.h5")]) == 0
    out = capsys.readouterr().out
    assert "ws subspace 4 architectures (ids 0,1,2,5), 2/2 super-nets ok" in out
    assert "(subspace-only sharing)" in out and "(whole-space sharing)" in out
    from nasbench_ptb import api
    bench = api.load(tmp_path / "t.h5")
    inside, outside = bench.query("tanh:0|relu:1"), bench.query(7)
    assert len(inside.ws) == 2 and len(inside.ws_subspace) == 2 and outside.ws_subspace == ()
    ranks = sorted(bench.query(i).ws_subspace[0].rank for i in (0, 1, 2, 5))
    assert ranks[0] == 1 and ranks[-1] <= 4  # ranked among the 4 members, not among 32
    assert inside.to_dict()["ws_subspace"][0]["samples"] > 0
    assert main(["query", "tanh:0|relu:1", "--table", str(tmp_path / "t.h5")]) == 0
    assert "ws subspace seed 1 (ok)" in capsys.readouterr().out
    # another subspace into the same output is refused, nothing lost
    assert main(["build", "--space", "2node", "--data", str(ptb_path), "--out", str(tmp_path / "t.h5"), *ws_only,
                 "--mode", "ws", "--ws-archs", "0-3", *args]) == 1
    assert "another subspace (ids 0,1,2,5)" in capsys.readouterr().err
    assert list(schema.read(tmp_path / "t.h5").ws_subspace.archs) == [0, 1, 2, 5]


@pytest.mark.parametrize("value, message", [
    ("99", "--ws-archs '99'"), ("tanh:0|relu:1|relu:2", "--ws-archs 'tanh:0|relu:1|relu:2'"),
    ("", "--ws-archs: no architectures given"), ("3", "at least 2 architectures"), ("3,3", "at least 2"),
])
def test_ws_archs_errors_name_the_problem(tmp_path, ptb_path, capsys, value, message):
    assert main(["build", "--space", "2node", "--data", str(ptb_path), "--out", str(tmp_path / "t.h5"),
                 *FAST[:FAST.index("--mode")], "--mode", "ws", "--ws-archs", value]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t.h5").exists()


def test_ws_archs_needs_a_ws_mode_and_archs_may_not_be_empty(tmp_path, ptb_path, capsys):
    assert build(tmp_path, ptb_path, "--ws-archs", "1,2") == 1
    assert "needs --mode ws or both" in capsys.readouterr().err
    assert build(tmp_path, ptb_path, "--archs", " , ") == 1
    assert "--archs: no architectures given" in capsys.readouterr().err


def test_a_reversed_id_range_is_refused(tmp_path, ptb_path, capsys):
    assert build(tmp_path, ptb_path, "--archs", "7,5-3") == 1
    assert "--archs '5-3': the range is reversed (did you mean 3-5?)" in capsys.readouterr().err
    assert not (tmp_path / "t.h5").exists() and not (tmp_path / "t.h5.parts").exists()


def test_kept_units_of_another_training_protocol_are_refused(tmp_path, ptb_path, capsys, monkeypatch):
    from nasbench_ptb.builder import trainer as train
    assert build(tmp_path, ptb_path, "--archs", "2") == 0
    monkeypatch.setattr(train, "PROTOCOL_VERSION", 2)  # the training code changed what a run computes
    capsys.readouterr()
    assert build(tmp_path, ptb_path, "--archs", "2") == 1
    err = capsys.readouterr().err
    assert "training protocol version 1, this code trains version 2" in err and "must not be mixed" in err


def test_a_group_with_no_finished_unit_lists_every_requested_seed_as_missing(tmp_path, ptb_path):
    """The first GPU lease ran out before its super-net unit: its table listed one missing super-net of three."""
    assert build(tmp_path, ptb_path, "--archs", "0-1", "--seeds", "1", "--mode", "both", "--ws-seeds", "3", *WS,
                 "--time-limit", "0") == 0
    t = schema.read(tmp_path / "t.h5")
    assert list(t.ws.seeds) == [0, 1, 2] and (t.ws.status == Status.MISSING).all()
    assert list(t.standalone.seeds) == [0] and (t.standalone.status == Status.MISSING).all()


def test_a_table_records_the_software_that_trained_its_units_not_the_assembling_one(tmp_path, ptb_path, monkeypatch):
    """A lease's units assembled on another machine recorded that machine's torch as the table's software."""
    from nasbench_ptb.builder import build as build_mod, executors

    trainer = {"torch": "9.9+lease", "python": "3.0"}
    monkeypatch.setattr(executors, "software", lambda: trainer)
    assert build(tmp_path, ptb_path, "--archs", "0-1", "--seeds", "1") == 0
    assert schema.read(tmp_path / "t.h5").attrs["software"] == trainer
    monkeypatch.undo()
    here = build_mod.software()
    assert here != trainer
    assert build(tmp_path, ptb_path, "--archs", "0-1", "--seeds", "1", "--time-limit", "0") == 0  # assembled here
    assert schema.read(tmp_path / "t.h5").attrs["software"] == trainer
    assert build(tmp_path, ptb_path, "--archs", "0-2", "--seeds", "1") == 0  # one more unit, trained here
    units = sorted([trainer, here], key=lambda d: json.dumps(d, sort_keys=True))  # each distinct set, once
    assert schema.read(tmp_path / "t.h5").attrs["software"] == {**here, "units": units}
