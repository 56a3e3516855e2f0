"""Query the tables: ``api.query(genotype)`` against the shipped tables, ``api.load(path)`` for any table.

numpy + h5py (+ scipy) only — no torch. A table is loaded whole at open; records are built on first query and
cached, so repeated queries cost a dictionary lookup.

    from nasbench_ptb import api
    rec = api.query("tanh:0|sigmoid:0")        # canonical string, DARTS repr, (op, pred) list or hash
    rec.standalone.valid_ppl, rec.standalone.rank, [w.rank for w in rec.ws]
    bench = api.load("artifacts/2node-cpu.h5"); bench.best("valid_ppl", 5)
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import schema, stats, summary
from .discovery import default_tables, table_paths
from .errors import (ArchNotFoundError, InvalidInputError, NasbenchError, NotFoundError, PartNotFoundError,
                     SuperNetNotFoundError)
from .files import read_manifest, sha256_file
from .records import ArchRecord, Curve, ProxyScore, SeedResult, Standalone, WsSeedResult, run_values
from .schema import Status, TableError
from .space import Genotype, GenotypeLike, is_hash, is_id, parse, space as get_space  # noqa: F401 (api.get_space: CLI)
from .tables import Tables

__all__ = ["ArchNotFoundError", "Benchmark", "InvalidInputError", "NasbenchError", "NotFoundError", "TableError", "Tables",
           "default_tables", "defaults", "load", "query", "table_paths"]

_STATUS = {int(s): s.name.lower() for s in Status}
METRICS = ("valid_ppl", "test_ppl")




def _ranks(values: np.ndarray, attempted: np.ndarray) -> list[int | None]:
    """Ranks as in :func:`stats.ranks` (NaN/diverged ties last); not attempted → None."""
    return [int(r) if a else None for r, a in zip(stats.ranks(values), attempted)]


def _tuple(a: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in a)


# the per-run datasets a record carries, from the layout (schema.py): curves per checkpoint, one value per run
_SA_CURVES, _SA_FINALS = schema.columns("standalone", "NSC"), run_values("standalone", "NS")
_WS_CURVES, _WS_FINALS = schema.columns("ws", "SCN"), run_values("ws", "SN")


class Benchmark:
    """One table in memory: query records, iterate, rank, summarise."""

    def __init__(self, table: schema.Table, path: str | os.PathLike | None = None):
        self.table, self.path = table, Path(path) if path else None
        self.space = table.space
        self._genos = list(table.space)
        self._keys: dict[str, int] = {}
        for g in self._genos:
            self._keys[g.canonical] = g.id
            self._keys[g.hash] = g.id
        self._cache: dict[tuple, ArchRecord] = {}
        sa, ws = table.standalone, table.ws
        if sa is not None:
            self._sa_mean = stats.standalone_final(table)
            self._sa_rank = _ranks(self._sa_mean, stats.attempted(table))
            # per seed: ranks among that seed's runs (a run that seed never had is not ranked)
            fv = stats.final_valid(table)
            self._seed_ranks = [_ranks(fv[:, k], sa.status[:, k] != Status.MISSING) for k in range(len(sa.seeds))]
        self._ws_ranks = {}  # per WS group, per super-net: ranks among the architectures it shared weights with
        for name, group in (("ws", ws), ("ws_subspace", table.ws_subspace)):
            if group is not None:
                members = np.zeros(self.space.size, bool)
                members[np.arange(self.space.size) if group.archs is None else group.archs] = True
                self._ws_ranks[name] = [_ranks(group.valid_ppl[k, -1], members & (group.status[k] == Status.OK))
                                        for k in range(len(group.seeds))]

        self._proxies: dict[str, tuple[np.ndarray, list[int | None]]] = {}  # name -> (mean [N], ranks)
        if table.proxies is not None:
            for name in schema.columns("proxies", "NS"):
                mean = stats.proxy_mean(table, name)
                self._proxies[name] = (mean, _ranks(-mean, np.isfinite(mean)))

    def __len__(self) -> int:
        return self.space.size

    def __iter__(self) -> Iterator[ArchRecord]:
        return (self.query(i) for i in range(self.space.size))

    def __repr__(self) -> str:
        return f"Benchmark({self.space.name}, preset={self.table.preset!r}, path={str(self.path)!r})"

    @property
    def metadata(self) -> dict:
        """Space, preset, every training value, coverage, device, software, timings."""
        cov = summary.coverage(self.table)
        return {"space": self.space.name, "size": self.space.size, "preset": self.table.preset,
                "config": self.table.config, "coverage": vars(cov), "path": str(self.path) if self.path else None,
                "ws_seeds": [int(s) for s in self.table.ws.seeds] if self.table.ws is not None else [],
                "proxy_seeds": [int(s) for s in self.table.proxies.seeds] if self.table.proxies is not None else [],
                **self.table.attrs}

    def resolve(self, key: GenotypeLike | int) -> int:
        """The id of an architecture given by id, hash, canonical string, DARTS repr, pairs or Genotype (the rules
        of :func:`nasbench_ptb.space.is_hash`/``is_id``: the same key means the same thing on every face).

        Raises:
            ArchNotFoundError: the key names no architecture of this table (InvalidInputError, a ValueError, where it
                is malformed).
        """
        if isinstance(key, str) and key in self._keys:
            return self._keys[key]
        if is_id(key):
            if 0 <= int(key) < self.space.size:
                return int(key)
            raise ArchNotFoundError(int(key), self.space.name)
        if is_hash(key):
            raise ArchNotFoundError(key, self.space.name)  # a well-formed hash that is not in this space
        geno = key if isinstance(key, Genotype) else parse(key)  # ValueError when malformed
        if geno.n != self.space.n:
            raise ArchNotFoundError(geno.canonical, self.space.name)
        return geno.id

    def at_epoch(self, epoch: float | None) -> "Benchmark":
        """This table as it stood after ``epoch`` epochs of training (:func:`nasbench_ptb.fidelity.at_epoch`:
        curves cut at the last checkpoint at or before it, finals, ranks and status there); ``None`` or an epoch at
        or past the last checkpoint: the table itself. Views are cached.

        Raises:
            nasbench_ptb.fidelity.FidelityError: an epoch before the first checkpoint, or not a number.
        """
        if epoch is None:
            return self
        from .fidelity import at_epoch, checkpoint_of

        sa = self.table.standalone
        c = checkpoint_of(sa.epochs, epoch) if sa is not None else None
        if c is None or c == len(sa.epochs) - 1:
            at_epoch(self.table, epoch)  # the same refusals for a table that cannot be cut
            return self
        views = self.__dict__.setdefault("_views", {})
        if c not in views:
            views[c] = Benchmark(at_epoch(self.table, epoch), self.path)
        return views[c]

    def query(self, key: GenotypeLike | int, seed: int | None = None, curves: bool = True,
              epoch: float | None = None) -> ArchRecord:
        """The record of one architecture; ``seed`` restricts the standalone aggregate to that seed; ``epoch``
        answers as the table stood after that many epochs (:meth:`at_epoch`)."""
        if epoch is not None:
            return self.at_epoch(epoch).query(key, seed, curves)
        arch = self.resolve(key)
        cache_key = (arch, seed, curves)
        rec = self._cache.get(cache_key)
        if rec is None:
            rec = self._cache[cache_key] = self._record(arch, seed, curves)
        return rec

    def _record(self, a: int, seed: int | None, curves: bool) -> ArchRecord:
        g = self._genos[a]
        return ArchRecord(g.canonical, a, g.hash, g.iso_hash, self.space.name, int(self.table.config.get("params", 0)),
                          self._standalone(a, seed, curves), self._ws(a, "ws"), self._ws(a, "ws_subspace"),
                          self._proxy_scores(a))

    def _proxy_scores(self, a: int) -> tuple[ProxyScore, ...]:
        pz = self.table.proxies
        if pz is None:
            return ()
        seeds = tuple(int(s) for s in pz.seeds)
        out = []
        for name, (mean, rank) in self._proxies.items():
            values = getattr(pz, name)[a]
            out.append(ProxyScore(name, float(mean[a]), int(np.isfinite(values).sum()), seeds, _tuple(values), rank[a]))
        return tuple(out)

    def proxy(self, name: str) -> np.ndarray:
        """``[N]`` zero-cost proxy ``name``'s mean over its seeds per id (higher predicts better; NaN: undefined).

        Raises:
            PartNotFoundError: the table has no proxies. InvalidInputError: no proxy of that name.
        """
        if not self._proxies:
            raise PartNotFoundError(f"the {self.space.name} table has no zero-cost proxies "
                                    "(add them with: nasbench_ptb proxies TABLE)")
        if name not in self._proxies:
            raise InvalidInputError(f"unknown proxy {name!r} (known: {', '.join(self._proxies)})")
        return self._proxies[name][0]

    def _standalone(self, a: int, seed: int | None, curves: bool) -> Standalone | None:
        sa = self.table.standalone
        if sa is None:
            return None
        cols = list(range(len(sa.seeds)))
        if seed is not None:
            if seed not in sa.seeds:
                raise PartNotFoundError(f"no standalone seed {seed} in this table (seeds {list(map(int, sa.seeds))})")
            cols = [int(np.flatnonzero(sa.seeds == seed)[0])]
        runs = []
        for k in cols:
            ok = sa.status[a, k] == Status.OK
            curve = Curve(_tuple(sa.epochs), **{n: _tuple(getattr(sa, n)[a, k]) for n in _SA_CURVES}) if curves else None
            runs.append(SeedResult(int(sa.seeds[k]), _STATUS[int(sa.status[a, k])],
                                   float(sa.valid_ppl[a, k, -1]) if ok else float("nan"),
                                   **{n: kind(getattr(sa, n)[a, k]) for n, kind in _SA_FINALS.items()}, curve=curve))
        okv = [r for r in runs if r.status == "ok"]
        valid = np.array([r.final_valid_ppl for r in okv])
        test = np.array([r.test_ppl for r in okv])
        nan = float("nan")
        status = "ok" if okv else ("diverged" if any(r.status == "diverged" for r in runs) else "missing")
        return Standalone(
            status, len(okv), float(valid.mean()) if okv else nan, stats.sample_std(valid),
            float(test.mean()) if okv else nan, stats.sample_std(test),
            self._sa_rank[a] if seed is None else self._seed_ranks[cols[0]][a],
            tuple(r.seed for r in runs if r.status == "missing"), tuple(r.seed for r in runs if r.status == "diverged"),
            tuple(runs),
        )

    def _ws(self, a: int, name: str) -> tuple[WsSeedResult, ...]:
        """Architecture ``a`` under each super-net of group ``name`` (none where ``a`` is outside its subspace)."""
        ws = getattr(self.table, name)
        if ws is None or (ws.archs is not None and a not in ws.archs):
            return ()
        return tuple(
            WsSeedResult(int(s), _STATUS[int(ws.status[k])], _tuple(ws.epochs),
                         **{n: _tuple(getattr(ws, n)[k, :, a]) for n in _WS_CURVES},
                         final_valid_ppl=float(ws.valid_ppl[k, -1, a]),
                         **{n: kind(getattr(ws, n)[k, a]) for n, kind in _WS_FINALS.items()},
                         rank=self._ws_ranks[name][k][a])
            for k, s in enumerate(ws.seeds)
        )

    def rank(self, key: GenotypeLike | int, ws_seed: int | None = None) -> int | None:
        """Standalone rank (1 = best), or the rank under WS super-net ``ws_seed``.

        Raises:
            ArchNotFoundError: no such architecture. KeyError: no standalone part. ValueError: no such WS seed.
        """
        a = self.resolve(key)
        if ws_seed is None:
            if self.table.standalone is None:
                raise PartNotFoundError("this table has no standalone part")
            return self._sa_rank[a]
        ws = self.table.ws
        if ws is None or ws_seed not in ws.seeds:  # the same kind and words as values()
            have = ", ".join(map(str, ws.seeds)) if ws is not None else "none"
            raise SuperNetNotFoundError(f"no super-net with WS seed {ws_seed} (the table's: {have})")
        return self._ws_ranks["ws"][int(np.flatnonzero(ws.seeds == ws_seed)[0])][a]

    def values(self, metric: str, ws_seed: int | None = None) -> np.ndarray:
        """Mean standalone ``valid_ppl`` (final checkpoint) or ``test_ppl`` over ok seeds per id (NaN: none);
        ``ws_valid_ppl``: the final validation ppl under super-net ``ws_seed`` (default: the first; NaN where it
        is not finite or the super-net is not ok).

        Raises:
            InvalidInputError: an unknown metric. SuperNetNotFoundError: ``ws_valid_ppl`` without that super-net.
        """
        if metric == "ws_valid_ppl":
            return self._ws_final(ws_seed)
        if metric not in METRICS:
            raise InvalidInputError(f"unknown metric {metric!r} (known: {', '.join(METRICS + ('ws_valid_ppl',))})")
        sa = self.table.standalone
        if sa is None:  # a weight-sharing-only table: no architecture has a standalone value
            return np.full(self.space.size, np.nan)
        return self._sa_mean if metric == "valid_ppl" else stats.mean_over_ok(sa.test_ppl, sa.status)

    def _ws_final(self, ws_seed: int | None) -> np.ndarray:
        ws = self.table.ws
        if ws is None:
            raise SuperNetNotFoundError(f"the {self.space.name} table has no weight-sharing super-nets")
        seeds = [int(s) for s in ws.seeds]
        seed = seeds[0] if ws_seed is None else int(ws_seed)
        if seed not in seeds:
            raise SuperNetNotFoundError(f"no super-net with WS seed {seed} (the table's: {', '.join(map(str, seeds))})")
        k = seeds.index(seed)
        if ws.status[k] != schema.Status.OK:
            return np.full(self.space.size, np.nan)
        v = ws.valid_ppl[k, -1]
        return np.where(np.isfinite(v), v, np.nan)

    def order(self, sort: str = "valid_ppl", descending: bool = False,
              ws_seed: int | None = None) -> tuple[list[int], int]:
        """Every id ordered by ``sort`` (a metric, ``ws_valid_ppl`` of super-net ``ws_seed``, a zero-cost proxy's
        name, or ``"id"``), ties by id; architectures without a value come last whatever the direction. Ascending
        is best first: lowest ppl, highest proxy. Returns (ids, how many have a value). ``best()`` and
        ``GET /archs`` use it."""
        if sort == "id":
            return list(range(self.space.size))[:: -1 if descending else 1], self.space.size
        values = -self.proxy(sort) if sort in schema.columns("proxies", "NS") else self.values(sort, ws_seed)
        has = np.flatnonzero(~np.isnan(values))
        keyed = sorted(has.tolist(), key=lambda i: (-values[i] if descending else values[i], i))
        return keyed + np.flatnonzero(np.isnan(values)).tolist(), len(has)

    def best(self, metric: str = "valid_ppl", k: int = 10, min_n: int = 1) -> list[ArchRecord]:
        """The ``k`` best architectures by mean standalone ``valid_ppl`` or ``test_ppl`` (ok seeds only) among
        those with at least ``min_n`` ok seeds (one-seed means are noisier and crowd an unfiltered top list).

        Raises:
            KeyError: the table has no standalone part. ValueError: an unknown metric.
        """
        if self.table.standalone is None:
            raise PartNotFoundError("this table has no standalone part")
        ids, with_value = self.order(metric)
        n_ok = (self.table.standalone.status == schema.Status.OK).sum(axis=1)
        return [self.query(i) for i in [i for i in ids[:with_value] if n_ok[i] >= min_n][: max(k, 0)]]

    def iso_classes(self, min_n: int = 1) -> list[summary.IsoClass]:
        """The ranking by iso class: each class's cells (renumberings of one function) pooled as replicates, best
        first, with n (ok runs) beside every mean; classes with fewer than ``min_n`` runs last, unranked.

        Raises:
            KeyError: the table has no standalone part.
        """
        if self.table.standalone is None:
            raise PartNotFoundError("this table has no standalone part")
        return summary.iso_classes(self.table, min_n)

    def to_dataframe(self):
        """One row per architecture (standalone aggregates, WS final valid/rank per seed); needs pandas.

        Raises:
            ImportError: pandas is not installed.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe needs pandas: pip install pandas") from None
        rows = []
        for rec in self:
            row = {"id": rec.id, "genotype": rec.genotype, "hash": rec.hash, "iso_hash": rec.iso_hash}
            if rec.standalone is not None:
                s = rec.standalone
                row.update(status=s.status, n_seeds=s.n_seeds, valid_ppl=s.valid_ppl, valid_ppl_std=s.valid_ppl_std,
                           test_ppl=s.test_ppl, test_ppl_std=s.test_ppl_std, rank=s.rank)
            for w in rec.ws:
                row[f"ws{w.seed}_valid_ppl"], row[f"ws{w.seed}_rank"] = w.final_valid_ppl, w.rank
            rows.append(row)
        return pd.DataFrame(rows).set_index("id")


def load(path: str | os.PathLike, verify: bool = True) -> Benchmark:
    """Open one table. When a ``MANIFEST`` beside it lists the file, its sha256 is checked first.

    Raises:
        TableError: the file is not a readable table, or its sha256 differs from the MANIFEST beside it.
    """
    path = Path(path)
    if verify and path.is_file():
        expected = read_manifest(path.parent).get(path.name)
        actual = sha256_file(path) if expected is not None else None
        if actual != expected:
            raise TableError(f"{path}: sha256 {actual} does not match MANIFEST ({expected}); the file is "
                             "corrupted or was rebuilt without updating the MANIFEST")
    return Benchmark(schema.read(path), path)


@lru_cache(maxsize=None)
def _default(space_name: str) -> Benchmark:
    tables = default_tables()
    if space_name not in tables:
        raise TableError(f"no default table for space {space_name} (have: {', '.join(sorted(tables)) or 'none'})")
    return load(tables[space_name])


@lru_cache(maxsize=None)
def defaults() -> Tables:
    """The default tables (one per space, loaded on first use)."""
    return Tables({name: (lambda name=name: _default(name)) for name in default_tables()})


def query(key: GenotypeLike | int, space: str | None = None, seed: int | None = None,
          epoch: float | None = None) -> ArchRecord:
    """Look an architecture up in the default table of its space (inferred from the genotype; required for ids;
    a hash is looked up in every default table); ``epoch``: as the table stood after that many epochs."""
    return defaults().query(key, space, seed, epoch=epoch)


def spaces(names: Sequence[str] | None = None) -> list[Benchmark]:
    """The default benchmarks (all spaces, or the named ones)."""
    return [_default(n) for n in (names or sorted(default_tables()))]
