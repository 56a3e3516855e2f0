"""Builds never destroy data: what an existing ``--out`` may be, and one build at a time per output.

- ``--out`` is absent or a regular file: never a directory, a device, a pipe or a socket (even with ``--force``).
- An existing ``--out`` is replaced only when it is a table of the same space and configuration whose every
  result is also in ``<out>.parts/`` or trained again by this build (it was assembled from them, so assembling
  again loses nothing: the resume case), or with ``--force``.
- A build holds an exclusive lock on ``<out>.parts/.lock`` from before it reads the parts until the table is
  written; a second build on the same output fails at once, naming the first.
"""
from __future__ import annotations

import fcntl
import json
import os
import stat
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from nasbench_ptb import schema
from nasbench_ptb.schema import Status
from nasbench_ptb.space import SearchSpace

from . import parts
from .parts import BuildError
from .presets import Preset, from_config

_FORCE = "use another --out, or --force to replace it"


def check_path(out: Path) -> None:
    """Refuse an output that is not a regular file or an absent one (nothing is created here)."""
    if out.is_dir():
        raise BuildError(f"output {out} is a directory; give a file path such as {out / 'table.h5'}")
    if out.exists() and not stat.S_ISREG(out.stat().st_mode):
        raise BuildError(f"output {out} is not a regular file (a device, pipe or socket); give a table file path")


def held_runs(table: schema.Table) -> dict[str, set]:
    """What a table holds, by part kind: standalone (arch, seed) runs and super-net seeds not ``missing``."""
    held: dict[str, set] = {kind: set() for kind in parts.KINDS}
    sa = table.standalone
    if sa is not None:
        for a, k in zip(*(sa.status != Status.MISSING).nonzero()):
            held["standalone"].add((int(a), int(sa.seeds[k])))
    for kind in ("ws", "ws_subspace"):
        group = getattr(table, kind)
        if group is not None:
            held[kind] |= {int(s) for s, st in zip(group.seeds, group.status) if st != Status.MISSING}
    return held


def in_parts(found: dict[str, list[dict]]) -> dict[str, set]:
    """The same sets for the parts of a folder."""
    held: dict[str, set] = {kind: set() for kind in parts.KINDS}
    for part in found["standalone"]:
        held["standalone"] |= {(int(a), int(s)) for a, s in zip(part["arch_ids"], part["seeds"])}
    for kind in ("ws", "ws_subspace"):
        held[kind] |= {int(s) for part in found[kind] for s in part["seeds"]}
    return held


def _count(lost: dict[str, set]) -> str:
    """Results by part kind in words: "4 standalone runs, 1 ws super-nets"."""
    return ", ".join(f"{len(v)} {kind.replace('_', ' ')} {'runs' if kind == 'standalone' else 'super-nets'}"
                     for kind, v in lost.items() if v)


def check_existing(out: Path, sp: SearchSpace, p: Preset, found: dict[str, list[dict]] | None,
                   requested: dict[str, set]) -> None:
    """Refuse to replace an existing table that is not this build's own earlier result (see the module doc).

    ``found``: the parts already in ``<out>.parts/`` (None when there is no such folder); ``requested``: what this
    build trains if it is missing (results it will train again, e.g. after a part was corrupted, are not lost)."""
    if not out.exists():
        return
    try:
        table = schema.read(out)
    except schema.TableError as exc:
        raise BuildError(f"refusing to overwrite {out}: it is not a readable nasbench-ptb table ({exc}); "
                         f"{_FORCE}") from None
    theirs = from_config(table.config)
    sa = table.standalone
    if table.space.name != sp.name or theirs is None or not parts.same_runs(
            parts.fingerprint(table.space, theirs, "standalone"), parts.fingerprint(sp, p, "standalone"),
            {} if sa is None else {"status": sa.status, "rollback": sa.rollback}):
        raise BuildError(f"refusing to overwrite {out}: it is a {table.space.name}/{table.preset} table of another "
                         f"configuration than this {sp.name}/{p.name} build; {_FORCE}")
    have = in_parts(found) if found is not None else {kind: set() for kind in parts.KINDS}
    lost = {kind: runs - have[kind] - requested.get(kind, set()) for kind, runs in held_runs(table).items()}
    if any(lost.values()):
        raise BuildError(f"refusing to overwrite {out}: it holds results that {out.name}.parts/ does not "
                         f"({_count(lost)}); "
                         f"building would lose them; {_FORCE}")


def check_not_shrinking(out: Path, new: schema.Table) -> None:
    """Refuse to replace ``out`` by a table that lacks any result ``out`` holds (a build stopped early by
    ``--time-limit``, a part that could not be read): the existing table stays as it is.

    Raises:
        BuildError: naming how many results would be lost and how to go on.
    """
    if not out.exists():
        return
    try:
        old = schema.read(out)
    except schema.TableError:
        return  # check_existing refused it before the build, unless --force
    mine = held_runs(new)
    lost = {kind: runs - mine[kind] for kind, runs in held_runs(old).items()}
    if any(lost.values()):
        raise BuildError(f"not writing {out}: the table assembled now lacks results the one there holds ({_count(lost)}: "
                         f"not in {out.name}.parts/ and not trained yet); it is left as it was, the finished units "
                         "are kept; rerun the same command to train the rest, or --force to replace it anyway")


def clean_temporaries(folder: Path, out: Path) -> list[Path]:
    """Remove what killed writes of this output left (``atomic_path``'s ``.<name>.*.tmp`` beside ``out`` and in
    ``folder``); only called while holding the output's lock, so no live writer owns them. Returns them."""
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()]
    stale += [p for p in out.parent.glob(f".{out.name}.*.tmp") if p.is_file()]
    for p in stale:
        with suppress(FileNotFoundError):
            p.unlink()
    return stale


@contextmanager
def exclusive(folder: Path, out: Path, name: str = ".lock", error: type[BuildError] = BuildError) -> Iterator[None]:
    """Hold the output's build lock, or fail at once naming the build that holds it.

    The lock file exists only while a build holds it: it is removed before the lock is released, so a finished
    build leaves nothing in ``<out>.parts/`` but its units. A build that opened the file just before it was
    removed finds, once it holds the lock, that the path names another file (or none) and starts over.

    Raises:
        BuildError (or ``error``): another process holds the lock, or the lock file cannot be written.
    """
    path = folder / name
    try:
        fd = _lock(path, out)
    except BuildError as exc:
        raise error(str(exc)) from None
    except OSError as exc:  # a full disk, a read-only folder: one line, not a traceback
        raise error(f"cannot take the lock {path} for {out}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        with suppress(FileNotFoundError):  # someone removed it by hand: nothing to clean
            os.unlink(path)  # while still holding the lock
        os.close(fd)  # releases it


def _lock(path: Path, out: Path) -> int:
    """Open and lock ``path`` and write who holds it; the locked descriptor."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            os.close(fd)
            raise BuildError(f"another build is writing {out} (pid {holder.get('pid', '?')}, since "
                             f"{holder.get('since', '?')}); wait for it to finish or use another --out") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break  # the lock is on the file the path names
        except FileNotFoundError:
            pass
        os.close(fd)  # a lock on a file its holder has just removed: try again
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(),
                                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode(), 0)
    except OSError:
        with suppress(OSError):
            os.unlink(path)
        os.close(fd)
        raise
    return fd
