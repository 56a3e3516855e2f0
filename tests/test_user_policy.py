"""Users' own search policies: ``evaluate --policy module:Name`` and ``policies.load_policy`` — how a spec
resolves, where the module is found, every refusal, and the documented example policy."""
import subprocess
import sys

import numpy as np
import pytest

from nasbench_ptb.simulator import Budget

from helpers import synthetic_table


def test_user_policy_by_module_path_runs_through_the_same_protocol(tmp_path, monkeypatch, capsys):
    """A policy file in the working directory, loaded by --policy module:Name, judged like the built-in ones:
    it queries the first 10 candidates in id order (arch 1 is missing), so it must return the best of ids
    0, 2..10 by final validation ppl; broken policies are refused in one line."""
    from helpers import key_valid, synthetic_table
    from nasbench_ptb.cli import main
    from nasbench_ptb.policies import load_policy

    synthetic_table(tmp_path / "2node-x.h5")
    (tmp_path / "mine.py").write_text(
        "class FirstTen:\n    name = 'first_ten'\n    uses_ws = False\n"
        "    def search(self, sim):\n        for a in sim.candidates[:10]:\n            sim.query(int(a))\n"
        "        return sim.best_seen()\n"
        "class Bad:\n    name = 'bad'\n    uses_ws = False\n    def search(self, sim):\n        return 99\n"
        "class Boom:\n    name = 'boom'\n    uses_ws = False\n    def search(self, sim):\n        raise KeyError('x')\n"
        "not_a_policy = 3\n")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--table", "2node-x.h5", "--policies", "random", "--policy", "mine:FirstTen",
                 "--runs", "3", "--json"]) == 0
    import json

    rows = {r["policy"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    ids = [0, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    want = min(ids, key=lambda a: (100 + key_valid(a) + (1.0 if a == 2 else 0.5)) if a != 3 else np.inf)
    assert rows["first_ten"]["choices"] == [want] * 3 and rows["first_ten"]["runs"] == 3
    for spec, message in (("mine:Bad", "returned 99, not an architecture id of 2node"),
                          ("mine:Boom", "policy boom failed: KeyError"),
                          ("mine:not_a_policy", "not a search policy: it lacks a str attribute 'name'"),
                          ("mine", "expected package.module:Name"), ("nowhere:X", "cannot import nowhere")):
        assert main(["evaluate", "--table", "2node-x.h5", "--policies", "random", "--policy", spec]) == 1, spec
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert load_policy("mine:FirstTen").name == "first_ten"


def test_the_documented_example_policy_runs(tmp_path, monkeypatch):
    """docs/example_policy.py, the file users copy, keeps working: within budget, a valid choice, deterministic."""
    from pathlib import Path

    from helpers import synthetic_table
    from nasbench_ptb.evaluate import evaluate
    from nasbench_ptb.policies import load_policy

    monkeypatch.chdir(Path(__file__).resolve().parents[1] / "docs")
    policy = load_policy("example_policy:GreedyOps")
    table = synthetic_table(tmp_path / "t.h5")
    a, b = (evaluate(table, [policy], runs=4, budget=Budget(queries=6))[0] for _ in range(2))
    assert a.choices == b.choices and all(c in range(32) and c not in (1,) for c in a.choices)
    assert a.mean_rank < 16  # greedy over neighbours beats the middle of the ranking with 6 of 31 queries


def test_load_policy_accepts_objects_classes_and_factories_and_names_every_problem(tmp_path, monkeypatch):
    """How ``module:Name`` resolves (a class or a factory is called, a policy object — even a callable one — is
    not), that the working directory wins over other paths and is removed again, and every error message whole."""
    import sys

    from nasbench_ptb.policies import load_policy

    policy = ("class P:\n    name = 'p'\n    uses_ws = False\n    def search(self, sim):\n        return 0\n")
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "userpol.py").write_text("class P:\n    name = 'decoy'\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "userpol.py").write_text(
        policy + "class Called(P):\n    def __call__(self):\n        raise AssertionError('a policy object is not called')\n"
        "instance = Called()\n"
        "def factory():\n    return P()\n"
        "def broken():\n    raise RuntimeError('no')\n"
        "nothing = 3\n")
    monkeypatch.syspath_prepend(str(decoy))  # another userpol first on the path: the working directory must win
    monkeypatch.chdir(work)
    monkeypatch.delitem(sys.modules, "userpol", raising=False)
    before = list(sys.path)
    assert load_policy("userpol:P").name == "p" and sys.path == before
    assert load_policy("userpol:instance") is sys.modules["userpol"].instance
    assert isinstance(load_policy("userpol:factory"), sys.modules["userpol"].P)
    errors = {
        "userpol": "--policy 'userpol': expected package.module:Name",
        ":P": "--policy ':P': expected package.module:Name",
        "userpol:": "--policy 'userpol:': expected package.module:Name",
        "userpol:P:x": "--policy userpol:P:x: userpol has no 'P:x'",
        "nowhere_at_all:X": "--policy nowhere_at_all:X: cannot import nowhere_at_all (ModuleNotFoundError: No module "
                            "named 'nowhere_at_all')",
        "userpol:broken": "--policy userpol:broken: calling broken() failed (RuntimeError: no)",
        "userpol:nothing": "--policy userpol:nothing: not a search policy: it lacks a str attribute 'name', a bool "
                           "attribute 'uses_ws', a method search(sim)",
    }
    for spec, message in errors.items():
        with pytest.raises(ValueError) as err:
            load_policy(spec)
        assert str(err.value) == message, spec
    assert sys.path == before


def test_user_policy_file_beside_the_command_is_found_by_the_installed_script(tmp_path):
    """The console script's own folder, not the working directory, heads its sys.path: load_policy adds the
    working directory, so a policy file beside the user's command is found."""
    import os
    import shutil

    synthetic_table(tmp_path / "2node-x.h5")
    (tmp_path / "beside.py").write_text(
        "class P:\n    name = 'beside'\n    uses_ws = False\n    def search(self, sim):\n        return 27\n")
    script = shutil.which("nasbench_ptb", path=os.path.dirname(sys.executable))
    res = subprocess.run([script, "evaluate", "--table", "2node-x.h5", "--policies", "random", "--policy",
                          "beside:P", "--runs", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "| beside | 100.50 ± 0.00 |" in res.stdout  # id 27, the best: 100 + key_valid 0 + mean seed offset


def test_a_policy_that_never_stops_is_ended_and_named(tmp_path, monkeypatch):
    """Issue 25.11: re-queries are free, so a policy re-querying one architecture forever hung `evaluate`."""
    from nasbench_ptb import simulator
    from nasbench_ptb.evaluate import evaluate
    from nasbench_ptb.simulator import Simulator

    class Loops:
        name, uses_ws = "loops", False

        def search(self, sim):
            while True:
                sim.query(0)

    monkeypatch.setattr(simulator, "MAX_CALLS", 500)
    table = synthetic_table(tmp_path / "t.h5")
    with pytest.raises(ValueError, match=r"policy loops failed: QueryLimitExceeded: more than 500 queries in one run"):
        evaluate(table, [Loops()], runs=1)
    sim = Simulator(table, np.random.default_rng(0))
    for _ in range(500):  # up to the limit, every question is answered
        sim.query(0)
    assert sim.calls == 500 and sim.queries == 1
    with pytest.raises(simulator.QueryLimitExceeded):
        sim.query_at(0, 2)


def test_a_user_policy_may_not_take_a_built_in_name(tmp_path, monkeypatch, capsys):
    """Issue 25.11: a user policy named like a built-in silently added a second row of that name."""
    from nasbench_ptb.cli import main

    synthetic_table(tmp_path / "2node-x.h5")
    (tmp_path / "named_policies.py").write_text(
        "class Mine:\n    name = 'random'\n    uses_ws = False\n    def search(self, sim):\n        return 0\n"
        "class Twin:\n    name = 'twin'\n    uses_ws = False\n    def search(self, sim):\n        return 0\n")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--table", "2node-x.h5", "--policy", "named_policies:Mine"]) == 1
    assert "its name 'random' is a built-in policy's; give it a name of its own" in capsys.readouterr().err
    assert main(["evaluate", "--table", "2node-x.h5", "--policy", "named_policies:Twin", "--policy", "named_policies:Twin"]) == 1
    assert "its name 'twin' is another --policy's" in capsys.readouterr().err
