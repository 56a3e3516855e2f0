"""Query results: frozen dataclasses, built from a table's arrays (NaN where a value does not exist). The per-run
records (:data:`Curve`, :data:`SeedResult`, :data:`WsSeedResult`) take their fields from the table layout
(``schema.py``), so a dataset added there reaches the query, the CLI's JSON and the HTTP API unedited.

``to_dict()`` gives JSON-ready dicts (NaN → None) for the CLI and the HTTP API.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, make_dataclass
from typing import Optional

from . import schema


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class _Record:
    def to_dict(self, curves: bool = True) -> dict:
        out = dataclasses.asdict(self)
        if not curves:
            out = _drop_curves(out)
        return _clean(out)


def _drop_curves(d):
    if isinstance(d, dict):
        return {k: _drop_curves(v) for k, v in d.items() if k != "curve"}
    if isinstance(d, (list, tuple)):
        return [_drop_curves(v) for v in d]
    return d


def _per_run(part: str, dims: str, many: bool) -> list[tuple[str, type]]:
    """Record fields for the table's datasets of these dimensions (:func:`nasbench_ptb.schema.columns`): one
    value per checkpoint (``many``) or one per run; a new dataset in the layout appears here by itself."""
    layout = schema.layout(part)
    return [(name, tuple[float, ...] if many else (int if layout[name][1] else float))
            for name in schema.columns(part, dims)]


def run_values(part: str, dims: str) -> dict[str, type]:
    """The one-value-per-run datasets of these dimensions, status aside (a record reports it as a word), each with
    the type a record reports it as: what :data:`SeedResult` / :data:`WsSeedResult` carry and ``api`` fills."""
    return {name: tp for name, tp in _per_run(part, dims, many=False) if name != "status"}


def _derived(name: str, doc: str, fields: list) -> type:
    cls = make_dataclass(name, fields, bases=(_Record,), frozen=True)
    cls.__doc__, cls.__module__ = doc, __name__
    return cls


Curve = _derived("Curve", "One standalone run's learning curve: every [N, S, C] dataset of the table's /standalone, "
                 "one value per checkpoint (``seconds``: cumulative wall-clock).",
                 [("epochs", tuple[float, ...]), *_per_run("standalone", "NSC", many=True)])

SeedResult = _derived(
    "SeedResult", "One standalone run (architecture, seed): its status, the final validation ppl (NaN unless ok), "
    "every per-run [N, S] dataset (``test_ppl`` at the best-validation checkpoint, ``best_epoch``; NaN unless ok) and "
    "its curve (None when curves were not asked for).",
    [("seed", int), ("status", str), ("final_valid_ppl", float),
     *run_values("standalone", "NS").items(),
     ("curve", Optional[Curve], dataclasses.field(default=None))])

WsSeedResult = _derived(
    "WsSeedResult", "One architecture under one weight-sharing super-net: the super-net's status, every [S, C, N] "
    "dataset per checkpoint (``valid_ppl`` under the shared weights), the final validation ppl, every [S, N] "
    "dataset (``test_ppl``, ``samples``: mini-batches it was drawn for) and its rank under this super-net (1 = best "
    "final validation ppl).",
    [("seed", int), ("status", str), ("epochs", tuple[float, ...]), *_per_run("ws", "SCN", many=True),
     ("final_valid_ppl", float), *run_values("ws", "SN").items(), ("rank", Optional[int])])


@dataclass(frozen=True)
class Standalone(_Record):
    """Standalone training of one architecture, aggregated over its ok seeds (never imputed)."""

    status: str  # ok when at least one seed is ok, else diverged (any diverged) or missing
    n_seeds: int  # seeds aggregated (ok)
    valid_ppl: float  # mean final validation ppl over ok seeds
    valid_ppl_std: float  # sample std (ddof 1) over ok seeds; NaN (null) for one seed: n_seeds says how many
    test_ppl: float
    test_ppl_std: float
    rank: int | None  # 1 = best mean final validation ppl over all seeds (with a seed: among that seed's runs);
    # diverged last; None if never trained (with a seed: if that seed never trained it)
    missing_seeds: tuple[int, ...]
    diverged_seeds: tuple[int, ...]
    seeds: tuple[SeedResult, ...]


@dataclass(frozen=True)
class ProxyScore(_Record):
    """One zero-cost proxy of one architecture at initialisation (``/proxies``; higher predicts better, as its
    paper scores it): its value at each proxy seed, their mean over the finite ones (``n`` of them) and the
    architecture's rank under that mean (1 = highest; None where undefined; ties share the best rank)."""

    name: str
    mean: float
    n: int
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    rank: int | None


@dataclass(frozen=True)
class ArchRecord(_Record):
    """Everything a table holds on one architecture: its identity, its standalone training (None where the table
    has no standalone part) and its evaluation under each weight-sharing super-net."""

    genotype: str
    id: int
    hash: str
    iso_hash: str
    space: str
    params: int
    standalone: Standalone | None
    ws: tuple[WsSeedResult, ...]  # under each super-net that shared weights among the whole space
    ws_subspace: tuple[WsSeedResult, ...] = ()  # under each super-net of the table's subspace, if a member
    proxies: tuple[ProxyScore, ...] = ()  # each zero-cost proxy, where the table has /proxies
