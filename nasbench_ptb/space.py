"""Search spaces and genotypes of reduced DARTS recurrent cells (ARCHITECTURE.md §2).

A space has ``n`` intermediate nodes; node ``k`` (1..n) picks one predecessor ``p < k`` (0 is ``s0``) and one
activation from :data:`OPS`. This module owns the genotype conventions shared by the builder, the query library
and the HTTP API: canonical strings, the paper's integer ids, hashes and isomorphism hashes.
"""
from __future__ import annotations

import ast
import hashlib
import math
import numbers
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, Sequence, Union

from .errors import InvalidInputError

OPS: tuple[str, ...] = ("tanh", "relu", "sigmoid", "identity")
"""Activation names; their order defines the ids and must never change."""

GenotypeLike = Union["Genotype", str, Sequence[Sequence[object]]]


def _sha16(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


HASH_PATTERN = r"^[0-9a-f]{16}$"
"""A hash is exactly 16 lowercase hex digits; any other string is read as a genotype (Python, CLI and HTTP alike)."""
_HASH = re.compile(HASH_PATTERN)


def is_id(key: object) -> bool:
    """An architecture id: an integer (not a bool); it only means something within a space."""
    return isinstance(key, numbers.Integral) and not isinstance(key, bool)


def is_hash(key: object) -> bool:
    """Whether ``key`` is written as an architecture hash (exactly 16 lowercase hex digits)."""
    return isinstance(key, str) and _HASH.match(key) is not None


def id_of_choices(choices):
    """The paper's id of local choices: ``id = id·4k + (4·pred_k + op_k)`` accumulated from node 1, i.e. node k's
    choice is a digit in base ``4k``. ``choices[k-1]`` is node k's choice: ints give an int; arrays (numpy or
    torch, ``[n, count]``, e.g. ``sampled.T``) give the ids of a whole batch — the one definition of the id."""
    value = 0
    for k, c in enumerate(choices, start=1):
        value = value * 4 * k + c
    return value


@dataclass(frozen=True)
class Genotype:
    """One cell: ``nodes[k-1] = (op, pred)`` for node k. Validated on construction."""

    nodes: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        if not self.nodes:
            raise InvalidInputError("genotype has no nodes")
        for k, node in enumerate(self.nodes, start=1):
            if len(node) != 2:
                raise InvalidInputError(f"node {k}: expected (op, pred), got {node!r}")
            op, pred = node
            if op not in OPS:
                raise InvalidInputError(f"node {k}: unknown op {op!r} (known: {', '.join(OPS)})")
            if isinstance(pred, bool) or not isinstance(pred, int):
                raise InvalidInputError(f"node {k}: predecessor must be an integer, got {pred!r}")
            if not 0 <= pred < k:
                raise InvalidInputError(f"node {k}: predecessor {pred} is not an earlier node (allowed 0..{k - 1})")

    @property
    def n(self) -> int:
        """Intermediate nodes of the cell."""
        return len(self.nodes)

    @property
    def ops(self) -> tuple[int, ...]:
        """Activation index per node."""
        return tuple(OPS.index(op) for op, _ in self.nodes)

    @property
    def preds(self) -> tuple[int, ...]:
        """Each node's predecessor (0 = the first state s0, from x_t and h_{t-1}; k = node k)."""
        return tuple(p for _, p in self.nodes)

    @cached_property
    def canonical(self) -> str:
        """``op:pred|op:pred…`` — the one string every layer uses."""
        return "|".join(f"{op}:{pred}" for op, pred in self.nodes)

    @property
    def choices(self) -> tuple[int, ...]:
        """Node k's local choice ``4·pred + op``: the digits of the id (what searchers sample per node)."""
        return tuple(4 * pred + OPS.index(op) for op, pred in self.nodes)

    @classmethod
    def of_choices(cls, choices: Sequence[int]) -> "Genotype":
        """The genotype of local choices (inverse of :attr:`choices`)."""
        return cls(tuple((OPS[int(c) % 4], int(c) // 4) for c in choices))

    @cached_property
    def id(self) -> int:
        """The paper's id (see :func:`id_of_choices`)."""
        return id_of_choices(self.choices)

    @cached_property
    def hash(self) -> str:
        """First 16 hex digits of SHA-256 over the canonical string."""
        return _sha16(self.canonical)

    @cached_property
    def iso_hash(self) -> str:
        """Hash of the cell up to node renumbering (a labelled tree rooted at s0; the output mean is symmetric)."""
        children: dict[int, list[int]] = {k: [] for k in range(self.n + 1)}
        for k, (_, pred) in enumerate(self.nodes, start=1):
            children[pred].append(k)

        def canon(node: int) -> str:
            label = "s0" if node == 0 else self.nodes[node - 1][0]
            return label + "(" + ",".join(sorted(canon(c) for c in children[node])) + ")"

        return _sha16(canon(0))

    def darts_repr(self) -> str:
        """The DARTS ``Genotype(recurrent=…, concat=…)`` form."""
        pairs = ", ".join(f"('{op}', {pred})" for op, pred in self.nodes)
        return f"Genotype(recurrent=[{pairs}], concat=range(1, {self.n + 1}))"

    def __str__(self) -> str:
        return self.canonical


_DARTS_RE = re.compile(r"^\s*Genotype\s*\(\s*recurrent\s*=\s*(\[.*\])\s*(?:,\s*concat\s*=\s*(.*?))?\s*\)\s*$", re.S)
_CONCAT_RE = re.compile(r"^range\(\s*(\d+)\s*,\s*(\d+)\s*\)$")


def _from_pairs(pairs: object, source: str) -> Genotype:
    if not isinstance(pairs, (list, tuple)) or not pairs:
        raise InvalidInputError(f"genotype {source!r}: expected a non-empty list of (op, pred) pairs")
    nodes = []
    for item in pairs:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise InvalidInputError(f"genotype {source!r}: expected (op, pred) pairs, got {item!r}")
        nodes.append((item[0], item[1]))
    return Genotype(tuple(nodes))


def parse(value: GenotypeLike) -> Genotype:
    """Parse a canonical string, a DARTS ``Genotype(...)`` repr or a list of ``(op, pred)`` pairs.

    Raises ValueError naming the problem for anything else.
    """
    if isinstance(value, Genotype):
        return value
    if isinstance(value, (list, tuple)):
        return _from_pairs(list(value), repr(value))
    if not isinstance(value, str):
        raise InvalidInputError(f"cannot parse a genotype from {type(value).__name__} {value!r}")
    text = value.strip()
    if not text:
        raise InvalidInputError("empty genotype string")
    match = _DARTS_RE.match(text)
    if match:
        try:
            pairs = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError) as exc:
            raise InvalidInputError(f"genotype {value!r}: malformed recurrent list ({exc})") from None
        geno = _from_pairs(pairs, value)
        if match.group(2) is not None:
            concat = _CONCAT_RE.match(match.group(2).strip())
            if not concat or (int(concat.group(1)), int(concat.group(2))) != (1, geno.n + 1):
                raise InvalidInputError(
                    f"genotype {value!r}: concat must be range(1, {geno.n + 1}) (the output averages every node)"
                )
        return geno
    nodes = []
    for k, part in enumerate(text.split("|"), start=1):
        op, sep, pred = part.strip().partition(":")
        pred = pred.strip()
        if not sep or not re.fullmatch(r"-?[0-9]{1,9}", pred, re.ASCII):  # ASCII digits only (not ０ or ٣)
            raise InvalidInputError(f"genotype {value!r}: node {k} {part!r} is not of the form op:pred")
        if pred.startswith("-") and int(pred) == 0:
            raise InvalidInputError(f"genotype {value!r}: node {k} {part!r}: a predecessor has no sign (write {op.strip()}:0)")
        nodes.append((op.strip(), int(pred)))
    return Genotype(tuple(nodes))


@dataclass(frozen=True)
class SearchSpace:
    """All cells with ``n`` intermediate nodes; enumerated in id order."""

    n: int

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise InvalidInputError(f"a search space needs at least one node, got {self.n!r}")

    @property
    def name(self) -> str:
        """The space's name, ``<n>node``."""
        return f"{self.n}node"

    @property
    def size(self) -> int:
        """Architectures in the space: n! predecessor choices × 4^n activations."""
        return math.factorial(self.n) * 4**self.n

    def __len__(self) -> int:
        return self.size

    def from_id(self, arch_id: int) -> Genotype:
        """Decode the paper's id (inverse of :attr:`Genotype.id`).

        Raises:
            InvalidInputError: the id is not an integer in 0..size − 1.
        """
        if isinstance(arch_id, bool) or not isinstance(arch_id, int) or not 0 <= arch_id < self.size:
            raise InvalidInputError(f"id {arch_id!r} is out of range for space {self.name} (0..{self.size - 1})")
        nodes = []
        rest = arch_id
        for k in range(self.n, 0, -1):
            rest, slot = divmod(rest, 4 * k)
            nodes.append((OPS[slot % 4], slot // 4))
        return Genotype(tuple(reversed(nodes)))

    def __iter__(self) -> Iterator[Genotype]:
        return (self.from_id(i) for i in range(self.size))

    def parse(self, value: GenotypeLike) -> Genotype:
        """Parse and check that the genotype belongs to this space.

        Raises:
            InvalidInputError: malformed, or a cell of another node count.
        """
        geno = parse(value)
        if geno.n != self.n:
            raise InvalidInputError(f"genotype {geno.canonical!r} has {geno.n} nodes; space {self.name} needs {self.n}")
        return geno


def space(name: str | int) -> SearchSpace:
    """A space by name (``"2node"``, ``"3node"``, any ``"<n>node"``) or node count.

    Raises:
        InvalidInputError: not a space name like ``2node``.
    """
    if isinstance(name, int) and not isinstance(name, bool):
        return SearchSpace(name)
    match = re.fullmatch(r"\s*([0-9]{1,6})\s*node\s*", str(name), re.ASCII)  # ASCII digits, a sane count
    if not match or int(match.group(1)) < 1:
        shown = repr(name) if len(str(name)) <= 40 else repr(str(name)[:20] + "…") + f" ({len(str(name))} characters)"
        raise InvalidInputError(f"unknown search space {shown}; expected a name like '2node' or '3node'")
    return SearchSpace(int(match.group(1)))
