"""The DARTS recurrent cell (ARCHITECTURE.md §3), batched over a leading slot axis.

Shapes: ``A`` slots, ``B`` batch, ``E`` embedding, ``H`` hidden, ``n`` nodes. Each slot has its own weights and
its own genotype (``preds``/``ops``: ``[A, n]`` long tensors), so one call steps many independent cells::

    [c0 | h0] = [x ⊙ m_x , h_prev ⊙ m_h] · W0           W0: [A, E+H, 2H]
    s0        = h_prev + σ(c0) ⊙ (tanh(h0) − h_prev)
    node k:   [c | h] = (s_p ⊙ m_h) · W_k                 W_k = Ws[:, k-1]: [A, H, 2H]
              s_k = s_p + σ(c) ⊙ (f_k(h) − s_p)
    h_t       = mean(s_1 … s_n)

Masks are ``None`` at evaluation (no dropout).
"""
from __future__ import annotations

import torch

ACTIVATIONS = (torch.tanh, torch.relu, torch.sigmoid, lambda t: t)
"""Same order as :data:`nasbench_ptb.space.OPS`."""


def select_activation(h: torch.Tensor, ops_k: torch.Tensor, uniform_op: int | None) -> torch.Tensor:
    """Apply each slot's activation to ``h [A, B, H]``; ``ops_k [A]``. ``uniform_op`` short-cuts the common case."""
    if uniform_op is not None:
        return ACTIVATIONS[uniform_op](h)
    op = ops_k.view(-1, 1, 1)
    out = h  # identity
    for index in (2, 1, 0):
        out = torch.where(op == index, ACTIVATIONS[index](h), out)
    return out


def slot_mm(inp: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``inp [A, B, D] · W [A, D, K]``; a ``W`` with one slot is shared by all ``A`` (one plain matmul)."""
    if W.shape[0] == 1 and inp.shape[0] > 1:
        A, B, D = inp.shape
        return (inp.reshape(A * B, D) @ W[0]).view(A, B, -1)
    return torch.bmm(inp, W)


def highway(s_prev: torch.Tensor, ch: torch.Tensor, act) -> torch.Tensor:
    """DARTS's highway update ``s_prev + σ(c) ⊙ (act(h) − s_prev)`` with ``[c | h] = ch``."""
    c, h = ch.chunk(2, dim=-1)
    return s_prev + torch.sigmoid(c) * (act(h) - s_prev)


def cell_step(
    x: torch.Tensor,
    h_prev: torch.Tensor,
    W0: torch.Tensor,
    Ws: torch.Tensor,
    preds: torch.Tensor,
    ops: torch.Tensor,
    m_x: torch.Tensor | None = None,
    m_h: torch.Tensor | None = None,
    uniform: tuple[tuple[int | None, int | None], ...] | None = None,
    taps: list | None = None,
) -> torch.Tensor:
    """One time step of ``A`` cells: returns ``h_t [A, B, H]``. Weights with one slot are shared by all ``A``.

    ``uniform[k]`` is ``(pred, op)`` where every slot agrees at node k+1 (else ``None``), letting the common
    single-genotype case skip the gather and the activation select. ``taps``: a list that receives this step's
    node states ``[s_0, …, s_n]`` (for the zero-cost proxies that read the cell's channels).
    """
    if x.shape[0] != h_prev.shape[0]:  # shared weights: one embedding for many architectures
        x = x.expand(h_prev.shape[0], -1, -1)
    if m_x is not None:
        x, h_masked = x * m_x, h_prev * m_h
    else:
        h_masked = h_prev
    s0 = highway(h_prev, slot_mm(torch.cat([x, h_masked], dim=-1), W0), torch.tanh)
    states = [s0]
    n = Ws.shape[1]
    slots = torch.arange(h_prev.shape[0], device=x.device)
    for k in range(n):
        u_pred, u_op = uniform[k] if uniform is not None else (None, None)
        if u_pred is not None:
            s_p = states[u_pred]
        else:
            s_p = torch.stack(states, dim=1)[slots, preds[:, k]]
        inp = s_p * m_h if m_h is not None else s_p
        ch = slot_mm(inp, Ws[:, k])
        states.append(highway(s_p, ch, lambda t, k=k, u_op=u_op: select_activation(t, ops[:, k], u_op)))
    if taps is not None:
        taps.append(states)
    return torch.stack(states[1:], dim=0).mean(dim=0)


def uniform_choices(preds: torch.Tensor, ops: torch.Tensor) -> tuple[tuple[int | None, int | None], ...]:
    """Per node, the (pred, op) every slot shares, or ``None`` where slots differ (computed once per genotype set)."""
    out = []
    for k in range(preds.shape[1]):
        p, o = preds[:, k], ops[:, k]
        out.append((int(p[0]) if bool((p == p[0]).all()) else None, int(o[0]) if bool((o == o[0]).all()) else None))
    return tuple(out)
