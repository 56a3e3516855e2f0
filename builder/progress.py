"""A dependency-free progress line for builds: units done (in flight and failed, on a cluster), arch-tokens/s, ETA.

On a terminal it redraws one line; in a log (``nohup … > log``) it appends a line every ``log_every`` seconds.
"""
from __future__ import annotations

import sys
import time


class Progress:
    """The build's progress line: units done of all, arch-tokens per second, ETA; quiet in tests."""
    def __init__(self, units: int, done: int, quiet: bool = False, label: str = "", log_every: float = 30.0,
                 planned_tokens: float = 0.0):
        self.units, self.done, self.quiet, self.label = units, done, quiet, label
        self.planned_tokens = planned_tokens  # training arch-tokens still to do, for an ETA before a unit ends
        self.start_done = done
        self.tty = sys.stderr.isatty()
        self.interval = 0.5 if self.tty else log_every
        self.t0 = self.last = time.perf_counter()
        self.arch_tokens = 0
        self.in_flight: int | None = None  # units running now, where an executor runs several at once
        self.failed = 0
        self._draw(force=True)

    def tokens(self, n: int) -> None:
        """Count ``n`` more architecture-tokens trained (one mini-batch of every live slot)."""
        self.arch_tokens += n
        self._draw()

    def unit_done(self) -> None:
        """One more unit finished."""
        self.done += 1
        self._draw(force=True)

    def unit_failed(self, text: str) -> None:
        """One more unit failed: its reason on its own line."""
        self.failed += 1
        self.note(text)
        self._draw(force=True)

    def set_in_flight(self, n: int) -> None:
        """Units running now (on a cluster several at once)."""
        self.in_flight = n
        self._draw()

    def note(self, text: str) -> None:
        """A message on its own line (shown even when quiet: it says why the build stopped)."""
        sys.stderr.write(("\n" if self.tty and not self.quiet else "") + text + "\n")
        sys.stderr.flush()

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        rate = self.arch_tokens / elapsed if elapsed > 0 else 0.0
        finished = self.done - self.start_done
        left = self.units - self.done
        if not left:
            eta = "done"
        elif rate > 0 and self.planned_tokens:  # by tokens: units differ in size (resumed, WS, the last one)
            eta = f"~{max(self.planned_tokens - self.arch_tokens, 0) / rate / 60:.1f} min"
        elif finished:
            eta = f"{elapsed / finished * left / 60:.1f} min"
        else:
            eta = "?"
        extra = [f"{self.in_flight} in flight"] if self.in_flight is not None else []
        extra += [f"{self.failed} failed"] if self.failed else []
        units = f"units {self.done}/{self.units}" + (f" ({', '.join(extra)})" if extra else "")
        return (f"build {self.label}: {units} | {rate / 1000:.1f}k arch-tokens/s | "
                f"elapsed {elapsed / 60:.1f} min | ETA {eta}")

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.quiet or (not force and now - self.last < self.interval):
            return
        self.last = now
        if self.tty:
            sys.stderr.write("\r" + self._line().ljust(100))
        else:
            sys.stderr.write(self._line() + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        """End the redrawn line (a terminal only)."""
        if not self.quiet and self.tty:
            sys.stderr.write("\n")
