"""Retrain chosen architectures of a table standalone (``nasbench_ptb verify``): the same protocol as the build,
at the table's own preset unless told otherwise, with new seeds (or the table's own, to check reproduction)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from nasbench_ptb import schema

from . import data
from .build import resolve_device
from .presets import from_config
from .parts import BuildError
from .presets import Preset
from .standalone import train_runs


def table_preset(table: schema.Table) -> Preset:
    """The preset a table was built with (every value is in its config)."""
    p = from_config(table.config)
    if p is None:
        raise BuildError(f"the table's configuration is not a preset of this version ({table.preset}); pass --preset")
    return p


def retrain(table: schema.Table, archs: Sequence[int], seeds: Sequence[int], p: Preset, device: str = "auto",
            data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Final validation and test ppl ``[len(archs), len(seeds)]`` (NaN where a run diverged) and the seconds spent;
    the runs are trained as slots, ``p.slots_per_unit`` at a time."""
    dev = resolve_device(device)
    corpus = data.load(data_dir)
    runs = [(a, s) for a in archs for s in seeds]
    valid, test, seconds = np.full(len(runs), np.nan), np.full(len(runs), np.nan), 0.0
    for i in range(0, len(runs), p.slots_per_unit):
        chunk = runs[i : i + p.slots_per_unit]
        res = train_runs(corpus, [table.space.from_id(a) for a, _ in chunk], [s for _, s in chunk], p, dev)
        ok = res.status == schema.Status.OK
        valid[i : i + len(chunk)] = np.where(ok, res.valid_ppl[:, -1], np.nan)
        test[i : i + len(chunk)] = np.where(ok, res.test_ppl, np.nan)
        seconds += float(np.nansum(res.seconds[:, -1]))
    shape = (len(archs), len(seeds))
    return valid.reshape(shape), test.reshape(shape), seconds
