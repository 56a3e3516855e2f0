"""The shared trainer's protocol by the numbers (the mutation run found these unpinned): where the checkpoint loop
stops, what it reports as training loss and seconds, which slots die and stay dead, the hidden state at epoch
starts and in dead slots, the non-monotone switch on ties, the perplexity cap."""
import time

import numpy as np
import pytest
import torch

from nasbench_ptb.builder.engine import SlotGenotypes
from nasbench_ptb.builder.presets import Schedule
from nasbench_ptb.builder.trainer import SlotTrainer, checkpoint_loop, to_ppl
from nasbench_ptb.space import space

from helpers import tiny_corpus, tiny_preset

CORPUS = tiny_corpus()  # 40 words: an untrained model's loss is about log(40) = 3.7


def trainer(**changes):
    p = tiny_preset(**changes)
    sp = space("2node")
    genos = SlotGenotypes.of([sp.from_id(0), sp.from_id(5)], "cpu")
    return SlotTrainer(CORPUS, [0, 1], 2, p, torch.device("cpu"), "fixed"), (lambda: genos), p


def test_checkpoints_at_even_fractions_of_the_epochs_with_mean_loss_and_cumulative_seconds():
    tr, genos, p = trainer()
    batch_epoch = p.bptt / (tr.train.shape[0] - 1)  # one mini-batch, in epochs
    tokens = []
    t0 = time.perf_counter()
    prog = checkpoint_loop(tr, Schedule.of(2.0, 4), genos, lambda c, params, live: np.full(2, 5.0 - c), asgd=False,
                           on_batch=tokens.append)
    wall = time.perf_counter() - t0
    for c, target in enumerate([0.5, 1.0, 1.5, 2.0]):  # (c + 1) · epochs / C, reached within one mini-batch
        assert target - 1e-9 <= prog.epochs[c] < target + batch_epoch
    assert np.isfinite(prog.train_loss).all() and (prog.train_loss > 0.5).all() and (prog.train_loss < 2 * np.log(40)).all()
    assert tr.loss_tokens == 0 and float(tr.loss_sum.abs().sum()) == 0.0  # each interval starts afresh
    assert (np.diff(prog.seconds, axis=1) > 0).all() and (prog.seconds[0] == prog.seconds[1]).all()
    assert prog.seconds[0, -1] * 2 == pytest.approx(wall, rel=0.05, abs=0.05)  # the unit's time shared by 2 slots
    assert sum(tokens) == pytest.approx(2.0 * (tr.train.shape[0] - 1) * p.batch_size * 2, rel=0.05)


def test_a_killed_slot_reports_nan_from_then_on_and_stays_dead_with_zero_weights_and_state():
    tr, genos, _ = trainer()
    seen = []
    tr.before_step = lambda start, seq, h: seen.append((start, h[0].abs().sum().item(), h[1].abs().sum().item()))

    def validate(c, params, live):
        if c == 1:
            tr.kill(np.array([False, True]))
        return np.full(2, 4.0)

    prog = checkpoint_loop(tr, Schedule.of(2.0, 4), genos, validate, asgd=False)
    assert np.isfinite(prog.train_loss[0]).all() and np.isfinite(prog.train_loss[1, :1]).all()
    assert np.isnan(prog.train_loss[1, 1:]).all() and np.isnan(prog.seconds[1, 1:]).all()
    assert np.isfinite(prog.seconds[0]).all()
    assert all(float(v[1].abs().sum()) == 0.0 for v in tr.params.values())  # zeroed, so its arithmetic stays finite
    after = seen[len(seen) // 2 + 1:]  # batches after the kill (at 1 of 2 epochs)
    assert all(dead == 0.0 for _, _, dead in after) and any(live > 0 for _, live, _ in after)
    assert all(live == 0.0 for start, live, _ in seen if start == 0)  # every epoch starts from a zero state
    assert any(live > 0 for start, live, _ in seen if start > 0)
    tr.kill(np.array([True, False]))
    assert tr.alive.tolist() == [False, False]  # a second kill does not revive the first


def test_a_non_finite_weight_kills_its_slot_even_when_the_loss_is_finite():
    tr, genos, _ = trainer()
    tr.train_until(0.2, genos)
    first = next(iter(tr.params))
    with torch.no_grad():
        tr.params[first][1].view(-1)[0] = float("nan")
    loss, live = tr.end_interval()
    assert live.tolist() == [True, False] and np.isfinite(loss[0]) and np.isnan(loss[1])


def test_non_monotone_switch_needs_a_strictly_worse_loss():
    tr, _, p = trainer(nonmono=1)
    tr.history = [[1.0, 1.0], [1.0, 1.0]]
    tr.nonmono_switch(np.array([1.0, 1.5]), np.array([True, True]))  # a tie is not worse
    assert tr.opt.switched.tolist() == [False, True] and tr.history == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.5]]


def test_the_loop_applies_the_switch_when_validation_gets_worse():
    tr, genos, _ = trainer(nonmono=1)
    checkpoint_loop(tr, Schedule.of(1.0, 4), genos, lambda c, params, live: np.full(2, 3.0 + c), asgd=True)
    assert tr.opt.switched.tolist() == [True, True]  # at the third checkpoint: 5 > min(3) of all but the last


def test_perplexity_is_capped_at_exp_700_and_nan_where_not_live_or_not_finite():
    out = to_ppl(np.array([800.0, 1.0, np.inf, 2.0]), np.array([True, True, True, False]))
    assert out[0] == np.exp(700.0) and out[1] == pytest.approx(np.e) and np.isnan(out[2]) and np.isnan(out[3])


def _weights_after(steps_epoch=0.1, **changes):
    tr, genos, _ = trainer(**changes)
    tr.train_until(steps_epoch, genos)
    return {k: v.detach().clone() for k, v in tr.params.items()}


@pytest.mark.parametrize("changes", [
    {"dropout_output": 0.0, "dropout_hidden": 0.0, "dropout_x": 0.0, "dropout_input": 0.0, "dropout_embedding": 0.0},
    {"alpha": 2.0},  # AR (activation regularisation), off in the base preset
    {"beta": 0.0},  # TAR (temporal activation regularisation), on in the base preset
    {"weight_decay": 0.0},
    {"clip": 1e-4},  # a tight gradient clip (the base one, 0.25, rarely binds this early)
])
def test_every_regulariser_of_a_step_reaches_the_weights(changes):
    """Each preset value that shapes a training step changes the weights after a few mini-batches; a trainer
    that dropped one (no dropout masks, no AR/TAR, no weight decay, no clipping) would train both alike."""
    base, changed = _weights_after(), _weights_after(**changes)
    assert any(not torch.equal(base[k], changed[k]) for k in base), changes


def test_the_carried_hidden_state_is_clipped_only_when_asked():
    sp = space("2node")
    genos = SlotGenotypes.of([sp.from_id(0), sp.from_id(5)], "cpu")
    p = tiny_preset()

    def run(**kw):
        tr = SlotTrainer(CORPUS, [0, 1], 2, p, torch.device("cpu"), "fixed", **kw)
        tr.train_until(0.1, lambda: genos)
        return tr.params["w0"].clone() if "w0" in tr.params else next(iter(tr.params.values())).clone()

    default, off, tight, loose = run(), run(hidden_clip=0.0), run(hidden_clip=1e-3), run(hidden_clip=1e3)
    assert torch.equal(default, off) and not torch.equal(default, tight)
    assert torch.equal(loose, off)  # a bound above every state's norm scales nothing (never up)


def test_batchify_needs_two_rows():
    from nasbench_ptb.builder.trainer import batchify
    assert batchify(np.arange(4), 2, torch.device("cpu")).tolist() == [[0, 2], [1, 3]]  # 2 rows: enough
    with pytest.raises(ValueError, match="^3 tokens are too few for batch size 2$"):
        batchify(np.arange(3), 2, torch.device("cpu"))


@pytest.mark.parametrize("rows, expected", [
    # AWD-LSTM's loop (i < rows − 2): a lone last row pair is skipped, a 2-row tail is trained
    (11, [(0, 3, False), (3, 3, False), (6, 3, False), (0, 3, True), (3, 3, False)]),
    (12, [(0, 3, False), (3, 3, False), (6, 3, False), (9, 2, False), (0, 3, True)]),
])
def test_fixed_bptt_windows_and_epoch_boundaries_by_hand(rows, expected):
    from nasbench_ptb.builder.trainer import BpttStream
    s = BpttStream(3, "fixed", 0, rows)
    assert [s.next() for _ in expected] == expected
    with pytest.raises(ValueError, match=r"^unknown bptt mode 'x' \(awd, halving, fixed\)$"):
        BpttStream(3, "x", 0, rows)


def test_awd_variable_bptt_follows_its_distribution():
    """AWD-LSTM: bptt, or bptt/2 with p = 0.05, then N(·, 5) rounded down, at least 5, at most bptt + 20."""
    from nasbench_ptb.builder.trainer import BpttStream
    s = BpttStream(70, "awd", 1, 10**8)
    seq = np.array([s.next()[1] for _ in range(6000)])
    half = seq < 52  # N(35, 5) and N(70, 5) do not overlap at 52
    assert 0.04 < half.mean() < 0.06
    assert abs(seq[~half].mean() - 69.5) < 0.3 and abs(seq[~half].std() - 5.0) < 0.25  # int() rounds down
    assert abs(seq[half].mean() - 34.5) < 1.2 and seq.max() <= 90
    small = BpttStream(6, "awd", 2, 10**8)
    low = np.array([small.next()[1] for _ in range(2000)])
    assert low.min() == 5 and (low == 5).mean() > 0.3  # N(6, 5) falls below 5 often: clipped to 5
