"""Fused decoder + cross-entropy over the 10,000-word vocabulary, per slot.

The plain ``logits = out·Eᵀ + b; cross_entropy(logits)`` writes and re-reads an ``[A, T·B, V]`` tensor several
times and is memory-bound on CPU (it dominated a training step). Here the logits are made a chunk of tokens at a
time and, since training always back-propagates, the gradients for the chunk are formed while it is still in
cache; ``backward`` only scales them. Per chunk: three GEMMs and three passes over ``[chunk, V]`` (row max,
subtract, exp), with everything else folded into the GEMMs:

- the bias is a row of the transposed decoder ``[Wᵀ; b]`` against a column of ones in the input;
- the softmax denominators come out of the ``E·[W | 1]`` product (``E = exp(logits − max)``) as its last column;
- the softmax normalisation ``1 / (N·Σ E)`` scales the small ``[chunk, H]`` factors, not ``E``; the target's
  ``−1`` becomes an ``index_add`` of ``[N, H]`` rows.

``dtype`` is the input precision of the two gradient GEMMs: ``out``'s (float32 in training: same numbers as the
plain form within float tolerance), or bfloat16 (``E``, ``W`` and ``x`` rounded to bf16 for those products, fp32
accumulation inside them). The logits, their softmax statistics, the loss and every accumulated gradient stay
in ``out``'s precision: on CPU, bf16 element-wise passes cost more than they save.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

CHUNK = 192  # training: tokens per chunk, [CHUNK, V] near cache (measured best of 96..384 on 2 cores)
EVAL_CHUNK = 96  # evaluation (token_nll): measured best of 16..256 on 2 cores


class _FusedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out, weight, bias, targets, chunk, dtype):
        # out [A, N, H], weight [A, V, H], bias [A, V], targets [N] -> mean CE per slot [A]
        A, N, H = out.shape
        V = weight.shape[1]
        acc, dtype = out.dtype, dtype or out.dtype  # accumulation precision, GEMM input precision
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        loss = torch.zeros(A, dtype=torch.float64, device=out.device)
        g_out = torch.empty_like(out) if need_grad else None
        g_wt = out.new_empty(A, H + 1, V) if need_grad else None  # [Wᵀ; b] gradients, transposed like the GEMM
        buf = out.new_empty(min(chunk, N), V)
        ones = out.new_ones(N, 1)
        for a in range(A):
            W, b, X = weight[a], bias[a], out[a]
            wt = torch.cat([W.t(), b[None]], 0)  # [H+1, V]: the logits stay in the accumulation precision
            w1 = torch.cat([W, ones[:1].expand(V, 1)], 1).to(dtype)  # [V, H+1]: the ones column sums E's rows
            x1_acc = torch.cat([X, ones], 1)  # [N, H+1]
            tgt_logit = (X * W[targets]).sum(1) + b[targets]  # fp32, exact
            for s in range(0, N, chunk):
                e = min(s + chunk, N)
                logits = torch.mm(x1_acc[s:e], wt, out=buf[: e - s])
                m = logits.amax(dim=1, keepdim=True)
                E = logits.sub_(m).exp_().to(dtype)  # exp(logits − row max) ∈ (0, 1]
                ew = torch.mm(E, w1).to(acc)  # [c, H+1]: E·W and Σ_j E
                lse = m.squeeze(1).to(acc) + ew[:, H].log()
                loss[a] += (lse - tgt_logit[s:e]).double().sum()
                if need_grad:
                    r = 1.0 / (ew[:, H : H + 1] * N)  # softmax normalisation and the mean over tokens
                    g_out[a, s:e] = ew[:, :H] * r
                    xr = (x1_acc[s:e] * r).to(dtype).t()
                    if s == 0:  # the first chunk writes, the others accumulate in place
                        g_wt[a] = torch.mm(xr, E) if dtype != acc else torch.mm(xr, E, out=g_wt[a])
                    elif dtype != acc:
                        g_wt[a] += torch.mm(xr, E).to(acc)
                    else:
                        g_wt[a].addmm_(xr, E)
            if need_grad:  # the target's −1/N of every token
                g_out[a] -= W[targets] / N
                g_wt[a].index_add_(1, targets, -x1_acc.t() / N)
        if need_grad:
            g_w = g_wt[:, :H].transpose(1, 2).contiguous()
            ctx.save_for_backward(g_out, g_w, g_wt[:, H].contiguous())
        return (loss / N).to(out.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        g_out, g_w, g_b = ctx.saved_tensors  # formed in forward for this backward only: scaled in place
        return g_out.mul_(grad.view(-1, 1, 1)), g_w.mul_(grad.view(-1, 1, 1)), g_b.mul_(grad.view(-1, 1)), None, \
            None, None


@torch.no_grad()
def token_nll(out: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
              chunk: int | None = None) -> torch.Tensor:
    """Per-token negative log-likelihood ``[A, N]`` (no gradient), in chunks so no ``[N, V]`` tensor is built.

    ``weight``/``bias`` may have a leading size of 1 while ``out`` has ``A`` slots: the shared-weights case
    (many architectures under one super-net), done as one ``[A·N, H]`` product.
    """
    A, N, H = out.shape
    if weight.shape[0] == 1 and A > 1:
        return token_nll(out.reshape(1, A * N, H), weight, bias, targets.repeat(A), chunk).view(A, N)
    chunk = chunk or (EVAL_CHUNK if out.device.type == "cpu" else 8192)
    nll = torch.empty(A, N, dtype=torch.float32, device=out.device)
    buf = out.new_empty(min(chunk, N), weight.shape[1])
    for a in range(A):
        for s in range(0, N, chunk):
            tgt = targets[s : s + chunk, None]
            logits = torch.addmm(bias[a], out[a, s : s + chunk], weight[a].t(), out=buf[: len(tgt)])
            nll[a, s : s + chunk] = (torch.logsumexp(logits, dim=1) - logits.gather(1, tgt).squeeze(1))
    return nll


def tied_cross_entropy(out: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                       chunk: int = CHUNK, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean cross-entropy per slot of ``out [A, N, H]`` decoded by ``weight [A, V, H]``, ``bias [A, V]``;
    ``dtype``: the GEMMs' input precision (default: ``out``'s; bfloat16 for the bf16 path)."""
    return _FusedCE.apply(out, weight, bias, targets, chunk, dtype)
