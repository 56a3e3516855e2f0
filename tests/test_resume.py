"""Resume inside a unit (builder.resume) and the checkpoint schedule (presets.Schedule).

A unit stopped anywhere — an exception mid-interval in process, a SIGKILL of the build, a time limit — resumes
from its last checkpoint and ends with exactly the numbers of an uninterrupted unit: weights, ASGD averages and
switch, dropout and bptt streams, the WS architecture sampler and the curves so far are all in the state.
"""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from nasbench_ptb import schema
from nasbench_ptb.builder.engine import SlotGenotypes
from nasbench_ptb.builder.presets import Schedule, get
from nasbench_ptb.builder.resume import Paused, Resume
from nasbench_ptb.builder.standalone import train_runs
from nasbench_ptb.builder.trainer import SlotTrainer, checkpoint_loop
from nasbench_ptb.builder.ws import train_supernets
from nasbench_ptb.cli import main
from nasbench_ptb.schema import Status
from nasbench_ptb.space import space

from helpers import kill_after_parts, tiny_corpus, tiny_preset

SP = space("2node")
CORPUS = tiny_corpus()
# lr 20 so the runs learn and their validation turns worse; nonmono 1 so the ASGD switch fires early
P = tiny_preset(lr=20.0, epochs=6.0, checkpoints=6, first_epoch_checkpoints=2, asgd=True, nonmono=1,
                ws_epochs=4.0, ws_checkpoints=4, ws_valid_tokens=200)
GENOS = [SP.from_id(i) for i in (0, 9, 20)]
STANDALONE = ("epochs", "train_loss", "valid_ppl", "test_ppl", "best_epoch", "status")
SUPERNET = ("epochs", "valid_tokens", "valid_ppl", "test_ppl", "train_loss", "samples", "status")


class Kill(Exception):
    """Stands for the process dying mid-interval."""


def killer(after: int):
    seen = {"n": 0}

    def on_batch(_tokens):
        seen["n"] += 1
        if seen["n"] == after:
            raise Kill

    return on_batch


@pytest.fixture(scope="module")
def straight():
    return train_runs(CORPUS, GENOS, [0, 1, 2], P)


def test_schedule_merges_the_first_epoch_checkpoints_and_judges_the_switch_on_the_grid_only():
    s = Schedule.of(3.0, 3, 4)
    assert s.at == (0.25, 0.5, 0.75, 1.0, 2.0, 3.0)
    assert s.judges == (False, False, False, True, True, True)
    assert Schedule.of(1.0, 4).at == (0.25, 0.5, 0.75, 1.0) and all(Schedule.of(1.0, 4).judges)
    assert Schedule.of(0.5, 2, 4).at == (0.25, 0.5)  # none past the end; the grid's 0.25 and 0.5 judge
    assert Schedule.of(0.5, 2, 4).judges == (True, True)
    cpu10 = get("cpu10").schedule()
    assert cpu10.at == tuple(k / 10 for k in range(1, 10)) + tuple(float(e) for e in range(1, 11))
    assert get("cpu").schedule().at == tuple((c + 1) * 1.0 / 10 for c in range(10))  # unchanged: no extras


def test_the_switch_is_never_triggered_at_a_first_epoch_checkpoint():
    p = tiny_preset(nonmono=1)
    genos = SlotGenotypes.of([SP.from_id(0), SP.from_id(5)], "cpu")
    tr = SlotTrainer(CORPUS, [0, 1], 2, p, torch.device("cpu"), "fixed")
    seen = []

    def validate(c, params, live):  # worse at every checkpoint: the rule would switch at the third judged one
        seen.append(tr.opt.switched.tolist())
        return np.full(2, 3.0 + c)

    checkpoint_loop(tr, Schedule.of(2.0, 2, 4), lambda: genos, validate, asgd=True)  # 0.25 .. 1.0 (only 1.0 judges), 2.0
    assert tr.history == [[6.0, 7.0], [6.0, 7.0]]  # the judged checkpoints' losses only
    assert tr.opt.switched.tolist() == [False, False]  # two judged values: never more than nonmono = 1 before


@pytest.mark.parametrize("after", [3, 40, 150])
def test_a_standalone_unit_killed_mid_interval_resumes_to_the_same_numbers(straight, tmp_path, after):
    res = Resume(tmp_path / "state-u.h5", "fp")
    with pytest.raises(Kill):
        train_runs(CORPUS, GENOS, [0, 1, 2], P, on_batch=killer(after), resume=res)
    if after > 35:  # past the first checkpoint (31 batches): a state is there, with every piece the next batch depends on
        with h5py.File(res.path) as f:
            names = set()
            f.visit(names.add)
            done = int(f.attrs["checkpoint"])
        assert done >= 1
        for name in ("trainer/params/encoder", "trainer/opt/ax/W0", "trainer/opt/switched", "trainer/masks/gen/2",
                     "trainer/stream/rng/keys", "trainer/hidden", "trainer/history", "client/best/Ws",
                     "client/valid_ppl", "loop/next", "loop/train_loss"):
            assert name in names, name
    resumed = train_runs(CORPUS, GENOS, [0, 1, 2], P, resume=res)
    for name in STANDALONE:
        assert np.array_equal(getattr(straight, name), getattr(resumed, name), equal_nan=True), name


def test_the_kill_after_the_asgd_switch_keeps_the_averages(straight, tmp_path):
    """Killed late, the state holds a switched run; the resumed run's averaged weights give the same numbers."""
    res = Resume(tmp_path / "state-u.h5", "fp")
    with pytest.raises(Kill):
        train_runs(CORPUS, GENOS, [0, 1, 2], P, on_batch=killer(350), resume=res)  # of 360, in the last interval
    with h5py.File(res.path) as f:
        assert f["trainer/opt/switched"][()].any(), "the ASGD switch should have fired before the kill"
        assert int(f.attrs["checkpoint"]) == 6
    resumed = train_runs(CORPUS, GENOS, [0, 1, 2], P, resume=res)
    for name in STANDALONE:
        assert np.array_equal(getattr(straight, name), getattr(resumed, name), equal_nan=True), name


def test_a_supernet_unit_killed_mid_interval_resumes_to_the_same_numbers(tmp_path):
    ref = train_supernets(CORPUS, SP, [0, 1], P)
    res = Resume(tmp_path / "state-w.h5", "fp")
    with pytest.raises(Kill):
        train_supernets(CORPUS, SP, [0, 1], P, on_batch=killer(70), resume=res)
    assert res.path.is_file()
    resumed = train_supernets(CORPUS, SP, [0, 1], P, resume=res)
    for name in SUPERNET:
        assert np.array_equal(getattr(ref, name), getattr(resumed, name), equal_nan=True), name


def test_a_foreign_or_damaged_state_is_moved_aside_and_the_unit_starts_over(straight, tmp_path, capsys):
    path = tmp_path / "state-u.h5"
    with pytest.raises(Kill):
        train_runs(CORPUS, GENOS, [0, 1, 2], P, on_batch=killer(30), resume=Resume(path, "fp-a"))
    again = train_runs(CORPUS, GENOS, [0, 1, 2], P, resume=Resume(path, "fp-b"))
    assert "saved by another configuration" in capsys.readouterr().err
    assert (tmp_path / "state-u.h5.bad").is_file()
    path.write_bytes(b"not hdf5")
    train_runs(CORPUS, GENOS, [0, 1, 2], P, resume=Resume(path, "fp-b"))
    assert "cannot resume" in capsys.readouterr().err
    for name in STANDALONE:
        assert np.array_equal(getattr(straight, name), getattr(again, name), equal_nan=True), name


def test_a_flipped_byte_in_a_saved_state_is_caught_and_the_unit_starts_over(straight, tmp_path, capsys):
    """Without a digest, one flipped weight byte resumed silently into different numbers."""
    path = tmp_path / "state-u.h5"
    with pytest.raises(Kill):
        train_runs(CORPUS, GENOS, [0, 1, 2], P, on_batch=killer(30), resume=Resume(path, "fp"))
    with h5py.File(path, "r") as f:
        assert len(f.attrs[schema.DIGEST]) == 64
        name = next(k for k in _datasets(f) if f[k].dtype.kind == "f" and f[k].size > 8)
        offset = f[name].id.get_offset()
    raw = bytearray(path.read_bytes())
    raw[offset + 3] ^= 0x40
    path.write_bytes(bytes(raw))
    again = train_runs(CORPUS, GENOS, [0, 1, 2], P, resume=Resume(path, "fp"))
    err = capsys.readouterr().err
    assert "content digest mismatch" in err and (tmp_path / "state-u.h5.bad").is_file()
    for name in STANDALONE:
        assert np.array_equal(getattr(straight, name), getattr(again, name), equal_nan=True), name


def _datasets(f):
    names = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


def test_a_deadline_pauses_at_a_checkpoint_and_the_next_run_continues(straight, tmp_path):
    import time

    res = Resume(tmp_path / "state-u.h5", "fp", deadline=time.time() + 0.01)
    with pytest.raises(Paused) as info:
        train_runs(CORPUS, GENOS, [0, 1, 2], P, resume=res)
    assert info.value.done == 1 and info.value.total == len(P.schedule())  # the first interval, then the pause
    resumed = train_runs(CORPUS, GENOS, [0, 1, 2], P, resume=Resume(res.path, "fp"))
    for name in STANDALONE:
        assert np.array_equal(getattr(straight, name), getattr(resumed, name), equal_nan=True), name


# Through the CLI on real PTB: one unit of 2 runs with 6 checkpoints, SIGKILLed once its state exists.
FAST = ["--preset", "smoke", "--set", "train_tokens=3000", "--set", "valid_tokens=200", "--set", "test_tokens=200",
        "--set", "checkpoints=6", "--set", "slots_per_unit=2", "--epochs", "3", "--quiet", "--mode", "standalone",
        "--archs", "0-1"]


def _cli(*args):
    return [sys.executable, "-m", "nasbench_ptb.cli", *args]


def test_sigkill_inside_a_unit_then_rerun_gives_the_uninterrupted_table(tmp_path, ptb_path):
    args = ["build", "--space", "2node", "--data", str(ptb_path), *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parts = tmp_path / "killed.h5.parts"
    kill_after_parts(_cli(*args, "--out", str(tmp_path / "killed.h5")), parts, 1, env, pattern="state-*.h5")
    assert not list(parts.glob("unit-*.h5")), "the kill should land inside the only unit"
    with h5py.File(next(parts.glob("state-*.h5"))) as f:
        assert 1 <= int(f.attrs["checkpoint"]) < 6
    resumed = subprocess.run(_cli(*args, "--out", str(tmp_path / "killed.h5")), env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert not list(parts.glob("state-*")), "a finished unit's state is removed"
    assert main(["build", "--space", "2node", "--data", str(ptb_path), *FAST, "--out", str(tmp_path / "s.h5")]) == 0
    a, b = schema.read(tmp_path / "killed.h5").standalone, schema.read(tmp_path / "s.h5").standalone
    assert (a.status[:2] == Status.OK).all()
    for name in ("epochs", "valid_ppl", "train_loss", "test_ppl", "best_epoch", "status"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name


def test_time_limit_pauses_the_running_unit_and_a_rerun_finishes_it(tmp_path, ptb_path, capsys):
    args = ["build", "--space", "2node", "--data", str(ptb_path), *FAST]
    assert main([*args, "--out", str(tmp_path / "t.h5"), "--time-limit", "0"]) == 0  # assemble only
    assert "1 of 1 units left" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "t.h5"), "--time-limit", "0.0001"]) == 0  # one interval, then pause
    err = capsys.readouterr().err
    assert "paused after checkpoint 1 of 6" in err and "a later run of the same command continues it" in err
    assert (schema.read(tmp_path / "t.h5").standalone.status == Status.MISSING).all()
    [state] = (tmp_path / "t.h5.parts").glob("state-unit-*.h5")
    # the paused run trained for 1000 s (as a long unit's earlier sessions did): the finished unit counts them
    with h5py.File(state) as f:
        fp, done = str(f.attrs["fingerprint"]), int(f.attrs["checkpoint"])
    res = Resume(state, fp)
    saved = res.load()
    res.save({**saved, "loop/elapsed": np.array(1000.0)}, done)
    assert main([*args, "--out", str(tmp_path / "t.h5")]) == 0
    assert (schema.read(tmp_path / "t.h5").standalone.status[:2] == Status.OK).all()
    [part] = (tmp_path / "t.h5.parts").glob("unit-*.h5")
    with h5py.File(part) as f:
        seconds, unit_seconds = f["seconds"][...], float(f.attrs["unit_seconds"])
    assert (seconds[:, -1] * len(seconds) > 1000).all()  # the curve goes on from the state's seconds
    assert 1000 < unit_seconds < 1000 + 300  # so does the unit's time, not only the last run's


def test_trainer_state_round_trips_through_the_file_in_the_middle_of_averaging(tmp_path):
    """Saved while one slot averages (ASGD's first steps overwrite the average, so only a state taken later
    shows whether the averages themselves come back) and continued in a fresh trainer: bit-identical."""
    from nasbench_ptb.builder.resume import section

    def fresh():
        return SlotTrainer(CORPUS, [0, 1], 2, P, torch.device("cpu"), "awd")

    genos = SlotGenotypes.of([SP.from_id(3), SP.from_id(17)], "cpu")
    a = fresh()
    a.train_until(0.3, lambda: genos)
    a.opt.switch(torch.tensor([True, False]))
    a.history = [[4.0, 3.5], [4.0]]
    a.train_until(0.6, lambda: genos)
    assert float(a.opt.avg_steps[0]) > 2 and not torch.equal(a.opt.ax["W0"][0], a.params["W0"][0])
    res = Resume(tmp_path / "state-t.h5", "fp")
    res.save({"trainer": a.state()}, 1)
    b = fresh()
    b.load_state(section(res.load(), "trainer"))
    assert b.history == [[4.0, 3.5], [4.0]] and b.opt.any_switched
    for tr in (a, b):
        tr.train_until(1.0, lambda: genos)
    assert a.stream.position == b.stream.position
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]) and torch.equal(a.opt.eval_params()[k], b.opt.eval_params()[k])
    assert torch.equal(a.hidden, b.hidden) and torch.equal(a.loss_sum, b.loss_sum)


def test_the_tokens_left_of_a_paused_unit_exclude_what_its_state_trained(tmp_path):
    from nasbench_ptb.builder.build import Unit
    from nasbench_ptb.builder.executors import Work, tokens_left, unit_tokens, state_path

    unit = Unit("standalone", (0, 9, 20), (0, 1, 2), "fp")
    work = Work(SP, P, CORPUS, torch.device("cpu"), None, states=tmp_path)
    full = unit_tokens(unit, P, 1000)
    assert full == 3 * P.epochs * 1000 and tokens_left(unit, work, 1000) == full  # no state yet
    at = P.schedule().at  # 0.5, 1.0, 2.0, … 6.0: after 3 checkpoints 2 of 6 epochs are trained
    res = work.resume(unit)
    assert res.path == state_path(tmp_path, unit)
    res.save({"loop": {"elapsed": np.zeros(())}}, 3)
    assert at[2] == 2.0 and tokens_left(unit, work, 1000) == pytest.approx(full * 4 / 6)
    Resume(res.path, "another configuration").save({"loop": {"elapsed": np.zeros(())}}, 3)
    assert tokens_left(unit, work, 1000) == full  # a foreign state is not this unit's progress


def test_the_progress_eta_goes_by_tokens_once_units_of_unequal_size_finished(capsys, monkeypatch):
    from nasbench_ptb.builder import progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    prog = progress.Progress(4, 0, planned_tokens=3000.0)
    now[0], prog.arch_tokens, prog.done = 600.0, 1000, 2  # a third of the tokens in 10 min, 2 small units done
    prog.unit_done()
    assert capsys.readouterr().err.splitlines()[-1].endswith("ETA ~20.0 min")  # not 10 min × 1 left / 3 done


def test_no_unit_state_trains_the_same_table_without_writing_any_state(tmp_path, ptb_path, monkeypatch, capsys):
    """``--no-unit-state`` (a GPU lease, whose gigabytes of state cannot come back): no state is saved at any
    checkpoint, the numbers are those of a resumable build, and a time limit then only keeps units from starting."""
    args = ["build", "--space", "2node", "--data", str(ptb_path), *FAST]
    assert main([*args, "--out", str(tmp_path / "with.h5")]) == 0

    def refuse(self, state, checkpoint):
        raise AssertionError(f"a state was saved at checkpoint {checkpoint}")

    monkeypatch.setattr(Resume, "save", refuse)
    assert main([*args, "--out", str(tmp_path / "without.h5"), "--no-unit-state", "--time-limit", "0.0001"]) == 0
    assert "paused" not in capsys.readouterr().err  # the one unit had started: it ends, as a Ray unit does
    assert not list((tmp_path / "without.h5.parts").glob("state-*"))
    a, b = schema.read(tmp_path / "with.h5").standalone, schema.read(tmp_path / "without.h5").standalone
    assert (b.status[:2] == Status.OK).all()
    for name in ("epochs", "valid_ppl", "train_loss", "test_ppl", "best_epoch", "status"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert main([*args, "--out", str(tmp_path / "r.h5"), "--no-unit-state", "--executor", "ray"]) == 1
    assert "--no-unit-state applies to --executor local" in capsys.readouterr().err
