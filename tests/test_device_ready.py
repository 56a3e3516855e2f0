"""What the CUDA path relies on, checked on CPU: the mini-batch loop never reads a tensor's value on the host
(each such read is a device synchronisation on CUDA), for standalone runs and for super-nets."""
import contextlib

import numpy as np

import pytest
import torch

from nasbench_ptb.builder.engine import SlotGenotypes
from nasbench_ptb.builder.trainer import SlotTrainer
from nasbench_ptb.builder.ws import ArchSampler
from nasbench_ptb.space import parse, space

from helpers import tiny_corpus, tiny_preset

HOST_READS = ("__bool__", "item", "tolist", "numpy", "cpu", "__int__", "__float__", "__index__")
# Operations whose output size depends on values: on CUDA they wait for the device to know it.
IMPLICIT_SYNCS = {torch.Tensor: ("nonzero", "masked_select", "argwhere", "unique"),
                  torch: ("nonzero", "masked_select", "argwhere", "unique")}


class HostRead(AssertionError):
    pass


@contextlib.contextmanager
def no_host_reads():
    """Make every host read of a tensor's value raise :class:`HostRead` inside the block."""
    saved = [(torch.Tensor, name, getattr(torch.Tensor, name)) for name in HOST_READS]
    saved += [(owner, name, getattr(owner, name)) for owner, names in IMPLICIT_SYNCS.items() for name in names
              if hasattr(owner, name)]
    saved += [(torch.Tensor, name, getattr(torch.Tensor, name)) for name in ("__getitem__", "__setitem__")]
    get_item, set_item = torch.Tensor.__getitem__, torch.Tensor.__setitem__

    def refuse(name):
        def method(*args, **kwargs):
            raise HostRead(f"{name} called inside the training loop")
        return method

    def boolean(index) -> bool:  # a boolean mask index is a nonzero() in disguise
        items = index if isinstance(index, tuple) else (index,)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)

    def getitem(self, index):
        if boolean(index):
            raise HostRead("boolean-mask indexing inside the training loop")
        return get_item(self, index)

    def setitem(self, index, value):
        if boolean(index):
            raise HostRead("boolean-mask assignment inside the training loop")
        return set_item(self, index, value)

    try:
        for owner, name, _ in saved:
            if name not in ("__getitem__", "__setitem__"):
                setattr(owner, name, refuse(f"{getattr(owner, '__name__', 'torch')}.{name}"))
        torch.Tensor.__getitem__, torch.Tensor.__setitem__ = getitem, setitem
        yield
    finally:
        for owner, name, method in saved:
            setattr(owner, name, method)


def test_guard_catches_a_host_read():
    with pytest.raises(HostRead), no_host_reads():
        bool(torch.ones(2).sum() > 0)
    assert bool(torch.ones(1))  # restored


@pytest.mark.parametrize("sync", [
    lambda t: t[t > 0], lambda t: t.__setitem__(t > 0, 0.0), lambda t: t.nonzero(), lambda t: torch.nonzero(t),
    lambda t: torch.masked_select(t, t > 0), lambda t: t.masked_select(t > 0), lambda t: t.unique(),
])
def test_guard_catches_implicit_syncs(sync):
    t = torch.tensor([1.0, -1.0, 2.0])
    with pytest.raises(HostRead), no_host_reads():
        sync(t)
    assert t[t > 0].tolist() == [1.0, 2.0] and t[torch.tensor([0, 2])].tolist() == [1.0, 2.0]  # restored


@pytest.mark.parametrize("asgd_switched", [False, True])
def test_standalone_loop_never_reads_the_device(asgd_switched):
    p = tiny_preset()
    genos = SlotGenotypes.of([parse("tanh:0|relu:1|sigmoid:0"), parse("identity:0|tanh:0|relu:2")])
    tr = SlotTrainer(tiny_corpus(), [1, 2], 3, p, torch.device("cpu"), "awd")
    if asgd_switched:
        tr.opt.switch(torch.tensor([True, False]))
    tokens = []
    with no_host_reads():
        tr.train_until(0.5, lambda: genos, tokens.append)
    assert len(tokens) > 5 and tr.stream.position >= 0.5
    assert torch.isfinite(tr.loss_sum).all() and (tr.loss_sum > 0).all()


def test_supernet_loop_never_reads_the_device():
    sp = space("2node")
    p = tiny_preset()
    tr = SlotTrainer(tiny_corpus(), [0, 1], sp.n, p, torch.device("cpu"), "halving", hidden_clip=25.0)
    sampler = ArchSampler(sp, [0, 1], torch.device("cpu"), block=4)  # several refills inside the loop
    batches = []
    with no_host_reads():
        tr.train_until(0.5, sampler.genotypes, batches.append)
    assert len(batches) > 8 and sampler.counts.sum(axis=1).tolist() == [len(batches)] * 2
    one_by_one = ArchSampler(sp, [0, 1], torch.device("cpu"), block=1)
    for _ in batches:
        one_by_one.draw()
    assert (one_by_one.counts == sampler.counts).all()  # drawing ahead does not change the sequence


def test_bf16_autocast_trains_close_to_fp32_with_fp32_master_weights():
    from nasbench_ptb.builder.standalone import train_runs

    corpus, genos = tiny_corpus(), [parse("tanh:0|relu:1|sigmoid:0"), parse("identity:0|tanh:0|relu:2")]
    fp32 = train_runs(corpus, genos, [1, 2], tiny_preset(epochs=2.0))
    bf16 = train_runs(corpus, genos, [1, 2], tiny_preset(epochs=2.0, amp="bf16"))
    assert np.isfinite(bf16.valid_ppl).all() and np.isfinite(bf16.test_ppl).all()
    assert not np.array_equal(fp32.valid_ppl, bf16.valid_ppl)  # autocast really changed the arithmetic
    np.testing.assert_allclose(bf16.valid_ppl, fp32.valid_ppl, rtol=0.03)
    np.testing.assert_allclose(bf16.test_ppl, fp32.test_ppl, rtol=0.03)
    tr = SlotTrainer(corpus, [1], 3, tiny_preset(amp="bf16"), torch.device("cpu"), "awd")
    tr.train_until(0.1, lambda: SlotGenotypes.of(genos[:1]))
    assert all(v.dtype == torch.float32 for v in tr.params.values()) and tr.hidden.dtype == torch.float32


def test_amp_is_validated_and_fingerprinted():
    from nasbench_ptb.builder import parts, presets

    sp, cpu = space("3node"), presets.get("cpu")
    with pytest.raises(ValueError, match="amp must be one of off, bf16"):
        presets.override(cpu, {"amp": "fp8"})
    assert presets.get("gpu").amp == "bf16" and cpu.amp == "off"
    # amp off leaves the fingerprint as it was before the field existed (shipped builds resume)
    assert '"amp"' not in parts.fingerprint(sp, cpu, "standalone")
    for kind in ("standalone", "ws"):
        assert parts.fingerprint(sp, cpu, kind) != parts.fingerprint(sp, presets.override(cpu, {"amp": "bf16"}), kind)


def test_counter_masks_depend_on_the_slot_seed_only():
    from nasbench_ptb.builder.engine import Dropouts, MaskSampler

    d = Dropouts(output=0.5, hidden=0.25, x=0.25, input=0.2, embedding=0.1)
    group, alone = MaskSampler([5, 7, 9], "cpu", kind="counter"), MaskSampler([7], "cpu", kind="counter")
    for _ in range(3):
        g, a = group.draw(4, 50, 6, d), alone.draw(4, 50, 6, d)
        for key in g:
            assert torch.equal(g[key][1], a[key][0]), key
    assert MaskSampler([1], "cpu").kind == "generator"
    with pytest.raises(ValueError, match="unknown mask sampler"):
        MaskSampler([1], "cpu", kind="philox")


def test_counter_masks_have_the_rate_and_no_correlation():
    from nasbench_ptb.builder.engine import Dropouts, MaskSampler

    sampler = MaskSampler(list(range(8)), "cpu", kind="counter")
    first = sampler.draw(64, 10, 256, Dropouts(x=0.25))["x"]
    second = sampler.draw(64, 10, 256, Dropouts(x=0.25))["x"]
    kept = first > 0
    assert torch.unique(first).tolist() == pytest.approx([0.0, 1 / 0.75])
    assert abs(kept.float().mean().item() - 0.75) < 0.005  # 131k draws: sd 0.0012
    flat = kept.float().view(8, -1)
    corr = torch.corrcoef(torch.cat([flat, (second > 0).float().view(8, -1)]))
    off_diagonal = corr[~torch.eye(16, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.03  # slots and successive draws independent (sd of r ≈ 0.006)
    assert abs(kept[:, :, :-1].float().mean() - (kept[:, :, :-1] & kept[:, :, 1:]).float().mean() / 0.75) < 0.01
