"""Byte-flip and kill trials on tables and build parts: does any damage pass silently?

    python benchmarks/robustness_trials.py [--flips 200] [--kills 10] [--data DIR] [--seed 0]

1. Builds a small 2-node smoke table (4 units) into a scratch folder: the reference.
2. Byte flips in the table: each trial flips one random byte of a copy and reads it; the read must either refuse
   it (TableError) or return exactly the reference values (a flip in padding the format ignores).
3. Byte flips in a part: each trial flips one random byte of one part in a copy of the parts folder and
   reassembles (``build --time-limit 0``); the part must be refused (moved to ``.bad``, the table not replaced)
   or the assembled table must equal the reference; "mishandled" is anything else (a traceback, a refusal that
   leaves the part in place).
4. Kills: each trial starts the same build in a fresh folder, SIGKILLs it at a random moment (inside a unit, at a
   part write, between units), reruns it to the end and compares the table with the reference (timings aside).

Prints the count of each outcome; any "silent change" or "differs after resume" is a bug.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nasbench_ptb import schema  # noqa: E402

VALUES = ("train_loss", "valid_ppl", "test_ppl", "best_epoch", "status", "epochs")


def _cli(data: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nasbench_ptb.cli", "build", "--space", "2node", "--data", data, "--out", str(out),
            "--preset", "smoke", "--set", "train_tokens=1500", "--set", "valid_tokens=200", "--set",
            "test_tokens=200", "--set", "checkpoints=4", "--set", "slots_per_unit=2", "--epochs", "2", "--quiet",
            "--mode", "standalone", "--archs", "0-7", *extra]


def _same(a: schema.Table, b: schema.Table) -> bool:
    return all(np.array_equal(getattr(a.standalone, k), getattr(b.standalone, k), equal_nan=True) for k in VALUES)


def _flip(path: Path, rng: random.Random) -> None:
    raw = bytearray(path.read_bytes())
    raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(raw))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flips", type=int, default=200)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--data", default=os.environ.get("NASBENCH_PTB_DATA"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.data:
        raise SystemExit("give --data DIR or set NASBENCH_PTB_DATA")
    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    work = Path(tempfile.mkdtemp(prefix="nasbench-trials-"))
    ref_path = work / "ref.h5"
    t0 = time.perf_counter()
    subprocess.run(_cli(args.data, ref_path), check=True, env=env)
    build_s = time.perf_counter() - t0
    ref = schema.read(ref_path)

    table = {"refused": 0, "unchanged": 0, "silent change": 0}
    for _ in range(args.flips):
        copy = work / "flip.h5"
        shutil.copy(ref_path, copy)
        _flip(copy, rng)
        try:
            table["unchanged" if _same(schema.read(copy), ref) else "silent change"] += 1
        except schema.TableError:
            table["refused"] += 1
    print(f"table byte flips ({args.flips}): {table}", flush=True)

    part = {"refused": 0, "unchanged": 0, "silent change": 0, "mishandled": 0}
    for i in range(args.flips):
        trial = work / f"p{i}"
        trial.mkdir()
        shutil.copytree(work / "ref.h5.parts", trial / "t.h5.parts")
        shutil.copy(ref_path, trial / "t.h5")
        victim = rng.choice(sorted((trial / "t.h5.parts").glob("unit-*.h5")))
        _flip(victim, rng)
        res = subprocess.run(_cli(args.data, trial / "t.h5", "--time-limit", "0"), env=env, capture_output=True,
                             text=True)
        bad = list((trial / "t.h5.parts").glob("*.bad"))
        if bad and res.returncode == 1 and _same(schema.read(trial / "t.h5"), ref):
            part["refused"] += 1
        elif res.returncode == 0 and _same(schema.read(trial / "t.h5"), ref):
            part["unchanged"] += 1
        else:  # exit 0 with other values: silent; anything else (a traceback, a refusal without moving it aside)
            part["silent change" if res.returncode == 0 else "mishandled"] += 1
            print(f"  part flip {i} in {victim.name}: exit {res.returncode}, moved aside {[b.name for b in bad]}, "
                  f"stderr: {res.stderr.strip()[-300:]}", flush=True)
        shutil.rmtree(trial)
    print(f"part byte flips ({args.flips}): {part}", flush=True)

    kills = {"identical after resume": 0, "differs after resume": 0}
    for i in range(args.kills):
        out = work / f"k{i}" / "t.h5"
        out.parent.mkdir()
        proc = subprocess.Popen(_cli(args.data, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, max(build_s, 1.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        subprocess.run(_cli(args.data, out), check=True, env=env, capture_output=True)
        kills["identical after resume" if _same(schema.read(out), ref) else "differs after resume"] += 1
    print(f"SIGKILL trials ({args.kills}, build alone {build_s:.1f} s): {kills}", flush=True)
    shutil.rmtree(work)
    if table["silent change"] or part["silent change"] or part["mishandled"] or kills["differs after resume"]:
        raise SystemExit("damage passed silently or was mishandled: a bug")


if __name__ == "__main__":
    main()
