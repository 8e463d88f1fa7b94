"""Write-to-temp-then-rename helpers: an interrupted or failed write never leaves a half-written artifact,
and the previous version of the file survives until the new one is complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

# A leftover temp this old is stale even if its pid now belongs to another process (pids are reused). A live writer
# keeps its temp's mtime fresh, so this never catches one at work.
STALE_TEMP_S = 24 * 3600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_readable(path: str | Path) -> None:
    """mkstemp creates files 0600 and mkdtemp folders 0700; give the finished artifact the permissions a normal
    write (or mkdir) would under the umask."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_umask())


def temp_prefix(path: str | Path) -> str:
    """Name prefix of this process's temporary files for ``path``: ``.NAME.PID.`` (hidden, beside it). The pid lets a
    later run tell a killed writer's leftover from a running writer's file (see ``stale_temps``)."""
    return f".{Path(path).name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, ValueError):  # not a pid at all
        return False
    return True


def stale_temps(path: str | Path) -> list[Path]:
    """Temporary files or folders for ``path`` (named by ``temp_prefix``) that a killed process left behind: their
    process is gone, or they have not changed for STALE_TEMP_S."""
    path = Path(path)
    head = f".{path.name}."
    if not path.parent.is_dir():
        return []
    stale = []
    for entry in path.parent.iterdir():
        pid = entry.name[len(head):].split(".", 1)[0] if entry.name.startswith(head) else ""
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            age = time.time() - entry.lstat().st_mtime
        except FileNotFoundError:  # its writer just finished or cleaned up
            continue
        if not _alive(int(pid)) or age > STALE_TEMP_S:
            stale.append(entry)
    return stale


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete ``stale_temps(path)``; returns what was deleted."""
    removed = stale_temps(path)
    for entry in removed:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temp file lives in the same directory so the final ``os.replace`` is atomic on POSIX.
    ``suffix`` defaults to the target's suffix, because some writers (PyAV, np.save) choose a format by it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=temp_prefix(path), suffix=path.suffix if suffix is None else suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def json_safe(value: Any) -> Any:
    """NaN/inf -> None (strict JSON has neither, and DVC and browsers read it strictly); numpy scalars -> Python."""
    import numpy as np

    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def write_json(path: str | Path, data: object) -> None:
    """Write ``data`` as indented JSON (DVC metrics, reports) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` (a directory) only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent))
    try:
        yield tmp
        make_readable(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(path) + "old.", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
