"""Reproducible stratified samples of a search space (which cells get extra seeds, for instance).

A uniform sample of 64 of the 384 3-node cells can miss whole op mixes and repeat iso classes. Here the cells
are grouped by their **op mix** (the multiset of node activations: 20 groups in the 3-node space), each group
gets its share of the sample by largest remainder, and within a group cells are taken in a random order that
takes one cell per **iso class** before a second of any class (isomorphic cells share their op mix). The same (space, size, seed)
always gives the same cells; :class:`Sample` is what a table records about it.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .space import SearchSpace

METHOD = "stratified by op mix, distinct iso classes first"


@dataclass(frozen=True)
class Sample:
    """``n`` architecture ids of ``space`` drawn by :func:`stratified_sample` with ``seed``."""

    space: str
    n: int
    seed: int
    ids: tuple[int, ...]
    method: str = METHOD

    def to_dict(self) -> dict:
        """The sample as JSON-ready values (what a table's ``samples`` attribute stores)."""
        return {"space": self.space, "n": self.n, "seed": self.seed, "ids": list(self.ids), "method": self.method}


def op_mix(ops: tuple[int, ...]) -> tuple[int, ...]:
    """The multiset of a cell's activations, as sorted op indices."""
    return tuple(sorted(ops))


def _allocate(sizes: list[int], n: int, rng: np.random.RandomState) -> list[int]:
    """Largest-remainder shares of ``n`` proportional to ``sizes`` (ties among remainders broken at random)."""
    total = sum(sizes)
    exact = [n * s / total for s in sizes]
    shares = [int(e) for e in exact]
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - shares[i]), rng.random_sample()))
    for i in order[: n - sum(shares)]:
        shares[i] += 1
    return shares


def stratified_sample(sp: SearchSpace, n: int, seed: int = 0) -> Sample:
    """``n`` distinct architectures of ``sp``, stratified by op mix, distinct iso classes where possible."""
    if not 1 <= n <= sp.size:
        raise ValueError(f"sample size {n} is out of range: the {sp.name} space has {sp.size} architectures")
    rng = np.random.RandomState(seed)
    groups: dict[tuple, list] = defaultdict(list)
    for g in sp:
        groups[op_mix(g.ops)].append(g)
    keys = sorted(groups)
    shares = _allocate([len(groups[k]) for k in keys], n, rng)
    chosen = []
    for key, share in zip(keys, shares):  # isomorphic cells share their op mix, so classes never span groups
        members = [groups[key][i] for i in rng.permutation(len(groups[key]))]
        seen, firsts, rest = set(), [], []
        for g in members:  # the first cell of each iso class in the random order, then the others
            (rest if g.iso_hash in seen else firsts).append(g)
            seen.add(g.iso_hash)
        chosen += (firsts + rest)[:share]
    return Sample(sp.name, n, int(seed), tuple(sorted(g.id for g in chosen)))
