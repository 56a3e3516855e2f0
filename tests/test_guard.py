"""Builds never destroy data (builder.guard): what an existing --out may be, one build per output at a time,
I/O errors as one line with finished units kept, the data checked before anything is created."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nasbench_ptb.builder import guard
from nasbench_ptb import schema
from nasbench_ptb.cli import main
from nasbench_ptb.schema import Status

from test_build import FAST


def build(tmp_path, ptb_path, *extra, out="t.h5"):
    return main(["build", "--space", "2node", "--data", str(ptb_path), "--out", str(tmp_path / out), *FAST, *extra])


def test_an_existing_file_that_is_not_a_table_is_refused_and_kept(tmp_path, ptb_path, capsys):
    notes = tmp_path / "t.h5"
    notes.write_text("my notes")
    assert build(tmp_path, ptb_path, "--archs", "1") == 1
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "not a readable nasbench-ptb table" in err and "--force" in err
    assert notes.read_text() == "my notes" and not (tmp_path / "t.h5.parts").exists()
    assert build(tmp_path, ptb_path, "--archs", "1", "--force") == 0
    assert schema.read(notes).standalone.status[1, 0] == Status.OK


def test_a_table_of_another_configuration_or_with_results_not_in_parts_is_refused(tmp_path, ptb_path, capsys):
    assert build(tmp_path, ptb_path, "--archs", "0-3") == 0
    shutil.copy(tmp_path / "t.h5", tmp_path / "shipped.h5")  # a table without its parts, as shipped tables are
    before = (tmp_path / "shipped.h5").read_bytes()
    capsys.readouterr()
    assert build(tmp_path, ptb_path, "--archs", "0-3", "--set", "lr=5", out="shipped.h5") == 1
    assert "another configuration" in capsys.readouterr().err
    assert build(tmp_path, ptb_path, "--archs", "1", out="shipped.h5") == 1  # would keep arch 1 and lose 0, 2, 3
    assert "holds results that shipped.h5.parts/ does not (3 standalone runs)" in capsys.readouterr().err
    assert (tmp_path / "shipped.h5").read_bytes() == before
    # the resume case: the table's results are in its parts, or are trained again by this request
    assert build(tmp_path, ptb_path, "--archs", "5") == 0
    assert set(np.flatnonzero(schema.read(tmp_path / "t.h5").standalone.status[:, 0] == Status.OK)) == {0, 1, 2, 3, 5}
    assert build(tmp_path, ptb_path, "--archs", "0-3", out="shipped.h5") == 0


def test_special_files_are_never_replaced(tmp_path, ptb_path, capsys):
    fifo = tmp_path / "t.h5"
    os.mkfifo(fifo)
    assert build(tmp_path, ptb_path, "--archs", "1", "--force") == 1
    assert "is not a regular file" in capsys.readouterr().err
    assert fifo.is_fifo() and not (tmp_path / "t.h5.parts").exists()


def test_a_second_build_on_the_same_output_fails_at_once_naming_the_first(tmp_path, ptb_path, capsys):
    folder = tmp_path / "t.h5.parts"
    folder.mkdir()
    with guard.exclusive(folder, tmp_path / "t.h5"):
        assert build(tmp_path, ptb_path, "--archs", "1") == 1
    assert f"another build is writing {tmp_path / 't.h5'} (pid {os.getpid()}, since" in capsys.readouterr().err
    assert not list(folder.glob("unit-*.h5"))
    assert build(tmp_path, ptb_path, "--archs", "1") == 0  # released
    assert not (folder / ".lock").exists()  # a finished build leaves only its units


def test_unit_files_are_named_by_configuration(tmp_path, ptb_path):
    assert build(tmp_path, ptb_path, "--archs", "1", out="a.h5") == 0
    assert build(tmp_path, ptb_path, "--archs", "1", "--set", "lr=5", out="b.h5") == 0
    a = [p.name for p in (tmp_path / "a.h5.parts").glob("unit-*.h5")]
    b = [p.name for p in (tmp_path / "b.h5.parts").glob("unit-*.h5")]
    assert len(a) == len(b) == 1 and a != b


def _limited(limit: int) -> str:
    """Python that runs the CLI with writes past ``limit`` bytes failing (EFBIG), as a full disk fails them."""
    return ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "from nasbench_ptb.cli import main; sys.exit(main(sys.argv[1:]))")


def test_a_full_disk_at_a_units_state_is_one_line_and_a_rerun_continues(tmp_path, ptb_path):
    # 16 KiB: the unit's state (its weights, ~2 MB at hidden 8) is the first file that does not fit
    args = ["build", "--space", "2node", "--data", str(ptb_path), "--out", str(tmp_path / "t.h5"), *FAST,
            "--archs", "0-3", "--set", "slots_per_unit=2"]
    proc = subprocess.run([sys.executable, "-c", _limited(16384), *args], capture_output=True, text=True,
                          timeout=600, cwd=os.path.dirname(__file__) + "/..")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "cannot save the state of the running unit" in line and "File too large" in line
    assert not [p for p in tmp_path.rglob(".*") if p.name.endswith(".tmp")] and not (tmp_path / "t.h5").exists()
    assert main(args) == 0  # space again: the same command trains everything
    assert (schema.read(tmp_path / "t.h5").standalone.status[:4, 0] == Status.OK).all()


def test_a_full_disk_at_the_table_is_one_line_with_finished_units_kept(tmp_path, ptb_path, monkeypatch, capsys):
    from nasbench_ptb.builder import build as build_module

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    args = ["build", "--space", "2node", "--data", str(ptb_path), "--out", str(tmp_path / "t.h5"), *FAST,
            "--archs", "0-3", "--set", "slots_per_unit=2"]
    monkeypatch.setattr(build_module.schema, "write", full)
    assert main(args) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "cannot write the table" in line and "No space left on device" in line and "finished units are kept" in line
    assert len(list((tmp_path / "t.h5.parts").glob("unit-*.h5"))) == 2  # both units, intact
    assert not list((tmp_path / "t.h5.parts").glob("state-*"))  # finished units leave no state behind
    monkeypatch.undo()
    assert main(args) == 0  # space again: the same command finishes from the kept units
    assert (schema.read(tmp_path / "t.h5").standalone.status[:4, 0] == Status.OK).all()


def test_bad_data_is_refused_before_anything_is_created(tmp_path, ptb_path, capsys):
    bad = tmp_path / "ptb"
    shutil.copytree(ptb_path, bad)
    (bad / "ptb.valid.txt").write_text("corrupted")
    assert main(["build", "--space", "2node", "--data", str(bad), "--out", str(tmp_path / "t.h5"), *FAST]) == 1
    assert "sha256 mismatch" in capsys.readouterr().err
    assert not (tmp_path / "t.h5.parts").exists() and not (tmp_path / "t.h5").exists()


def test_a_unit_that_cannot_be_written_stops_the_build_with_one_line(tmp_path, ptb_path, monkeypatch, capsys):
    from nasbench_ptb.builder import parts

    def too_large(*_args, **_kwargs):
        raise OSError(27, "File too large")

    monkeypatch.setattr(parts, "write_h5", too_large)  # the finished unit's file only (states write elsewhere)
    args = ["build", "--space", "2node", "--data", str(ptb_path), "--out", str(tmp_path / "t.h5"), *FAST,
            "--archs", "0-1"]
    assert main(args) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "cannot write the finished unit" in line and "File too large" in line
    assert not list((tmp_path / "t.h5.parts").glob("unit-*.h5")) and not list(tmp_path.rglob("*.tmp"))


def test_a_build_that_stops_early_never_replaces_a_fuller_table(tmp_path, ptb_path, capsys):
    """Issue 25.1: a shipped table copied without its parts, rebuilt with --time-limit 0, stayed a full table only
    by luck of the check at the start; now the table assembled at the end is refused when it holds less."""
    assert build(tmp_path, ptb_path, "--archs", "0-3", "--set", "slots_per_unit=2") == 0
    shutil.copy(tmp_path / "t.h5", tmp_path / "copy.h5")  # no copy.h5.parts/
    before = (tmp_path / "copy.h5").read_bytes()
    capsys.readouterr()
    assert build(tmp_path, ptb_path, "--archs", "0-3", "--set", "slots_per_unit=2", "--time-limit", "0",
                 out="copy.h5") == 1
    err = capsys.readouterr().err
    assert "not writing" in err and "lacks results the one there holds (4 standalone runs" in err
    assert (tmp_path / "copy.h5").read_bytes() == before
    assert build(tmp_path, ptb_path, "--archs", "0-3", "--set", "slots_per_unit=2", "--time-limit", "0",
                 "--force", out="copy.h5") == 0  # --force replaces it, as documented
    assert (schema.read(tmp_path / "copy.h5").standalone.status == Status.MISSING).all()


def test_an_unreadable_part_is_kept_aside_and_the_table_does_not_shrink(tmp_path, ptb_path, capsys):
    """Issue 25.2: an unreadable part was deleted and the table rewritten with fewer runs (exit 0)."""
    assert build(tmp_path, ptb_path, "--archs", "0-3", "--set", "slots_per_unit=2") == 0
    full = schema.read(tmp_path / "t.h5")
    before = (tmp_path / "t.h5").read_bytes()
    part = sorted((tmp_path / "t.h5.parts").glob("unit-*.h5"))[0]
    part.write_bytes(b"\0" * 100)  # a damaged file
    capsys.readouterr()
    assert build(tmp_path, ptb_path, "--archs", "0-3", "--set", "slots_per_unit=2", "--time-limit", "0") == 1
    err = capsys.readouterr().err
    assert f"unreadable part {part}" in err and f"moved to {part.name}.bad" in err and "not writing" in err
    assert (part.parent / f"{part.name}.bad").read_bytes() == b"\0" * 100  # kept, not deleted
    assert (tmp_path / "t.h5").read_bytes() == before
    assert build(tmp_path, ptb_path, "--archs", "0-3", "--set", "slots_per_unit=2") == 0  # retrains that unit
    again = schema.read(tmp_path / "t.h5").standalone
    np.testing.assert_array_equal(again.valid_ppl, full.standalone.valid_ppl)
    np.testing.assert_array_equal(again.status, full.standalone.status)


@pytest.mark.parametrize("where", ["values", "fingerprint"])
def test_a_flipped_byte_in_a_part_is_caught_before_assembly(tmp_path, ptb_path, capsys, where):
    """Issue 25.4: one flipped byte in a part moved a cell from rank 2 to 23 in a table with a fresh digest. A flip
    in the fingerprint attribute was refused as "another configuration" and left in place: the digest covers it,
    so it is damage, moved aside like any other."""
    import h5py

    assert build(tmp_path, ptb_path, "--archs", "0-3", "--set", "slots_per_unit=2") == 0
    before = (tmp_path / "t.h5").read_bytes()
    part = sorted((tmp_path / "t.h5.parts").glob("unit-*.h5"))[0]
    raw = bytearray(part.read_bytes())
    with h5py.File(part, "r") as f:
        assert len(f.attrs[schema.DIGEST]) == 64
        if where == "values":
            offset = f["valid_ppl"].id.get_offset()  # contiguous float64 data
        else:
            offset = raw.index(b'"space": "2node"') + 11
    raw[offset + 5] ^= 0x10
    part.write_bytes(bytes(raw))
    capsys.readouterr()
    assert build(tmp_path, ptb_path, "--archs", "0-3", "--set", "slots_per_unit=2", "--time-limit", "0") == 1
    err = capsys.readouterr().err
    assert "content digest mismatch" in err and f"moved to {part.name}.bad" in err and "not writing" in err
    assert "another configuration" not in err
    assert (tmp_path / "t.h5").read_bytes() == before


def test_a_table_without_its_digest_is_refused(tmp_path):
    """Issue 25.5: with content_sha256 deleted, an edited value (274.0 → 150.0) loaded without a check."""
    import h5py

    from helpers import synthetic_table

    synthetic_table(tmp_path / "t.h5")
    with h5py.File(tmp_path / "t.h5", "a") as f:
        f["standalone/test_ppl"][0, 0] = 150.0
        del f.attrs[schema.DIGEST]
    with pytest.raises(schema.TableError, match="no content_sha256 attribute, so its contents cannot be verified"):
        schema.read(tmp_path / "t.h5")


def test_a_lock_that_cannot_be_written_is_one_line(tmp_path, ptb_path, monkeypatch, capsys):
    """Issue 25.7: `build` on a full disk was a traceback from the lock file write."""
    def full(*_a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(guard.os, "pwrite", full)
    args = ["build", "--space", "2node", "--data", str(ptb_path), "--out", str(tmp_path / "t.h5"), *FAST,
            "--archs", "0"]
    assert main(args) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "cannot take the lock" in line and "No space left on device" in line
    assert not (tmp_path / "t.h5.parts" / ".lock").exists()  # the half-made lock file is removed


def test_temporaries_of_killed_writes_are_cleaned_by_the_next_build(tmp_path, ptb_path):
    """Issue 25.8: the .tmp files of killed writes stayed forever."""
    (tmp_path / "t.h5.parts").mkdir()
    junk = [tmp_path / "t.h5.parts" / ".unit-abc.h5.x1y2.tmp", tmp_path / ".t.h5.q9.tmp"]
    for p in junk:
        p.write_bytes(b"half a file")
    other = tmp_path / ".other.h5.k3.tmp"  # another output's: not ours to remove
    other.write_bytes(b"x")
    assert build(tmp_path, ptb_path, "--archs", "0") == 0
    assert not any(p.exists() for p in junk) and other.exists()
    assert not (tmp_path / "t.h5.parts" / ".lock").exists()
