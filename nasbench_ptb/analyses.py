"""Analyses of the search phase (Sciuto et al.): how weight sharing ranks architectures against standalone
training, how stable rankings are over training and seeds. numpy + scipy; each returns plain numbers/arrays.

Conventions: lower perplexity is better; NaN (diverged) ranks last, tied; architectures never trained
standalone are left out of every comparison with the standalone ranking.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau, spearmanr

from .schema import Status, Table
from .stats import attempted, final_valid, mean_over_ok, ranks, sample_std, standalone_final, worst_last


def tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall tau-b over per-architecture values (ties handled by tau-b; NaN → last)."""
    return float(kendalltau(worst_last(a), worst_last(b), variant="b").statistic)


def legacy_id_sequence_tau(a: np.ndarray, b: np.ndarray) -> float:
    """For reproduction only: tau between the *id sequences* sorted by each ranking (as the paper's code did),
    not between per-architecture values; it is not the standard rank correlation."""
    return float(kendalltau(np.argsort(worst_last(a), kind="stable"), np.argsort(worst_last(b), kind="stable")).statistic)


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Fraction of the k best under ``a`` that are among the k best under ``b``."""
    top_a = set(np.argsort(worst_last(a), kind="stable")[:k].tolist())
    top_b = set(np.argsort(worst_last(b), kind="stable")[:k].tolist())
    return len(top_a & top_b) / k


@dataclass(frozen=True)
class TauOverTraining:
    """Kendall tau-b (and Spearman) of each super-net's ranking at each of its checkpoints against the final
    standalone ranking."""
    epochs: np.ndarray  # [Cw] WS checkpoints
    tau: np.ndarray  # [Sw, Cw] tau-b of each WS seed against the final standalone ranking
    spearman: np.ndarray  # [Sw, Cw]

    @property
    def best(self) -> np.ndarray:
        """Per checkpoint, the best tau-b over the super-nets."""
        return np.nanmax(self.tau, axis=0)

    @property
    def mean(self) -> np.ndarray:
        """Per checkpoint, the mean tau-b over the super-nets."""
        return np.nanmean(self.tau, axis=0)

    @property
    def worst(self) -> np.ndarray:
        """Per checkpoint, the worst tau-b over the super-nets."""
        return np.nanmin(self.tau, axis=0)


def ws_tau_over_training(table: Table) -> TauOverTraining:
    """Fig. 4b: tau-b (and Spearman) between each WS seed's ranking at each WS checkpoint and the standalone
    ranking; best / mean / worst over seeds via the properties."""
    ws, mask = table.ws, attempted(table)
    ref = standalone_final(table)[mask]
    S, C = ws.valid_ppl.shape[:2]
    tau, rho = np.full((S, C), np.nan), np.full((S, C), np.nan)
    for s in range(S):
        if ws.status[s] != Status.OK:
            continue
        for c in range(C):
            v = ws.valid_ppl[s, c][mask]
            tau[s, c] = tau_b(v, ref)
            rho[s, c] = float(spearmanr(worst_last(v), worst_last(ref)).statistic)
    return TauOverTraining(ws.epochs, tau, rho)


def rank_disorder(table: Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fig. 4a/4c: for every trained architecture its standalone rank and its rank under each WS seed's final
    weights (among the trained architectures). Returns (ids, standalone ranks [n], WS ranks [Sw, n]); a diverged
    super-net has no final ranking: its row is NaN."""
    mask = attempted(table)
    ids = np.flatnonzero(mask)
    sa_rank = ranks(standalone_final(table)[mask])
    ws_rank = np.stack([ranks(table.ws.valid_ppl[s, -1][mask]) if table.ws.status[s] == Status.OK
                        else np.full(len(ids), np.nan) for s in range(len(table.ws.seeds))])
    return ids, sa_rank, ws_rank


def standalone_rank_changes(table: Table) -> np.ndarray:
    """Fig. 8: tau-b between the standalone ranking at each checkpoint and the final one, ``[C]``."""
    sa, mask = table.standalone, attempted(table)
    final = standalone_final(table)[mask]
    out = []
    for c in range(len(sa.epochs)):
        at_c = mean_over_ok(sa.valid_ppl[:, :, c], sa.status)[mask]
        out.append(tau_b(at_c, final))
    return np.array(out)


def seed_pair_taus(table: Table, ids: np.ndarray | None = None) -> dict[str, tuple[float, int]]:
    """For each pair of standalone seeds ``"i-j"``: (tau-b between their rankings, architectures compared), over
    the architectures (of ``ids``, default all) where both seeds were attempted — a seed trained on a sample only
    is compared on that sample, never against "missing" ranked last."""
    sa = table.standalone
    ids = np.arange(table.space.size) if ids is None else np.asarray(ids)
    fv, tried = final_valid(table)[ids], (sa.status != Status.MISSING)[ids]
    out = {}
    for i in range(fv.shape[1]):
        for j in range(i + 1, fv.shape[1]):
            both = tried[:, i] & tried[:, j]
            tau = tau_b(fv[both, i], fv[both, j]) if both.sum() >= 2 else float("nan")
            out[f"{int(sa.seeds[i])}-{int(sa.seeds[j])}"] = (tau, int(both.sum()))
    return out


def seed_agreement(table: Table) -> dict:
    """Seed variance per architecture and the tau-b between the rankings of each pair of standalone seeds (over
    the architectures both seeds were attempted on)."""
    mask = attempted(table)
    fv = final_valid(table)[mask]
    finite = np.isfinite(fv)
    std = np.array([sample_std(row[ok]) for row, ok in zip(fv, finite)])  # ddof 1 over the ok seeds; NaN for one
    pairs = {key: tau for key, (tau, _) in seed_pair_taus(table).items()}
    ws_pairs = {}
    ws = table.ws
    if ws is not None:
        for i in range(len(ws.seeds)):
            for j in range(i + 1, len(ws.seeds)):
                ws_pairs[f"{int(ws.seeds[i])}-{int(ws.seeds[j])}"] = tau_b(ws.valid_ppl[i, -1], ws.valid_ppl[j, -1])
    return {"ids": np.flatnonzero(mask), "std": std, "standalone_seed_tau": pairs, "ws_seed_tau": ws_pairs}


def iso_twins(table: Table) -> list[tuple[int, int, float, float]]:
    """Pairs of trained architectures that are the same cell up to renumbering, with their standalone values:
    (id_a, id_b, ppl_a, ppl_b). Their difference measures noise, not architecture."""
    mask = attempted(table)
    values = standalone_final(table)
    groups: dict[str, list[int]] = {}
    for g in table.space:
        if mask[g.id]:
            groups.setdefault(g.iso_hash, []).append(g.id)
    return [(a, b, float(values[a]), float(values[b]))
            for members in groups.values() for i, a in enumerate(members) for b in members[i + 1:]]


@dataclass(frozen=True)
class SharingAmount:
    """Fig. 6: the tau-b of WS against standalone on a subspace, per WS seed, with the weights shared among the
    whole space and with them shared among the subspace only (NaN where that super-net is absent or not ok)."""

    ids: np.ndarray  # the subspace
    seeds: np.ndarray  # WS seeds, the union of both experiments
    whole: np.ndarray  # [len(seeds)] tau-b on the subspace under whole-space sharing
    subspace: np.ndarray  # [len(seeds)] tau-b on the subspace under subspace-only sharing
    subspace_over_training: np.ndarray  # [len(seeds), Cw] the latter at each checkpoint


def _subspace_taus(ws, ids: np.ndarray, ref: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    final, over = np.full(len(seeds), np.nan), np.full((len(seeds), 0 if ws is None else len(ws.epochs)), np.nan)
    if ws is None:
        return final, over
    for k, seed in enumerate(ws.seeds):
        if ws.status[k] == Status.OK and seed in seeds:
            row = int(np.flatnonzero(seeds == seed)[0])
            over[row] = [tau_b(ws.valid_ppl[k, c][ids], ref) for c in range(len(ws.epochs))]
            final[row] = over[row, -1]
    return final, over


def sharing_amount(table: Table, ids: np.ndarray | None = None) -> SharingAmount:
    """Fig. 6 on ``ids`` (default: the subspace of the table's ``/ws_subspace``) against the mean standalone
    final validation ppl there."""
    sub = table.ws_subspace
    if ids is None:
        if sub is None:
            raise ValueError("this table has no super-nets over a subspace (build --ws-archs)")
        ids = sub.archs
    ids = np.asarray(ids)
    ref = standalone_final(table)[ids]
    seeds = np.unique(np.concatenate([w.seeds for w in (table.ws, sub) if w is not None] or [np.zeros(0, int)]))
    whole, _ = _subspace_taus(table.ws, ids, ref, seeds)
    in_sub, over = _subspace_taus(sub if sub is not None and np.isin(ids, sub.archs).all() else None, ids, ref, seeds)
    return SharingAmount(ids, seeds, whole, in_sub, over)


@dataclass(frozen=True)
class EpochRow:
    """How the ranking at one standalone checkpoint (a fidelity) compares with the others; NaN where it cannot."""

    epoch: float
    tau_final: float  # tau-b of this checkpoint's ranking vs the final one (Fig. 8 at this epoch)
    tau_reference: float  # vs the final ranking of a reference table (e.g. the 1-epoch table); NaN without one
    seed_tau: float  # mean tau-b between the rankings of each pair of seeds at this checkpoint
    top5_overlap: float  # fraction of this checkpoint's top 5 among the final top 5
    tau_top_quarter: float  # tau-b vs the final ranking among the final best quarter (at least 2 cells)
    ws_tau: tuple[float, ...]  # per WS seed: its ranking at its last checkpoint by this epoch vs this checkpoint's


def by_epoch(table: Table, reference: Table | None = None) -> list[EpochRow]:
    """One :class:`EpochRow` per standalone checkpoint, each computed on the table as it stood then
    (:func:`nasbench_ptb.fidelity.at_epoch`); architectures never trained standalone are left out, and a
    reference table counts only the architectures trained in both."""
    from .fidelity import at_epoch

    mask = attempted(table)
    final = standalone_final(table)
    ref = None
    if reference is not None:
        if reference.space.name != table.space.name:
            raise ValueError(f"the reference table is of space {reference.space.name}, this one of {table.space.name}")
        ref_mask = mask & attempted(reference)
        ref = standalone_final(reference)
    order = np.argsort(worst_last(final[mask]), kind="stable")
    quarter = order[: max(int(mask.sum()) // 4, 2)]
    rows = []
    for e in table.standalone.epochs:
        view = at_epoch(table, float(e))
        now = standalone_final(view)
        pairs = [t for t, n in seed_pair_taus(view).values() if n >= 2 and np.isfinite(t)]
        ws = []
        if view.ws is not None:
            ws = [tau_b(view.ws.valid_ppl[s, -1][mask], now[mask]) if view.ws.status[s] == Status.OK
                  else float("nan") for s in range(len(view.ws.seeds))]
        rows.append(EpochRow(
            float(e), tau_b(now[mask], final[mask]),
            tau_b(now[ref_mask], ref[ref_mask]) if ref is not None and ref_mask.sum() >= 2 else float("nan"),
            float(np.mean(pairs)) if pairs else float("nan"),
            top_k_overlap(now[mask], final[mask], min(5, int(mask.sum()))),
            tau_b(now[mask][quarter], final[mask][quarter]), tuple(ws)))
    return rows
