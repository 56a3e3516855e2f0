"""Response models of the HTTP API (they make /docs complete). Floats that do not exist (NaN) are null.

The architecture record's models are derived from the query records (``nasbench_ptb.records``, whose per-run
fields come from the table layout); the views that exist only over HTTP (leaderboard, WS view, space) are
declared here.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Optional

from pydantic import BaseModel, create_model

from nasbench_ptb import records


def _http_type(tp):
    """A record field's type as the HTTP model states it: floats nullable (NaN is sent as null), tuples as lists,
    nested records as their models."""
    if tp is float:
        return Optional[float]
    if dataclasses.is_dataclass(tp):
        return _MODELS[tp]
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        return list[_http_type(args[0])]
    if type(None) in args:  # Optional[X] / X | None
        (inner,) = [a for a in args if a is not type(None)]
        return Optional[_http_type(inner)]
    return tp


def _model(record: type, name: str) -> type[BaseModel]:
    """The response model of one query record, field for field (its dataclass is the single declaration)."""
    hints = typing.get_type_hints(record)
    fields = {}
    for f in dataclasses.fields(record):
        default = f.default if f.default is not dataclasses.MISSING else ...
        fields[f.name] = (_http_type(hints[f.name]), list(default) if isinstance(default, tuple) else default)
    model = create_model(name, __doc__=record.__doc__, **fields)
    _MODELS[record] = model
    return model


_MODELS: dict[type, type[BaseModel]] = {}
CurveModel = _model(records.Curve, "CurveModel")
SeedResultModel = _model(records.SeedResult, "SeedResultModel")
StandaloneModel = _model(records.Standalone, "StandaloneModel")
WsSeedModel = _model(records.WsSeedResult, "WsSeedModel")
ProxyScoreModel = _model(records.ProxyScore, "ProxyScoreModel")
ArchModel = _model(records.ArchRecord, "ArchModel")


class LeaderboardRow(BaseModel):
    """One row of the leaderboard (``GET /archs``)."""
    rank: Optional[int]
    id: int
    genotype: str
    hash: str
    iso_hash: str
    status: str
    n_seeds: int
    valid_ppl: Optional[float]
    test_ppl: Optional[float]
    ws_valid_ppl: list[Optional[float]] = []  # final validation ppl under each super-net (WsView.seeds order)
    ws_rank: list[Optional[int]] = []  # its rank under each super-net
    proxy: Optional[float] = None  # sorted by a zero-cost proxy: its seed mean (higher predicts better)


class WsView(BaseModel):
    """Weight sharing against standalone training over one space: what the explorer's WS view plots."""

    space: str
    ids: list[int]  # architectures with a standalone value (the scatter's points)
    standalone_valid_ppl: list[Optional[float]]
    seeds: list[int]
    status: list[str]
    final_valid_ppl: list[list[Optional[float]]]  # [seed][point]
    tau_final: list[Optional[float]]  # Kendall tau-b per super-net at its last checkpoint
    epochs: list[float]
    tau_over_training: list[list[Optional[float]]]  # [seed][checkpoint]


class ProxyAgreement(BaseModel):
    """One zero-cost proxy against the standalone ranking (``nasbench_ptb.proxy_analyses.ProxyRow``)."""
    proxy: str
    tau_b: Optional[float]
    spearman: Optional[float]
    top_overlap: Optional[float]  # fraction of the proxy's top 10 % among the standalone top 10 %
    seed_tau: Optional[float]  # mean tau-b between pairs of proxy seeds
    n: int
    seconds: Optional[float]  # spent on this proxy over the whole table (every architecture × seed)


class ProxyView(BaseModel):
    """Zero-cost proxies against standalone training over one space: what the explorer's proxies view plots."""

    space: str
    ids: list[int]  # architectures with a standalone value (the scatter's points)
    standalone_valid_ppl: list[Optional[float]]
    seeds: list[int]  # proxy seeds
    proxies: dict[str, list[Optional[float]]]  # per proxy: its seed mean at each point (higher predicts better)
    agreement: list[ProxyAgreement]
    epochs: list[float]  # the standalone checkpoints
    tau_by_epoch: dict[str, list[Optional[float]]]  # per proxy: tau-b vs the standalone ranking at each checkpoint
    device: Optional[str] = None


class Leaderboard(BaseModel):
    """A page of the leaderboard: the sort, the filters, the total and the rows."""
    space: str
    sort: str
    order: str
    ws_seed: Optional[int] = None
    filters: dict = {}
    total: int
    limit: int
    offset: int
    items: list[LeaderboardRow]


class SpaceModel(BaseModel):
    """One loaded table (``GET /spaces``): its space, preset, every training value, coverage and provenance."""
    space: str
    size: int
    preset: str
    config: dict
    coverage: dict
    ws_seeds: list[int]
    proxy_seeds: list[int] = []  # seeds of the zero-cost proxies (none: the table has no /proxies)
    device: Optional[list[str]] = None
    software: Optional[dict] = None
    timings: Optional[dict] = None
    created: Optional[str] = None


class Health(BaseModel):
    """``GET /health``: the server answers and how many tables it holds."""
    status: str
    tables: int


class ErrorModel(BaseModel):
    """Every error: one line naming the problem."""
    detail: str
