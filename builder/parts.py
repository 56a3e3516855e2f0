"""Persisted build units: one small HDF5 file per finished unit in ``<out>.parts/``.

A part is written to a temporary name and renamed, so it is either whole or absent. Each carries the
fingerprint of the configuration it was trained with; parts of another configuration are refused, never mixed.
Standalone parts are ``unit-<key>.h5``; weight-sharing parts are ``ws-<key>.h5``, and ``wssub-<key>.h5`` for
super-nets over a subspace (which also store its ``arch_ids``).

Layout of a part: attributes ``fingerprint`` (JSON: space, every preset value that shapes the runs, format and
protocol versions), ``unit_seconds``, ``device``, ``content_sha256`` (the table's digest over the part's datasets
and attributes, checked before assembly: a damaged part is moved aside, never assembled) and, for runs of a ``--sample``, ``sample`` (JSON); datasets
``seeds [A]`` and ``epochs [C]``, then every per-run dataset of the table's group
(:func:`nasbench_ptb.schema.per_run`) with the unit's ``A`` runs as leading axis instead of the table's
architectures (standalone; plus ``arch_ids [A]``) or super-nets (weight sharing; plus ``valid_tokens [C]``).
The table's schema is thus the one description of a run's results; the assembly copies row by row.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np

from nasbench_ptb import schema
from nasbench_ptb.errors import NasbenchError
from nasbench_ptb.files import write_h5
from nasbench_ptb.space import SearchSpace

from . import trainer
from .presets import Preset

KINDS = {"standalone": "unit-", "ws": "ws-", "ws_subspace": "wssub-"}  # a part kind per table group
_WS_FIELDS = ("ws_", "hidden_clip")
# Fields added after tables were first built: left out of the fingerprint at their default, so those builds resume.
_LATER_FIELDS = {"amp": "off", "first_epoch_checkpoints": 0, "rollbacks": 0, "ws_uniform_divergence": False,
                 "ws_rollbacks": None}
# Values that act only on a run that diverges: a unit where no run diverged and none was rolled back computes the
# same under any of them, so its part serves every one (see :func:`same_runs`).
_ON_DIVERGENCE = ("rollbacks", "ws_rollbacks")


class _Damaged(Exception):
    """A part whose contents do not match its digest."""


class BuildError(NasbenchError, RuntimeError):
    """The build cannot start or continue (bad output path, conflicting parts, bad device)."""


def fingerprint(sp: SearchSpace, p: Preset, kind: str) -> str:
    """What must match for results to share a table: the space and every value that shapes that kind of run
    (weight-sharing values do not touch standalone runs; weight sharing depends on every value)."""
    values = {k: v for k, v in p.to_dict().items() if _LATER_FIELDS.get(k, object()) != v}
    if kind == "standalone":
        values = {k: v for k, v in values.items() if not k.startswith(_WS_FIELDS)}
    fp = {"space": sp.name, "preset": values, "format_version": schema.FORMAT_VERSION}
    if trainer.PROTOCOL_VERSION != 1:  # version 1 predates the field: its units carry none
        fp["protocol"] = trainer.PROTOCOL_VERSION
    return json.dumps(fp, sort_keys=True)


def _differing(theirs: str, fp: str) -> set[str]:
    """The preset values in which two fingerprints differ (``"*"`` for anything outside the preset, or unreadable)."""
    try:
        a, b = json.loads(theirs), json.loads(fp)
    except ValueError:
        return {"*"}
    pa, pb = a.pop("preset", {}), b.pop("preset", {})
    return {k for k in set(pa) | set(pb) if pa.get(k) != pb.get(k)} | ({"*"} if a != b else set())


def same_runs(theirs: str, fp: str, arrays: dict) -> bool:
    """Whether a part of fingerprint ``theirs`` holds what ``fp`` would train: the same configuration, or one that
    differs only in values acting on diverging runs (:data:`_ON_DIVERGENCE`) while none of its runs diverged or was
    rolled back (every run computed the same under either)."""
    if theirs == fp:
        return True
    if not _differing(theirs, fp) <= set(_ON_DIVERGENCE):
        return False
    quiet = not (np.asarray(arrays.get("status", [])) == schema.Status.DIVERGED).any()
    return quiet and not (np.nan_to_num(np.asarray(arrays.get("rollback", [0.0]), dtype=float)) > 0).any()


def _protocol(fp: str) -> int:
    try:
        return int(json.loads(fp).get("protocol", 1))
    except (ValueError, AttributeError):
        return 1


def _divergence_hint(theirs: str, fp: str) -> str:
    """Words for a part refused only because of a value acting on diverging runs."""
    differ = _differing(theirs, fp)
    if not differ or not differ <= set(_ON_DIVERGENCE):
        return ""
    return (": it differs only in " + ", ".join(sorted(differ)) + ", but a run in it diverged or was rolled back, so "
            "it would train differently now; move that part aside to retrain it")


def write(path: Path, arrays: dict, attrs: dict) -> None:
    """Persist one finished unit, whole or not at all; a full disk or another I/O error is a :class:`BuildError`
    naming the file (the units written before stay, the temporary file is removed)."""
    def fill(f: h5py.File) -> None:
        f.attrs.update(attrs)
        for k, v in arrays.items():
            f[k] = np.asarray(v)
        f.attrs[schema.DIGEST] = schema.content_digest(f, {k: f[k][()] for k in f})

    try:
        write_h5(path, fill)
    except OSError as exc:
        raise BuildError(f"cannot write the finished unit {path}: {exc.strerror or exc}; the units written before "
                         "are kept, rerun the same command when the problem is fixed") from None


def read_all(parts: Path, kind: str, fp: str) -> list[dict]:
    """Every readable part of ``kind``; an unreadable one is moved aside to ``<name>.bad`` (its unit retrains, and
    a table holding its runs is not replaced by one without them: :func:`builder.guard.check_not_shrinking`), a
    foreign one refused."""
    found = []
    for path in sorted(parts.glob(f"{KINDS[kind]}*.h5")):
        try:
            with h5py.File(path, "r") as f:
                arrays = {k: f[k][()] for k in f}
                stored = f.attrs.get(schema.DIGEST)  # checked first: the digest covers the fingerprint too
                if stored is not None and str(stored) != schema.content_digest(f, arrays):
                    raise _Damaged("content digest mismatch: a changed byte or a partial write")
                if stored is None:
                    print(f"warning: part {path} carries no {schema.DIGEST} (written before parts had one), so it "
                          "cannot be verified", file=sys.stderr)
                if f.attrs["fingerprint"] != fp and _protocol(f.attrs["fingerprint"]) != _protocol(fp):
                    raise BuildError(
                        f"{parts} holds {kind} results of training protocol version {_protocol(f.attrs['fingerprint'])}"
                        f", this code trains version {_protocol(fp)} ({path.name}); they must not be mixed: use "
                        "another --out or remove that directory"
                    )
                if not same_runs(f.attrs["fingerprint"], fp, arrays):
                    raise BuildError(
                        f"{parts} holds {kind} results of another configuration ({path.name}"
                        f"{_divergence_hint(f.attrs['fingerprint'], fp)}); use another --out or remove that directory"
                    )
                found.append({"path": path, **{k: v for k, v in f.attrs.items() if k != schema.DIGEST}, **arrays})
        except BuildError:
            raise
        except (OSError, KeyError, RuntimeError, ValueError, TypeError, _Damaged) as exc:  # what damage makes h5py raise
            aside = path.with_name(path.name + ".bad")
            path.replace(aside)  # kept, never deleted: it may be a disk error a user can recover from
            print(f"warning: unreadable part {path} ({exc}) moved to {aside.name}; its unit will be retrained",
                  file=sys.stderr)
    return found
