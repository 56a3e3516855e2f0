"""``build --executor ray``: the same units, trained as Ray tasks on a cluster (the optional extra ``cluster``).

Each unit is one task with a resource request (``unit_cpus`` CPUs, ``unit_gpus`` of a GPU: fractions pack several
units on one GPU). At most ``window`` tasks are in flight, so the driver's memory stays flat however many units
the build has; results are collected as they finish (``ray.wait``) and the driver persists each exactly as the
local executor's (:mod:`builder.build`). Worker processes are long-lived (``max_calls=0``: no fresh process, hence
no fresh CUDA context, per task) and load PTB once per process, verified by its sha256 like every load. A task
whose worker dies, or that raises, is retried ``retries`` times by Ray, then reported with its unit named while
the other units go on. Ray is imported only here, and only when a build asks for it.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Iterator

import torch

from .executors import (Failed, Finished, Work, check_device_name, device_name, software, train_unit,
                        unit_tokens)
from .parts import BuildError

_CORPORA: dict = {}  # per worker process: data_dir → Corpus
_LOADS = {"n": 0}


def _train_remote(unit, sp, p, data_dir: str | None, device: str, threads: int):
    """Runs in a Ray worker: train one unit there; returns the arrays, the seconds and where it ran."""
    from . import data

    if data_dir not in _CORPORA:
        _CORPORA[data_dir] = data.load(data_dir)
        _LOADS["n"] += 1
    dev = torch.device(device)  # set explicitly: what a CPU task sees in CUDA_VISIBLE_DEVICES varies by Ray version
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    arrays = train_unit(unit, sp, p, _CORPORA[data_dir], dev)
    return arrays, time.perf_counter() - t0, device_name(dev), {"pid": os.getpid(), "corpus_loads": _LOADS["n"],
                                                               "software": software()}


def _reachable(address: str, timeout: float = 5.0) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise BuildError(f"--address {address!r}: expected auto or HOST:PORT (the head's GCS port, 6379 by default)")
    try:
        socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BuildError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; start it with "
                         "`ray start --head` (and `ray start --address HEAD:6379` on the other machines) or fix "
                         "--address") from None


class RayExecutor:
    """Units as Ray tasks. ``address``: None starts (or joins, if ``RAY_ADDRESS`` is set) a Ray on this machine,
    ``"auto"`` joins the cluster this machine is part of, ``"HOST:PORT"`` a given head."""

    name = "ray"
    resumable = False  # a unit's state would live on whichever machine ran it: Ray units restart whole

    def __init__(self, address: str | None = None, unit_cpus: int = 1, unit_gpus: float = 0.0, retries: int = 2,
                 window: int | None = None, object_store_memory: int | None = None):
        if unit_cpus < 1:
            raise BuildError(f"--unit-cpus must be at least 1, got {unit_cpus}")
        if not 0 <= unit_gpus <= 1e6:
            raise BuildError(f"--unit-gpus must be a GPU count or fraction ≥ 0, got {unit_gpus}")
        if retries < 0:
            raise BuildError(f"retries must be ≥ 0, got {retries}")
        self.address, self.unit_cpus, self.unit_gpus, self.retries = address, unit_cpus, unit_gpus, retries
        self.window, self.object_store_memory = window, object_store_memory
        self._task = None

    def connect(self, device: str) -> torch.device:
        """Connect to the Ray cluster (or start a local one) and resolve the units' device."""
        check_device_name(device)
        if device == "cuda" and not self.unit_gpus:
            raise BuildError("--device cuda on Ray needs a GPU share per unit: give --unit-gpus (e.g. 1 or 0.25)")
        if device == "cpu" and self.unit_gpus:
            raise BuildError("--device cpu with --unit-gpus: units would hold GPUs they do not use; drop one")
        try:
            import ray
        except ImportError:
            raise BuildError("--executor ray needs Ray: pip install 'nasbench-ptb[cluster]'") from None
        if not ray.is_initialized():
            if self.address not in (None, "auto"):
                _reachable(self.address)
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR,  # errors are ours to print, in one line
                         object_store_memory=self.object_store_memory if self.address is None else None)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "this machine"
                raise BuildError(f"cannot connect to Ray at {where}: {str(exc).splitlines()[0]}") from None
        have = ray.cluster_resources()
        if have.get("CPU", 0) < self.unit_cpus or have.get("GPU", 0) < self.unit_gpus:
            raise BuildError(f"the Ray cluster has {have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs; a unit "
                             f"asks for {self.unit_cpus} CPUs and {self.unit_gpus:g} GPUs")
        fits = [have["CPU"] // self.unit_cpus] + ([have["GPU"] // self.unit_gpus] if self.unit_gpus else [])
        self.window = self.window or max(1, 2 * int(min(fits)))  # keep every slot busy, one unit queued behind it
        self._task = ray.remote(max_calls=0, max_retries=self.retries, retry_exceptions=True)(_train_remote).options(
            num_cpus=self.unit_cpus, num_gpus=self.unit_gpus)
        return torch.device("cuda" if self.unit_gpus else "cpu")

    def run(self, todo, work: Work, may_start, progress) -> Iterator[Finished | Failed]:
        """Train the units of ``todo`` on the cluster, yielding each as it finishes or fails."""
        import ray

        if self._task is None:
            raise BuildError("RayExecutor.run before connect")
        queue, pending = list(todo), {}
        train_len = len(work.corpus.train[: work.p.train_tokens])
        stopped = False
        try:
            while queue or pending:
                while queue and not stopped and len(pending) < self.window:
                    if not may_start(len(queue)):
                        stopped = True
                        break
                    unit = queue.pop(0)
                    ref = self._task.remote(unit, work.sp, work.p, work.data_dir, work.dev.type, self.unit_cpus)
                    pending[ref] = unit
                progress.set_in_flight(len(pending))
                if not pending:
                    break
                [ref], _ = ray.wait(list(pending), num_returns=1)
                unit = pending.pop(ref)
                try:
                    arrays, seconds, device, worker = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    yield Failed(unit, f"after {self.retries} retries: {_first_line(exc)}")
                    continue
                progress.tokens(unit_tokens(unit, work.p, train_len))
                progress.set_in_flight(len(pending))
                yield Finished(unit, arrays, seconds, device, worker, worker.get("software", {}))
        finally:
            for ref in pending:  # the driver stops early (an error, Ctrl-C): do not leave units running
                ray.cancel(ref, force=True)


def _first_line(exc: BaseException) -> str:
    """The cause of a Ray error in one line (its traceback stays in the worker's log)."""
    cause = getattr(exc, "cause", None)
    text = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
