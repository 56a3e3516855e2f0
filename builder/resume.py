"""Resume inside a unit: its complete training state at every checkpoint, so a stopped build loses at most one
checkpoint interval of the unit that was running, and the resumed unit computes exactly what an uninterrupted
one computes.

The state of a unit is one HDF5 file ``<out>.parts/state-<unit key>.h5`` beside the finished parts, written
atomically (whole or absent) after each checkpoint and removed once the unit's part is written. It holds flat
datasets named ``trainer/…`` (weights, optimiser state with the ASGD switch and averages, dropout-generator and
bptt-stream states, the carried hidden state, live slots, the non-monotone history: :meth:`SlotTrainer.state`),
``client/…`` (what the standalone or weight-sharing client has recorded: curves so far, best weights, the
architecture sampler) and ``loop/…`` (the next checkpoint, the positions, training losses and seconds so far);
attributes ``fingerprint`` (the unit's configuration), ``checkpoint`` (how many are done) and ``content_sha256``
(the tables' digest, checked on load: a damaged state is moved aside and its unit starts again).

A ``deadline`` (``time.time()`` seconds) pauses the unit at the last checkpoint before it: after a checkpoint,
the next interval's time is estimated from the last one's rate (seconds per epoch), and when it would end past
the deadline the state is saved and :class:`Paused` raised; the next run of the same build continues there.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from nasbench_ptb import schema
from nasbench_ptb.files import write_h5

from .parts import BuildError

STATE_PREFIX = "state-"


class Paused(Exception):
    """A unit stopped at a checkpoint before the deadline; its state is saved for the next run."""

    def __init__(self, done: int, total: int, position: float):
        super().__init__(f"paused after checkpoint {done} of {total} (epoch {position:.2f})")
        self.done, self.total, self.position = done, total, position


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def flatten(state: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of tensors, arrays and scalars → ``{"a/b": array}``."""
    out = {}
    for k, v in state.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = _numpy(v)
    return out


def rng_state(rng: np.random.RandomState) -> dict:
    """A numpy ``RandomState`` as arrays (MT19937 keys, position, the cached Gaussian)."""
    _, keys, pos, has_gauss, gauss = rng.get_state()
    return {"keys": keys, "pos": pos, "has_gauss": has_gauss, "gauss": gauss}


def set_rng_state(rng: np.random.RandomState, state: dict) -> None:
    """Restore a numpy RandomState from :func:`rng_state`'s record."""
    rng.set_state(("MT19937", np.asarray(state["keys"], dtype=np.uint32), int(state["pos"]),
                   int(state["has_gauss"]), float(state["gauss"])))


def section(state: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries under ``prefix/``, with the prefix removed."""
    prefix = prefix.rstrip("/") + "/"
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def restore(target: dict, saved: dict[str, np.ndarray]) -> None:
    """Copy ``saved`` into ``target`` in place: numpy arrays and tensors keep their identity (closures that hold
    them see the restored values), dicts recurse, objects with ``load_state`` load their section."""
    for name, value in target.items():
        if hasattr(value, "load_state"):
            value.load_state(section(saved, name))
        elif isinstance(value, dict):
            restore(value, section(saved, name))
        elif isinstance(value, torch.Tensor):
            with torch.no_grad():
                value.copy_(torch.as_tensor(saved[name]))
        else:
            value[...] = saved[name]


def client_state(keep: dict) -> dict:
    """A client's registered state as nested dicts (objects with ``state`` give theirs)."""
    return {k: (v.state() if hasattr(v, "state") else client_state(v) if isinstance(v, dict) else v)
            for k, v in keep.items()}


@dataclass
class Resume:
    """Where one unit keeps its state, the configuration it must match, and an optional deadline."""

    path: Path
    fingerprint: str
    deadline: float | None = None  # time.time(); None: never pause
    earlier_seconds: float = field(default=0.0, init=False)  # training seconds of the state last loaded

    def load(self) -> dict[str, np.ndarray] | None:
        """The saved state, or None when there is none. A state of another configuration or an unreadable one is
        moved aside (``.bad``, never deleted) with a warning, and the unit starts from the beginning."""
        if not self.path.is_file():
            return None
        try:
            with h5py.File(self.path, "r") as f:
                if f.attrs["fingerprint"] != self.fingerprint:
                    raise ValueError("it was saved by another configuration")
                state: dict[str, np.ndarray] = {}
                f.visititems(lambda name, obj: state.__setitem__(name, obj[()])
                             if isinstance(obj, h5py.Dataset) else None)
                stored = f.attrs.get(schema.DIGEST)  # states saved before digests have none
                if stored is not None and str(stored) != schema.content_digest(f, state):
                    raise ValueError("content digest mismatch: a changed byte or a partial write")
                self.earlier_seconds = float(state.get("loop/elapsed", 0.0))
                return state
        except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:  # what damage makes h5py raise
            aside = self.path.with_name(self.path.name + ".bad")
            self.path.replace(aside)
            print(f"warning: cannot resume from {self.path} ({exc}); moved it to {aside.name}, the unit starts "
                  "from the beginning", file=sys.stderr)
            return None

    def checkpoints_done(self) -> int:
        """How many checkpoints the saved state has done (0 without a state of this configuration); reads only the
        attributes, for a progress estimate (:meth:`load` checks the contents)."""
        try:
            with h5py.File(self.path, "r") as f:
                return int(f.attrs["checkpoint"]) if f.attrs["fingerprint"] == self.fingerprint else 0
        except (OSError, KeyError):
            return 0

    def save(self, state: dict, checkpoint: int) -> None:
        """Write the state after ``checkpoint`` checkpoints, whole or not at all.

        Raises:
            builder.parts.BuildError: the file cannot be written (a full disk): one line naming it.
        """
        flat = flatten(state)

        def fill(f: h5py.File) -> None:
            f.attrs["fingerprint"] = self.fingerprint
            f.attrs["checkpoint"] = checkpoint
            for k, v in flat.items():
                f[k] = v
            f.attrs[schema.DIGEST] = schema.content_digest(f, {k: f[k][()] for k in flat})

        try:
            write_h5(self.path, fill)
        except OSError as exc:  # a full disk now would fail the unit's part too: stop now, with one line
            raise BuildError(f"cannot save the state of the running unit to {self.path}: {exc.strerror or exc}; the "
                             "units written before are kept, rerun the same command when the problem is fixed") from None

    def clear(self) -> None:
        """Remove the unit's saved state (after its part is written)."""
        self.path.unlink(missing_ok=True)

    def should_pause(self, next_epochs: float, seconds_per_epoch: float | None) -> bool:
        """Would the next interval (``next_epochs`` long) end after the deadline at the last measured rate?"""
        if self.deadline is None or seconds_per_epoch is None:
            return False
        return time.time() + next_epochs * seconds_per_epoch > self.deadline
