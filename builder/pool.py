"""``build --workers N``: the local executor's units, N at a time, each in a worker process of this machine.

Why: torch's small GEMMs do not scale across threads, but across processes they do. Measured with
``benchmarks/bench_threads.py`` on the 2-core machine: two units at once with one thread each train 2.06× the
arch-tokens/s of one unit on idle cores, and 1.26× beside a competing CPU-bound process (two threads in one
process: 1.54× idle, 0.55× loaded). The units, their part files and the table are those of one-at-a-time: each
unit is the same deterministic computation wherever it runs.

Resume is unchanged: every running unit saves its state in the parts folder at each checkpoint and pauses at the
build's deadline; once one pauses no new unit starts, and the others pause at their own next checkpoint. Workers
are started with ``spawn`` (a fork of a process that already runs torch threads can deadlock) and die with the
build process (the kernel's parent-death signal on Linux, a 0.1 s poll elsewhere), so a SIGKILLed build leaves
no orphan writing states that the next run resumes.
"""
from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Iterator

import torch

from .executors import Finished, Stopped, Work, run_unit

if TYPE_CHECKING:
    from .build import Unit
    from .progress import Progress

_WORKER: dict = {}  # per worker process: what every unit of the build shares (set once by _init)


def _exit_when_orphaned(parent: int) -> None:
    while True:
        if os.getppid() != parent:  # the build process is gone: its units are the next run's to resume
            os._exit(1)
        time.sleep(0.1)


def _die_with_parent() -> None:
    """On Linux, the kernel kills the worker the moment the build process dies (PR_SET_PDEATHSIG); the polling
    thread is the guard elsewhere, and the fallback here."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _init(work: Work, threads: int, counter, parent: int) -> None:
    """Runs once in each worker: torch's threads, the build's shared inputs, the orphan guards."""
    _die_with_parent()
    torch.set_num_threads(threads)
    _WORKER.update(work=work, counter=counter)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()  # also if it died already


def _count(tokens: int) -> None:
    counter = _WORKER["counter"]
    with counter.get_lock():
        counter.value += tokens


def _train(unit: "Unit") -> Finished | Stopped:
    """Train one unit in a worker, as one at a time does (its pid recorded as where it ran)."""
    res = run_unit(unit, _WORKER["work"], _count)
    return dataclasses.replace(res, worker={"pid": os.getpid()}) if isinstance(res, Finished) else res


def run_parallel(todo: list["Unit"], work: Work, may_start, progress: "Progress",
                 workers: int) -> Iterator[Finished | Stopped]:
    """Train ``todo`` with ``workers`` processes, yielding each unit as it finishes or pauses; an error in a
    unit is raised here, as one-at-a-time raises it, after the other workers are stopped."""
    queue, pending, pool = list(todo), [], None
    ctx = mp.get_context("spawn")
    counter = ctx.Value("d", 0.0)
    counted, stopped = 0.0, False
    try:
        while queue or pending:
            starting = []  # decided before any worker is spawned: starting them takes seconds of the time limit
            while queue and not stopped and len(pending) + len(starting) < workers:
                if not may_start(len(queue)):
                    stopped = True
                    break
                starting.append(queue.pop(0))
            if starting and pool is None:
                pool = ctx.Pool(min(workers, len(starting) + len(queue)), _init,
                                (work, torch.get_num_threads(), counter, os.getpid()))
            pending += [pool.apply_async(_train, (unit,)) for unit in starting]
            progress.set_in_flight(len(pending))
            if not pending:
                break
            pending[0].wait(0.5)
            with counter.get_lock():
                total = counter.value
            if total > counted:
                progress.tokens(int(total - counted))
                counted = total
            for done in [r for r in pending if r.ready()]:
                pending.remove(done)
                res = done.get()  # re-raises the worker's exception
                stopped = stopped or isinstance(res, Stopped)  # the deadline has come: start nothing more
                yield res
            progress.set_in_flight(len(pending))
    finally:  # done, or the build stops early (an error, Ctrl-C): no worker outlives it
        if pool is not None:
            pool.terminate()
            pool.join()
