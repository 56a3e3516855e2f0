"""Where the tables are: the candidate table files (``$NASBENCH_PTB_TABLES``, the checkout's ``artifacts/``, the
installed copy) and the default table of each space, found without loading any table (``api`` loads them)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .files import read_manifest
from .schema import TableError


def _folder_tables(folder: Path) -> list[Path]:
    names = list(read_manifest(folder)) or sorted(p.name for p in folder.glob("*.h5"))
    return [folder / n for n in names]


def table_paths() -> list[Path]:
    """Candidate tables in order: ``$NASBENCH_PTB_TABLES`` (files or folders, ``os.pathsep``-separated), else
    the checkout's ``artifacts/`` (editable install), else the installed copy (wheel data files).

    Raises:
        TableError: a NASBENCH_PTB_TABLES entry does not exist, or no table is found.
    """
    env = os.environ.get("NASBENCH_PTB_TABLES")
    if env:
        out = []
        for entry in (Path(p) for p in env.split(os.pathsep) if p):
            if entry.is_dir():
                out += _folder_tables(entry)
            elif entry.is_file():
                out.append(entry)
            else:
                raise TableError(f"{entry}: no such table file or folder (from NASBENCH_PTB_TABLES)")
        return out
    here = Path(__file__).resolve().parent
    for folder in (here.parent / "artifacts", Path(sys.prefix) / "share" / "nasbench_ptb" / "artifacts"):
        if folder.is_dir() and _folder_tables(folder):
            return _folder_tables(folder)
    return []


def default_tables() -> dict[str, Path]:
    """The default table per space: the first candidate of each space (MANIFEST order).

    Raises:
        TableError: a listed table is unreadable, or no table is found.
    """
    import h5py

    found: dict[str, Path] = {}
    for path in table_paths():
        try:
            with h5py.File(path, "r") as f:
                found.setdefault(str(f.attrs["space"]), path)
        except (OSError, KeyError, RuntimeError, ValueError, TypeError):  # what damage makes h5py raise
            raise TableError(f"{path}: listed as a table but not a readable nasbench-ptb table") from None
    if not found:
        raise TableError("no tables found (set NASBENCH_PTB_TABLES to a table file or folder)")
    return found
