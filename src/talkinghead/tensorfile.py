"""Tensor files: plain .npy arrays, written frame by frame through a memory map and read back memory-mapped,
so a stage never holds a whole video in RAM. Written atomically (temp file, then rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .atomic import make_readable
from .errors import SchemaError


class TensorWriter:
    """Stream rows into ``path`` ([N, *row_shape], dtype). Use as a context manager; on error nothing is left.

    >>> with TensorWriter("frames.npy", n=10, row_shape=(256, 256, 3), dtype=np.uint8) as w:
    ...     w[0:2] = batch
    """

    def __init__(self, path: str | Path, n: int, row_shape: tuple[int, ...], dtype=np.uint8):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".npy", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=dtype, shape=(n, *row_shape))

    def __setitem__(self, index, value) -> None:
        self.array[index] = value

    def __enter__(self) -> "TensorWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.array.flush()
        del self.array
        if exc_type is None:
            make_readable(self.tmp)
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def save_tensor(path: str | Path, array: np.ndarray) -> None:
    """Write a whole array atomically."""
    with TensorWriter(path, n=array.shape[0], row_shape=array.shape[1:], dtype=array.dtype) as w:
        w[:] = array


def load_tensor(path: str | Path, dtype=None, row_shape: tuple[int | None, ...] | None = None,
                n: int | None = None) -> np.ndarray:
    """Memory-map a tensor file and check dtype, per-row shape (None = any size) and row count."""
    path = Path(path)
    if not path.exists():
        raise SchemaError(path, "missing; run the stage that produces it (`dvc repro`)")
    try:
        array = np.load(path, mmap_mode="r")
    except Exception as exc:
        raise SchemaError(path, f"not a readable tensor file ({exc})") from exc
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise SchemaError(path, f"dtype {array.dtype}, expected {np.dtype(dtype)}")
    if row_shape is not None:
        tail = array.shape[1:]
        if len(tail) != len(row_shape) or any(e is not None and e != g for e, g in zip(row_shape, tail)):
            raise SchemaError(path, f"shape {array.shape}, expected [N, {', '.join(str(e) for e in row_shape)}]")
    if n is not None and array.shape[0] != n:
        raise SchemaError(path, f"{array.shape[0]} rows, but its table has {n}")
    return array


def load_checkpoint(path: str | Path) -> dict:
    """A torch checkpoint (lip.pt, gan.pt, train_state.pt) as a dict, read with ``weights_only=True``: checkpoints can
    arrive from a shared DVC cache or remote, and a pickle payload in one must never run. Raises what torch raises
    (the callers turn it into an InputError naming the file and what to rerun)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):  # (indexing a bare tensor by name fails with a misleading warning)
        raise TypeError(f"it holds a {type(state).__name__}, not a dict")
    return state
