"""Standalone table build: plan units, train each, persist it, assemble the table atomically.

A unit is a group of runs (architecture, seed) trained together as slots. Its results go to
``<out>.parts/<unit>.h5`` (written to a temporary name, then renamed) before the next unit starts, so a killed
build, rerun with the same command, skips finished units. The table is assembled from every part file of the
same configuration and appears at ``<out>`` by atomic rename; runs not trained stay status ``missing``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch

import nasbench_ptb
from nasbench_ptb import schema
from nasbench_ptb.space import Genotype, SearchSpace

from . import data
from .engine import count_params
from .presets import Preset
from .progress import Progress
from .train import RunCurves, train_runs


class BuildError(RuntimeError):
    """The build cannot start or continue (bad output path, conflicting parts, bad device)."""


@dataclass(frozen=True)
class Unit:
    arch_ids: tuple[int, ...]
    seeds: tuple[int, ...]  # one per run

    @property
    def key(self) -> str:
        text = ",".join(f"{a}:{s}" for a, s in zip(self.arch_ids, self.seeds))
        return "unit-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def plan_units(arch_ids: Sequence[int], seeds: Sequence[int], per_unit: int) -> list[Unit]:
    """Runs ordered by seed then id, cut into units of ``per_unit`` slots."""
    runs = [(a, s) for s in seeds for a in arch_ids]
    return [
        Unit(tuple(a for a, _ in runs[i : i + per_unit]), tuple(s for _, s in runs[i : i + per_unit]))
        for i in range(0, len(runs), per_unit)
    ]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise BuildError(f"unknown device {name!r} (auto, cpu or cuda)")
    if name == "cuda" and not torch.cuda.is_available():
        raise BuildError("--device cuda requested but torch sees no CUDA device")
    return torch.device(name)


def fingerprint(sp: SearchSpace, p: Preset) -> str:
    """Identifies results that may be combined in one table (space + every training value)."""
    return json.dumps({"space": sp.name, "preset": p.to_dict(), "format_version": schema.FORMAT_VERSION},
                      sort_keys=True)


def _check_writable(out: Path) -> Path:
    parts = out.with_name(out.name + ".parts")
    try:
        parts.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parts):
            pass
        with tempfile.NamedTemporaryFile(dir=out.parent):
            pass
    except OSError as exc:
        raise BuildError(f"cannot write the output {out}: {exc.strerror or exc}") from None
    if out.is_dir():
        raise BuildError(f"output {out} is a directory; give a file path such as {out / 'table.h5'}")
    return parts


def _write_part(path: Path, unit: Unit, res: RunCurves, fp: str, seconds: float, device: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({"fingerprint": fp, "unit_seconds": seconds, "device": device})
            f["arch_ids"], f["seeds"] = np.array(unit.arch_ids), np.array(unit.seeds)
            for k, v in vars(res).items():
                f[k] = v
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_parts(parts: Path, fp: str) -> list[dict]:
    found = []
    for path in sorted(parts.glob("unit-*.h5")):
        try:
            with h5py.File(path, "r") as f:
                if f.attrs["fingerprint"] != fp:
                    raise BuildError(
                        f"{parts} holds results of another configuration ({path.name}); use another --out or "
                        "remove that directory"
                    )
                found.append({"path": path, **dict(f.attrs), **{k: f[k][()] for k in f}})
        except (OSError, KeyError) as exc:
            print(f"warning: ignoring unreadable part {path} ({exc}); its unit will be retrained", file=sys.stderr)
            path.unlink()
    return found


def software() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "h5py": h5py.__version__, "nasbench_ptb": nasbench_ptb.__version__}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def build(
    sp: SearchSpace,
    p: Preset,
    out: str | os.PathLike,
    archs: Sequence[Genotype] | None = None,
    seeds: int | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    quiet: bool = False,
) -> schema.Table:
    """Train the requested runs (all architectures × ``seeds`` by default) and write the table to ``out``."""
    out = Path(out)
    parts = _check_writable(out)
    dev = resolve_device(device)
    corpus = data.load(data_dir)
    fp = fingerprint(sp, p)
    arch_ids = sorted({g.id for g in archs}) if archs else list(range(sp.size))
    seed_list = list(range(seeds if seeds is not None else p.seeds))
    units = plan_units(arch_ids, seed_list, p.slots_per_unit)
    done = {part["path"].stem for part in _read_parts(parts, fp)}
    todo = [u for u in units if u.key not in done]
    train_len = len(corpus.train[: p.train_tokens])
    planned = sum(len(u.arch_ids) for u in todo) * p.epochs * train_len
    progress = Progress(len(units), len(units) - len(todo), quiet=quiet, label=f"{sp.name}/{p.name}",
                        planned_tokens=planned)
    for unit in todo:
        t0 = time.perf_counter()
        genos = [sp.from_id(a) for a in unit.arch_ids]
        res = train_runs(corpus, genos, unit.seeds, p, dev, on_batch=progress.tokens)
        _write_part(parts / f"{unit.key}.h5", unit, res, fp, time.perf_counter() - t0, device_name(dev))
        progress.unit_done()
    progress.close()
    table = assemble(sp, p, parts, fp, corpus.ntokens, dev)
    schema.write(table, out)
    return table


def assemble(sp: SearchSpace, p: Preset, parts: Path, fp: str, ntokens: int, dev: torch.device) -> schema.Table:
    """Combine every part of this configuration into one table; runs without a part stay ``missing``."""
    found = _read_parts(parts, fp)
    seeds = sorted({int(s) for part in found for s in part["seeds"]}) or [0]
    epochs = found[0]["epochs"] if found else np.full(p.checkpoints, np.nan)
    sa = schema.Standalone.empty(sp.size, seeds, epochs)
    for part in found:
        for j, (a, s) in enumerate(zip(part["arch_ids"], part["seeds"])):
            k = seeds.index(int(s))
            for name in ("train_loss", "valid_ppl", "seconds"):
                getattr(sa, name)[a, k] = part[name][j]
            for name in ("test_ppl", "best_epoch", "status"):
                getattr(sa, name)[a, k] = part[name][j]
    config = {**p.to_dict(), "params": count_params(ntokens, p.hidden, sp.n), "ntokens": ntokens,
              "seed_meaning": "initialisation and dropout masks; data order is shared (stream_seed)"}
    attrs = {
        "ptb_sha256": data.SHA256,
        "software": software(),
        "device": sorted({str(part["device"]) for part in found}) or [device_name(dev)],
        "timings": {"unit_seconds_total": float(sum(part["unit_seconds"] for part in found)), "units": len(found)},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return schema.Table(sp, p.name, config, sa, attrs)
