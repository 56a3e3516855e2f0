"""The commands that train: ``build`` (tables) and ``search`` (real search phases). Each imports the
torch-based builder only when it runs, so the rest of the CLI stays numpy + h5py."""
from __future__ import annotations

import numpy as np

from . import schema, summary
from .cli_base import UserError, bench_of
from .sampling import stratified_sample
from .space import space as get_space


def _parse_archs(sp, items: list[str] | None, flag: str = "--archs"):
    """Architectures named by ids, id ranges or genotypes; None when the flag is absent (all of them)."""
    if items is None:
        return None
    genos = []
    for item in items:
        for token in (t.strip() for t in item.split(",")):
            if not token:
                continue
            try:
                lo, dash, hi = token.partition("-")
                if token.isdigit():
                    genos.append(sp.from_id(int(token)))
                elif dash and lo.strip().isdigit() and hi.strip().isdigit():
                    if int(lo) > int(hi):
                        raise ValueError(f"the range is reversed (did you mean {hi.strip()}-{lo.strip()}?)")
                    genos.extend(sp.from_id(i) for i in range(int(lo), int(hi) + 1))
                else:
                    genos.append(sp.parse(token))
            except ValueError as exc:
                raise UserError(f"{flag} {token!r}: {exc}") from None
    if not genos:
        raise UserError(f"{flag}: no architectures given")
    return genos


def cmd_build(args) -> int:
    """``nasbench_ptb build``: train a table's units (resumable), then assemble it."""
    try:
        sp = get_space(args.space)
        for flag in ("seeds", "ws_seeds"):
            if getattr(args, flag) is not None and getattr(args, flag) < 1:
                raise ValueError(f"--{flag.replace('_', '-')} must be at least 1")
        if args.time_limit is not None and not args.time_limit >= 0:
            raise ValueError(f"--time-limit must be a number of minutes ≥ 0, got {args.time_limit}")
        archs = _parse_archs(sp, args.archs)
        ws_archs = _parse_archs(sp, args.ws_archs, "--ws-archs")
        if ws_archs is not None and len({g.id for g in ws_archs}) < 2:
            raise ValueError("--ws-archs: a weight-sharing subspace needs at least 2 architectures")
        if ws_archs is not None and args.mode == "standalone":
            raise ValueError("--ws-archs chooses the super-nets' subspace; it needs --mode ws or both")
        sample = None
        if args.sample is not None:
            if args.archs:
                raise ValueError("--sample and --archs both choose the architectures; give one of them")
            try:
                sample = stratified_sample(sp, args.sample, args.sample_seed)
            except ValueError as exc:
                raise ValueError(f"--sample {args.sample}: {exc}") from None
            archs = [sp.from_id(i) for i in sample.ids]
    except ValueError as exc:
        raise UserError(str(exc)) from None
    ray_flags = [f for f in ("address", "unit_cpus", "unit_gpus") if getattr(args, f, None) is not None]
    if args.executor != "ray" and ray_flags:
        raise UserError(f"--{ray_flags[0].replace('_', '-')} applies to --executor ray")
    if args.no_unit_state and args.executor != "local":
        raise UserError("--no-unit-state applies to --executor local (Ray units keep no state: they restart whole)")
    if args.workers is not None and args.executor != "local":
        raise UserError("--workers applies to --executor local (Ray runs as many units as its CPUs allow: "
                        "--unit-cpus)")
    build_mod, presets, cluster, DataError = _builder("build", "build", "presets", "cluster", threads=args.threads)
    preset = resolve_preset(presets, args.preset, args.set, {k: getattr(args, k) for k in ("epochs", "hidden")})
    out = args.out or f"{sp.name}-{preset.name}.h5"
    try:
        executor = None
        if args.workers is not None or args.no_unit_state:
            executor = build_mod.LocalExecutor(1 if args.workers is None else args.workers, unit_state=not args.no_unit_state)
        if args.executor == "ray":
            executor = cluster.RayExecutor(args.address, 1 if args.unit_cpus is None else args.unit_cpus,
                                          0.0 if args.unit_gpus is None else args.unit_gpus)
        limit = args.time_limit * 60 if args.time_limit is not None else None
        table = build_mod.build(build_mod.BuildRequest(
            sp, preset, out, archs, args.seeds, args.device, args.data, args.quiet, args.mode, args.ws_seeds, limit,
            sample.to_dict() if sample else None, ws_archs, args.force, executor))
    except (build_mod.BuildError, DataError, schema.TableError) as exc:
        raise UserError(str(exc)) from None
    cov = summary.coverage(table)
    line = f"wrote {out}: {sp.name}/{preset.name}"
    if table.standalone is not None:
        line += f", standalone {cov.ok}/{cov.runs} runs ok, {cov.diverged} diverged, {cov.missing} missing"
    if table.ws is not None:
        line += f", weight sharing {int((table.ws.status == schema.Status.OK).sum())}/{len(table.ws.seeds)} super-nets ok"
    print(line)
    return 0




def _builder(command: str, *modules: str, threads: int | None = None) -> list:
    """The builder modules a training command needs, and the data loader's error type; one line without torch.

    ``threads``: torch's CPU thread count for the command (``--threads``). One thread is the default: the
    engine's GEMMs are small, and two threads on two busy cores ran at 0.55× one thread while one thread kept
    94 % of its idle speed (``benchmarks/bench_threads.py``, README "Benchmarks").
    """
    import importlib

    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    try:
        mods = [importlib.import_module(f"nasbench_ptb.builder.{m}") for m in modules]
        data = importlib.import_module("nasbench_ptb.builder.data")
    except ImportError as exc:
        raise UserError(f"{command} needs PyTorch ({exc}); install the extra: pip install 'nasbench-ptb[build]'") from None
    if threads is not None:
        importlib.import_module("nasbench_ptb.builder.engine").set_threads(threads)
    return [*mods, data.DataError]


def _key_values(presets, items: list[str], flag: str) -> dict:
    try:
        return presets.key_values(items, flag)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def resolve_preset(presets, name: str, sets: list[str], extra: dict | None = None):
    """:func:`builder.presets.resolve`, its error as one line."""
    try:
        return presets.resolve(name, sets, extra)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _option_value(text: str):
    """An algorithm option's value: an int, a float, or the string itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def cmd_search(args) -> int:
    """``nasbench_ptb search``: real search phases into a search-results file."""
    from .search_results import ALGORITHMS

    try:
        sp = get_space(args.space)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    algos = [a.strip() for item in args.algo for a in item.split(",") if a.strip()]
    unknown = [a for a in algos if a not in ALGORITHMS]
    if unknown or not algos:
        raise UserError(f"--algo {','.join(unknown) or '(none)'}: unknown search algorithm "
                        f"(known: {', '.join(ALGORITHMS)})")
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    presets, search, DataError = _builder("search", "presets", "search", threads=args.threads)
    options = {k: _option_value(v) for k, v in _key_values(presets, args.option, "--option").items()}
    preset = resolve_preset(presets, args.preset, args.set)
    out = args.out or f"search-{sp.name}-{preset.name}.h5"
    try:
        results = search.search_file(algos, sp, preset, list(range(args.seeds)), out, args.device, args.data,
                                     options, args.force)
    except (search.SearchError, DataError, schema.TableError) as exc:
        raise UserError(str(exc)) from None
    for algo in algos:
        s = results.searches[algo]
        ok = s.status == schema.Status.OK
        finals = ", ".join(sp.from_id(int(i)).canonical + ("" if k else " (diverged)") for i, k in zip(s.final, ok))
        print(f"{algo}: {len(s.seeds)} searches ({int((~ok).sum())} diverged), "
              f"{float(np.nansum(s.seconds[:, -1])):.0f} s of search time; chose {finals}")
    print(f"wrote {out}: {sp.name}/{preset.name}, {', '.join(sorted(results.searches))}")
    return 0


def cmd_proxies(args) -> int:
    """``nasbench_ptb proxies``: every architecture's zero-cost proxies at initialisation, stored in the table."""
    import sys

    from .proxy_analyses import agreement_lines, proxy_agreement

    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if args.chunk < 1:
        raise UserError(f"--chunk must be at least 1, got {args.chunk}")
    proxies, DataError = _builder("proxies", "proxies", threads=args.threads)

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"\rproxies: {done}/{total} architecture-seeds", end="" if done < total else "\n",
                  file=sys.stderr, flush=True)

    try:
        table, computed = proxies.add_to_table(args.table, list(range(args.seeds)), args.device, args.data,
                                               args.chunk, args.force, progress)
    except (proxies.BuildError, DataError, schema.TableError) as exc:
        raise UserError(str(exc)) from None
    how = table.attrs.get("proxies", {})
    if not computed:
        print(f"{args.table} already holds proxies at seeds 0..{args.seeds - 1} (--force recomputes them)")
    else:
        print(f"wrote {args.table}: /proxies for {table.space.size} architectures × {args.seeds} seeds in "
              f"{how.get('total_seconds', float('nan')):.0f} s")
    rows = proxy_agreement(table)
    if rows:
        print("\n".join(agreement_lines(rows, how.get("seconds"))))
    return 0


def cmd_recover_parts(args) -> int:
    """``nasbench_ptb recover-parts``: the finished units of a table whose ``.parts/`` folder was lost."""
    recover, _ = _builder("recover-parts", "recover")
    try:
        got = recover.recover_parts(args.table)
    except recover.BuildError as exc:
        raise UserError(str(exc)) from None
    words = {"standalone": "standalone runs", "ws": "super-nets", "ws_subspace": "subspace super-nets"}
    wrote = ", ".join(f"{n} {words[k]}" for k, n in got.runs.items() if n) or "nothing"
    kept = ", ".join(f"{n} {words[k]}" for k, n in got.already.items() if n)
    print(f"{got.folder}: wrote {len(got.written)} part(s) holding {wrote}" + (f"; already there: {kept}" if kept else ""))
    return 0


def cmd_verify(args) -> int:
    """``nasbench_ptb verify``: retrain a table's architectures with new seeds and compare."""
    import json

    from . import api
    from .verification import compare, default_archs, format_rows

    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    try:
        bench = bench_of(args)
        table = bench.table
        if table.standalone is None:
            raise UserError(f"{bench.path} has no standalone runs to verify")
        archs = [bench.resolve(int(a) if a.strip().isdigit() else a) for a in args.archs] if args.archs else default_archs(table)
    except (ValueError, api.TableError, api.ArchNotFoundError) as exc:
        raise UserError(str(exc)) from None
    presets, verify, DataError = _builder("verify", "presets", "verify", threads=args.threads)
    own = [int(s) for s in table.standalone.seeds]
    seeds = own if args.reuse_seeds else list(range(max(own) + 1, max(own) + 1 + args.seeds))
    try:
        base = presets.get(args.preset) if args.preset else verify.table_preset(table)
        p = presets.override(base, _key_values(presets, args.set, "--set"))
        valid, test, seconds = verify.retrain(table, archs, seeds, p, args.device, args.data)
    except (ValueError, verify.BuildError, DataError) as exc:
        raise UserError(str(exc)) from None
    rows, tau = compare(table, archs, valid, test)
    if args.json:
        print(json.dumps({"table": str(bench.path), "preset": p.name, "seeds": seeds, "seconds": seconds,
                          "tau_b": tau, "archs": [vars(r) for r in rows]}, indent=2))
        return 0
    print(f"{table.space.name} table {bench.path} ({table.preset}); retrained at preset {p.name} with seeds "
          f"{', '.join(map(str, seeds))}" + (" (the table's own: a reproduction check)" if args.reuse_seeds else "")
          + f" in {seconds:.0f} s")
    print(format_rows(rows, tau))
    if args.reuse_seeds:
        st = table.standalone
        ok = st.status[archs] == schema.Status.OK
        diff = np.abs(valid - np.where(ok, st.valid_ppl[archs, :, -1], np.nan))
        print(f"largest |retrained − table| final validation ppl over the {int(ok.sum())} reproduced runs: "
              f"{np.nanmax(diff):.4g}")
    return 0


def cmd_train(args) -> int:
    """``nasbench_ptb train``: train given architectures standalone at a preset."""
    from .space import parse

    try:
        if args.arch.strip().isdigit():
            if not args.space:
                raise ValueError(f"an id ({args.arch}) needs --space")
            sp = get_space(args.space)
            geno = sp.from_id(int(args.arch))
        else:
            geno = parse(args.arch)
            sp = get_space(args.space) if args.space else get_space(geno.n)
            geno = sp.parse(geno)
        if args.seeds is not None and args.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    build_mod, presets, DataError = _builder("train", "build", "presets", threads=args.threads)
    preset = resolve_preset(presets, args.preset, args.set)
    out = args.out or f"train-{geno.hash}-{preset.name}.h5"
    try:
        table = build_mod.build(build_mod.BuildRequest(sp, preset, out, [geno], args.seeds, args.device, args.data,
                                                       quiet=True, mode="standalone", force=args.force))
    except (build_mod.BuildError, DataError, schema.TableError) as exc:
        raise UserError(str(exc)) from None
    sa = table.standalone
    print(f"{geno.canonical} ({sp.name}, id {geno.id}, hash {geno.hash}) at preset {preset.name}:")
    print("epoch   " + " ".join(f"{e:8.2f}" for e in sa.epochs))
    for k, s in enumerate(sa.seeds):
        st = schema.Status(int(sa.status[geno.id, k])).name.lower()
        print(f"seed {int(s)}  " + " ".join(f"{v:8.2f}" for v in sa.valid_ppl[geno.id, k])
              + f"   valid ppl; test {sa.test_ppl[geno.id, k]:.2f} ({st})")
    print(f"wrote {out}")
    return 0
