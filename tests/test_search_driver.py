"""The search driver (builder/search.py) against independent expectations: what ``run`` hands each method and
records from it, how options are split among algorithms, and what ``search_file`` refuses, writes and merges,
with its exact messages (aimed at the survivors of its mutation run: each test names the slip it catches)."""
import dataclasses
import errno

import numpy as np
import pytest
import torch

from nasbench_ptb import search_results
from nasbench_ptb.builder import presets, search
from nasbench_ptb.schema import Status
from nasbench_ptb.space import space

from helpers import search_preset

SP = space("2node")


def _probe(monkeypatch, kill_slot_at=None):
    """RandomWS.checkpoint, wrapped: records ``last`` per call, adds an extra array that it reuses and changes
    in place (a recorder that keeps a view would show only its final value), and can report slot 1 as no longer
    scoring anything at one checkpoint."""
    calls, buf = [], np.zeros(2)
    original = search.RandomWS.checkpoint

    def checkpoint(self, ctx, params, live, last):
        choice, est, switch, ex = original(self, ctx, params, live, last)
        calls.append(last)
        buf[:] = len(calls) - 1
        if kill_slot_at == len(calls) - 1:
            est = est.copy()
            est[1] = np.inf
        return choice, est, switch, {**ex, "probe": buf}

    monkeypatch.setattr(search.RandomWS, "checkpoint", checkpoint)
    return calls


def test_run_flags_only_the_final_checkpoint_as_last_and_records_each_extra_as_it_was(corpus, monkeypatch):
    calls = _probe(monkeypatch)
    res = search.run("random_ws", corpus, SP, [0, 1], search_preset(), options={"candidates": 3})
    assert calls == [False, False, True]  # 3 checkpoints: the last one alone scores on the whole split
    assert res.extra["probe"].tolist() == [[0, 1, 2], [0, 1, 2]]  # [seed, checkpoint], copied at each


def test_run_marks_a_search_that_stops_scoring_as_diverged_with_the_records_types(corpus, monkeypatch):
    _probe(monkeypatch, kill_slot_at=1)
    res = search.run("random_ws", corpus, SP, [4, 7], search_preset(), options={"candidates": 3})
    assert res.status.dtype == np.int8 and res.status.tolist() == [Status.OK, Status.DIVERGED]
    assert res.choice.dtype == np.int64 and res.seeds.dtype == np.int64 and res.seeds.tolist() == [4, 7]
    assert np.isfinite(res.estimate[0]).all() and np.isnan(res.estimate[1]).all()


def test_run_hands_the_presets_weight_sharing_values_to_the_trainer_and_the_loop(corpus, monkeypatch):
    seen = {}
    trainer, loop = search.SlotTrainer, search.checkpoint_loop

    def spy_trainer(*args, **kwargs):
        seen["trainer"] = args[5:]
        return trainer(*args, **kwargs)

    def spy_loop(tr, schedule, genotypes, validate, asgd, on_batch):
        seen["asgd"] = asgd
        return loop(tr, schedule, genotypes, validate, asgd, on_batch)

    monkeypatch.setattr(search, "SlotTrainer", spy_trainer)
    monkeypatch.setattr(search, "checkpoint_loop", spy_loop)
    p = dataclasses.replace(search_preset(), ws_asgd=True, hidden_clip=7.5, ws_bptt="fixed")
    tokens = []
    search.run("random_ws", corpus, SP, [0], p, options={"candidates": 2}, on_batch=tokens.append)
    assert seen == {"trainer": ("fixed", 7.5), "asgd": True}
    assert tokens and sum(tokens) >= len(corpus.train) - p.bptt  # one epoch of the one slot, counted per batch


def test_the_context_scores_at_the_presets_precision(corpus, monkeypatch):
    ctx = search.Context(corpus, SP, [0], dataclasses.replace(search_preset(), amp="bf16"), torch.device("cpu"))
    kwargs = []
    monkeypatch.setattr(search, "evaluate_all", lambda *a, **k: kwargs.append(k) or torch.zeros(2))
    ctx.score({}, 0, [3, 4], ctx.valid_mid)
    assert kwargs == [{"amp": "bf16"}]


def test_a_method_registry_out_of_step_with_the_results_registry_is_named(monkeypatch):
    monkeypatch.setattr(search, "ALGORITHMS", ("darts", "enas"))
    with pytest.raises(RuntimeError) as exc:
        search.methods()
    assert str(exc.value) == ("search methods ['darts', 'enas', 'nao', 'random_ws'] differ from the registry "
                              "['darts', 'enas']")


class _Plain(search.Method):
    name = "plain"

    def __init__(self, ctx):
        pass


class _Both(search.Method):
    name = "both"

    def __init__(self, ctx, k: int = 1, candidates: int = 2):
        pass


def test_options_go_to_the_algorithms_that_take_them_and_strays_are_named(monkeypatch):
    monkeypatch.setattr(search, "methods", lambda: {"random_ws": search.RandomWS, "plain": _Plain, "both": _Both})
    split = search.options_per_algorithm
    assert split(["random_ws", "both"], {"candidates": 4}) == {"random_ws": {"candidates": 4}, "both": {"candidates": 4}}
    assert split(["random_ws", "both"], {"both.candidates": 3, "k": 2}) == {"random_ws": {},
                                                                             "both": {"candidates": 3, "k": 2}}
    for algos, options, message in (
            (["random_ws", "plain"], {"both.k": 1},
             "option both.k: 'both' is not among the algorithms run (random_ws, plain)"),
            (["random_ws", "plain"], {"depth": 1},
             "unknown option 'depth' (options of random_ws: candidates; plain: none)"),
            (["random_ws", "both"], {"plain.k": 1}, "option plain.k: 'plain' is not among the algorithms run "
                                                    "(random_ws, both)"),
            (["random_ws", "both"], {"both.depth": 1}, "unknown option 'depth' (options of both: candidates, k)")):
        with pytest.raises(search.SearchError) as exc:
            split(algos, options)
        assert str(exc.value) == message


def _smoke():
    return dataclasses.replace(presets.get("smoke"), ws_epochs=0.2, ws_checkpoints=1, train_tokens=2000,
                               ws_valid_tokens=200, ws_final_valid_tokens=400)


def _search(out, ptb_path, p=None, algos=("random_ws",), **kw):
    options = {"random_ws.candidates": 2, "nao.epd_epochs": 2, "nao.max_step": 2}
    return search.search_file(list(algos), SP, p or _smoke(), [0], out, data_dir=str(ptb_path),
                              options={k: v for k, v in options.items() if k.split(".")[0] in algos}, **kw)


def test_search_file_writes_its_provenance_and_refuses_foreign_outputs_before_training(tmp_path, ptb_path,
                                                                                       monkeypatch):
    monkeypatch.setenv("NASBENCH_PTB_DATA", str(tmp_path / "nowhere"))  # the data_dir given must be the one read
    out = tmp_path / "s.h5"
    res = _search(out, ptb_path)  # device: its default, auto
    attrs = search_results.read(out).attrs
    assert set(attrs) >= {"ptb_sha256", "software", "device", "created"} and res.attrs["device"] == attrs["device"]
    assert attrs["created"].endswith("+00:00")  # UTC, as every table's
    trained = []
    real_run = search.run
    monkeypatch.setattr(search, "run", lambda *a, **k: trained.append(a) or real_run(*a, **k))
    other = dataclasses.replace(_smoke(), lr=3.0)
    with pytest.raises(search.SearchError) as exc:  # force is off by default
        _search(out, ptb_path, other)
    assert str(exc.value) == (f"refusing to add to {out}: it holds searches of 2node/smoke, another training "
                              "configuration than this search (2node); use another --out, or --force to replace it")
    assert not trained  # refused before any training
    with pytest.raises(search.SearchError) as exc:
        search.search_file(["random_ws"], space("3node"), _smoke(), [0], out, data_dir=str(ptb_path))
    assert str(exc.value) == (f"refusing to add to {out}: it holds searches of 2node/smoke, another space than "
                              "this search (3node); use another --out, or --force to replace it") and not trained
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(search.SearchError) as exc:
        _search(junk, ptb_path)
    assert str(exc.value).startswith(f"refusing to overwrite {junk}: not a readable search-results file (")
    assert str(exc.value).endswith("); use another --out, or --force to replace it") and not trained
    assert _search(out, ptb_path, other, force=True).config["lr"] == 3.0 and len(trained) == 1


def test_search_file_merges_a_search_that_landed_while_it_trained(tmp_path, ptb_path, monkeypatch):
    """The output is read again under the lock: a file another search wrote in the meantime is merged into,
    not overwritten."""
    out, side = tmp_path / "s.h5", tmp_path / "side.h5"
    _search(side, ptb_path, algos=("nao",))
    real_run = search.run

    def run_and_land(*a, **k):
        out.write_bytes(side.read_bytes())  # a nao search finished into `out` meanwhile
        return real_run(*a, **k)

    monkeypatch.setattr(search, "run", run_and_land)
    _search(out, ptb_path)
    assert sorted(search_results.read(out).searches) == ["nao", "random_ws"]


def test_search_file_names_an_unwritable_output_before_and_after_training(tmp_path, ptb_path, monkeypatch):
    import tempfile

    folders = []
    real = tempfile.NamedTemporaryFile

    def probe(*a, dir=None, **k):
        folders.append(dir)
        if dir is not None and str(dir).endswith("ro"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", probe)
    out = tmp_path / "ro" / "s.h5"
    with pytest.raises(search.SearchError) as exc:
        _search(out, ptb_path)
    assert str(exc.value) == f"cannot write the output {out}: Permission denied" and folders == [out.parent]
    monkeypatch.undo()

    def full(result, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(search_results, "write", full)
    out = tmp_path / "s.h5"
    with pytest.raises(search.SearchError) as exc:
        _search(out, ptb_path)
    assert str(exc.value) == f"cannot write {out}: No space left on device"
