"""The HDF5 table: one module owns its layout and :data:`FORMAT_VERSION` (ARCHITECTURE.md §6).

Dense arrays; NaN plus a status code where a run is missing or diverged, never imputed. Each group's datasets are
declared once, as the fields of :class:`Standalone` and :class:`WeightSharing` (:func:`column`: dimensions,
dtype, description); reading, the checks on open, ``empty()``, the build's assembly, the long export, the query
records and the layout block of README.md (:mod:`nasbench_ptb.layout_doc` writes it) follow from them. Any group may be absent (a build with ``--mode ws`` or
``--mode standalone``; ``/ws_subspace`` only where a build used ``--ws-archs``).
"""
from __future__ import annotations

import enum
import hashlib
import json
import os
from dataclasses import dataclass, field, fields
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




def column(dims: str, dtype: str, doc: str, added: bool = False, **kw):
    """One dataset of a group, declared once: ``dims`` its axes (``N`` architectures in id order; ``S`` the group's
    seeds and ``C`` its checkpoints, from its own ``seeds`` and ``epochs``; ``n`` subspace members), ``dtype``
    (``f8`` floats, NaN where a value does not exist; ``i8``/``i1`` integers) and ``doc`` (the line the README's
    layout block shows). The readers, the validation on open, ``empty()``, the build assembly, the long export and
    the query records are derived from these declarations (:func:`layout`, :func:`per_run`).

    A [N, S] float final is measured at the run's best-validation checkpoint (as ``test_ppl``). ``added``: a
    dataset declared after tables were shipped; a table without it reads as not measured (NaN, 0), so the
    shipped tables stay readable without a new format version."""
    return field(metadata={"dims": dims, "dtype": dtype, "doc": doc, "added": added}, **kw)


def _not_measured(dims: str, dtype: str, sizes: dict[str, int]) -> np.ndarray:
    """A dataset before training: NaN floats, 0 counts, status ``MISSING``."""
    shape = tuple(sizes[d] for d in dims)
    return np.full(shape, Status.MISSING if dtype == "i1" else np.nan if dtype == "f8" else 0, dtype=dtype)


class _Group:
    """A group of a table: dense arrays, one per :func:`column`."""

    @classmethod
    def empty(cls, n_archs: int, *axes, **named):
        """The group with its axes given (``seeds``, ``epochs``, then the group's other 1-D axes, in declaration
        order) and every other dataset not yet trained: NaN, 0 mini-batches, status ``MISSING``."""
        given = dict(zip(_axes(cls), axes), **named)
        sizes = {"N": n_archs, "S": len(given["seeds"]), "C": len(given["epochs"]) if "epochs" in given else 0}
        values = {}
        for f in fields(cls):
            dims, dtype = f.metadata["dims"], f.metadata["dtype"]
            if f.name in given:
                values[f.name] = None if given[f.name] is None else np.asarray(given[f.name], dtype=dtype)
            else:
                values[f.name] = None if f.default is None else _not_measured(dims, dtype, sizes)
        return cls(**values)


def _axes(cls) -> tuple[str, ...]:
    """The 1-D datasets ``empty()`` takes (not per architecture): seeds, epochs, valid_tokens, archs."""
    return tuple(f.name for f in fields(cls) if len(f.metadata["dims"]) == 1 and f.metadata["dims"] != "N"
                 and f.name != "status")


@dataclass(frozen=True)
class Standalone(_Group):
    """Every architecture trained alone, with each of ``S`` seeds, recorded at ``C`` checkpoints."""

    seeds: np.ndarray = column("S", "i8", "standalone training seeds")
    epochs: np.ndarray = column("C", "f8", "epochs over the training slice at each checkpoint")
    train_loss: np.ndarray = column("NSC", "f8", "mean training cross-entropy (nats, no AR/TAR) since the last checkpoint")
    valid_ppl: np.ndarray = column("NSC", "f8", "validation perplexity at each checkpoint")
    seconds: np.ndarray = column("NSC", "f8", "cumulative wall-clock seconds (a unit's time shared by its runs)")
    test_ppl: np.ndarray = column("NS", "f8", "test perplexity at the best-validation checkpoint")
    best_epoch: np.ndarray = column("NS", "f8", "epoch of the best-validation checkpoint")
    status: np.ndarray = column("NS", "i1", "0 ok, 1 missing, 2 diverged")
    rollback: np.ndarray = column("NSC", "f8", "1 where the run diverged before this checkpoint and was returned to "
                                  "its best checkpoint (preset rollbacks), else 0", added=True)


@dataclass(frozen=True)
class WeightSharing(_Group):
    """``S`` weight-sharing super-nets (one per seed), every architecture evaluated under each at ``C``
    checkpoints; ``archs``: the subspace that shared the weights (None: the whole space)."""

    seeds: np.ndarray = column("S", "i8", "super-net seeds")
    epochs: np.ndarray = column("C", "f8", "super-net epochs at each checkpoint")
    valid_tokens: np.ndarray = column("C", "i8", "validation tokens used at each checkpoint (the last: the whole split)")
    valid_ppl: np.ndarray = column("SCN", "f8", "every architecture's validation ppl under the shared weights")
    test_ppl: np.ndarray = column("SN", "f8", "test ppl under the shared weights at the final checkpoint")
    train_loss: np.ndarray = column("SC", "f8", "the super-net's mean training cross-entropy (nats)")
    seconds: np.ndarray = column("SC", "f8", "cumulative wall-clock seconds of the super-net")
    samples: np.ndarray = column("SN", "i8", "mini-batches each architecture was drawn for")
    status: np.ndarray = column("S", "i1", "0 ok, 1 missing, 2 diverged")
    rollback: np.ndarray = column("SC", "f8", "1 where the super-net diverged before this checkpoint and was "
                                  "returned to its best checkpoint (preset rollbacks), else 0", added=True)
    archs: np.ndarray | None = column("n", "i8", "/ws_subspace only: the architectures that shared the weights",
                                      default=None)


@dataclass(frozen=True)
class Proxies(_Group):
    """Zero-cost proxies of every architecture at initialisation (``builder/proxies.py`` defines each from its
    paper), one ``[N, S]`` column per proxy: seed ``s`` scores the initial weights of standalone seed ``s`` on
    the first training mini-batch. Each is oriented as its paper scores it (higher predicts better)."""

    seeds: np.ndarray = column("S", "i8", "proxy seeds: seed s scores the initial weights of standalone seed s")
    grad_norm: np.ndarray = column("NS", "f8", "sum over layers of the loss gradient's L2 norm (Abdelfattah et al. 2021)")
    snip: np.ndarray = column("NS", "f8", "sum |weight x gradient| (SNIP, Lee et al. 2019)")
    grasp: np.ndarray = column("NS", "f8", "-sum weight x Hessian-gradient product (GraSP, Wang et al. 2020)")
    fisher: np.ndarray = column("NS", "f8", "Fisher pruning saliency of the cell's node states (Theis et al. 2018)")
    synflow: np.ndarray = column("NS", "f8", "synaptic flow of |weights| on an all-ones input (Tanaka et al. 2020)")
    jacob_cov: np.ndarray = column("NS", "f8", "input-Jacobian correlation score (Mellor et al. 2021)")
    hidden_cov: np.ndarray = column("NS", "f8", "hidden-state correlation score (Serianni & Kalita 2023)")
    params: np.ndarray = column("N", "i8", "parameter count (constant in this cell space)")


GROUPS = {"standalone": Standalone, "ws": WeightSharing, "ws_subspace": WeightSharing, "proxies": Proxies}


@dataclass(frozen=True)
class Table:
    """A whole table in memory; ``standalone`` or ``ws`` is None where the build did not train that group."""

    space: SearchSpace
    preset: str
    config: dict
    standalone: Standalone | None
    ws: WeightSharing | None = None
    attrs: dict = field(default_factory=dict)  # ptb_sha256, software, device, timings, created
    ws_subspace: WeightSharing | None = None  # super-nets over a subspace only (``archs``)
    proxies: Proxies | None = None  # zero-cost proxies at initialisation (``nasbench_ptb proxies``)


def arch_columns(sp: SearchSpace, params: int) -> dict:
    """The /archs columns of a space: id, canonical genotype, hash, iso hash, parameter count."""
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
    for name in GROUPS:
        arrays = getattr(table, name)
        if arrays is None:
            continue
        group = f.create_group(name)
        for key, value in vars(arrays).items():
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


def layout(group: str) -> dict[str, tuple[str, bool]]:
    """Dataset name -> (its dimension letters, whether it holds integers), in declaration order."""
    return {f.name: (f.metadata["dims"], f.metadata["dtype"][0] == "i") for f in fields(GROUPS[group])}


def optional(group: str) -> set[str]:
    """The datasets a group may lack: ``archs`` in /ws (it names a subspace; /ws_subspace requires it) and the
    datasets declared ``added`` (read as not measured)."""
    cols = fields(GROUPS[group])
    return ({f.name for f in cols if f.default is None} if group == "ws" else set()) | \
        {f.name for f in cols if f.metadata["added"]}


def per_run(group: str) -> tuple[str, ...]:
    """The datasets of ``group`` that hold one row per run (standalone: per architecture × seed, ``N`` first;
    weight sharing: per super-net, ``S`` first): what a build unit computes and the assembly copies into place."""
    lead = "N" if group == "standalone" else "S"
    return tuple(k for k, (dims, _) in layout(group).items() if dims[0] == lead and k != "seeds")


def columns(group: str, dims: str) -> tuple[str, ...]:
    """The datasets of ``group`` with exactly these dimensions, e.g. ``("standalone", "NSC")``: the curves."""
    return tuple(k for k, (d, _) in layout(group).items() if d == dims)


def doc(group: str, name: str) -> str:
    """The declared description of one dataset."""
    return next(f.metadata["doc"] for f in fields(GROUPS[group]) if f.name == name)


_STATUS_CODES = np.array([int(s) for s in Status])


def _read_group(arrays: dict[str, np.ndarray], name: str, n_archs: int, path: Path):
    """One group with every dataset checked for presence, shape, kind and (status, archs) values."""
    layout_ = layout(name)
    group = {key.partition("/")[2] for key in arrays if key.startswith(name + "/")}
    required = set(layout_) - optional(name)
    missing = sorted(required - group)
    if missing:
        raise TableError(f"{path}: /{name} lacks the dataset(s) {', '.join(missing)}")
    data = {k: arrays[f"{name}/{k}"] for k in layout_ if k in group}
    dims = {"N": n_archs, "S": data["seeds"].shape[0] if data["seeds"].ndim == 1 else -1,
            "C": data["epochs"].shape[0] if "epochs" in data and data["epochs"].ndim == 1 else -1,
            "n": data["archs"].shape[0] if "archs" in data and data["archs"].ndim == 1 else -1}
    for f in fields(GROUPS[name]):  # a table written before a dataset was added: not measured there
        if f.metadata["added"] and f.name not in data and -1 not in (dims["S"], dims["C"]):
            data[f.name] = _not_measured(f.metadata["dims"], f.metadata["dtype"], dims)
    for key, value in data.items():
        letters, integer = layout_[key]
        expected = tuple(dims[c] for c in letters)
        if value.shape != expected:
            raise TableError(f"{path}: /{name}/{key} has shape {value.shape}, expected {expected} "
                             f"({', '.join(letters)})")
        kind = value.dtype.kind
        if (integer and kind not in "iu") or (not integer and kind != "f"):
            raise TableError(f"{path}: /{name}/{key} has dtype {value.dtype}, expected "
                             f"{'integers' if integer else 'floats'}")
    bad = np.setdiff1d(np.unique(data["status"]), _STATUS_CODES) if "status" in data else np.array([])
    if bad.size:
        raise TableError(f"{path}: /{name}/status holds unknown code(s) {bad.tolist()} "
                         f"(known: {', '.join(f'{int(s)} {s.name.lower()}' for s in Status)})")
    if "archs" in data:
        archs = data["archs"]
        if len(np.unique(archs)) != len(archs) or (archs.size and (archs.min() < 0 or archs.max() >= n_archs)):
            raise TableError(f"{path}: /{name}/archs must be distinct ids in 0..{n_archs - 1}")
    return GROUPS[name](**data)


def read(path: str | os.PathLike) -> Table:
    """Load a whole table; raises :class:`TableError` naming the path and the problem.

    Raises:
        TableError: not a readable table of this format version, or its contents fail the digest or the layout
            checks.
    """
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
        groups = {name: _read_group(arrays, name, sp.size, path) if name in f else None for name in GROUPS}
        return Table(sp, str(f.attrs["preset"]), json.loads(f.attrs["config"]), groups["standalone"], groups["ws"],
                     read_attrs(f), groups["ws_subspace"], groups["proxies"])

    return read_h5(path, "table", parse, TableError)
