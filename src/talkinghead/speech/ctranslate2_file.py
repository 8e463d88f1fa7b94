"""Read the tensors of a CTranslate2 ``model.bin`` without CTranslate2 (pure numpy).

Layout (CTranslate2's ``ModelSpec._serialize``, binary version 6): uint32 version, string spec name, uint32
revision, uint32 variable count, then per variable: string name, uint8 rank, rank x uint32 dims, uint8 dtype id,
uint32 byte count, the raw little-endian data; then uint32 alias count and (alias, target) string pairs.
Strings are uint16 length (with the trailing NUL) + UTF-8 bytes + NUL.

Only the data is read -- nothing in the file is executed -- so a hostile file can at worst be refused.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# CTranslate2's DataType enum -> numpy dtype (int8 weights would need their scales; the packaged model is float16)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_SUPPORTED_VERSIONS = (5, 6)


class ModelFileError(ValueError):
    """The file is not a CTranslate2 model.bin this reader understands (the message says why)."""


def read_model_bin(path: str | Path, prefix: str = "") -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable name: array}) of the variables whose names start with ``prefix``.

    Raises ModelFileError for a truncated file, an unknown version or dtype, or sizes that do not add up.
    """
    path = Path(path)
    data = memoryview(path.read_bytes())
    pos = 0

    def take(n: int) -> memoryview:
        nonlocal pos
        if pos + n > len(data):
            raise ModelFileError(f"truncated at byte {pos} (needs {n} more, file has {len(data)})")
        chunk = data[pos:pos + n]
        pos += n
        return chunk

    def uint(fmt: str) -> int:
        return struct.unpack("<" + fmt, take(struct.calcsize(fmt)))[0]

    def string() -> str:
        raw = bytes(take(uint("H")))
        if not raw.endswith(b"\0"):
            raise ModelFileError(f"malformed string near byte {pos}")
        return raw[:-1].decode("utf-8", "replace")

    version = uint("I")
    if version not in _SUPPORTED_VERSIONS:
        raise ModelFileError(f"binary version {version}, expected one of {_SUPPORTED_VERSIONS}")
    spec = string()
    uint("I")  # spec revision
    out: dict[str, np.ndarray] = {}
    for _ in range(uint("I")):
        name = string()
        dims = [uint("I") for _ in range(uint("B"))]
        dtype_id = uint("B")
        nbytes = uint("I")
        raw = take(nbytes)
        if not name.startswith(prefix):
            continue
        if dtype_id not in _DTYPES:
            raise ModelFileError(f"variable {name} has unsupported dtype id {dtype_id} (quantised model?)")
        dtype = np.dtype(_DTYPES[dtype_id])
        count = int(np.prod(dims)) if dims else 1
        if count * dtype.itemsize != nbytes:
            raise ModelFileError(f"variable {name}: {dims} x {dtype} does not fill {nbytes} bytes")
        out[name] = np.frombuffer(raw, dtype=dtype).reshape(dims).copy()
    return spec, out
