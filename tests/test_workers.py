"""``build --workers N`` (builder/pool.py): units trained at once in worker processes give the table of one at a
time bit for bit, pause together at the time limit, and die with a SIGKILLed build so that a rerun resumes them
to the uninterrupted numbers."""
import os
import subprocess
import sys
import time

import h5py

from nasbench_ptb import schema
from nasbench_ptb.cli import main
from nasbench_ptb.schema import Status

from helpers import kill_after_parts, same_table

# 4 standalone units of 2 runs and 2 super-nets: more units than workers, both kinds
SHORT = ["--space", "2node", "--preset", "smoke", "--set", "train_tokens=600", "--set", "valid_tokens=200",
         "--set", "test_tokens=200", "--set", "checkpoints=3", "--epochs", "1", "--archs", "0-7",
         "--set", "slots_per_unit=2", "--set", "ws_epochs=1", "--set", "ws_checkpoints=2", "--set", "ws_valid_tokens=200",
         "--set", "ws_final_valid_tokens=400", "--set", "ws_slots_per_unit=1", "--ws-seeds", "2"]
# 2 standalone units of 3 epochs, 6 checkpoints: long enough to be paused or killed inside
LONG = ["--space", "2node", "--preset", "smoke", "--set", "train_tokens=3000", "--set", "valid_tokens=200",
        "--set", "test_tokens=200", "--set", "checkpoints=6", "--set", "slots_per_unit=2", "--epochs", "3",
        "--quiet", "--mode", "standalone", "--archs", "0-3"]


def _cli(*args):
    return [sys.executable, "-m", "nasbench_ptb.cli", *args]


def test_two_workers_build_the_table_of_one_at_a_time(tmp_path, ptb_path, capsys):
    assert main(["build", "--data", str(ptb_path), *SHORT, "--quiet", "--out", str(tmp_path / "one.h5")]) == 0
    capsys.readouterr()
    assert main(["build", "--data", str(ptb_path), *SHORT, "--workers", "2", "--out", str(tmp_path / "two.h5")]) == 0
    assert "(2 in flight)" in capsys.readouterr().err  # the units did run side by side
    same_table(tmp_path / "one.h5", tmp_path / "two.h5")
    t = schema.read(tmp_path / "two.h5")
    assert (t.standalone.status[:8] == Status.OK).all() and (t.ws.status == Status.OK).all()


def test_the_time_limit_pauses_every_running_unit_and_a_rerun_finishes_them(tmp_path, ptb_path, capsys):
    args = ["build", "--data", str(ptb_path), *LONG, "--workers", "2", "--out", str(tmp_path / "t.h5")]
    assert main([*args, "--time-limit", "0.0001"]) == 0  # one interval each, then both pause
    err = capsys.readouterr().err
    assert err.count("paused after checkpoint 1 of 6") == 2, err
    assert len(list((tmp_path / "t.h5.parts").glob("state-unit-*.h5"))) == 2
    assert (schema.read(tmp_path / "t.h5").standalone.status == Status.MISSING).all()
    assert main(args) == 0
    assert not list((tmp_path / "t.h5.parts").glob("state-*"))
    assert main(["build", "--data", str(ptb_path), *LONG, "--out", str(tmp_path / "straight.h5")]) == 0
    same_table(tmp_path / "t.h5", tmp_path / "straight.h5")


def test_a_sigkilled_build_leaves_no_worker_behind_and_resumes_to_the_same_table(tmp_path, ptb_path):
    args = ["build", "--data", str(ptb_path), *LONG, "--workers", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parts, group = tmp_path / "k.h5.parts", []
    states = kill_after_parts(_cli(*args, "--out", str(tmp_path / "k.h5")), parts, 2, env, pattern="state-*.h5",
                              group=group)
    deadline = time.time() + 20  # workers die with their build; ones that trained on would save a state again
    while time.time() < deadline:
        try:
            os.killpg(group[0], 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("a worker outlived the SIGKILLed build")
    assert {p.name: p.stat().st_mtime_ns for p in parts.glob("state-*.h5")} == states, "a state was written after the kill"
    assert not list(parts.glob("unit-*.h5")), "the kill should land inside both units"
    for state in parts.glob("state-*.h5"):
        with h5py.File(state) as f:
            assert 1 <= int(f.attrs["checkpoint"]) < 6
    resumed = subprocess.run(_cli(*args, "--out", str(tmp_path / "k.h5")), env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert main(["build", "--data", str(ptb_path), *LONG, "--out", str(tmp_path / "straight.h5")]) == 0
    same_table(tmp_path / "k.h5", tmp_path / "straight.h5")
