"""Weight-sharing super-nets: sharing, uniform sampling, batched evaluation, slot equivalence."""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from nasbench_ptb.builder.engine import SlotGenotypes, evaluate, init_params
from nasbench_ptb.builder.trainer import SlotTrainer, batchify
from nasbench_ptb.builder.ws import ArchSampler, evaluate_all, train_supernets
from nasbench_ptb.schema import Status
from nasbench_ptb.space import space

from helpers import tiny_corpus, tiny_preset

SP = space("2node")


def ws_preset(**kw):
    return tiny_preset(ws_epochs=1.0, ws_checkpoints=2, ws_valid_tokens=120, ws_final_valid_tokens=None,
                       test_tokens=200, hidden_clip=25.0, ws_asgd=True, **kw)


def test_sampling_is_uniform_and_per_seed():
    sampler = ArchSampler(SP, [0, 1], torch.device("cpu"))
    draws = np.array([sampler.draw() for _ in range(6400)])
    counts = sampler.counts
    assert counts.sum(axis=1).tolist() == [6400, 6400]
    for row in counts:
        assert chisquare(row).pvalue > 1e-3  # 200 expected per architecture
    assert not np.array_equal(counts[0], counts[1])  # each super-net has its own draws
    alone = ArchSampler(SP, [1], torch.device("cpu"))
    assert [alone.draw()[0] for _ in range(100)] == draws[:100, 1].tolist()  # grouping never changes them


def test_weights_are_shared_between_architectures():
    corpus, p = tiny_corpus(), ws_preset()
    tr = SlotTrainer(corpus, [5], SP.n, p, torch.device("cpu"), "fixed")
    a, b = SlotGenotypes.of([SP.from_id(3)]), SlotGenotypes.of([SP.from_id(30)])
    valid = batchify(corpus.valid, 4, torch.device("cpu"))
    before = {k: v.detach().clone() for k, v in tr.params.items()}
    loss_b_before = evaluate(tr.params, b, valid, 8)
    tr.train_until(0.02, lambda: a)  # one step on architecture 3 only
    moved = {k: not torch.equal(before[k], v.detach()) for k, v in tr.params.items()}
    assert all(moved.values()), moved  # every weight of the 2-node cell is used by architecture 3
    loss_b_after = evaluate(tr.params, b, valid, 8)
    assert not torch.equal(loss_b_before, loss_b_after)  # architecture 30 computes with the moved values
    copy = {k: v.detach().clone() for k, v in tr.params.items()}
    torch.testing.assert_close(evaluate(copy, b, valid, 8), loss_b_after)


def test_batched_evaluation_equals_one_by_one():
    corpus = tiny_corpus()
    params = init_params([3, 4], 40, 6, 2, "cpu")
    with torch.no_grad():
        params["bias"] += torch.randn_like(params["bias"])  # make architectures differ visibly
        params["Ws"] *= 20
        params["W0"] *= 20
        params["encoder"] *= 10
    data = batchify(corpus.valid[:300], 4, torch.device("cpu"))
    all_genos = SlotGenotypes.of(list(SP))
    for slot in (0, 1):
        batched = evaluate_all(params, slot, all_genos, data, 8, chunk=12)
        shared = {k: v[slot : slot + 1].detach() for k, v in params.items()}
        single = np.array([evaluate(shared, SlotGenotypes.of([g]), data, 8).item() for g in SP])
        np.testing.assert_allclose(batched, single, rtol=1e-5)
        assert np.unique(np.round(batched, 6)).size > 20


def test_supernets_together_equal_each_alone():
    corpus, p = tiny_corpus(), ws_preset()
    res = train_supernets(corpus, SP, [0, 1, 2], p)
    assert list(res.status) == [Status.OK] * 3
    assert res.valid_ppl.shape == (3, 2, 32) and np.isfinite(res.valid_ppl).all() and np.isfinite(res.test_ppl).all()
    assert res.samples.sum(axis=1).tolist() == [res.samples[0].sum()] * 3 and res.samples[0].sum() > 30
    assert res.valid_tokens[0] < res.valid_tokens[-1] == (len(corpus.valid) // 4 - 1) * 4  # final: whole split
    assert (np.diff(res.seconds, axis=1) > 0).all()
    alone = train_supernets(corpus, SP, [1], p)
    np.testing.assert_allclose(res.valid_ppl[1], alone.valid_ppl[0], rtol=1e-4)
    np.testing.assert_allclose(res.test_ppl[1], alone.test_ppl[0], rtol=1e-4)
    np.testing.assert_array_equal(res.samples[1], alone.samples[0])


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_hidden_norm_clip(clip, monkeypatch):
    import nasbench_ptb.builder.trainer as train_mod

    corpus, p = tiny_corpus(), ws_preset()
    tr = SlotTrainer(corpus, [0], SP.n, p, torch.device("cpu"), "fixed", hidden_clip=clip)
    tr.hidden = torch.full_like(tr.hidden, 3.0)
    tr.stream.i = 1  # not at an epoch start, so the carried state is used
    seen, real = [], train_mod.train_loss

    def spy(params, geno, x, y, h, *rest):
        seen.append(h.norm(dim=-1).max().item())
        return real(params, geno, x, y, h, *rest)

    monkeypatch.setattr(train_mod, "train_loss", spy)
    tr.train_until(tr.stream.position + 0.01, lambda: SlotGenotypes.of([SP.from_id(0)]))
    assert seen[0] == pytest.approx(0.5 if clip else 3.0 * np.sqrt(6), rel=1e-5)


def test_whole_space_draws_are_the_shipped_sequence_and_a_subspace_draws_only_its_members():
    # the shipped WS tables were drawn as RandomState(seed + 7919).randint(size): a subspace option must not move them
    sampler = ArchSampler(SP, [4], torch.device("cpu"), block=7)
    rng = np.random.RandomState(4 + 7_919)
    assert [int(sampler.draw()[0]) for _ in range(50)] == [rng.randint(32) for _ in range(50)]
    sub = [3, 8, 30]
    sampler = ArchSampler(SP, [0, 1], torch.device("cpu"), arch_ids=sub)
    draws = np.array([sampler.draw() for _ in range(3000)])
    assert set(np.unique(draws)) == set(sub)
    assert sampler.counts[:, sub].sum(axis=1).tolist() == [3000, 3000] and sampler.counts.sum() == 6000
    for row in sampler.counts[:, sub]:
        assert chisquare(row).pvalue > 1e-3


def test_supernets_over_a_subspace_train_and_evaluate_only_its_members():
    corpus, p = tiny_corpus(), ws_preset()
    sub = [2, 9, 17, 25]
    res = train_supernets(corpus, SP, [0, 1], p, "cpu", arch_ids=sub)
    out = np.setdiff1d(np.arange(32), sub)
    assert np.isfinite(res.valid_ppl[:, :, sub]).all() and np.isnan(res.valid_ppl[:, :, out]).all()
    assert np.isfinite(res.test_ppl[:, sub]).all() and np.isnan(res.test_ppl[:, out]).all()
    assert (res.samples[:, out] == 0).all() and (res.samples[:, sub] > 0).all()
    assert (res.status == Status.OK).all()
    # sharing among 4 cells trains other weights than sharing among 32 (same seed, same data): a sampler that
    # ignored the subspace and only the evaluation restricted to it would give equal numbers here
    whole = train_supernets(corpus, SP, [0], p, "cpu")
    assert np.isfinite(whole.valid_ppl).all() and not np.allclose(whole.valid_ppl[0][:, sub], res.valid_ppl[0][:, sub])
