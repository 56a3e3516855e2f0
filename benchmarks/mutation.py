"""Mutation testing of the research logic: how many plausible one-line bugs the test suite kills.

    python benchmarks/mutation.py [--modules nasbench_ptb/sampling.py ...] [--max-children 2] [--keep DIR]
    python benchmarks/mutation.py --rerun DIR [-k EXPR] [--modules ...]   # a kept run's survivors, current tests

Runs mutmut (``pip install mutmut``; configured under ``[tool.mutmut]`` in pyproject.toml: the modules of the
space, summary, analyses, simulator, policies, evaluate, sampling, the optimiser and the training protocol, with
the tests that exercise them) in a scratch copy of the checkout, then prints per module the mutants killed,
survived and judged equivalent, the kill rate over the non-equivalent ones (target ≥ 90 %), and every survivor
with its diff. Equivalent mutants (the same behaviour, e.g. a changed default that every caller overrides) are
listed with the reason in ``benchmarks/equivalent_mutants.txt``; they leave the denominator. Slow (minutes per
module on 2 cores): not part of CI.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = Path(__file__).with_name("equivalent_mutants.txt")


INSTALLED = {"builder": "builder", "api": "server"}  # repository folder → subpackage of nasbench_ptb


def installed_path(module: str) -> str:
    """``builder/optim.py`` → ``nasbench_ptb/builder/optim.py`` (the layout of the scratch copy)."""
    head, sep, rest = module.partition("/")
    return f"nasbench_ptb/{INSTALLED[head]}/{rest}" if sep and head in INSTALLED else module


def equivalents() -> dict[str, str]:
    """Mutant name -> why it behaves as the original."""
    out = {}
    if EQUIVALENT.is_file():
        for line in EQUIVALENT.read_text().splitlines():
            name, _, why = line.partition(" ")
            if name and not name.startswith("#"):
                out[name] = why.strip()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", nargs="*", help="restrict to these files (default: pyproject's only_mutate)")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", help="run in this folder and keep it (default: a temporary one)")
    ap.add_argument("--report", metavar="FOLDER", help="only summarise the results kept in FOLDER (a --keep of an "
                                                        "earlier run), e.g. after judging more mutants equivalent")
    ap.add_argument("--rerun", metavar="FOLDER", help="rerun the survivors kept in FOLDER (a --keep of an earlier run) "
                                                       "under the checkout's current tests, one pytest per mutant")
    ap.add_argument("-k", dest="select", default="", help="with --rerun: pytest -k expression of the tests to run")
    ap.add_argument("--tests", default="tests/test_search_phases.py tests/test_search_darts.py tests/test_search_enas.py "
                    "tests/test_search_nao.py tests/test_search_driver.py", help="with --rerun: the test file(s), space-separated")
    args = ap.parse_args()
    mutmut = shutil.which("mutmut") or str(Path(sys.executable).with_name("mutmut"))
    if not Path(mutmut).exists():
        print("mutmut is not installed: pip install mutmut", file=sys.stderr)
        return 1
    env = {"NASBENCH_PTB_DATA": str(ROOT.parent / "shared" / "data" / "ptb"), **os.environ, "OMP_NUM_THREADS": "1",
           "NASBENCH_PTB_TABLES": str(ROOT / "artifacts")}  # the scratch copy has no artifacts/: the checkout's
    if args.rerun:
        return rerun(Path(args.rerun), env, args.select, args.tests.split(), args.modules)
    if args.report:
        if not (Path(args.report) / "mutants").is_dir():
            print(f"--report {args.report}: no mutmut results there (run with --keep first)", file=sys.stderr)
            return 1
        return summarise(mutmut, Path(args.report), env)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nasbench_mutation_"))
    if args.keep and work.exists() and any(work.iterdir()):
        print(f"--keep {work}: the folder exists and is not empty; remove it or name another", file=sys.stderr)
        return 1
    # The copy lays the packages out as installed (builder/ → nasbench_ptb/builder, api/ → nasbench_ptb/server):
    # mutmut names a mutant after its file's path, and its trampolines match that name against the function's
    # module at run time, which is nasbench_ptb.builder.… — with builder/ at the top, no builder mutant would ever
    # be activated (all reported "no tests").
    for name in ("nasbench_ptb", "benchmarks", "docs", "tests", "pyproject.toml"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    for folder, package in INSTALLED.items():
        shutil.copytree(ROOT / folder, work / "nasbench_ptb" / package)
    text = (work / "pyproject.toml").read_text()
    listed = args.modules or re.search(r"only_mutate = \[(.*?)\]", text, flags=re.S).group(1).replace('"', "").replace(
        ",", " ").split()
    listed = ", ".join(f'"{installed_path(m)}"' for m in listed)
    text = re.sub(r"only_mutate = \[.*?\]", f"only_mutate = [{listed}]", text, flags=re.S)
    text = re.sub(r"source_paths = \[.*?\]", 'source_paths = ["nasbench_ptb/"]', text, flags=re.S)
    text = re.sub(r"also_copy = \[.*?\]", 'also_copy = ["benchmarks/", "docs/"]', text, flags=re.S)
    (work / "pyproject.toml").write_text(text)
    # (env: the scratch copy is not beside ../shared, so the tests get the PTB copy the checkout's tests use)
    run = subprocess.run([mutmut, "run", "--max-children", str(args.max_children)], cwd=work, env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        print(f"mutmut run failed (exit {run.returncode}):\n{(run.stdout + run.stderr)[-3000:]}", file=sys.stderr)
        return 1
    code = summarise(mutmut, work, env)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return code


def summarise(mutmut: str, work: Path, env: dict) -> int:
    """Per module: killed (timeouts included), survived, judged equivalent, other; the kill rate; each survivor."""
    results = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, env=env, capture_output=True,
                             text=True).stdout
    status = dict(re.findall(r"^\s*(\S+): (\w[\w ]*)$", results, flags=re.M))
    eq = equivalents()
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    survivors = []
    for name, state in status.items():
        module = re.match(r"(.+?)\.x[_\u01c1]", name).group(1)  # mutmut names: <module>.x_<function> or .xǁ<class>ǁ
        # a mutant that makes the tests run past mutmut's timeout (an endless search loop) is detected, as in PIT
        kind = "equivalent" if name in eq else ("killed" if state == "timeout" else state)
        per[module][kind] += 1
        if state == "survived" and name not in eq:
            survivors.append(name)
    total_k = total_n = 0
    print(f"{'module':<28} {'killed':>7} {'survived':>9} {'equiv.':>7} {'other':>6}  kill rate")
    for module, c in sorted(per.items()):
        killed, survived = c["killed"], c["survived"]
        other = sum(v for k, v in c.items() if k not in ("killed", "survived", "equivalent"))
        n = killed + survived + other
        total_k, total_n = total_k + killed, total_n + n
        print(f"{module:<28} {killed:>7} {survived:>9} {c['equivalent']:>7} {other:>6}  {killed / max(n, 1):.1%}")
    print(f"{'all':<28} {total_k:>7} {'':>9} {'':>7} {'':>6}  {total_k / max(total_n, 1):.1%} (target ≥ 90%)")
    for name in survivors:
        diff = subprocess.run([mutmut, "show", name], cwd=work, env=env, capture_output=True, text=True).stdout
        print(f"\n--- survived: {name}\n{diff.strip()}")
    return 0


def rerun(work: Path, env: dict, select: str, tests: list[str], modules: list[str] | None) -> int:
    """The survivors of a kept run, each under the checkout's current tests (mutmut's trampolines read
    ``MUTANT_UNDER_TEST``), without a new stats run: kill rate over the non-equivalent ones, per module; results in
    ``<FOLDER>/rerun.json`` (a later --rerun skips the mutants already there)."""
    import json

    mutants = work / "mutants"
    if not mutants.is_dir():
        print(f"--rerun {work}: no mutmut results there (run with --keep first)", file=sys.stderr)
        return 1
    # the whole current tests/ folder (the listed files and what they share: conftest.py, helpers.py)
    shutil.copytree(ROOT / "tests", mutants / "tests", dirs_exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests] + (["-k", select] if select else [])

    def pytest_under(name: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """The selected tests with this mutant active; one that runs past ``timeout`` (a mutant that loops) is
        killed, as mutmut counts a timeout (exit code -9)."""
        try:
            return subprocess.run(cmd, cwd=mutants, env={**env, "MUTANT_UNDER_TEST": name,
                                                         "PYTHONPATH": str(mutants)},
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, -9, "", f"timed out after {timeout:.0f} s")

    # Unmutated first ("" selects no mutant): tests that fail on their own would count every mutant as killed.
    started = time.monotonic()
    base = pytest_under("")
    limit = 10 * (time.monotonic() - started) + 30
    if base.returncode != 0:
        print(f"--rerun: the selected tests fail without any mutant (pytest exit {base.returncode}); fix them "
              f"first:\n{base.stdout[-3000:]}{base.stderr[-2000:]}", file=sys.stderr)
        return 1
    done_path = work / "rerun.json"
    done = json.loads(done_path.read_text()) if done_path.is_file() else {}
    eq = equivalents()
    wanted = {installed_path(m) for m in modules} if modules else None
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for meta in sorted(mutants.rglob("*.py.meta")):
        source = str(meta.relative_to(mutants))[: -len(".meta")]
        if wanted is not None and source not in wanted:
            continue
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        module = source[:-3].replace("/", ".")
        for name, code in codes.items():
            if code != 0:
                per[module]["killed before"] += 1
                continue
            if name in eq:
                per[module]["equivalent"] += 1
                continue
            if name not in done:
                run = pytest_under(name, limit)
                if run.returncode not in (0, 1, -9):  # 1: a test failed (killed); else the harness broke, not a test
                    print(f"--rerun: pytest exit {run.returncode} under {name} (not a test failure); stopped, "
                          f"results so far kept in {done_path}:\n{run.stdout[-3000:]}{run.stderr[-2000:]}",
                          file=sys.stderr)
                    return 1
                done[name] = run.returncode
                done_path.write_text(json.dumps(done, indent=0))
            per[module]["killed now" if done[name] != 0 else "survived"] += 1
    print(f"{'module':<28} {'killed':>7} {'survived':>9} {'equiv.':>7}  kill rate")
    for module, c in sorted(per.items()):
        killed = c["killed before"] + c["killed now"]
        n = killed + c["survived"]
        print(f"{module:<28} {killed:>7} {c['survived']:>9} {c['equivalent']:>7}  {killed / max(n, 1):.1%}")
    for name, code in sorted(done.items()):
        if code == 0 and name not in eq:
            print(f"survived: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
