"""``nasbench_ptb export``: a table in the formats other tools read.

- **long** (Parquet, CSV): one row per (architecture, seed, checkpoint) of ``/standalone`` and one per
  (architecture, super-net seed, checkpoint) of ``/ws`` and ``/ws_subspace`` (column ``part``), with the genotype
  columns (``node<k>_pred``, ``node<k>_op``), hash, iso hash and status. A value that does not exist is NaN, never
  imputed: ``test_ppl`` and ``best_epoch`` exist once per run (on its last checkpoint's row), a missing run's rows
  are all NaN with status ``missing``, a diverged run's values after divergence are NaN. A table with
  ``/proxies`` adds the part ``proxies``: one row per (architecture, proxy seed) at checkpoint -1, epoch 0, with
  a ``proxy_<name>`` column per zero-cost proxy (NaN on the training rows). (pandas + pyarrow.)
- **syne-tune**: a Syne Tune tabular blackbox (``syne_tune.blackbox_repository`` serialized form): one
  configuration per architecture with hyperparameters ``node<k>_pred`` / ``node<k>_op`` (categorical), fidelity
  ``hp_epoch`` = 1..E, the epoch, when the table has a checkpoint at every whole epoch from 1 to its last (the
  multi-epoch tables; their sub-epoch checkpoints are left out, listed in the metadata), else ``hp_checkpoint`` =
  1..C (checkpoint index; epochs in the metadata: the 1-epoch tables), the standalone seeds as seeds, objectives
  ``metric_valid_ppl``, ``metric_test_ppl``, ``metric_elapsed_time``. Syne Tune has no missing values, so:
  every architecture must have a trained run for every seed (a table with ``missing`` runs is refused); a
  diverged run counts as no better than guessing uniformly — ppl = vocabulary size (``ntokens``) from its
  divergence on, test ppl likewise — with the elapsed time frozen at the time it had spent; the test ppl (measured
  once, at the run's best validation checkpoint) is reported at every fidelity.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import schema
from .schema import Status, Table

FORMATS = ("parquet", "csv", "syne-tune")
_STATUS = {int(s): s.name.lower() for s in Status}


def _genotype_columns(table: Table) -> dict[str, np.ndarray]:
    genos = list(table.space)
    cols = {"id": np.arange(len(genos)), "genotype": np.array([g.canonical for g in genos], dtype=object),
            "hash": np.array([g.hash for g in genos], dtype=object),
            "iso_hash": np.array([g.iso_hash for g in genos], dtype=object)}
    for k in range(table.space.n):
        cols[f"node{k + 1}_pred"] = np.array([g.preds[k] for g in genos])
        cols[f"node{k + 1}_op"] = np.array([g.nodes[k][0] for g in genos], dtype=object)
    return cols


_AXES = ("seeds", "epochs", "archs")  # rows' own columns (seed, epoch) or a subspace's membership


def _value_columns() -> tuple[str, ...]:
    """Every per-run dataset of the layout, standalone's first, each once (a name both parts hold, one column)."""
    names = [k for part in ("standalone", "ws") for k in schema.layout(part) if k not in _AXES]
    return tuple(dict.fromkeys(names))


def _block(part, name: str, a, s, c, n_rows: int) -> dict[str, np.ndarray]:
    """The long rows of one part from its declared datasets: a curve gives each checkpoint's value, a per-run
    float final its value on the run's last checkpoint row (NaN elsewhere), an integer count every row."""
    idx, last = {"N": a, "S": s, "C": c}, c == len(part.epochs) - 1
    block = {"part": np.full(n_rows, name, dtype=object), "arch": a, "seed": part.seeds[s], "checkpoint": c,
             "epoch": part.epochs[c]}
    layout = schema.layout("standalone" if name == "standalone" else "ws")
    for key in _value_columns():
        if key not in layout:
            block[key] = np.full(n_rows, np.nan)
            continue
        dims, integer = layout[key]
        v = getattr(part, key)[tuple(idx[d] for d in dims)]
        block[key] = v if key == "status" else v.astype(float) if integer else v if "C" in dims else \
            np.where(last, v, np.nan)
    return block


def long_columns(table: Table) -> dict[str, np.ndarray]:
    """The long format as columns (equal-length arrays), standalone rows first, then each WS part."""
    arch = _genotype_columns(table)
    blocks = []
    sa = table.standalone
    if sa is not None:
        N, S, C = sa.valid_ppl.shape
        a, s, c = (x.ravel() for x in np.meshgrid(np.arange(N), np.arange(S), np.arange(C), indexing="ij"))
        blocks.append(_block(sa, "standalone", a, s, c, a.size))
    for name in ("ws", "ws_subspace"):
        ws = getattr(table, name)
        if ws is None:
            continue
        S, C, N = ws.valid_ppl.shape
        a, s, c = (x.ravel() for x in np.meshgrid(np.arange(N), np.arange(S), np.arange(C), indexing="ij"))
        member = np.ones(N, bool) if ws.archs is None else np.isin(np.arange(N), ws.archs)
        keep = member[a]  # a subspace super-net has no value for the architectures outside it
        blocks.append(_block(ws, name, a[keep], s[keep], c[keep], int(keep.sum())))
    if not blocks:
        raise ValueError("the table holds neither standalone runs nor super-nets")
    if table.proxies is not None:
        blocks = _with_proxy_rows(table.proxies, blocks)
    out = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    ids = out.pop("arch")
    cols = {"part": out.pop("part"), **{k: v[ids] for k, v in arch.items()}, **out}
    cols["status"] = np.array([_STATUS[int(v)] for v in cols["status"]], dtype=object)
    return cols


def _with_proxy_rows(pz: schema.Proxies, blocks: list[dict]) -> list[dict]:
    """The ``proxies`` part: one row per (architecture, proxy seed) at checkpoint -1, epoch 0 (initialisation),
    status ok, a ``proxy_<name>`` column per proxy; those columns are NaN on the training rows."""
    names = schema.columns("proxies", "NS")
    N, S = pz.grad_norm.shape
    a, s = (x.ravel() for x in np.meshgrid(np.arange(N), np.arange(S), indexing="ij"))
    block = {k: np.full(a.size, np.nan) for k in blocks[0]}
    block.update(part=np.full(a.size, "proxies", dtype=object), arch=a, seed=pz.seeds[s],
                 checkpoint=np.full(a.size, -1), epoch=np.zeros(a.size),
                 status=np.full(a.size, int(Status.OK), dtype=blocks[0]["status"].dtype))
    for b in blocks:
        for name in names:
            b[f"proxy_{name}"] = np.full(len(b["arch"]), np.nan)
    for name in names:
        block[f"proxy_{name}"] = getattr(pz, name)[a, s].astype(float)
    return [*blocks, block]


def _frame(table: Table):
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("export needs pandas (and pyarrow for Parquet): pip install 'nasbench-ptb[export]'") from None
    return pd.DataFrame(long_columns(table))


def syne_tune_arrays(table: Table) -> dict:
    """The blackbox's parts as plain arrays: hyperparameter columns, objectives ``[N, S, C, 3]``, fidelities."""
    sa = table.standalone
    if sa is None:
        raise ValueError("a Syne Tune blackbox needs standalone runs; this table has none")
    missing = sa.status == Status.MISSING
    if missing.any():
        archs = np.flatnonzero(missing.any(axis=1))
        raise ValueError(f"{int(missing.sum())} standalone runs are missing (architectures "
                         f"{', '.join(map(str, archs[:8]))}{' …' if len(archs) > 8 else ''}); Syne Tune has no "
                         "missing values, so only a table with every run trained can be a blackbox")
    uniform = float(table.config.get("ntokens") or 10_000)
    valid = np.where(np.isfinite(sa.valid_ppl), sa.valid_ppl, uniform)
    test = np.where(np.isfinite(sa.test_ppl), sa.test_ppl, uniform)[:, :, None].repeat(valid.shape[2], axis=2)
    seconds = sa.seconds.copy()
    for c in range(1, seconds.shape[2]):  # a diverged run's clock stops at the time it had spent
        seconds[:, :, c] = np.where(np.isfinite(seconds[:, :, c]), seconds[:, :, c], seconds[:, :, c - 1])
    seconds = np.nan_to_num(seconds, nan=0.0)
    cols = _genotype_columns(table)
    hp = {k: v for k, v in cols.items() if k.startswith("node")}
    objectives = np.stack([valid, test, seconds], axis=-1)
    whole = _whole_epochs(sa.epochs)
    if whole is not None:
        return {"hyperparameters": hp, "objectives": objectives[:, :, whole], "fidelity_name": "hp_epoch",
                "fidelities": np.arange(1, len(whole) + 1), "epochs": sa.epochs[whole],
                "left_out_epochs": np.delete(sa.epochs, whole), "objectives_names": OBJECTIVES}
    return {"hyperparameters": hp, "objectives": objectives, "fidelity_name": "hp_checkpoint",
            "fidelities": np.arange(1, valid.shape[2] + 1), "epochs": sa.epochs, "left_out_epochs": np.zeros(0),
            "objectives_names": OBJECTIVES}


OBJECTIVES = ["metric_valid_ppl", "metric_test_ppl", "metric_elapsed_time"]


def _whole_epochs(epochs: np.ndarray) -> np.ndarray | None:
    """Indices of the checkpoints at epochs 1, 2, …, E (within the fidelity tolerance) when the table has one at
    every whole epoch up to its last and E ≥ 2; else None."""
    from .fidelity import TOLERANCE

    last = int(round(float(epochs[-1])))
    if last < 2 or abs(epochs[-1] - last) > TOLERANCE:
        return None
    idx = []
    for e in range(1, last + 1):
        near = np.flatnonzero(np.abs(epochs - e) <= TOLERANCE)
        if not len(near):
            return None
        idx.append(int(near[0]))
    return np.array(idx)


def write_syne_tune(table: Table, out: Path) -> None:
    """Write the Syne Tune blackbox of ``table`` into folder ``out`` (Syne Tune's serialized form)."""
    try:
        import pandas as pd
        from syne_tune.blackbox_repository.blackbox_tabular import BlackboxTabular, serialize
        from syne_tune.config_space import choice, randint
    except ImportError as exc:
        raise ImportError(f"export --format syne-tune needs Syne Tune's blackbox repository ({exc}): "
                          "pip install 'nasbench-ptb[syne-tune]'") from None
    arr = syne_tune_arrays(table)
    hp = pd.DataFrame(arr["hyperparameters"])
    space = {k: choice(sorted(set(v.tolist()))) for k, v in arr["hyperparameters"].items()}
    C, fidelity = len(arr["fidelities"]), arr["fidelity_name"]
    bb = BlackboxTabular(hyperparameters=hp, configuration_space=space,
                         fidelity_space={fidelity: randint(lower=1, upper=C)},
                         objectives_evaluations=arr["objectives"].astype(np.float32),
                         fidelity_values=arr["fidelities"], objectives_names=arr["objectives_names"])
    serialize({f"ptb-{table.space.name}": bb}, str(out), metadata={
        "metric_elapsed_time": "metric_elapsed_time", "metric_default": "metric_valid_ppl",
        "time_attr": fidelity, "checkpoint_epochs": [float(e) for e in arr["epochs"]],
        "left_out_checkpoint_epochs": [float(e) for e in arr["left_out_epochs"]],
        "space": table.space.name, "preset": table.preset,
        "missing_values": "diverged runs: ppl = vocabulary size from divergence on, elapsed time frozen"})


def export(table: Table, fmt: str, out: str | Path, force: bool = False, source: str | Path | None = None) -> Path:
    """Write ``table`` as ``fmt`` to ``out`` (a file for parquet/csv, a folder for syne-tune); returns the path.

    Nothing is lost: an existing ``out`` is refused unless ``force`` (and ``source``, the table's own file, always),
    and the output is written beside it under a temporary name and renamed into place, so a full disk or an error
    leaves whatever was there intact.

    Raises:
        ValueError: an unknown format, an output that exists or is the table itself, a file where a folder goes.
    """
    import shutil
    import tempfile

    from .files import atomic_path

    out = Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    if source is not None and out.exists() and out.resolve() == Path(source).resolve():
        raise ValueError(f"--out {out} is the table being exported; give another path")
    if fmt == "syne-tune" and out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; a Syne Tune blackbox is a folder")
    if fmt != "syne-tune" and out.is_dir():
        raise ValueError(f"{out} is a folder; give a file path such as {out / ('table.' + fmt)}")
    if out.exists() and not force:
        raise ValueError(f"{out} exists; give another --out, or --force to replace it")
    if fmt == "syne-tune":
        tmp = Path(tempfile.mkdtemp(dir=out.parent if out.parent.exists() else None, prefix=f".{out.name}.",
                                    suffix=".tmp"))
        try:
            write_syne_tune(table, tmp)
            if out.exists():
                old = out.with_name(f".{out.name}.old")
                out.rename(old)
                tmp.rename(out)
                shutil.rmtree(old)
            else:
                tmp.rename(out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return out
    df = _frame(table)
    with atomic_path(out) as tmp:
        if fmt == "parquet":
            try:
                df.to_parquet(tmp, index=False)
            except ImportError:
                raise ImportError("export --format parquet needs pyarrow: pip install 'nasbench-ptb[export]'") from None
        else:
            df.to_csv(tmp, index=False)
    return out
