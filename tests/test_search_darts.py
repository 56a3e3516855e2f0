"""DARTS (Liu et al. 2019) against independent expectations: the relaxed cell and its mixed op (with `none`), the
derived cell (without), first- and second-order architecture steps against hand-written equations and finite
differences, its batch norm, its defaults and its checkpoints."""
import numpy as np
import pytest
import torch

from nasbench_ptb.builder import search
from nasbench_ptb.builder.cell import ACTIVATIONS, highway, slot_mm
from nasbench_ptb.builder.darts import Darts, RelaxedCell
from nasbench_ptb.space import OPS, Genotype, id_of_choices, parse, space

from helpers import search_preset, tiny_preset

SP = space("2node")


def test_darts_alphas_move_toward_the_choice_whose_loss_is_lower():
    """Constructed case: the target output is the relaxed cell with (nearly) one-hot alphas on node 1 = relu of
    s0 and node 2 = sigmoid of s1; minimising the MSE to it over the alphas alone finds that genotype."""
    torch.manual_seed(0)
    A, B, H, n = 1, 16, 8, 2
    params = {"W0": torch.randn(A, 2 * H, 2 * H) * 0.5, "Ws": torch.randn(A, n, H, 2 * H) * 0.5}
    teacher = torch.full((A, 3, 5), -10.0)  # [edges, none + 4 ops]
    teacher[0, 0, 1 + 1] = 10.0  # node 1: edge from s0, relu
    teacher[0, 2, 1 + 2] = 10.0  # node 2: edge from s1, sigmoid
    teacher[0, 1, :] = 0.0  # node 2's edge from s0 stays out of the argmax (its weights are uniform)
    x, h = torch.randn(A, B, H), torch.randn(A, B, H)
    for batchnorm in (False, True):
        with torch.no_grad():
            target = RelaxedCell(teacher, n, H, batchnorm).step(x, h, params, None, None)
        alpha = (1e-3 * torch.randn(A, 3, 5)).requires_grad_(True)
        student = RelaxedCell(alpha, n, H, batchnorm)
        opt = torch.optim.Adam([alpha], lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            (student.step(x, h, params, None, None) - target).pow(2).mean().backward()
            opt.step()
        assert Genotype.of_choices(student.choices()[0]).canonical == "relu:0|sigmoid:1", batchnorm


def test_darts_mixed_op_includes_none_and_the_derived_cell_excludes_it():
    """DARTS's recurrent primitives are none + the four activations: none contributes a zero (so an edge whose
    weight is all on none adds nothing), takes its softmax share, and never appears in the derived genotype."""
    A, B, H, n = 1, 4, 6, 2
    g = torch.Generator().manual_seed(3)
    params = {"W0": torch.randn(A, 2 * H, 2 * H, generator=g), "Ws": torch.randn(A, n, H, 2 * H, generator=g)}
    x, h = torch.randn(A, B, H, generator=g), torch.randn(A, B, H, generator=g)
    alpha = torch.full((A, 3, 5), -30.0)
    alpha[0, 0, 0] = 30.0  # node 1: all on none → s1 = 0
    alpha[0, 1, 0] = 30.0  # node 2's edge from s0: none
    alpha[0, 2, 1] = 30.0  # node 2's edge from s1: tanh
    out = RelaxedCell(alpha, n, H, batchnorm=False).step(x, h, params, None, None)
    s0 = highway(h, slot_mm(torch.cat([x, h], dim=-1), params["W0"]), torch.tanh)
    ch = torch.bmm(torch.zeros(A, B, H), params["Ws"][:, 1])  # node 2 reads s1 = 0
    s2 = 0 + torch.sigmoid(ch[..., :H]) * (torch.tanh(ch[..., H:]) - 0)
    assert torch.allclose(out, (torch.zeros_like(s2) + s2) / 2, atol=1e-5) and s0.abs().sum() > 0
    # equal weights on all five primitives: each activation gets 1/5, not 1/4 — none keeps its share
    even = RelaxedCell(torch.zeros(A, 3, 5), 1, H, batchnorm=False)
    one = even.step(x, h, {"W0": params["W0"], "Ws": params["Ws"][:, :1]}, None, None)
    c1, h1 = torch.bmm(s0, params["Ws"][:, 0]).split(H, dim=-1)
    mixed = sum(f(h1) for f in ACTIVATIONS) / 5
    assert torch.allclose(one, 0.8 * s0 + torch.sigmoid(c1) * (mixed - 0.8 * s0), atol=1e-5)
    # the largest weight of node 1 is none's, yet its op is the best of the four activations
    alpha = torch.zeros(A, 3, 5)
    alpha[0, 0] = torch.tensor([5.0, 0.1, 0.3, 0.2, 0.0])
    alpha[0, 1] = torch.tensor([0.5, 0.0, 0.0, 0.0, 0.9])  # node 2 from s0: identity, softmax 0.35 ...
    alpha[0, 2] = torch.tensor([0.0, 0.2, 0.0, 0.0, 0.0])  # ... beats tanh from s1 at 0.23 (probabilities compared)
    assert Genotype.of_choices(RelaxedCell(alpha, n, H).choices()[0]).canonical == "relu:0|identity:0"
    alpha[0, 1, 0] = 9.0  # none's mass on that edge shrinks its identity's probability below tanh's from s1
    assert Genotype.of_choices(RelaxedCell(alpha, n, H).choices()[0]).canonical == "relu:0|tanh:1"


def test_darts_second_order_equals_first_order_when_the_unrolled_step_is_zero(corpus):
    """With η = 0 the unrolled weights are the weights, and the implicit term is multiplied by 0."""
    p = search_preset()
    ctx = search.Context(corpus, SP, [0, 1], p, torch.device("cpu"))
    d = Darts(ctx, order=2)
    tr = search.SlotTrainer(corpus, [0, 1], SP.n, p, torch.device("cpu"), p.ws_bptt, p.hidden_clip)
    d.attach(tr)
    seq, h = 8, torch.zeros_like(tr.hidden)
    vx, vy = d.search_data[:seq], d.search_data[1 : seq + 1]
    tx, ty = tr.train[:seq], tr.train[1 : seq + 1]
    mv = d.masks.draw(p.batch_size, tr.V, p.hidden, p.dropouts)
    second, _ = d._second_order(tx, ty, h, vx, vy, mv, eta=0.0)
    loss, _ = d._loss(tr.params, vx, vy, d.h_valid, mv)
    (first,) = torch.autograd.grad(loss, [d.alpha])
    assert torch.allclose(second, first, rtol=1e-4, atol=1e-7) and first.abs().sum() > 0
    third, _ = d._second_order(tx, ty, h, vx, vy, mv, eta=1.0)
    assert not torch.allclose(third, first, rtol=1e-3)


def test_darts_steps_its_alphas_during_training(corpus):
    res = search.run("darts", corpus, SP, [0], search_preset())
    alphas = res.extra["alphas"][0]  # [C, edges, ops]
    init = 1e-3 * torch.randn(3, 5, generator=torch.Generator().manual_seed(0 + 31)).numpy()
    # Adam moves each weight by up to ~lr (3e-3) per mini-batch: far beyond the 1e-3·N(0,1) initialisation
    assert np.abs(alphas[-1] - init).max() > 0.02
    assert not np.allclose(alphas[0], alphas[-1])


def _darts_setup(corpus, order, **changes):
    p = tiny_preset(ws_epochs=1.0, ws_checkpoints=3, ws_valid_tokens=None, ws_final_valid_tokens=None, alpha=2.0,
                    beta=1.0, weight_decay=0.01, **changes)
    ctx = search.Context(corpus, SP, [0, 1], p, torch.device("cpu"))
    d = Darts(ctx, order=order)
    tr = search.SlotTrainer(corpus, [0, 1], SP.n, p, torch.device("cpu"), p.ws_bptt, p.hidden_clip)
    d.attach(tr)
    drawn = []
    real_draw = d.masks.draw
    d.masks.draw = lambda *a: drawn.append(real_draw(*a)) or drawn[-1]
    return p, d, tr, drawn


def _objective(params, alpha, x, y, h, masks, p):
    """DARTS's loss on one window, written from the engine's public pieces: the training objective (CE + AR + TAR)
    of the relaxed cell with these alphas, summed over the slots."""
    from nasbench_ptb.builder.engine import train_loss

    obj, _, h_last = train_loss(params, RelaxedCell(alpha, SP.n, p.hidden, False), x, y, h, masks, p.beta, p.alpha)
    return obj.sum(), h_last


def test_darts_first_order_steps_on_the_next_validation_window_with_its_carried_state(corpus):
    p, d, tr, drawn = _darts_setup(corpus, order=1)
    seq, L = 8, d.search_data.shape[0]
    assert d.search_data.shape[1] == p.batch_size and d.v_pos == 0  # the whole validation split, training batch
    for start_pos, wraps in ((0, False), (L - seq - 1, False), (L - seq, True)):
        d.v_pos = start_pos
        h_before = torch.randn_like(d.h_valid) if start_pos else torch.zeros_like(d.h_valid)
        d.h_valid = h_before.clone()
        alpha = d.alpha.detach().clone().requires_grad_(True)
        d.arch_step(0, seq, torch.zeros_like(tr.hidden))
        at = 0 if wraps else start_pos
        h0 = torch.zeros_like(h_before) if wraps else h_before
        loss, h_last = _objective(tr.params, alpha, d.search_data[at : at + seq], d.search_data[at + 1 : at + 1 + seq],
                                  h0, drawn[-1], p)
        (want,) = torch.autograd.grad(loss, [alpha])
        assert torch.allclose(d.alpha.grad, want, rtol=1e-4, atol=1e-7), start_pos
        assert d.v_pos == at + seq and torch.allclose(d.h_valid, h_last.detach())
        assert not torch.equal(d.alpha.detach(), alpha.detach())  # Adam stepped


def test_darts_second_order_is_the_derivative_of_the_unrolled_validation_loss(corpus):
    """DARTS eq. 7: the gradient of f(α) = L_val(w − ξ(∇w L_train(w, α) + wd·w), α), ξ = lr · seq / bptt, whose
    Hessian term they approximate by finite differences in w; here f itself is differenced in α along random
    directions (no Hessian, no autograd through the step), and the method's gradient must agree."""
    p, d, tr, drawn = _darts_setup(corpus, order=2, lr=20.0)
    seq, start = 8, 5
    h_train = torch.randn_like(tr.hidden) * 0.1
    alpha = d.alpha.detach().clone()
    d.arch_step(start, seq, h_train)
    mv, mt = drawn[-2], drawn[-1]  # the validation masks, then the training masks of the unrolled step
    names = list(tr.params)
    tx, ty = tr.train[start : start + seq], tr.train[start + 1 : start + 1 + seq]
    vx, vy = d.search_data[:seq], d.search_data[1 : seq + 1]
    eta, h0 = p.lr * seq / p.bptt, torch.zeros_like(d.h_valid)

    def unrolled(a):
        w = {k: tr.params[k].detach().clone().requires_grad_(True) for k in names}
        loss_t, _ = _objective(w, a, tx, ty, h_train, mt, p)
        g = torch.autograd.grad(loss_t, [w[k] for k in names])
        return {k: (w[k] - eta * (gk + p.weight_decay * w[k])).detach() for k, gk in zip(names, g)}

    def f(a):
        return float(_objective(unrolled(a), a, vx, vy, h0, mv, p)[0])

    a = alpha.clone().requires_grad_(True)
    (direct,) = torch.autograd.grad(_objective(unrolled(alpha), a, vx, vy, h0, mv, p)[0], [a])  # w' held fixed
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        u = torch.randn(alpha.shape, generator=gen)
        numeric = (f(alpha + 1e-2 * u) - f(alpha - 1e-2 * u)) / 2e-2
        second = float((numeric - (direct * u).sum()))  # what the unrolling adds
        assert abs(second) > 0.1 * abs(numeric)  # it matters in this case
        assert abs(float((d.alpha.grad * u).sum()) - numeric) < 0.02 * abs(second)


def test_darts_batch_norm_is_the_hand_computed_one():
    """Their BatchNorm1d(affine=False): batch statistics (biased variance) while training, running statistics at
    evaluation, updated with momentum 0.1 and the unbiased variance b/(b − 1)."""
    for B in (2, 4):
        A, H = 2, 3
        cell = RelaxedCell(torch.zeros(A, 3, 5), 2, H, batchnorm=True)
        s = torch.arange(A * B * H, dtype=torch.float32).view(A, B, H) ** 1.5 / 7
        out = cell.bn(s)
        mean, var = s.mean(1, keepdim=True), ((s - s.mean(1, keepdim=True)) ** 2).mean(1, keepdim=True)
        assert torch.allclose(out, (s - mean) / torch.sqrt(var + 1e-5), atol=1e-6)
        assert torch.allclose(cell.run_mean, 0.1 * mean, atol=1e-6)
        assert torch.allclose(cell.run_var, 0.9 + 0.1 * var * B / (B - 1), atol=1e-6)
        assert cell.run_mean.shape == (A, 1, H)
        t = s.flip(1) * 2 - 3  # a second batch: the running statistics decay by 1 − momentum
        cell.bn(t)
        mean2, var2 = t.mean(1, keepdim=True), ((t - t.mean(1, keepdim=True)) ** 2).mean(1, keepdim=True)
        assert torch.allclose(cell.run_mean, 0.9 * 0.1 * mean + 0.1 * mean2, atol=1e-5)
        assert torch.allclose(cell.run_var, 0.9 * (0.9 + 0.1 * var * B / (B - 1)) + 0.1 * var2 * B / (B - 1),
                              atol=1e-5)
        cell.training = False
        s2 = s + 1.0
        assert torch.allclose(cell.bn(s2), (s2 - cell.run_mean) / torch.sqrt(cell.run_var + 1e-5), atol=1e-6)
    off = RelaxedCell(torch.zeros(1, 3, 5), 2, H, batchnorm=False)
    assert off.bn(s) is s


def test_the_relaxed_cell_with_one_hot_weights_is_the_discrete_cell_under_dropout_masks():
    """Alphas that put each node's mass on one (edge, op), and every other edge of the node on none, make the
    relaxed cell the discrete cell of that genotype: per slot, with an embedding shared by the slots and masks."""
    from nasbench_ptb.builder.cell import cell_step
    from nasbench_ptb.builder.engine import SlotGenotypes

    sp = space("3node")
    genos = [parse("relu:0|sigmoid:1|identity:1"), parse("tanh:0|identity:0|relu:2")]
    A, B, H = 2, 3, 5
    alpha = torch.full((A, 6, 5), -30.0)
    for a, g in enumerate(genos):
        for k, (op, pred) in enumerate(g.nodes, start=1):
            for j in range(k):
                row = k * (k - 1) // 2 + j
                alpha[a, row, 1 + OPS.index(op) if j == pred else 0] = 30.0
    torch.manual_seed(1)
    params = {"W0": torch.randn(A, 2 * H, 2 * H) * 0.5, "Ws": torch.randn(A, sp.n, H, 2 * H) * 0.5}
    x, h = torch.randn(1, B, H), torch.randn(A, B, H)
    m_x, m_h = (torch.rand(A, B, H) > 0.3).float() / 0.7, (torch.rand(A, B, H) > 0.3).float() / 0.7
    relaxed = RelaxedCell(alpha, sp.n, H, batchnorm=False).step(x, h, params, m_x, m_h)
    sg = SlotGenotypes.of(genos)
    discrete = cell_step(x, h, params["W0"], params["Ws"], sg.preds, sg.ops, m_x, m_h)
    assert relaxed.shape == (A, B, H) and torch.allclose(relaxed, discrete, atol=1e-5)
    plain = RelaxedCell(alpha, sp.n, H, batchnorm=False).step(x, h, params, None, None)  # no dropout
    assert torch.allclose(plain, cell_step(x, h, params["W0"], params["Ws"], sg.preds, sg.ops), atol=1e-5)
    assert [Genotype.of_choices(c).canonical for c in RelaxedCell(alpha, sp.n, H).choices()] == \
        [g.canonical for g in genos]


def test_darts_defaults_are_the_authors_and_bad_options_are_refused(corpus):
    ctx = search.Context(corpus, SP, [0, 3], search_preset(), torch.device("cpu"))
    d = Darts(ctx)
    assert d.options == {"order": 1, "arch_lr": 3e-3, "arch_weight_decay": 1e-3, "batchnorm": 0}
    group = d.adam.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (3e-3, (0.9, 0.999), 1e-3)
    assert d.cell.batchnorm is False and Darts(ctx, batchnorm=1).cell.batchnorm is True
    for a, s in enumerate((0, 3)):  # 1e-3 · N(0, 1) per search seed, as their init
        want = 1e-3 * torch.randn(3, 5, generator=torch.Generator().manual_seed(s + 31))
        assert torch.equal(d.alpha[a].detach(), want)
    d = Darts(ctx, order=2, arch_lr=0.1, arch_weight_decay=0.0)
    assert d.order == 2 and d.adam.param_groups[0]["lr"] == 0.1 and d.adam.param_groups[0]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match=r"^DARTS order must be 1 \(first order\) or 2 \(second order\), got 3$"):
        Darts(ctx, order=3)
    for bad in (2, -1):
        with pytest.raises(ValueError, match=rf"^DARTS batchnorm must be 0 or 1, got {bad}$"):
            Darts(ctx, batchnorm=bad)
    bn = Darts(ctx, batchnorm=1)
    bn.cell.training = False
    assert bn.genotypes() is bn.cell and bn.cell.training is True  # training steps use batch statistics


def test_darts_checkpoint_scores_the_relaxed_net_on_the_split_of_that_epoch(corpus):
    from nasbench_ptb.builder.engine import evaluate

    p = tiny_preset(ws_epochs=1.0, ws_checkpoints=3, ws_valid_tokens=200, ws_final_valid_tokens=None)
    ctx = search.Context(corpus, SP, [0, 1], p, torch.device("cpu"))
    assert ctx.valid_final.shape[0] > ctx.valid_mid.shape[0]  # a prefix at mid-search epochs, whole at the last
    d = Darts(ctx, batchnorm=1)
    tr = search.SlotTrainer(corpus, [0, 1], SP.n, ctx.p, torch.device("cpu"), ctx.p.ws_bptt, ctx.p.hidden_clip)
    d.attach(tr)
    for last in (False, True):
        d.cell.training = True
        choice, est, switch, extra = d.checkpoint(ctx, tr.params, np.array([True, False]), last)
        assert d.cell.training is False  # running BN statistics at evaluation
        want = np.exp(evaluate(tr.params, d.cell, ctx.valid(last), ctx.p.bptt).numpy())
        assert est[0] == pytest.approx(want[0], rel=1e-5) and np.isnan(est[1])
        assert choice.dtype == np.int64 and choice.tolist() == id_of_choices(d.cell.choices().T).tolist()
        assert np.allclose(extra["alphas"], d.alpha.detach().numpy()) and extra["alphas"] is not d.alpha


def test_the_derived_cell_is_each_nodes_best_non_none_weight_over_its_own_edges():
    """DARTS's genotype(): per node, over its own edges j < k only, the (edge, op) whose softmax weight (none
    excluded) is largest — checked by explicit loops on random 3-node alphas."""
    gen = torch.Generator().manual_seed(11)
    alpha = torch.randn(4, 6, 5, generator=gen) * 2
    probs = torch.softmax(alpha, dim=-1).numpy()
    got = RelaxedCell(alpha, 3, 4).choices()
    for a in range(4):
        for k in range(1, 4):
            best = max(((probs[a, k * (k - 1) // 2 + j, 1 + o], 4 * j + o) for j in range(k) for o in range(4)))
            assert got[a, k - 1] == best[1], (a, k)


def test_darts_records_its_bn_option_steps_with_batch_statistics_and_scores_at_the_presets_precision(corpus,
                                                                                                   monkeypatch):
    from nasbench_ptb.builder import darts as darts_mod

    p = tiny_preset(ws_epochs=1.0, ws_checkpoints=3, ws_valid_tokens=None, ws_final_valid_tokens=None, amp="bf16")
    ctx = search.Context(corpus, SP, [0, 1], p, torch.device("cpu"))
    d = Darts(ctx, batchnorm=1)
    assert d.options["batchnorm"] == 1
    tr = search.SlotTrainer(corpus, [0, 1], SP.n, p, torch.device("cpu"), p.ws_bptt, p.hidden_clip)
    d.attach(tr)
    d.cell.training = False
    d.arch_step(0, 6, torch.zeros_like(tr.hidden))
    assert d.cell.training is True and d.cell.run_mean.abs().sum() > 0  # batch statistics, running ones updated
    amps = []
    monkeypatch.setattr(darts_mod, "evaluate", lambda *a, **k: amps.append(a[4:] + tuple(k.values())) or
                        torch.zeros(2))
    d.checkpoint(ctx, tr.params, np.array([True, True]), last=False)
    assert amps == [("bf16",)]
