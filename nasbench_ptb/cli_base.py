"""What every CLI module shares: the one-line error type and the table a command reads.

Its own module so that ``python -m nasbench_ptb.cli`` (where cli.py runs as ``__main__``) and the command modules
it imports raise and catch the same class."""
from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for; printed as one line."""


def bench_of(args):
    """``--table`` if given, else the default table of ``--space``."""
    from . import api

    return api.load(args.table) if args.table else api.spaces([api.get_space(args.space).name])[0]
