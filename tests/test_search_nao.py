"""NAO (Luo et al. 2018) against independent expectations: the encoder-predictor-decoder, the pool grown only by the
decoder's proposals, the scores' rescaling, the decoder's valid tokens and attention, its defaults."""
import copy

import numpy as np
import pytest
import torch

from nasbench_ptb.builder import search
from nasbench_ptb.builder.nao import EPD, Nao, tokens_of
from nasbench_ptb.space import space

from helpers import search_preset, tiny_preset

SP = space("2node")


def test_nao_predictor_fits_a_constructed_ranking_and_the_decoder_rebuilds_cells(corpus):
    ctx = search.Context(corpus, SP, [0], search_preset(), torch.device("cpu"))
    nao = Nao(ctx)  # the script's 1000 EPD epochs
    ids = np.arange(SP.size)
    truth = np.array([(g.ops[0] == 1) * 2 + (g.ops[1] == 2) + 0.5 * g.preds[1] for g in SP], dtype=float)
    score = (truth - truth.min()) / (truth.max() - truth.min())
    assert nao.fit(0, ids, score) > 0.8
    m = nao.epds[0]
    with torch.no_grad():
        tokens = torch.as_tensor(tokens_of(SP, ids))
        rebuilt = m.decode_logits(m.outputs(tokens)).argmax(-1)
    assert (rebuilt == tokens).all(dim=1).float().mean() > 0.9
    new = nao.propose(0, ids[:8], score[:8])
    assert 1 <= len(new) <= nao.new == 4 and not set(new) & set(ids[:8].tolist()) and all(0 <= i < SP.size for i in new)
    # moving up the predictor's gradient raises the prediction (the sign of the step): decode, re-encode, predict
    best = torch.as_tensor(tokens_of(SP, ids[np.argsort(-score)[:4]]))
    with torch.no_grad():
        before = m.predict(m.encode(best))
    after = m.predict(m.encode(m.moved(best, 4.0))).detach()
    assert float(after.mean()) >= float(before.mean()) - 1e-6


def test_nao_pool_grows_only_by_decoder_proposals_replacing_its_worst(corpus, monkeypatch):
    """NAO's defining rule (issue 26): the initial pool is random, then every cell that enters was decoded from
    the top cells moved along the predictor's gradient; the pool keeps its size, the worst cells make room."""
    from nasbench_ptb.builder import nao as nao_mod

    decoded, scored = [], []
    real_moved, real_score = nao_mod.EPD.moved, search.Context.score

    def moved(self, tokens, step):
        out = real_moved(self, tokens, step)
        decoded.append(set(nao_mod.ids_of_tokens(out.numpy(), SP.n).tolist()))
        return out

    def score(self, params, slot, ids, data):
        out = real_score(self, params, slot, ids, data)
        scored.append((np.asarray(ids).copy(), out))
        return out

    monkeypatch.setattr(nao_mod.EPD, "moved", moved)
    monkeypatch.setattr(search.Context, "score", score)
    p = tiny_preset(ws_epochs=1.0, ws_checkpoints=5, ws_valid_tokens=None, ws_final_valid_tokens=None)
    res = search.run("nao", corpus, SP, [4], p, options={"epd_epochs": 3, "max_step": 3})
    pool, proposed = res.extra["pool"][0].astype(bool), res.extra["proposed"][0].astype(bool)
    assert pool.shape == (5, 32) and (pool.sum(axis=1) == 8).all()  # 0.25 of 32, constant
    all_decoded = set().union(*decoded)
    for c in range(1, 5):
        entered = set(np.flatnonzero(pool[c] & ~pool[c - 1]).tolist())
        assert entered == set(np.flatnonzero(proposed[c - 1]).tolist()) and entered <= all_decoded
        assert not (proposed[c - 1] & pool[c - 1]).any()
        ids, ppl = scored[c - 1]  # the pool scored at checkpoint c - 1: its worst left
        order = ids[np.argsort(ppl, kind="stable")]
        left = set(np.flatnonzero(pool[c - 1] & ~pool[c]).tolist())
        assert left == set(order[len(order) - len(entered):].tolist()) if entered else not left
    assert res.final[0] == scored[-1][0][np.argmin(scored[-1][1])]  # the last pool's best under the shared weights
    assert not proposed[-1].any()  # no proposal after the last search epoch


def test_nao_never_fills_the_pool_with_cells_the_decoder_did_not_propose(corpus, monkeypatch):
    """A decoder that only rebuilds its inputs proposes nothing new: the pool stays as it was (the old code topped
    it up with random cells, which is how it came to score the whole space)."""
    from nasbench_ptb.builder import nao as nao_mod

    monkeypatch.setattr(nao_mod.EPD, "moved", lambda self, tokens, step: tokens)
    res = search.run("nao", corpus, SP, [1], search_preset(), options={"epd_epochs": 2, "max_step": 2})
    pool = res.extra["pool"][0].astype(bool)
    assert (pool == pool[0]).all() and not res.extra["proposed"].any() and pool[0].sum() == 8


def test_nao_scores_are_the_pools_perplexities_rescaled_to_zero_one():
    from nasbench_ptb.builder.nao import normalised_score

    assert normalised_score(np.array([100.0, 200.0, 150.0, 125.0])).tolist() == [1.0, 0.0, 0.5, 0.75]
    assert normalised_score(np.array([100.0, np.inf, 300.0, np.nan])).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert normalised_score(np.array([7.0, 7.0, np.inf])).tolist() == [0.5, 0.5, 0.0]
    assert normalised_score(np.array([np.inf, np.nan])).tolist() == [0.0, 0.0]


def test_nao_defaults_are_the_authors_and_bad_options_are_refused(corpus):
    ctx = search.Context(corpus, SP, [0, 1], search_preset(), torch.device("cpu"))
    n = Nao(ctx)
    assert n.options == {"pool_fraction": 0.25, "new": 4, "top": 2, "epd_epochs": 1000, "epd_batch": 100,
                         "epd_hidden": 64, "max_step": 50, "lr": 1e-3, "trade_off": 0.8, "grad_bound": 5.0}
    assert [len(set(p)) for p in n.pools] == [8, 8] and n.pools[0] != n.pools[1]  # a quarter of the 32, per seed
    assert type(n.new) is int and type(n.top) is int  # counts, recorded as such in the options
    assert (n.new, n.top, n.epochs, n.batch, n.max_step, n.trade_off, n.grad_bound) == (4, 2, 1000, 100, 50, 0.8, 5.0)
    assert n.epds[0].decoder.hidden_size == 64 and n.opts[0].param_groups[0]["lr"] == 1e-3
    n = Nao(ctx, pool_fraction=0.5, epd_hidden=12, lr=0.02)  # pool 16: new half of it, top a sixth (rounded up)
    assert (len(n.pools[0]), n.new, n.top) == (16, 8, 3) and n.epds[0].decoder.hidden_size == 12
    assert n.opts[0].param_groups[0]["lr"] == 0.02
    assert len(Nao(ctx, pool_fraction=1.0).pools[0]) == 32 and len(Nao(ctx, pool_fraction=0.01).pools[0]) == 2
    Nao(ctx, new=8, top=8, epd_epochs=1, epd_batch=1, epd_hidden=1, max_step=1, trade_off=0.0, lr=1e-9)
    Nao(ctx, new=1, top=1, trade_off=1.0)
    message = (r"^NAO needs pool_fraction in \(0, 1\], 1 ≤ new ≤ pool size \((\d+)\), 1 ≤ top ≤ pool size, "
               r"epd_epochs, epd_batch, epd_hidden and max_step ≥ 1, trade_off in \[0, 1\], lr > 0$")
    for bad in ({"pool_fraction": 0.0}, {"pool_fraction": 1.5}, {"new": 0}, {"new": 9}, {"top": 0}, {"top": 9},
                {"epd_epochs": 0}, {"epd_batch": 0}, {"epd_hidden": 0}, {"max_step": 0}, {"trade_off": -0.1},
                {"trade_off": 1.1}, {"lr": 0.0}):
        with pytest.raises(ValueError, match=message):
            Nao(ctx, **bad)


def test_nao_checkpoint_returns_the_pools_best_and_replaces_its_worst_by_the_proposals(corpus, monkeypatch):
    p = tiny_preset(ws_epochs=1.0, ws_checkpoints=3, ws_valid_tokens=200, ws_final_valid_tokens=None)
    ctx = search.Context(corpus, SP, [0, 1], p, torch.device("cpu"))
    n = Nao(ctx)
    pool = list(n.pools[0])
    ppl_of = {i: 100.0 + 10 * ((i * 7) % 32) for i in range(32)}  # distinct perplexities
    seen = []

    def score(params, s, ids, data):
        seen.append((s, data))
        return np.array([ppl_of[int(i)] for i in ids])

    outside = [i for i in range(32) if i not in pool][:3]
    monkeypatch.setattr(ctx, "score", score)
    monkeypatch.setattr(n, "fit", lambda s, ids, sc: 0.7)
    monkeypatch.setattr(n, "propose", lambda s, ids, sc: outside)
    choice, est, switch, extra = n.checkpoint(ctx, {}, np.array([True, False]), last=False)
    by_ppl = sorted(pool, key=ppl_of.get)
    assert choice.dtype == np.int64 and choice[0] == by_ppl[0] and choice[1] == 0
    assert est[0] == ppl_of[by_ppl[0]] and np.isnan(est[1]) and switch[0] == pytest.approx(np.log(est[0]))
    assert len(seen) == 1 and seen[0][0] == 0 and seen[0][1] is ctx.valid_mid  # the prefix mid-search
    assert sorted(n.pools[0]) == sorted(by_ppl[:5] + outside)  # the 3 worst made room for the 3 proposals
    assert extra["pool"].dtype == np.int8 and set(np.flatnonzero(extra["pool"][0])) == set(pool)
    assert extra["pool"][0].max() == 1 and not extra["pool"][1].any()
    assert extra["proposed"].dtype == np.int8
    assert set(np.flatnonzero(extra["proposed"][0])) == set(outside) and extra["proposed"][0].max() == 1
    assert extra["predictor_tau"][0] == 0.7 and np.isnan(extra["predictor_tau"][1])
    assert set(extra) == {"pool", "proposed", "predictor_tau"}
    grown = list(n.pools[0])
    seen.clear()
    choice, est, switch, extra = n.checkpoint(ctx, {}, np.array([True, True]), last=True)  # scores only
    assert n.pools[0] == grown and not extra["proposed"].any() and np.isnan(extra["predictor_tau"]).all()
    assert all(data is ctx.valid_final for _, data in seen) and choice[0] == min(grown, key=ppl_of.get)


def test_nao_decoder_admits_only_valid_tokens_and_its_attention_is_the_documented_one():
    from nasbench_ptb.builder.nao import EPD

    n = 3
    m = EPD(n, hidden=10, emb=6, seed=2)
    allowed = [{0}, {3, 4, 5, 6}, {0, 1}, {3, 4, 5, 6}, {0, 1, 2}, {3, 4, 5, 6}]
    assert [set(np.flatnonzero(np.isfinite(row.numpy()))) for row in m.valid] == allowed
    assert (m.valid[torch.isfinite(m.valid)] == 0).all()
    tokens = torch.as_tensor(tokens_of(space("3node"), [5, 100, 383]))
    with torch.no_grad():
        out = m.outputs(tokens)
        forced = m.decode_logits(out, tokens)
        greedy = m.decode_logits(out)
        # the first two steps by hand: start token, state (e, e), dot-product attention over the encoder outputs
        e = torch.nn.functional.normalize(out.mean(dim=1), dim=-1)
        state = m.decoder(m.dec_embed(torch.full((3,), n + 4, dtype=torch.long)), (e, e))
        for t in range(2):
            h = state[0]
            w = torch.softmax((out * h[:, None, :]).sum(-1), dim=1)
            ctx = (w[:, :, None] * out).sum(1)
            want = m.out(torch.tanh(m.attend(torch.cat([h, ctx], dim=1)))) + m.valid[t]
            assert torch.allclose(forced[:, t], want, atol=1e-5), t
            state = m.decoder(m.dec_embed(tokens[:, t]), state)
    assert torch.equal(forced[:, 0], greedy[:, 0])
    own = greedy.argmax(-1)
    assert torch.allclose(m.decode_logits(out, own), greedy)  # greedy = teacher-forced on its own decode
    other = own.clone()
    other[:, 1] = n + (own[:, 1] - n + 1) % 4  # another op for node 1: fed, it changes the next step
    with torch.no_grad():
        fed = m.decode_logits(out, other)
    assert torch.allclose(fed[:, 1], greedy[:, 1]) and not torch.allclose(fed[:, 2], greedy[:, 2])
    # the joint loss: trade_off × MSE of the predictor + (1 − trade_off) × the teacher-forced NLL
    score = torch.tensor([0.2, 0.9, 0.5])
    with torch.no_grad():
        mse = (m.predict(e) - score).pow(2).mean()
        ce = torch.nn.functional.cross_entropy(forced.reshape(-1, 7), tokens.reshape(-1))
        assert float(m.loss(tokens, score, 0.3)) == pytest.approx(float(0.3 * mse + 0.7 * ce), rel=1e-5)


def test_the_epd_has_the_scripts_sizes_and_treats_each_cell_of_a_batch_alone():
    m = EPD(2)
    assert (m.encoder.input_size, m.encoder.hidden_size, m.embed.embedding_dim) == (64, 64, 32)
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), EPD(2, seed=0).parameters()))  # seed 0 default
    tokens = torch.as_tensor(tokens_of(SP, np.array([5, 17, 30])))
    out = m.outputs(tokens)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3, 2))  # every output L2-normalised over the hidden size
    for b in range(3):  # a cell's encoding and decoding do not depend on the other cells of its batch
        assert torch.allclose(out[b], m.outputs(tokens[b : b + 1])[0], atol=1e-6)
        assert torch.allclose(m.decode_logits(out)[b], m.decode_logits(out[b : b + 1])[0], atol=1e-6)


def test_the_decoders_mask_admits_exactly_a_nodes_predecessors_then_the_ops():
    m = EPD(3)  # tokens: predecessors 0..2, then the 4 ops at 3..6
    allowed = (m.valid == 0).int().tolist()
    assert allowed == [[1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1],  # node 1 reads 0; its op
                       [1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1],  # node 2 reads 0 or 1
                       [1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1]]  # node 3 reads 0, 1 or 2
    assert torch.isneginf(m.valid[m.valid != 0]).all()


def test_the_epd_loss_is_the_trade_off_of_prediction_mse_and_teacher_forced_reconstruction():
    m = EPD(2, seed=3)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # weights large enough that what the decoder is fed changes its logits
        for p in m.parameters():
            p.copy_(torch.empty(p.shape).uniform_(-1, 1, generator=g))
    tokens = torch.as_tensor(tokens_of(SP, np.array([1, 8, 22, 31])))
    y = torch.tensor([0.0, 0.25, 1.0, 0.5])
    out = m.outputs(tokens)
    mse = ((m.predict(m.embedding(out)) - y) ** 2).mean()
    logits = m.decode_logits(out, tokens)  # teacher-forced: each step is fed the true previous token
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))
    greedy = m.decode_logits(out)
    assert not torch.equal(greedy.argmax(-1), tokens)  # so teacher forcing is what the loss below must use
    assert torch.allclose(m.loss(tokens, y), 0.8 * mse + 0.2 * ce)  # the script's trade_off 0.8 by default
    assert torch.allclose(m.loss(tokens, y, 0.3), 0.3 * mse + 0.7 * ce)


def test_the_default_pool_top_and_new_follow_the_scripts_proportions(corpus):
    for name, size, top, new in (("3node", 96, 16, 48), ("1node", 2, 1, 1)):  # 3node: ceil(96/6), 96 // 2
        ctx = search.Context(corpus, space(name), [0], search_preset(), torch.device("cpu"))
        n = Nao(ctx)
        assert (len(n.pools[0]), n.top, n.new) == (size, top, new), name


def test_each_search_seed_has_its_own_epd_and_the_same_seed_fits_the_same(corpus):
    def fitted():
        ctx = search.Context(corpus, SP, [0, 1], search_preset(), torch.device("cpu"))
        n = Nao(ctx, epd_epochs=3, epd_batch=3)
        assert not torch.equal(n.epds[0].regressor.weight, n.epds[1].regressor.weight)
        n.fit(0, np.array([2, 9, 11, 20, 25]), np.array([1.0, 0.0, 0.5, 0.25, 0.75]))
        return [p.detach().clone() for p in n.epds[0].parameters()]

    assert all(torch.equal(a, b) for a, b in zip(fitted(), fitted()))  # the batches' shuffle is seeded


def test_one_fit_epoch_with_the_whole_pool_in_a_batch_is_one_clipped_adam_step_on_the_joint_loss(corpus):
    ctx = search.Context(corpus, SP, [0], search_preset(), torch.device("cpu"))
    n = Nao(ctx, epd_epochs=2, epd_batch=8, trade_off=0.5, lr=0.01, grad_bound=0.05)
    ids, score = np.array([3, 7, 12, 19, 24, 30]), np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ref = EPD(2, seed=0)
    opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    tokens, y = torch.as_tensor(tokens_of(SP, ids)), torch.as_tensor(score, dtype=torch.float32)
    shuffle = copy.deepcopy(n.shuffles[0])  # the same batch order (Adam's first steps amplify rounding)
    for _ in range(2):  # the batch holds the whole pool: one step per epoch
        order = torch.as_tensor(shuffle.permutation(len(ids)))
        opt.zero_grad()
        ref.loss(tokens[order], y[order], 0.5).backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.05)
        opt.step()
    tau = n.fit(0, ids, score)
    for a, b in zip(n.epds[0].parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    with torch.no_grad():
        pred = ref.predict(ref.encode(tokens)).numpy()
    from scipy.stats import kendalltau

    assert tau == pytest.approx(kendalltau(pred, score).statistic)
    assert np.isfinite(n.fit(0, ids[:2], score[:2])) and np.isnan(n.fit(0, ids[:1], score[:1]))  # tau needs 2


def _stub_decoder(monkeypatch, rows_at):
    """EPD.moved returning the cells ``rows_at(step)`` (as tokens), recording the step sizes asked for."""
    steps = []

    def moved(self, tokens, step):
        steps.append(step)
        return torch.as_tensor(tokens_of(SP, np.array(rows_at(step))))

    monkeypatch.setattr(EPD, "moved", moved)
    return steps


def test_proposals_step_lambda_one_by_one_up_to_max_step_when_the_decoder_finds_nothing_new(corpus, monkeypatch):
    ctx = search.Context(corpus, SP, [0], search_preset(), torch.device("cpu"))
    n = Nao(ctx, max_step=4)
    ids = np.asarray(n.pools[0])
    steps = _stub_decoder(monkeypatch, lambda step: list(ids[:2]))  # only cells already in the pool
    assert n.propose(0, ids, np.linspace(0, 1, len(ids))) == []  # never filled up by other means
    assert steps == [1.0, 2.0, 3.0, 4.0]


def test_proposals_stop_at_new_cells_even_when_one_step_decodes_more(corpus, monkeypatch):
    ctx = search.Context(corpus, SP, [0], search_preset(), torch.device("cpu"))
    n = Nao(ctx, new=2, top=3, max_step=5)
    ids = np.asarray(n.pools[0])
    outside = [i for i in range(SP.size) if i not in set(ids.tolist())][:3]
    steps = _stub_decoder(monkeypatch, lambda step: outside)  # three new cells at the first step
    assert n.propose(0, ids, np.linspace(0, 1, len(ids))) == outside[:2] and steps == [1.0]


def test_ties_in_the_pools_scores_keep_pool_order_when_choosing_the_top_and_the_worst(corpus, monkeypatch):
    sp3 = space("3node")
    ctx = search.Context(corpus, sp3, [0], search_preset(), torch.device("cpu"))
    n = Nao(ctx)  # a pool of 96: past the size where numpy's default sort happens to keep ties in order
    ids = np.asarray(n.pools[0])
    score = np.repeat([0.5, 0.2, 0.9, 0.0], 24)[np.random.RandomState(0).permutation(96)]
    seen = []
    monkeypatch.setattr(EPD, "moved", lambda self, tokens, step: seen.append(tokens.clone()) or tokens)
    n.propose(0, ids, score)
    top = [int(i) for i in ids[score == 0.9][: n.top]]  # the first 16 of the 24 tied best, in pool order
    assert torch.equal(seen[0], torch.as_tensor(tokens_of(sp3, np.array(top))))
    ppl = np.where(score == 0.9, 100.0, np.where(score == 0.5, 200.0, np.where(score == 0.2, 300.0, 400.0)))
    monkeypatch.setattr(ctx, "score", lambda params, s, pool, data: ppl)
    monkeypatch.setattr(n, "fit", lambda s, pool, sc: 0.0)
    outside = [i for i in range(sp3.size) if i not in set(ids.tolist())][:30]
    monkeypatch.setattr(n, "propose", lambda s, pool, sc: outside)
    n.checkpoint(ctx, {}, np.array([True]), last=False)
    order = [int(i) for sc in (0.9, 0.5, 0.2) for i in ids[score == sc]]  # best first, ties in pool order
    assert n.pools[0] == order[:66] + outside
