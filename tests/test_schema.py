import h5py
import numpy as np
import pytest

from nasbench_ptb.builder import presets
from nasbench_ptb import schema, summary
from nasbench_ptb.space import space


def _table(n_seeds=2, C=4):
    sp = space("2node")
    sa = schema.Standalone.empty(sp.size, range(n_seeds), np.linspace(0.25, 1.0, C))
    rng = np.random.RandomState(0)
    sa.valid_ppl[:10] = rng.uniform(100, 200, (10, n_seeds, C))
    sa.test_ppl[:10] = rng.uniform(100, 200, (10, n_seeds))
    sa.status[:10] = schema.Status.OK
    sa.status[10, 0] = schema.Status.DIVERGED
    return schema.Table(sp, "custom", {"hidden": 8, "params": 123}, sa, attrs={"device": "cpu", "software": {"x": 1}})


def test_round_trip(tmp_path):
    t = _table()
    schema.write(t, tmp_path / "t.h5")
    r = schema.read(tmp_path / "t.h5")
    assert r.space == t.space and r.preset == "custom" and r.config == t.config
    assert r.attrs["device"] == "cpu" and r.attrs["software"] == {"x": 1}
    for k in schema.Standalone.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(r.standalone, k), getattr(t.standalone, k))
    with h5py.File(tmp_path / "t.h5") as f:
        assert f["archs/genotype"][0].decode() == "tanh:0|tanh:0" and f["archs/params"][0] == 123
        assert f["archs/hash"][31].decode() == space(2).from_id(31).hash
    assert [p.name for p in tmp_path.iterdir()] == ["t.h5"]  # no temporary left behind


def test_summary_ranks_ok_runs_only():
    t = _table()
    cov = summary.coverage(t)
    assert (cov.ok, cov.diverged, cov.missing, cov.archs_with_ok_run) == (20, 1, 43, 10) and not cov.full
    order = summary.ranking(t)
    final = np.nanmean(t.standalone.valid_ppl[:10, :, -1], axis=1)
    assert list(order[:10]) == list(np.argsort(final))
    assert all(r["id"] < 10 for r in summary.best(t, 20))


def test_wrong_version_truncated_and_foreign_files(tmp_path):
    schema.write(_table(), tmp_path / "t.h5")
    with h5py.File(tmp_path / "t.h5", "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(schema.TableError, match=r"t.h5: format_version 99, this library reads 1"):
        schema.read(tmp_path / "t.h5")
    schema.write(_table(), tmp_path / "ok.h5")
    data = (tmp_path / "ok.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(schema.TableError, match="cut.h5: unreadable or truncated"):
        schema.read(tmp_path / "cut.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(schema.TableError, match="not a nasbench-ptb table"):
        schema.read(tmp_path / "other.h5")


def test_presets_override_and_validate():
    p = presets.override(presets.get("cpu"), {"epochs": "0.5", "hidden": "16", "asgd": "true",
                                              "train_tokens": "none"})
    assert (p.epochs, p.hidden, p.asgd, p.train_tokens) == (0.5, 16, True, None)
    assert presets.get("paper").hidden == 850 and presets.get("paper").epochs == 1000
    with pytest.raises(ValueError, match="may not be None"):
        presets.override(p, {"hidden": "none"})
    with pytest.raises(ValueError, match="dropout_x must be in"):
        presets.override(p, {"dropout_x": "1.5"})
    with pytest.raises(ValueError, match="unknown preset field 'name'"):
        presets.override(p, {"name": "x"})


def _tamper(path, edit):
    """A malformed but self-consistent table (as a buggy writer would make it): the digest matches the edit."""
    with h5py.File(path, "a") as f:
        edit(f)
        f.attrs[schema.DIGEST] = schema.content_digest(f)


def _replace(name, value):
    def edit(f):
        del f[name]
        f[name] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_replace("standalone/status", np.full((32, 2), 7, dtype=np.int8)), "/standalone/status holds unknown code(s) [7]"),
    (_replace("standalone/valid_ppl", np.zeros((32, 2))), "/standalone/valid_ppl has shape (32, 2), expected (32, 2, 4)"),
    (_replace("standalone/test_ppl", np.zeros((31, 2))), "/standalone/test_ppl has shape (31, 2), expected (32, 2)"),
    (_replace("standalone/seeds", np.array([0.0, 1.0])), "/standalone/seeds has dtype float64, expected integers"),
    (_replace("standalone/valid_ppl", np.zeros((32, 2, 4), dtype=np.int64)), "expected floats"),
    (lambda f: f["standalone"].__delitem__("best_epoch"), "/standalone lacks the dataset(s) best_epoch"),
    (_replace("ws/valid_ppl", np.zeros((3, 3, 31))), "/ws/valid_ppl has shape (3, 3, 31), expected (3, 3, 32)"),
    (_replace("ws/status", np.array([0, 0, 9], dtype=np.int8)), "/ws/status holds unknown code(s) [9]"),
])
def test_a_malformed_table_is_refused_at_open_with_one_line_naming_the_problem(tmp_path, capsys, edit, message):
    from helpers import synthetic_table
    from nasbench_ptb.cli import main
    path = tmp_path / "t.h5"
    synthetic_table(path, C=4)
    _tamper(path, edit)
    with pytest.raises(schema.TableError) as exc:
        schema.read(path)
    assert str(exc.value).startswith(str(path)) and message in str(exc.value)
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_subspace_group_needs_distinct_member_ids(tmp_path):
    t = _table()
    sub = schema.WeightSharing.empty(32, [0], np.array([1.0]), [10], [3, 3])
    schema.write(schema.Table(t.space, t.preset, t.config, t.standalone, None, t.attrs, sub), tmp_path / "t.h5")
    with pytest.raises(schema.TableError, match="archs must be distinct ids in 0..31"):
        schema.read(tmp_path / "t.h5")
    _tamper(tmp_path / "t.h5", lambda f: f["ws_subspace"].__delitem__("archs"))
    with pytest.raises(schema.TableError, match="/ws_subspace lacks the dataset"):
        schema.read(tmp_path / "t.h5")


def test_every_byte_flip_is_refused_or_changes_nothing(tmp_path):
    """A table proves its own integrity: no single-byte change may silently alter a value."""
    from helpers import synthetic_table
    path = tmp_path / "t.h5"
    synthetic_table(path, C=4)
    good = schema.read(path)
    raw = path.read_bytes()
    rng = np.random.RandomState(0)
    refused = 0
    for pos in rng.choice(len(raw), 300, replace=False):
        bad = bytearray(raw)
        bad[pos] ^= 1 << rng.randint(8)
        (tmp_path / "flip.h5").write_bytes(bytes(bad))
        try:
            t = schema.read(tmp_path / "flip.h5")
        except schema.TableError as exc:
            assert str(exc).startswith(str(tmp_path / "flip.h5"))
            refused += 1
            continue
        for name in ("standalone", "ws"):
            for key, value in vars(getattr(good, name)).items():
                np.testing.assert_array_equal(getattr(getattr(t, name), key), value, err_msg=f"byte {pos}")
        assert (t.config, t.attrs, t.preset) == (good.config, good.attrs, good.preset)
    assert refused > 50  # about a third of the bytes matter here; the others are padding and free space


def test_a_changed_value_breaks_the_digest(tmp_path):
    t = _table()
    schema.write(t, tmp_path / "t.h5")
    with h5py.File(tmp_path / "t.h5", "a") as f:
        f["standalone/test_ppl"][0, 0] += 0.004  # 275.840 -> 275.844: the kind of change users cannot see
    with pytest.raises(schema.TableError, match="content digest mismatch"):
        schema.read(tmp_path / "t.h5")


def test_the_trainers_results_are_the_schemas_per_run_datasets():
    """Adding a metric to the table means adding it to the schema and computing it: the trainers' result records
    and the assembly follow the schema's list, so a metric in one and not the other fails here."""
    from dataclasses import fields

    from nasbench_ptb.builder.standalone import RunCurves
    from nasbench_ptb.builder.ws import SupernetCurves
    assert {f.name for f in fields(RunCurves)} == set(schema.per_run("standalone")) | {"epochs"}
    assert {f.name for f in fields(SupernetCurves)} == set(schema.per_run("ws")) | {"epochs", "valid_tokens"}
    assert set(schema.per_run("ws")) == set(schema.per_run("ws_subspace"))


def test_a_search_results_file_is_named_as_such_when_read_as_a_table():
    """Issue 25.9: `info` on a valid search-results file said "unreadable or truncated table file"."""
    from conftest import ROOT

    with pytest.raises(schema.TableError, match="a search-results file .real search phases., not a table; judge it "
                                                "against a table with `nasbench_ptb evaluate --real`"):
        schema.read(ROOT / "artifacts" / "search-2node-cpu.h5")
