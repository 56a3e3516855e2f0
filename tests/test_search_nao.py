"""NAO (Luo et al. 2018) against independent expectations: the encoder-predictor-decoder, the pool grown only by the
decoder's proposals, the scores' rescaling, the decoder's valid tokens and attention, its defaults."""
import numpy as np
import pytest
import torch

from nasbench_ptb.builder import search
from nasbench_ptb.builder.nao import Nao, tokens_of
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
