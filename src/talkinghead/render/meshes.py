"""Small procedural meshes for tests and benchmarks of the renderer (no head model needed)."""

from __future__ import annotations

import numpy as np


def uv_sphere(n_lat: int = 48, n_lon: int = 96, radius: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """A closed UV sphere centred at the origin: (vertices float32 [V, 3], faces int32 [F, 3]), counter-clockwise
    seen from outside. V = (n_lat - 1) * n_lon + 2, F = 2 * (n_lat - 1) * n_lon."""
    theta = np.linspace(0, np.pi, n_lat + 1)[1:-1]  # polar angle of the interior rings
    phi = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    th, ph = np.meshgrid(theta, phi, indexing="ij")  # [n_lat - 1, n_lon]
    ring = np.stack([np.sin(th) * np.cos(ph), np.cos(th), np.sin(th) * np.sin(ph)], -1).reshape(-1, 3)  # y up
    vertices = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]).astype(np.float32) * radius
    top, bottom = 0, len(vertices) - 1

    def idx(i, j):
        return 1 + i * n_lon + (j % n_lon)

    faces = []
    for j in range(n_lon):
        faces.append((top, idx(0, j + 1), idx(0, j)))
        faces.append((bottom, idx(n_lat - 2, j), idx(n_lat - 2, j + 1)))
        for i in range(n_lat - 2):
            a, b, c, d = idx(i, j), idx(i, j + 1), idx(i + 1, j), idx(i + 1, j + 1)
            faces.append((a, b, d))
            faces.append((a, d, c))
    return vertices, np.asarray(faces, np.int32)


def grid_plane(n: int = 16, half: float = 0.5, z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A flat square [-half, half]^2 at depth z, tessellated into an n x n grid: (vertices [V, 3], faces [F, 3]).
    Vertex (i, j) has index i * (n + 1) + j, row i going down (y decreasing)."""
    coords = np.linspace(-half, half, n + 1)
    yy, xx = np.meshgrid(coords[::-1], coords, indexing="ij")
    vertices = np.stack([xx, yy, np.full_like(xx, z)], -1).reshape(-1, 3).astype(np.float32)
    faces = []
    for i in range(n):
        for j in range(n):
            a, b, c, d = i * (n + 1) + j, i * (n + 1) + j + 1, (i + 1) * (n + 1) + j, (i + 1) * (n + 1) + j + 1
            faces.append((a, c, d))
            faces.append((a, d, b))
    return vertices, np.asarray(faces, np.int32)
