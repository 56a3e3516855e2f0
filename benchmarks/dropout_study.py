"""Which dropouts the multi-epoch CPU preset should use at hidden 32: the same cells and seeds trained under each
candidate, compared epoch by epoch (#24).

    python benchmarks/dropout_study.py LABEL=TABLE [LABEL=TABLE ...] [--archs 0-7] [--epochs 1,2,3]
        [--reference artifacts/2node-cpu.h5]

Each TABLE is a standalone build of the same ``--archs`` with the same seeds and data order (the same preset but
its dropouts, e.g. ``nasbench_ptb build --preset cpu10 --archs 0-7 --set epochs=3 --set dropout_x=0.1 ...``);
the preset's own partial table can serve as one of them, read at the same epochs. For each candidate and epoch it
prints what decides whether a table ranks architectures rather than noise:

- the validation perplexity reached (min / mean / max over the ok runs, n runs) and the training perplexity
  (with dropout on), whose gap to validation says whether the model under- or over-fits;
- the spread across cells (max − min of the per-cell seed means) against the seed noise (mean |seed a − seed b|
  over cells with two ok seeds): a ratio near 1 means the ranking is mostly seed noise;
- seed-to-seed Kendall tau-b, tau-b of this epoch's ranking vs the previous epoch's, and diverged runs;
- per pair of candidates, tau-b of their rankings at the last epoch (do two sane regularisations agree on which
  cells are better?), and each one's tau-b against ``--reference`` (the 1-epoch table) where given.
All figures come from the tables named, in this one run.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nasbench_ptb import schema  # noqa: E402
from nasbench_ptb.analyses import tau_b  # noqa: E402
from nasbench_ptb.fidelity import checkpoint_of  # noqa: E402
from nasbench_ptb.schema import Status  # noqa: E402
from nasbench_ptb.stats import mean_over_ok  # noqa: E402


def _ids(text: str) -> np.ndarray:
    out: list[int] = []
    for item in text.split(","):
        lo, _, hi = item.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return np.asarray(out)


def at(table: schema.Table, ids: np.ndarray, epoch: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[len(ids), S]`` validation ppl, training ppl and ok-mask at ``epoch``; a run is ok there unless it
    diverged by then (a run that diverged later still counts at the earlier epoch)."""
    sa = table.standalone
    c = checkpoint_of(sa.epochs, epoch)
    valid = sa.valid_ppl[ids, :, c]
    train = np.exp(np.minimum(sa.train_loss[ids, :, c], 50.0))
    ok = (sa.status[ids] != Status.MISSING) & np.isfinite(valid) & (valid < 1e6)
    return np.where(ok, valid, np.nan), np.where(ok, train, np.nan), ok


def rows(label: str, table: schema.Table, ids: np.ndarray, epochs: list[float]) -> list[str]:
    """One printed line per epoch for this candidate."""
    out, previous = [], None
    for e in epochs:
        valid, train, ok = at(table, ids, e)
        status = np.where(ok, Status.OK, Status.DIVERGED)
        mean = mean_over_ok(valid, status)
        both = ok.all(axis=1) if valid.shape[1] >= 2 else np.zeros(len(ids), bool)
        noise = float(np.abs(valid[both, 0] - valid[both, 1]).mean()) if both.any() else float("nan")
        spread = float(np.nanmax(mean) - np.nanmin(mean))
        seed_tau = tau_b(valid[both, 0], valid[both, 1]) if both.sum() >= 3 else float("nan")
        prev_tau = tau_b(previous, mean) if previous is not None else float("nan")
        v = valid[ok]
        out.append(f"{label:>10} {e:5.1f} | valid {np.min(v):6.1f} {np.mean(v):6.1f} {np.max(v):6.1f} (n={ok.sum():2d})"
                   f" | train {np.nanmean(train):6.1f} | spread {spread:5.1f} noise {noise:5.1f} (n={both.sum()})"
                   f" ratio {spread / noise if noise else float('nan'):5.1f} | seed tau {seed_tau:+.2f}"
                   f" | vs prev epoch {prev_tau:+.2f} | diverged {int((~ok).sum())}")
        previous = mean
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tables", nargs="+", metavar="LABEL=TABLE")
    ap.add_argument("--archs", default="0-7")
    ap.add_argument("--epochs", default="1,2,3")
    ap.add_argument("--reference", default=None, help="a table to rank against (e.g. the 1-epoch cpu table)")
    args = ap.parse_args(argv)
    ids, epochs = _ids(args.archs), [float(e) for e in args.epochs.split(",")]
    tables = {}
    for item in args.tables:
        label, sep, path = item.partition("=")
        if not sep:
            ap.error(f"{item!r}: expected LABEL=TABLE")
        tables[label] = schema.read(path)
    print(f"cells {args.archs} (n={len(ids)}); min / mean / max over ok runs; spread = max - min of cell means;"
          " noise = mean |seed 0 - seed 1|")
    for label, table in tables.items():
        config = table.config
        print(f"{label}: dropouts output {config['dropout_output']} hidden {config['dropout_hidden']} x "
              f"{config['dropout_x']} input {config['dropout_input']} embedding {config['dropout_embedding']}")
        print("\n".join(rows(label, table, ids, epochs)))
    last = {label: mean_over_ok(*_valid_status(t, ids, epochs[-1])) for label, t in tables.items()}
    for (a, va), (b, vb) in itertools.combinations(last.items(), 2):
        print(f"tau-b at epoch {epochs[-1]:g}: {a} vs {b} {tau_b(va, vb):+.2f}")
    if args.reference:
        ref = schema.read(args.reference)
        rv = mean_over_ok(*_valid_status(ref, ids, float(ref.standalone.epochs[-1])))
        for label, v in last.items():
            print(f"tau-b at epoch {epochs[-1]:g}: {label} vs {os.path.basename(args.reference)} {tau_b(v, rv):+.2f}")


def _valid_status(table: schema.Table, ids: np.ndarray, epoch: float) -> tuple[np.ndarray, np.ndarray]:
    valid, _, ok = at(table, ids, epoch)
    return valid, np.where(ok, Status.OK, Status.DIVERGED)


if __name__ == "__main__":
    main()
