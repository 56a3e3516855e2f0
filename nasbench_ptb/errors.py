"""The errors a user of nasbench-ptb catches: one base, a few kinds.

``NasbenchError`` is the base of every error this package (and its builder) raises on purpose; each kind also
derives from the builtin an older caller may catch (a malformed genotype is still a ``ValueError``, an unknown
architecture still a ``KeyError``). What each kind means to the HTTP face: :data:`HTTP_STATUS`.

    NasbenchError
    ├── InvalidInputError (ValueError)   malformed input: a genotype, a space name, a metric, an option
    ├── NotFoundError (LookupError)      what the loaded tables do not hold
    │   ├── ArchNotFoundError (KeyError)        an architecture (hash, id, genotype) in a table's space
    │   ├── PartNotFoundError (KeyError)        a table's standalone part, or a standalone seed
    │   └── SuperNetNotFoundError (ValueError)  a WS super-net seed, or a table without super-nets
    ├── FidelityError (ValueError)       an epoch a table cannot answer
    ├── TableError                       a file: missing, truncated, damaged, of another format, not a table
    ├── BudgetExhausted                  a simulated search spent its budget (policies catch it)
    ├── QueryLimitExceeded               a policy asked more questions than any search needs
    └── (builder) BuildError, DataError  a build or search that cannot start or go on; PTB that fails its check
"""
from __future__ import annotations


class NasbenchError(Exception):
    """Base of every error nasbench-ptb raises on purpose."""


class InvalidInputError(NasbenchError, ValueError):
    """Malformed input: a genotype, a space name, a metric, an option value."""


class NotFoundError(NasbenchError, LookupError):
    """Well formed, but not in the loaded tables."""


class ArchNotFoundError(NotFoundError, KeyError):
    """No such architecture (hash, id or genotype) in the space of the table."""

    def __init__(self, key: object, space: str):
        super().__init__(key, space)
        self.key, self.space = key, space

    def __str__(self) -> str:
        return f"no architecture {self.key!r} in space {self.space}"


class PartNotFoundError(NotFoundError, KeyError):
    """The table has no standalone part, or not that standalone seed."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not in this table"


class SuperNetNotFoundError(NotFoundError, ValueError):
    """No super-net with that WS seed, or a table without weight-sharing super-nets."""


class FidelityError(NasbenchError, ValueError):
    """An epoch the table cannot answer (before its first checkpoint, or not a number)."""


class TableError(NasbenchError):
    """A table file is missing, truncated, damaged, of another format version, or not a nasbench-ptb table."""


class SpaceNotLoadedError(NotFoundError, TableError):
    """No table of that space is loaded."""


class BudgetExhausted(NasbenchError):
    """The run has spent its query or time budget."""


class QueryLimitExceeded(NasbenchError):
    """A policy asked more questions in one run than any search needs (re-queries are free, so a policy that
    loops on them would never end); not a budget a policy should catch."""


# The HTTP answer to each kind, for requests the OpenAPI schema already found well formed (so a malformed-looking
# value that passed it, like a genotype whose wiring is no cell, is "not in the tables" too). First match wins.
HTTP_STATUS: tuple[tuple[type[NasbenchError], int], ...] = (
    (NotFoundError, 404), (FidelityError, 404), (InvalidInputError, 404), (TableError, 404),
)


def http_status(exc: NasbenchError) -> int:
    """The status :data:`HTTP_STATUS` gives ``exc`` (500 for a kind it does not list: a bug, not the request)."""
    return next((code for kind, code in HTTP_STATUS if isinstance(exc, kind)), 500)
