"""Mouth interior shared by the open model and FLAME: a grid of rows spanning the inner-lip loop, behind the lips.

Row s (0 = upper inner lip, 1 = lower) of column (upper id, lower id) lies at lerp(upper, lower, s), pushed back
(along -z, before the head pose) by INTERIOR_BASE_DEPTH + INTERIOR_DEPTH * sin(pi s); its interior_t is s. The cavity
therefore follows the lips exactly and collapses behind them when the mouth closes.
"""

from __future__ import annotations

import collections

import numpy as np
from torch import Tensor

INTERIOR_ROWS = (0.0, 0.25, 0.5, 0.75, 1.0)
INTERIOR_BASE_DEPTH = 0.001  # metres behind the lip edge (hides the seam)
INTERIOR_DEPTH = 0.012  # extra depth at mid-height
INTERIOR_COLOUR = (0.35, 0.10, 0.10)  # dark red albedo (the renderer draws teeth / cavity from interior_t)


def interior_grid(columns: list[tuple[int, int]], first_index: int, rows: tuple[float, ...] = INTERIOR_ROWS
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Interior vertices and triangles for columns [(upper id, lower id)] ordered from one mouth corner to the other
    (a corner column has upper == lower and gets one vertex). New vertices are numbered from first_index.

    Returns upper ids [M], lower ids [M], s [M] (interior_t) and triangles [T, 3] (unoriented).
    """
    index: dict[tuple[int, int, float], int] = {}
    sources: list[tuple[int, int, float]] = []
    grid = []
    for upper, lower in columns:
        ids = []
        for s in rows:
            key = (upper, upper, 0.5) if upper == lower else (upper, lower, s)
            if key not in index:
                index[key] = first_index + len(sources)
                sources.append(key)
            ids.append(index[key])
        grid.append(ids)
    tris = []
    for left, right in zip(grid[:-1], grid[1:]):
        for r in range(len(rows) - 1):
            for tri in ((left[r], right[r], right[r + 1]), (left[r], right[r + 1], left[r + 1])):
                if len(set(tri)) == 3:
                    tris.append(tri)
    src = np.array(sources, dtype=np.float64).reshape(-1, 3)
    return src[:, 0].astype(np.int64), src[:, 1].astype(np.int64), src[:, 2], np.array(tris, dtype=np.int64)


def interior_offsets(s: np.ndarray) -> np.ndarray:
    """Push-back [M, 3] of interior rows s [M] (along -z)."""
    depth = INTERIOR_BASE_DEPTH + INTERIOR_DEPTH * np.sin(np.pi * s)
    return depth[:, None] * np.array([0.0, 0.0, -1.0])


def interior_positions(vertices: Tensor, upper: Tensor, lower: Tensor, s: Tensor, offsets: Tensor) -> Tensor:
    """vertices [B, V, 3] (unposed) -> interior vertices [B, M, 3]."""
    w = s[None, :, None]
    return (1 - w) * vertices[:, upper] + w * vertices[:, lower] + offsets


def orient_toward_camera(tris: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Flip triangles [T, 3] whose normal (over positions [V, 3], an open mouth) points away from +z."""
    v0, v1, v2 = (positions[tris[:, k]] for k in range(3))
    flip = np.cross(v1 - v0, v2 - v0)[:, 2] < 0
    tris = tris.copy()
    tris[flip] = tris[flip][:, [0, 2, 1]]
    return tris


def boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Closed boundary loops of a triangle mesh (edges used by one face), each as an ordered vertex list."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    uses = collections.Counter(map(tuple, np.sort(directed, axis=1).tolist()))
    nxt = {int(a): int(b) for a, b in directed.tolist() if uses[tuple(sorted((a, b)))] == 1}
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen and v in nxt:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        if v == start and len(loop) >= 4:
            loops.append(loop)
    return loops


def mouth_columns(loop: list[int], vertices: np.ndarray) -> list[tuple[int, int]]:
    """Columns (upper, lower) across a mouth boundary loop: corners at its extreme x, the upper path (higher mean y)
    giving one column per vertex, paired with the lower-path vertex nearest in x."""
    xs = vertices[loop, 0]
    i, j = int(np.argmin(xs)), int(np.argmax(xs))
    a, b = sorted((i, j))
    path1 = loop[a:b + 1]
    path2 = loop[b:] + loop[:a + 1]
    upper, lower = (path1, path2) if vertices[path1, 1].mean() > vertices[path2, 1].mean() else (path2, path1)
    if vertices[upper[0], 0] > vertices[upper[-1], 0]:
        upper = upper[::-1]
    left, right = upper[0], upper[-1]
    inner_lower = [v for v in lower if v not in (left, right)] or [left]
    columns = [(left, left)]
    for v in upper[1:-1]:
        nearest = inner_lower[int(np.argmin(np.abs(vertices[inner_lower, 0] - vertices[v, 0])))]
        columns.append((v, nearest))
    columns.append((right, right))
    return columns
