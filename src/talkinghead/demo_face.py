"""The embedded demo presenter's face: a public-domain photo (scikit-image's ``astronaut``) animated by image
warps, so the demo needs no download.

- ``build_face_rig(size)`` finds the face with MediaPipe FaceMesh once, levels it (removes the head roll),
  frames it and upsamples it to a working image, and prepares two piecewise-affine warps: one for the lips,
  jaw and chin, one for the eyelids.
- ``render_frame(rig, visemes, blink, head)`` moves the control points (FaceMesh landmarks plus a static ring
  of anchors) as a deterministic function of the viseme values, warps the image triangle by triangle, fills
  the opened mouth with a drawn interior (upper teeth from the photo, dark cavity, lower teeth band), closes
  the eyelids for blinks, and finally applies the small head motion while cropping to the output frame.

Every displacement is a smooth function of position, so neighbouring triangles never tear; the piecewise-
affine map is continuous across shared edges by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .compositing import smoothstep
from .facemesh import INNER_LOWER, INNER_UPPER

# FaceMesh landmark ids (478-point topology)
UPPER_OUTER_LIP = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LOWER_OUTER_LIP = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
UPPER_INNER_LIP = list(INNER_UPPER)
LOWER_INNER_LIP = list(INNER_LOWER)
INNER_LIP_LOOP = UPPER_INNER_LIP + LOWER_INNER_LIP[::-1][1:-1]  # closed polygon around the mouth opening
EYES = (  # (upper lid from corner to corner, lower lid from corner to corner)
    ([33, 246, 161, 160, 159, 158, 157, 173, 133], [33, 7, 163, 144, 145, 153, 154, 155, 133]),
    ([263, 466, 388, 387, 386, 385, 384, 398, 362], [263, 249, 390, 373, 374, 380, 381, 382, 362]),
)
CHIN = 152
NOSE_TIP = 1
SOURCE_CROP_SIDE = 256  # side (photo pixels) of the square of the photo the output frame shows


@dataclass(frozen=True)
class HeadMotion:
    """Small rigid motion of the whole picture: roll (degrees), shift (fraction of the frame), zoom factor."""

    roll_deg: float = 0.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    zoom: float = 1.0


class PiecewiseAffineWarp:
    """Backward piecewise-affine warp of a rectangular region: for every pixel of the region, the triangle of
    the *moved* mesh it falls in says where to sample the source image (affine inside each triangle)."""

    def __init__(self, src_points: np.ndarray, triangles: np.ndarray, roi: tuple[int, int, int, int]):
        """src_points [P, 2] working-image pixels; triangles [T, 3] indices; roi (x0, y0, x1, y1)."""
        self.src = src_points.astype(np.float64)
        self.triangles = triangles.astype(np.int64)
        self.roi = roi
        x0, y0, x1, y1 = roi
        self.grid_x, self.grid_y = np.meshgrid(np.arange(x0, x1, dtype=np.float32),
                                               np.arange(y0, y1, dtype=np.float32))  # [h, w] each

    def maps(self, dst_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source coordinates (map_x, map_y), float32 [h, w] each, for cv2.remap of the region."""
        x0, y0, x1, y1 = self.roi
        tri_dst = dst_points[self.triangles]  # [T, 3, 2]
        tri_src = self.src[self.triangles]  # [T, 3, 2]
        # per triangle the affine map dst -> src in closed form: src = q0 + F E^-1 (g - p0)
        p0, q0 = tri_dst[:, 0], tri_src[:, 0]  # [T, 2]
        e1, e2 = tri_dst[:, 1] - p0, tri_dst[:, 2] - p0  # [T, 2]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # [T]
        ok = np.abs(det) > 1e-6
        safe = np.where(ok, det, 1.0)
        adjugate = np.stack([np.stack([e2[:, 1], -e2[:, 0]], 1), np.stack([-e1[:, 1], e1[:, 0]], 1)], 1)  # [T, 2, 2]
        e_inv = adjugate / safe[:, None, None]
        f = np.stack([tri_src[:, 1] - q0, tri_src[:, 2] - q0], 2)  # [T, 2, 2] columns q1-q0, q2-q0
        linear = np.einsum("tij,tjk->tik", f, e_inv)  # [T, 2, 2]
        offset = q0 - np.einsum("tij,tj->ti", linear, p0)  # [T, 2]
        affine = np.concatenate([linear.transpose(0, 2, 1), offset[:, None, :]], 1)  # [T, 3, 2]: [x, y, 1] @ A
        ids = np.full((y1 - y0, x1 - x0), -1, np.int32)
        shift = 4  # sub-pixel vertex precision for the rasteriser
        pts = np.round((tri_dst - (x0, y0)) * (1 << shift)).astype(np.int32)  # [T, 3, 2]
        for t in np.flatnonzero(ok):
            cv2.fillConvexPoly(ids, pts[t], int(t), lineType=cv2.LINE_8, shift=shift)
        inside = ids >= 0
        a = affine[ids[inside]]  # [n, 3, 2]
        gx, gy = self.grid_x[inside], self.grid_y[inside]
        map_x, map_y = self.grid_x.copy(), self.grid_y.copy()
        map_x[inside] = gx * a[:, 0, 0] + gy * a[:, 1, 0] + a[:, 2, 0]
        map_y[inside] = gx * a[:, 0, 1] + gy * a[:, 1, 1] + a[:, 2, 1]
        return map_x, map_y


def _curve(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x-sorted (xs, ys) of a lip or lid contour, for np.interp (clamped beyond the ends)."""
    order = np.argsort(points[:, 0])
    return points[order, 0], points[order, 1]


def _anchor_ring(roi: tuple[int, int, int, int], spacing: float) -> np.ndarray:
    """Static points along the border of ``roi`` [K, 2]: they pin the warp to the identity at the border."""
    x0, y0, x1, y1 = roi
    nx = max(2, int(np.ceil((x1 - x0) / spacing)) + 1)
    ny = max(2, int(np.ceil((y1 - y0) / spacing)) + 1)
    xs = np.linspace(x0, x1 - 1, nx)
    ys = np.linspace(y0, y1 - 1, ny)
    top = np.stack([xs, np.full(nx, y0)], 1)
    bottom = np.stack([xs, np.full(nx, y1 - 1)], 1)
    left = np.stack([np.full(ny - 2, x0), ys[1:-1]], 1)
    right = np.stack([np.full(ny - 2, x1 - 1), ys[1:-1]], 1)
    return np.concatenate([top, bottom, left, right]).astype(np.float64)


def _triangulate(points: np.ndarray, holes: list[np.ndarray]) -> np.ndarray:
    """Delaunay triangles [T, 3] of ``points``, without triangles whose centroid lies inside a hole polygon."""
    from scipy.spatial import Delaunay

    triangles = Delaunay(points).simplices
    keep = np.ones(len(triangles), bool)
    centroids = points[triangles].mean(axis=1)
    for hole in holes:
        contour = hole.astype(np.float32).reshape(-1, 1, 2)
        for t, c in enumerate(centroids):
            if cv2.pointPolygonTest(contour, (float(c[0]), float(c[1])), False) > 0:
                keep[t] = False
    return triangles[keep]


@dataclass
class FaceRig:
    """Everything ``render_frame`` needs, prepared once by ``build_face_rig``."""

    image: np.ndarray  # working image uint8 [H, W, 3] RGB (levelled, upsampled photo)
    landmarks: np.ndarray  # [478, 2] FaceMesh points on ``image``
    size: int  # output frame side
    frame_box: tuple[float, float, float]  # output frame in working pixels: x0, y0, side
    pivot: np.ndarray  # [2] neck point the head rolls about (working pixels)
    mouth_width: float  # corner-to-corner, working pixels
    mouth_warp: PiecewiseAffineWarp
    mouth_points: np.ndarray  # [P, 2] control points of ``mouth_warp`` (landmarks then anchors)
    mouth_ids: np.ndarray  # [P] landmark id of each control point, -1 for anchors
    eye_warp: PiecewiseAffineWarp
    eye_points: np.ndarray
    eye_ids: np.ndarray
    interior: np.ndarray  # float32 [h, w, 3] mouth interior texture over the mouth warp's region


def detect_landmarks(image: np.ndarray) -> np.ndarray | None:
    """MediaPipe FaceMesh (refined, 478 points) on one RGB image: [478, 3] pixels (z scaled like x) or None."""
    from .solutions import face_mesh

    with face_mesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1,
                   min_detection_confidence=0.5) as mesh:
        result = mesh.process(np.ascontiguousarray(image))
    if not result.multi_face_landmarks:
        return None
    h, w = image.shape[:2]
    return np.array([[p.x * w, p.y * h, p.z * w] for p in result.multi_face_landmarks[0].landmark], np.float64)


def build_face_rig(size: int, photo: np.ndarray | None = None) -> FaceRig:
    """Prepare the demo face for ``size`` x ``size`` output frames (default photo: skimage astronaut)."""
    if photo is None:
        import skimage.data

        photo = skimage.data.astronaut()
    found = detect_landmarks(photo)
    if found is None:
        raise RuntimeError("FaceMesh found no face in the demo photo")
    lmk = found[:, :2]
    left_eye = lmk[[33, 133]].mean(0)
    right_eye = lmk[[263, 362]].mean(0)
    roll = np.degrees(np.arctan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
    face_centre = np.array([lmk[:, 0].mean(), lmk[:, 1].mean()])
    # working image: the photo levelled (roll removed) about the face centre and scaled so that the output frame
    # (SOURCE_CROP_SIDE photo pixels) maps to ``size`` pixels one-to-one, with a margin for the head motion
    scale = size / SOURCE_CROP_SIDE
    margin = int(round(0.12 * size))
    side = size + 2 * margin
    frame_centre = face_centre + (0.0, 0.05 * SOURCE_CROP_SIDE)  # face slightly above the frame centre
    m = cv2.getRotationMatrix2D((float(frame_centre[0]), float(frame_centre[1])), float(roll), scale)
    m[:, 2] += np.array([side / 2, side / 2]) - frame_centre  # frame centre -> working image centre
    image = cv2.warpAffine(photo, m, (side, side), flags=cv2.INTER_LANCZOS4 if scale > 1 else cv2.INTER_AREA,
                           borderMode=cv2.BORDER_REFLECT101)
    landmarks = np.concatenate([lmk, np.ones((len(lmk), 1))], 1) @ m.T  # [478, 2]
    w = float(np.linalg.norm(landmarks[291] - landmarks[61]))

    # mouth + jaw warp: landmarks of the lower face and a static ring around it
    centre = landmarks[[13, 14]].mean(0)
    roi = (int(centre[0] - 1.7 * w), int(landmarks[NOSE_TIP, 1] - 0.45 * w), int(centre[0] + 1.7 * w) + 1,
           int(landmarks[CHIN, 1] + 0.9 * w) + 1)
    roi = (max(roi[0], 0), max(roi[1], 0), min(roi[2], side), min(roi[3], side))
    mouth_ids = _points_inside(landmarks, roi, margin=0.06 * w)
    anchors = _anchor_ring(roi, 0.3 * w)
    mouth_points = np.concatenate([landmarks[mouth_ids], anchors])
    ids = np.concatenate([mouth_ids, -np.ones(len(anchors), np.int64)])
    hole = np.array([np.flatnonzero(ids == i)[0] for i in INNER_LIP_LOOP])
    triangles = _triangulate(mouth_points, [mouth_points[hole]])
    mouth_warp = PiecewiseAffineWarp(mouth_points, triangles, roi)

    # eyelid warp: both eyes and brows
    eye_lmk = np.concatenate([landmarks[ids_] for pair in EYES for ids_ in pair])
    brow_top = landmarks[[70, 105, 107, 336, 334, 300], 1].min()
    eroi = (int(eye_lmk[:, 0].min() - 0.5 * w), int(brow_top - 0.15 * w),
            int(eye_lmk[:, 0].max() + 0.5 * w) + 1, int(eye_lmk[:, 1].max() + 0.45 * w) + 1)
    eye_ids = _points_inside(landmarks, eroi, margin=0.06 * w)
    eye_anchors = _anchor_ring(eroi, 0.3 * w)
    eye_points = np.concatenate([landmarks[eye_ids], eye_anchors])
    eids = np.concatenate([eye_ids, -np.ones(len(eye_anchors), np.int64)])
    eye_warp = PiecewiseAffineWarp(eye_points, _triangulate(eye_points, []), eroi)

    frame_box = (float(margin), float(margin), float(size))
    pivot = np.array([landmarks[CHIN, 0], landmarks[CHIN, 1] + 0.6 * w])
    rig = FaceRig(image=image, landmarks=landmarks, size=size, frame_box=frame_box, pivot=pivot, mouth_width=w,
                  mouth_warp=mouth_warp, mouth_points=mouth_points, mouth_ids=ids, eye_warp=eye_warp,
                  eye_points=eye_points, eye_ids=eids, interior=np.zeros(0, np.float32))
    rig.interior = _interior_texture(rig)
    return rig


def _points_inside(landmarks: np.ndarray, roi: tuple[int, int, int, int], margin: float) -> np.ndarray:
    """Ids of the 468 face landmarks (not the iris points) strictly inside ``roi`` by ``margin`` pixels."""
    x0, y0, x1, y1 = roi
    p = landmarks[:468]
    inside_x = (p[:, 0] > x0 + margin) & (p[:, 0] < x1 - 1 - margin)
    inside = inside_x & (p[:, 1] > y0 + margin) & (p[:, 1] < y1 - 1 - margin)
    return np.flatnonzero(inside)


def _interior_texture(rig: FaceRig) -> np.ndarray:
    """Mouth interior over the mouth region, float32 [h, w, 3]: the photo's upper teeth where the photo shows
    them (they belong to the skull, so they stay put), a dark cavity below, darker towards the throat."""
    x0, y0, x1, y1 = rig.mouth_warp.roi
    lmk, w = rig.landmarks, rig.mouth_width
    h_, w_ = y1 - y0, x1 - x0
    yy, xx = np.mgrid[0:h_, 0:w_].astype(np.float32)
    centre = lmk[[13, 14]].mean(0) - (x0, y0)
    # cavity: dark red-brown, darkest at the centre of the opening, lighter towards the cheeks
    r = np.sqrt(((xx - centre[0]) / (0.45 * w)) ** 2 + ((yy - centre[1] - 0.2 * w) / (0.35 * w)) ** 2)
    shade = np.clip(r, 0, 1.5)[..., None]
    deep = np.array([28, 8, 10], np.float32)
    edge = np.array([95, 38, 42], np.float32)
    cavity = deep + (edge - deep) * (shade / 1.5)
    # upper teeth: the photo inside its own mouth opening, fading out towards the photo's lower lip
    mask = np.zeros((h_, w_), np.float32)
    upper = lmk[UPPER_INNER_LIP] - (x0, y0)
    lower = lmk[LOWER_INNER_LIP] - (x0, y0)
    teeth_bottom = upper + 0.75 * (lower - upper)
    poly = np.concatenate([upper, teeth_bottom[::-1]]).astype(np.float32)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, 0.02 * w))
    photo = rig.image[y0:y1, x0:x1].astype(np.float32)
    return cavity * (1 - mask[..., None]) + photo * mask[..., None]


def mouth_displacement(rig: FaceRig, visemes: np.ndarray) -> np.ndarray:
    """Moved mouth-warp control points [P, 2] for viseme values [4] = (jaw_open, lip_spread, lip_round, closure).

    Lower lip and chin follow the jaw, the upper lip barely moves; at jaw_open 0 (or closure 1) the lips meet
    on a line 30% of the way down the photo's mouth opening, so the rest mouth is closed. Spread moves the
    corners out (and slightly up), round draws them in.
    """
    from .demo_speech import mouth_opening

    jaw, spread, rnd, closure = (float(v) for v in visemes)  # closure acts through ``opening`` and the press
    opening = float(mouth_opening(np.asarray(visemes, np.float32)[None])[0])
    lmk, w = rig.landmarks, rig.mouth_width
    pts = rig.mouth_points
    x, y = pts[:, 0], pts[:, 1]
    xu, yu = _curve(lmk[UPPER_INNER_LIP])
    xl, yl = _curve(lmk[LOWER_INNER_LIP])
    xou, you = _curve(lmk[UPPER_OUTER_LIP])
    xol, yol = _curve(lmk[LOWER_OUTER_LIP])
    y_up, y_lo = np.interp(x, xu, yu), np.interp(x, xl, yl)
    y_mid = 0.5 * (y_up + y_lo)
    y_close = y_up + 0.3 * (y_lo - y_up)
    inner_left, inner_right = lmk[78, 0], lmk[308, 0]
    cx = 0.5 * (inner_left + inner_right)
    half = 0.5 * (inner_right - inner_left)
    profile = np.sqrt(np.clip(1 - ((x - cx) / half) ** 2, 0, 1))  # lip-gap shape across the mouth
    amplitude = 0.42 * w
    gap = opening * amplitude * profile
    upper_move = (y_close - y_up) - 0.12 * gap
    lower_move = (y_close - y_lo) + gap
    source_gap = float(np.interp(cx, xl, yl) - np.interp(cx, xu, yu))
    jaw_move = (jaw * amplitude - 0.7 * source_gap) * 0.85

    half_gap = np.maximum(0.5 * (y_lo - y_up), 0.06 * w)
    below = smoothstep(0.5 + 0.5 * (y - y_mid) / half_gap)  # 0 on the upper lip, 1 on the lower lip and chin
    upper_weight = smoothstep(1 - (np.interp(x, xou, you) - y) / (0.3 * w))  # upper lip -> nose base
    lip_weight = smoothstep(1 - (y - np.interp(x, xol, yol)) / (0.35 * w))  # lower lip -> chin
    dx_mouth = np.abs(x - lmk[[61, 291], 0].mean())
    jaw_weight = smoothstep((1.5 * w - dx_mouth) / (0.9 * w))  # chin fully, jaw angles hardly
    jaw_weight *= smoothstep(1 - (y - lmk[CHIN, 1]) / (0.8 * w))  # fades into the neck
    lower = lip_weight * lower_move + (1 - lip_weight) * jaw_move * jaw_weight
    dy = below * lower + (1 - below) * upper_weight * upper_move

    # corners: drop a little when the mouth opens; lift when spread
    ex = (x - lmk[[61, 291], 0].mean()) / (0.5 * w)
    semi_y = np.where(y < y_mid, 0.22 * w, 0.3 * w)
    lips_region = smoothstep(1.9 - np.sqrt(((x - cx) / (0.6 * w)) ** 2 + ((y - y_mid) / semi_y) ** 2))
    corner = lips_region * (0.06 * opening * amplitude - 0.05 * w * spread) * np.clip(ex ** 2, 0, 1)
    # round pouts (lip bodies bulge away from the mouth line), closure presses them together; inner edges stay
    lip_body = smoothstep((np.abs(y - y_mid) - half_gap) / (0.08 * w) + 0.5)
    bulge = (0.045 * rnd - 0.025 * closure) * w * np.sign(y - y_mid) * lip_body * lips_region * profile
    dy += corner + bulge
    # spread / round: horizontal scaling about the mouth centre
    k = 0.22 * spread - 0.34 * rnd - 0.06 * opening
    dx = (x - cx) * k * lips_region
    # the inner lips land exactly where the gap says, so a closed mouth shows no sliver of teeth
    inner_up = np.isin(rig.mouth_ids, UPPER_INNER_LIP[1:-1])
    inner_lo = np.isin(rig.mouth_ids, LOWER_INNER_LIP[1:-1])
    dy[inner_up] = (upper_move + corner)[inner_up]
    dy[inner_lo] = (lower_move + corner)[inner_lo]
    moved = pts + np.stack([dx, dy], 1)
    moved[rig.mouth_ids < 0] = pts[rig.mouth_ids < 0]  # anchors stay
    return moved


def eyelid_displacement(rig: FaceRig, blink: float) -> np.ndarray:
    """Moved eye-warp control points [P, 2]: upper lids down to the lower lids at blink 1 (lower lids rise a
    little), the skin above stretching with them."""
    pts = rig.eye_points
    moved = pts.copy()
    if blink <= 0:
        return moved
    lmk, w = rig.landmarks, rig.mouth_width
    x, y = pts[:, 0], pts[:, 1]
    for upper_ids, lower_ids in EYES:
        xu, yu = _curve(lmk[upper_ids])
        xl, yl = _curve(lmk[lower_ids])
        y_up, y_lo = np.interp(x, xu, yu), np.interp(x, xl, yl)
        gap = y_lo - y_up
        eye_width = xu.max() - xu.min()
        inside_x = smoothstep(1 - np.maximum(xu.min() - x, x - xu.max()) / (0.25 * eye_width))
        above = y < 0.5 * (y_up + y_lo)
        meet = y_up + 0.8 * gap  # lids meet low in the eye, as in a real blink
        fall_up = smoothstep(1 - (y_up - y) / (0.7 * eye_width))
        fall_lo = smoothstep(1 - (y - y_lo) / (0.4 * eye_width))
        dy_up = blink * (meet - y_up) * np.where(y >= y_up, 1.0, fall_up)
        dy_lo = blink * (meet - y_lo) * np.where(y <= y_lo, 1.0, fall_lo)
        moved[:, 1] += inside_x * np.where(above, dy_up, dy_lo)
    moved[rig.eye_ids < 0] = pts[rig.eye_ids < 0]
    return moved


def _mouth_interior_mask(rig: FaceRig, moved: np.ndarray) -> np.ndarray:
    """Anti-aliased mask [h, w] float32 of the moved mouth opening."""
    x0, y0, x1, y1 = rig.mouth_warp.roi
    index = {int(i): k for k, i in enumerate(rig.mouth_ids) if i >= 0}
    loop = moved[[index[i] for i in INNER_LIP_LOOP]] - (x0, y0)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round(loop * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


def _lower_teeth(rig: FaceRig, moved: np.ndarray, interior: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """Draw the tongue and the tips of the lower incisors just above the moved lower inner lip, on ``interior``
    (a part of the interior texture whose top-left corner is at working pixel ``origin``)."""
    x0, y0 = origin
    w = rig.mouth_width
    index = {int(i): k for k, i in enumerate(rig.mouth_ids) if i >= 0}
    lower = moved[[index[i] for i in LOWER_INNER_LIP]] - (x0, y0)
    out = interior.copy()
    h_, w_ = interior.shape[:2]
    yy, xx = np.mgrid[0:h_, 0:w_].astype(np.float32)
    mid = lower[len(lower) // 2]
    half = 0.5 * (lower[-1, 0] - lower[0, 0])
    # tongue: a soft dark-pink mound resting behind the lower teeth
    tongue = np.exp(-(((xx - mid[0]) / (0.55 * half)) ** 2 + ((yy - mid[1] + 0.02 * w) / (0.09 * w)) ** 2))
    tongue = (0.75 * tongue)[..., None]
    out = out * (1 - tongue) + np.array([120, 50, 55], np.float32) * tongue
    # lower incisors: a thin band following the central part of the lower lip
    central = lower[3:-3]
    band = 0.035 * w
    poly = np.concatenate([central + (0, 0.01 * w), (central - (0, band))[::-1]])
    layer = np.zeros((h_, w_), np.uint8)
    cv2.fillPoly(layer, [np.round(poly * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    side = np.clip(1 - np.abs(xx - mid[0]) / max(0.7 * half, 1.0), 0, 1)
    alpha = (layer.astype(np.float32) / 255.0 * 0.7 * side)[..., None]
    teeth = np.array([205, 196, 182], np.float32) * (0.7 + 0.3 * side[..., None])
    return out * (1 - alpha) + teeth * alpha


def render_frame(rig: FaceRig, visemes: np.ndarray, blink: float, head: HeadMotion) -> np.ndarray:
    """One output frame uint8 [size, size, 3] RGB for viseme values [4], blink in [0, 1] and a head motion."""
    image = rig.image.copy()
    # mouth and jaw
    moved = mouth_displacement(rig, visemes)
    map_x, map_y = rig.mouth_warp.maps(moved)
    x0, y0, x1, y1 = rig.mouth_warp.roi
    warped = cv2.remap(rig.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    mask = _mouth_interior_mask(rig, moved)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows):  # composite the drawn interior inside the opening's bounding box only
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        interior = _lower_teeth(rig, moved, rig.interior[r0:r1, c0:c1], (x0 + c0, y0 + r0))
        m = mask[r0:r1, c0:c1, None]
        box = warped[r0:r1, c0:c1].astype(np.float32)
        warped[r0:r1, c0:c1] = (box * (1 - m) + interior * m).round().astype(np.uint8)
    image[y0:y1, x0:x1] = warped
    # eyelids
    if blink > 0.01:
        moved_eyes = eyelid_displacement(rig, blink)
        ex, ey = rig.eye_warp.maps(moved_eyes)
        ex0, ey0, ex1, ey1 = rig.eye_warp.roi
        source = image.copy()
        image[ey0:ey1, ex0:ex1] = cv2.remap(source, ex, ey, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    # head motion + crop to the output frame in one resampling
    fx0, fy0, side = rig.frame_box
    out = rig.size
    rot = cv2.getRotationMatrix2D((float(rig.pivot[0]), float(rig.pivot[1])), head.roll_deg, head.zoom)
    rot = np.vstack([rot, [0, 0, 1]])
    crop = np.array([[out / side, 0, -fx0 * out / side + head.shift_x * out],
                     [0, out / side, -fy0 * out / side + head.shift_y * out], [0, 0, 1]])
    matrix = (crop @ rot)[:2]
    return cv2.warpAffine(image, matrix, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
