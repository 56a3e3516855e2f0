"""The slot engine (ARCHITECTURE.md §4): ``A`` independent language models in one batched forward/backward.

Every parameter carries a leading slot axis; slot ``a`` has its own weights, genotype and random stream (its
initialisation and dropout masks come from generators seeded by its own seed only), so training slots together
gives the same numbers as training each alone. All slots read the same token stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from nasbench_ptb.space import Genotype

from .cell import cell_step, uniform_choices
from .decoder import tied_cross_entropy, token_nll

AMP_MODES = ("off", "bf16")
INIT_RANGE = 0.04  # cell weights, as in DARTS
EMB_INIT_RANGE = 0.1  # tied embedding/decoder, as in AWD-LSTM/DARTS


def set_threads(n: int) -> None:
    """torch's CPU threads for this process (``--threads``; see ``benchmarks/bench_threads.py`` for why 1)."""
    torch.set_num_threads(n)


@dataclass(frozen=True)
class Dropouts:
    """AWD-LSTM/DARTS dropout rates: output (locked), hidden (m_h), x (m_x), input (locked), embedding (words)."""

    output: float = 0.0
    hidden: float = 0.0
    x: float = 0.0
    input: float = 0.0
    embedding: float = 0.0


@dataclass(frozen=True)
class SlotGenotypes:
    """Per-slot genotypes as tensors: ``preds``/``ops`` of shape ``[A, n]``."""

    preds: torch.Tensor
    ops: torch.Tensor
    uniform: tuple

    @property
    def slots(self) -> int:
        """Architectures stepped together."""
        return self.preds.shape[0]

    def step(self, x: torch.Tensor, h: torch.Tensor, params: dict, m_x, m_h) -> torch.Tensor:
        """One time step of every slot's discrete cell (a search's relaxed cell offers the same method)."""
        return cell_step(x, h, params["W0"], params["Ws"], self.preds, self.ops, m_x, m_h, self.uniform)

    @classmethod
    def of(cls, genotypes: Sequence[Genotype], device: torch.device | str = "cpu") -> "SlotGenotypes":
        """The slots of these genotypes, one per slot, on ``device``."""
        if len({g.n for g in genotypes}) != 1:
            raise ValueError("all slots must have the same number of nodes")
        preds = torch.tensor([g.preds for g in genotypes], dtype=torch.long, device=device)
        ops = torch.tensor([g.ops for g in genotypes], dtype=torch.long, device=device)
        return cls(preds, ops, uniform_choices(preds, ops))


def autocast(device: torch.device, amp: str, cache: bool | None = None):
    """The mixed-precision context of a preset's ``amp``: bf16 matmuls, everything else as autocast decides
    (the cell's state update and the cross-entropy stay fp32 since they mix with fp32 tensors). ``cache=False``
    turns off the cache of bf16 weight copies, which a CUDA graph capture needs off (None: torch's setting)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16", cache_enabled=cache)


def init_params(seeds: Sequence[int], ntokens: int, hidden: int, nodes: int, device: torch.device | str) -> dict:
    """Stacked parameters, slot ``a`` drawn from a CPU generator seeded with ``seeds[a]`` (device-independent)."""
    enc, w0, ws = [], [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed))
        enc.append(torch.empty(ntokens, hidden).uniform_(-EMB_INIT_RANGE, EMB_INIT_RANGE, generator=g))
        w0.append(torch.empty(2 * hidden, 2 * hidden).uniform_(-INIT_RANGE, INIT_RANGE, generator=g))
        ws.append(torch.empty(nodes, hidden, 2 * hidden).uniform_(-INIT_RANGE, INIT_RANGE, generator=g))
    params = {
        "encoder": torch.stack(enc),
        "W0": torch.stack(w0),
        "Ws": torch.stack(ws),
        "bias": torch.zeros(len(seeds), ntokens),
    }
    return {k: v.to(device).requires_grad_(True) for k, v in params.items()}


def count_params(ntokens: int, hidden: int, nodes: int) -> int:
    """Parameters of one model (tied embedding/decoder counted once)."""
    return ntokens * hidden + ntokens + (2 * hidden) * (2 * hidden) + nodes * hidden * 2 * hidden


class MaskSampler:
    """Per-slot dropout masks, each slot's drawn from its own seed only (so grouping never changes them).

    ``generator``: one torch generator per slot (one launch per slot and mask; the CPU default, and what the
    shipped CPU tables used). ``counter``: a counter-based hash of (slot seed, draw, element) for all slots in
    one batched computation (the CUDA default: no per-slot launches). ``auto`` picks by device.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str, kind: str = "auto"):
        self.device = torch.device(device)
        if kind == "auto":
            kind = "counter" if self.device.type == "cuda" else "generator"
        if kind not in ("generator", "counter"):
            raise ValueError(f"unknown mask sampler {kind!r} (auto, generator, counter)")
        self.kind, self.calls = kind, 0
        if kind == "generator":
            self.gens = [torch.Generator(device=self.device).manual_seed(int(s) + 1_000_003) for s in seeds]
        else:
            self.keys = _mix32(torch.tensor([int(s) & _M32 for s in seeds], dtype=torch.int64, device=self.device))

    def _draw(self, shape: tuple, rate: float) -> torch.Tensor | None:
        self.calls += 1  # counts every mask, drawn or not, so a zero rate never shifts the others
        if rate <= 0:
            return None
        keep = 1.0 - rate
        if self.kind == "counter":
            return (_counter_uniform(self.keys, self.calls, shape) < keep).float() / keep
        full = torch.full(shape, keep, device=self.device)
        return torch.stack([torch.bernoulli(full, generator=g) for g in self.gens]) / keep

    def state(self) -> dict:
        """The draw count and, for ``generator``, every slot's generator state (:mod:`builder.resume`)."""
        out = {"calls": self.calls}
        if self.kind == "generator":
            out.update({f"gen/{a}": g.get_state() for a, g in enumerate(self.gens)})
        return out

    def load_state(self, state: dict) -> None:
        """Continue the mask streams from a unit's saved state."""
        self.calls = int(state["calls"])
        if self.kind == "generator":
            for a, g in enumerate(self.gens):
                g.set_state(torch.as_tensor(state[f"gen/{a}"], dtype=torch.uint8))

    def draw(self, batch: int, ntokens: int, hidden: int, d: Dropouts) -> dict:
        """One mini-batch's dropout masks per slot (None where a rate is 0)."""
        return {
            "embedding": self._draw((ntokens,), d.embedding),
            "input": self._draw((1, batch, hidden), d.input),
            "x": self._draw((batch, hidden), d.x),
            "hidden": self._draw((batch, hidden), d.hidden),
            "output": self._draw((1, batch, hidden), d.output),
        }


_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mulmod32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x · c mod 2³²`` for ``0 ≤ x < 2³²`` in int64 without overflow (``c`` split into 16-bit halves)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (Wellons' lowbias32): a bijection that scatters nearby inputs."""
    x = x ^ (x >> 16)
    x = _mulmod32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mulmod32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _counter_uniform(keys: torch.Tensor, call: int, shape: tuple) -> torch.Tensor:
    """``[A, *shape]`` uniforms in [0, 1) from (slot key, call, element index) alone."""
    call_keys = _mix32((keys + call * _GOLDEN) & _M32)  # [A]
    idx = torch.arange(math.prod(shape), dtype=torch.int64, device=keys.device)
    h = _mix32((call_keys[:, None] + _mulmod32(idx, _GOLDEN)[None, :]) & _M32)
    h = _mix32(h ^ call_keys[:, None])
    return ((h >> 8).float() * (1.0 / (1 << 24))).view(len(keys), *shape)


def run_rnn(params: dict, geno: SlotGenotypes, tokens: torch.Tensor, hidden: torch.Tensor, masks: dict | None):
    """Embed ``tokens [T, B]`` for every slot and run the cell; returns raw outputs ``[A, T, B, H]`` and h_T.

    ``geno`` is anything with ``slots`` and ``step(x, h, params, m_x, m_h)``: discrete genotypes, or DARTS's
    relaxed cell (builder/darts.py)."""
    enc = params["encoder"]
    emb = enc[:, tokens]  # [A, T, B, E]
    if masks is not None and masks["embedding"] is not None:
        emb = emb * masks["embedding"][:, tokens].unsqueeze(-1)
    if masks is not None and masks["input"] is not None:
        emb = emb * masks["input"]
    m_x = m_h = None
    if masks is not None:
        A, _, B, H = emb.shape
        ones = torch.ones(A, B, H, device=emb.device)
        m_x = masks["x"] if masks["x"] is not None else ones
        m_h = masks["hidden"] if masks["hidden"] is not None else ones
    outs = []
    h = hidden
    for t in range(tokens.shape[0]):
        h = geno.step(emb[:, t], h, params, m_x, m_h)
        outs.append(h)
    return torch.stack(outs, dim=1), h


def decode_loss(params: dict, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per slot of the tied decoder over ``out [A, T, B, H]``; returns ``[A]``.

    On CPU the fused chunked form (memory-bound otherwise), its GEMMs in bf16 under autocast; on CUDA one
    batched matmul and softmax (cross-entropy runs in fp32 under autocast).
    """
    A, T, B, H = out.shape
    out, targets = out.reshape(A, T * B, H), targets.reshape(-1)
    if out.device.type == "cpu":
        dtype = torch.bfloat16 if torch.is_autocast_enabled("cpu") else torch.float32
        with torch.autocast("cpu", enabled=False):
            return tied_cross_entropy(out.float(), params["encoder"], params["bias"], targets, dtype=dtype)
    logits = torch.baddbmm(params["bias"].unsqueeze(1), out, params["encoder"].transpose(1, 2))
    ce = F.cross_entropy(logits.reshape(A * T * B, -1), targets.repeat(A), reduction="none")
    return ce.view(A, T * B).mean(dim=1)


def train_loss(params, geno, tokens, targets, hidden, masks, beta: float = 0.0, alpha: float = 0.0):
    """Training objective per slot (CE + AR + TAR, AWD-LSTM style); returns (objective [A], ce [A], h_T)."""
    raw, h_last = run_rnn(params, geno, tokens, hidden, masks)
    out = raw * masks["output"] if masks is not None and masks["output"] is not None else raw
    ce = decode_loss(params, out, targets)
    objective = ce
    if alpha:
        objective = objective + alpha * out.pow(2).mean(dim=(1, 2, 3))
    if beta:
        objective = objective + beta * (raw[:, 1:] - raw[:, :-1]).pow(2).mean(dim=(1, 2, 3))
    return objective, ce, h_last


@torch.no_grad()
def evaluate(params: dict, geno: SlotGenotypes, data: torch.Tensor, bptt: int, amp: str = "off") -> torch.Tensor:
    """Mean cross-entropy per slot over a batchified split ``data [L, B]`` (no dropout, hidden carried).

    With one-slot ``params`` and ``A`` genotypes, evaluates ``A`` architectures under the same shared weights.
    Under ``amp`` the cell runs in bf16; the decoder and log-likelihoods stay fp32.
    """
    A = geno.slots
    hidden = torch.zeros(A, data.shape[1], params["W0"].shape[2] // 2, device=data.device)
    total = torch.zeros(A, dtype=torch.float64, device=data.device)
    count = 0
    for i in range(0, data.shape[0] - 1, bptt):
        seq = min(bptt, data.shape[0] - 1 - i)
        with autocast(data.device, amp):
            raw, hidden = run_rnn(params, geno, data[i : i + seq], hidden, None)
        nll = token_nll(raw.float().reshape(A, -1, raw.shape[-1]), params["encoder"], params["bias"],
                        data[i + 1 : i + 1 + seq].reshape(-1))
        total += nll.double().sum(dim=1)
        count += nll.shape[1]
    return (total / count).float()
