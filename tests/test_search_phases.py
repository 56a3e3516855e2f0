"""Real search phases (DARTS, ENAS, NAO, random-WS) on the real super-net: end to end at a tiny size, each
method's learning rule against a constructed case whose answer is known, the results file, the CLI."""
import numpy as np
import pytest
import torch

from nasbench_ptb import search_results
from nasbench_ptb.builder import search
from nasbench_ptb.builder.cell import ACTIVATIONS, highway, slot_mm
from nasbench_ptb.builder.darts import Darts, RelaxedCell
from nasbench_ptb.builder.enas import Controller, Reinforce
from nasbench_ptb.builder.nao import Nao, tokens_of
from nasbench_ptb.cli import main
from nasbench_ptb.schema import Status, TableError
from nasbench_ptb.space import OPS, Genotype, id_of_choices, parse, space

from helpers import tiny_corpus, tiny_preset

SP = space("2node")
FAST = {"enas": {"controller_steps": 3, "controller_aggregate": 4, "derive": 20}, "nao": {"epd_epochs": 5, "max_step": 3},
        "darts": {}, "random_ws": {}}


@pytest.fixture(scope="module")
def corpus():
    return tiny_corpus()


def preset():
    return tiny_preset(ws_epochs=1.0, ws_checkpoints=3, ws_valid_tokens=None, ws_final_valid_tokens=None)


@pytest.mark.parametrize("algo", search_results.ALGORITHMS)
def test_each_algorithm_runs_end_to_end_and_is_reproducible(corpus, algo):
    a = search.run(algo, corpus, SP, [0, 1], preset(), options=FAST[algo])
    assert a.choice.shape == (2, 3) and a.final.tolist() == a.choice[:, -1].tolist()
    assert ((a.choice >= 0) & (a.choice < SP.size)).all() and (a.status == Status.OK).all()
    assert np.isfinite(a.estimate).all() and (a.estimate > 1).all()
    assert (np.diff(a.seconds, axis=1) > 0).all() and np.allclose(a.epochs, [1 / 3, 2 / 3, 1], atol=0.05)
    b = search.run(algo, corpus, SP, [0, 1], preset(), options=FAST[algo])
    assert np.array_equal(a.choice, b.choice) and np.allclose(a.estimate, b.estimate, rtol=1e-5)
    for name, arr in a.extra.items():
        assert arr.shape[:2] == (2, 3), name


def test_random_ws_returns_the_best_of_its_candidates_under_the_shared_weights(corpus, monkeypatch):
    """Its choice is the argmin of Context.score over exactly the candidates it drew."""
    seen = []
    real = search.Context.score

    def spy(self, params, slot, ids, data):
        out = real(self, params, slot, ids, data)
        seen.append((slot, np.asarray(ids).copy(), out))
        return out

    monkeypatch.setattr(search.Context, "score", spy)
    res = search.run("random_ws", corpus, SP, [3], preset(), options={"candidates": 5})
    assert len(seen) == 3 and all(len(ids) == 5 for _, ids, _ in seen)
    for c, (_, ids, ppl) in enumerate(seen):
        assert res.choice[0, c] == ids[np.argmin(ppl)] and res.estimate[0, c] == pytest.approx(ppl.min())


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
    p = preset()
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
    res = search.run("darts", corpus, SP, [0], preset())
    alphas = res.extra["alphas"][0]  # [C, edges, ops]
    init = 1e-3 * torch.randn(3, 5, generator=torch.Generator().manual_seed(0 + 31)).numpy()
    # Adam moves each weight by up to ~lr (3e-3) per mini-batch: far beyond the 1e-3·N(0,1) initialisation
    assert np.abs(alphas[-1] - init).max() > 0.02
    assert not np.allclose(alphas[0], alphas[-1])


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


def test_nao_predictor_fits_a_constructed_ranking_and_the_decoder_rebuilds_cells(corpus):
    ctx = search.Context(corpus, SP, [0], preset(), torch.device("cpu"))
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
    res = search.run("nao", corpus, SP, [1], preset(), options={"epd_epochs": 2, "max_step": 2})
    pool = res.extra["pool"][0].astype(bool)
    assert (pool == pool[0]).all() and not res.extra["proposed"].any() and pool[0].sum() == 8


def test_results_round_trip_merge_and_integrity(tmp_path, corpus):
    p = preset()
    a = search.run("random_ws", corpus, SP, [0, 1], p, options={"candidates": 4})
    res = search_results.SearchResults(SP, p.name, {"hidden": p.hidden}, {"random_ws": a}, {"device": ["x"]})
    path = tmp_path / "s.h5"
    search_results.write(res, path)
    back = search_results.read(path)
    got = back.searches["random_ws"]
    assert back.space.name == "2node" and back.config == {"hidden": p.hidden} and got.options == {"candidates": 4}
    for name in ("seeds", "epochs", "choice", "estimate", "seconds", "final", "status"):
        assert np.array_equal(getattr(got, name), getattr(a, name)), name
    d = search.run("darts", corpus, SP, [0, 1], p)
    merged = back.merged(search_results.SearchResults(SP, p.name, {"hidden": p.hidden}, {"darts": d}))
    assert sorted(merged.searches) == ["darts", "random_ws"] and merged.searches["random_ws"] is got
    with pytest.raises(ValueError, match="configuration differ"):
        back.merged(search_results.SearchResults(SP, p.name, {"hidden": 99}, {"darts": d}))
    raw = bytearray(path.read_bytes())
    k = raw.find(np.asarray(a.estimate, dtype="<f8").tobytes()[:8])
    raw[k] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(TableError, match="digest mismatch"):
        search_results.read(path)
    with pytest.raises(ValueError, match="shape"):
        search_results.Search("darts", a.seeds, a.epochs, a.choice[:, :2], a.estimate, a.seconds, a.final, a.status)


def test_cli_search_writes_merges_and_refuses_bad_input(tmp_path, ptb_path, capsys):
    out = tmp_path / "search.h5"
    args = ["search", "--space", "2node", "--preset", "smoke", "--seeds", "2", "--data", str(ptb_path),
            "--out", str(out)]
    assert main(args + ["--algo", "random_ws", "--option", "candidates=3"]) == 0
    assert main(args + ["--algo", "nao", "--option", "epd_epochs=3"]) == 0
    res = search_results.read(out)
    assert sorted(res.searches) == ["nao", "random_ws"] and res.searches["random_ws"].options == {"candidates": 3}
    assert res.config["name"] == "smoke" and res.attrs["ptb_sha256"]
    capsys.readouterr()
    for extra, message in ((["--algo", "gdas"], "unknown search algorithm"),
                           (["--algo", "enas", "--option", "order=2"], "unknown option 'order'"),
                           (["--algo", "darts", "--option", "order=3"], "order must be 1"),
                           (["--algo", "darts", "--set", "bogus=1"], "unknown preset field 'bogus'"),
                           (["--algo", "darts", "--seeds", "0"], "--seeds must be at least 1")):
        assert main(args + extra) == 1, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    before = out.read_bytes()
    other = ["search", "--space", "3node", "--preset", "smoke", "--data", str(ptb_path), "--out", str(out)]
    assert main(other + ["--algo", "random_ws"]) == 1
    assert "another space" in capsys.readouterr().err and out.read_bytes() == before


def test_search_checks_its_output_and_takes_its_lock_before_training(tmp_path, ptb_path, capsys, monkeypatch):
    """Issue 25.6-7: `--out newdir/s.h5` crashed after the whole search (the lock in a folder never created),
    `--out DIR` and `--out /dev/null` were tracebacks, and a second search learnt of the lock only at the end."""
    from nasbench_ptb.builder import guard
    from nasbench_ptb.builder import search as search_module

    args = ["search", "--space", "2node", "--preset", "smoke", "--seeds", "1", "--data", str(ptb_path),
            "--algo", "random_ws", "--option", "candidates=2"]
    for out, message in ((tmp_path, "is a directory"), ("/dev/null", "not a regular file")):
        assert main(args + ["--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    trained = []
    monkeypatch.setattr(search_module, "run", lambda *a, **k: trained.append(a) or (_ for _ in ()).throw(
        AssertionError("trained while another search held the lock")))
    out = tmp_path / "new" / "deeper" / "s.h5"
    out.parent.mkdir(parents=True)
    with guard.exclusive(out.parent, out, f".{out.name}.lock"):
        assert main(args + ["--out", str(out)]) == 1
    assert "another build is writing" in capsys.readouterr().err and not trained
    monkeypatch.undo()
    out = tmp_path / "fresh" / "dir" / "s.h5"  # folders that do not exist yet are created before training
    assert main(args + ["--out", str(out)]) == 0
    assert sorted(search_results.read(out).searches) == ["random_ws"]
    assert not list(out.parent.glob(".*.lock"))


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
    p = preset()
    ctx = search.Context(corpus, SP, [0], p, torch.device("cpu"))
    valid = ctx.valid_mid
    search.run("enas", corpus, SP, [0], p, options=FAST["enas"])
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
    search.run("enas", corpus, SP, [0], preset(), options={"controller_steps": 30, "controller_aggregate": 2,
                                                           "derive": 5})
    assert steps == [2] * 20  # 30 × 1/3 = 10 updates of 2 samples after each of the first two search epochs
    e = Enas.__new__(Enas)
    e.steps = 100
    assert e.updates(0.1) == 10 and e.updates(0.001) == 1 and e.updates(2.0) == 200


def test_one_registry_names_the_algorithms_the_builder_runs_and_the_cli_offers(capsys):
    """Issue 27: the registry (search_results.ALGORITHMS) is what the builder's methods, the CLI's --algo help and
    its refusal list; the policies' registry likewise feeds `evaluate --policies` (it once lacked two)."""
    from nasbench_ptb.policies import default_policies

    assert list(search.methods()) == list(search_results.ALGORITHMS)
    assert all(cls.name == name for name, cls in search.methods().items())
    for command, names in ((["search", "--help"], search_results.ALGORITHMS),
                           (["evaluate", "--help"], default_policies())):
        with pytest.raises(SystemExit):
            main(command)
        text = " ".join(capsys.readouterr().out.split())
        assert all(name in text for name in names), command
    assert main(["search", "--algo", "bogus", "--space", "2node"]) != 0
    assert "known: darts, enas, nao, random_ws" in capsys.readouterr().err


# --- ENAS against independent, hand-written expectations (issue 26's mutation target) -----------------------------

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

    ctx = search.Context(corpus, SP, [0, 1], preset(), torch.device("cpu"))
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

    ctx = search.Context(corpus, SP, [0], preset(), torch.device("cpu"))
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

    ctx = search.Context(corpus, SP, [0], preset(), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"^ENAS controller_steps, controller_aggregate, controller_hidden and "
                                         r"derive must be ≥ 1, controller_lr > 0, baseline_decay in \[0, 1\), "
                                         r"entropy_weight ≥ 0$"):
        Enas(ctx, **bad)
    Enas(ctx, controller_steps=1, controller_aggregate=1, controller_hidden=1, derive=1, controller_lr=1e-9,
         baseline_decay=0.0, entropy_weight=0.0)


# --- DARTS against independent expectations (issue 26's mutation target) ------------------------------------------

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
    ctx = search.Context(corpus, SP, [0, 3], preset(), torch.device("cpu"))
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


# --- NAO against independent expectations (issue 26's mutation target) ----------------------------------------------

def test_nao_scores_are_the_pools_perplexities_rescaled_to_zero_one():
    from nasbench_ptb.builder.nao import normalised_score

    assert normalised_score(np.array([100.0, 200.0, 150.0, 125.0])).tolist() == [1.0, 0.0, 0.5, 0.75]
    assert normalised_score(np.array([100.0, np.inf, 300.0, np.nan])).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert normalised_score(np.array([7.0, 7.0, np.inf])).tolist() == [0.5, 0.5, 0.0]
    assert normalised_score(np.array([np.inf, np.nan])).tolist() == [0.0, 0.0]


def test_nao_defaults_are_the_authors_and_bad_options_are_refused(corpus):
    ctx = search.Context(corpus, SP, [0, 1], preset(), torch.device("cpu"))
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


# --- the driver's shared pieces (builder/search.py) ---------------------------------------------------------------

def test_the_context_scores_the_best_candidate_on_the_split_of_that_epoch(corpus, monkeypatch):
    from nasbench_ptb.builder.presets import Schedule

    p = tiny_preset(ws_epochs=1.0, ws_checkpoints=3, ws_valid_tokens=200, ws_final_valid_tokens=None)
    ctx = search.Context(corpus, SP, [0, 1, 2], p, torch.device("cpu"))
    assert ctx.valid(True) is ctx.valid_final and ctx.valid(False) is ctx.valid_mid
    assert ctx.valid_final.shape[0] > ctx.valid_mid.shape[0]
    assert ctx.interval() == 1.0  # before run() sets the schedule
    ctx.schedule = Schedule.of(1.0, 4)
    ctx.checkpoint = 0
    assert ctx.interval() == pytest.approx(0.25)
    ctx.checkpoint = 2
    assert ctx.interval() == pytest.approx(0.25)
    seen = []

    def score(params, s, ids, data):
        seen.append((s, list(ids), data))
        return np.array([np.inf if i == 3 else 50.0 + i for i in ids])

    monkeypatch.setattr(ctx, "score", score)
    choice, est, switch = ctx.best_of({}, np.array([True, False, True]), [[9, 3, 9, 5], [1], [3]], last=True)
    assert choice.dtype == np.int64 and choice.tolist() == [5, 0, 3]
    assert est[0] == 55.0 and np.isnan(est[1]) and est[2] == np.inf
    assert switch[0] == pytest.approx(np.log(55.0)) and switch[1] == np.inf and switch[2] == np.inf
    assert [(s, ids) for s, ids, _ in seen] == [(0, [3, 5, 9]), (2, [3])]  # distinct candidates, live slots only
    assert all(data is ctx.valid_final for _, _, data in seen)


def test_random_ws_draws_its_candidates_per_slot_and_refuses_none(corpus, monkeypatch):
    ctx = search.Context(corpus, SP, [0, 1], preset(), torch.device("cpu"))
    assert search.RandomWS(ctx).k == 8 and search.RandomWS(ctx, candidates=1).k == 1  # default: a quarter
    assert search.RandomWS(ctx, candidates=100).k == 32 and search.RandomWS(ctx).options == {"candidates": 8}
    tiny = search.Context(corpus, space("1node"), [0], preset(), torch.device("cpu"))  # 4 cells: a quarter is 1
    assert search.RandomWS(tiny).k == 1
    with pytest.raises(ValueError, match=r"^random_ws needs at least 1 candidate, got -2$"):
        search.RandomWS(ctx, candidates=-2)
    with pytest.raises(ValueError, match=r"^unknown search algorithm 'pbt' \(known: darts, enas, nao, random_ws\)$"):
        search.make("pbt", ctx, {})
    rw = search.RandomWS(ctx, candidates=5)
    asked = []
    monkeypatch.setattr(ctx, "best_of", lambda params, live, cands, last: asked.append((cands, last)) or
                        (np.zeros(2, np.int64), np.ones(2), np.zeros(2)))
    *_, extra = rw.checkpoint(ctx, {}, np.array([True, True]), last=True)
    (cands, last), = asked
    assert last is True and extra == {} and len(cands) == 2
    assert all(len(set(c.tolist())) == 5 for c in cands) and cands[0].tolist() != cands[1].tolist()


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
