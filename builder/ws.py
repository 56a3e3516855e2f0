"""Weight-sharing super-nets (the paper's central measurement), trained as slots of the engine.

Slot = super-net seed. Every mini-batch each slot draws its own architecture uniformly from the whole space,
or from a subspace (from a generator seeded by its seed only); W0, each node position's W_k, the embedding and the decoder are
shared by all architectures of that super-net. At each checkpoint every architecture is evaluated with the
shared weights — batched: one super-net's weights broadcast over ``N`` architecture slots — on a prefix of the
validation split (the whole split, or ``ws_final_valid_tokens``, at the last checkpoint); at the end every
architecture is tested on the test split.

With the preset's ``ws_rollbacks`` (default: ``rollbacks``) > 0 a super-net whose loss or weights stop being finite (or, with
``ws_uniform_divergence``, whose training loss over an interval is above 2 ln V), or under whose weights
no architecture validates to a finite ppl, returns to its best checkpoint — the lowest mean validation ppl over
architectures, what its ASGD switch reads — as a standalone run does (:mod:`builder.rollback`); it trains on
with its architecture draws going on. Its checkpoint records ``rollback`` 1; past the limit it is diverged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from nasbench_ptb.schema import Status
from nasbench_ptb.space import SearchSpace

from .engine import SlotGenotypes, evaluate
from .presets import Preset
from .rollback import BestCheckpoint, Rollbacks
from .trainer import SlotTrainer, batchify, checkpoint_loop, to_ppl

if TYPE_CHECKING:
    from .resume import Resume

ARCH_CHUNK = 128  # architectures evaluated per batched pass (bounds memory for large spaces)


@dataclass(frozen=True)
class SupernetCurves:
    """Results of ``Sw`` super-nets over the ``N`` architectures of a space."""

    epochs: np.ndarray  # [Cw]
    valid_tokens: np.ndarray  # [Cw] validation tokens used at each checkpoint
    valid_ppl: np.ndarray  # [Sw, Cw, N]
    test_ppl: np.ndarray  # [Sw, N]
    train_loss: np.ndarray  # [Sw, Cw]
    seconds: np.ndarray  # [Sw, Cw] cumulative, unit wall-clock shared evenly by its super-nets
    samples: np.ndarray  # [Sw, N] mini-batches each architecture was sampled for
    status: np.ndarray  # [Sw]
    rollback: np.ndarray  # [Sw, Cw] 1 where the super-net was returned to its best checkpoint before this one


class ArchSampler:
    """Uniform architecture ids per slot per mini-batch, each slot from its own seeded generator.

    Ids are drawn on the host ``block`` mini-batches ahead and copied to the device once per block, so the
    training loop never waits on a host-to-device copy; the sequence is the same as drawing one at a time.
    """

    def __init__(self, sp: SearchSpace, seeds: Sequence[int], device: torch.device, block: int = 256,
                 arch_ids: Sequence[int] | None = None):
        self.block = block
        # draws index into ``ids``; over the whole space ids[k] = k, the same sequence as before subspaces existed
        self.ids = np.arange(sp.size) if arch_ids is None else np.asarray(arch_ids, dtype=np.int64)
        genos = SlotGenotypes.of(list(sp), device)
        self.preds, self.ops = genos.preds, genos.ops
        self.rngs = [np.random.RandomState(int(s) + 7_919) for s in seeds]
        self.counts = np.zeros((len(seeds), sp.size), dtype=np.int64)
        self._host = np.zeros((0, len(seeds)), dtype=np.int64)  # [block, S] ids drawn ahead, and their
        self._device = torch.as_tensor(self._host, device=self.preds.device)  # copy on the device
        self._next = 0

    def state(self) -> dict:
        """Each slot's generator, the counts and the block drawn ahead (:mod:`builder.resume`)."""
        from .resume import rng_state

        return {"counts": self.counts, "host": self._host, "next": self._next,
                "rng": {str(a): rng_state(rng) for a, rng in enumerate(self.rngs)}}

    def load_state(self, state: dict) -> None:
        """Continue the architecture draws from a unit's saved state."""
        from .resume import section, set_rng_state

        for a, rng in enumerate(self.rngs):
            set_rng_state(rng, section(state, f"rng/{a}"))
        self.counts[...] = state["counts"]
        self._host = np.asarray(state["host"], dtype=np.int64).reshape(-1, len(self.rngs))
        self._device = torch.as_tensor(self._host, device=self.preds.device)
        self._next = int(state["next"])

    def draw(self) -> np.ndarray:
        """The next mini-batch's ids ``[S]`` (counted in ``counts``)."""
        row = self._advance()
        return self._host[row]

    def genotypes(self) -> SlotGenotypes:
        """The next mini-batch's genotypes, one sampled architecture per slot."""
        row = self._advance()  # first: it may replace the block
        idx = self._device[row]
        return SlotGenotypes(self.preds[idx], self.ops[idx], uniform=None)

    def _advance(self) -> int:
        """Row of the block holding the next mini-batch's ids (drawing a new block when one is used up)."""
        if self._next == len(self._host):
            self._host = self.ids[np.array([[rng.randint(len(self.ids)) for rng in self.rngs]
                                            for _ in range(self.block)])]
            self._device = torch.as_tensor(self._host, device=self.preds.device)
            self._next = 0
        row, self._next = self._next, self._next + 1
        self.counts[np.arange(self._host.shape[1]), self._host[row]] += 1
        return row


def evaluate_all(params: dict, slot: int, all_genos: SlotGenotypes, data: torch.Tensor, bptt: int,
                 chunk: int = ARCH_CHUNK, amp: str = "off") -> np.ndarray:
    """Mean validation loss of every architecture under super-net ``slot``'s weights, ``[N]``."""
    shared = {k: v[slot : slot + 1] for k, v in params.items()}
    n = all_genos.preds.shape[0]
    out = []
    for s in range(0, n, chunk):
        part = SlotGenotypes(all_genos.preds[s : s + chunk], all_genos.ops[s : s + chunk], uniform=None)
        out.append(evaluate(shared, part, data, bptt, amp).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def train_supernets(
    corpus,
    sp: SearchSpace,
    seeds: Sequence[int],
    p: Preset,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
    arch_ids: Sequence[int] | None = None,
    resume: "Resume | None" = None,
) -> SupernetCurves:
    """Train one super-net per seed (together, as slots) and evaluate every architecture at each checkpoint.

    ``arch_ids``: share the weights among this subspace only — draw and evaluate only its architectures (the
    others stay NaN, sampled 0 times). Default: the whole space. ``resume``: continue from and save to a unit
    state (:mod:`builder.resume`; the curves so far and the architecture sampler are part of it).

    Raises:
        builder.resume.Paused: ``resume``'s deadline came first (the state is saved).
    """
    device = torch.device(device)
    schedule = p.schedule("ws")
    S, C, N = len(seeds), len(schedule), sp.size
    ids = np.arange(N) if arch_ids is None else np.asarray(sorted(arch_ids), dtype=np.int64)
    valid_mid = batchify(corpus.valid[: p.ws_valid_tokens], p.eval_batch_size, device)
    valid_final = batchify(corpus.valid[: p.ws_final_valid_tokens], p.eval_batch_size, device)
    test = batchify(corpus.test[: p.test_tokens], p.eval_batch_size, device)
    all_genos = SlotGenotypes.of([sp.from_id(int(i)) for i in ids], device)
    tr = SlotTrainer(corpus, seeds, sp.n, p, device, p.ws_bptt, p.hidden_clip)
    sampler = ArchSampler(sp, seeds, device, arch_ids=ids)

    valid_ppl = np.full((S, C, N), np.nan)
    valid_tokens = np.zeros(C, dtype=np.int64)
    best, rb = BestCheckpoint(tr.params), Rollbacks(S, C, device)
    limit = p.rollbacks if p.ws_rollbacks is None else p.ws_rollbacks
    if limit > 0:
        tr.on_diverge = lambda dying: rb.revive(dying, limit, tr.opt, best.weights)
    if p.ws_uniform_divergence:
        # twice the loss of predicting every word equally likely: a blow-up, never a slow start (an untrained
        # model's loss sits at about ln V, so a short first interval may lie just above ln V itself)
        tr.max_loss = 2.0 * float(np.log(tr.V))

    def validate(c: int, eval_params: dict, live: np.ndarray) -> np.ndarray:
        data = valid_final if c == C - 1 else valid_mid
        valid_tokens[c] = (data.shape[0] - 1) * data.shape[1]
        todo = np.flatnonzero(live)
        while True:
            for s in todo:
                losses = evaluate_all(eval_params, s, all_genos, data, p.bptt, amp=p.amp)
                valid_ppl[s, c, ids] = to_ppl(losses, np.ones(len(ids), bool))
            # a super-net is diverged when no architecture gets a finite validation loss under its weights
            dying = ~np.isfinite(valid_ppl[:, c, ids]).any(axis=1)
            tr.kill(dying)
            live = tr.alive.cpu().numpy()
            todo = np.flatnonzero(live & dying)  # rolled back just now: validate the restored weights
            if not todo.size:
                break
            eval_params = tr.opt.eval_params()
        valid_ppl[~live, c] = np.nan
        rb.at[:, c], rb.since[:] = rb.since, False
        mean_loss = np.log(np.nanmean(np.where(live[:, None], valid_ppl[:, c, ids], 1.0), axis=1))  # over archs
        improved = best.update(mean_loss, live, eval_params)
        rb.remember(torch.as_tensor(improved, device=device), tr.opt)
        return mean_loss

    keep = {"valid_ppl": valid_ppl, "valid_tokens": valid_tokens, "sampler": sampler, "best": best,
            "rollbacks": rb}
    prog = checkpoint_loop(tr, schedule, sampler.genotypes, validate, p.ws_asgd, on_batch, resume, keep)
    live = tr.alive.cpu().numpy()
    test_ppl = np.full((S, N), np.nan)
    eval_params = tr.opt.eval_params()
    for s in np.flatnonzero(live):
        test_ppl[s, ids] = to_ppl(evaluate_all(eval_params, s, all_genos, test, p.bptt, amp=p.amp),
                                  np.ones(len(ids), bool))
    status = np.where(live, Status.OK, Status.DIVERGED).astype(np.int8)
    reached = np.isfinite(valid_ppl).any(axis=2)
    return SupernetCurves(prog.epochs, valid_tokens, valid_ppl, test_ppl, prog.train_loss, prog.seconds,
                          sampler.counts, status, np.where(reached, rb.at, np.nan))
