"""One error type for bad input, so every entry point can report it the same way.

The message always names the offending file and the reason, e.g.
``data/raw/bob/video.mp4: no audio track (a presenter needs speech to train the lip model)``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class InputError(Exception):
    """Bad user input: a file that cannot be used, with the reason why."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class SchemaError(InputError):
    """A Parquet table or tensor file that does not match the schema its reader expects."""


def describe(exc: BaseException, limit: int = 300) -> str:
    """An exception as a short one-line reason: ``Class: message``, whitespace collapsed (torch's state-dict errors
    put the useful part on their second line), cut at ``limit`` characters."""
    message = " ".join(str(exc).split())
    if len(message) > limit:
        message = message[:limit - 3] + "..."
    return f"{exc.__class__.__name__}: {message}" if message else exc.__class__.__name__


def exits_on_input_error(main: Callable[P, R]) -> Callable[P, R]:
    """The command-line convention of every entry point: bad input is one ``error: FILE: reason`` line on stderr
    and exit status 2, never a traceback; anything else is a bug and keeps its traceback."""

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return main(*args, **kwargs)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
