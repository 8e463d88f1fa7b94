"""Build the open default head model, assets/open_head_model.npz: ``python -m talkinghead.headmodel.build_open``.

Everything is derived from MediaPipe's own mesh topology and from FaceMesh tracks of real videos
(../shared/media/video/*.mp4, plus data/raw/demo/video.mp4 when present); no licensed model is used. The pipeline
only reads the committed asset; this script is needed only to rebuild it. Fixed seeds; float32; ~1 MB.

Topology
  Vertices 0..477 are the 478 FaceMesh landmarks (refine_landmarks=True), so landmark_mp_ids = arange(478).
  Triangles are the 3-cliques of FACEMESH_TESSELATION's edge graph, minus the two cliques that are not faces (each
  is tiled by three real triangles around an inner vertex, near the nostrils), oriented consistently across shared
  edges and counter-clockwise seen from outside the head (normals away from a point 5 cm behind the face). The eyes
  stay open holes; iris points (468..477) are vertices without faces.
  Mouth interior: behind the inner-lip loop (upper 78-191-80-81-82-13-312-311-310-415-308, lower 78-95-88-178-87-14-
  317-402-318-324-308) a grid of 5 rows spans each upper/lower pair; row s = 0..1 lies at lerp(upper, lower, s), pushed
  back 1 mm + 12 mm * sin(pi s); interior_t = s (0 at the upper inner lip, 1 at the lower); -1 for all skin vertices.
  Interior rows are the same lerp of the two lip rows of every basis (and of the jaw weights), so the cavity follows
  the lips exactly and collapses behind them when the mouth closes.

Template (mean shape)
  FaceMesh points (x, -y, -z) of every frame are aligned by generalised Procrustes (similarity transform; two passes:
  all points, then the 40% with the smallest residual motion -- the rigid part of the face). The mean shape (mean of
  the per-video means: every video counts the same, however long) is rotated to a canonical frame (x from landmark
  234 to 454, y from chin 152 toward forehead 10, z = x cross y, toward the camera), scaled so the face width
  |454 - 234| is 0.15 m, and centred on the midpoint of 234 and 454.

Jaw
  Pivot 1 cm below and 3 cm behind the 234/454 midpoint (about the jaw joints, in front of the ears). Skinning weights:
  1 on the lower lip, 0 on the upper lip and everything above the nose base (point 2), 0.5 at the mouth corners;
  elsewhere a sigmoid (6 mm wide) below a mandible line that runs from the mouth corners up to 1.5 cm below the pivot
  at the face sides, then 20 steps of graph-Laplacian smoothing with the fixed points held.

Expression (50 modes)
  Per frame, the aligned points minus their clip's mean shape (which removes identity), with the jaw compensated: a
  per-frame jaw rotation is fitted (least squares, jaw-weighted) and the residual after rotating the clip mean is kept.
  PCA of all residuals, each video weighted equally (frame weight 1 / its video's frame count); mode k = principal
  direction k * its standard deviation, so coefficients are ~ N(0, 1).

Identity (100 modes)
  Modes 0..3: PCA of the tracked videos' aligned mean shapes (real identity variation; min(4, videos - 1) modes).
  The rest: the leading eigenvectors of a Gaussian kernel (sigma 3 cm) over template positions -- the smoothest
  spatial fields on the face -- each times x, y and z, orthogonalised against the previous modes (Gram-Schmidt),
  RMS amplitude 3 mm / (1 + k/30) so higher-frequency modes cost more under an L2 prior.

Texture (50 modes)
  Mean albedo: per-vertex median colour under each landmark across all tracked frames, averaged over people and
  left/right mirrored pairs (to cancel side lighting), divided by the median over the face, raised to the power 0.6
  (observed ratios include shading) and multiplied by a neutral mean skin tone (texture.MEAN_SKIN_TONE); the mouth
  interior is a dark red. Modes: texture.smooth_albedo_modes (overall RGB tone, then orthonormalised random
  low-frequency Fourier fields per channel, seed 0).

Lighting is 9-band real SH as in DECA (sh.py); no basis to build.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import InputError
from ..facemesh import INNER_LOWER, INNER_UPPER, LIPS, OUTER_LOWER, OUTER_UPPER
from ..paths import OPEN_HEAD_MODEL, RAW
from .base import N_EXPRESSION, N_SHAPE, N_TEXTURE
from .open_model import ASSET_VERSION
from .mouth import INTERIOR_COLOUR, interior_grid, interior_offsets, orient_toward_camera
from .texture import MEAN_SKIN_TONE, smooth_albedo_modes

N_MESH = 478
N_FACE_POINTS = 468  # without the 10 iris points
FACE_WIDTH_M = 0.15
SEED = 0

MOUTH_CORNERS = (61, 291, 78, 308)
SUBNASALE = 2  # FaceMesh point under the nose tip
MANDIBLE_BELOW_PIVOT = 0.015  # the mandible line meets the face sides 1.5 cm below the pivot
ALBEDO_CONTRAST = 0.6  # observed colour ratios include shading; shrink them toward the mean tone
N_PEOPLE_MODES_MAX = 4


# ----------------------------------------------------------------------------------------------- topology
def tessellation_triangles() -> np.ndarray:
    """Unoriented triangles [F, 3] of FaceMesh: 3-cliques of FACEMESH_TESSELATION minus cliques tiled by others."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    edges = {tuple(sorted(e)) for e in FACEMESH_TESSELATION}
    neighbours = collections.defaultdict(set)
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    cliques = {tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]}
    uses = collections.Counter(e for t in cliques for e in itertools.combinations(t, 2))
    # A clique whose three edges each border two other triangles is covered by those triangles: not a face.
    faces = [t for t in cliques if not all(uses[e] == 3 for e in itertools.combinations(t, 2))]
    return np.array(sorted(faces), dtype=np.int64)


def lip_ids() -> np.ndarray:
    return np.array(LIPS, dtype=np.int64)


def orient_outward(faces: np.ndarray, vertices: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Orient triangles [F, 3] consistently (neighbours walk a shared edge in opposite directions), each connected
    piece facing away from `inside` [3] by area-weighted majority (robust to folds in the mean shape, e.g. the lips)."""
    faces = faces.copy()
    by_edge = collections.defaultdict(list)
    for index, face in enumerate(faces):
        for a, b in ((0, 1), (1, 2), (2, 0)):
            by_edge[frozenset((face[a], face[b]))].append(index)
    done = np.zeros(len(faces), dtype=bool)
    for seed in range(len(faces)):
        if done[seed]:
            continue
        done[seed] = True
        component, queue = [seed], collections.deque([seed])
        while queue:
            current = queue.popleft()
            f = faces[current]
            directed = {(f[0], f[1]), (f[1], f[2]), (f[2], f[0])}
            for a, b in directed:
                for other in by_edge[frozenset((a, b))]:
                    if done[other]:
                        continue
                    g = faces[other]
                    if (a, b) in {(g[0], g[1]), (g[1], g[2]), (g[2], g[0])}:  # same direction: flip the neighbour
                        faces[other] = g[[0, 2, 1]]
                    done[other] = True
                    component.append(other)
                    queue.append(other)
        comp = faces[component]
        v0, v1, v2 = (vertices[comp[:, k]] for k in range(3))
        normal = np.cross(v1 - v0, v2 - v0)
        if ((normal * ((v0 + v1 + v2) / 3 - inside)).sum(axis=1)).sum() < 0:
            faces[component] = comp[:, [0, 2, 1]]
    return faces


def edge_list(faces: np.ndarray) -> np.ndarray:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


# ----------------------------------------------------------------------------------------------- alignment
def similarity_align(points: np.ndarray, reference: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Align each frame of points [N, P, 3] to reference [P, 3] (Umeyama similarity fitted on `ids`)."""
    src = points[:, ids]  # [N, K, 3]
    dst = reference[ids]
    mu_s = src.mean(axis=1, keepdims=True)
    mu_d = dst.mean(axis=0)
    cs, cd = src - mu_s, dst - mu_d
    cov = np.einsum("ki,nkj->nij", cd, cs)  # [N, 3, 3]: sum_k cd_k cs_k^T
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones((len(src), 3))
    fix[:, 2] = d
    rot = u @ (fix[:, :, None] * vt)  # [N, 3, 3]
    var_s = (cs ** 2).sum(axis=(1, 2))
    scale = (sig * fix).sum(axis=1) / var_s  # [N]
    return scale[:, None, None] * np.einsum("nij,npj->npi", rot, points - mu_s) + mu_d


def generalised_procrustes(points: np.ndarray, ids: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Iteratively align all frames [N, P, 3] to their evolving mean (first frame as the initial reference)."""
    reference = points[0]
    aligned = points
    for _ in range(iterations):
        aligned = similarity_align(points, reference, ids)
        reference = aligned.mean(axis=0)
    return aligned


def canonical_frame(template: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Rotation [3, 3], origin [3] and scale mapping the mean shape to x = subject's left, y up, z forward, metres."""
    x = template[454] - template[234]
    width = np.linalg.norm(x)
    x = x / width
    y = template[10] - template[152]
    y = y - (y @ x) * x
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    rot = np.stack([x, y, z])  # rows: new axes
    origin = (template[454] + template[234]) / 2
    return rot, origin, FACE_WIDTH_M / width


# ----------------------------------------------------------------------------------------------- jaw
def jaw_pivot(template: np.ndarray) -> np.ndarray:
    mid = (template[234] + template[454]) / 2
    return mid + np.array([0.0, -0.01, -0.03])


def jaw_weights(template: np.ndarray, faces: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """Smooth per-vertex jaw skinning weights [478] (see the module docstring)."""
    corner_y = template[[61, 291], 1].mean()
    half_width = abs(template[454, 0] - template[234, 0]) / 2
    rel_x = np.clip(np.abs(template[:, 0]) / half_width, 0, 1)
    line_y = corner_y + (pivot[1] - MANDIBLE_BELOW_PIVOT - corner_y) * rel_x ** 2
    weights = 1.0 / (1.0 + np.exp(-(line_y - template[:, 1]) / 0.006))
    fixed = {int(i): 0.0 for i in np.flatnonzero(template[:, 1] > template[SUBNASALE, 1])}  # above the nose base
    fixed.update({i: 0.0 for i in INNER_UPPER + OUTER_UPPER})
    fixed.update({i: 1.0 for i in INNER_LOWER + OUTER_LOWER})
    fixed.update({i: 0.5 for i in MOUTH_CORNERS})
    fixed.update({i: 0.0 for i in range(N_FACE_POINTS, N_MESH)})  # irises
    ids = np.array(list(fixed))
    values = np.array(list(fixed.values()))
    weights[ids] = values
    edges = edge_list(faces)
    degree = np.bincount(edges.ravel(), minlength=len(template)).astype(float)
    for _ in range(20):
        acc = np.zeros(len(template))
        np.add.at(acc, edges[:, 0], weights[edges[:, 1]])
        np.add.at(acc, edges[:, 1], weights[edges[:, 0]])
        smoothed = np.where(degree > 0, acc / np.maximum(degree, 1), weights)
        weights = 0.5 * weights + 0.5 * smoothed
        weights[ids] = values
    return weights.clip(0, 1)


def rotate_about(points: torch.Tensor, axis_angle: torch.Tensor, pivot: torch.Tensor,
                 weights: torch.Tensor) -> torch.Tensor:
    """Jaw deformation of points [N, P, 3] by axis_angle [N, 3] about pivot [3], blended by weights [P]."""
    from .lbs import batch_rodrigues

    rot = batch_rodrigues(axis_angle)
    rotated = torch.einsum("nij,npj->npi", rot, points - pivot) + pivot
    return points + weights[None, :, None] * (rotated - points)


def fit_jaw_angles(frames: np.ndarray, means: np.ndarray, pivot: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-frame jaw axis-angle [N, 3] best explaining frames [N, P, 3] from their clip means [N, P, 3]."""
    x = torch.as_tensor(frames, dtype=torch.float64)
    m = torch.as_tensor(means, dtype=torch.float64)
    p = torch.as_tensor(pivot, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64)
    theta = torch.zeros(len(frames), 3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (w[None, :, None] * (x - rotate_about(m, theta, p, w)) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return theta.detach().numpy()


# ----------------------------------------------------------------------------------------------- bases
def pca_modes(data: np.ndarray, n: int, row_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """data [N, D] (already centred) -> (modes [n, D] scaled by their standard deviation, explained-variance ratio).

    row_weights [N] (default equal) weight each row in the covariance sum_i w_i r_i r_i^T / sum_i w_i.
    """
    w = np.ones(len(data)) if row_weights is None else np.asarray(row_weights, dtype=np.float64)
    scaled = data * np.sqrt(w / w.sum())[:, None]
    _, sig, vt = np.linalg.svd(scaled, full_matrices=False)
    k = min(n, len(sig))
    modes = np.zeros((n, data.shape[1]))
    modes[:k] = vt[:k] * sig[:k, None]  # sig = standard deviation along each principal direction
    ratio = (sig[:k] ** 2) / (sig ** 2).sum()
    return modes, ratio


def identity_modes(template: np.ndarray, person_means: np.ndarray, n: int = N_SHAPE,
                   sigma: float = 0.03, rms: float = 0.003) -> np.ndarray:
    """Identity basis [n, P*3] (see the module docstring)."""
    people = person_means - person_means.mean(axis=0)
    n_people = min(N_PEOPLE_MODES_MAX, max(len(person_means) - 1, 0))
    data_modes, _ = pca_modes(people.reshape(len(people), -1), n_people) if n_people else (np.zeros((0, 0)), None)
    d2 = ((template[:, None] - template[None]) ** 2).sum(-1)
    kernel = np.exp(-d2 / (2 * sigma ** 2))
    _, vecs = np.linalg.eigh(kernel)
    fields = vecs[:, ::-1]  # smoothest (largest eigenvalue) first
    modes = list(data_modes[:n_people])
    basis = [m / np.linalg.norm(m) for m in modes]
    k = 0
    for field_index in range(fields.shape[1]):
        for axis in range(3):
            if len(modes) >= n:
                break
            vec = np.zeros((len(template), 3))
            vec[:, axis] = fields[:, field_index]
            vec = vec.ravel()
            for b in basis:
                vec -= (vec @ b) * b
            norm = np.linalg.norm(vec)
            if norm < 1e-6:
                continue
            unit = vec / norm
            basis.append(unit)
            modes.append(unit * rms * np.sqrt(len(template)) / (1 + k / 30))
            k += 1
    return np.stack(modes[:n])


def mirror_map(template: np.ndarray) -> np.ndarray:
    """For each vertex, the nearest vertex to its mirror image across x = 0."""
    mirrored = template * np.array([-1.0, 1.0, 1.0])
    d2 = ((mirrored[:, None] - template[None]) ** 2).sum(-1)
    return d2.argmin(axis=1)


def albedo_mean_from_colours(colours: list[np.ndarray], template: np.ndarray) -> np.ndarray:
    """Per-vertex mean albedo [478, 3] from per-clip colour samples [N, 478, 3] uint8 (see the module docstring)."""
    per_person = [np.median(c.astype(np.float64) / 255.0, axis=0) for c in colours]
    colour = np.mean(per_person, axis=0)  # [478, 3]
    colour = 0.5 * (colour + colour[mirror_map(template)])
    skin = np.median(colour[:N_FACE_POINTS], axis=0)
    return np.clip((colour / skin) ** ALBEDO_CONTRAST * np.asarray(MEAN_SKIN_TONE), 0.02, 1.0)


# ----------------------------------------------------------------------------------------------- mouth interior
def add_mouth_interior(template: np.ndarray, faces: np.ndarray, rows: list[np.ndarray], opened: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Append the mouth-interior grid (mouth.py) behind the inner-lip loop.

    rows: per-vertex arrays [478, ...] to extend the same way (bases, jaw weights); opened: the template with the
    mouth open (to orient the new triangles toward the camera). Returns template, faces (skin + interior),
    interior_t, extended rows.
    """
    upper, lower, s, tris = interior_grid(list(zip(INNER_UPPER, INNER_LOWER)), N_MESH)

    def lerp(a: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (a.ndim - 1)
        return (1 - s).reshape(shape) * a[upper] + s.reshape(shape) * a[lower]

    interior = lerp(template) + interior_offsets(s)
    tris = orient_toward_camera(tris, np.concatenate([opened, lerp(opened) + interior_offsets(s)]))
    interior_t = np.concatenate([-np.ones(N_MESH), s])
    extended = [np.concatenate([r, lerp(r)]) for r in rows]
    return np.concatenate([template, interior]), np.concatenate([faces, tris]), interior_t, extended


# ----------------------------------------------------------------------------------------------- build
def canonical_tracks(tracks: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Align every tracked frame (NaN frames dropped) into the canonical metric frame.

    Returns {clip: aligned frames [N, 478, 3]} and the template [478, 3].
    """
    clips = {}
    for name, pts in tracks.items():
        good = ~np.isnan(pts).any(axis=(1, 2))
        clips[name] = pts[good] * np.array([1.0, -1.0, -1.0])  # pixels (y down, z away) -> y up, z toward camera
    allpts = np.concatenate(list(clips.values()))
    if len(allpts) < 10:
        raise InputError(None, "too few tracked frames to build a head model")
    face = np.arange(N_FACE_POINTS)
    aligned = generalised_procrustes(allpts, face)
    clip_of = np.concatenate([np.full(len(v), i) for i, v in enumerate(clips.values())])
    clip_means = np.stack([aligned[clip_of == i].mean(0) for i in range(len(clips))])
    motion = np.sqrt(((aligned - clip_means[clip_of]) ** 2).sum(-1).mean(0))[:N_FACE_POINTS]
    rigid = np.argsort(motion)[: int(0.4 * N_FACE_POINTS)]
    aligned = generalised_procrustes(allpts, rigid)
    mean_shape = np.mean([aligned[clip_of == i].mean(0) for i in range(len(clips))], axis=0)  # videos count equally
    rot, origin, scale = canonical_frame(mean_shape)
    aligned = scale * np.einsum("ij,npj->npi", rot, aligned - origin)
    out = {}
    start = 0
    for name, pts in clips.items():
        out[name] = aligned[start:start + len(pts)]
        start += len(pts)
    return out, scale * (mean_shape - origin) @ rot.T


def build_arrays(tracks: dict[str, tuple[np.ndarray, np.ndarray]], verbose: bool = True) -> dict[str, np.ndarray]:
    """All arrays of the open head model from FaceMesh tracks {clip: (points [N,478,3], colours [N,478,3])}."""
    clips, template = canonical_tracks({k: v[0] for k, v in tracks.items()})
    faces = orient_outward(tessellation_triangles(), template, template.mean(0) + np.array([0, 0, -0.05]))
    pivot = jaw_pivot(template)
    weights = jaw_weights(template, faces, pivot)

    frames = np.concatenate(list(clips.values()))
    person_means = np.stack([c.mean(0) for c in clips.values()])
    means = np.concatenate([np.repeat(m[None], len(c), 0) for m, c in zip(person_means, clips.values())])
    theta = fit_jaw_angles(frames, means, pivot, weights)
    jawed = rotate_about(torch.as_tensor(means), torch.as_tensor(theta), torch.as_tensor(pivot),
                         torch.as_tensor(weights)).numpy()
    residual = (frames - jawed).reshape(len(frames), -1)  # [N, 478, 3] -> [N, 478*3]
    # Every video counts the same, however long it is.
    weights_per_frame = np.concatenate([np.full(len(c), 1.0 / len(c)) for c in clips.values()])
    centre = (weights_per_frame[:, None] * residual).sum(0) / weights_per_frame.sum()
    expr_modes, expr_ratio = pca_modes(residual - centre, N_EXPRESSION, weights_per_frame)
    shape_modes = identity_modes(template, person_means)
    if verbose:
        print(f"frames {len(frames)}, jaw angle std (deg) {np.degrees(theta.std(0)).round(2)}, "
              f"expression variance explained by 50 modes {expr_ratio.sum():.4f} (first 5: {expr_ratio[:5].round(3)})",
              file=sys.stderr)

    colours = [v[1][~np.isnan(v[0]).any(axis=(1, 2))] for v in tracks.values()]
    albedo = albedo_mean_from_colours(colours, template)
    texture_template = template  # the colour modes are defined over the skin vertices, extended like other rows

    expr_basis = expr_modes.reshape(N_EXPRESSION, N_MESH, 3).transpose(1, 2, 0)  # [50, 478*3] -> [478, 3, 50]
    shape_basis = shape_modes.reshape(N_SHAPE, N_MESH, 3).transpose(1, 2, 0)  # [100, 478*3] -> [478, 3, 100]
    _, albedo_basis = smooth_albedo_modes(texture_template, N_TEXTURE, seed=SEED)
    # Open the mouth (jaw 20 degrees) to orient the interior triangles toward the camera.
    opened = rotate_about(torch.as_tensor(template[None]), torch.tensor([[np.radians(20.0), 0.0, 0.0]]),
                          torch.as_tensor(pivot), torch.as_tensor(weights))[0].numpy()
    full_template, all_faces, interior_t, (shape_b, expr_b, jaw_w, albedo_m, albedo_b) = add_mouth_interior(
        template, faces, [shape_basis, expr_basis, weights, albedo, albedo_basis], opened)
    albedo_m[N_MESH:] = INTERIOR_COLOUR
    f32 = np.float32
    return {
        "version": np.array(ASSET_VERSION),
        "template": full_template.astype(f32),
        "shape_basis": shape_b.astype(f32),
        "expression_basis": expr_b.astype(f32),
        "jaw_pivot": pivot.astype(f32),
        "jaw_weights": jaw_w.astype(f32),
        "faces": all_faces.astype(np.int32),
        "landmark_mp_ids": np.arange(N_MESH, dtype=np.int32),
        "lip_vertex_ids": lip_ids().astype(np.int32),
        "inner_lip_upper_ids": np.array(INNER_UPPER[1:-1], dtype=np.int32),
        "inner_lip_lower_ids": np.array(INNER_LOWER[1:-1], dtype=np.int32),
        "interior_t": interior_t.astype(f32),
        "albedo_mean": albedo_m.astype(f32),
        "albedo_basis": albedo_b.astype(f32),
        "expression_variance_ratio": expr_ratio.astype(f32),
    }


def default_videos(shared: Path) -> list[Path]:
    videos = sorted((shared / "media" / "video").glob("*.mp4"))
    demo = RAW / "demo" / "video.mp4"
    return videos + ([demo] if demo.exists() else [])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"), help="folder holding media/video/*.mp4")
    parser.add_argument("--videos", type=Path, nargs="*", help="videos to track (default: shared media + demo)")
    parser.add_argument("--cache", type=Path, default=None, help="cache FaceMesh tracks in this .npz")
    parser.add_argument("--out", type=Path, default=OPEN_HEAD_MODEL)
    args = parser.parse_args(argv)
    from .tracking_data import track_videos

    try:
        videos = args.videos or default_videos(args.shared)
        if not videos:
            raise InputError(args.shared / "media" / "video", "no videos to build the head model from")
        tracks = track_videos(videos, args.cache)
        arrays = build_arrays(tracks)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    with atomic_path(args.out) as tmp:
        np.savez_compressed(tmp, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(arrays['template'])} vertices, "
          f"{len(arrays['faces'])} faces)", file=sys.stderr)


if __name__ == "__main__":
    main()
