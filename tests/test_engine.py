"""The slot engine: slots trained together equal each trained alone; fused decoder; per-slot optimiser."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nasbench_ptb.builder import trainer as train_mod
from nasbench_ptb.builder.decoder import tied_cross_entropy
from nasbench_ptb.builder.engine import MaskSampler, SlotGenotypes, init_params, train_loss
from nasbench_ptb.builder.optim import SlotSGD
from nasbench_ptb.builder.standalone import train_runs
from nasbench_ptb.schema import Status
from nasbench_ptb.space import parse

from helpers import tiny_corpus, tiny_preset

GENOS = [parse(s) for s in ("tanh:0|relu:1|sigmoid:0", "identity:0|tanh:0|relu:2", "sigmoid:0|sigmoid:1|tanh:1")]
SEEDS = [11, 22, 33]


def _train_steps(genos, seeds, steps=6, V=40, H=6, B=4, T=7):
    p = tiny_preset()
    params = init_params(seeds, V, H, 3, "cpu")
    geno = SlotGenotypes.of(genos)
    opt = SlotSGD(params, 1e-4, 0.25)
    masks = MaskSampler(seeds, "cpu")
    data = torch.as_tensor(tiny_corpus(V).train[: B * (steps * T + 1)].reshape(B, -1).T.copy())
    hidden = torch.zeros(len(seeds), B, H)
    losses = []
    for s in range(steps):
        m = masks.draw(B, V, H, p.dropouts)
        obj, ce, hidden = train_loss(params, geno, data[s * T:(s + 1) * T], data[s * T + 1:(s + 1) * T + 1],
                                     hidden.detach(), m, beta=1e-3, alpha=1e-3)
        obj.sum().backward()
        opt.step(2.0, torch.ones(len(seeds), dtype=torch.bool))
        if s == 3:
            opt.switch(torch.tensor([True] * len(seeds)))
        losses.append(ce.detach())
    return torch.stack(losses, 1), params, opt.eval_params()


def test_slots_together_equal_each_alone_losses_and_parameters():
    losses, params, eval_params = _train_steps(GENOS, SEEDS)
    assert torch.isfinite(losses).all()
    init = init_params(SEEDS, 40, 6, 3, "cpu")
    assert all(not torch.allclose(params[k].detach(), init[k].detach()) for k in params)  # it really trained
    for a in range(3):
        l1, p1, e1 = _train_steps([GENOS[a]], [SEEDS[a]])
        torch.testing.assert_close(losses[a], l1[0], rtol=1e-5, atol=1e-6)
        for k in params:
            torch.testing.assert_close(params[k][a].detach(), p1[k][0].detach(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(eval_params[k][a], e1[k][0], rtol=1e-5, atol=1e-6)


def test_training_protocol_together_equals_alone():
    corpus, p = tiny_corpus(), tiny_preset(asgd=True)
    together = train_runs(corpus, GENOS, SEEDS, p)
    assert (together.status == Status.OK).all() and np.isfinite(together.test_ppl).all()
    assert len(together.epochs) == 3 and together.epochs[-1] >= 1.0
    for a in range(3):
        alone = train_runs(corpus, [GENOS[a]], [SEEDS[a]], p)
        np.testing.assert_allclose(together.valid_ppl[a], alone.valid_ppl[0], rtol=1e-4)
        np.testing.assert_allclose(together.train_loss[a], alone.train_loss[0], rtol=1e-4)
        np.testing.assert_allclose(together.test_ppl[a], alone.test_ppl[0], rtol=1e-4)


def test_divergence_is_recorded_and_isolated(monkeypatch):
    corpus, p = tiny_corpus(), tiny_preset(checkpoints=4)
    clean = train_runs(corpus, GENOS, SEEDS, p)
    real, calls = train_mod.train_loss, {"n": 0}

    def poisoned(*args, **kwargs):
        obj, ce, h = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 40:  # slot 1 blows up after the first checkpoints
            obj = obj * torch.tensor([1.0, float("inf"), 1.0])
        return obj, ce, h

    monkeypatch.setattr(train_mod, "train_loss", poisoned)
    res = train_runs(corpus, GENOS, SEEDS, p)
    assert list(res.status) == [Status.OK, Status.DIVERGED, Status.OK]
    assert np.isnan(res.test_ppl[1]) and np.isnan(res.best_epoch[1])
    assert np.isfinite(res.valid_ppl[1, 0])  # the checkpoint before the blow-up keeps its value
    assert np.isnan(res.valid_ppl[1, -1]) and np.isnan(res.train_loss[1, -1])
    for a in (0, 2):  # the other slots are untouched
        np.testing.assert_allclose(res.valid_ppl[a], clean.valid_ppl[a], rtol=1e-5)
        np.testing.assert_allclose(res.test_ppl[a], clean.test_ppl[a], rtol=1e-5)


@pytest.mark.parametrize("chunk", [5, 16, 1000])
def test_fused_decoder_matches_plain_cross_entropy(chunk):
    torch.manual_seed(0)
    A, N, H, V = 3, 37, 4, 50
    W = torch.randn(A, V, H, dtype=torch.float64, requires_grad=True)
    b = torch.randn(A, V, dtype=torch.float64, requires_grad=True)
    x = torch.randn(A, N, H, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, V, (N,))
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    plain = F.cross_entropy(torch.baddbmm(b[:, None], x, W.transpose(1, 2)).reshape(A * N, V), t.repeat(A),
                            reduction="none").view(A, N).mean(1)
    grads_plain = torch.autograd.grad((plain * w).sum(), (x, W, b))
    fused = tied_cross_entropy(x, W, b, t, chunk)
    grads_fused = torch.autograd.grad((fused * w).sum(), (x, W, b))
    torch.testing.assert_close(fused, plain)
    for g1, g2 in zip(grads_fused, grads_plain):
        torch.testing.assert_close(g1, g2)


def test_slot_sgd_matches_torch_sgd_then_asgd():
    torch.manual_seed(0)
    shapes = {"a": (2, 5, 3), "b": (2, 4)}
    init = {k: torch.randn(*s) for k, s in shapes.items()}
    slot = {k: v.clone().requires_grad_() for k, v in init.items()}
    opt = SlotSGD(slot, weight_decay=0.01, clip=0.5)
    refs = []
    for a in range(2):
        ps = [init[k][a].clone().requires_grad_() for k in shapes]
        refs.append((ps, torch.optim.SGD(ps, lr=0.3, weight_decay=0.01)))
    targets = [torch.randn(*s) for s in shapes.values()]
    for step in range(8):
        if step == 3:
            opt.switch(torch.tensor([True, False]))
            ps, _ = refs[0]
            refs[0] = (ps, torch.optim.ASGD(ps, lr=0.3, t0=0, lambd=0.0, weight_decay=0.01))
        scale = 1.0 + step
        loss = sum(((slot[k] - t) ** 2).sum() * scale * (1 + i) for i, (k, t) in enumerate(zip(shapes, targets)))
        loss.backward()
        opt.step(0.3, torch.tensor([True, True]))
        for a, (ps, ref) in enumerate(refs):
            ref.zero_grad()
            sum(((p - t[a]) ** 2).sum() * scale * (1 + i) for i, (p, t) in enumerate(zip(ps, targets))).backward()
            torch.nn.utils.clip_grad_norm_(ps, 0.5)
            ref.step()
    ev = opt.eval_params()
    for a, (ps, ref) in enumerate(refs):
        for k, p in zip(shapes, ps):
            torch.testing.assert_close(slot[k][a].detach(), p.detach())
            expected = ref.state[p]["ax"] if a == 0 else p.detach()
            torch.testing.assert_close(ev[k][a], expected)


def test_fused_decoder_in_bf16_stays_close_to_fp32_at_training_shapes():
    # what amp=bf16 runs on CPU: bf16 GEMM inputs, fp32 accumulation, fp32 loss and gradient sums
    torch.manual_seed(0)
    A, N, H, V = 2, 300, 32, 2000
    W = (torch.randn(A, V, H) * 0.3).requires_grad_()
    b = (torch.randn(A, V) * 0.1).requires_grad_()
    x = (torch.randn(A, N, H) * 0.5).requires_grad_()
    t = torch.randint(0, V, (N,))
    loss32 = tied_cross_entropy(x, W, b, t, 64)
    g32 = torch.autograd.grad(loss32.sum(), (x, W, b))
    loss16 = tied_cross_entropy(x, W, b, t, 64, dtype=torch.bfloat16)
    g16 = torch.autograd.grad(loss16.sum(), (x, W, b))
    assert loss16.dtype == torch.float32
    torch.testing.assert_close(loss16, loss32, rtol=2e-3, atol=0)  # ~log(2000) = 7.6 nats, off by < 0.02
    for a, c in zip(g16, g32):
        cos = F.cosine_similarity(a.flatten(), c.flatten(), dim=0)
        assert cos > 0.999 and (a.norm() / c.norm() - 1).abs() < 0.01


def test_fused_decoder_is_stable_for_logits_far_beyond_exp_range():
    # logits in the thousands (a run about to diverge): exp overflows unless each row's max is taken out first
    torch.manual_seed(1)
    A, N, H, V = 2, 40, 8, 300
    W = (torch.randn(A, V, H) * 30).requires_grad_()
    b = torch.zeros(A, V, requires_grad=True)
    x = (torch.randn(A, N, H) * 30).requires_grad_()
    t = torch.randint(0, V, (N,))
    plain = F.cross_entropy(torch.baddbmm(b[:, None], x, W.transpose(1, 2)).reshape(A * N, V), t.repeat(A),
                            reduction="none").view(A, N).mean(1)
    fused = tied_cross_entropy(x, W, b, t, 16)
    assert torch.isfinite(fused).all() and fused.min() > 100
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-3)
    for g1, g2 in zip(torch.autograd.grad(fused.sum(), (x, W, b)), torch.autograd.grad(plain.sum(), (x, W, b))):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)
