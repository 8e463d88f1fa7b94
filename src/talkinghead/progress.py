"""Progress reporting for every stage: a tqdm bar on a terminal, short plain lines in logs.

>>> with Progress(total=1000, desc="train_lip", unit="step") as bar:
...     for step in range(1000):
...         bar.set_postfix(loss=0.25)  # this step's values, shown by the update that follows
...         bar.update(1)

On a terminal (stderr is a TTY) this is a tqdm bar. Anywhere else (``dvc repro > log``, CI, a pipe) tqdm would
write every redraw as a carriage-return-separated chunk of one endless line -- and ``set_postfix`` forces a redraw
on every step, so ``mininterval`` does not help -- hence one plain line at most every ``interval`` seconds instead:

    train_lip: 120/1000 step (12%), loss 0.25, elapsed 0:00:30, ETA 0:03:40

plus one closing line with the total time. ``interval`` defaults to TQDM_MININTERVAL from the environment, else 10 s.

``print_summary`` prints a stage's closing metrics as ``key value`` pairs wrapped into short lines (a stage's metrics
dict on one JSON line ran to 350-550 characters).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator

DEFAULT_INTERVAL_S = 10.0
MAX_LINE = 200  # a plain progress line never gets longer than this (a long postfix is cut)


def summary_lines(label: str, metrics: dict[str, Any], width: int = 120) -> list[str]:
    """``label: k v, k v, ...`` wrapped at ``width`` characters, continuation lines indented; nested dicts
    flattened to ``a.b`` keys."""
    import textwrap

    from .tracking import flatten

    pairs = [f"{k} {_format_value(v)}" for k, v in flatten(metrics).items()]
    return textwrap.wrap(", ".join(pairs), width=width, initial_indent=f"{label}: ", subsequent_indent="  ",
                         break_on_hyphens=False) or [f"{label}:"]


def print_summary(label: str, metrics: dict[str, Any]) -> None:
    print("\n".join(summary_lines(label, metrics)), flush=True)


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _interval_from_env() -> float:
    try:
        return float(os.environ.get("TQDM_MININTERVAL", DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S


def format_seconds(seconds: float) -> str:
    """H:MM:SS ("?" when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class PlainProgress:
    """The log form: one line every ``interval`` seconds (see the module docstring). Thread-safe ``update``."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
                 interval: float | None = None, clock: Callable[[], float] = time.monotonic,
                 write: Callable[[str], None] | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.initial = int(initial)
        self.interval = _interval_from_env() if interval is None else float(interval)
        self.clock = clock
        self._write = write
        self.postfix: dict[str, Any] = {}
        self.started = self.last_line = clock()
        self.closed = False
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        if self._write is not None:
            self._write(line)
        else:  # sys.stderr looked up now: tests and pytest swap it
            print(line, file=sys.stderr, flush=True)

    def line(self, final: bool = False) -> str:
        elapsed = self.clock() - self.started
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        head = (f"{self.desc}: " if self.desc else "") + f"{count} {self.unit}"
        if self.total:
            head += f" ({100 * self.n / self.total:.0f}%)"
        tail = f"elapsed {format_seconds(elapsed)}"
        if final:
            tail += ", done"
        elif self.total:
            done = self.n - self.initial
            eta = (self.total - self.n) * elapsed / done if done > 0 else float("nan")
            tail += f", ETA {format_seconds(eta)}"
        values = ", ".join(f"{k} {_format_value(v)}" for k, v in self.postfix.items())
        room = MAX_LINE - len(head) - len(tail) - 4  # the two ", " around the values
        if len(values) > room:  # a long postfix is cut, never the count or the ETA
            values = values[:max(room - 3, 0)] + "..."
        return ", ".join(part for part in (head, values, tail) if part)[:MAX_LINE]

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.n += n
            now = self.clock()
            if now - self.last_line >= self.interval:
                self.last_line = now
                self.write(self.line())

    def set_postfix(self, **values: Any) -> None:
        """Shown in the next line; never writes by itself (the point of this class)."""
        self.postfix = values

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self.n > self.initial:
                self.write(self.line(final=True))


class Progress:
    """A tqdm bar on a terminal, :class:`PlainProgress` elsewhere, nothing when ``disable``; same small interface
    (``update``, ``set_postfix``, ``close``, context manager, iteration over ``iterable``)."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, disable: bool = False, leave: bool = True, interval: float | None = None,
                 terminal: bool | None = None, **plain_options: Any):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable = iterable
        self.bar: Any = None
        if disable:
            return
        if stderr_is_terminal() if terminal is None else terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave,
                            **({} if interval is None else {"mininterval": interval}))
        else:
            self.bar = PlainProgress(total, desc, unit, initial, interval, **plain_options)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        if self.bar is None:
            return
        if isinstance(self.bar, PlainProgress):
            self.bar.set_postfix(**values)
        else:  # refresh=False: the bar shows the values at its next (mininterval-limited) redraw
            self.bar.set_postfix({k: _format_value(v) for k, v in values.items()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("Progress was made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

