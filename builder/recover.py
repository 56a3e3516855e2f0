"""``nasbench_ptb recover-parts``: rewrite a table's lost ``<out>.parts/`` from the table itself.

A build extends a table only through its parts folder: :func:`builder.guard.check_existing` refuses to replace a
table holding results its parts do not (building would lose them). A table whose parts were lost — a copy
without its folder, a GPU lease whose parts did not come back — could then only be rebuilt from scratch. The
assembly copies each part's rows into the table unchanged (:func:`builder.build.assemble`), so the rows of every
finished run or super-net give those parts back: the same arrays, the configuration's fingerprint (from the
table's ``config``), its device and software; only each unit's seconds are the table's total shared out by
runs. Runs already in the folder are left as they are; nothing is overwritten.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasbench_ptb import schema

from . import guard, parts
from .build import Unit, plan_units, plan_ws_units
from .parts import BuildError
from .presets import from_config


@dataclass(frozen=True)
class Recovered:
    """What :func:`recover_parts` wrote: the part files, and the runs / super-nets in them by part kind."""

    folder: Path
    written: tuple[Path, ...]
    runs: dict[str, int]
    already: dict[str, int]  # held by parts that were there before


def recover_parts(out: str | Path) -> Recovered:
    """Write the parts of every finished run of the table ``out`` that ``<out>.parts/`` does not hold.

    Raises:
        BuildError: ``out`` is not a readable table, its config does not make a preset, or its folder holds parts
            of another configuration (or is locked by a running build).
    """
    out = Path(out)
    try:
        table = schema.read(out)
    except (schema.TableError, OSError) as exc:
        raise BuildError(f"cannot recover parts from {out}: {exc}") from None
    p = from_config(table.config)
    if p is None:
        raise BuildError(f"cannot recover parts from {out}: its config does not name a complete preset")
    sp = table.space
    fps = {kind: parts.fingerprint(sp, p, kind) for kind in parts.KINDS}
    folder = out.with_name(out.name + ".parts")
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot write the parts folder {folder}: {exc.strerror or exc}") from None
    device = ", ".join(str(d) for d in table.attrs.get("device", [])) or "unknown"
    trained_by = table.attrs.get("software")  # one set of versions trained every unit, unless "units" lists several
    software = {"software": json.dumps(trained_by, sort_keys=True)} if trained_by and "units" not in trained_by else {}
    timings = table.attrs.get("timings", {})
    written: list[Path] = []
    runs = {kind: 0 for kind in parts.KINDS}
    with guard.exclusive(folder, out):
        held = guard.held_runs(table)
        have = guard.in_parts({kind: parts.read_all(folder, kind, fps[kind]) for kind in parts.KINDS})

        def write(unit: Unit, arrays: dict, seconds: float, extra: dict | None = None) -> None:
            path = folder / f"{unit.key}.h5"
            if path.exists():  # the same runs under the same name: only when ``have`` missed nothing
                raise BuildError(f"{path} exists but its runs were not read; move it aside and rerun")
            parts.write(path, arrays, {"fingerprint": unit.fingerprint, "unit_seconds": float(seconds),
                                       "device": device, **software, **(extra or {})})
            written.append(path)

        sa = table.standalone
        if sa is not None:  # the build's own plan over the runs held here and not in the folder
            seeds = [int(s) for s in sa.seeds]
            todo = held["standalone"] - have["standalone"]
            done = frozenset((a, s) for s in seeds for a in range(sp.size) if (a, s) not in todo)
            per_run = float(timings.get("standalone_unit_seconds", 0.0)) / max(len(held["standalone"]), 1)
            samples = [json.dumps(s, sort_keys=True) for s in table.attrs.get("samples", [])]
            for i, unit in enumerate(plan_units(range(sp.size), seeds, p.slots_per_unit, done, fps["standalone"])):
                ks = [seeds.index(s) for s in unit.seeds]
                arrays = {"arch_ids": np.array(unit.arch_ids), "seeds": np.array(unit.seeds), "epochs": sa.epochs}
                for name in schema.per_run("standalone"):
                    arrays[name] = np.stack([getattr(sa, name)[a, k] for a, k in zip(unit.arch_ids, ks)])
                write(unit, arrays, per_run * len(ks), {"sample": samples[i]} if i < len(samples) else None)
                runs["standalone"] += len(ks)
        for kind, timing in (("ws", "ws_unit_seconds"), ("ws_subspace", "ws_subspace_unit_seconds")):
            ws = getattr(table, kind)
            if ws is None:
                continue
            seeds = [int(s) for s in ws.seeds]
            done = frozenset(set(seeds) - (held[kind] - have[kind]))
            per_net = float(timings.get(timing, 0.0)) / max(len(held[kind]), 1)
            subspace = tuple(int(a) for a in ws.archs) if kind == "ws_subspace" else ()
            for unit in plan_ws_units(seeds, p.ws_slots_per_unit, subspace, done, fps[kind]):
                ks = [seeds.index(s) for s in unit.seeds]
                arrays = {"seeds": np.array(unit.seeds), "epochs": ws.epochs, "valid_tokens": ws.valid_tokens}
                if subspace:
                    arrays["arch_ids"] = np.array(subspace)
                for name in schema.per_run("ws"):
                    arrays[name] = np.stack([getattr(ws, name)[k] for k in ks])
                write(unit, arrays, per_net * len(ks))
                runs[kind] += len(ks)
    already = {kind: len(v) for kind, v in have.items()}
    return Recovered(folder, tuple(written), runs, already)
