"""``recover-parts``: a table whose parts folder was lost gives its parts back, so a build extends it instead of
refusing it or retraining everything."""
import shutil

import h5py
import numpy as np

from nasbench_ptb import schema
from nasbench_ptb.cli import main
from nasbench_ptb.schema import Status

from helpers import same_table
from test_build import FAST, WS


def build(tmp_path, ptb_path, *extra, out="t.h5"):
    return main(["build", "--space", "2node", "--data", str(ptb_path), "--out", str(tmp_path / out), *FAST, *extra])


def _parts(folder):
    out = {}
    for path in sorted(folder.glob("*.h5")):
        with h5py.File(path) as f:
            out[path.name] = ({k: f[k][()] for k in f}, {k: f.attrs[k] for k in f.attrs if k != "unit_seconds"})
    return out


def test_lost_parts_come_back_identical_and_a_build_extends_the_table_without_retraining(tmp_path, ptb_path, capsys):
    # 2 standalone units of 4 runs (archs 4+ missing) and 2 super-nets in 1 unit
    assert build(tmp_path, ptb_path, "--archs", "0-3", "--seeds", "2", "--set", "slots_per_unit=4") == 0
    assert build(tmp_path, ptb_path, "--archs", "0-3", "--seeds", "2", "--set", "slots_per_unit=4",
                 "--mode", "ws", "--ws-seeds", "2", *WS) == 0
    folder = tmp_path / "t.h5.parts"
    original = _parts(folder)
    assert sorted(n[:3] for n in original) == ["uni", "uni", "ws-"]
    shutil.rmtree(folder)
    capsys.readouterr()
    # without its parts the table cannot be extended: the build refuses rather than lose the super-nets
    extend = ["--archs", "0-5", "--seeds", "2", "--set", "slots_per_unit=4", *WS]
    assert build(tmp_path, ptb_path, *extend) == 1
    assert "does not (2 ws super-nets)" in capsys.readouterr().err

    assert main(["recover-parts", str(tmp_path / "t.h5")]) == 0
    assert "wrote 3 part(s) holding 8 standalone runs, 2 super-nets" in capsys.readouterr().out
    recovered = _parts(folder)
    assert recovered.keys() == original.keys()  # the same units under the same names (the plan's order)
    for name, (arrays, attrs) in original.items():
        got, got_attrs = recovered[name]
        assert got.keys() == arrays.keys() and got_attrs["fingerprint"] == attrs["fingerprint"], name
        for k, v in arrays.items():
            assert got[k].dtype == v.dtype and np.array_equal(got[k], v, equal_nan=v.dtype.kind == "f"), (name, k)
        assert got_attrs["device"] == attrs["device"] and got_attrs["software"] == attrs["software"]
    before = tmp_path / "before.h5"
    shutil.copy(tmp_path / "t.h5", before)

    # a second recovery writes nothing; the build then trains only the 4 new runs
    assert main(["recover-parts", str(tmp_path / "t.h5")]) == 0
    assert "wrote 0 part(s) holding nothing; already there: 8 standalone runs, 2 super-nets" in capsys.readouterr().out
    names = set(p.name for p in folder.glob("*.h5"))
    assert build(tmp_path, ptb_path, *extend) == 0
    new = set(p.name for p in folder.glob("*.h5")) - names
    assert len(new) == 1  # one unit: archs 4, 5 at seeds 0 and 1
    t = schema.read(tmp_path / "t.h5")
    assert (t.standalone.status[:6] == Status.OK).all() and (t.ws.status == Status.OK).all()
    old = schema.read(before)
    for name in schema.per_run("standalone"):
        assert np.array_equal(getattr(t.standalone, name)[:4], getattr(old.standalone, name)[:4], equal_nan=True)


def test_recovery_of_a_subspace_super_net_and_refusals(tmp_path, ptb_path, capsys):
    assert build(tmp_path, ptb_path, "--mode", "ws", "--ws-seeds", "1", "--ws-archs", "0-2", *WS) == 0
    folder = tmp_path / "t.h5.parts"
    original = _parts(folder)
    shutil.copy(tmp_path / "t.h5", tmp_path / "a.h5")
    shutil.rmtree(folder)
    assert main(["recover-parts", str(tmp_path / "t.h5")]) == 0
    assert _parts(folder).keys() == original.keys() and next(iter(original)).startswith("wssub-")
    assert build(tmp_path, ptb_path, "--mode", "ws", "--ws-seeds", "1", "--ws-archs", "0-2", *WS) == 0
    same_table(tmp_path / "a.h5", tmp_path / "t.h5")  # trained nothing again, assembled the same

    capsys.readouterr()
    (tmp_path / "notes.h5").write_text("not a table")
    assert main(["recover-parts", str(tmp_path / "notes.h5")]) == 1
    assert "cannot recover parts from" in capsys.readouterr().err
    assert not (tmp_path / "notes.h5.parts").exists()
    # a folder holding parts of another configuration is refused, and kept as it was
    other = tmp_path / "other.h5"
    assert build(tmp_path, ptb_path, "--mode", "ws", "--ws-seeds", "1", "--ws-archs", "0-2", *WS, "--set", "lr=5",
                 out="other.h5") == 0
    shutil.rmtree(tmp_path / "other.h5.parts")
    shutil.copytree(folder, tmp_path / "other.h5.parts")  # lr 20's parts beside an lr 5 table
    before = sorted(p.name for p in (tmp_path / "other.h5.parts").iterdir())
    assert main(["recover-parts", str(other)]) == 1
    assert "results of another configuration" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "other.h5.parts").iterdir()) == before
