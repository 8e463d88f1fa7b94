"""One error type for bad input, so every entry point can report it the same way.

The message always names the offending file and the reason, e.g.
``data/raw/bob/video.mp4: no audio track (a presenter needs speech to train the lip model)``.
"""

from __future__ import annotations

from pathlib import Path


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
