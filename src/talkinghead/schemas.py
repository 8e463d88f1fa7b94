"""Parquet schemas of every table the pipeline writes, and the only functions that read and write them.

Readers never trust a file: ``read_table`` checks that every expected column is present with the expected
Arrow type (fixed-size lists included) and raises ``SchemaError`` naming the file otherwise.
Writers go through ``write_table``, which casts to the schema and writes atomically.

Conventions
- ``frame`` is the 0-based index of a frame in the presenter's constant-fps timeline (row i of frames.npy).
- Pixel coordinates are float32, origin at the top-left pixel corner, x right, y down.
- ``crop_*`` columns are in the upright (rotation-applied) original video's pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path
from .errors import SchemaError

N_LANDMARKS = 478  # MediaPipe FaceMesh with refine_landmarks (468 face + 10 iris)
N_SHAPE = 100
N_EXPRESSION = 50
N_JAW = 3
N_EXPR_JAW = N_EXPRESSION + N_JAW  # the method's 53-d expression vector: 50 expression + 3 jaw pose (axis-angle)
N_TEXTURE = 50
N_LIGHTING = 27  # 9 spherical-harmonic bands x RGB
N_CAMERA = 3  # weak perspective: scale, tx, ty
N_POSE = 6  # head rotation (axis-angle, 3) + translation (3)


def _fixed(n: int, t: pa.DataType = pa.float32()) -> pa.DataType:
    return pa.list_(t, n)


FRAMES = pa.schema(
    [
        ("frame", pa.int32()),
        ("time_s", pa.float64()),  # timestamp of this output frame on the constant-fps timeline
        ("source_time_s", pa.float64()),  # timestamp of the decoded source frame it was taken from
        ("crop_x0", pa.float32()),  # square crop box in original pixels: left, top, side
        ("crop_y0", pa.float32()),
        ("crop_side", pa.float32()),
        ("orig_width", pa.int32()),  # upright original frame size
        ("orig_height", pa.int32()),
        ("fps", pa.float32()),
    ]
)

LANDMARKS = pa.schema(
    [
        ("frame", pa.int32()),
        ("detected", pa.bool_()),  # False: FaceMesh found no face; the points are interpolated from neighbours
        ("lmk_crop", _fixed(N_LANDMARKS * 3)),  # x, y in crop pixels, z in the same pixel scale, row-major [478, 3]
        ("lmk_orig", _fixed(N_LANDMARKS * 2)),  # x, y in original pixels, [478, 2]
    ]
)

PARAMETERS = pa.schema(
    [
        ("frame", pa.int32()),
        ("shape", _fixed(N_SHAPE)),
        ("expression", _fixed(N_EXPR_JAW)),  # 50 expression + 3 jaw pose
        ("texture", _fixed(N_TEXTURE)),
        ("lighting", _fixed(N_LIGHTING)),
        ("camera", _fixed(N_CAMERA)),
        ("pose", _fixed(N_POSE)),
        ("fit_error", pa.float32()),  # mean 2D landmark error / inter-ocular distance
    ]
)

FEATURES = pa.schema(
    [
        ("frame", pa.int32()),
        ("time_s", pa.float64()),
        ("center_hop", pa.int32()),  # mel hop index aligned with the frame's centre
    ]
)

LIP_COEFFS = pa.schema(
    [
        ("frame", pa.int32()),
        ("expression", _fixed(N_EXPR_JAW)),  # the "second coefficients": lip model output for this frame
        ("heldout", pa.bool_()),
    ]
)

COMPOSITES = pa.schema(
    [
        ("frame", pa.int32()),
        ("mouth_box", _fixed(4)),  # x0, y0, x1, y1 in crop pixels, from the lip landmarks
        ("heldout", pa.bool_()),
    ]
)


# data/raw/demo/visemes.parquet: the demo presenter's ground-truth mouth shape per video frame (stage `demo`).
VISEMES = pa.schema(
    [
        ("frame", pa.int32()),
        ("time_s", pa.float64()),
        ("jaw_open", pa.float32()),  # 0 closed .. 1 widest
        ("lip_spread", pa.float32()),  # 0 .. 1, corners out (ee)
        ("lip_round", pa.float32()),  # 0 .. 1, corners in (oo)
        ("closure", pa.float32()),  # 0 .. 1, lips pressed (p, b, m)
        ("mouth_open", pa.float32()),  # lip gap the warp draws, fraction of its maximum (jaw_open cancelled by closure)
        ("blink", pa.float32()),  # 0 open .. 1 eyelids shut
        ("phoneme", pa.string()),  # eSpeak phoneme sounding at time_s ('_' = pause)
    ]
)


def write_table(df: pd.DataFrame, path: str | Path, schema: pa.Schema, metadata: dict[str, str] | None = None) -> None:
    """Cast ``df`` to ``schema`` and write it atomically. List columns may hold lists or 1-D numpy arrays."""
    columns = []
    for field in schema:
        if field.name not in df.columns:
            raise SchemaError(path, f"cannot write: column {field.name!r} missing")
        values = df[field.name]
        if pa.types.is_fixed_size_list(field.type):
            flat = np.asarray(np.stack([np.asarray(v, dtype=np.float32).reshape(-1) for v in values]) if len(values) else
                              np.zeros((0, field.type.list_size), np.float32))
            if flat.shape[1:] != (field.type.list_size,):
                raise SchemaError(path, f"cannot write: column {field.name!r} has width {flat.shape[1:]}, "
                                        f"expected {field.type.list_size}")
            arr = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), pa.float32()), field.type.list_size)
        else:
            arr = pa.array(values.to_numpy(), type=field.type)
        columns.append(arr)
    table = pa.Table.from_arrays(columns, schema=schema.with_metadata(
        {k.encode(): str(v).encode() for k, v in (metadata or {}).items()}))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: str | Path, schema: pa.Schema) -> pd.DataFrame:
    """Read a Parquet file and check it against ``schema``; fixed-size list columns come back as 2-D arrays
    via ``column_array``. Raises SchemaError naming the file on any mismatch."""
    path = Path(path)
    if not path.exists():
        raise SchemaError(path, "missing; run the stage that produces it (`dvc repro`)")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise SchemaError(path, f"not a readable Parquet file ({exc})") from exc
    for field in schema:
        if field.name not in table.schema.names:
            raise SchemaError(path, f"column {field.name!r} missing (has {table.schema.names})")
        got = table.schema.field(field.name).type
        if got != field.type:
            raise SchemaError(path, f"column {field.name!r} has type {got}, expected {field.type}")
    return table.select(schema.names).to_pandas()


def read_metadata(path: str | Path) -> dict[str, str]:
    """The key/value metadata written with ``write_table(metadata=...)``."""
    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"ARROW")}


def column_array(df: pd.DataFrame, column: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A fixed-size list column as a float32 array [N, width], optionally reshaped to [N, *shape]."""
    values = df[column].to_numpy()
    arr = np.stack(values).astype(np.float32) if len(values) else np.zeros((0,), np.float32)
    if shape is not None:
        arr = arr.reshape(len(df), *shape)  # [N, width] -> [N, *shape]
    return arr
