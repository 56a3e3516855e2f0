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
from nasbench_ptb.schema import Status

from . import guard, parts
from .build import Unit
from .parts import BuildError
from .presets import from_config


@dataclass(frozen=True)
class Recovered:
    """What :func:`recover_parts` wrote: the part files, and the runs / super-nets in them by part kind."""

    folder: Path
    written: tuple[Path, ...]
    runs: dict[str, int]
    already: dict[str, int]  # held by parts that were there before


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


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
        have = guard.in_parts({kind: parts.read_all(folder, kind, fps[kind]) for kind in parts.KINDS})

        def write(unit: Unit, arrays: dict, seconds: float, extra: dict | None = None) -> None:
            path = folder / f"{unit.key}.h5"
            if path.exists():  # the same runs under the same name: only when ``have`` missed nothing
                raise BuildError(f"{path} exists but its runs were not read; move it aside and rerun")
            parts.write(path, arrays, {"fingerprint": unit.fingerprint, "unit_seconds": float(seconds),
                                       "device": device, **software, **(extra or {})})
            written.append(path)

        sa = table.standalone
        if sa is not None:
            done = [(a, int(s)) for k, s in enumerate(sa.seeds) for a in range(sp.size)
                    if sa.status[a, k] != Status.MISSING]
            todo = [(a, s) for a, s in done if (a, s) not in have["standalone"]]
            per_run = float(timings.get("standalone_unit_seconds", 0.0)) / max(len(done), 1)
            samples = [json.dumps(s, sort_keys=True) for s in table.attrs.get("samples", [])]
            for i, chunk in enumerate(_chunks(todo, p.slots_per_unit)):
                unit = Unit("standalone", tuple(a for a, _ in chunk), tuple(s for _, s in chunk), fps["standalone"])
                ks = [list(sa.seeds).index(s) for _, s in chunk]
                arrays = {"arch_ids": np.array(unit.arch_ids), "seeds": np.array(unit.seeds), "epochs": sa.epochs}
                for name in schema.per_run("standalone"):
                    arrays[name] = np.stack([getattr(sa, name)[a, k] for (a, _), k in zip(chunk, ks)])
                write(unit, arrays, per_run * len(chunk), {"sample": samples[i]} if i < len(samples) else None)
                runs["standalone"] += len(chunk)
        for kind, timing in (("ws", "ws_unit_seconds"), ("ws_subspace", "ws_subspace_unit_seconds")):
            ws = getattr(table, kind)
            if ws is None:
                continue
            done_k = [k for k, st in enumerate(ws.status) if st != Status.MISSING]
            todo_k = [k for k in done_k if int(ws.seeds[k]) not in have[kind]]
            per_net = float(timings.get(timing, 0.0)) / max(len(done_k), 1)
            subspace = tuple(int(a) for a in ws.archs) if kind == "ws_subspace" else ()
            for chunk in _chunks(todo_k, p.ws_slots_per_unit):
                unit = Unit(kind, subspace, tuple(int(ws.seeds[k]) for k in chunk), fps[kind])
                arrays = {"seeds": np.array(unit.seeds), "epochs": ws.epochs, "valid_tokens": ws.valid_tokens}
                if subspace:
                    arrays["arch_ids"] = np.array(subspace)
                for name in schema.per_run("ws"):
                    arrays[name] = np.stack([getattr(ws, name)[k] for k in chunk])
                write(unit, arrays, per_net * len(chunk))
                runs[kind] += len(chunk)
    already = {kind: len(v) for kind, v in have.items()}
    return Recovered(folder, tuple(written), runs, already)
