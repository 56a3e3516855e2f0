"""``nasbench_ptb report``: one PNG per analysis and a Markdown report with the tables (matplotlib: extra ``plot``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import analyses as an
from .evaluate import applicable_policies, evaluate, evaluate_real, format_table, real_best, trajectory_ranks
from . import schema, summary
from .schema import Table
from .search_results import SearchResults
from .space import OPS, parse


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("report needs matplotlib: pip install 'nasbench-ptb[plot]'") from None
    return plt


def _signed(value: float) -> str:
    """A tau with its sign; "–" where there is none (a diverged super-net, a constant ranking)."""
    return "–" if value is None or not np.isfinite(value) else f"{value:+.3f}"


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def write_report(table: Table, out: Path, runs: int = 10, title: str = "", real: SearchResults | None = None,
                 reference: Table | None = None) -> Path:
    """Write the figures and ``report.md`` into ``out``; returns the Markdown path. ``real``: the real searches
    of a search-results file, judged beside the simulated policies, with their trajectories (Fig. 3).
    ``reference``: another table of the space (e.g. the 1-epoch one) each epoch's ranking is compared with."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# nasbench-ptb report: {table.space.name} / {table.preset}{title}", ""]
    sa_final = an.standalone_final(table)
    mask = an.attempted(table)

    ev = evaluate(table, applicable_policies(table), runs)
    ev += evaluate_real(table, real) if real is not None else []
    md += [f"## Search policies ({runs} runs each, budget 10 standalone queries)", "", format_table(ev, real_best(table)), ""]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.barh([r.policy for r in ev], [r.valid_mean for r in ev], xerr=[r.valid_std for r in ev], color="tab:blue")
    ax.axvline(real_best(table)["valid"], color="k", ls="--", label="REAL-BEST")
    ax.set_xlabel("validation ppl of the chosen architecture (standalone)")
    ax.set_xlim(left=np.nanmin([r.valid_best for r in ev]) * 0.98)
    ax.legend()
    md += [f"![policies]({_save(fig, out / 'policies.png')})", ""]
    plt.close(fig)

    md += _trajectories(plt, table, real, out) if real is not None else []
    if table.ws is not None:
        t = an.ws_tau_over_training(table)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(t.epochs, t.best, "g-o", label="best seed")
        ax.plot(t.epochs, t.mean, "b-o", label="mean")
        ax.plot(t.epochs, t.worst, "r-o", label="worst seed")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel="super-net epoch", ylabel="Kendall tau-b vs standalone", ylim=(-1, 1))
        ax.legend()
        md += ["## Weight sharing vs standalone ranking (Fig. 4b)", "",
               f"![tau over training]({_save(fig, out / 'ws_tau_over_training.png')})", "",
               "| WS seed | tau-b (final) | Spearman | top-5 overlap | legacy id-sequence tau (paper's code) "
               "| rolled back in the intervals to epochs |", "|---|---|---|---|---|---|"]
        plt.close(fig)
        for k, (s, row) in enumerate(zip(table.ws.seeds, summary.ws_vs_standalone_tau(table))):
            v = table.ws.valid_ppl[k, -1][mask]
            rolled, since = ", ".join(f"{e:g}" for e in row.rollback_epochs) or "–", row.weights_from(table.ws.epochs)
            if since is not None and table.ws.status[k] == schema.Status.OK:
                rolled += f" (final weights from epoch ≤ {since:g})"
            if table.ws.status[k] != schema.Status.OK:  # no final ranking: say so, not NaN-derived figures
                md.append(f"| {int(s)} | diverged | – | – | – | {rolled} |")
                continue
            md.append(f"| {int(s)} | {t.tau[k, -1]:+.3f} | {t.spearman[k, -1]:+.3f} | "
                      f"{an.top_k_overlap(v, sa_final[mask], 5):.2f} | {an.legacy_id_sequence_tau(v, sa_final[mask]):+.3f} "
                      f"| {rolled} |")
        ids, sa_rank, ws_rank = an.rank_disorder(table)
        fig, ax = plt.subplots(figsize=(4.2, 4))
        for k in np.flatnonzero(np.isfinite(ws_rank).all(axis=1)):  # the super-nets with a final ranking
            ax.scatter(sa_rank, ws_rank[k], s=14, alpha=0.7, label=f"WS seed {int(table.ws.seeds[k])}")
        ax.plot([1, len(ids)], [1, len(ids)], "k--", lw=0.8)
        ax.set(xlabel="standalone rank", ylabel="rank under shared weights")
        ax.legend(fontsize=7)
        md += ["", "## Rank disorder (Fig. 4a/4c)", "",
               f"![rank disorder]({_save(fig, out / 'rank_disorder.png')})", "",
               "Mean absolute rank change standalone → WS: "
               + (f"{np.nanmean(np.abs(ws_rank - sa_rank[None])):.1f} of {len(ids)} architectures (over the "
                  f"{int(np.isfinite(ws_rank).all(axis=1).sum())} super-nets with a final ranking)."
                  if np.isfinite(ws_rank).any() else "none: every super-net diverged."), ""]
        plt.close(fig)
    md += _sharing_amount(table, mask)  # with or without whole-space super-nets
    md += _proxies(plt, table, reference, out)
    md += _by_epoch(plt, table, reference, out)

    seeds = an.seed_agreement(table)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    order = np.argsort(an.worst_last(sa_final[mask]))
    ax.bar(np.arange(len(order)), seeds["std"][order], color="tab:gray")
    ax.set(xlabel="architecture (by standalone rank)", ylabel="std of final valid ppl over seeds")
    md += ["## Seed variance", "", f"![seed variance]({_save(fig, out / 'seed_variance.png')})", "",
           "Kendall tau-b between the rankings of two seeds: standalone "
           + ", ".join(f"{k}: {_signed(v)}" for k, v in seeds["standalone_seed_tau"].items())
           + (("; WS " + ", ".join(f"{k}: {_signed(v)}" for k, v in seeds["ws_seed_tau"].items()))
              if seeds["ws_seed_tau"] else ""),
           ""]
    plt.close(fig)

    twins = an.iso_twins(table)
    if twins:
        diffs = np.array([abs(a - b) for _, _, a, b in twins if np.isfinite(a) and np.isfinite(b)])
        md += ["## Iso twins (the same cell up to node renumbering)", "",
               f"{len(twins)} pairs; |Δ valid ppl| mean {diffs.mean():.2f}, max {diffs.max():.2f} "
               f"(the noise floor of a single comparison).", ""]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


def _sharing_amount(table, mask: np.ndarray) -> list[str]:
    """Fig. 6: the subspace of ``/ws_subspace`` (else, in a 3-node table, DARTS's first two nodes with node 3
    free) ranked by super-nets that shared weights among the whole space and among the subspace only."""
    if table.ws_subspace is not None:
        ids = table.ws_subspace.archs
    elif table.space.n == 3 and table.ws is not None:
        ids = np.array([parse(f"sigmoid:0|relu:1|{o}:{p}").id for p in range(3) for o in OPS])
    else:
        return []
    if not mask[ids].all():
        return []
    amount = an.sharing_amount(table, ids)
    return ([f"## Amount of sharing (Fig. 6): {len(ids)} architectures (ids {', '.join(map(str, ids))})", "",
             "Kendall tau-b of each super-net's ranking of the subspace against standalone training, with the "
             "weights shared among the whole space and among the subspace only.", "",
             "| WS seed | whole-space sharing | subspace-only sharing |", "|---|---|---|"]
            + [f"| {int(s)} | {_signed(w)} | {_signed(v)} |" for s, w, v in zip(amount.seeds, amount.whole, amount.subspace)]
            + [""])


def _trajectories(plt, table: Table, real: SearchResults, out: Path) -> list[str]:
    """Fig. 3: the standalone rank of the architecture each real search would return, per search epoch."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    rows = ["| algorithm | seeds | rank of the choice at each search epoch (mean over seeds) |", "|---|---|---|"]
    for k, (algo, s) in enumerate(sorted(real.searches.items())):
        ranks = trajectory_ranks(table, s)
        color = f"C{k}"
        for r in ranks:
            ax.plot(s.epochs, r, color=color, alpha=0.25, lw=0.8)
        mean = np.nanmean(ranks, axis=0)
        ax.plot(s.epochs, mean, "-o", color=color, label=algo, ms=3)
        rows.append(f"| {algo} | {len(s.seeds)} | " + " ".join(f"{v:.1f}" for v in mean) + " |")
    ax.set(xlabel="search epoch (super-net training)", ylabel="standalone rank of the current choice",
           ylim=(table.space.size + 1, 0))
    ax.legend(fontsize=7)
    return ([f"## Real search phases over search epochs (Fig. 3; {real.preset} preset)", "",
             f"![search trajectories]({_save(fig, out / 'search_trajectories.png')})", ""] + rows + [""])


def _by_epoch(plt, table: Table, reference: Table | None, out: Path) -> list[str]:
    """Fig. 8 and the fidelity table: at every standalone checkpoint, its ranking against the final one (and a
    reference table's), seed agreement, the top of the ranking, and each super-net against standalone then
    (Fig. 4 at each fidelity)."""
    rows = an.by_epoch(table, reference)
    e = [r.epoch for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(e, [r.tau_final for r in rows], "k-o", label="vs final standalone ranking (Fig. 8)")
    ax.plot(e, [r.seed_tau for r in rows], "-s", color="tab:gray", label="seed vs seed")
    if reference is not None:
        ax.plot(e, [r.tau_reference for r in rows], "-^", color="tab:orange", label=f"vs {reference.preset} table")
    if rows and rows[0].ws_tau:
        ax.plot(e, [np.nanmean(r.ws_tau) if np.isfinite(r.ws_tau).any() else np.nan for r in rows], "-o",
                color="tab:blue", label="WS vs standalone then (mean over super-nets)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="epoch", ylabel="Kendall tau-b", ylim=(-1, 1.05))
    if len(e) > 1 and e[-1] / e[0] > 20:
        ax.set_xscale("log")
    ax.legend(fontsize=7)
    md = ["## Rankings over training: epochs as a fidelity (Fig. 8, Fig. 4 at each epoch)", "",
          f"![by epoch]({_save(fig, out / 'standalone_rank_changes.png')})", "",
          "| epoch | tau-b vs final | " + (f"vs {reference.preset} table | " if reference is not None else "")
          + "seed vs seed | top-5 overlap | tau-b, final best quarter | WS vs standalone (per super-net) |",
          "|---|---|" + ("---|" if reference is not None else "") + "---|---|---|---|"]
    plt.close(fig)
    for r in rows:
        md.append(f"| {r.epoch:.2f} | {_signed(r.tau_final)} | " + (f"{_signed(r.tau_reference)} | " if reference
                  is not None else "") + f"{_signed(r.seed_tau)} | {r.top5_overlap:.2f} | {_signed(r.tau_top_quarter)} | "
                  + (", ".join(_signed(t) for t in r.ws_tau) or "–") + " |")
    return md + [""]


def _proxies(plt, table: Table, reference: Table | None, out: Path) -> list[str]:
    """The zero-cost proxies against the standalone ranking: a table of agreement (and against the reference
    table's ranking), and each proxy's tau-b at every standalone checkpoint."""
    from .proxy_analyses import proxy_summary

    zc = proxy_summary(table, reference)
    if zc is None:
        return []
    secs = zc.seconds
    ref = {r.proxy: r.tau_b for r in zc.reference}
    md = ["## Zero-cost proxies vs standalone training", "",
          f"Each proxy at initialisation (seeds {', '.join(map(str, zc.seeds))}; "
          f"{zc.total_seconds:.0f} s in all on {zc.device or '?'}), its seed mean "
          "against the mean final validation ppl (higher proxy = predicted better).", "",
          "| proxy | seconds | tau-b | Spearman | top-10 % overlap | seed-to-seed tau-b | n |"
          + (f" tau-b vs {reference.preset} table |" if reference is not None else ""),
          "|---|---|---|---|---|---|---|" + ("---|" if reference is not None else "")]
    for r in zc.final:
        md.append(f"| {r.proxy} | {secs[r.proxy]:.1f} | " if r.proxy in secs else f"| {r.proxy} | – | ")
        md[-1] += (f"{_signed(r.tau_b)} | {_signed(r.spearman)} | {'–' if not np.isfinite(r.top_overlap) else f'{r.top_overlap:.2f}'}"
                   f" | {_signed(r.seed_tau)} | {r.n} |" + (f" {_signed(ref.get(r.proxy, np.nan))} |" if ref else ""))
    if len(zc.epochs) > 1:
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for name, taus in zc.by_epoch.items():
            ax.plot(zc.epochs, taus, "-o", ms=3, label=name)
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel="standalone epoch", ylabel="Kendall tau-b vs standalone then", ylim=(-1, 1))
        ax.legend(fontsize=7, ncol=2)
        md += ["", f"![proxies by epoch]({_save(fig, out / 'proxies_by_epoch.png')})"]
        plt.close(fig)
    return md + [""]
