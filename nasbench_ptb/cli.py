"""``nasbench_ptb`` command line. ``build`` imports the torch-based builder lazily; the rest is numpy + h5py.

Errors a user can cause (bad flags, unwritable paths, missing data, bad tables) print one line and exit 1
(2 for usage), never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager


from . import schema
from .cli_base import UserError, bench_of


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _threads_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch CPU threads (default 1: measured fastest when other work shares the cores, "
                             "see benchmarks/bench_threads.py)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nasbench_ptb", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    b = sub.add_parser("build", help="train architectures of a space and write an HDF5 table")
    b.add_argument("--space", required=True, help="2node, 3node or <n>node")
    b.add_argument("--preset", default="cpu", help="smoke, cpu, gpu or paper (default: cpu)")
    b.add_argument("--mode", default="both", choices=("standalone", "ws", "both"),
                   help="standalone runs, weight-sharing super-nets, or both (default)")
    b.add_argument("--seeds", type=int, help="standalone seeds per architecture (default: the preset's)")
    b.add_argument("--ws-seeds", type=int, help="weight-sharing super-nets (default: the preset's ws_seeds)")
    b.add_argument("--archs", action="append",
                   help="ids, id ranges (0-15) or canonical genotypes, comma-separated (repeatable); default: all")
    b.add_argument("--ws-archs", action="append", metavar="IDS|GENOTYPES",
                   help="weight sharing among these architectures only (at least 2; same syntax as --archs): the "
                        "super-nets of the 'amount of sharing' experiment, stored as /ws_subspace")
    b.add_argument("--sample", type=int, metavar="N",
                   help="instead of --archs: N architectures drawn at random, stratified by op mix with distinct "
                        "iso classes first (recorded in the table)")
    b.add_argument("--sample-seed", type=int, default=0, metavar="S", help="seed of --sample (default 0)")
    b.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    _threads_flag(b)
    b.add_argument("--out", help="table path (default: ./<space>-<preset>.h5); <out>.parts/ keeps finished units")
    b.add_argument("--data", help="directory with ptb.{train,valid,test}.txt (else $NASBENCH_PTB_DATA, cache, download)")
    b.add_argument("--epochs", help="override the preset's epochs")
    b.add_argument("--hidden", help="override the preset's hidden size")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any preset value")
    b.add_argument("--force", action="store_true",
                   help="replace an existing --out that is not this build's own earlier table (another space or "
                        "configuration, or results that <out>.parts/ does not hold)")
    b.add_argument("--quiet", action="store_true", help="no progress line")
    b.add_argument("--time-limit", type=float, metavar="MIN",
                   help="start no unit that would end after MIN minutes; write what is done (rerun to continue)")
    b.add_argument("--no-unit-state", action="store_true",
                   help="local: units save no state at their checkpoints, so a stopped unit restarts whole and "
                        "--time-limit only keeps units from starting (for a machine whose state files, GBs at "
                        "the gpu preset, cannot be kept)")
    b.add_argument("--executor", default="local", choices=("local", "ray"),
                   help="where units train: this machine (default) or Ray tasks on a cluster (extra: cluster)")
    b.add_argument("--workers", type=int, metavar="N",
                   help="local: units trained at once, each in its own process with --threads threads (default 1; "
                        "2 on 2 cores measured 2.06x idle, 1.26x beside other work: benchmarks/bench_threads.py)")
    b.add_argument("--address", help="Ray: auto (the cluster this machine is in) or HEAD:PORT; default: a Ray on "
                                     "this machine")
    b.add_argument("--unit-cpus", type=int, metavar="N", help="Ray: CPUs (torch threads) per unit (default 1)")
    b.add_argument("--unit-gpus", type=float, metavar="F", help="Ray: GPUs per unit, fractions allowed (default 0)")

    from .search_results import ALGORITHMS

    se = sub.add_parser("search", help="run real search phases (DARTS, ENAS, NAO, random-WS) on the super-net")
    se.add_argument("--algo", required=True, action="append",
                    help="; ".join(f"{k}: {v}" for k, v in ALGORITHMS.items()) + " (comma-separated or repeated; "
                         "each adds its group to --out)")
    se.add_argument("--space", required=True, help="2node, 3node or <n>node")
    se.add_argument("--preset", default="cpu", help="smoke, cpu, gpu or paper (default: cpu); the WS values apply")
    se.add_argument("--seeds", type=int, default=5, help="search seeds per algorithm, trained together (default 5)")
    se.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="an algorithm option (the examples under --algo; every option: README § Search phases)")
    se.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    _threads_flag(se)
    se.add_argument("--out", help="search-results file (default: ./search-<space>-<preset>.h5); other algorithms "
                                  "already in it are kept")
    se.add_argument("--data", help="directory with ptb.{train,valid,test}.txt (else $NASBENCH_PTB_DATA, cache, download)")
    se.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any preset value")
    se.add_argument("--force", action="store_true", help="replace an --out that is not a search-results file")

    v = sub.add_parser("verify", help="retrain architectures of a table with new seeds: do its numbers hold?")
    v.add_argument("archs", nargs="*", metavar="ARCH",
                   help="genotypes, hashes or ids (default: the table's top 3 and its median cell)")
    v.add_argument("--space", default="2node", help="whose default table (default 2node)")
    v.add_argument("--table", help="a table file (default: the default table of --space)")
    v.add_argument("--preset", help="train at this preset instead of the table's own")
    v.add_argument("--seeds", type=int, default=2, help="new seeds per architecture (default 2)")
    v.add_argument("--reuse-seeds", action="store_true",
                   help="retrain the table's own seeds instead: a reproduction check (same numbers expected)")
    v.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    _threads_flag(v)
    v.add_argument("--data", help="directory with ptb.{train,valid,test}.txt (else $NASBENCH_PTB_DATA, cache, download)")
    v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset value")
    v.add_argument("--json", action="store_true")

    t = sub.add_parser("train", help="train one architecture standalone and write its curves (a one-cell table)")
    t.add_argument("arch", help="genotype (canonical or DARTS repr), or an id with --space")
    t.add_argument("--space", help="2node, 3node, ... (inferred from a genotype)")
    t.add_argument("--preset", default="cpu", help="smoke, cpu, gpu or paper (default: cpu)")
    t.add_argument("--seeds", type=int, help="seeds (default: the preset's)")
    t.add_argument("--out", help="table path (default: ./train-<hash>-<preset>.h5)")
    t.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    _threads_flag(t)
    t.add_argument("--data", help="directory with ptb.{train,valid,test}.txt (else $NASBENCH_PTB_DATA, cache, download)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset value")
    t.add_argument("--force", action="store_true", help="replace an existing --out (see build --force)")

    rp = sub.add_parser("recover-parts", help="rewrite a table's lost <table>.parts/ from the table, so a build "
                        "can extend it")
    rp.add_argument("table", help="a table built by nasbench_ptb build (its parts folder is <table>.parts/)")

    z = sub.add_parser("proxies", help="compute every architecture's zero-cost proxies and store them in a table")
    z.add_argument("table", help="the table to add /proxies to (rewritten in place; a MANIFEST beside it is updated)")
    z.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1: seed s scores standalone seed s's initial "
                   "weights (default 3)")
    z.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    _threads_flag(z)
    z.add_argument("--chunk", type=int, default=4, help="architecture-seeds scored together (default 4: measured fastest on CPU)")
    z.add_argument("--data", help="directory with ptb.{train,valid,test}.txt (else $NASBENCH_PTB_DATA, cache, download)")
    z.add_argument("--force", action="store_true", help="recompute proxies the table already holds at these seeds")
    z.add_argument("--quiet", action="store_true", help="no progress line")

    x = sub.add_parser("export", help="write a table as Parquet, CSV or a Syne Tune blackbox")
    x.add_argument("table", help="a table file")
    x.add_argument("--format", required=True, choices=("parquet", "csv", "syne-tune"))
    x.add_argument("--out", required=True, help="output file (parquet, csv) or folder (syne-tune); must not exist")
    x.add_argument("--force", action="store_true", help="replace an existing --out (never the table itself)")

    i = sub.add_parser("info", help="summarise a table: space, preset, coverage, best architectures")
    i.add_argument("table")
    i.add_argument("--top", type=int, default=5)
    i.add_argument("--min-n", type=int, default=1, metavar="N",
                   help="rank only cells (and iso classes) with at least N ok runs (one-seed means crowd a top list)")
    i.add_argument("--by-iso", action="store_true",
                   help="also rank the iso classes: the cells that are renumberings of one function pooled as "
                        "replicates, n beside every mean")
    i.add_argument("--reference", metavar="TABLE",
                   help="another table of the space (e.g. the 1-epoch one): each epoch's ranking is compared with its")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    q = sub.add_parser("query", help="print the record of one architecture")
    q.add_argument("arch", help="canonical genotype, DARTS repr, hash, or id (with --space)")
    q.add_argument("--space", help="2node, 3node, ... (inferred from a genotype)")
    q.add_argument("--table", help="a table file (default: the default table of the space)")
    q.add_argument("--seed", type=int, help="one standalone seed instead of the mean over seeds")
    q.add_argument("--epoch", type=float, metavar="E",
                   help="the record as the table stood after E epochs (its last checkpoint at or before E)")
    q.add_argument("--json", action="store_true", help="the whole record as JSON (with curves)")

    e = sub.add_parser("evaluate", help="run search policies against a table (the paper's protocol, Table 3)")
    e.add_argument("--space", default="2node")
    e.add_argument("--table", help="a table file (default: the default table of the space)")
    from .policies import default_policies

    e.add_argument("--policies", help="comma-separated (default: all the table can answer: the ws ones need "
                   "super-nets, the zc ones proxies): " + ", ".join(default_policies()))
    e.add_argument("--runs", type=int, default=10, help="search seeds per policy (default 10)")
    e.add_argument("--budget-queries", type=int, default=10, help="standalone queries per run (default 10)")
    e.add_argument("--budget-seconds", type=float, help="simulated seconds per run (table seconds)")
    e.add_argument("--checkpoint", type=int, default=-1,
                   help="standalone checkpoint the policies see (index, default -1: final)")
    e.add_argument("--seed", type=int, help="policies see this standalone seed only (default: mean over seeds)")
    e.add_argument("--policy", action="append", default=[], metavar="MODULE:NAME",
                   help="also run your own policy (name, uses_ws, search(sim); see docs/example_policy.py)")
    e.add_argument("--real", metavar="FILE", help="also judge the real searches of this search-results file "
                   "(nasbench_ptb search); its space is the default for --space")
    e.add_argument("--json", action="store_true")

    r = sub.add_parser("report", help="figures and a Markdown report of the search-phase analyses")
    r.add_argument("--space", default="2node")
    r.add_argument("--table", help="a table file (default: the default table of the space)")
    r.add_argument("--out", required=True, help="output folder (PNG per analysis + report.md)")
    r.add_argument("--runs", type=int, default=10)
    r.add_argument("--real", metavar="FILE", help="add the real searches of this search-results file (Fig. 3)")
    r.add_argument("--reference", metavar="TABLE",
                   help="another table of the space (e.g. the 1-epoch one): each epoch's ranking is compared with its")

    s = sub.add_parser("serve", help="serve the tables over HTTP (read-only)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--tables", nargs="+", help="table files or folders (default: the default tables)")
    s.add_argument("--workers", type=int, default=1)
    return parser


def cmd_evaluate(args) -> int:
    """``nasbench_ptb evaluate``: the simulated policies (and ``--real`` searches) against a table, Table 3's rows."""
    from . import api
    from .evaluate import applicable_policies, evaluate, evaluate_real, format_table, real_best
    from .policies import default_policies, load_policy
    from .simulator import Budget

    known = default_policies()
    try:
        own = [load_policy(spec) for spec in args.policy]
    except ValueError as exc:
        raise UserError(str(exc)) from None
    taken = set(known)
    for spec, policy in zip(args.policy, own):  # two rows of one name would be indistinguishable in the table
        if policy.name in taken:
            what = "a built-in policy's" if policy.name in known else "another --policy's"
            raise UserError(f"--policy {spec}: its name {policy.name!r} is {what}; give it a name of its own")
        taken.add(policy.name)
    names = [n.strip() for n in args.policies.split(",") if n.strip()] if args.policies else None
    unknown = [n for n in names or () if n not in known]
    if unknown or names == []:
        raise UserError(f"unknown policy {', '.join(unknown) or '(none given)'} (known: {', '.join(known)})")
    if args.runs < 1 or args.budget_queries < 1 or (args.budget_seconds is not None and args.budget_seconds <= 0):
        raise UserError("--runs and --budget-queries must be ≥ 1, --budget-seconds > 0")
    try:
        real = None
        if args.real:
            from .search_results import read as read_searches

            real = read_searches(args.real)
            if args.space == "2node" and not args.table:  # the parser's default: follow the file's space
                args.space = real.space.name
        bench = bench_of(args)
        budget = Budget(args.budget_queries, args.budget_seconds)
        sa = bench.table.standalone
        if sa is not None and not -len(sa.epochs) <= args.checkpoint < len(sa.epochs):
            raise UserError(f"--checkpoint {args.checkpoint}: the table has {len(sa.epochs)} checkpoints")
        if sa is not None and args.seed is not None and args.seed not in sa.seeds:
            raise UserError(f"--seed {args.seed}: the table's standalone seeds are {list(map(int, sa.seeds))}")
        chosen = [known[n] for n in names] if names is not None else applicable_policies(bench.table)
        results = evaluate(bench.table, chosen + own, args.runs, budget, args.checkpoint, args.seed)
        if real is not None:
            results += evaluate_real(bench.table, real)
        best = real_best(bench.table)
    except (ValueError, api.TableError) as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps({"table": str(bench.path), "space": bench.space.name, "runs": args.runs,
                          "budget": {"queries": budget.queries, "seconds": budget.seconds},
                          "results": [vars(r) for r in results], "real_best": best}, indent=2))
        return 0
    print(f"{bench.space.name} table {bench.path} ({bench.table.preset}); {args.runs} runs per policy; "
          f"budget {budget.queries} standalone queries" + (f", {budget.seconds:.0f} s" if budget.seconds else ""))
    print(format_table(results, best))
    return 0


@contextmanager
def _writing(out: str):
    """Errors of a command that reads a table and writes ``out``, as one line each."""
    try:
        yield
    except (ValueError, ImportError, schema.TableError) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None


def cmd_report(args) -> int:
    """``nasbench_ptb report``: the figures and the policies' table into a folder."""
    from pathlib import Path

    from .report import write_report
    from .search_results import read as read_searches

    if args.runs < 1:  # before the folder is made: nothing is left behind
        raise UserError(f"--runs must be at least 1, got {args.runs}")
    with _writing(args.out):
        real = read_searches(args.real) if args.real else None
        reference = schema.read(args.reference) if args.reference else None
        path = write_report(bench_of(args).table, Path(args.out), args.runs, real=real, reference=reference)
    print(f"wrote {path} and its figures")
    return 0


def cmd_export(args) -> int:
    """``nasbench_ptb export``: a table as Parquet, CSV or a Syne Tune blackbox."""
    from .export import export

    with _writing(args.out):
        path = export(schema.read(args.table), args.format, args.out, args.force, source=args.table)
    print(f"wrote {path} ({args.format})")
    return 0


def cmd_serve(args) -> int:
    """``nasbench_ptb serve``: the HTTP API over the default or the given tables."""
    import os

    try:
        from nasbench_ptb.server import serve
    except ImportError:
        raise UserError("serve needs FastAPI and uvicorn: pip install 'nasbench-ptb[serve]'") from None
    from . import api

    if args.workers < 1 or not 0 < args.port < 65536:
        raise UserError("--workers must be ≥ 1 and --port in 1..65535")
    if args.tables:
        for entry in args.tables:  # named by the flag the user gave, before the variable it is passed on in
            if not os.path.exists(entry):
                raise UserError(f"--tables {entry}: no such table file or folder")
        os.environ["NASBENCH_PTB_TABLES"] = os.pathsep.join(args.tables)
    try:
        tables = api.default_tables()
        for path in tables.values():
            api.load(path)  # fail here, in one line, rather than inside a worker
    except api.TableError as exc:
        raise UserError(str(exc)) from None
    print(f"serving {', '.join(f'{s}: {p}' for s, p in tables.items())} on http://{args.host}:{args.port} "
          f"(docs at /docs)", file=sys.stderr)
    serve.run(args.host, args.port, args.workers)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``nasbench_ptb`` command: parse, run the subcommand, a user error is one line on stderr and exit code 1."""
    args = _parser().parse_args(argv)
    try:
        from . import cli_train  # the commands that train (torch is imported only when they run)
        from . import cli_read

        commands = {"build": cli_train.cmd_build, "search": cli_train.cmd_search,
                    "verify": cli_train.cmd_verify, "train": cli_train.cmd_train,
                    "proxies": cli_train.cmd_proxies, "recover-parts": cli_train.cmd_recover_parts, "export": cmd_export,
                    "info": cli_read.cmd_info, "query": cli_read.cmd_query, "serve": cmd_serve,
                    "evaluate": cmd_evaluate, "report": cmd_report}
        return commands[args.command](args)
    except UserError as exc:
        print(f"nasbench_ptb {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"nasbench_ptb {args.command}: interrupted; finished units are kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
