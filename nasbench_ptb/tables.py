"""Several loaded tables at once, by space: which table and which architecture a key names.

One set of rules for ``api.query``, the CLI and the HTTP server: an id needs a space, a hash is looked up in every
loaded table, a genotype names its space by its node count. :mod:`nasbench_ptb.api` re-exports :class:`Tables`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .errors import ArchNotFoundError, InvalidInputError, SpaceNotLoadedError
from .records import ArchRecord
from .space import Genotype, GenotypeLike, is_hash, is_id, parse, space as get_space

if TYPE_CHECKING:
    from .api import Benchmark


class Tables:
    """Loaded benchmarks by space, with a hash index over all of them: the one place that decides which table
    and which architecture a key names, for ``api.query``, the CLI and the HTTP server alike.

    ``benches``: benchmarks, or a mapping space -> a function that loads it (loaded on first use)."""

    def __init__(self, benches: Sequence[Benchmark] | dict):
        self._loaders = dict(benches) if isinstance(benches, dict) else {b.space.name: (lambda b=b: b) for b in benches}
        self._loaded: dict[str, Benchmark] = {}
        self._by_hash: dict[str, str] | None = None

    @property
    def spaces(self) -> list[str]:
        """The loaded spaces, smallest first."""
        return sorted(self._loaders, key=lambda n: get_space(n).n)

    def bench(self, space: str) -> Benchmark:
        """The table of a space; :class:`TableError` naming the loaded spaces when there is none.

        Raises:
            SpaceNotLoadedError: no loaded table holds that space.
        """
        name = get_space(space).name
        if name not in self._loaders:
            raise SpaceNotLoadedError(f"no table for space {name} (loaded: {', '.join(self.spaces) or 'none'})")
        if name not in self._loaded:
            self._loaded[name] = self._loaders[name]()
        return self._loaded[name]

    def resolve(self, key: GenotypeLike | int, space: str | None = None) -> tuple[Benchmark, int]:
        """(table, id) of a key: an id needs ``space``; a hash is looked up in every table (or in ``space``'s);
        a genotype names its space by its node count. Unknown: :class:`ArchNotFoundError`; malformed:
        ``ValueError``; no table for the space: :class:`TableError`.

        Raises:
            ArchNotFoundError: the key names no architecture of this table (InvalidInputError, a ValueError, where it
                is malformed).
        """
        if space is not None:
            bench = self.bench(space)
            return bench, bench.resolve(key)
        if is_id(key):
            raise InvalidInputError(f"id {key} needs a space (space='2node' in Python, --space on the command line)")
        if is_hash(key):
            if self._by_hash is None:
                self._by_hash = {g.hash: n for n in self._loaders for g in get_space(n)}
            if key not in self._by_hash:
                raise ArchNotFoundError(key, "/".join(self.spaces) + " (the loaded tables)")
            bench = self.bench(self._by_hash[key])
            return bench, bench.resolve(key)
        geno = key if isinstance(key, Genotype) else parse(key)  # ValueError when malformed
        bench = self.bench(f"{geno.n}node")
        return bench, bench.resolve(geno)

    def query(self, key: GenotypeLike | int, space: str | None = None, seed: int | None = None,
              curves: bool = True, epoch: float | None = None) -> ArchRecord:
        """The record of ``key`` (genotype, hash, or id with ``space``) in the loaded tables, as
        :meth:`Benchmark.query`. Raises: the kinds of :meth:`resolve`, and :class:`errors.PartNotFoundError` /
        :class:`errors.FidelityError` for a seed or epoch the table lacks."""
        bench, arch = self.resolve(key, space)
        return bench.query(arch, seed, curves, epoch)
