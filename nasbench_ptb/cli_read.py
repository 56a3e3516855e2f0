"""The commands that read one table: ``info`` (a summary: coverage, fidelity, weight sharing, the best cells and
iso classes) and ``query`` (one architecture's record)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from . import schema, stats, summary
from .cli_base import UserError


def _num(x: float) -> str:
    """A perplexity: one decimal, or three significant digits once a blow-up makes it huge."""
    return f"{x:.1f}" if abs(x) < 1e6 else f"{x:.3g}"


def _fmt_range(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    return f"{_num(v.min())} .. {_num(v.max())} (median {_num(np.median(v))})" if v.size else "n/a"


def _pm(mean: float, std: float) -> str:
    """``mean ± std``; the mean alone when there is no spread to report (one seed), ``n/a`` without a mean."""
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.2f} ± {std:.2f}" if np.isfinite(std) else f"{mean:.2f}"


def _signed(value: float) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:+.3f}"


def cmd_info(args) -> int:
    """``nasbench_ptb info``: a table's configuration, coverage, rankings and weight sharing in words."""
    from .analyses import by_epoch
    from .proxy_analyses import agreement_lines, proxy_summary

    if args.top < 0:
        raise UserError(f"--top must be ≥ 0, got {args.top}")
    if args.min_n < 1:
        raise UserError(f"--min-n must be ≥ 1, got {args.min_n}")
    try:
        table = schema.read(args.table)
        reference = schema.read(args.reference) if args.reference else None
        epochs = by_epoch(table, reference) if table.standalone is not None else []
        zc = proxy_summary(table, reference)
    except (schema.TableError, ValueError) as exc:
        raise UserError(str(exc)) from None
    cov = summary.coverage(table)
    top = summary.best(table, args.top, args.min_n) if table.standalone is not None else []
    iso = summary.iso_classes(table, args.min_n)[: args.top] if args.by_iso and table.standalone is not None else []
    iso = [c for c in iso if c.rank is not None]
    taus = summary.ws_vs_standalone_tau(table)
    seed_taus = summary.seed_taus(table)
    sharing = summary.sharing(table)
    if args.json:
        print(json.dumps({"space": table.space.name, "preset": table.preset, "config": table.config,
                          "coverage": vars(cov), "best": top, "min_n": args.min_n,
                          **({"best_iso_classes": [vars(c) for c in iso]} if args.by_iso else {}), "ws_tau_b": [vars(t) for t in taus],
                          "standalone_seed_tau_b": seed_taus, "amount_of_sharing": sharing,
                          "by_epoch": [vars(r) for r in epochs], "proxies_vs_standalone": zc and dataclasses.asdict(zc), **table.attrs},
                         indent=2, default=str))
        return 0
    cfg = table.config
    print(f"table      {args.table}")
    print(f"space      {table.space.name} ({table.space.size} architectures)")
    print(f"preset     {table.preset}: hidden {cfg.get('hidden')}, batch {cfg.get('batch_size')}, lr {cfg.get('lr')}")
    sa = table.standalone
    if sa is not None:
        print(f"standalone epochs {cfg.get('epochs')}, {len(sa.epochs)} checkpoints, seeds {list(map(int, sa.seeds))}")
        print(f"coverage   {cov.ok}/{cov.runs} runs ok, {cov.diverged} diverged, {cov.missing} missing"
              + (f", {cov.rolled_back} rolled back to their best checkpoint" if cov.rolled_back else "") + "; "
              f"{cov.archs_with_ok_run}/{table.space.size} architectures with a result"
              + (" (full)" if cov.full else " (partial)"))
        print(f"valid ppl  final checkpoint over ok runs: {_fmt_range(stats.final_valid(table))}")
        ok_test = np.where(sa.status == schema.Status.OK, sa.test_ppl, np.nan)
        print(f"test ppl   at best checkpoint: {_fmt_range(ok_test)}")
        for row in seed_taus:
            where = f"the sample of {row['sample']['n']} (seed {row['sample']['seed']})" if row["sample"] else "all"
            print(f"seeds      {row['pair']} on {where}: Kendall tau-b = {row['tau']:+.3f} over {row['archs']} "
                  "architectures trained with both")
    else:
        print("standalone (not in this table)")
    ws = table.ws
    if ws is not None:
        ok = int((ws.status == schema.Status.OK).sum())
        print(f"ws         epochs {cfg.get('ws_epochs')}, {len(ws.epochs)} checkpoints, {ok}/{len(ws.seeds)} "
              f"super-nets ok, final valid ppl over architectures of those: "
              f"{_fmt_range(ws.valid_ppl[ws.status == schema.Status.OK, -1])}")
        for t in taus:
            state = schema.Status(t.status).name.lower()
            rolled, since = "", t.weights_from(ws.epochs)
            if t.rollback_epochs:
                n = len(t.rollback_epochs)
                rolled = (f"; {n} rollback{'s' if n > 1 else ''}, in the intervals to epochs "
                          + ", ".join(f"{e:g}" for e in t.rollback_epochs))
            if since is not None and t.status == schema.Status.OK:
                rolled += f": its final weights are from epoch {since:g} or before"
            if not np.isfinite(t.tau):
                print(f"  ws seed {t.seed}: no final ranking to compare ({state}{rolled})")
                continue
            print(f"  ws seed {t.seed}: Kendall tau-b vs standalone = {t.tau:+.3f} (p = {t.pvalue:.3g}, "
                  f"{t.archs} architectures, {state}{rolled})")
    if sharing is not None:
        print(f"ws subspace {len(sharing['ids'])} architectures (ids {','.join(map(str, sharing['ids']))}), "
              f"{sharing['ok']}/{len(sharing['seeds'])} super-nets ok sharing weights among them only")
        for row in sharing["taus"]:
            print(f"  ws seed {row['seed']}: Kendall tau-b vs standalone on the subspace = "
                  f"{_signed(row['subspace_only'])} (subspace-only sharing), {_signed(row['whole_space'])} "
                  "(whole-space sharing)")
    if epochs:
        print("by epoch   tau-b of each checkpoint's ranking vs the final one" + (" and vs --reference" if reference
              else "") + "; seed-to-seed tau-b; top-5 overlap with the final top 5; tau-b among the final best "
              "quarter; tau-b of each super-net (at its last checkpoint by then) vs standalone then")
        print("  epoch  vs final" + ("  vs ref" if reference else "") + "  seeds  top-5  best 1/4  ws")
        for r in epochs:
            print(f"  {r.epoch:5.2f}  {_signed(r.tau_final):>8}" + (f"  {_signed(r.tau_reference):>6}" if reference
                  else "") + f"  {_signed(r.seed_tau):>5}  {r.top5_overlap:5.1f}  {_signed(r.tau_top_quarter):>8}  "
                  + " ".join(_signed(t) for t in r.ws_tau))
    if zc:
        print("proxies    zero-cost proxies at initialisation vs the standalone ranking (higher proxy = better; "
              f"seeds {zc.seeds}, {zc.total_seconds:.0f} s on {zc.device or '?'}):")
        print("\n".join("  " + line for line in agreement_lines(zc.final, zc.seconds)))
        if zc.reference:
            print(f"  vs --reference ({reference.preset}): "
                  + ", ".join(f"{r.proxy} {_signed(r.tau_b)}" for r in zc.reference))
        if len(zc.epochs) > 1:
            print("  tau-b of each proxy vs the standalone ranking at each checkpoint:")
            print("  epoch  " + " ".join(f"{n:>10}" for n in zc.by_epoch))
            for k, e in enumerate(zc.epochs):
                print(f"  {e:5.2f}  " + " ".join(f"{_signed(taus[k]):>10}" for taus in zc.by_epoch.values()))
    for key in ("device", "timings", "software", "created"):
        if key in table.attrs:
            value = table.attrs[key]
            print(f"{key:<10} {value if isinstance(value, str) else json.dumps(value)}")
    at_least = f" among cells with at least {args.min_n} ok seeds" if args.min_n > 1 else ""
    if top:
        print(f"best {len(top)} by mean final validation ppl{at_least}:")
        for r in top:
            print(f"  {r['id']:>5}  {r['genotype']:<40} valid {r['valid_ppl']:8.2f}  test {r['test_ppl']:8.2f}  "
                  f"seeds ok {r['seeds_ok']}  hash {r['hash']}")
    if iso:
        print(f"best {len(iso)} iso classes by pooled final validation ppl (the renumbered twins of one function "
              f"as replicates; n = ok runs{', at least ' + str(args.min_n) if args.min_n > 1 else ''}):")
        for c in iso:
            twins = f"{c.genotypes[0]} (+{len(c.ids) - 1} twin{'s' if len(c.ids) > 2 else ''})" if len(c.ids) > 1 \
                else c.genotypes[0]
            print(f"  {c.rank:>4}  {twins:<40} valid {_pm(c.valid_ppl, c.valid_ppl_std):>15} (n = {c.n})  test "
                  f"{c.test_ppl:8.2f}  iso {c.iso_hash}")
    return 0


def cmd_query(args) -> int:
    """``nasbench_ptb query``: one architecture's record."""
    from . import api

    try:
        text = args.arch.strip()
        key = int(text) if text.lstrip("-").isdecimal() and text.isascii() else args.arch  # -3: an id, as in Python
        if args.table:
            bench = api.load(args.table)
            if args.space and api.get_space(args.space).name != bench.space.name:
                raise UserError(f"--space {args.space} but {args.table} is a {bench.space.name} table")
            rec = api.Tables([bench]).query(key, bench.space.name, args.seed, epoch=args.epoch)  # an id needs no --space
        else:
            rec = api.query(key, space=args.space, seed=args.seed, epoch=args.epoch)
    except (ValueError, api.TableError) as exc:
        raise UserError(str(exc)) from None
    except KeyError as exc:
        raise UserError(str(exc) if isinstance(exc, api.ArchNotFoundError) else exc.args[0]) from None
    if args.json:
        print(json.dumps(rec.to_dict(), indent=2))
        return 0
    print(f"{rec.genotype}  (space {rec.space}, id {rec.id}, hash {rec.hash}, iso {rec.iso_hash}, {rec.params} params)")
    sa = rec.standalone
    if args.epoch is not None and sa is not None and sa.seeds and sa.seeds[0].curve is not None:
        print(f"as after {sa.seeds[0].curve.epochs[-1]:.2f} epochs (the last checkpoint at or before {args.epoch:g}; "
              "test ppl only where that is the checkpoint the run was tested at)")
    if sa is not None:
        print(f"standalone  {sa.status}: valid ppl {_pm(sa.valid_ppl, sa.valid_ppl_std)}, test ppl "
              f"{_pm(sa.test_ppl, sa.test_ppl_std)} (n = {sa.n_seeds} seed{'s' if sa.n_seeds != 1 else ''}); "
              f"rank {sa.rank if sa.rank is not None else '– (no run)'}"
              + (f"; missing seeds {list(sa.missing_seeds)}" if sa.missing_seeds else "")
              + (f"; diverged seeds {list(sa.diverged_seeds)}" if sa.diverged_seeds else ""))
        for r in sa.seeds:
            print(f"  seed {r.seed}: {r.status}, final valid {r.final_valid_ppl:.2f}, test {r.test_ppl:.2f}, "
                  f"best epoch {r.best_epoch:.2f}")
    for label, group in (("ws seed", rec.ws), ("ws subspace seed", rec.ws_subspace)):
        for w in group:
            print(f"{label} {w.seed} ({w.status}): final valid ppl {w.final_valid_ppl:.2f}, test {w.test_ppl:.2f}, "
                  f"rank {w.rank}, sampled {w.samples}x")
    if rec.proxies:
        print("proxies at initialisation (mean of n seeds; rank 1 = highest):")
        for z in rec.proxies:
            print(f"  {z.name:<11} {z.mean:14.6g} (n = {z.n})  rank {z.rank if z.rank is not None else '–'}")
    return 0
