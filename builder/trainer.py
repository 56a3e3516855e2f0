"""The training protocol shared by every client (standalone runs, weight-sharing super-nets, search phases):
``A`` slots trained together, and the checkpoint loop around them.

Per mini-batch (:class:`SlotTrainer`): the shared bptt stream, lr scaled by seq_len/bptt, fresh per-slot dropout
masks, CE + TAR, per-slot gradient clipping, SGD (→ ASGD per slot with AWD-LSTM's non-monotone rule). The loop
(:func:`checkpoint_loop`): train to the preset's checkpoints (:class:`builder.presets.Schedule`); at each, the training loss since the last one, the
client's validation (which also decides which slots died), the seconds so far and the ASGD switch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from .engine import MaskSampler, SlotGenotypes, autocast, init_params, train_loss
from .optim import SlotSGD
from .presets import Preset, Schedule

if TYPE_CHECKING:
    from .resume import Resume

PROTOCOL_VERSION = 1
"""What a run computes: bump it whenever a change to training or evaluation would change a run's numbers beyond
float rounding (a new loss term, another lr rule, a different evaluation); kept units of another version are then
refused instead of being mixed with new ones. Refactors that keep every run equal within float tolerance (the
slot engine's contract, e.g. a faster decoder) do not bump it."""


def batchify(tokens: np.ndarray, batch: int, device: torch.device) -> torch.Tensor:
    """``[L, batch]`` columns of the token stream (remainder dropped), as AWD-LSTM does."""
    L = len(tokens) // batch
    if L < 2:
        raise ValueError(f"{len(tokens)} tokens are too few for batch size {batch}")
    return torch.as_tensor(tokens[: L * batch].reshape(batch, L).T.copy(), device=device)


class BpttStream:
    """The shared sequence of (start, seq_len) windows over ``L`` rows; identical for every run of a preset.

    ``mode``: ``awd`` (bptt, or bptt/2 with p = 0.05, then N(·, 5), min 5, max bptt + 20), ``halving``
    (bptt, or bptt // 2 with p = 0.05: the paper's weight-sharing schedule) or ``fixed``.
    """

    def __init__(self, bptt: int, mode: str, seed: int, rows: int):
        if mode not in ("awd", "halving", "fixed"):
            raise ValueError(f"unknown bptt mode {mode!r} (awd, halving, fixed)")
        self.bptt, self.mode, self.rows = bptt, mode, rows
        self.rng = np.random.RandomState(seed)
        self.epoch, self.i = 0, 0

    def next(self) -> tuple[int, int, bool]:
        """Returns (start, seq_len, new_epoch)."""
        new_epoch = False
        if self.i >= self.rows - 2:
            self.epoch, self.i, new_epoch = self.epoch + 1, 0, True
        if self.mode == "awd":
            bptt = self.bptt if self.rng.random_sample() < 0.95 else self.bptt / 2.0
            seq = min(max(5, int(self.rng.normal(bptt, 5))), self.bptt + 20)
        elif self.mode == "halving":
            seq = self.bptt if self.rng.random_sample() < 0.95 else self.bptt // 2
        else:
            seq = self.bptt
        seq = min(seq, self.rows - 1 - self.i)
        start = self.i
        self.i += seq
        return start, seq, new_epoch

    @property
    def position(self) -> float:
        """Epochs of the training stream consumed so far (fractional)."""
        return self.epoch + self.i / (self.rows - 1)

    def state(self) -> dict:
        """The stream's position and random state, for a unit's resumable state."""
        from .resume import rng_state

        return {"epoch": self.epoch, "i": self.i, "rng": rng_state(self.rng)}

    def load_state(self, state: dict) -> None:
        """Continue from :meth:`state`'s record."""
        from .resume import section, set_rng_state

        self.epoch, self.i = int(state["epoch"]), int(state["i"])
        set_rng_state(self.rng, section(state, "rng"))


def to_ppl(ce: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Perplexity where the run is live and the loss finite, else NaN."""
    ce = np.asarray(ce, dtype=np.float64)
    ok = live & np.isfinite(ce)
    return np.where(ok, np.exp(np.minimum(np.where(ok, ce, 0.0), 700.0)), np.nan)


class SlotTrainer:
    """Training state of ``A`` slots — weights, optimiser, masks, hidden state, which are alive — and the
    mini-batch loop. Standalone runs and weight-sharing super-nets differ only in the genotypes fed per batch.
    """

    def __init__(self, corpus, seeds: Sequence[int], nodes: int, p: Preset, device: torch.device,
                 bptt_mode: str, hidden_clip: float = 0.0):
        self.p, self.device, self.A, self.V = p, device, len(seeds), corpus.ntokens
        self.train = batchify(corpus.train[: p.train_tokens], p.batch_size, device)
        self.params = init_params(seeds, self.V, p.hidden, nodes, device)
        self.opt = SlotSGD(self.params, p.weight_decay, p.clip)
        self.masks = MaskSampler(seeds, device)
        self.stream = BpttStream(p.bptt, bptt_mode, p.stream_seed, self.train.shape[0])
        self.hidden_clip = hidden_clip
        self.alive = torch.ones(self.A, dtype=torch.bool, device=device)
        self.hidden = torch.zeros(self.A, p.batch_size, p.hidden, device=device)
        self.loss_sum = torch.zeros(self.A, dtype=torch.float64, device=device)
        self.loss_tokens = 0
        self.history: list[list[float]] = [[] for _ in range(self.A)]
        # called as before_step(start, seq, hidden) ahead of each mini-batch's weight step (DARTS's architecture step)
        self.before_step: Callable[[int, int, torch.Tensor], None] | None = None
        # called with the slots about to be marked dead ([A] bool); returns those it returned to an earlier state,
        # which stay alive (their carried hidden state restarts at zero)
        self.on_diverge: Callable[[np.ndarray], np.ndarray] | None = None
        # a slot whose mean training loss over an interval exceeds this has diverged (a finite blow-up)
        self.max_loss = float("inf")

    def state(self) -> dict:
        """Everything the next mini-batch depends on (:mod:`builder.resume`): weights, optimiser, dropout and bptt
        streams, carried hidden state, live slots, the loss accumulated since the last checkpoint and the
        validation history of the non-monotone switch (``[A, L]``, NaN-padded, with each slot's length)."""
        longest = max((len(h) for h in self.history), default=0)
        history = np.full((self.A, longest), np.nan)
        for a, h in enumerate(self.history):
            history[a, : len(h)] = h
        return {
            "params": self.params, "opt": self.opt.state(), "masks": self.masks.state(), "stream": self.stream.state(),
            "alive": self.alive, "hidden": self.hidden, "loss_sum": self.loss_sum, "loss_tokens": self.loss_tokens,
            "history": history, "history_len": np.array([len(h) for h in self.history]),
        }

    @torch.no_grad()
    def load_state(self, state: dict) -> None:
        """Continue from :meth:`state`'s record (shapes checked by the caller's fingerprint)."""
        from .resume import section as sub

        for k, v in self.params.items():
            v.copy_(torch.as_tensor(state[f"params/{k}"]))
        self.opt.load_state(sub(state, "opt"))
        self.masks.load_state(sub(state, "masks"))
        self.stream.load_state(sub(state, "stream"))
        self.alive.copy_(torch.as_tensor(state["alive"]))
        self.hidden = torch.as_tensor(state["hidden"], device=self.device).clone()
        self.loss_sum.copy_(torch.as_tensor(state["loss_sum"]))
        self.loss_tokens = int(state["loss_tokens"])
        self.history = [[float(x) for x in row[:n]] for row, n in zip(state["history"], state["history_len"])]

    def train_until(self, epoch: float, genotypes: Callable[[], SlotGenotypes],
                    on_batch: Callable[[int], None] | None = None) -> None:
        """Mini-batches until the stream reaches ``epoch``; ``genotypes()`` gives each batch's cells."""
        p = self.p
        while self.stream.position < epoch - 1e-9:
            start, seq, new_epoch = self.stream.next()
            h = torch.zeros_like(self.hidden) if new_epoch else self.hidden.detach()
            h = torch.where(self.alive.view(-1, 1, 1), h, 0.0)
            if self.hidden_clip > 0:  # per-sample L2 norm of the carried state (the paper's WS training)
                h = h * (self.hidden_clip / (h.norm(dim=-1, keepdim=True) + 1e-12)).clamp(max=1.0)
            if self.before_step is not None:
                self.before_step(start, seq, h)
            m = self.masks.draw(p.batch_size, self.V, p.hidden, p.dropouts)
            with autocast(self.device, p.amp):
                objective, ce, self.hidden = train_loss(
                    self.params, genotypes(), self.train[start : start + seq],
                    self.train[start + 1 : start + 1 + seq], h, m, p.beta, p.alpha,
                )
            torch.where(self.alive, objective, torch.zeros_like(objective)).sum().backward()
            self.opt.step(p.lr * seq / p.bptt, self.alive)
            self.loss_sum += ce.detach().double() * seq
            self.loss_tokens += seq
            if on_batch is not None:
                on_batch(seq * p.batch_size * self.A)

    def end_interval(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean training loss per slot since the last call, and which slots are still alive.

        A slot whose loss or weights are no longer finite, or whose loss is above ``max_loss``, is marked dead
        (``kill``): its weights are zeroed so its arithmetic stays finite, and it never trains again.
        """
        mean_loss = (self.loss_sum / max(self.loss_tokens, 1)).cpu().numpy()
        self.loss_sum.zero_()
        self.loss_tokens = 0
        finite = torch.as_tensor(np.isfinite(mean_loss) & (mean_loss <= self.max_loss), device=self.device)
        for v in self.params.values():
            finite &= torch.isfinite(v.detach()).flatten(1).all(1)
        self.kill(~finite)
        live = self.alive.cpu().numpy()
        return np.where(live, mean_loss, np.nan), live

    def kill(self, mask) -> None:
        """Mark the slots in ``mask`` dead (diverged): their weights are zeroed and they never train again —
        unless ``on_diverge`` returns them to an earlier state first."""
        mask = torch.as_tensor(mask, device=self.device) & self.alive
        if self.on_diverge is not None and bool(mask.any()):
            revived = torch.as_tensor(self.on_diverge(mask.cpu().numpy()), device=self.device)
            with torch.no_grad():
                self.hidden[revived] = 0.0
            mask &= ~revived
        if bool(mask.any()):
            with torch.no_grad():
                for v in self.params.values():
                    v[mask] = 0.0
            self.alive &= ~mask

    def nonmono_switch(self, valid_loss: np.ndarray, live: np.ndarray) -> None:
        """AWD-LSTM's rule per slot: average from now on when the validation loss exceeds the best of all but
        the last ``nonmono`` values (more than ``nonmono`` logged)."""
        switch = np.zeros(self.A, dtype=bool)
        for a in np.flatnonzero(live):
            h = self.history[a]
            if len(h) > self.p.nonmono and valid_loss[a] > min(h[: -self.p.nonmono]):
                switch[a] = True
            h.append(float(valid_loss[a]))
        self.opt.switch(torch.as_tensor(switch, device=self.device))


@dataclass(frozen=True)
class Progression:
    """What the checkpoint loop records for every client: ``[C]`` epochs, ``[A, C]`` training loss and seconds."""

    epochs: np.ndarray
    train_loss: np.ndarray
    seconds: np.ndarray  # cumulative wall-clock per slot (the unit's time shared evenly by its slots)


def checkpoint_loop(tr: SlotTrainer, schedule: Schedule, genotypes: Callable[[], SlotGenotypes],
                    validate: Callable[[int, dict, np.ndarray], np.ndarray], asgd: bool,
                    on_batch: Callable[[int], None] | None = None, resume: "Resume | None" = None,
                    keep: dict | None = None) -> Progression:
    """Train ``tr`` to each checkpoint of ``schedule``. At each, ``validate(c, eval_params, live)`` evaluates,
    kills the slots that must die (``tr.kill``) and returns each slot's validation loss for the non-monotone
    switch (applied when ``asgd``, at the checkpoints the schedule says judge it). NaN where a slot is dead.

    ``resume`` (:class:`builder.resume.Resume`): start from its saved state if there is one, save the whole
    state after every checkpoint, and pause (:class:`builder.resume.Paused`) at the last checkpoint before its
    deadline. ``keep``: the client's state to save and restore with it (arrays, tensors and dicts of them are
    restored in place; objects with ``state``/``load_state`` give and take their own).

    Raises:
        builder.resume.Paused: the deadline comes before the next checkpoint (the state is saved).
    """
    from .resume import Paused, client_state, restore, section

    A, C = tr.A, len(schedule)
    loop = {"at": np.zeros(C), "train_loss": np.full((A, C), np.nan), "seconds": np.full((A, C), np.nan),
            "next": np.zeros((), dtype=np.int64), "elapsed": np.zeros(()), "rate": np.full((), np.nan)}
    saved = resume.load() if resume is not None else None
    if saved is not None:
        tr.load_state(section(saved, "trainer"))
        restore(keep or {}, section(saved, "client"))
        restore(loop, section(saved, "loop"))
    at, train_loss, seconds = loop["at"], loop["train_loss"], loop["seconds"]
    elapsed, t0 = float(loop["elapsed"]), time.perf_counter()
    for c in range(int(loop["next"]), C):
        if resume is not None:
            rate = float(loop["rate"])
            if c > 0 and resume.should_pause(schedule.at[c] - schedule.at[c - 1], None if np.isnan(rate) else rate):
                raise Paused(c, C, float(at[c - 1]))
        start_pos, t_interval = tr.stream.position, time.perf_counter()
        tr.train_until(schedule.at[c], genotypes, on_batch)
        at[c] = tr.stream.position
        train_loss[:, c], live = tr.end_interval()
        switch_loss = validate(c, tr.opt.eval_params(), live)
        live = tr.alive.cpu().numpy()
        elapsed += time.perf_counter() - t0
        t0 = time.perf_counter()
        train_loss[~live | ~np.isfinite(train_loss[:, c]), c] = np.nan  # a rolled-back interval's inf too
        seconds[:, c] = np.where(live, elapsed / A, np.nan)
        if asgd and schedule.judges[c]:
            tr.nonmono_switch(switch_loss, live)
        if resume is not None and c < C - 1:
            loop["next"][...], loop["elapsed"][...] = c + 1, elapsed
            if at[c] > start_pos:  # an interval shorter than one bptt window trains nothing: no rate from it
                loop["rate"][...] = (time.perf_counter() - t_interval) / (at[c] - start_pos)
            resume.save({"trainer": tr.state(), "client": client_state(keep or {}), "loop": loop}, c + 1)
            t0 = time.perf_counter()  # the save is not training time
    return Progression(at, train_loss, seconds)
