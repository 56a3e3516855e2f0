"""Real search phases on the real super-net: the driver shared by DARTS, ENAS, NAO and random-WS.

Every search trains shared weights with the builder's protocol (:class:`SlotTrainer`, one slot per search seed,
the weight-sharing preset values ``ws_epochs``, ``ws_checkpoints``, ``ws_bptt``, ``hidden_clip``); what differs is
which cell each mini-batch trains (the method's sampler, or DARTS's relaxed cell) and what the method does at each
checkpoint (a search epoch): ENAS trains its controller, NAO its encoder-predictor-decoder, DARTS steps its
architecture weights on every mini-batch instead. At each checkpoint a method names the architecture it would
return then and its own estimate of it; :func:`run` records that trajectory in the search-results format
(``nasbench_ptb.search_results``).
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nasbench_ptb import search_results
from nasbench_ptb.schema import Status, TableError
from nasbench_ptb.search_results import ALGORITHMS, Search, SearchResults
from nasbench_ptb.space import SearchSpace

from . import data, guard
from .engine import SlotGenotypes
from .parts import BuildError
from .presets import Preset
from .trainer import SlotTrainer, batchify, checkpoint_loop, to_ppl
from .ws import ArchSampler, evaluate_all


class Method:
    """What a search method plugs into the driver; each algorithm subclasses it."""

    name: str

    def attach(self, tr: SlotTrainer) -> None:
        """Called once with the shared-weight trainer before training (DARTS hooks its architecture step into it)."""

    def genotypes(self) -> SlotGenotypes:
        """The cells the next mini-batch trains, one per slot (search seed)."""
        raise NotImplementedError

    def checkpoint(self, ctx: "Context", params: dict, live: np.ndarray, last: bool) -> tuple:
        """At a search epoch: ``(choice [A] ids, estimate [A] ppl, switch loss [A], extras {name: [A, ...]})``."""
        raise NotImplementedError


class Context:
    """Data and helpers every method uses: validation splits, the space's genotypes, scoring under shared weights."""

    def __init__(self, corpus, sp: SearchSpace, seeds: Sequence[int], p: Preset, device: torch.device):
        self.sp, self.seeds, self.p, self.device = sp, list(seeds), p, device
        self.valid_tokens = corpus.valid
        self.valid_mid = batchify(corpus.valid[: p.ws_valid_tokens], p.eval_batch_size, device)
        self.valid_final = batchify(corpus.valid[: p.ws_final_valid_tokens], p.eval_batch_size, device)
        self.rngs = [np.random.RandomState(int(s) + 104_729) for s in seeds]  # the methods' own draws
        self.schedule, self.checkpoint = None, 0  # the search epochs (presets.Schedule) and the one now (run sets)

    def interval(self) -> float:
        """Epochs of shared-weight training since the previous search epoch (1.0 before :func:`run` sets one)."""
        if self.schedule is None:
            return 1.0
        at = self.schedule.at
        return at[self.checkpoint] - (at[self.checkpoint - 1] if self.checkpoint else 0.0)

    def valid(self, last: bool) -> torch.Tensor:
        """The validation data a search epoch scores on: the whole split at the last one, the prefix before."""
        return self.valid_final if last else self.valid_mid

    def score(self, params: dict, slot: int, ids: Sequence[int], data: torch.Tensor) -> np.ndarray:
        """Validation ppl of architectures ``ids`` under slot ``slot``'s shared weights (inf where not finite)."""
        genos = SlotGenotypes.of([self.sp.from_id(int(i)) for i in ids], self.device)
        ppl = to_ppl(evaluate_all(params, slot, genos, data, self.p.bptt, amp=self.p.amp), np.ones(len(ids), bool))
        return np.where(np.isfinite(ppl), ppl, np.inf)

    def best_of(self, params: dict, live: np.ndarray, candidates: list, last: bool) -> tuple:
        """Per live slot, the best of its ``candidates[slot]`` under its shared weights: (ids, ppl, switch loss)."""
        A = len(self.seeds)
        choice, est = np.zeros(A, dtype=np.int64), np.full(A, np.nan)
        for s in np.flatnonzero(live):
            ids = np.unique(np.asarray(candidates[s], dtype=np.int64))
            ppl = self.score(params, s, ids, self.valid(last))
            k = int(np.argmin(ppl))
            choice[s], est[s] = ids[k], ppl[k]
        return choice, est, np.log(np.where(np.isfinite(est), est, np.inf))


class RandomWS(Method):
    """Li & Talwalkar: super-net trained with uniformly sampled cells; at each search epoch the best of
    ``candidates`` random architectures (distinct, drawn anew) under the shared weights."""

    name = "random_ws"

    def __init__(self, ctx: Context, candidates: int | None = None):
        N = ctx.sp.size
        self.k = min(N, candidates if candidates else max(1, N // 4))
        if self.k < 1:
            raise ValueError(f"random_ws needs at least 1 candidate, got {candidates}")
        self.sampler = ArchSampler(ctx.sp, ctx.seeds, ctx.device)
        self.options = {"candidates": self.k}

    def genotypes(self) -> SlotGenotypes:
        """Uniformly random cells, one per slot (the plain super-net)."""
        return self.sampler.genotypes()

    def checkpoint(self, ctx: Context, params: dict, live: np.ndarray, last: bool) -> tuple:
        """The best of ``candidates`` fresh random cells under the shared weights."""
        cands = [rng.choice(ctx.sp.size, self.k, replace=False) for rng in ctx.rngs]
        return (*ctx.best_of(params, live, cands, last), {})


def methods() -> dict[str, type[Method]]:
    """Algorithm name -> method class, for every name of the registry ``search_results.ALGORITHMS`` (the
    methods' modules are imported here: they import this driver)."""
    from . import darts, enas, nao

    classes = {m.name: m for m in (darts.Darts, enas.Enas, nao.Nao, RandomWS)}
    if list(classes) != list(ALGORITHMS):
        raise RuntimeError(f"search methods {list(classes)} differ from the registry {list(ALGORITHMS)}")
    return classes


def make(algo: str, ctx: Context, options: dict) -> Method:
    """The method of ``algo`` with its options; an unknown algorithm or option raises ValueError naming it."""
    known = methods()
    if algo not in known:
        raise ValueError(f"unknown search algorithm {algo!r} (known: {', '.join(ALGORITHMS)})")
    return known[algo](ctx, **options)


def run(algo: str, corpus, sp: SearchSpace, seeds: Sequence[int], p: Preset, device: torch.device | str = "cpu",
        options: dict | None = None, on_batch=None) -> Search:
    """Run ``len(seeds)`` searches of ``algo`` together (one slot each) and return their trajectories."""
    device = torch.device(device)
    ctx = Context(corpus, sp, seeds, p, device)
    method = make(algo, ctx, dict(options or {}))
    tr = SlotTrainer(corpus, seeds, sp.n, p, device, p.ws_bptt, p.hidden_clip)
    method.attach(tr)
    schedule = p.schedule("ws")
    A, C = len(seeds), len(schedule)
    choice, estimate = np.zeros((A, C), dtype=np.int64), np.full((A, C), np.nan)
    extras: dict[str, list] = {}

    ctx.schedule = schedule

    def validate(c: int, params: dict, live: np.ndarray) -> np.ndarray:
        ctx.checkpoint = c
        ch, est, switch, ex = method.checkpoint(ctx, params, live, c == C - 1)
        tr.kill(live & ~np.isfinite(est))  # a search whose super-net no longer scores anything has diverged
        choice[:, c], estimate[:, c] = ch, est
        for name, value in ex.items():
            extras.setdefault(name, []).append(np.array(value, copy=True))  # never a view of live state
        return switch

    prog = checkpoint_loop(tr, schedule, method.genotypes, validate, p.ws_asgd, on_batch)
    live = tr.alive.cpu().numpy()
    estimate[~live] = np.nan
    status = np.where(live, Status.OK, Status.DIVERGED).astype(np.int8)
    extra = {name: np.stack(v, axis=1) for name, v in extras.items()}  # [A, C, ...]
    return Search(algo, np.asarray(seeds, dtype=np.int64), prog.epochs, choice, estimate, prog.seconds,
                  choice[:, -1].copy(), status, options=getattr(method, "options", {}), extra=extra)


class SearchError(BuildError):
    """A search that cannot run or cannot write its results (one line)."""


def search_file(algos: Sequence[str], sp: SearchSpace, p: Preset, seeds: Sequence[int], out: str | os.PathLike,
                device: str = "auto", data_dir: str | None = None, options: dict | None = None,
                force: bool = False) -> SearchResults:
    """Run each of ``algos`` (``seeds`` searches each, together) and add their groups to the search-results file
    ``out`` (created, or merged into: other algorithms already there are kept, the same algorithm is replaced).

    Nothing is trained before the output, the device, the data and the options have been checked; an existing
    ``out`` that is not a search-results file of the same space and configuration is refused unless ``force``."""
    from .build import resolve_device, software, device_name, table_config

    import tempfile

    out = Path(out)
    try:
        guard.check_path(out)
    except BuildError as exc:
        raise SearchError(str(exc)) from None
    per_algo = options_per_algorithm(algos, options or {})
    dev = resolve_device(device)
    corpus = data.load(data_dir)
    config = table_config(sp, p, corpus.ntokens)
    existing = _existing(out, sp, config, force)
    ctx = Context(corpus, sp, seeds, p, dev)
    for algo in algos:  # bad option values are refused before any training starts
        try:
            make(algo, ctx, per_algo[algo])
        except ValueError as exc:
            raise SearchError(str(exc)) from None
    try:  # the output's folder must exist and take a file before any training: never lose a finished search
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent):
            pass
    except OSError as exc:
        raise SearchError(f"cannot write the output {out}: {exc.strerror or exc}") from None
    with guard.exclusive(out.parent, out, f".{out.name}.lock", error=SearchError):  # held from before training
        searches = {algo: run(algo, corpus, sp, seeds, p, dev, per_algo[algo]) for algo in algos}
        attrs = {"ptb_sha256": data.SHA256, "software": software(), "device": [device_name(dev)],
                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        new = SearchResults(sp, p.name, config, searches, attrs)
        merged = _existing(out, sp, config, force) or existing
        result = merged.merged(new) if merged is not None else new
        try:
            search_results.write(result, out)
        except OSError as exc:
            raise SearchError(f"cannot write {out}: {exc.strerror or exc}") from None
    return result


def options_per_algorithm(algos: Sequence[str], options: dict) -> dict[str, dict]:
    """Split ``options`` among ``algos``: ``name=value`` goes to every algorithm that takes ``name``,
    ``algo.name=value`` to that one; an option no requested algorithm takes is refused, naming what they take."""
    import inspect

    takes = {a: set(list(inspect.signature(methods()[a].__init__).parameters)[2:]) for a in algos}
    out: dict[str, dict] = {a: {} for a in algos}
    for key, value in options.items():
        target, dot, name = key.rpartition(".")
        wanted = [target] if dot else list(algos)
        if dot and target not in takes:
            raise SearchError(f"option {key}: {target!r} is not among the algorithms run ({', '.join(algos)})")
        users = [a for a in wanted if name in takes[a]]
        if not users:
            known = "; ".join(f"{a}: {', '.join(sorted(takes[a])) or 'none'}" for a in wanted)
            raise SearchError(f"unknown option {name!r} (options of {known})")
        for a in users:
            out[a][name] = value
    return out


def _existing(out: Path, sp: SearchSpace, config: dict, force: bool) -> SearchResults | None:
    if not out.exists():
        return None
    try:
        res = search_results.read(out)
    except TableError as exc:
        if force:
            return None
        raise SearchError(f"refusing to overwrite {out}: not a readable search-results file ({exc}); use another "
                          "--out, or --force to replace it") from None
    if res.space.name != sp.name or res.config != config:
        if force:
            return None
        what = "another space" if res.space.name != sp.name else "another training configuration"
        raise SearchError(f"refusing to add to {out}: it holds searches of {res.space.name}/{res.preset}, "
                          f"{what} than this search ({sp.name}); use another --out, or --force to replace it")
    return res
