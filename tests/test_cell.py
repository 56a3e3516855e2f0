"""The cell equations (ARCHITECTURE.md §3) checked against a hand computation in numpy."""
import numpy as np
import torch

from nasbench_ptb.builder.cell import cell_step
from nasbench_ptb.builder.engine import SlotGenotypes
from nasbench_ptb.space import parse

ACT = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0), "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
       "identity": lambda v: v}
sig = ACT["sigmoid"]


def hand_step(geno, x, h, W0, Ws, mx, mh):
    H = h.shape[-1]
    c0h0 = np.concatenate([x * mx, h * mh]) @ W0
    s = [h + sig(c0h0[:H]) * (np.tanh(c0h0[H:]) - h)]
    for k, (op, pred) in enumerate(geno.nodes):
        ch = (s[pred] * mh) @ Ws[k]
        s.append(s[pred] + sig(ch[:H]) * (ACT[op](ch[H:]) - s[pred]))
    return np.mean(s[1:], axis=0)


def test_one_step_matches_hand_computation():
    geno = parse("relu:0|sigmoid:1|identity:0")
    x = np.array([0.5, -1.0])
    h = np.array([0.25, 0.75])
    W0 = np.arange(16, dtype=float).reshape(4, 4) / 20 - 0.4
    Ws = np.stack([np.arange(8, dtype=float).reshape(2, 4) / 10 * s - 0.3 for s in (1, -1, 0.5)])
    mx, mh = np.array([2.0, 0.0]), np.array([0.0, 1.25])
    expected = hand_step(geno, x, h, W0, Ws, mx, mh)
    # and by hand for the first node, to pin the equations down independently of hand_step:
    c0, h0 = np.split(np.concatenate([x * mx, h * mh]) @ W0, 2)
    s0 = h + sig(c0) * (np.tanh(h0) - h)
    c1, h1 = np.split((s0 * mh) @ Ws[0], 2)
    s1 = s0 + sig(c1) * (np.maximum(h1, 0) - s0)
    c2, h2 = np.split((s1 * mh) @ Ws[1], 2)
    s2 = s1 + sig(c2) * (sig(h2) - s1)
    c3, h3 = np.split((s0 * mh) @ Ws[2], 2)
    s3 = s0 + sig(c3) * (h3 - s0)
    np.testing.assert_allclose(expected, (s1 + s2 + s3) / 3, rtol=1e-12)

    g = SlotGenotypes.of([geno])
    t = lambda a: torch.tensor(a, dtype=torch.float64)[None]  # noqa: E731
    got = cell_step(t(x)[:, None], t(h)[:, None], t(W0), t(Ws), g.preds, g.ops, t(mx)[:, None], t(mh)[:, None])
    np.testing.assert_allclose(got[0, 0].numpy(), expected, rtol=1e-12)
    got_eval = cell_step(t(x)[:, None], t(h)[:, None], t(W0), t(Ws), g.preds, g.ops)
    np.testing.assert_allclose(got_eval[0, 0].numpy(), hand_step(geno, x, h, W0, Ws, 1.0, 1.0), rtol=1e-12)


def test_mixed_genotypes_in_one_call_equal_each_alone():
    torch.manual_seed(0)
    genos = [parse(s) for s in ("tanh:0|relu:1|sigmoid:0", "identity:0|tanh:0|relu:2", "sigmoid:0|sigmoid:1|tanh:1")]
    A, B, H = 3, 4, 5
    x, h = torch.randn(A, B, H), torch.randn(A, B, H)
    W0, Ws = torch.randn(A, 2 * H, 2 * H) * 0.3, torch.randn(A, 3, H, 2 * H) * 0.3
    mx, mh = torch.rand(A, B, H), torch.rand(A, B, H)
    g = SlotGenotypes.of(genos)
    together = cell_step(x, h, W0, Ws, g.preds, g.ops, mx, mh, g.uniform)
    for a, geno in enumerate(genos):
        ga = SlotGenotypes.of([geno])
        alone = cell_step(x[a : a + 1], h[a : a + 1], W0[a : a + 1], Ws[a : a + 1], ga.preds, ga.ops,
                          mx[a : a + 1], mh[a : a + 1], ga.uniform)
        torch.testing.assert_close(together[a], alone[0])
