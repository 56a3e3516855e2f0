"""The query library over tables the tests build themselves."""
import hashlib
import json
import math
import subprocess
import sys

import pytest

from nasbench_ptb import api
from nasbench_ptb.space import parse, space

import numpy as np

from helpers import synthetic_table, key_test, key_valid

IDS = np.arange(32)
# what the synthetic 2-node table must aggregate to: mean over ok seeds (0 and 1: +0.5), id 2 has seed 1 only,
# 1 is missing, 3 diverged on every seed
VALID = 100.5 + key_valid(IDS).astype(float)
VALID[2], VALID[1], VALID[3] = 101 + key_valid(2), np.nan, np.nan
TEST = 90.5 + key_test(IDS).astype(float)
TEST[2], TEST[1], TEST[3] = 91 + key_test(2), np.nan, np.nan


def expected_rank(a: int, values=VALID) -> int:
    """1 + how many architectures are strictly better; no value ranks after every value."""
    return 1 + int(np.sum(values < values[a])) if np.isfinite(values[a]) else 1 + int(np.isfinite(values).sum())


@pytest.fixture()
def table_dir(tmp_path, monkeypatch):
    synthetic_table(tmp_path / "2node-x.h5")
    synthetic_table(tmp_path / "3node-x.h5", "3node")
    lines = [f"{hashlib.sha256((tmp_path / n).read_bytes()).hexdigest()}  {n}" for n in ("2node-x.h5", "3node-x.h5")]
    (tmp_path / "MANIFEST").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("NASBENCH_PTB_TABLES", str(tmp_path))
    api._default.cache_clear()
    api.defaults.cache_clear()
    yield tmp_path
    api._default.cache_clear()
    api.defaults.cache_clear()


def test_query_forms_agree_and_aggregate(table_dir):
    g = parse("tanh:0|relu:1")
    rec = api.query("tanh:0|relu:1")
    assert rec.id == g.id == 5 and rec.hash == g.hash and rec.iso_hash == g.iso_hash and rec.space == "2node"
    assert api.query(g.darts_repr()) is rec and api.query([("tanh", 0), ("relu", 1)]) is rec
    assert api.query(g.hash) is rec and api.query(5, space="2node") is rec
    sa = rec.standalone
    assert sa.status == "ok" and sa.n_seeds == 2
    assert sa.valid_ppl == pytest.approx(VALID[5]) == 106.5
    assert sa.valid_ppl_std == pytest.approx(np.sqrt(0.5))  # 106, 107: sample std (ddof 1), not the population's 0.5
    assert sa.test_ppl == pytest.approx(TEST[5]) == 118.5
    assert len(sa.seeds[0].curve.valid_ppl) == 5 and sa.seeds[1].curve.seconds[-1] == 10.0
    assert sa.seeds[0].curve.valid_ppl[0] == pytest.approx(106 + 4 * (20 + 26))  # first checkpoint, not the last
    one = api.query("tanh:0|relu:1", seed=1).standalone
    assert one.n_seeds == 1 and one.valid_ppl == pytest.approx(107)
    assert np.isnan(one.valid_ppl_std) and np.isnan(one.test_ppl_std)  # one seed: no spread, n says so
    # ranks by mean final valid ppl; 1 missing -> None; 3 all diverged -> last of the 31 attempted
    assert sa.rank == expected_rank(5) == 7
    assert api.query(1, space="2node").standalone.rank is None
    assert api.query(3, space="2node").standalone.rank == 31
    assert [w.rank for w in rec.ws] == [32 - key_valid(5), 32 - key_valid(5), None]  # WS reversed; seed 2 diverged
    assert rec.ws[0].samples == 7 and rec.ws[2].status == "diverged" and math.isnan(rec.ws[2].final_valid_ppl)
    three = api.query("tanh:0|relu:1|sigmoid:2")
    assert three.space == "3node" and three.id == parse("tanh:0|relu:1|sigmoid:2").id


def test_missing_and_diverged_are_reported_not_imputed(table_dir):
    missing = api.query(1, space="2node").standalone
    assert missing.status == "missing" and missing.n_seeds == 0 and math.isnan(missing.valid_ppl)
    assert missing.missing_seeds == (0, 1)
    half = api.query(2, space="2node").standalone
    assert half.status == "ok" and half.n_seeds == 1 and half.diverged_seeds == (0,)
    assert half.valid_ppl == pytest.approx(VALID[2]) == 118  # seed 1 only
    dead = api.query(3, space="2node").standalone
    assert dead.status == "diverged" and math.isnan(dead.test_ppl)
    d = api.query(3, space="2node").to_dict()
    assert d["standalone"]["test_ppl"] is None  # NaN -> null in JSON


def test_benchmark_object(table_dir):
    b = api.load(table_dir / "2node-x.h5")
    assert len(b) == 32 and [r.id for r in b] == list(range(32))
    assert b.metadata["preset"] == "synthetic" and b.metadata["coverage"]["missing"] == 2
    assert [r.id for r in b.best("valid_ppl", 3)] == list(np.argsort(np.nan_to_num(VALID, nan=1e9))[:3]) == [27, 18, 9]
    assert [r.id for r in b.best("test_ppl", 2)] == list(np.argsort(np.nan_to_num(TEST, nan=1e9))[:2]) == [17, 20]
    assert b.rank("tanh:0|relu:1") == 7 and b.rank(5, ws_seed=0) == 26 and b.rank(5, ws_seed=2) is None
    with pytest.raises(ValueError, match="unknown metric"):
        b.best("accuracy")
    with pytest.raises(ValueError, match=r"no super-net with WS seed 9 \(the table.s: 0, 1, 2\)"):  # as values()
        b.rank(5, ws_seed=9)
    df = b.to_dataframe()
    assert df.shape[0] == 32 and df.loc[5, "valid_ppl"] == pytest.approx(106.5) and df.loc[5, "ws0_rank"] == 26


def test_errors(table_dir, tmp_path):
    b = api.load(table_dir / "2node-x.h5")
    for key in ("0123456789abcdef", "tanh:0|relu:1|tanh:0", 32, -1):
        with pytest.raises(api.ArchNotFoundError) as err:
            b.query(key)
        assert "space 2node" in str(err.value) and str(key) in str(err.value)
        assert isinstance(err.value, KeyError)
    for bad in ("", "tanh:0|gelu:0", "nonsense", "tanh:0|tanh:7"):
        with pytest.raises(ValueError):
            b.query(bad)
    with pytest.raises(ValueError, match="needs a space"):
        api.query(5)
    with pytest.raises(api.TableError, match="no such table file"):
        api.load(tmp_path / "absent.h5")
    # a table that does not match its MANIFEST entry is refused
    path = table_dir / "2node-x.h5"
    data = bytearray(path.read_bytes())
    synthetic_table(path, seed=1)  # rebuilt with other values, MANIFEST not updated
    with pytest.raises(api.TableError, match="does not match MANIFEST"):
        api.load(path)
    api.load(path, verify=False)
    path.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(api.TableError, match="2node-x.h5"):
        api.load(path, verify=False)


def test_default_tables_follow_manifest_and_env(table_dir, monkeypatch):
    tables = api.default_tables()
    assert tables == {"2node": table_dir / "2node-x.h5", "3node": table_dir / "3node-x.h5"}
    monkeypatch.setenv("NASBENCH_PTB_TABLES", str(table_dir / "3node-x.h5"))
    assert api.default_tables() == {"3node": table_dir / "3node-x.h5"}
    monkeypatch.setenv("NASBENCH_PTB_TABLES", str(table_dir / "nope"))
    with pytest.raises(api.TableError, match="nope"):
        api.default_tables()


def test_query_never_imports_torch_or_fastapi(table_dir):
    code = ("import sys; from nasbench_ptb import api; r = api.query('tanh:0|relu:1'); "
            "r.to_dict(); list(api.load(api.default_tables()['2node'])); "
            "bad = [m for m in ('torch', 'fastapi', 'uvicorn') if m in sys.modules]; assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_cli_query(table_dir):
    run = lambda *a: subprocess.run([sys.executable, "-m", "nasbench_ptb.cli", "query", *a],  # noqa: E731
                                    capture_output=True, text=True)
    res = run("tanh:0|relu:1")
    assert res.returncode == 0 and "rank 7" in res.stdout and "ws seed 0" in res.stdout
    res = run(parse("tanh:0|relu:1").hash, "--json")
    assert res.returncode == 0 and '"genotype": "tanh:0|relu:1"' in res.stdout
    for args, msg in ((("5",), "needs a space"), (("tanh:0|oops:0",), "unknown op"),
                      (("0123456789abcdef",), "no architecture"), (("5", "--space", "2node", "--seed", "7"), "seed 7")):
        res = run(*args)
        assert res.returncode == 1 and msg in res.stderr and "Traceback" not in res.stderr
    assert space("2node").size == 32


def test_cli_info_lists_the_best_by_mean_final_validation_ppl(table_dir):
    res = subprocess.run([sys.executable, "-m", "nasbench_ptb.cli", "info", str(table_dir / "2node-x.h5"), "--top",
                          "4", "--json"], capture_output=True, text=True)
    best = json.loads(res.stdout)["best"]
    want = list(np.argsort(np.nan_to_num(VALID, nan=1e9))[:4])
    assert [row["id"] for row in best] == want == [27, 18, 9, 0]
    assert [row["valid_ppl"] for row in best] == pytest.approx(list(VALID[want]))
    assert [row["test_ppl"] for row in best] == pytest.approx(list(TEST[want]))  # each row's own test ppl
    assert [row["seeds_ok"] for row in best] == [2, 2, 2, 2]


def test_cli_info_ranks_iso_classes_and_honours_min_n(table_dir):
    """Issue 25.14: the ranking by iso class, and a minimum n for the top list."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "nasbench_ptb.cli", "info", str(table_dir / "2node-x.h5"),  # noqa: E731
                                     *a], capture_output=True, text=True)
    out = json.loads(run("--top", "40", "--by-iso", "--min-n", "2", "--json").stdout)
    assert out["min_n"] == 2 and 2 not in [r["id"] for r in out["best"]]  # arch 2: one ok seed
    assert all(r["seeds_ok"] >= 2 for r in out["best"]) and len(out["best"]) == 29
    classes = out["best_iso_classes"]
    assert [c["rank"] for c in classes] == list(range(1, len(classes) + 1)) and all(c["n"] >= 2 for c in classes)
    twins = next(c for c in classes if c["ids"] == [19, 26])
    assert twins["n"] == 4 and twins["valid_ppl"] == pytest.approx(np.mean(VALID[[19, 26]]))
    text = run("--by-iso").stdout
    assert "iso classes by pooled final validation ppl" in text and "(n = 2)" in text
    assert "(+1 twin)" in run("--by-iso", "--top", "40").stdout and "(n = 4)" in run("--by-iso", "--top", "40").stdout
    bad = run("--min-n", "0")
    assert bad.returncode == 1 and "--min-n must be ≥ 1, got 0" in bad.stderr
    from nasbench_ptb import api
    bench = api.load(table_dir / "2node-x.h5")  # the Python face answers the same
    assert [r.id for r in bench.best(k=40, min_n=2)] == [r["id"] for r in out["best"]]
    assert [r.id for r in bench.best(k=40)][:29] != [r["id"] for r in out["best"]]  # arch 2 is in it
    assert [(c.ids, c.rank) for c in bench.iso_classes(min_n=2) if c.rank] == [(tuple(c["ids"]), c["rank"])
                                                                             for c in classes]


# key -> what every face must answer: ("id", n) for the record of id n in 2node, else the kind of error
FACES = {
    "tanh:0|relu:1": ("id", 5),
    parse("tanh:0|relu:1").hash: ("id", 5),
    "Genotype(recurrent=[('tanh', 0), ('relu', 1)], concat=range(1, 3))": ("id", 5),
    "0123456789abcdef": ("not found", None),  # a well-formed hash in no table
    "0123456789ABCDEF": ("malformed", None),  # hashes are lowercase: this is read as a genotype, and is not one
    "tanh:0|gelu:0": ("malformed", None),
    "tanh:0|relu:1|tanh:0|relu:2": ("no table", None),  # a 4-node genotype: no table for its space
}


@pytest.mark.parametrize("key", list(FACES))
def test_a_key_means_the_same_in_python_the_cli_and_http(table_dir, key):
    from fastapi.testclient import TestClient

    from nasbench_ptb.server.app import create_app
    want, arch = FACES[key]
    errors = {"not found": api.ArchNotFoundError, "malformed": ValueError, "no table": api.TableError}
    # Python: api.query and the collection behind it
    if want == "id":
        assert api.query(key).id == arch and api.defaults().query(key).space == "2node"
    else:
        with pytest.raises(errors[want]):
            api.query(key)
    # one table: the same answer for keys of its space, the same malformed keys refused
    bench = api.load(table_dir / "2node-x.h5")
    if want == "id":
        assert bench.query(key).id == arch
    elif want == "malformed":
        with pytest.raises(ValueError):
            bench.query(key)
    else:
        with pytest.raises(api.ArchNotFoundError):
            bench.query(key)
    # the CLI
    res = subprocess.run([sys.executable, "-m", "nasbench_ptb.cli", "query", key, "--json"], capture_output=True,
                         text=True)
    if want == "id":
        assert res.returncode == 0 and json.loads(res.stdout)["id"] == arch
    else:
        assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    # HTTP, by hash where the key has the form of one, else by genotype
    with TestClient(create_app([table_dir / "2node-x.h5", table_dir / "3node-x.h5"])) as client:
        url = f"/arch/{key}" if len(key) == 16 and ":" not in key else "/arch"
        r = client.get(url, params=None if url != "/arch" else {"genotype": key})
        code = {"id": 200, "not found": 404, "malformed": 422, "no table": 404}[want]
        assert r.status_code == code and (want != "id" or r.json()["id"] == arch)


def test_a_negative_id_is_the_same_error_on_the_command_line_and_in_python(capsys):
    """Issue 25.15: `query -- -3` was parsed as a malformed genotype on the command line."""
    from nasbench_ptb.cli import main

    with pytest.raises(api.ArchNotFoundError) as info:
        api.query(-3, space="2node")
    assert main(["query", "--space", "2node", "--", "-3"]) == 1
    assert capsys.readouterr().err.strip() == f"nasbench_ptb query: error: {info.value}"


def test_every_failure_a_user_meets_is_one_nasbench_error_of_its_kind(table_dir):
    """Issue 27: one base to catch, the few kinds users tell apart, each still the builtin older code catches,
    and one mapping from kind to HTTP status."""
    from nasbench_ptb import errors
    from nasbench_ptb.builder.data import DataError
    from nasbench_ptb.builder.parts import BuildError

    bench = api.load(table_dir / "2node-x.h5")
    cases = [
        (lambda: bench.query("ffffffffffffffff"), errors.ArchNotFoundError, KeyError, 404),
        (lambda: bench.query("tanh:0|gelu:0"), errors.InvalidInputError, ValueError, 404),
        (lambda: bench.rank(5, ws_seed=9), errors.SuperNetNotFoundError, ValueError, 404),
        (lambda: bench.query(5, seed=9), errors.PartNotFoundError, KeyError, 404),
        (lambda: bench.at_epoch(0.01), errors.FidelityError, ValueError, 404),
        (lambda: api.load(table_dir / "none.h5"), errors.TableError, Exception, 404),
        (lambda: api.Tables([bench]).bench("3node"), errors.SpaceNotLoadedError, errors.TableError, 404),
    ]
    for call, kind, builtin, status in cases:
        with pytest.raises(errors.NasbenchError) as caught:
            call()
        assert type(caught.value) is kind and isinstance(caught.value, builtin), (kind, type(caught.value))
        assert errors.http_status(caught.value) == status and str(caught.value)
    assert issubclass(BuildError, errors.NasbenchError) and issubclass(DataError, errors.NasbenchError)
    assert errors.http_status(errors.QueryLimitExceeded("x")) == 500  # a policy bug, never a request's fault


def test_info_ranges_stay_readable_through_a_blow_up():
    """A super-net mid-blow-up validated some cells at 1e304: info printed all 305 digits of it."""
    from nasbench_ptb.cli_read import _fmt_range

    assert _fmt_range(np.array([373.14, 1.0142e304, np.nan, 746.3, np.inf])) == "373.1 .. 1.01e+304 (median 746.3)"
    assert _fmt_range(np.array([np.nan])) == "n/a"


def test_info_says_a_diverged_supernet_has_no_final_ranking(table_dir, capsys):
    from nasbench_ptb.cli import main

    assert main(["info", str(table_dir / "2node-x.h5")]) == 0
    out = capsys.readouterr().out
    assert "ws seed 2: no final ranking to compare (diverged)" in out  # not "+nan (p = nan"
    assert "ws seed 0: Kendall tau-b vs standalone = " in out and "nan" not in out.split("ws seed 2")[1].split("\n")[0]


def test_info_and_report_name_each_supernets_rollbacks_and_how_trained_its_final_weights_are(tmp_path, capsys):
    """A super-net whose last intervals all blew up ends 'ok' on the weights of an earlier checkpoint: info and
    report must say where it was rolled back and from when its final weights date, not pass it off as trained
    to the end (the cpu10 super-net 0: rolled back in each of its last four intervals, final weights of epoch 6)."""
    import dataclasses

    from nasbench_ptb import schema, summary
    from nasbench_ptb.cli import main

    table = synthetic_table(tmp_path / "t.h5")  # WS checkpoints at epochs 0.5, 0.75, 1; seed 2 diverged
    rollback = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    table = dataclasses.replace(table, ws=dataclasses.replace(table.ws, rollback=rollback))
    schema.write(table, tmp_path / "t.h5")
    rows = summary.ws_vs_standalone_tau(schema.read(tmp_path / "t.h5"))
    assert [r.rollback_epochs for r in rows] == [(0.75, 1.0), (0.5,), (0.75,)]
    assert [r.weights_from(table.ws.epochs) for r in rows] == [0.5, None, None]

    assert main(["info", str(tmp_path / "t.h5")]) == 0
    lines = {ln.split(":")[0].strip(): ln for ln in capsys.readouterr().out.splitlines() if "ws seed" in ln}
    assert lines["ws seed 0"].endswith("ok; 2 rollbacks, in the intervals to epochs 0.75, 1: its final weights are "
                                       "from epoch 0.5 or before)")
    assert lines["ws seed 1"].endswith("ok; 1 rollback, in the intervals to epochs 0.5)")
    assert lines["ws seed 2"].endswith("(diverged; 1 rollback, in the intervals to epochs 0.75)")

    assert main(["report", "--table", str(tmp_path / "t.h5"), "--out", str(tmp_path / "r"), "--runs", "2"]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| 0.75, 1 (final weights from epoch ≤ 0.5) |" in md and "| diverged | – | – | – | 0.75 |" in md
    assert "nan" not in md.lower()  # a diverged super-net's taus read "–", never "+nan"
