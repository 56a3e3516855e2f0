"""ENAS (Pham et al. 2018) against independent expectations: the controller's equations, the REINFORCE step by hand,
the reward as the documented function of validation perplexity, the derivation, the authors' schedule and defaults."""
import numpy as np
import pytest
import torch

from nasbench_ptb.builder import search
from nasbench_ptb.builder.enas import Controller, Reinforce
from nasbench_ptb.space import id_of_choices, space

from helpers import FAST_SEARCH, search_preset, tiny_preset

SP = space("2node")


def test_enas_controller_concentrates_on_the_best_arm():
    target = 23
    agent = Reinforce(Controller(SP.n, 32, seed=0), seed=0, lr=0.01, entropy_weight=0.0)

    def share():
        return float((id_of_choices(agent.draw(400).T) == target).mean())

    before = share()
    for _ in range(150):
        agent.step(10, lambda ch: np.where(id_of_choices(ch.T) == target, 1.0, 0.1))
    assert before < 0.15 and share() > 0.6


def test_enas_samples_are_valid_cells_with_consistent_log_probabilities():
    c = Controller(space("3node").n, 16, seed=1)
    choices, logp, terms, entropy = c.sample(4000, torch.Generator().manual_seed(0))
    ids = id_of_choices(choices.numpy().T)
    assert ((ids >= 0) & (ids < 384)).all() and len(set(ids.tolist())) > 100
    assert (choices[:, 0] < 4).all() and (choices[:, 1] < 8).all()  # node 1: predecessor 0 only; node 2: 0..1
    assert (logp < 0).all() and (entropy > 0).all() and (terms > 0).all()
    assert (terms <= 5 / np.e + 1e-6).all()  # −log p · p ≤ 1/e for each of the 5 sampled decisions
    # an untrained controller's logits are ~0: uniform ops, and predecessors by the distance penalty (k − j)²/12
    pen = [np.exp(-np.array([(k - j) ** 2 for j in range(k)]) / 12.0) for k in (2, 3)]
    pen = [q / q.sum() for q in pen]
    want = -3 * np.log(4) + sum(float((q * np.log(q)).sum()) for q in pen)
    assert abs(float(logp.detach().mean()) - want) < 0.15
    preds3 = (choices[:, 2] // 4).numpy()  # node 3's predecessor: nearer nodes are likelier
    freq = np.bincount(preds3, minlength=3) / len(preds3)
    assert freq[2] > freq[1] > freq[0] and np.abs(freq - pen[1]).max() < 0.05
    assert abs(float(entropy.mean()) - (3 * np.log(4) - sum(float((q * np.log(q)).sum()) for q in pen))) < 0.1


def test_enas_reward_is_80_over_the_clipped_validation_ppl_plus_the_entropy_terms():
    """The documented reward: 80 / exp(min(loss, 10)) on a validation batch, plus 0.001 × Σ −log p · p of the
    sampled decisions; the baseline an EMA from 0 (decay 0.99) that moves before each advantage is taken."""
    from nasbench_ptb.builder.enas import Enas

    e = Enas.__new__(Enas)
    e.c = 80.0
    assert e.reward(np.array([np.log(100.0), 12.0, np.nan, np.inf])) == pytest.approx(
        [0.8, 80 / np.exp(10), 80 / np.exp(10), 80 / np.exp(10)])
    agent = Reinforce(Controller(SP.n, 8, seed=0), seed=0, lr=1e-3, entropy_weight=0.0)
    r = agent.step(3, lambda ch: np.ones(len(ch)))
    assert r.tolist() == [1.0, 1.0, 1.0] and agent.baseline == pytest.approx(1 - 0.99 ** 3)
    bonus = Reinforce(Controller(SP.n, 8, seed=0), seed=0, lr=1e-3, entropy_weight=1.0)
    r = bonus.step(5, lambda ch: np.zeros(len(ch)))  # the reward is then the entropy terms alone
    assert (r > 0).all() and (r <= 3 / np.e).all()  # 3 decisions in 2node (node 1's predecessor is fixed)


def test_enas_rewards_and_derivation_read_random_validation_batches(corpus, monkeypatch):
    """Which split feeds the controller: every reward and every derivation score is a bptt + 1-row window of
    the validation prefix (never training data), at positions that vary."""
    from nasbench_ptb.builder import enas as enas_mod

    seen = []
    real = enas_mod.evaluate_all

    def spy(params, slot, genos, data, bptt, **kw):
        seen.append(data)
        return real(params, slot, genos, data, bptt, **kw)

    monkeypatch.setattr(enas_mod, "evaluate_all", spy)
    p = search_preset()
    ctx = search.Context(corpus, SP, [0], p, torch.device("cpu"))
    valid = ctx.valid_mid
    search.run("enas", corpus, SP, [0], p, options=FAST_SEARCH["enas"])
    assert len(seen) == 2 * 1 + 3  # 3 updates per epoch → 1 per third of an epoch, after the first two; 3 derivations
    starts = set()
    for d in seen:
        assert d.shape == (p.bptt + 1, valid.shape[1])
        hits = [i for i in range(valid.shape[0] - p.bptt) if torch.equal(valid[i : i + p.bptt + 1], d)]
        assert hits, "not a window of the validation prefix"
        starts.add(hits[0])
    assert len(starts) > 2


def test_enas_trains_its_controller_at_the_authors_rate_per_epoch_of_child_training(corpus, monkeypatch):
    """100 updates per epoch of shared-weight training (ENAS trains its controller once per epoch): with search
    epochs every third of an epoch, a third of them after each; never fewer than one."""
    from nasbench_ptb.builder.enas import Enas

    steps = []
    real = Reinforce.step
    monkeypatch.setattr(Reinforce, "step", lambda self, k, reward: steps.append(k) or real(self, k, reward))
    search.run("enas", corpus, SP, [0], search_preset(), options={"controller_steps": 30, "controller_aggregate": 2,
                                                           "derive": 5})
    assert steps == [2] * 20  # 30 × 1/3 = 10 updates of 2 samples after each of the first two search epochs
    e = Enas.__new__(Enas)
    e.steps = 100
    assert e.updates(0.1) == 10 and e.updates(0.001) == 1 and e.updates(2.0) == 200


def _reference_sample_terms(c, choices: torch.Tensor):
    """ENAS's controller written out from the module docstring, one cell at a time and teacher-forced on given
    choices: Σ log p of the decisions, Σ −log p·p of the chosen ones and Σ H of every decision."""
    from nasbench_ptb.builder.enas import S0_OP

    W = lambda m: m.weight  # noqa: E731  (bias-free layers: only the weights enter)
    sq = lambda x: 2.5 * torch.tanh(x / 5.0)  # noqa: E731
    out = []
    for row in choices:
        logp = terms = ent = 0.0

        def decide(logits, pick):
            nonlocal logp, terms, ent
            lp = torch.log_softmax(logits, dim=0)
            logp += float(lp[pick])
            terms += float(-lp[pick] * lp[pick].exp())
            ent += float(-(lp.exp() * lp).sum())

        h, cs = c.lstm(c.g_emb.view(1, -1))
        recorded = [h[0]]
        inp = W(c.w_emb)[S0_OP].view(1, -1)
        for k in range(1, c.n + 1):
            h, cs = c.lstm(inp, (h, cs))
            pred, op = int(row[k - 1]) // 4, int(row[k - 1]) % 4
            if k >= 2:
                score = torch.stack([W(c.attn_v)[0] @ torch.tanh(W(c.attn_2) @ h[0] + W(c.attn_1) @ recorded[j])
                                     for j in range(k)])
                decide(sq(score) - torch.tensor([(k - j) ** 2 / 12.0 for j in range(k)]), pred)
            recorded.append(h[0])
            inp = (recorded[pred] / (0.1 + k - pred)).view(1, -1)
            h, cs = c.lstm(inp, (h, cs))
            decide(sq(W(c.w_soft) @ h[0]), op)
            inp = W(c.w_emb)[op].view(1, -1)
        out.append((logp, terms, ent))
    return np.array(out)


def test_enas_controller_probabilities_are_the_documented_equations():
    """Every term of the sampler against the equations written out by hand: the squashing 2.5·tanh(·/5), the
    attention v·tanh(W₂h + W₁h_j) over the recorded h (not c) states, the (k − j)²/12 penalty, the next input
    h_j / (0.1 + k − j), the carried LSTM state, the op logits from h."""
    c = Controller(space("3node").n, 12, seed=3)
    with torch.no_grad():  # larger weights than the ±0.1 initialisation, so every term moves the logits
        for p in c.parameters():
            p.mul_(8.0)
    choices, logp, terms, entropy = c.sample(6, torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = _reference_sample_terms(c, choices)
    np.testing.assert_allclose(logp.detach().numpy(), ref[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(terms.numpy(), ref[:, 1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(entropy.numpy(), ref[:, 2], rtol=1e-4, atol=1e-5)


def test_a_reinforce_step_is_the_hand_computed_update():
    """One step of REINFORCE by hand: the rewards handed to it plus entropy_weight × the sampled decisions'
    entropy terms, the EMA baseline updated before each advantage, and Adam's first step, which moves every
    parameter by lr against the sign of the gradient of −mean(log p · advantage)."""
    import copy

    agent = Reinforce(Controller(SP.n, 8, seed=2), seed=4, lr=0.01, entropy_weight=0.5, baseline_decay=0.9)
    before = copy.deepcopy(agent.c)
    gen = torch.Generator()
    gen.set_state(agent.gen.get_state())
    choices, logp, terms, full = before.sample(4, gen)  # what the agent is about to draw
    given = np.array([1.0, 3.0, 0.5, 2.0])
    seen = []
    r = agent.step(4, lambda ch: seen.append(ch.copy()) or given)
    np.testing.assert_array_equal(seen[0], choices.numpy())
    np.testing.assert_allclose(r, given + 0.5 * terms.numpy(), rtol=1e-6)
    baseline, adv = 0.0, []
    for ri in r:
        baseline = 0.9 * baseline + 0.1 * ri
        adv.append(ri - baseline)
    assert agent.baseline == pytest.approx(baseline)
    assert agent.last_entropy == pytest.approx(float(full.mean()))
    loss = -(logp * torch.tensor(adv, dtype=logp.dtype)).mean()
    loss.backward()
    moved = checked = 0
    for (name, p0), p1 in zip(before.named_parameters(), agent.c.parameters()):
        g = p0.grad
        strong = g.abs() > 1e-5
        delta = (p1 - p0).detach()
        assert torch.allclose(delta[strong], -0.01 * torch.sign(g[strong]), rtol=0.05), name
        moved, checked = moved + int(strong.sum()), checked + g.numel()
    assert moved > checked // 4


def test_enas_derives_the_best_sampled_cell_and_treats_a_non_finite_loss_as_worst(corpus, monkeypatch):
    from nasbench_ptb.builder.enas import Enas

    ctx = search.Context(corpus, SP, [0, 1], search_preset(), torch.device("cpu"))
    e = Enas(ctx, derive=40)
    scored = {}

    def losses(params, s, ids):  # 5 nats, less the closer to id 13; id 13 itself is not finite
        scored[s] = ids.copy()
        return np.where(ids == 13, np.nan, 5.0 + 0.01 * np.abs(ids - 13))

    monkeypatch.setattr(e, "losses", losses)
    choice, est, switch, extra = e.checkpoint(ctx, {}, np.array([True, False]), last=True)
    ids = scored[0]
    assert set(scored) == {0} and len(ids) > 5 and 13 in ids  # slot 1 is dead: not scored
    finite = ids[ids != 13]
    want = finite[np.argmin(np.abs(finite - 13))]
    assert choice.dtype == np.int64 and choice[0] == want and choice[1] == 0
    assert est[0] == pytest.approx(np.exp(5.0 + 0.01 * abs(want - 13))) and np.isnan(est[1])
    assert switch[0] == pytest.approx(np.log(est[0])) and switch[1] == np.inf
    assert set(extra) == {"entropy"} and np.isnan(extra["entropy"]).all()  # no controller step yet


def test_enas_defaults_are_the_authors_and_each_option_reaches_its_place(corpus):
    from nasbench_ptb.builder.enas import Enas

    ctx = search.Context(corpus, SP, [0], search_preset(), torch.device("cpu"))
    e = Enas(ctx)
    assert e.options == {"controller_steps": 100, "controller_aggregate": 10, "controller_lr": 1e-3,
                         "controller_hidden": 100, "entropy_weight": 1e-3, "baseline_decay": 0.99, "derive": 100,
                         "reward_c": 80.0}
    a = e.agents[0]
    assert a.opt.param_groups[0]["lr"] == 1e-3 and a.entropy_weight == 1e-3 and a.decay == 0.99
    assert a.c.lstm.hidden_size == 100 and (e.steps, e.aggregate, e.derive, e.c) == (100, 10, 100, 80.0)
    e = Enas(ctx, controller_lr=0.02, entropy_weight=0.3, baseline_decay=0.5, controller_hidden=12, reward_c=7.0)
    a = e.agents[0]
    assert a.opt.param_groups[0]["lr"] == 0.02 and a.entropy_weight == 0.3 and a.decay == 0.5
    assert a.c.lstm.hidden_size == 12 and a.c.g_emb.shape == (1, 12) and e.c == 7.0
    assert all(m.bias is None for m in (a.c.w_soft, a.c.attn_1, a.c.attn_2, a.c.attn_v))


@pytest.mark.parametrize("bad", [{"controller_steps": 0}, {"controller_aggregate": 0}, {"controller_hidden": 0},
                                 {"derive": 0}, {"controller_lr": 0.0}, {"baseline_decay": 1.0},
                                 {"baseline_decay": -0.1}, {"entropy_weight": -1e-3}])
def test_enas_refuses_each_bad_option_and_accepts_the_boundaries(corpus, bad):
    from nasbench_ptb.builder.enas import Enas

    ctx = search.Context(corpus, SP, [0], search_preset(), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"^ENAS controller_steps, controller_aggregate, controller_hidden and "
                                         r"derive must be ≥ 1, controller_lr > 0, baseline_decay in \[0, 1\), "
                                         r"entropy_weight ≥ 0$"):
        Enas(ctx, **bad)
    Enas(ctx, controller_steps=1, controller_aggregate=1, controller_hidden=1, derive=1, controller_lr=1e-9,
         baseline_decay=0.0, entropy_weight=0.0)


def test_enas_controllers_start_from_their_own_seed_and_score_at_the_presets_precision(corpus, monkeypatch):
    from nasbench_ptb.builder import enas as enas_mod

    ctx = search.Context(corpus, SP, [0, 5], tiny_preset(amp="bf16"), torch.device("cpu"))
    e = enas_mod.Enas(ctx, controller_hidden=8)
    for agent, seed in zip(e.agents, (0, 5)):  # each search seed's controller: its own initialisation
        want = Controller(SP.n, 8, seed=seed)
        assert all(torch.equal(a, b) for a, b in zip(agent.c.parameters(), want.parameters()))
    kwargs = []
    monkeypatch.setattr(enas_mod, "evaluate_all", lambda *a, **k: kwargs.append(k) or np.zeros(len(a[2].preds)))
    e.losses({}, 1, np.array([2, 7]))
    assert kwargs == [{"amp": "bf16"}]
