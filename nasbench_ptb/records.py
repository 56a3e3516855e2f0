"""Query results: frozen dataclasses, built from a table's arrays (NaN where a value does not exist).

``to_dict()`` gives JSON-ready dicts (NaN → None) for the CLI and the HTTP API.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


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


@dataclass(frozen=True)
class Curve(_Record):
    """One standalone run's learning curve, one value per checkpoint."""

    epochs: tuple[float, ...]
    train_loss: tuple[float, ...]
    valid_ppl: tuple[float, ...]
    seconds: tuple[float, ...]  # cumulative wall-clock


@dataclass(frozen=True)
class SeedResult(_Record):
    """One standalone run (architecture, seed)."""

    seed: int
    status: str  # ok | missing | diverged
    final_valid_ppl: float  # at the last checkpoint; NaN unless ok
    test_ppl: float  # at the best-validation checkpoint; NaN unless ok
    best_epoch: float
    curve: Curve | None


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
class WsSeedResult(_Record):
    """One architecture under one weight-sharing super-net."""

    seed: int
    status: str  # of the super-net
    epochs: tuple[float, ...]
    valid_ppl: tuple[float, ...]  # per checkpoint, under the shared weights
    final_valid_ppl: float
    test_ppl: float
    rank: int | None  # 1 = best final validation ppl under this super-net
    samples: int  # mini-batches this architecture was drawn for


@dataclass(frozen=True)
class ArchRecord(_Record):
    genotype: str
    id: int
    hash: str
    iso_hash: str
    space: str
    params: int
    standalone: Standalone | None
    ws: tuple[WsSeedResult, ...]  # under each super-net that shared weights among the whole space
    ws_subspace: tuple[WsSeedResult, ...] = ()  # under each super-net of the table's subspace, if a member
