"""DARTS (Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019) on the reduced spaces: the relaxed
cell and its bilevel search, after the authors' recurrent search (``quark0/darts``: ``rnn/model_search.py``,
``rnn/genotypes.py``, ``rnn/train_search.py``, ``rnn/architect.py``).

The relaxed cell (their ``DARTSCellSearch`` with our cell's one matrix per node, ARCHITECTURE.md §3)::

    s0   = BN(s0 of the discrete cell)
    node k, every predecessor j < k:   [c_j | h_j] = (s_j ⊙ m_h) · W_k
    s_k  = BN( Σ_j Σ_{o ≠ none} softmax(α_kj)[o] · (s_j + σ(c_j) ⊙ (f_o(h_j) − s_j)) )
    h_t  = mean(s_1 … s_n)

The mixed op is DARTS's: ``PRIMITIVES = none, tanh, relu, sigmoid, identity``; ``none`` contributes nothing but
takes its share of each edge's softmax, so ``α`` holds one row of 5 weights per edge (node k's edges j = 0..k−1
at rows k(k−1)/2 …). The derived cell excludes ``none`` (their ``genotype()``): per node the edge whose best
non-``none`` weight is largest, and that op — the argmax over the node's 4·k local choices ``4·pred + op`` of the
non-``none`` softmax weights.

``BN`` (their ``BatchNorm1d(nhid, affine=False)`` on every state; batch statistics while training, running ones at
evaluation) is **off by default** (``batchnorm=1`` turns it on), measured: they searched at batch 256 and hidden
300; at our batch 32 and hidden 32, half an epoch of the `cpu` preset (4 checkpoints, seed 0, validation ppl on
its first 2,000 tokens at the end), the uniform weight-sharing super-net reached 846, the relaxed super-net with
BN 2,097 (1,974 with its alphas frozen: BN, not the search, held it back), without BN 870 (682 without ``none``).
With BN, DARTS's architecture gradients came from a super-net that had not learned.
"""
from __future__ import annotations

import numpy as np
import torch

from nasbench_ptb.space import OPS as ACTIVATION_NAMES
from nasbench_ptb.space import id_of_choices

from .cell import ACTIVATIONS, highway, slot_mm
from .engine import MaskSampler, evaluate, train_loss
from .search import Context, Method
from .trainer import batchify, to_ppl

BN_EPS, BN_MOMENTUM = 1e-5, 0.1
PRIMITIVES = ("none", *ACTIVATION_NAMES)  # DARTS's recurrent primitives: none first, then our four ops


class RelaxedCell:
    """DARTS's search cell for ``A`` slots; same ``step`` interface as :class:`SlotGenotypes`."""

    def __init__(self, alpha: torch.Tensor, nodes: int, hidden: int, batchnorm: bool = True):
        self.alpha, self.n, self.batchnorm = alpha, nodes, batchnorm  # [A, edges, 1 + ops]: none first
        A = alpha.shape[0]
        self.run_mean = torch.zeros(A, 1, hidden, device=alpha.device)
        self.run_var = torch.ones(A, 1, hidden, device=alpha.device)
        self.training = True

    @property
    def slots(self) -> int:
        """Search seeds trained together (one alpha set each)."""
        return self.alpha.shape[0]

    def bn(self, s: torch.Tensor) -> torch.Tensor:
        """DARTS's parameter-free batch norm of a node's state (per slot; identity when off, the default)."""
        if not self.batchnorm:
            return s
        if self.training:
            mean, var = s.mean(1, keepdim=True), s.var(1, unbiased=False, keepdim=True)
            with torch.no_grad():
                b = s.shape[1]
                self.run_mean.mul_(1 - BN_MOMENTUM).add_(BN_MOMENTUM * mean.detach())
                self.run_var.mul_(1 - BN_MOMENTUM).add_(BN_MOMENTUM * var.detach() * b / max(b - 1, 1))
        else:
            mean, var = self.run_mean, self.run_var
        return (s - mean) / torch.sqrt(var + BN_EPS)

    def step(self, x: torch.Tensor, h_prev: torch.Tensor, params: dict, m_x, m_h) -> torch.Tensor:
        """One time step of the relaxed cell: every edge mixes the primitives by softmax(alpha), ``none`` included."""
        A, B, H = h_prev.shape
        if x.shape[0] != A:
            x = x.expand(A, -1, -1)
        xin, hin = (x * m_x, h_prev * m_h) if m_x is not None else (x, h_prev)
        states = [self.bn(highway(h_prev, slot_mm(torch.cat([xin, hin], dim=-1), params["W0"]), torch.tanh))]
        probs = torch.softmax(self.alpha, dim=-1)[..., 1:]  # the activations' weights; none's share adds nothing
        for k in range(1, self.n + 1):
            S = torch.stack(states, dim=1)  # [A, k, B, H]
            inp = S * m_h.unsqueeze(1) if m_h is not None else S
            ch = torch.bmm(inp.reshape(A, k * B, H), params["Ws"][:, k - 1]).view(A, k, B, 2 * H)
            c, h = torch.sigmoid(ch[..., :H]), ch[..., H:]
            P = probs[:, k * (k - 1) // 2 : k * (k + 1) // 2]  # [A, k, ops]: node k's edges
            mixed = sum(P[:, :, o, None, None] * f(h) for o, f in enumerate(ACTIVATIONS))
            w = P.sum(dim=-1)[:, :, None, None]  # 1 − P(none) per edge
            # Σ_{o≠none} P_jo (s_j + c_j (f_o(h_j) − s_j)) = w_j s_j + c_j (mixed_j − w_j s_j)
            states.append(self.bn((w * S + c * (mixed - w * S)).sum(dim=1)))
        return torch.stack(states[1:], dim=0).mean(dim=0)

    def choices(self) -> np.ndarray:
        """``[A, n]`` each node's argmax local choice ``4·pred + op`` over its edges' softmax weights, ``none``
        excluded (it is never a cell's op)."""
        probs = torch.softmax(self.alpha.detach(), dim=-1).cpu().numpy()[..., 1:]
        return np.stack([probs[:, k * (k - 1) // 2 : k * (k + 1) // 2].reshape(len(probs), -1).argmax(axis=1)
                         for k in range(1, self.n + 1)], axis=1)


class Darts(Method):
    """DARTS (Liu et al. 2019), the real search phase: shared weights and alphas trained alternately (see the
    module docstring for every value's source)."""
    name = "darts"

    def __init__(self, ctx: Context, order: int = 1, arch_lr: float = 3e-3, arch_weight_decay: float = 1e-3,
                 batchnorm: int = 0):
        if order not in (1, 2):
            raise ValueError(f"DARTS order must be 1 (first order) or 2 (second order), got {order!r}")
        if batchnorm not in (0, 1, True, False):
            raise ValueError(f"DARTS batchnorm must be 0 or 1, got {batchnorm!r}")
        self.ctx, self.order, p = ctx, int(order), ctx.p
        edges = ctx.sp.n * (ctx.sp.n + 1) // 2
        init = [1e-3 * torch.randn(edges, len(PRIMITIVES), generator=torch.Generator().manual_seed(int(s) + 31))
                for s in ctx.seeds]
        self.alpha = torch.stack(init).to(ctx.device).requires_grad_(True)
        self.cell = RelaxedCell(self.alpha, ctx.sp.n, p.hidden, bool(batchnorm))
        self.adam = torch.optim.Adam([self.alpha], lr=arch_lr, betas=(0.9, 0.999), weight_decay=arch_weight_decay)
        self.masks = MaskSampler([int(s) + 50_021 for s in ctx.seeds], ctx.device)
        self.options = {"order": self.order, "arch_lr": arch_lr, "arch_weight_decay": arch_weight_decay,
                        "batchnorm": int(bool(batchnorm))}
        self.tr = None

    def attach(self, tr) -> None:
        """Hook the architecture step before every weight step; the search data is the whole validation split."""
        self.tr = tr
        # DARTS's search data: the whole validation split, batchified at the training batch size
        self.search_data = batchify(self.ctx.valid_tokens, self.ctx.p.batch_size, self.ctx.device)
        self.v_pos, self.h_valid = 0, torch.zeros_like(tr.hidden)
        tr.before_step = self.arch_step

    def genotypes(self) -> RelaxedCell:
        """The relaxed cell (every slot trains its own mixture; no cell is sampled)."""
        self.cell.training = True
        return self.cell

    def _loss(self, params: dict, x, y, h, masks) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.ctx.p
        obj, _, h_last = train_loss(params, self.cell, x, y, h, masks, p.beta, p.alpha)
        return torch.where(self.tr.alive, obj, torch.zeros_like(obj)).sum(), h_last

    def arch_step(self, start: int, seq: int, h_train: torch.Tensor) -> None:
        """One Adam step on the alphas from the next validation mini-batch (first or second order)."""
        p, tr, V = self.ctx.p, self.tr, self.tr.V
        if self.v_pos + seq + 1 > self.search_data.shape[0]:
            self.v_pos, self.h_valid = 0, torch.zeros_like(self.h_valid)
        vx = self.search_data[self.v_pos : self.v_pos + seq]
        vy = self.search_data[self.v_pos + 1 : self.v_pos + 1 + seq]
        self.v_pos += seq
        self.cell.training = True
        mv = self.masks.draw(p.batch_size, V, p.hidden, p.dropouts)
        if self.order == 1:
            loss, h_last = self._loss(tr.params, vx, vy, self.h_valid, mv)
            (grad,) = torch.autograd.grad(loss, [self.alpha])
        else:
            tx, ty = tr.train[start : start + seq], tr.train[start + 1 : start + 1 + seq]
            grad, h_last = self._second_order(tx, ty, h_train, vx, vy, mv, p.lr * seq / p.bptt)
        self.h_valid = h_last.detach()
        self.adam.zero_grad()
        self.alpha.grad = grad
        self.adam.step()

    def _second_order(self, tx, ty, h_train, vx, vy, mv, eta: float):
        p, tr = self.ctx.p, self.tr
        names = list(tr.params)
        mt = self.masks.draw(p.batch_size, tr.V, p.hidden, p.dropouts)
        loss_t, _ = self._loss(tr.params, tx, ty, h_train, mt)
        gw = torch.autograd.grad(loss_t, [tr.params[k] for k in names])
        unrolled = {k: (tr.params[k] - eta * (g + p.weight_decay * tr.params[k])).detach().requires_grad_(True)
                    for k, g in zip(names, gw)}
        loss_v, h_last = self._loss(unrolled, vx, vy, self.h_valid, mv)
        grads = torch.autograd.grad(loss_v, [self.alpha] + [unrolled[k] for k in names])
        d_alpha, dw = grads[0], dict(zip(names, grads[1:]))
        norm = torch.sqrt(sum(g.pow(2).flatten(1).sum(1) for g in dw.values()))  # [A]
        eps = (0.01 / norm.clamp_min(1e-12))

        def alpha_grad(sign: float) -> torch.Tensor:
            w = {k: (tr.params[k] + sign * eps.view(-1, *[1] * (dw[k].dim() - 1)) * dw[k]).detach() for k in names}
            loss, _ = self._loss(w, tx, ty, h_train, mt)
            return torch.autograd.grad(loss, [self.alpha])[0]

        implicit = (alpha_grad(1.0) - alpha_grad(-1.0)) / (2 * eps.view(-1, 1, 1))
        return d_alpha - eta * implicit, h_last

    def checkpoint(self, ctx: Context, params: dict, live: np.ndarray, last: bool) -> tuple:
        """The derived cell (per node its best non-``none`` edge and op), the relaxed super-net's validation ppl,
        the alphas."""
        self.cell.training = False
        loss = evaluate(params, self.cell, ctx.valid(last), ctx.p.bptt, ctx.p.amp).cpu().numpy()
        ppl = to_ppl(loss, live)
        choice = np.asarray(id_of_choices(np.asarray(self.cell.choices()).T), dtype=np.int64)
        est = np.where(np.isfinite(ppl), ppl, np.inf)
        return choice, np.where(live, est, np.nan), np.log(est), {"alphas": self.alpha.detach().cpu().numpy().copy()}

