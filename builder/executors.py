"""Where a build's units train: one at a time in this process (``local``), or as Ray tasks (``builder.cluster``).

An executor only trains; the driver (:mod:`builder.build`) plans the units, persists each finished one as a part
file and assembles the table, the same way for every executor, so resume and ``--time-limit`` behave alike.
:func:`train_unit` is the one definition of what training a unit means.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Protocol

import h5py
import numpy as np
import torch

import nasbench_ptb
from nasbench_ptb.space import SearchSpace

from .parts import BuildError
from .presets import Preset
from .resume import STATE_PREFIX, Paused, Resume
from .standalone import train_runs
from .ws import train_supernets

if TYPE_CHECKING:
    from .build import Unit
    from .progress import Progress


def check_device_name(name: str) -> None:
    """``--device`` must be auto, cpu or cuda (wherever the units run)."""
    if name not in ("auto", "cpu", "cuda"):
        raise BuildError(f"unknown device {name!r} (auto, cpu or cuda)")


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu`` or ``cuda`` as a device; BuildError when CUDA is asked for and absent."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BuildError("--device cuda requested but torch sees no CUDA device")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The device in words, for the table's ``device`` attribute."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def train_unit(unit: "Unit", sp: SearchSpace, p: Preset, corpus, dev: torch.device,
               on_batch: Callable[[int], None] | None = None, resume: Resume | None = None) -> dict:
    """Train one unit; its arrays as a part stores them (:mod:`builder.parts`), seeds included.

    ``resume``: the unit's state file (:mod:`builder.resume`): continue from it, save to it at every checkpoint.

    Raises:
        builder.resume.Paused: ``resume``'s deadline came before the unit's end (its state is saved).
    """
    if unit.kind == "standalone":
        res = train_runs(corpus, [sp.from_id(a) for a in unit.arch_ids], unit.seeds, p, dev, on_batch=on_batch,
                         resume=resume)
        arrays = {"arch_ids": unit.arch_ids, **vars(res)}
    else:
        res = train_supernets(corpus, sp, unit.seeds, p, dev, on_batch=on_batch, arch_ids=unit.arch_ids or None,
                              resume=resume)
        arrays = {**vars(res), **({"arch_ids": unit.arch_ids} if unit.arch_ids else {})}
    return {**arrays, "seeds": unit.seeds}


def unit_tokens(unit: "Unit", p: Preset, train_len: int) -> float:
    """Training arch-tokens of a unit (slots × epochs × training tokens), for progress and ETAs."""
    return len(unit.seeds) * (p.epochs if unit.kind == "standalone" else p.ws_epochs) * train_len


def tokens_left(unit: "Unit", work: "Work", train_len: int) -> float:
    """The training arch-tokens a unit still needs: all of them, less what its saved state has trained."""
    resume = work.resume(unit)
    done = resume.checkpoints_done() if resume is not None else 0
    if not done:
        return unit_tokens(unit, work.p, train_len)
    at = work.p.schedule("standalone" if unit.kind == "standalone" else "ws").at
    return unit_tokens(unit, work.p, train_len) * (1 - at[min(done, len(at)) - 1] / at[-1])


@dataclass(frozen=True)
class Finished:
    """A trained unit as it comes back to the driver."""

    unit: "Unit"
    arrays: dict
    seconds: float  # wall-clock seconds of its training where it ran
    device: str
    worker: dict = field(default_factory=dict)  # where it ran (executor-specific: pid, corpus loads, attempts)
    software: dict = field(default_factory=dict)  # the versions that trained it (:func:`software`, where it ran)


@dataclass(frozen=True)
class Stopped:
    """A unit paused at a checkpoint by the time limit; its state waits in the parts folder for the next run."""

    unit: "Unit"
    reason: str


@dataclass(frozen=True)
class Failed:
    """A unit that could not be trained (after the executor's retries); the build goes on with the others."""

    unit: "Unit"
    error: str


@dataclass(frozen=True)
class Work:
    """What every unit of one build shares."""

    sp: SearchSpace
    p: Preset
    corpus: object  # builder.data.Corpus, loaded by the driver
    dev: torch.device
    data_dir: str | None  # as the user gave it: remote workers locate PTB themselves from it
    states: Path | None = None  # where running units keep their state (the parts folder); None: no resume
    deadline: float | None = None  # time.time() by which resumable units pause (the build's --time-limit)

    def resume(self, unit: "Unit") -> Resume | None:
        """The state file of ``unit`` in this build, or None when units do not keep state."""
        if self.states is None:
            return None
        return Resume(state_path(self.states, unit), unit.fingerprint + "|" + unit.key, self.deadline)


def state_path(folder: Path, unit: "Unit") -> Path:
    """Where a unit's resumable state lives in the parts folder."""
    return folder / f"{STATE_PREFIX}{unit.key}.h5"


class Executor(Protocol):
    """Where a build's units train. The build hands over the units still to do and persists what comes back
    (parts, resume, the table are the executor's concern nowhere): ``local`` runs them in this process,
    ``builder.cluster.RayExecutor`` as Ray tasks."""

    name: str
    resumable: bool  # units keep their state in Work.states and pause at Work.deadline

    def connect(self, device: str) -> torch.device:
        """Check that units can run and return the device they train on (``--device``: auto, cpu or cuda); a
        ``BuildError`` of one line if they cannot. Called before anything is written."""

    def run(self, todo: Iterable["Unit"], work: Work, may_start: Callable[[int], bool],
            progress: "Progress") -> Iterator[Finished | Failed]:
        """Train the units, yielding each as it finishes; ``may_start(k)`` (``k`` units not yet started) is asked
        before each start, and no unit starts once it says no."""


class LocalExecutor:
    """Units on this machine: one after the other in this process (the default, and what tests and debugging
    use), or ``workers`` at a time in worker processes (:mod:`builder.pool`); resumable either way, unless
    ``unit_state`` is off: then no unit saves its state at checkpoints (a stopped unit restarts whole), for a
    machine whose unit state cannot outlive it and costs minutes to write (≈ 4 GB per checkpoint for the 160
    runs of a 2node ``gpu`` unit, on a GPU lease whose files come back 16 MiB at most)."""

    name = "local"

    def __init__(self, workers: int = 1, unit_state: bool = True):
        if workers < 1:
            raise BuildError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.resumable = unit_state

    def connect(self, device: str) -> torch.device:
        """The device of ``--device`` on this machine (a one-line ``BuildError`` when it has none)."""
        return resolve_device(device)

    def run(self, todo, work: Work, may_start, progress) -> Iterator[Finished | Failed | Stopped]:
        """Each unit in turn; a unit paused by the deadline yields :class:`Stopped` (its state kept)."""
        if self.workers > 1:
            from .pool import run_parallel

            yield from run_parallel(todo, work, may_start, progress, self.workers)
            return
        todo = list(todo)
        for i, unit in enumerate(todo):
            if not may_start(len(todo) - i):
                return
            res = run_unit(unit, work, progress.tokens)
            yield res
            if isinstance(res, Stopped):
                return


def software() -> dict:
    """The versions that train a unit (a part and its table record them) (python, torch, numpy, h5py, nasbench_ptb)."""
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "h5py": h5py.__version__, "nasbench_ptb": nasbench_ptb.__version__}


def run_unit(unit: "Unit", work: Work, on_batch: Callable[[int], None] | None = None) -> Finished | Stopped:
    """Train one unit of a resumable build in this process (one at a time, or in a :mod:`builder.pool` worker):
    :class:`Finished` with its wall-clock seconds (those of the earlier runs that trained it up to the state it
    resumed from included), or :class:`Stopped` when the deadline paused it (state kept)."""
    t0, resume = time.perf_counter(), work.resume(unit)
    try:
        arrays = train_unit(unit, work.sp, work.p, work.corpus, work.dev, on_batch=on_batch, resume=resume)
    except Paused as exc:
        return Stopped(unit, str(exc))
    earlier = resume.earlier_seconds if resume is not None else 0.0
    return Finished(unit, arrays, earlier + time.perf_counter() - t0, device_name(work.dev), software=software())
