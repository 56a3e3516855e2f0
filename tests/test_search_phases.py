"""Real search phases (DARTS, ENAS, NAO, random-WS) on the real super-net, what they share: each end to end at a tiny
size and reproducible, the driver's context and random-WS, the results file and its merge, the CLI and the one registry.
Each method's own learning rule is pinned in tests/test_search_{darts,enas,nao}.py."""
import numpy as np
import pytest
import torch

from nasbench_ptb import search_results
from nasbench_ptb.builder import search
from nasbench_ptb.cli import main
from nasbench_ptb.schema import Status, TableError
from nasbench_ptb.space import space

from helpers import FAST_SEARCH, search_preset, tiny_preset

SP = space("2node")


@pytest.mark.parametrize("algo", search_results.ALGORITHMS)
def test_each_algorithm_runs_end_to_end_and_is_reproducible(corpus, algo):
    a = search.run(algo, corpus, SP, [0, 1], search_preset(), options=FAST_SEARCH[algo])
    assert a.choice.shape == (2, 3) and a.final.tolist() == a.choice[:, -1].tolist()
    assert ((a.choice >= 0) & (a.choice < SP.size)).all() and (a.status == Status.OK).all()
    assert np.isfinite(a.estimate).all() and (a.estimate > 1).all()
    assert (np.diff(a.seconds, axis=1) > 0).all() and np.allclose(a.epochs, [1 / 3, 2 / 3, 1], atol=0.05)
    b = search.run(algo, corpus, SP, [0, 1], search_preset(), options=FAST_SEARCH[algo])
    assert np.array_equal(a.choice, b.choice) and np.allclose(a.estimate, b.estimate, rtol=1e-5)
    for name, arr in a.extra.items():
        assert arr.shape[:2] == (2, 3), name


def test_random_ws_returns_the_best_of_its_candidates_under_the_shared_weights(corpus, monkeypatch):
    """Its choice is the argmin of Context.score over exactly the candidates it drew."""
    seen = []
    real = search.Context.score

    def spy(self, params, slot, ids, data):
        out = real(self, params, slot, ids, data)
        seen.append((slot, np.asarray(ids).copy(), out))
        return out

    monkeypatch.setattr(search.Context, "score", spy)
    res = search.run("random_ws", corpus, SP, [3], search_preset(), options={"candidates": 5})
    assert len(seen) == 3 and all(len(ids) == 5 for _, ids, _ in seen)
    for c, (_, ids, ppl) in enumerate(seen):
        assert res.choice[0, c] == ids[np.argmin(ppl)] and res.estimate[0, c] == pytest.approx(ppl.min())


def test_results_round_trip_merge_and_integrity(tmp_path, corpus):
    p = search_preset()
    a = search.run("random_ws", corpus, SP, [0, 1], p, options={"candidates": 4})
    res = search_results.SearchResults(SP, p.name, {"hidden": p.hidden}, {"random_ws": a}, {"device": ["x"]})
    path = tmp_path / "s.h5"
    search_results.write(res, path)
    back = search_results.read(path)
    got = back.searches["random_ws"]
    assert back.space.name == "2node" and back.config == {"hidden": p.hidden} and got.options == {"candidates": 4}
    for name in ("seeds", "epochs", "choice", "estimate", "seconds", "final", "status"):
        assert np.array_equal(getattr(got, name), getattr(a, name)), name
    d = search.run("darts", corpus, SP, [0, 1], p)
    merged = back.merged(search_results.SearchResults(SP, p.name, {"hidden": p.hidden}, {"darts": d}))
    assert sorted(merged.searches) == ["darts", "random_ws"] and merged.searches["random_ws"] is got
    with pytest.raises(ValueError, match="configuration differ"):
        back.merged(search_results.SearchResults(SP, p.name, {"hidden": 99}, {"darts": d}))
    raw = bytearray(path.read_bytes())
    k = raw.find(np.asarray(a.estimate, dtype="<f8").tobytes()[:8])
    raw[k] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(TableError, match="digest mismatch"):
        search_results.read(path)
    with pytest.raises(ValueError, match="shape"):
        search_results.Search("darts", a.seeds, a.epochs, a.choice[:, :2], a.estimate, a.seconds, a.final, a.status)


def test_cli_search_writes_merges_and_refuses_bad_input(tmp_path, ptb_path, capsys):
    out = tmp_path / "search.h5"
    args = ["search", "--space", "2node", "--preset", "smoke", "--seeds", "2", "--data", str(ptb_path),
            "--out", str(out)]
    assert main(args + ["--algo", "random_ws", "--option", "candidates=3"]) == 0
    assert main(args + ["--algo", "nao", "--option", "epd_epochs=3"]) == 0
    res = search_results.read(out)
    assert sorted(res.searches) == ["nao", "random_ws"] and res.searches["random_ws"].options == {"candidates": 3}
    assert res.config["name"] == "smoke" and res.attrs["ptb_sha256"]
    capsys.readouterr()
    for extra, message in ((["--algo", "gdas"], "unknown search algorithm"),
                           (["--algo", "enas", "--option", "order=2"], "unknown option 'order'"),
                           (["--algo", "darts", "--option", "order=3"], "order must be 1"),
                           (["--algo", "darts", "--set", "bogus=1"], "unknown preset field 'bogus'"),
                           (["--algo", "darts", "--seeds", "0"], "--seeds must be at least 1")):
        assert main(args + extra) == 1, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    before = out.read_bytes()
    other = ["search", "--space", "3node", "--preset", "smoke", "--data", str(ptb_path), "--out", str(out)]
    assert main(other + ["--algo", "random_ws"]) == 1
    assert "another space" in capsys.readouterr().err and out.read_bytes() == before


def test_search_checks_its_output_and_takes_its_lock_before_training(tmp_path, ptb_path, capsys, monkeypatch):
    """Issue 25.6-7: `--out newdir/s.h5` crashed after the whole search (the lock in a folder never created),
    `--out DIR` and `--out /dev/null` were tracebacks, and a second search learnt of the lock only at the end."""
    from nasbench_ptb.builder import guard
    from nasbench_ptb.builder import search as search_module

    args = ["search", "--space", "2node", "--preset", "smoke", "--seeds", "1", "--data", str(ptb_path),
            "--algo", "random_ws", "--option", "candidates=2"]
    for out, message in ((tmp_path, "is a directory"), ("/dev/null", "not a regular file")):
        assert main(args + ["--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    trained = []
    monkeypatch.setattr(search_module, "run", lambda *a, **k: trained.append(a) or (_ for _ in ()).throw(
        AssertionError("trained while another search held the lock")))
    out = tmp_path / "new" / "deeper" / "s.h5"
    out.parent.mkdir(parents=True)
    with guard.exclusive(out.parent, out, f".{out.name}.lock"):
        assert main(args + ["--out", str(out)]) == 1
    assert f"another build is writing {out} (pid" in capsys.readouterr().err and not trained
    monkeypatch.undo()
    out = tmp_path / "fresh" / "dir" / "s.h5"  # folders that do not exist yet are created before training
    assert main(args + ["--out", str(out)]) == 0
    assert sorted(search_results.read(out).searches) == ["random_ws"]
    assert not list(out.parent.glob(".*.lock"))


def test_one_registry_names_the_algorithms_the_builder_runs_and_the_cli_offers(capsys):
    """Issue 27: the registry (search_results.ALGORITHMS) is what the builder's methods, the CLI's --algo help and
    its refusal list; the policies' registry likewise feeds `evaluate --policies` (it once lacked two)."""
    from nasbench_ptb.policies import default_policies

    assert list(search.methods()) == list(search_results.ALGORITHMS)
    assert all(cls.name == name for name, cls in search.methods().items())
    for command, names in ((["search", "--help"], search_results.ALGORITHMS),
                           (["evaluate", "--help"], default_policies())):
        with pytest.raises(SystemExit):
            main(command)
        text = " ".join(capsys.readouterr().out.split())
        assert all(name in text for name in names), command
    assert main(["search", "--algo", "bogus", "--space", "2node"]) != 0
    assert "known: darts, enas, nao, random_ws" in capsys.readouterr().err


def test_the_context_scores_the_best_candidate_on_the_split_of_that_epoch(corpus, monkeypatch):
    from nasbench_ptb.builder.presets import Schedule

    p = tiny_preset(ws_epochs=1.0, ws_checkpoints=3, ws_valid_tokens=200, ws_final_valid_tokens=None)
    ctx = search.Context(corpus, SP, [0, 1, 2], p, torch.device("cpu"))
    assert ctx.valid(True) is ctx.valid_final and ctx.valid(False) is ctx.valid_mid
    assert ctx.valid_final.shape[0] > ctx.valid_mid.shape[0]
    assert ctx.interval() == 1.0  # before run() sets the schedule
    ctx.schedule = Schedule.of(1.0, 4)
    ctx.checkpoint = 0
    assert ctx.interval() == pytest.approx(0.25)
    ctx.checkpoint = 2
    assert ctx.interval() == pytest.approx(0.25)
    seen = []

    def score(params, s, ids, data):
        seen.append((s, list(ids), data))
        return np.array([np.inf if i == 3 else 50.0 + i for i in ids])

    monkeypatch.setattr(ctx, "score", score)
    choice, est, switch = ctx.best_of({}, np.array([True, False, True]), [[9, 3, 9, 5], [1], [3]], last=True)
    assert choice.dtype == np.int64 and choice.tolist() == [5, 0, 3]
    assert est[0] == 55.0 and np.isnan(est[1]) and est[2] == np.inf
    assert switch[0] == pytest.approx(np.log(55.0)) and switch[1] == np.inf and switch[2] == np.inf
    assert [(s, ids) for s, ids, _ in seen] == [(0, [3, 5, 9]), (2, [3])]  # distinct candidates, live slots only
    assert all(data is ctx.valid_final for _, _, data in seen)


def test_random_ws_draws_its_candidates_per_slot_and_refuses_none(corpus, monkeypatch):
    ctx = search.Context(corpus, SP, [0, 1], search_preset(), torch.device("cpu"))
    assert search.RandomWS(ctx).k == 8 and search.RandomWS(ctx, candidates=1).k == 1  # default: a quarter
    assert search.RandomWS(ctx, candidates=100).k == 32 and search.RandomWS(ctx).options == {"candidates": 8}
    tiny = search.Context(corpus, space("1node"), [0], search_preset(), torch.device("cpu"))  # 4 cells: a quarter is 1
    assert search.RandomWS(tiny).k == 1
    with pytest.raises(ValueError, match=r"^random_ws needs at least 1 candidate, got -2$"):
        search.RandomWS(ctx, candidates=-2)
    with pytest.raises(ValueError, match=r"^unknown search algorithm 'pbt' \(known: darts, enas, nao, random_ws\)$"):
        search.make("pbt", ctx, {})
    rw = search.RandomWS(ctx, candidates=5)
    asked = []
    monkeypatch.setattr(ctx, "best_of", lambda params, live, cands, last: asked.append((cands, last)) or
                        (np.zeros(2, np.int64), np.ones(2), np.zeros(2)))
    *_, extra = rw.checkpoint(ctx, {}, np.array([True, True]), last=True)
    (cands, last), = asked
    assert last is True and extra == {} and len(cands) == 2
    assert all(len(set(c.tolist())) == 5 for c in cands) and cands[0].tolist() != cands[1].tolist()
