"""Table build: plan units, train each, persist it (``builder.parts``), assemble the table atomically.

Standalone units are groups of (architecture, seed) runs trained together as slots; weight-sharing units are
groups of super-net seeds. A killed build, rerun with the same command, skips finished units. The table is
assembled from every part of the same configuration and appears at ``<out>`` by atomic rename; standalone
runs without a part stay ``missing``, as do WS seeds.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nasbench_ptb import schema
from nasbench_ptb.space import Genotype, SearchSpace

from . import data, guard, parts, proxies
from .engine import count_params
from .executors import (Executor, Failed, LocalExecutor, Stopped, Work, device_name, resolve_device, software,
                        state_path, tokens_left)
from .parts import BuildError
from .presets import Preset
from .progress import Progress

MODES = ("standalone", "ws", "both")
__all__ = ["BuildError", "MODES", "build", "device_name", "resolve_device"]


@dataclass(frozen=True)
class Unit:
    """One unit of a build: the runs (or super-nets) trained together, and the configuration's fingerprint."""
    kind: str  # "standalone", "ws" or "ws_subspace"
    arch_ids: tuple[int, ...]  # standalone: one per run; ws: empty (every architecture); ws_subspace: the subspace
    seeds: tuple[int, ...]
    fingerprint: str = ""  # of the configuration: builds of different configurations never share a file name

    @property
    def key(self) -> str:
        """The unit's file name stem: its kind's prefix and a hash of the fingerprint and its runs."""
        if self.kind == "standalone":
            text = ",".join(f"{a}:{s}" for a, s in zip(self.arch_ids, self.seeds))
        else:
            text = ",".join(map(str, self.seeds))
            if self.kind == "ws_subspace":
                text = ",".join(map(str, self.arch_ids)) + "|" + text
        return parts.KINDS[self.kind] + hashlib.sha256((self.fingerprint + text).encode()).hexdigest()[:12]


def plan_units(arch_ids: Sequence[int], seeds: Sequence[int], per_unit: int,
               done: frozenset[tuple[int, int]] = frozenset(), fingerprint: str = "") -> list[Unit]:
    """Standalone runs not in ``done``, ordered by seed then id, cut into units of ``per_unit`` slots.

    Planning per run, not per unit, lets a later request that overlaps earlier ones (more architectures, more
    seeds, a sample) train each (architecture, seed) run once. A killed build replans the same remaining units:
    the finished ones were a prefix of its plan.
    """
    runs = [(a, s) for s in seeds for a in arch_ids if (a, s) not in done]
    return [
        Unit("standalone", tuple(a for a, _ in runs[i : i + per_unit]), tuple(s for _, s in runs[i : i + per_unit]),
             fingerprint)
        for i in range(0, len(runs), per_unit)
    ]


def plan_ws_units(seeds: Sequence[int], per_unit: int, subspace: Sequence[int] = (),
                  done: frozenset[int] = frozenset(), fingerprint: str = "") -> list[Unit]:
    """Super-net seeds not in ``done``, cut into units of ``per_unit``."""
    kind, todo = ("ws_subspace" if subspace else "ws"), [s for s in seeds if s not in done]
    return [Unit(kind, tuple(subspace), tuple(todo[i : i + per_unit]), fingerprint)
            for i in range(0, len(todo), per_unit)]


def _one_subspace(found: list[dict], requested: Sequence[int]) -> tuple[int, ...]:
    """The subspace of the ``ws_subspace`` parts in a folder (one per table), checked against the request."""
    held = {tuple(int(i) for i in part["arch_ids"]) for part in found}
    if len(held) > 1:
        raise BuildError(f"the parts folder holds super-nets over {len(held)} different subspaces; a table holds one")
    if held and requested and tuple(requested) not in held:
        raise BuildError(f"this output already holds super-nets over another subspace (ids {_ids(next(iter(held)))}); "
                         "use another --out for this --ws-archs")
    return tuple(requested) or (next(iter(held)) if held else ())


def _ids(ids: Sequence[int]) -> str:
    return ",".join(map(str, ids))


def _make_writable(out: Path, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for where in (folder, out.parent):
            with tempfile.NamedTemporaryFile(dir=where):
                pass
    except OSError as exc:
        raise BuildError(f"cannot write the output {out}: {exc.strerror or exc}") from None


def _read_parts(folder: Path, fps: dict) -> dict[str, list[dict]]:
    return {kind: parts.read_all(folder, kind, fps[kind]) for kind in parts.KINDS}


def table_config(sp: SearchSpace, p: Preset, ntokens: int) -> dict:
    """Every training value of a table (or a search-results file): the preset, the model size, the vocabulary."""
    return {**p.to_dict(), "params": count_params(ntokens, p.hidden, sp.n), "ntokens": ntokens,
            "seed_meaning": "initialisation, dropout masks (and WS architecture draws); data order is shared"}


@dataclass(frozen=True)
class BuildRequest:
    """One build: what to train and write, and how. ``nasbench_ptb build`` fills one from its flags.

    ``archs``: the architectures (default every one of ``space``); ``seeds``/``ws_seeds``: standalone seeds and
    super-nets (default the preset's); ``mode``: ``both``, ``standalone`` or ``ws``. ``time_limit`` (seconds):
    start no unit that would not finish by then (judged from the units trained so far), pause the running unit at
    a checkpoint, and write the table of what is done; rerunning the same request continues. ``0`` only
    assembles. ``sample``: the recorded description (:meth:`nasbench_ptb.sampling.Sample.to_dict`) of the sample
    that ``archs`` is; its units carry it, and the table lists it under ``samples``. ``ws_archs``: the super-nets
    share their weights among these architectures only (``/ws_subspace``). ``force``: replace an existing
    ``out`` that is not this build's own earlier table (:mod:`builder.guard`). ``executor``: where units train
    (default :class:`builder.executors.LocalExecutor`; ``builder.cluster`` has Ray); the parts, resume and the
    table are the same for every executor.
    """

    space: SearchSpace
    preset: Preset
    out: str | os.PathLike
    archs: Sequence[Genotype] | None = None
    seeds: int | None = None
    device: str = "auto"
    data_dir: str | None = None
    quiet: bool = False
    mode: str = "both"
    ws_seeds: int | None = None
    time_limit: float | None = None
    sample: dict | None = None
    ws_archs: Sequence[Genotype] | None = None
    force: bool = False
    executor: Executor | None = None


def build(request: BuildRequest) -> schema.Table:
    """Train what ``request`` asks for and write its table (see :class:`BuildRequest`).

    Nothing is created before the output, the device, the data and the executor have been checked.

    Raises:
        BuildError: a bad mode, output path, device, conflicting parts, a table it would shrink, a failed unit.
        builder.data.DataError: PTB missing or failing its checksum.
    """
    r = request
    sp, p, archs, seeds, mode, ws_seeds, ws_archs = r.space, r.preset, r.archs, r.seeds, r.mode, r.ws_seeds, r.ws_archs
    device, data_dir, quiet, time_limit, sample, force = r.device, r.data_dir, r.quiet, r.time_limit, r.sample, r.force
    executor, out = r.executor, r.out
    if mode not in MODES:
        raise BuildError(f"unknown mode {mode!r} ({', '.join(MODES)})")
    out = Path(out)
    guard.check_path(out)
    executor = executor or LocalExecutor()
    dev = executor.connect(device)
    corpus = data.load(data_dir)
    fps = {kind: parts.fingerprint(sp, p, kind) for kind in parts.KINDS}
    folder = out.with_name(out.name + ".parts")
    req = _Request(
        arch_ids=sorted({g.id for g in archs}) if archs else list(range(sp.size)),
        seeds=list(range(seeds if seeds is not None else p.seeds)) if mode != "ws" else [],
        ws_kind="ws_subspace" if ws_archs else "ws",
        ws_seeds=list(range(ws_seeds if ws_seeds is not None else p.ws_seeds)) if mode != "standalone" else [],
        subspace=tuple(sorted({g.id for g in ws_archs})) if ws_archs else (),
    )
    if not force:
        guard.check_existing(out, sp, p, _read_parts(folder, fps) if folder.is_dir() else None, req.runs())
    _make_writable(out, folder)
    deadline = time.time() + time_limit if time_limit is not None else None
    work = Work(sp, p, corpus, dev, None if data_dir is None else str(data_dir),
                folder if executor.resumable else None, deadline)
    with guard.exclusive(folder, out):
        return _build_locked(work, out, folder, fps, executor, req, quiet, mode, time_limit, sample, force)


@dataclass(frozen=True)
class _Request:
    """What one build command asks for (empty seed lists for the mode it does not train)."""

    arch_ids: list[int]
    seeds: list[int]  # standalone seeds
    ws_kind: str  # "ws" or "ws_subspace"
    ws_seeds: list[int]
    subspace: tuple[int, ...]  # --ws-archs, sorted; () for whole-space super-nets

    def runs(self) -> dict[str, set]:
        """Per part kind, the runs requested (as :func:`builder.guard.in_parts` counts what parts hold)."""
        return {"standalone": {(a, s) for s in self.seeds for a in self.arch_ids}, self.ws_kind: set(self.ws_seeds)}


def _build_locked(work: Work, out, folder, fps, executor: Executor, req: _Request, quiet, mode, time_limit,
                  sample, force: bool = False) -> schema.Table:
    sp, p = work.sp, work.p
    guard.clean_temporaries(folder, out)  # of writes a kill interrupted (we hold the lock: nobody else writes)
    found = _read_parts(folder, fps)
    have = guard.in_parts(found)
    asked = req.runs()
    todo = plan_units(req.arch_ids, req.seeds, p.slots_per_unit, frozenset(have["standalone"]), fps["standalone"])
    subspace = _one_subspace(found["ws_subspace"], req.subspace)
    todo += plan_ws_units(req.ws_seeds, p.ws_slots_per_unit, req.subspace, frozenset(have[req.ws_kind]),
                          fps[req.ws_kind])
    # units of this request already trained (for runs planned per run: their equivalent in units)
    n_done = -(-len(asked["standalone"] & have["standalone"]) // p.slots_per_unit) \
        - (-len(asked[req.ws_kind] & have[req.ws_kind]) // p.ws_slots_per_unit)
    n_units = n_done + len(todo)
    train_len = len(work.corpus.train[: p.train_tokens])
    progress = Progress(n_units, n_done, quiet=quiet, label=f"{sp.name}/{p.name}",
                        planned_tokens=sum(tokens_left(u, work, train_len) for u in todo))
    started, unit_seconds, failed = time.perf_counter(), [], []

    def may_start(left: int) -> bool:
        """Resumable units start while there is time (they pause at their last checkpoint before the limit);
        other units only when they would end before it, judged from the units trained so far."""
        if time_limit is None:
            return True
        per_unit = 0.0 if executor.resumable else sum(unit_seconds) / len(unit_seconds) if unit_seconds else 0.0
        if time.perf_counter() - started + per_unit < time_limit:
            return True
        progress.note(f"time limit: {left} of {n_units} units left for a later run of the same command")
        return False

    for res in executor.run(todo, work, may_start, progress):
        if isinstance(res, Stopped):
            progress.note(f"time limit: unit {res.unit.key} ({_describe(res.unit)}) {res.reason}; its state is "
                          f"kept in {folder}, a later run of the same command continues it")
            continue
        if isinstance(res, Failed):
            failed.append(res)
            progress.unit_failed(f"unit {res.unit.key} ({_describe(res.unit)}) failed: {res.error}")
            continue
        attrs = {"fingerprint": fps[res.unit.kind], "unit_seconds": res.seconds, "device": res.device}
        if res.software:
            attrs["software"] = json.dumps(res.software, sort_keys=True)
        if sample is not None and res.unit.kind == "standalone":
            attrs["sample"] = json.dumps({**sample, "seeds": req.seeds}, sort_keys=True)
        parts.write(folder / f"{res.unit.key}.h5", res.arrays, attrs)
        state_path(folder, res.unit).unlink(missing_ok=True)  # the part holds it all now
        unit_seconds.append(res.seconds)
        progress.unit_done()
    progress.close()
    table = assemble(sp, p, folder, fps, work.corpus.ntokens, work.dev, mode, subspace, req.seeds, req.ws_seeds)
    table = _keep_proxies(out, table)
    if not force:
        guard.check_not_shrinking(out, table)
    try:
        schema.write(table, out)
    except OSError as exc:
        raise BuildError(f"cannot write the table {out}: {exc.strerror or exc}; the finished units are kept in "
                         f"{folder}, rerun the same command when the problem is fixed") from None
    if failed:
        raise BuildError(f"{len(failed)} unit(s) failed ({'; '.join(_describe(f.unit) for f in failed)}); the "
                         f"table {out} holds every finished unit, rerun the same command to train the rest")
    return table


def _keep_proxies(out: Path, table: schema.Table) -> schema.Table:
    """The zero-cost proxies of the table being replaced, where they were computed on the same model: they come
    from no part (``nasbench_ptb proxies`` adds them), so reassembling a table must not drop them."""
    if not out.is_file():
        return table
    try:
        old = schema.read(out)
    except schema.TableError:
        return table
    if old.proxies is None or old.space.name != table.space.name or not proxies.same_model(old.config, table.config):
        return table
    return dataclasses.replace(table, proxies=old.proxies, attrs={**table.attrs, "proxies": old.attrs.get("proxies")})


def _software(found: list[dict]) -> dict:
    """The versions that trained a table's units, as its parts record them: a table assembled elsewhere (a lease's
    units here) records its training, not the assembling machine. This process's versions when no part records
    any (parts written before they did), or, when units were trained by different versions, these and
    ``units`` (each distinct set once)."""
    known = sorted({str(part["software"]) for part in found if "software" in part})
    if len(known) == 1 and all("software" in part for part in found):
        return json.loads(known[0])
    return {**software(), "units": [json.loads(k) for k in known]} if known else software()


def _describe(unit: Unit) -> str:
    """A unit in words, for errors: its kind, architectures and seeds."""
    if unit.kind == "standalone":
        return f"standalone runs (arch:seed) {','.join(f'{a}:{s}' for a, s in zip(unit.arch_ids, unit.seeds))}"
    return f"{unit.kind} super-net seeds {_ids(unit.seeds)}"


def _standalone(sp: SearchSpace, p: Preset, found: list[dict], requested: Sequence[int] = ()) -> schema.Standalone:
    seeds = sorted({int(s) for part in found for s in part["seeds"]}) or sorted(requested) or [0]
    epochs = found[0]["epochs"] if found else np.full(len(p.schedule('standalone')), np.nan)
    sa = schema.Standalone.empty(sp.size, seeds, epochs)
    for part in found:
        for j, (a, s) in enumerate(zip(part["arch_ids"], part["seeds"])):
            k = seeds.index(int(s))
            for name in schema.per_run("standalone"):
                getattr(sa, name)[a, k] = part[name][j] if name in part else _before(name, part, j)
    return sa


def _before(name: str, part: dict, j: int) -> np.ndarray:
    """A dataset a part written before it existed lacks: ``rollback`` is 0 at every checkpoint a run or super-net
    reached (that code never rolled back), NaN after it diverged."""
    if name != "rollback":
        raise KeyError(f"part {part['path']} lacks the dataset {name!r}")
    valid = np.isfinite(part["valid_ppl"][j])  # [C] per run, [C, N] per super-net
    return np.where(valid if valid.ndim == 1 else valid.any(axis=1), 0.0, np.nan)


def _ws(sp: SearchSpace, p: Preset, found: list[dict], subspace: Sequence[int] | None = None,
        requested: Sequence[int] = ()) -> schema.WeightSharing:
    seeds = sorted({int(s) for part in found for s in part["seeds"]}) or sorted(requested) or [0]
    if found:
        epochs, tokens = found[0]["epochs"], found[0]["valid_tokens"]
    else:
        C = len(p.schedule('ws'))
        epochs, tokens = np.full(C, np.nan), np.zeros(C)
    ws = schema.WeightSharing.empty(sp.size, seeds, epochs, tokens, subspace)
    for part in found:
        for j, s in enumerate(part["seeds"]):
            k = seeds.index(int(s))
            for name in schema.per_run("ws"):
                getattr(ws, name)[k] = part[name][j] if name in part else _before(name, part, j)
    return ws


def assemble(sp: SearchSpace, p: Preset, folder: Path, fps: dict, ntokens: int, dev: torch.device,
             mode: str = "both", subspace: Sequence[int] = (), seeds: Sequence[int] = (),
             ws_seeds: Sequence[int] = ()) -> schema.Table:
    """Combine every part of this configuration into one table (a part is included when it was requested
    now or trained before into the same ``--out``). A group none of whose units finished lists the requested
    ``seeds`` / ``ws_seeds`` as ``missing`` (a lease that ran out before its super-nets shows all three missing)."""
    found = {kind: parts.read_all(folder, kind, fps[kind]) for kind in parts.KINDS}
    subspace = _one_subspace(found["ws_subspace"], subspace)
    sa = _standalone(sp, p, found["standalone"], seeds) if found["standalone"] or mode != "ws" else None
    ws = _ws(sp, p, found["ws"], None, ws_seeds) if found["ws"] or (mode != "standalone" and not subspace) else None
    ws_sub = _ws(sp, p, found["ws_subspace"], subspace, ws_seeds) if subspace else None
    every = found["standalone"] + found["ws"] + found["ws_subspace"]
    config = table_config(sp, p, ntokens)
    attrs = {
        "ptb_sha256": data.SHA256,
        "software": _software(every),
        "device": sorted({str(part["device"]) for part in every}) or [device_name(dev)],
        "timings": {
            "standalone_unit_seconds": float(sum(part["unit_seconds"] for part in found["standalone"])),
            "ws_unit_seconds": float(sum(part["unit_seconds"] for part in found["ws"])),
            "ws_subspace_unit_seconds": float(sum(part["unit_seconds"] for part in found["ws_subspace"])),
            "units": len(every),
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    samples = sorted({str(part["sample"]) for part in found["standalone"] if "sample" in part})
    if samples:
        attrs["samples"] = [json.loads(text) for text in samples]
    return schema.Table(sp, p.name, config, sa, ws, attrs, ws_sub)
