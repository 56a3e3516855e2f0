"""The search-results file: what real search phases (``nasbench_ptb search``) chose, epoch by epoch.

Layout (HDF5, beside the table schema; format versioned and content-digested like the tables)::

    attrs   format = "nasbench_ptb-search", format_version, space, preset, config (JSON: every training value),
            software, device, content_sha256
    /<algo>/                    one group per algorithm (darts, enas, nao, random_ws); attrs: options (JSON)
        seeds      [R]          search seeds
        epochs     [E]          search epochs (super-net training) at which the trajectory was recorded
        choice     [R, E]       architecture id the method would return at that point
        estimate   [R, E]       the method's own estimate of that choice: validation ppl under the shared weights
        seconds    [R, E]       cumulative search wall-clock seconds
        final      [R]          architecture id returned at the end
        status     [R]          Status code (ok / diverged)
        extra/<name>            per-algorithm arrays with leading axes [R, E] (DARTS: alphas [R, E, edges, 5]: none then the 4 ops;
                                ENAS: entropy; NAO: pool and proposed [R, E, N] 0/1 (the pool scored at that epoch,
                                the decoder's new cells after it), predictor_tau)

Everything random is recorded by its seed; a file holds several algorithms of one space and preset.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .files import read_h5, write_h5
from .schema import DIGEST, Status, TableError, content_digest, read_attrs, write_header
from .space import SearchSpace, space as get_space

FORMAT = "nasbench_ptb-search"
FORMAT_VERSION = 1
ALGORITHMS = {  # the registry of real search phases: name -> what it is (the CLI's help); builder.search.methods()
    "darts": "DARTS (Liu et al. 2019): a relaxed super-net, alphas by gradient on validation; e.g. order=2",
    "enas": "ENAS (Pham et al. 2018): an LSTM controller trained by REINFORCE; e.g. controller_steps=50",
    "nao": "NAO (Luo et al. 2018): encoder-predictor-decoder over a growing pool; e.g. new=4",
    "random_ws": "random search with weight sharing (Li & Talwalkar 2019); e.g. candidates=8",
}


@dataclass(frozen=True)
class Search:
    """``R`` runs (seeds) of one algorithm, recorded at ``E`` search epochs."""

    algo: str
    seeds: np.ndarray  # [R]
    epochs: np.ndarray  # [E]
    choice: np.ndarray  # [R, E] int64
    estimate: np.ndarray  # [R, E]
    seconds: np.ndarray  # [R, E]
    final: np.ndarray  # [R] int64
    status: np.ndarray  # [R] int8
    options: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # name -> [R, E, ...]

    def __post_init__(self):
        if self.algo not in ALGORITHMS:
            raise ValueError(f"unknown search algorithm {self.algo!r} (known: {', '.join(ALGORITHMS)})")
        R, E = len(self.seeds), len(self.epochs)
        for name in ("choice", "estimate", "seconds"):
            if getattr(self, name).shape != (R, E):
                raise ValueError(f"{self.algo}/{name}: shape {getattr(self, name).shape}, expected {(R, E)}")
        for name in ("final", "status"):
            if getattr(self, name).shape != (R,):
                raise ValueError(f"{self.algo}/{name}: shape {getattr(self, name).shape}, expected {(R,)}")
        for name, arr in self.extra.items():
            if arr.shape[:2] != (R, E):
                raise ValueError(f"{self.algo}/extra/{name}: leading shape {arr.shape[:2]}, expected {(R, E)}")


@dataclass(frozen=True)
class SearchResults:
    """A search-results file in memory: the searches by algorithm, with the space, preset and configuration they
    ran at."""
    space: SearchSpace
    preset: str
    config: dict
    searches: dict  # algo -> Search
    attrs: dict = field(default_factory=dict)  # software, device, created, ptb_sha256

    def merged(self, other: "SearchResults") -> "SearchResults":
        """This file's searches with ``other``'s added (an algorithm in both: ``other``'s replaces it); both
        must be of the same space and training configuration, or their numbers are not comparable.

        Raises:
            ValueError: the other file's space or training configuration differs.
        """
        if other.space.name != self.space.name or other.config != self.config:
            raise ValueError(f"cannot merge searches of {other.space.name}/{other.preset} into a file of "
                             f"{self.space.name}/{self.preset}: space or training configuration differ")
        return SearchResults(self.space, self.preset, self.config, {**self.searches, **other.searches},
                             {**self.attrs, **other.attrs})


def write(results: SearchResults, path: str | os.PathLike) -> None:
    """Write atomically (a temporary file renamed onto ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_h5(path, lambda f: _fill(f, results))


def _fill(f: h5py.File, res: SearchResults) -> None:
    f.attrs["format"] = FORMAT
    write_header(f, FORMAT_VERSION, res.space.name, res.preset, res.config, res.attrs)
    for algo, s in sorted(res.searches.items()):
        g = f.create_group(algo)
        g.attrs["options"] = json.dumps(s.options, sort_keys=True)
        for name in ("seeds", "epochs", "choice", "estimate", "seconds", "final", "status"):
            g.create_dataset(name, data=getattr(s, name))
        for name, arr in s.extra.items():
            g.create_dataset(f"extra/{name}", data=arr)
    f.attrs[DIGEST] = content_digest(f, _arrays(f))


def _arrays(f: h5py.File) -> dict[str, np.ndarray]:
    out = {}
    f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def read(path: str | os.PathLike) -> SearchResults:
    """Load a search-results file; raises :class:`TableError` naming the path and the problem.

    Raises:
        TableError: not a readable search-results file (names the path and the problem).
    """
    path = Path(path)

    def parse(f: h5py.File) -> SearchResults:
        if f.attrs.get("format") != FORMAT:
            raise TableError(f"{path}: not a nasbench-ptb search-results file (format attribute)")
        if int(f.attrs["format_version"]) != FORMAT_VERSION:
            raise TableError(f"{path}: format_version {int(f.attrs['format_version'])}, this library reads "
                             f"{FORMAT_VERSION}")
        arrays = _arrays(f)
        if str(f.attrs.get(DIGEST)) != content_digest(f, arrays):
            raise TableError(f"{path}: content digest mismatch: the file is corrupted")
        sp = get_space(str(f.attrs["space"]))
        searches = {}
        for algo in f:
            ex = {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith(f"{algo}/extra/")}
            s = Search(algo, *(arrays[f"{algo}/{n}"] for n in ("seeds", "epochs", "choice", "estimate",
                                                                "seconds", "final", "status")),
                       options=json.loads(f[algo].attrs["options"]), extra=ex)
            bad = [int(a) for a in np.concatenate([s.choice.ravel(), s.final]) if not 0 <= a < sp.size]
            if bad:
                raise TableError(f"{path}: {algo} names architecture id {bad[0]}, not in {sp.name}")
            if not np.isin(s.status, [int(Status.OK), int(Status.DIVERGED)]).all():
                raise TableError(f"{path}: {algo}/status holds an unknown status code")
            searches[algo] = s
        return SearchResults(sp, str(f.attrs["preset"]), json.loads(f.attrs["config"]), searches,
                             read_attrs(f, skip=("format",)))

    return read_h5(path, "search-results", parse, TableError)
