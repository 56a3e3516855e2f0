"""Zero-cost proxies (#28): scores of each architecture at initialisation, without training.

Every proxy is computed on the preset's own model (its hidden size, initialisation and batch) at the exact
initial weights of the table's standalone seed ``s`` (:func:`builder.engine.init_params` seeded with ``s``, as a
standalone run is), on the first training mini-batch a run sees (``batch_size`` columns × ``bptt`` tokens of the
training split, zero initial hidden state, no dropout). Architectures and seeds are slots of one batched model,
so each proxy of a slot is computed from that slot's own loss; slots never mix.

Definitions, each from its paper (``θ``: the weight matrices — the tied embedding/decoder ``E``, ``W0`` and each
node's ``W_k``; biases excluded, as the reference implementations take layer weights only; ``L``: the mean
cross-entropy of the mini-batch):

- ``grad_norm`` = Σ_layers ‖∂L/∂W‖₂ (Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight NAS", §3).
- ``snip`` = Σ |θ ⊙ ∂L/∂θ| (Lee et al. 2019, "SNIP", connection sensitivity; summed as Abdelfattah et al.).
- ``grasp`` = −Σ θ ⊙ (H g), g = ∂L/∂θ, H the Hessian of L (Wang et al. 2020, "GraSP"; the sign as Abdelfattah et
  al. score it, higher is better).
- ``fisher`` = Σ_channels ½ · mean_b (Σ_t a · ∂L/∂a)² (Theis et al. 2018, "Faster gaze prediction with dense
  networks and Fisher pruning"; Turner et al. 2020). The channels here are the cell's: every node state ``s_k``
  (k = 0..n) per hidden unit, summed over time as a convolution's activations are over space.
- ``synflow`` = Σ θ ⊙ ∂R/∂θ with θ → |θ| in float64 and R the sum of the model's output on an all-ones input
  (Tanaka et al. 2020, "Pruning neural networks without any data by iteratively conserving synaptic flow"). A
  language model's input is a token, so the all-ones vector replaces the embedded token at each of ``bptt`` steps
  (one sequence); R sums the decoder's logits over the steps.
- ``jacob_cov`` = −Σ_i [log(λ_i + k) + 1/(λ_i + k)], k = 1e-5, λ the eigenvalues of the correlation matrix of the
  per-sequence Jacobians ∂(Σ outputs)/∂(embedded inputs) over the batch (Mellor et al. 2021, "Neural Architecture
  Search without Training", v1; the RNN's outputs h_t as Serianni & Kalita 2023 take them).
- ``hidden_cov`` = the same score of the correlation matrix between hidden units of the hidden states h_1..h_T
  over the batch and the steps (Serianni & Kalita 2023, "Training-free Neural Architecture Search for RNNs and
  Transformers", the hidden covariance proxy for RNNs).
- ``params``: the parameter count (a constant in the DARTS cell space: every cell has ``W0`` and n node matrices).

The correlation matrices are symmetric, so their eigenvalues come from ``eigvalsh`` (real; rounding below zero
clipped to 0). A score that is not finite is stored as NaN.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nasbench_ptb import schema
from nasbench_ptb.space import Genotype, SearchSpace

from .cell import cell_step
from .engine import SlotGenotypes, count_params, decode_loss, init_params
from .parts import BuildError  # noqa: F401 (add_to_table raises it; the CLI catches proxies.BuildError)
from .presets import Preset
from .trainer import batchify

EPS = 1e-5  # the k of Mellor et al.'s score
WEIGHTS = ("encoder", "W0", "Ws")  # the layer weights; the decoder bias is not one


def names() -> tuple[str, ...]:
    """The proxies computed per architecture and seed, as the table declares them (``/proxies`` ``[N, S]``)."""
    return schema.columns("proxies", "NS")


def first_batch(corpus, p: Preset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first training mini-batch a standalone run sees: tokens and targets ``[bptt, batch_size]``."""
    train = batchify(corpus.train[: p.train_tokens], p.batch_size, device)
    return train[: p.bptt], train[1 : p.bptt + 1]


def _unroll(params: dict, geno: SlotGenotypes, emb: torch.Tensor, taps: list | None = None) -> torch.Tensor:
    """Outputs ``[A, T, B, H]`` of every slot's cell over embedded inputs ``emb [A, T, B, E]`` from h = 0."""
    A, T, B, _ = emb.shape
    h = emb.new_zeros(A, B, params["W0"].shape[2] // 2)
    outs = []
    for t in range(T):
        h = cell_step(emb[:, t], h, params["W0"], params["Ws"], geno.preds, geno.ops, None, None, geno.uniform, taps)
        outs.append(h)
    return torch.stack(outs, dim=1)


def _loss(params: dict, geno: SlotGenotypes, tokens: torch.Tensor, targets: torch.Tensor,
          taps: list | None = None, twice: bool = False) -> torch.Tensor:
    """Mean cross-entropy per slot ``[A]``: the training decoder (:func:`builder.engine.decode_loss`, fused on
    CPU) for float32 weights; plain logits otherwise, or with ``twice`` (twice differentiable, as GraSP needs)."""
    out = _unroll(params, geno, params["encoder"][:, tokens], taps)
    if not twice and out.dtype == torch.float32:
        return decode_loss(params, out, targets)
    A, T, B, H = out.shape
    logits = torch.baddbmm(params["bias"].unsqueeze(1), out.reshape(A, T * B, H), params["encoder"].transpose(1, 2))
    ce = F.cross_entropy(logits.reshape(A * T * B, -1), targets.reshape(-1).repeat(A), reduction="none")
    return ce.view(A, T * B).mean(dim=1)


def _per_slot(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ over every element but the slot axis, summed over the tensors: ``[A]``."""
    return sum(t.flatten(1).sum(1) for t in tensors)


def grad_norm(params, geno, tokens, targets) -> torch.Tensor:
    """Σ over layers of the L2 norm of the loss gradient (Abdelfattah et al. 2021)."""
    g_enc, g_w0, g_ws = torch.autograd.grad(_loss(params, geno, tokens, targets).sum(), [params[k] for k in WEIGHTS])
    layers = [g_enc, g_w0, *g_ws.unbind(1)]  # each node's W_k is a layer of its own
    return sum(g.flatten(1).norm(dim=1) for g in layers)


def snip(params, geno, tokens, targets) -> torch.Tensor:
    """Σ |θ ⊙ ∂L/∂θ| (Lee et al. 2019)."""
    weights = [params[k] for k in WEIGHTS]
    grads = torch.autograd.grad(_loss(params, geno, tokens, targets).sum(), weights)
    return _per_slot([(w * g).abs() for w, g in zip(weights, grads)])


def grasp(params, geno, tokens, targets, piece: int = 192) -> torch.Tensor:
    """−Σ θ ⊙ (H g), the Hessian-gradient product by double back-propagation (Wang et al. 2020).

    L is a sum over tokens, so H g is the sum of each token piece's Hessian times g: the logits are formed
    ``piece`` tokens at a time (small tensors: the full ``[A, T·B, V]`` twice-differentiable graph spent most of
    its time faulting in fresh pages)."""
    weights = [params[k] for k in WEIGHTS]
    g = torch.autograd.grad(_loss(params, geno, tokens, targets).sum(), weights)  # first order: the fast decoder
    out = _unroll(params, geno, params["encoder"][:, tokens])
    A, T, B, H = out.shape
    flat, tgt = out.reshape(A, T * B, H), targets.reshape(-1)
    hg = [torch.zeros_like(w) for w in weights]
    for s in range(0, T * B, piece):
        e = min(s + piece, T * B)
        logits = torch.baddbmm(params["bias"].unsqueeze(1), flat[:, s:e], params["encoder"].transpose(1, 2))
        ce = F.cross_entropy(logits.reshape(A * (e - s), -1), tgt[s:e].repeat(A), reduction="sum") / (T * B)
        grads = torch.autograd.grad(ce, weights, create_graph=True)
        z = sum((gr * gi).sum() for gr, gi in zip(grads, g))  # slots are independent: ∂z/∂θ_a = H_a g_a
        for acc, h in zip(hg, torch.autograd.grad(z, weights, retain_graph=True)):
            acc += h
    return -_per_slot([w.detach() * h for w, h in zip(weights, hg)])


def fisher(params, geno, tokens, targets) -> torch.Tensor:
    """Σ over node-state channels of ½ mean_b (Σ_t s · ∂L/∂s)² (Theis et al. 2018)."""
    taps: list[list[torch.Tensor]] = []
    loss = _loss(params, geno, tokens, targets, taps)
    states = [s for step in taps for s in step]  # T × (n + 1) tensors [A, B, H]
    grads = torch.autograd.grad(loss.sum(), states)
    nodes = len(taps[0])
    total = 0.0
    for k in range(nodes):  # a node's channel: one hidden unit of s_k, summed over the steps
        act_grad = sum(states[t * nodes + k] * grads[t * nodes + k] for t in range(len(taps)))  # [A, B, H]
        total = total + 0.5 * act_grad.pow(2).mean(dim=1).sum(dim=1)
    return total


def synflow(params, geno, tokens, targets) -> torch.Tensor:
    """Σ θ ⊙ ∂R/∂θ at θ → |θ| (float64), R the summed logits of an all-ones input (Tanaka et al. 2020)."""
    pos = {k: v.detach().abs().double().requires_grad_(True) for k, v in params.items()}
    A, T = pos["W0"].shape[0], tokens.shape[0]
    ones = torch.ones(A, T, 1, pos["encoder"].shape[2], dtype=torch.float64, device=tokens.device)
    out = _unroll(pos, geno, ones)  # [A, T, 1, H]
    # R = Σ_t Σ_v (|E| h_t + |b|)_v = Σ_t h_t · Σ_v |E_v| + T Σ_v |b_v|: the logits need not be formed
    r = (out.reshape(A, T, -1) * pos["encoder"].sum(dim=1, keepdim=True)).sum() + T * pos["bias"].sum()
    weights = [pos[k] for k in WEIGHTS]
    grads = torch.autograd.grad(r, weights)
    return _per_slot([w * g for w, g in zip(weights, grads)])


def correlation_score(rows: np.ndarray) -> float:
    """Mellor et al.'s −Σ [log(λ + k) + 1/(λ + k)] over the eigenvalues of the rows' correlation matrix."""
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(rows)
    if not np.isfinite(corr).all():
        return float("nan")  # a constant row (a dead unit or sequence) has no correlation
    lam = np.clip(np.linalg.eigvalsh(corr), 0.0, None)
    return float(-np.sum(np.log(lam + EPS) + 1.0 / (lam + EPS)))


def jacob_cov(params, geno, tokens, targets) -> torch.Tensor:
    """Score of the per-sequence input Jacobians' correlations (Mellor et al. 2021)."""
    emb = params["encoder"].detach()[:, tokens].requires_grad_(True)  # [A, T, B, E]
    (jac,) = torch.autograd.grad(_unroll(params, geno, emb).sum(), emb)
    A, T, B, E = jac.shape
    rows = jac.permute(0, 2, 1, 3).reshape(A, B, T * E).double().cpu().numpy()
    return torch.tensor([correlation_score(r) for r in rows], dtype=torch.float64)


@torch.no_grad()
def hidden_cov(params, geno, tokens, targets) -> torch.Tensor:
    """Score of the correlations between hidden units over the batch's hidden states (Serianni & Kalita 2023)."""
    out = _unroll(params, geno, params["encoder"][:, tokens])  # [A, T, B, H]
    A, T, B, H = out.shape
    rows = out.reshape(A, T * B, H).transpose(1, 2).double().cpu().numpy()
    return torch.tensor([correlation_score(r) for r in rows], dtype=torch.float64)


FUNCTIONS: dict[str, Callable] = {"grad_norm": grad_norm, "snip": snip, "grasp": grasp, "fisher": fisher,
                                  "synflow": synflow, "jacob_cov": jacob_cov, "hidden_cov": hidden_cov}


def score_slots(genotypes: Sequence[Genotype], seeds: Sequence[int], p: Preset, ntokens: int, tokens: torch.Tensor,
                targets: torch.Tensor, device: torch.device, seconds: dict[str, float] | None = None) -> dict:
    """Every proxy of slot ``a`` = (``genotypes[a]``, initial weights of seed ``seeds[a]``): name → ``[A]``
    float64 (NaN where not finite). ``seconds`` (if given) accumulates each proxy's wall-clock time."""
    geno = SlotGenotypes.of(genotypes, device)
    out = {}
    for name in names():
        params = init_params(seeds, ntokens, p.hidden, genotypes[0].n, device)
        t0 = time.perf_counter()
        value = FUNCTIONS[name](params, geno, tokens, targets).detach().double().cpu().numpy()
        if seconds is not None:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
        out[name] = np.where(np.isfinite(value), value, np.nan)
    return out


def compute(sp: SearchSpace, p: Preset, corpus, seeds: Sequence[int], device: torch.device | str = "cpu",
            chunk: int = 4, on_chunk: Callable[[int, int], None] | None = None) -> tuple[schema.Proxies, dict]:
    """Every proxy of every architecture of ``sp`` at each seed: the table's ``/proxies`` group and the seconds
    each proxy took (summed over the chunks of ``chunk`` slots). ``on_chunk(done, total)`` reports progress."""
    if not seeds:
        raise ValueError("proxies need at least one seed")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 slot, not {chunk}")
    device = torch.device(device)
    tokens, targets = first_batch(corpus, p, device)
    slots = [(a, k) for k in range(len(seeds)) for a in range(sp.size)]
    group = schema.Proxies.empty(sp.size, list(seeds),
                                 params=np.full(sp.size, count_params(corpus.ntokens, p.hidden, sp.n)))
    seconds: dict[str, float] = {}
    for start in range(0, len(slots), chunk):
        part = slots[start : start + chunk]
        values = score_slots([sp.from_id(a) for a, _ in part], [seeds[k] for _, k in part], p, corpus.ntokens,
                             tokens, targets, device, seconds)
        for name, v in values.items():
            column = getattr(group, name)
            for j, (a, k) in enumerate(part):
                column[a, k] = v[j]
        if on_chunk is not None:
            on_chunk(start + len(part), len(slots))
    return group, seconds


MODEL_FIELDS = ("hidden", "batch_size", "bptt", "train_tokens")  # what a proxy's model and mini-batch depend on


def same_model(a: dict, b: dict) -> bool:
    """Whether two tables' configs give the proxies the same model and mini-batch (so one's proxies hold for
    the other: a reassembled build keeps them)."""
    return all(a.get(k) == b.get(k) for k in MODEL_FIELDS)


def with_proxies(table: schema.Table, p: Preset, corpus, seeds: Sequence[int], device: torch.device | str = "cpu",
                 chunk: int = 4, on_chunk: Callable[[int, int], None] | None = None) -> schema.Table:
    """``table`` with its ``/proxies`` group (re)computed at ``seeds`` on the model of preset ``p`` (the
    table's own), and the attribute ``proxies`` saying how: the model fields, the batch, seconds per proxy."""
    from .build import device_name, software  # here: build imports this module

    t0 = time.perf_counter()
    group, seconds = compute(table.space, p, corpus, seeds, device, chunk, on_chunk)
    how = {**{k: getattr(p, k) for k in MODEL_FIELDS}, "batch": "first training mini-batch, zero hidden state, "
           "no dropout", "seconds": {k: round(v, 3) for k, v in seconds.items()},
           "total_seconds": round(time.perf_counter() - t0, 3), "device": device_name(torch.device(device)),
           "software": software()}
    return dataclasses.replace(table, proxies=group, attrs={**table.attrs, "proxies": how})


def add_to_table(path, seeds: Sequence[int], device: str = "auto", data_dir: str | None = None, chunk: int = 4,
                 force: bool = False, on_chunk: Callable[[int, int], None] | None = None) -> tuple[schema.Table, bool]:
    """Compute the proxies of the table at ``path`` on its own preset's model and rewrite it with them (atomically;
    a ``MANIFEST`` beside it is updated). Returns the table and whether anything was computed: a table that
    already holds proxies at exactly these seeds is left alone unless ``force``.

    Raises:
        nasbench_ptb.schema.TableError: ``path`` is not a readable table.
        BuildError: its configuration is not a preset of this version, or the device is unavailable.
        builder.data.DataError: PTB missing or failing its checksum.
    """
    from nasbench_ptb.files import refresh_manifest

    from . import data
    from .executors import resolve_device
    from .verify import table_preset

    table = schema.read(path)
    if table.proxies is not None and not force and [int(s) for s in table.proxies.seeds] == list(seeds):
        return table, False
    p = table_preset(table)
    dev = resolve_device(device)
    new = with_proxies(table, p, data.load(data_dir), seeds, dev, chunk, on_chunk)
    schema.write(new, path)
    refresh_manifest(path)
    return new, True
