"""A restricted unpickler for FLAME model files.

FLAME pickles (Python 2 era, latin1) hold numpy arrays, a scipy.sparse J_regressor and chumpy ``Ch`` objects. We
never import chumpy and never run code from the file: ``find_class`` only resolves an allow-list of numpy / scipy
array constructors; chumpy classes map to a stand-in that just keeps its pickled state (the ``x`` array), and sparse
matrices to a stand-in rebuilt from ``data``/``indices``/``indptr``. Any other global -> InputError naming it.
"""

from __future__ import annotations

import codecs
import collections
import copyreg
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from ..errors import InputError, describe

try:  # numpy >= 2 keeps the array internals in numpy._core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


class ChumpyStandIn:
    """What a chumpy object becomes while unpickling: its state dict, converted to an array afterwards."""

    def __init__(self, *args: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"x": state}

    def to_array(self, source: Path, class_name: str = "chumpy object") -> np.ndarray:
        if "x" not in self.state:
            raise InputError(source, f"{class_name} without an 'x' array "
                                     "(derived chumpy expressions are not supported)")
        return np.asarray(self.state["x"])


class SparseStandIn:
    """What a pickled scipy.sparse matrix becomes; rebuilt as a csc/csr/coo matrix from its arrays afterwards."""

    format = "csc"

    def __init__(self, *args: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}

    def to_sparse(self, source: Path) -> scipy.sparse.spmatrix:
        s = self.state
        shape = s.get("_shape", s.get("shape"))
        try:
            if self.format == "coo":
                return scipy.sparse.coo_matrix((s["data"], (s["row"], s["col"])), shape=shape)
            cls = scipy.sparse.csc_matrix if self.format == "csc" else scipy.sparse.csr_matrix
            return cls((s["data"], s["indices"], s["indptr"]), shape=shape)
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(source, f"malformed sparse matrix in pickle ({exc})") from exc


def _sparse_class(fmt: str) -> type:
    return type(f"{fmt}_matrix", (SparseStandIn,), {"format": fmt})


_SPARSE = {fmt: _sparse_class(fmt) for fmt in ("csc", "csr", "coo")}

_NUMPY_GLOBALS = {
    "_reconstruct": _multiarray._reconstruct,
    "scalar": _multiarray.scalar,
    "ndarray": np.ndarray,
    "dtype": np.dtype,
}

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("_codecs", "encode"): codecs.encode,  # Python 3 pickles of numpy arrays encode their bytes this way
    # Containers that protocol-2 pickles build by calling the type (chumpy state holds sets, e.g. _dirty_vars).
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("builtins", "frozenset"): frozenset,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


def _resolve(module: str, name: str) -> Any | None:
    """The object an allowed global stands for, or None if it is not allowed."""
    if (module, name) in _SAFE_GLOBALS:
        return _SAFE_GLOBALS[(module, name)]
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in _NUMPY_GLOBALS:
        return _NUMPY_GLOBALS[name]
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":  # protocol 5 arrays
        return _numeric._frombuffer
    if module.startswith("chumpy") and name[:1].isupper():
        return type(name, (ChumpyStandIn,), {})
    if module.startswith("scipy.sparse"):
        for fmt, cls in _SPARSE.items():
            if name == f"{fmt}_matrix" or name == f"{fmt}_array":
                return cls
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only numpy arrays, sparse matrices and chumpy stand-ins."""

    def __init__(self, file: Any, source: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        resolved = _resolve(module, name)
        if resolved is None:
            raise InputError(self.source, f"refusing to load pickle global {module}.{name} "
                                          "(only numpy/scipy arrays allowed)")
        return resolved


def _to_plain(value: Any, source: Path) -> Any:
    """Replace stand-ins by numpy arrays / scipy sparse matrices, recursively through dicts, lists and tuples."""
    if isinstance(value, ChumpyStandIn):
        return value.to_array(source, type(value).__name__)
    if isinstance(value, SparseStandIn):
        return value.to_sparse(source)
    if isinstance(value, dict):
        return {k: _to_plain(v, source) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_plain(v, source) for v in value)
    return value


def load_pickle(path: str | Path) -> Any:
    """Load a FLAME-style pickle without running code; chumpy objects come back as numpy arrays."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _to_plain(RestrictedUnpickler(f, path).load(), path)
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(path, "no such file") from exc
    except Exception as exc:
        # A damaged or crafted file can fail in any way (an allowed call with bad arguments, e.g. _codecs.encode with
        # an unknown codec: LookupError). Only reporting is widened here: find_class's allow-list still decides what
        # the file may call.
        raise InputError(path, f"not a readable model pickle ({describe(exc)})") from exc
