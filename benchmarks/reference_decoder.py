"""The fused decoder as the shipped CPU tables were first built with it (one chunk of logits at a time, the
softmax and its gradient formed by separate passes over ``[chunk, V]``): the benchmark's "before" column.

Same numbers as :func:`builder.decoder.tied_cross_entropy` within float tolerance; kept only so that
``bench_engine.py`` measures today's engine against it side by side in one run.
"""
from __future__ import annotations

import torch


class _ReferenceCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out, weight, bias, targets, chunk):
        A, N, _ = out.shape
        loss = torch.zeros(A, dtype=torch.float64, device=out.device)
        g_out, g_w, g_b = torch.empty_like(out), torch.zeros_like(weight), torch.zeros_like(bias)
        buf = out.new_empty(min(chunk, N), weight.shape[1])
        for a in range(A):
            for s in range(0, N, chunk):
                x, tgt = out[a, s : s + chunk], targets[s : s + chunk]
                logits = torch.addmm(bias[a], x, weight[a].t(), out=buf[: len(tgt)])
                lse = torch.logsumexp(logits, dim=1)
                loss[a] += (lse - logits.gather(1, tgt[:, None]).squeeze(1)).double().sum()
                probs = logits.sub_(lse[:, None]).exp_()
                probs[torch.arange(len(tgt), device=tgt.device), tgt] -= 1.0
                probs.div_(N)
                torch.mm(probs, weight[a], out=g_out[a, s : s + chunk])
                g_w[a].addmm_(probs.t(), x)
                g_b[a] += probs.sum(0)
        ctx.save_for_backward(g_out, g_w, g_b)
        return (loss / N).to(out.dtype)

    @staticmethod
    def backward(ctx, grad):
        g_out, g_w, g_b = ctx.saved_tensors
        return g_out * grad.view(-1, 1, 1), g_w * grad.view(-1, 1, 1), g_b * grad.view(-1, 1), None, None


def reference_cross_entropy(out, weight, bias, targets, chunk: int = 96, dtype=None) -> torch.Tensor:
    """Drop-in for ``tied_cross_entropy`` (fp32 only; ``dtype`` is accepted and ignored)."""
    return _ReferenceCE.apply(out, weight, bias, targets, chunk)
