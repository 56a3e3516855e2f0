"""The HDF5 table: one module owns its layout and :data:`FORMAT_VERSION` (ARCHITECTURE.md §6).

Layout (dense arrays; NaN plus a status code where a run is missing or diverged, never imputed)::

    /            attrs: format_version, space, preset, config (JSON), ptb_sha256 (JSON), software (JSON),
                        device, timings (JSON), created
    /archs       id [N], genotype [N], hash [N], iso_hash [N], params [N]
    /standalone  seeds [S], epochs [C]; train_loss, valid_ppl, seconds [N, S, C];
                 test_ppl, best_epoch [N, S]; status [N, S]
    /ws          seeds [Sw], epochs [Cw], valid_tokens [Cw]; valid_ppl [Sw, Cw, N]; test_ppl [Sw, N];
                 train_loss, seconds [Sw, Cw]; samples [Sw, N]; status [Sw]
    /ws_subspace the /ws layout, plus archs [n]: super-nets that shared their weights only among the ``n``
                 architectures of a subspace (the paper's "amount of sharing", Fig. 6); NaN and 0 samples
                 outside it

Any part may be absent (a build with ``--mode ws`` or ``--mode standalone``; ``/ws_subspace`` only where a
build used ``--ws-archs``). ``/ws_subspace`` was added within format version 1: readers that predate it ignore it.
"""
from __future__ import annotations

import enum
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .errors import TableError
from .files import read_h5, write_h5
from .space import SearchSpace, space as get_space

FORMAT_VERSION = 1


class Status(enum.IntEnum):
    """Outcome of one run. Only ``OK`` runs carry final numbers."""

    OK = 0
    MISSING = 1  # not trained (partial coverage)
    DIVERGED = 2  # NaN/inf during training: checkpoints before it are kept, finals are NaN




@dataclass(frozen=True)
class Standalone:
    seeds: np.ndarray  # [S]
    epochs: np.ndarray  # [C]
    train_loss: np.ndarray  # [N, S, C]
    valid_ppl: np.ndarray  # [N, S, C]
    seconds: np.ndarray  # [N, S, C]
    test_ppl: np.ndarray  # [N, S]
    best_epoch: np.ndarray  # [N, S]
    status: np.ndarray  # [N, S] Status codes

    @classmethod
    def empty(cls, n_archs: int, seeds, epochs) -> "Standalone":
        S, C = len(seeds), len(epochs)
        nan3 = lambda: np.full((n_archs, S, C), np.nan)  # noqa: E731
        return cls(
            np.asarray(seeds, dtype=np.int64), np.asarray(epochs, dtype=np.float64), nan3(), nan3(), nan3(),
            np.full((n_archs, S), np.nan), np.full((n_archs, S), np.nan),
            np.full((n_archs, S), Status.MISSING, dtype=np.int8),
        )


@dataclass(frozen=True)
class WeightSharing:
    seeds: np.ndarray  # [Sw]
    epochs: np.ndarray  # [Cw]
    valid_tokens: np.ndarray  # [Cw] validation tokens used at each checkpoint (the last: the whole split)
    valid_ppl: np.ndarray  # [Sw, Cw, N] every architecture under each super-net's shared weights
    test_ppl: np.ndarray  # [Sw, N] at the final checkpoint
    train_loss: np.ndarray  # [Sw, Cw]
    seconds: np.ndarray  # [Sw, Cw]
    samples: np.ndarray  # [Sw, N] mini-batches each architecture was sampled for
    status: np.ndarray  # [Sw] Status codes
    archs: np.ndarray | None = None  # [n] the subspace that shared the weights; None: the whole space

    @classmethod
    def empty(cls, n_archs: int, seeds, epochs, valid_tokens, archs=None) -> "WeightSharing":
        S, C = len(seeds), len(epochs)
        return cls(
            np.asarray(seeds, dtype=np.int64), np.asarray(epochs, dtype=np.float64),
            np.asarray(valid_tokens, dtype=np.int64), np.full((S, C, n_archs), np.nan), np.full((S, n_archs), np.nan),
            np.full((S, C), np.nan), np.full((S, C), np.nan), np.zeros((S, n_archs), dtype=np.int64),
            np.full(S, Status.MISSING, dtype=np.int8), None if archs is None else np.asarray(archs, dtype=np.int64),
        )


PARTS = {"standalone": Standalone, "ws": WeightSharing, "ws_subspace": WeightSharing}


@dataclass(frozen=True)
class Table:
    """A whole table in memory; ``standalone`` or ``ws`` is None where the build did not train that part."""

    space: SearchSpace
    preset: str
    config: dict
    standalone: Standalone | None
    ws: WeightSharing | None = None
    attrs: dict = field(default_factory=dict)  # ptb_sha256, software, device, timings, created
    ws_subspace: WeightSharing | None = None  # super-nets over a subspace only (``archs``)

    @property
    def genotypes(self):
        return list(self.space)


def arch_columns(sp: SearchSpace, params: int) -> dict:
    genos = list(sp)
    return {
        "id": np.array([g.id for g in genos], dtype=np.int64),
        "genotype": np.array([g.canonical for g in genos], dtype=object),
        "hash": np.array([g.hash for g in genos], dtype="S16"),
        "iso_hash": np.array([g.iso_hash for g in genos], dtype="S16"),
        "params": np.full(len(genos), params, dtype=np.int64),
    }


def write(table: Table, path: str | os.PathLike) -> None:
    """Write atomically: a temporary file in the same directory, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_h5(path, lambda f: _fill(f, table))


HEADER = ("format_version", "space", "preset", "config")


def write_header(f: h5py.File, version: int, space_name: str, preset: str, config: dict, attrs: dict) -> None:
    """The attributes every file of this project starts with (tables, search results): the format version, the
    space, the preset, every training value (JSON) and free attributes (strings, or JSON)."""
    f.attrs["format_version"] = version
    f.attrs["space"] = space_name
    f.attrs["preset"] = preset
    f.attrs["config"] = json.dumps(config, sort_keys=True)
    for key, value in attrs.items():
        f.attrs[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def read_attrs(f: h5py.File, skip: tuple[str, ...] = ()) -> dict:
    """The free attributes :func:`write_header` wrote (JSON decoded where it is JSON)."""
    attrs = {}
    for key, value in f.attrs.items():
        if key in HEADER or key in skip or key == DIGEST:
            continue
        try:
            attrs[key] = json.loads(value)
        except (TypeError, ValueError):
            attrs[key] = value
    return attrs


def _fill(f: h5py.File, table: Table) -> None:
    write_header(f, FORMAT_VERSION, table.space.name, table.preset, table.config, table.attrs)
    archs = f.create_group("archs")
    for key, col in arch_columns(table.space, int(table.config.get("params", 0))).items():
        dtype = h5py.string_dtype() if col.dtype == object else col.dtype
        archs.create_dataset(key, data=col, dtype=dtype)
    for name in PARTS:
        part = getattr(table, name)
        if part is None:
            continue
        group = f.create_group(name)
        for key, value in vars(part).items():
            if value is not None:
                group.create_dataset(key, data=value, compression="gzip" if value.ndim == 3 else None)
    f.attrs[DIGEST] = content_digest(f)


DIGEST = "content_sha256"


def _datasets(f: h5py.File) -> dict[str, np.ndarray]:
    """Every dataset of the file by path, read once (the layout is two levels deep; anything else is foreign)."""
    arrays = {}
    for gname, group in f.items():
        if not isinstance(group, h5py.Group):
            raise ValueError(f"/{gname} is a dataset at the top level; a table holds groups there")
        for dname, ds in group.items():
            if not isinstance(ds, h5py.Dataset):
                raise ValueError(f"/{gname}/{dname} is a group; a table's groups hold datasets only")
            arrays[f"{gname}/{dname}"] = ds[()]
    return arrays


def content_digest(f: h5py.File, arrays: dict[str, np.ndarray] | None = None) -> str:
    """SHA-256 over every dataset (path, dtype, shape, values) and every attribute but this digest, in sorted
    order: a table proves its own integrity on every open, whether or not a MANIFEST lists it."""
    arrays = _datasets(f) if arrays is None else arrays
    digest = hashlib.sha256()
    for key in sorted(k for k in f.attrs if k != DIGEST):
        digest.update(f"attr {key}={f.attrs[key]}\n".encode())
    for name in sorted(arrays):
        data = arrays[name]
        digest.update(f"data {name} {data.dtype.str} {data.shape}\n".encode())
        if data.dtype.kind == "O":
            digest.update(b"\0".join(v if isinstance(v, bytes) else str(v).encode() for v in data.ravel()))
        else:
            digest.update(np.ascontiguousarray(data).tobytes())
    return digest.hexdigest()


# Every dataset of a part: its dimensions (N architectures; S seeds and C checkpoints from the part's own seeds
# and epochs; n subspace members) and whether its values are integers. ``archs`` is required in /ws_subspace only.
_LAYOUT = {
    "standalone": {"seeds": ("S", True), "epochs": ("C", False), "train_loss": ("NSC", False),
                   "valid_ppl": ("NSC", False), "seconds": ("NSC", False), "test_ppl": ("NS", False),
                   "best_epoch": ("NS", False), "status": ("NS", True)},
    "ws": {"seeds": ("S", True), "epochs": ("C", False), "valid_tokens": ("C", True), "valid_ppl": ("SCN", False),
           "test_ppl": ("SN", False), "train_loss": ("SC", False), "seconds": ("SC", False), "samples": ("SN", True),
           "status": ("S", True), "archs": ("n", True)},
}
_LAYOUT["ws_subspace"] = _LAYOUT["ws"]


def per_run(part: str) -> tuple[str, ...]:
    """The datasets of ``part`` that hold one row per run (standalone: per architecture × seed, ``N`` first;
    weight sharing: per super-net, ``S`` first): what a build unit computes and the assembly copies into place."""
    lead = "N" if part == "standalone" else "S"
    return tuple(k for k, (dims, _) in _LAYOUT[part].items() if dims[0] == lead and k != "seeds")
_STATUS_CODES = np.array([int(s) for s in Status])


def _read_part(arrays: dict[str, np.ndarray], name: str, n_archs: int, path: Path):
    """One part with every dataset checked for presence, shape, kind and (status, archs) values."""
    layout = _LAYOUT[name]
    group = {key.partition("/")[2] for key in arrays if key.startswith(name + "/")}
    required = set(layout) - ({"archs"} if name == "ws" else set())
    missing = sorted(required - group)
    if missing:
        raise TableError(f"{path}: /{name} lacks the dataset(s) {', '.join(missing)}")
    data = {k: arrays[f"{name}/{k}"] for k in layout if k in group}
    dims = {"N": n_archs, "S": data["seeds"].shape[0] if data["seeds"].ndim == 1 else -1,
            "C": data["epochs"].shape[0] if data["epochs"].ndim == 1 else -1,
            "n": data["archs"].shape[0] if "archs" in data and data["archs"].ndim == 1 else -1}
    for key, value in data.items():
        letters, integer = layout[key]
        expected = tuple(dims[c] for c in letters)
        if value.shape != expected:
            raise TableError(f"{path}: /{name}/{key} has shape {value.shape}, expected {expected} "
                             f"({', '.join(letters)})")
        kind = value.dtype.kind
        if (integer and kind not in "iu") or (not integer and kind != "f"):
            raise TableError(f"{path}: /{name}/{key} has dtype {value.dtype}, expected "
                             f"{'integers' if integer else 'floats'}")
    bad = np.setdiff1d(np.unique(data["status"]), _STATUS_CODES)
    if bad.size:
        raise TableError(f"{path}: /{name}/status holds unknown code(s) {bad.tolist()} "
                         f"(known: {', '.join(f'{int(s)} {s.name.lower()}' for s in Status)})")
    if "archs" in data:
        archs = data["archs"]
        if len(np.unique(archs)) != len(archs) or (archs.size and (archs.min() < 0 or archs.max() >= n_archs)):
            raise TableError(f"{path}: /{name}/archs must be distinct ids in 0..{n_archs - 1}")
    return PARTS[name](**data)


def read(path: str | os.PathLike) -> Table:
    """Load a whole table; raises :class:`TableError` naming the path and the problem."""
    path = Path(path)

    def parse(f: h5py.File) -> Table:
        from .search_results import FORMAT as SEARCH_FORMAT  # here: search_results imports this module

        if f.attrs.get("format") == SEARCH_FORMAT:
            raise TableError(f"{path}: a search-results file (real search phases), not a table; judge it "
                             "against a table with `nasbench_ptb evaluate --real` (or `report --real`), read it "
                             "with nasbench_ptb.search_results.read")
        version = f.attrs.get("format_version")
        if version is None:
            raise TableError(f"{path}: not a nasbench-ptb table (no format_version attribute)")
        if int(version) != FORMAT_VERSION:
            raise TableError(f"{path}: format_version {int(version)}, this library reads {FORMAT_VERSION}")
        arrays = _datasets(f)
        stored = f.attrs.get(DIGEST)
        if stored is None:  # every table this project wrote or shipped has one: a deleted digest hides an edit
            raise TableError(f"{path}: no {DIGEST} attribute, so its contents cannot be verified (every table "
                             "nasbench-ptb writes carries one); rebuild it, or reassemble it from its parts with "
                             "the same build command and --time-limit 0")
        if str(stored) != content_digest(f, arrays):
            raise TableError(f"{path}: content digest mismatch: the file is corrupted (a changed byte or a "
                             "partial write); rebuild it or fetch it again")
        sp = get_space(str(f.attrs["space"]))
        ids = arrays["archs/id"]
        if len(ids) != sp.size or not np.array_equal(ids, np.arange(sp.size)):
            raise TableError(f"{path}: /archs does not list the {sp.size} architectures of {sp.name} in id order")
        parts = {name: _read_part(arrays, name, sp.size, path) if name in f else None for name in PARTS}
        return Table(sp, str(f.attrs["preset"]), json.loads(f.attrs["config"]), parts["standalone"], parts["ws"],
                     read_attrs(f), parts["ws_subspace"])

    return read_h5(path, "table", parse, TableError)
