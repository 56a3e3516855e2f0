"""Response models of the HTTP API (they make /docs complete). Floats that do not exist (NaN) are null."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel


class CurveModel(BaseModel):
    epochs: list[Optional[float]]
    train_loss: list[Optional[float]]
    valid_ppl: list[Optional[float]]
    seconds: list[Optional[float]]


class SeedResultModel(BaseModel):
    seed: int
    status: str
    final_valid_ppl: Optional[float]
    test_ppl: Optional[float]
    best_epoch: Optional[float]
    curve: Optional[CurveModel] = None


class StandaloneModel(BaseModel):
    status: str
    n_seeds: int
    valid_ppl: Optional[float]
    valid_ppl_std: Optional[float]
    test_ppl: Optional[float]
    test_ppl_std: Optional[float]
    rank: Optional[int]
    missing_seeds: list[int]
    diverged_seeds: list[int]
    seeds: list[SeedResultModel]


class WsSeedModel(BaseModel):
    seed: int
    status: str
    epochs: list[Optional[float]]
    valid_ppl: list[Optional[float]]
    final_valid_ppl: Optional[float]
    test_ppl: Optional[float]
    rank: Optional[int]
    samples: int


class ArchModel(BaseModel):
    genotype: str
    id: int
    hash: str
    iso_hash: str
    space: str
    params: int
    standalone: Optional[StandaloneModel]
    ws: list[WsSeedModel]
    ws_subspace: list[WsSeedModel] = []  # super-nets that shared weights among a subspace only (if a member)


class LeaderboardRow(BaseModel):
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


class Leaderboard(BaseModel):
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
    space: str
    size: int
    preset: str
    config: dict
    coverage: dict
    ws_seeds: list[int]
    device: Optional[list[str]] = None
    software: Optional[dict] = None
    timings: Optional[dict] = None
    created: Optional[str] = None


class Health(BaseModel):
    status: str
    tables: int


class ErrorModel(BaseModel):
    detail: str
