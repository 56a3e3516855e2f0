"""The training protocol against hand-computed cases: the lr scaled by each window's length, AWD-LSTM's
non-monotone SGD -> ASGD switch, the shared bptt stream."""
import numpy as np
import torch

from nasbench_ptb.builder.engine import SlotGenotypes
from nasbench_ptb.builder.trainer import BpttStream, SlotTrainer
from nasbench_ptb.space import parse

from helpers import tiny_corpus, tiny_preset


def test_lr_is_scaled_by_each_windows_length():
    # 2,000 training tokens in 4 columns: 500 rows, 499 targets. Fixed bptt 8: 62 windows of 8, then one of 3.
    p = tiny_preset(bptt=8, lr=2.0)
    tr = SlotTrainer(tiny_corpus(), [0], 2, p, torch.device("cpu"), "fixed")
    lrs = []
    step = tr.opt.step
    tr.opt.step = lambda lr, active: (lrs.append(lr), step(lr, active))
    geno = SlotGenotypes.of([parse("tanh:0|relu:1")])
    tr.train_until(1.0, lambda: geno)
    assert lrs == [2.0] * 62 + [2.0 * 3 / 8]


def test_bptt_stream_windows_by_hand():
    s = BpttStream(8, "fixed", 0, rows=20)  # 19 targets: 8, 8, 3, then a new epoch
    assert [s.next() for _ in range(4)] == [(0, 8, False), (8, 8, False), (16, 3, False), (0, 8, True)]
    halving = BpttStream(10, "halving", 1234, rows=1_000_000)  # far from the epoch's end
    seqs = [halving.next()[1] for _ in range(2000)]
    assert set(seqs) == {10, 5} and 0.03 < seqs.count(5) / len(seqs) < 0.07  # bptt // 2 with p = 0.05
    awd = BpttStream(35, "awd", 1234, rows=100_000)
    seqs = np.array([awd.next()[1] for _ in range(3000)])
    assert seqs.min() >= 5 and seqs.max() <= 55 and abs(np.median(seqs) - 35) <= 1


def test_nonmonotone_switch_by_hand():
    # AWD-LSTM: switch when the loss exceeds the best of all but the last `nonmono` values, more than nonmono logged
    p = tiny_preset(nonmono=2)
    tr = SlotTrainer(tiny_corpus(), [0, 1], 2, p, torch.device("cpu"), "fixed")
    live = np.array([True, True])
    switched = []
    for losses in ([5.0, 5.0], [4.0, 4.0], [4.5, 3.0], [4.8, 2.0], [4.9, 1.0]):
        tr.nonmono_switch(np.array(losses), live)
        switched.append(tr.opt.switched.tolist())
    # slot 0: 4.5 (2 logged: too few), 4.8 (best of [5] is 5: not worse), 4.9 (best of [5, 4] is 4: worse) -> switch
    # slot 1: always improving -> never
    assert switched == [[False, False]] * 4 + [[True, False]]
    assert tr.opt.any_switched
