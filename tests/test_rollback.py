"""DARTS's rollback (preset ``rollbacks``): a standalone run or a super-net that diverges returns to its best
checkpoint and trains on; past the limit it is diverged. Units where nothing diverged are the same under any
limit, so their kept parts serve a build with another limit."""
import dataclasses

import h5py
import numpy as np
import pytest
import torch

from nasbench_ptb import schema
from nasbench_ptb.builder import parts
from nasbench_ptb.builder import trainer as train_mod
from nasbench_ptb.builder.optim import SlotSGD
from nasbench_ptb.builder.rollback import Rollbacks
from nasbench_ptb.builder.standalone import train_runs
from nasbench_ptb.cli import main
from nasbench_ptb.schema import Status
from nasbench_ptb.space import parse

from helpers import tiny_corpus, tiny_preset

GENOS = [parse(s) for s in ("tanh:0|relu:1|sigmoid:0", "identity:0|tanh:0|relu:2", "sigmoid:0|sigmoid:1|tanh:1")]
SEEDS = [11, 22, 33]
P = tiny_preset(checkpoints=6)
REAL_LOSS = train_mod.train_loss


def poison(monkeypatch, batches):
    """Slot 1's training objective becomes inf at the given mini-batch numbers (from 1): NaN gradients, NaN
    weights, as a real blow-up leaves them."""
    real, calls = REAL_LOSS, {"n": 0}

    def poisoned(*args, **kwargs):
        obj, ce, h = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] in batches:
            obj = obj * torch.tensor([1.0, float("inf"), 1.0])
            ce = ce * torch.tensor([1.0, float("inf"), 1.0])  # the interval's mean is inf, recorded as NaN
        return obj, ce, h

    monkeypatch.setattr(train_mod, "train_loss", poisoned)


@pytest.fixture(scope="module")
def clean():
    return train_runs(tiny_corpus(), GENOS, SEEDS, P)


def test_without_a_divergence_the_limit_changes_nothing(clean):
    """What lets parts trained before rollbacks existed serve a build with them: bit for bit the same runs."""
    with_limit = train_runs(tiny_corpus(), GENOS, SEEDS, tiny_preset(checkpoints=6, rollbacks=3))
    for name, value in vars(clean).items():
        if name == "seconds":  # wall clock
            continue
        np.testing.assert_array_equal(getattr(with_limit, name), value, err_msg=name)
    assert (clean.rollback == 0).all()


def test_a_run_that_blows_up_once_returns_to_its_best_checkpoint_and_trains_on(clean, monkeypatch):
    n_batches = {"n": 0}
    real = train_mod.train_loss
    monkeypatch.setattr(train_mod, "train_loss", lambda *a, **k: (n_batches.__setitem__("n", n_batches["n"] + 1),
                                                                    real(*a, **k))[1])
    train_runs(tiny_corpus(), GENOS, SEEDS, P)
    hit = n_batches["n"] * 3 // 4  # inside the fifth of six intervals
    poison(monkeypatch, {hit})
    res = train_runs(tiny_corpus(), GENOS, SEEDS, tiny_preset(checkpoints=6, rollbacks=1))
    assert list(res.status) == [Status.OK] * 3
    c = int(np.flatnonzero(res.rollback[1])[0])
    assert res.rollback[1].tolist() == [1.0 if k == c else 0.0 for k in range(6)] and 0 < c < 5
    assert np.isnan(res.train_loss[1, c])  # the interval that blew up has no finite mean
    np.testing.assert_array_equal(res.valid_ppl[1, :c], clean.valid_ppl[1, :c])  # untouched before
    # the restored weights are those of its best checkpoint so far: they validate to exactly that value
    assert res.valid_ppl[1, c] == np.min(clean.valid_ppl[1, :c])
    assert np.isfinite(res.valid_ppl[1, c + 1:]).all() and np.isfinite(res.train_loss[1, c + 1:]).all()
    assert not np.array_equal(res.valid_ppl[1, c + 1:], clean.valid_ppl[1, c + 1:])  # it trained on, from there
    assert np.isfinite(res.test_ppl[1])
    for a in (0, 2):  # the other runs of the unit are untouched
        for name in ("valid_ppl", "train_loss", "test_ppl", "rollback"):
            np.testing.assert_array_equal(getattr(res, name)[a], getattr(clean, name)[a])


def test_past_the_limit_the_run_is_diverged(monkeypatch):
    poison(monkeypatch, set(range(30, 10_000)))  # it blows up again after every rollback
    res = train_runs(tiny_corpus(), GENOS, SEEDS, tiny_preset(checkpoints=6, rollbacks=2))
    assert list(res.status) == [Status.OK, Status.DIVERGED, Status.OK]
    assert np.nansum(res.rollback[1]) == 2 and np.isnan(res.test_ppl[1])
    assert np.isnan(res.valid_ppl[1, -1]) and np.isnan(res.rollback[1, -1])  # nothing recorded once dead


def test_a_blow_up_before_any_checkpoint_restarts_from_the_initialisation(monkeypatch):
    poison(monkeypatch, {2})
    res = train_runs(tiny_corpus(), GENOS, SEEDS, tiny_preset(checkpoints=6, rollbacks=1))
    assert res.status[1] == Status.OK and res.rollback[1, 0] == 1 and np.isfinite(res.valid_ppl[1]).all()


def test_the_restore_takes_the_best_weights_switch_and_averaging_count():
    """By hand: slot 0 switched to averaging after its best checkpoint; its rollback un-switches it (DARTS loads the
    optimiser saved at the best epoch), slot 1 (rolled back too) keeps the count it had then, slot 2 is left alone."""
    torch.manual_seed(0)
    params = {"w": torch.randn(3, 4)}
    opt = SlotSGD(params, 0.0, 0.0)
    rb = Rollbacks(3, 2, "cpu")
    opt.switch(torch.tensor([False, True, False]))
    opt.avg_steps[1] = 7
    best = {"w": params["w"].clone() + 1.0}
    rb.remember(torch.tensor([True, True, False]), opt)  # the best checkpoint of slots 0 and 1 is now
    opt.switch(torch.tensor([True, True, True]))
    opt.avg_steps[:] = 50
    params["w"].add_(100.0)
    before = params["w"].clone()
    revived = rb.revive(np.array([True, True, False]), 1, opt, best)
    assert revived.tolist() == [True, True, False] and rb.used.tolist() == [1, 1, 0]
    torch.testing.assert_close(params["w"][:2], best["w"][:2])
    torch.testing.assert_close(opt.ax["w"][:2], best["w"][:2])
    assert params["w"][2].equal(before[2])
    assert opt.switched.tolist() == [False, True, True] and opt.avg_steps.tolist() == [0.0, 7.0, 50.0]
    assert rb.revive(np.array([True, False, False]), 1, opt, best).tolist() == [False, False, False]  # limit 1


def test_a_state_saved_before_rollbacks_existed_loads_as_never_rolled_back():
    rb = Rollbacks(2, 3, "cpu")
    rb.load_state({})
    assert rb.used.tolist() == [0, 0] and (rb.at == 0).all()


# Parts: the CLI build at the smoke preset on real PTB (seconds).
FAST = ["--preset", "smoke", "--set", "train_tokens=600", "--set", "valid_tokens=200", "--set", "test_tokens=200",
        "--set", "checkpoints=3", "--epochs", "1", "--quiet", "--mode", "standalone", "--archs", "2"]


def build(tmp_path, ptb_path, *extra):
    return main(["build", "--space", "2node", "--data", str(ptb_path), "--out", str(tmp_path / "t.h5"), *FAST, *extra])


def _part(tmp_path):
    (path,) = (tmp_path / "t.h5.parts").glob("unit-*.h5")
    return path


def test_a_kept_unit_without_divergence_serves_a_build_with_rollbacks(tmp_path, ptb_path, capsys):
    assert build(tmp_path, ptb_path) == 0
    before = _part(tmp_path).read_bytes()
    capsys.readouterr()
    assert build(tmp_path, ptb_path, "--set", "rollbacks=3") == 0  # nothing retrained, nothing refused
    assert _part(tmp_path).read_bytes() == before and len(list((tmp_path / "t.h5.parts").glob("*.h5"))) == 1
    table = schema.read(tmp_path / "t.h5")
    assert table.config["rollbacks"] == 3 and (table.standalone.rollback[2, 0] == 0).all()


def test_a_kept_unit_with_a_diverged_run_is_refused_under_another_limit(tmp_path, ptb_path, capsys):
    assert build(tmp_path, ptb_path) == 0
    path = _part(tmp_path)
    with h5py.File(path, "r") as f:  # the same unit, had its run diverged (rewritten with a valid digest)
        arrays = {k: f[k][()] for k in f}
        attrs = {k: v for k, v in f.attrs.items() if k != schema.DIGEST}
    arrays["status"][:] = Status.DIVERGED
    parts.write(path, arrays, attrs)
    (tmp_path / "t.h5").unlink()
    capsys.readouterr()
    assert build(tmp_path, ptb_path, "--set", "rollbacks=3") == 1
    err = capsys.readouterr().err
    assert "differs only in rollbacks, but a run in it diverged or was rolled back" in err and path.name in err
    assert build(tmp_path, ptb_path) == 0  # under its own limit it is still its build's


def test_a_part_written_before_the_rollback_dataset_assembles_as_never_rolled_back(tmp_path, ptb_path):
    assert build(tmp_path, ptb_path) == 0
    path = _part(tmp_path)
    with h5py.File(path, "r") as f:
        arrays = {k: f[k][()] for k in f if k != "rollback"}
        attrs = {k: v for k, v in f.attrs.items() if k != schema.DIGEST}
    parts.write(path, arrays, attrs)
    (tmp_path / "t.h5").unlink()
    assert build(tmp_path, ptb_path) == 0
    sa = schema.read(tmp_path / "t.h5").standalone
    assert (sa.rollback[2, 0] == 0).all() and np.isnan(sa.rollback[0]).all()  # arch 0 never trained


def test_a_unit_killed_after_a_rollback_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    """The rollback bookkeeping (how many, where, the switch at the best checkpoint) is part of a unit's state."""
    from nasbench_ptb.builder.resume import Resume

    from test_resume import CORPUS, GENOS as RGENOS, P as RP, Kill, killer

    p = tiny_preset(**{**{k: getattr(RP, k) for k in ("lr", "epochs", "checkpoints", "first_epoch_checkpoints",
                                                       "asgd", "nonmono")}, "rollbacks": 2})
    poison(monkeypatch, {250})  # epoch ≈ 4.2 of 6, after the ASGD switch of at least one run
    straight = train_runs(CORPUS, RGENOS, [0, 1, 2], p)
    assert np.nansum(straight.rollback[1]) == 1
    poison(monkeypatch, {250})
    res = Resume(tmp_path / "state-u.h5", "fp")
    with pytest.raises(Kill):
        train_runs(CORPUS, RGENOS, [0, 1, 2], p, on_batch=killer(330), resume=res)
    with h5py.File(res.path) as f:
        assert f["client/rollbacks/used"][()].tolist() == [0, 1, 0] and f["trainer/opt/switched"][()].any()
    poison(monkeypatch, set())  # the blow-up lies before the saved checkpoint: the resumed run does not meet it
    resumed = train_runs(CORPUS, RGENOS, [0, 1, 2], p, resume=res)
    for name, value in vars(straight).items():
        if name != "seconds":
            assert np.array_equal(getattr(resumed, name), value, equal_nan=True), name


# Super-nets: the same rule, best = the lowest mean validation ppl over architectures (what the switch reads).
WS_P = tiny_preset(ws_epochs=1.0, ws_checkpoints=5, ws_valid_tokens=None, ws_final_valid_tokens=None)


def _supernets(p, **kw):
    from nasbench_ptb.builder.ws import train_supernets
    from nasbench_ptb.space import space

    return train_supernets(tiny_corpus(), space("2node"), SEEDS, p, **kw)


def test_supernets_without_a_divergence_are_the_same_under_any_limit():
    clean, with_limit = _supernets(WS_P), _supernets(dataclasses.replace(WS_P, rollbacks=3))
    for name, value in vars(clean).items():
        if name != "seconds":
            np.testing.assert_array_equal(getattr(with_limit, name), value, err_msg=name)
    assert (clean.rollback == 0).all() and list(clean.status) == [Status.OK] * 3


def test_a_supernet_that_blows_up_returns_to_its_best_mean_checkpoint(monkeypatch):
    clean = _supernets(WS_P)
    n_batches = int(clean.samples[0].sum())
    poison(monkeypatch, {n_batches * 3 // 4})  # super-net 1, inside the fourth of five intervals
    res = _supernets(dataclasses.replace(WS_P, rollbacks=1))
    assert list(res.status) == [Status.OK] * 3
    c = int(np.flatnonzero(res.rollback[1])[0])
    assert res.rollback[1].tolist() == [1.0 if k == c else 0.0 for k in range(5)] and 0 < c < 4
    np.testing.assert_array_equal(res.valid_ppl[1, :c], clean.valid_ppl[1, :c])
    # restored to the checkpoint of the lowest mean ppl over architectures: every architecture validates as then
    mean = clean.valid_ppl[1, :c].mean(axis=1)
    np.testing.assert_array_equal(res.valid_ppl[1, c], clean.valid_ppl[1, int(np.argmin(mean))])
    assert np.isfinite(res.valid_ppl[1, c + 1:]).all() and np.isfinite(res.test_ppl[1]).all()
    for s in (0, 2):  # the other super-nets are untouched
        for name in ("valid_ppl", "train_loss", "test_ppl", "samples", "rollback"):
            np.testing.assert_array_equal(getattr(res, name)[s], getattr(clean, name)[s], err_msg=name)
    poison(monkeypatch, {n_batches * 3 // 4})
    own = _supernets(dataclasses.replace(WS_P, rollbacks=0, ws_rollbacks=1))  # super-nets' own limit wins
    for name in ("valid_ppl", "train_loss", "test_ppl", "rollback", "status"):
        np.testing.assert_array_equal(getattr(own, name), getattr(res, name), err_msg=name)
    poison(monkeypatch, {n_batches * 3 // 4})
    assert _supernets(dataclasses.replace(WS_P, rollbacks=1, ws_rollbacks=0)).status[1] == Status.DIVERGED
    poison(monkeypatch, {n_batches * 3 // 4})
    stopped = _supernets(WS_P)  # without rollbacks the same blow-up is a divergence, as before
    assert list(stopped.status) == [Status.OK, Status.DIVERGED, Status.OK] and np.isnan(stopped.test_ppl[1]).all()


def test_a_finite_blow_up_above_the_uniform_loss_rolls_a_supernet_back_only_under_that_rule(monkeypatch):
    """The blow-up the cpu10 super-nets met: a training loss far above 2 ln V that is still finite. Under the NaN rule
    alone it is read as ok (the recorded loss shows it); with ``ws_uniform_divergence`` it is a divergence."""
    clean = _supernets(WS_P)
    hit = int(clean.samples[0].sum()) * 3 // 4
    real, calls = REAL_LOSS, {"n": 0}

    def spiked(*args, **kwargs):  # slot 1's recorded loss jumps to 1e6 for one batch; its gradients stay sane
        obj, ce, h = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == hit:
            ce = ce + torch.tensor([0.0, 1e6, 0.0])
        return obj, ce, h

    monkeypatch.setattr(train_mod, "train_loss", spiked)
    nan_rule = _supernets(dataclasses.replace(WS_P, rollbacks=1))
    calls["n"] = 0
    uniform = _supernets(dataclasses.replace(WS_P, rollbacks=1, ws_uniform_divergence=True))
    assert (nan_rule.rollback == 0).all() and list(nan_rule.status) == [Status.OK] * 3
    c = int(np.nanargmax(nan_rule.train_loss[1]))
    assert nan_rule.train_loss[1, c] > 1e4  # the interval that held the spike
    assert np.nanmax(np.delete(nan_rule.train_loss[1], c)) < 2 * np.log(tiny_corpus().ntokens)  # none other
    assert uniform.rollback[1].tolist() == [1.0 if k == c else 0.0 for k in range(5)]
    mean = clean.valid_ppl[1, :c].mean(axis=1)  # restored to its best checkpoint, as for a NaN
    np.testing.assert_array_equal(uniform.valid_ppl[1, c], clean.valid_ppl[1, int(np.argmin(mean))])
    assert (uniform.rollback[[0, 2]] == 0).all() and list(uniform.status) == [Status.OK] * 3


def test_a_kept_supernet_part_serves_another_limit_only_when_nothing_diverged():
    from nasbench_ptb.builder import presets
    from nasbench_ptb.space import space

    cpu10 = presets.get("cpu10")
    old, new = (parts.fingerprint(space("2node"), dataclasses.replace(cpu10, rollbacks=r), "ws") for r in (0, 3))
    assert old != new  # super-nets roll back too: the limit is part of their configuration
    quiet = {"status": np.zeros(3, np.int8), "rollback": np.zeros((3, 19))}
    assert parts.same_runs(old, new, quiet)
    assert not parts.same_runs(old, new, {**quiet, "status": np.array([0, 2, 0], np.int8)})
    assert parts.fingerprint(space("2node"), presets.get("cpu"), "ws") == parts.fingerprint(
        space("2node"), dataclasses.replace(presets.get("cpu"), rollbacks=0), "ws")  # shipped parts keep theirs
    assert "ws_uniform_divergence" not in parts.fingerprint(space("2node"), presets.get("cpu"), "ws")
    assert "ws_uniform_divergence" in parts.fingerprint(space("2node"), cpu10, "ws")  # its old super-nets retrain
    assert "ws_uniform_divergence" not in parts.fingerprint(space("2node"), cpu10, "standalone")  # its runs stand
    assert "ws_rollbacks" not in parts.fingerprint(space("2node"), cpu10, "standalone")
    assert "ws_rollbacks" not in parts.fingerprint(space("2node"), presets.get("paper"), "ws")  # default: unchanged
