"""One prepared GPU lease: check the CUDA path, benchmark the engine, size the ``gpu`` preset, build 2node then
as much of 3node as the time allows. Every step is bounded by ``--budget`` seconds; what is done is kept.

On the device (one call; PTB travels as a carried, git-ignored copy)::

    cp -r ../shared/data/ptb .ptb                                         # here, once
    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/device_build.py --data .ptb --budget 480   # carry [".ptb"]

Everything comes back in ``$OUT`` (at most 8 files): ``device_build.log``, ``bench.json``, ``modes.json`` (eager vs
compiled cell step vs CUDA graphs, and the evaluation phase: ``bench_step_modes.py``, run after the first table
for at most ``--modes-seconds``), the tables ``<space>-gpu.h5`` and ``gpu-parts.tar`` (the finished units, so a
later lease continues). Back here::

    python benchmarks/device_build.py --unpack <folder the files came back to>

puts the tables and units under ``artifacts/`` and rewrites ``artifacts/MANIFEST`` (a complete GPU table becomes
its space's default). Rehearsal on CPU at a tiny size (``tests/test_device_build.py`` runs it)::

    python benchmarks/device_build.py --data ../shared/data/ptb --tiny --artifacts /tmp/a --out /tmp/o --budget 60

Sizing: the engine's arch-tokens/s at the 2node unit size (all archs × seeds in one unit) sets the epochs so
that the 2node standalone runs take about ``--target-2node`` seconds of training (weight sharing gets the same
epochs). A later lease reuses the epochs found in the units already built, so their fingerprints match.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nasbench_ptb.files import read_manifest, write_manifest  # noqa: E402

TARBALL = "gpu-parts.tar"
TINY = {"hidden": 8, "batch_size": 4, "bptt": 10, "train_tokens": 1000, "valid_tokens": 200, "test_tokens": 200,
        "eval_batch_size": 4, "checkpoints": 3, "ws_checkpoints": 2, "ws_valid_tokens": 200,
        "ws_final_valid_tokens": 400, "seeds": 2, "slots_per_unit": 16}


class Log:
    def __init__(self, path: Path):
        self.fh = open(path, "a")

    def __call__(self, *text) -> None:
        line = " ".join(str(t) for t in text)
        print(line, flush=True)
        self.fh.write(line + "\n")
        self.fh.flush()


REUSED = ("epochs", "ws_epochs", "checkpoints", "ws_checkpoints", "slots_per_unit")


def reused_values(artifacts: Path) -> dict:
    """The sized values of gpu units already built (any space), so that a later lease extends the same tables.
    Standalone units carry no ``ws_`` values and super-net units no standalone ones: each is read where it is."""
    found: dict = {}
    for path in sorted(artifacts.glob("*-gpu.h5.parts/*.h5")):
        with h5py.File(path, "r") as f:
            preset = json.loads(f.attrs["fingerprint"])["preset"]
        for key in REUSED:
            if key in preset:
                found.setdefault(key, preset[key])
    if found:  # sized together: a lease that kept only one kind of unit builds the other alike
        found.setdefault("ws_epochs", found.get("epochs"))
        found.setdefault("epochs", found["ws_epochs"])
        found.setdefault("ws_checkpoints", found.get("checkpoints"))
        found.setdefault("checkpoints", found["ws_checkpoints"])
    return {k: found[k] for k in REUSED if found.get(k) is not None}


def unit_estimate(artifacts: Path, name: str, bench: dict) -> float | None:
    """Seconds a standalone unit of ``name`` takes on this lease: the longest of its own units built before, else
    the 2node units' mean scaled by the bench (slots / rate); None without either. A lease's units cannot pause
    (``--no-unit-state``), so one started with less time left is lost whole."""
    def seconds(space_name: str) -> list[float]:
        out = []
        for path in sorted(artifacts.glob(f"{space_name}-gpu.h5.parts/unit-*.h5")):
            with h5py.File(path, "r") as f:
                out.append(float(f.attrs["unit_seconds"]))
        return out

    own = seconds(name)
    if own:
        return max(own)
    base, a, b = seconds("2node"), bench.get("2node"), bench.get(name)
    if not base or not a or not b:
        return None
    return sum(base) / len(base) * (b["slots"] / b["engine_arch_tokens_s"]) / (a["slots"] / a["engine_arch_tokens_s"])


def recover_lost_parts(artifacts: Path, log) -> None:
    """Give a shipped GPU table back the parts folder it came without (``nasbench_ptb recover-parts``), so this
    lease extends it, reusing its sizing, instead of being refused by the build's guard."""
    from nasbench_ptb.builder.recover import recover_parts

    for table in sorted(artifacts.glob("*-gpu.h5")):
        folder = table.with_name(table.name + ".parts")
        if not (folder.is_dir() and any(folder.glob("*.h5"))):
            got = recover_parts(table)
            log(f"{table.name}: its parts were absent; recovered {len(got.written)} from the table ({got.runs})")


def check_cuda_path(corpus, device, log: Log) -> bool:
    """Runs trained together equal each alone on this device; bf16 stays close to fp32 (tiny sizes: seconds)."""
    import numpy as np

    from nasbench_ptb.builder.presets import get, override
    from nasbench_ptb.builder.standalone import train_runs
    from nasbench_ptb.space import parse

    p = override(get("gpu"), {**TINY, "amp": "off", "epochs": 1, "checkpoints": 2})
    genos = [parse("tanh:0|relu:1|sigmoid:0"), parse("identity:0|tanh:0|relu:2")]
    both = train_runs(corpus, genos, [1, 2], p, device)
    alone = train_runs(corpus, genos[1:], [2], p, device)
    bf16 = train_runs(corpus, genos, [1, 2], override(p, {"amp": "bf16"}), device)
    # Batched kernels may sum in another order than single-slot ones: exact on CPU, close on CUDA.
    same = np.allclose(both.valid_ppl[1], alone.valid_ppl[0], rtol=1e-3)
    near = np.allclose(both.valid_ppl[1], alone.valid_ppl[0], rtol=0.05)
    close = np.allclose(bf16.test_ppl, both.test_ppl, rtol=0.05)  # early checkpoints of lr 20 runs differ more
    log(f"check: together = alone {same} ({both.valid_ppl[1, -1]:.4f} vs {alone.valid_ppl[0, -1]:.4f}); "
        f"bf16 test ppl within 5% of fp32 {close} ({bf16.test_ppl.round(2)} vs {both.test_ppl.round(2)})")
    if not (same and close):
        log("check: WARNING, see above" + ("" if near and close else "; too far off to build"))
    return bool(near and close)


def fits(device, p, log: Log, name: str, runs: int) -> bool:
    """Whether the bench's peak memory, scaled to the longest variable-bptt window, stays under 85% of the card."""
    import torch

    peak = torch.cuda.max_memory_allocated(device)
    longest = (p.bptt + 20) / p.bptt if p.variable_bptt else 1.0
    total = torch.cuda.get_device_properties(device).total_memory
    log(f"bench {name}: {runs} slots peak {peak / 2**30:.1f} GiB, at bptt {p.bptt + 20} about "
        f"{peak * longest / 2**30:.1f} of {total / 2**30:.0f} GiB")
    return peak * longest < 0.85 * total


def bench(args, corpus, device, p, log: Log) -> dict:
    """Engine vs the per-model loop at the 2node unit size, the 3node unit size, and the matmul ceiling."""
    import torch
    from bench_engine import flops_per_arch_token, matmul_ceiling, run_engine, run_plain, runs_of

    from nasbench_ptb.space import space

    out = {}
    for name in ("2node", "3node"):
        sp = space(name)
        runs = min(sp.size * p.seeds, out.get("slots_per_unit", p.slots_per_unit))
        while True:  # halve the unit until a training step fits in the device's memory
            genos, seeds = runs_of(sp, runs)
            t0 = time.perf_counter()
            try:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                engine = run_engine(genos, seeds, corpus, p, args.bench_steps, device)
                if device.type != "cuda" or fits(device, p, log, name, runs):
                    break
            except torch.cuda.OutOfMemoryError:
                log(f"bench {name}: {runs} slots do not fit in memory")
            torch.cuda.empty_cache()
            runs //= 2
            if runs < 1:
                raise RuntimeError("not even one run fits in the device's memory")
            out["slots_per_unit"] = runs
        dec, cell = flops_per_arch_token(p.hidden, corpus.ntokens, sp.n)
        out[name] = {"slots": runs, "engine_arch_tokens_s": engine, "decoder_flops_per_arch_token": dec,
                     "cell_flops_per_arch_token": cell}
        if name == "2node":
            plain = run_plain(genos[:4], seeds[:4], corpus, p, args.bench_steps, device)
            out[name].update(plain_arch_tokens_s=plain, ratio=engine / plain)
        log(f"bench {name}: {runs} slots {engine:,.0f} arch-tokens/s" +
            (f"; per-model loop {out[name]['plain_arch_tokens_s']:,.0f} → {out[name]['ratio']:.1f}x"
             if "ratio" in out[name] else "") + f" ({time.perf_counter() - t0:.0f} s)")
    ceiling = matmul_ceiling(device, p.amp)
    out["matmul_ceiling_flops"] = ceiling
    for name in ("2node", "3node"):
        r = out[name]
        r["decoder_fraction_of_ceiling"] = r["engine_arch_tokens_s"] * r["decoder_flops_per_arch_token"] / ceiling
        log(f"roofline {name}: decoder at {r['decoder_fraction_of_ceiling']:.1%} of the measured "
            f"{'bf16' if p.amp == 'bf16' else 'fp32'} matmul ceiling {ceiling / 1e12:.1f} TFLOP/s")
    return out


def step_modes(args, overrides: dict, out: Path, seconds: float, log: Log) -> dict:
    """``bench_step_modes.py`` at the gpu preset (eager vs compiled cell step vs CUDA graphs, and evaluation) in
    a subprocess bounded by ``seconds``, so that a hang or a crash in a compiler costs no table."""
    if seconds < 20:
        log(f"step modes: skipped, {seconds:.0f} s for them")
        return {"skipped": f"{seconds:.0f} s left"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_step_modes.py"), "--preset", "gpu", "--space", "2node",
           "--data", args.data, "--device", args.device, "--steps", str(args.bench_steps),
           "--compile-backend", args.compile_backend, "--json", str(out / "modes.json")]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    if args.tiny:  # the evaluation phase on the rehearsal's own validation prefix, not 20k tokens (minutes on CPU)
        cmd += ["--eval-tokens", str(TINY["ws_final_valid_tokens"])]
    log(f"step modes: {seconds:.0f} s for them")
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        log(res.stdout.strip(), res.stderr.strip()[-2000:] if res.returncode else "")
    except subprocess.TimeoutExpired:
        log(f"step modes: stopped after {seconds:.0f} s")
    path = out / "modes.json"
    return json.loads(path.read_text()) if path.is_file() else {"error": "no figures (see the log)"}


def size_epochs(rate: float, runs: int, train_tokens: int, target_s: float) -> float:
    """Epochs whose standalone training takes about ``target_s`` at ``rate``, leaving 40% of the target for
    validation, test and weight sharing: whole epochs from 1 to 10 (NT-ASGD is judged once per epoch), below one
    a multiple of 1/4 (at least 0.25)."""
    epochs = 0.6 * target_s * rate / (runs * train_tokens)
    if epochs >= 1:
        return float(min(10, math.floor(epochs)))
    return max(0.25, math.floor(epochs * 4) / 4)


def sized_values(epochs: float) -> dict:
    """The preset values a sizing sets: the epochs for both kinds and, from one epoch on, a checkpoint at every
    epoch (the grid AWD-LSTM's non-monotone trigger reads; the first epoch's ten come on top)."""
    out = {"epochs": epochs, "ws_epochs": epochs}
    if epochs >= 1:
        out.update(checkpoints=int(epochs), ws_checkpoints=int(epochs))
    return out


def build(args, space_name: str, overrides: dict, artifacts: Path, seconds: float, log: Log) -> None:
    """One ``nasbench_ptb build`` with a time limit (and a hard stop a minute later, then assemble only)."""
    out = artifacts / f"{space_name}-gpu.h5"
    # --no-unit-state: a unit's state (≈ 4 GB per checkpoint at 160 runs of hidden 256) cannot come back from the
    # lease and would cost seconds at every checkpoint; an unfinished unit restarts in a later lease
    cmd = [sys.executable, "-m", "nasbench_ptb.cli", "build", "--space", space_name, "--preset", "gpu",
           "--out", str(out), "--data", args.data, "--device", args.device, "--no-unit-state"]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    log(f"build {space_name}: {seconds:.0f} s left for it: {' '.join(cmd[2:])}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    try:
        res = subprocess.run(cmd + ["--time-limit", str(max(seconds, 0) / 60)], env=env, capture_output=True,
                             text=True, timeout=max(seconds, 0) + 60)
        log(res.stdout.strip(), res.stderr.strip()[-2000:])
    except subprocess.TimeoutExpired:
        log(f"build {space_name}: hard stop; assembling the finished units")
        res = subprocess.run(cmd + ["--time-limit", "0"], env=env, capture_output=True, text=True)
        log(res.stdout.strip(), res.stderr.strip()[-2000:])


def pack(artifacts: Path, out: Path, log: Log) -> None:
    with tarfile.open(out / TARBALL, "w") as tar:
        for folder in sorted(artifacts.glob("*-gpu.h5.parts")):
            tar.add(folder, arcname=folder.name)
    for table in sorted(artifacts.glob("*-gpu.h5")):
        shutil.copy2(table, out / table.name)
    log("packed:", ", ".join(f"{p.name} {p.stat().st_size / 1e6:.2f} MB" for p in sorted(out.iterdir())))


def run(args) -> int:
    import torch

    from nasbench_ptb.builder import data
    from nasbench_ptb.builder.build import device_name, resolve_device
    from nasbench_ptb.builder.presets import get, override
    from nasbench_ptb.space import space

    start = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - start)  # noqa: E731
    out, artifacts = Path(args.out), Path(args.artifacts)
    out.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    log = Log(out / "device_build.log")
    device = resolve_device(args.device)
    base = override(get("gpu"), TINY if args.tiny else {})
    facts = {"device": device_name(device), "torch": torch.__version__,
             "cuda": torch.version.cuda if device.type == "cuda" else None}
    log(f"device_build: {facts}, budget {args.budget:.0f} s")
    report = {"facts": facts}
    try:
        corpus = data.load(args.data)
        report["check_ok"] = check_cuda_path(corpus, device, log)
        if not report["check_ok"]:
            log("the CUDA path disagrees with itself: no tables built")
            return 1
        report["bench"] = bench(args, corpus, device, base, log)
        recover_lost_parts(artifacts, log)
        sized = reused_values(artifacts)
        if sized:
            log(f"sizing: reusing {sized} from the units already built")
        else:
            runs = space("2node").size * base.seeds
            epochs = size_epochs(report["bench"]["2node"]["engine_arch_tokens_s"], runs,
                                 len(corpus.train[: base.train_tokens]), args.target_2node)
            sized = sized_values(epochs)
            if "slots_per_unit" in report["bench"]:
                sized["slots_per_unit"] = report["bench"]["slots_per_unit"]
            log(f"sizing: {sized} (2node standalone training ≈ {0.6 * args.target_2node:.0f} s)")
        report["sized"] = sized
        overrides = {**(TINY if args.tiny else {}), **sized}
        for i, name in enumerate(args.spaces.split(",")):
            if i == 1:  # after the first table, before the rest: the tables come first
                report["modes"] = step_modes(args, overrides, out, min(args.modes_seconds, left() - 60), log)
            if left() < 30:
                log(f"build {name}: skipped, {left():.0f} s left")
                continue
            need = unit_estimate(artifacts, name, report["bench"])
            if need is not None and need > left() - 45:  # the time goes to what can finish (the step modes)
                log(f"build {name}: skipped, a unit takes about {need:.0f} s and {left() - 45:.0f} s are left for it")
                continue
            build(args, name, overrides, artifacts, left() - 45, log)
        if "modes" not in report:
            report["modes"] = step_modes(args, overrides, out, min(args.modes_seconds, left() - 30), log)
    finally:
        report["seconds"] = time.perf_counter() - start
        (out / "bench.json").write_text(json.dumps(report, indent=1, default=float))
        pack(artifacts, out, log)
    return 0


def trained_nothing(table) -> bool:
    """Whether a table holds no finished standalone run and no finished super-net (the build guard's count)."""
    from nasbench_ptb.builder.guard import held_runs

    return not any(held_runs(table).values())


def unpack(folder: Path, artifacts: Path) -> None:
    """Tables and finished units from a lease into ``artifacts/``; MANIFEST lists complete GPU tables first."""
    from nasbench_ptb import schema, summary

    with tarfile.open(folder / TARBALL) as tar:
        for member in tar.getmembers():
            if member.name.startswith(("/", "..")) or ".." in Path(member.name).parts or not (
                    member.isfile() or member.isdir()):
                raise SystemExit(f"{TARBALL}: refusing member {member.name!r}")
        tar.extractall(artifacts)
    built = []
    for table in sorted(folder.glob("*-gpu.h5")):
        if trained_nothing(schema.read(table)):  # a space the lease ran out of time for: its units stay, no table
            print(f"{table.name}: no finished run, not shipped")
            continue
        shutil.copyfile(table, artifacts / table.name)
        built.append(table.name)
    names = list(read_manifest(artifacts)) + built
    names = list(dict.fromkeys(names))

    def complete(name: str) -> bool:
        t = schema.read(artifacts / name)  # every standalone run and every super-net finished
        return t.ws is not None and t.standalone is not None and summary.coverage(t).missing == 0 and bool(
            (t.ws.status != schema.Status.MISSING).all())

    order = [n for n in names if n.endswith("-gpu.h5") and complete(n)] + \
            [n for n in names if not (n.endswith("-gpu.h5") and complete(n))]
    for name in order:
        os.chmod(artifacts / name, 0o644)
    write_manifest(artifacts, order)
    print("MANIFEST:", ", ".join(order))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="PTB folder (on the device: the carried .ptb)")
    ap.add_argument("--budget", type=float, default=480, help="seconds for everything, packing included")
    ap.add_argument("--target-2node", type=float, default=300, help="seconds of 2node standalone work to size for")
    ap.add_argument("--spaces", default="2node,3node")
    ap.add_argument("--bench-steps", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=os.environ.get("OUT", "device_out"))
    ap.add_argument("--artifacts", default=str(ROOT / "artifacts"))
    ap.add_argument("--modes-seconds", type=float, default=90,
                    help="at most this long for bench_step_modes.py after the first table (0: skip)")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend for the step modes")
    ap.add_argument("--tiny", action="store_true", help="rehearsal: tiny model and data slices (CPU)")
    ap.add_argument("--unpack", metavar="FOLDER", help="here, after the lease: bring its files into --artifacts")
    args = ap.parse_args()
    if args.unpack:
        unpack(Path(args.unpack), Path(args.artifacts))
        return 0
    if not args.data:
        ap.error("--data is required to build")
    return run(args)

if __name__ == "__main__":
    sys.exit(main())
