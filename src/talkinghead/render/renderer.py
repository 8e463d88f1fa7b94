"""Offscreen OpenGL rasteriser for batches of head meshes (moderngl, standalone EGL context).

Orthographic: vertices arrive in NDC (``talkinghead.headmodel.camera.to_ndc``: x, y in [-1, 1] with y up, z = depth,
larger = nearer), so the image is exactly the weak-perspective projection the fitter used:
pixel centre (i + 0.5) in a S-wide image sits at ndc_x = 2 (i + 0.5) / S - 1 -- GL's own viewport mapping.

Colours are per vertex and already shaded (albedo x SH irradiance, ``headmodel.sh.shade``). Faces whose three
vertices all lie in the mouth interior (``interior_t >= 0``) are drawn procedurally instead: a light upper-teeth band
next to the upper lip, a thinner lower-teeth band next to the lower lip and a dark cavity with a darker-red tongue
between, so the GAN sees where the lips part and where the teeth are.

On a machine without a GPU, Mesa's llvmpipe renders on the CPU (a few ms per 256x256 frame); with an NVIDIA driver the
same code runs on the GPU through NVIDIA's EGL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import shaders

EGL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1"

# Tried in order: Mesa/glvnd sonames first (what works on Debian with llvmpipe), then moderngl's defaults
# (libEGL.so / libGL.so, which some NVIDIA driver installs provide without the .1 links being found by glcontext).
CONTEXT_ATTEMPTS: tuple[dict[str, str], ...] = (
    {"backend": "egl", "libgl": "libGL.so.1", "libegl": "libEGL.so.1"},
    {"backend": "egl"},
)


def load_triton_first() -> None:
    """Import triton (when installed, as it is with CUDA builds of torch) before any EGL context exists.

    Mesa's llvmpipe links its own LLVM into the process; importing triton afterwards segfaults (measured: torch 2.14.1,
    Mesa llvmpipe with LLVM 15), and torch imports triton lazily, e.g. with ``torch._dynamo`` on an optimiser's first
    step. Importing it first costs ~0.1 s and the two then coexist, so a process may render and then train."""
    try:
        import triton  # noqa: F401
    except ImportError:  # CPU-only torch builds have no triton: nothing to order
        pass


def create_context():
    """A standalone headless OpenGL >= 3.3 context over EGL.

    Raises RuntimeError naming the Debian packages to install when no EGL device can be opened.
    """
    import moderngl

    load_triton_first()
    errors = []
    for kwargs in CONTEXT_ATTEMPTS:
        try:
            return moderngl.create_standalone_context(require=330, **kwargs)
        except Exception as exc:  # glcontext raises plain Exceptions with the loader's message
            errors.append(f"{kwargs}: {exc}")
    raise RuntimeError(
        "no OpenGL EGL device available for the renderer (tried " + "; ".join(errors) + "). "
        f"Install EGL and Mesa's software rasteriser: `sudo apt-get install {EGL_PACKAGES}` (Debian/Ubuntu), "
        "or run on a machine with the NVIDIA driver's EGL (libEGL_nvidia)."
    )


@dataclass(frozen=True)
class RenderParams:
    """params.yaml's ``render`` group: colours of the procedural mouth interior over interior_t (0 = upper lip,
    1 = lower lip), back-face culling of the skin and MSAA samples."""

    upper_teeth: float  # fraction of the interior next to the upper lip drawn as upper teeth
    lower_teeth: float
    teeth_color: tuple[float, float, float]
    cavity_color: tuple[float, float, float]
    tongue_color: tuple[float, float, float]
    tongue_center: float
    tongue_width: float
    edge: float
    # Skip skin faces seen from behind (clockwise on screen): half the rasterising work for a closed head. The
    # mouth interior is never culled (its winding is not meaningful). Needs consistently outward (CCW) faces.
    cull_back_faces: bool
    samples: int  # MSAA samples per pixel; 1 = none


@dataclass
class RenderOutput:
    """images: uint8 [B, S, S, 3] RGB (background black); mask: float32 [B, S, S] in {0, 1}, 1 = covered by the mesh;
    landmarks: the head model's FaceMesh landmarks in crop pixels, float32 [B, L, 2] (``render_parameters``)."""

    images: np.ndarray
    mask: np.ndarray
    landmarks: np.ndarray | None = None


@dataclass
class _InteriorSplit:
    """Index buffers of the skin and interior faces for one interior_t vector (cached: it is constant per model)."""

    interior_t: np.ndarray
    skin_vao: Any | None  # None when there are no such faces
    interior_vao: Any | None
    buffers: list = field(default_factory=list)


class Renderer:
    """Rasterise meshes with fixed topology ``faces`` [F, 3] (V vertices) into S x S images.

    ``params.samples`` > 1 renders with that many MSAA samples per pixel (anti-aliased edges, e.g. between lips and teeth) and
    resolves before reading back; the mask stays binary (coverage >= 1/2).

    >>> renderer = Renderer(model.faces.numpy(), model.num_vertices, 256, load_config(RenderParams, "render"))
    >>> out = renderer.render(ndc, colors, model.interior_t.numpy())
    """

    def __init__(self, faces: np.ndarray, num_vertices: int, image_size: int, params: RenderParams):
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces must be [F, 3], got {faces.shape}")
        if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
            raise ValueError(f"face indices must be in [0, {num_vertices}), got [{faces.min()}, {faces.max()}]")
        self.faces = faces.astype(np.int32)
        self.num_vertices = int(num_vertices)
        self.image_size = int(image_size)
        self.mouth = params

        self.ctx = create_context()
        self.program = self.ctx.program(vertex_shader=shaders.VERTEX, fragment_shader=shaders.FRAGMENT)
        for name in ("teeth_color", "cavity_color", "tongue_color", "upper_teeth", "lower_teeth", "tongue_center",
                     "tongue_width", "edge"):
            self.program[name].value = getattr(self.mouth, name)
        # Per-frame vertex data, interleaved [V, 6] = ndc xyz | colour rgb, rewritten for every frame.
        self.vertex_buffer = self.ctx.buffer(reserve=self.num_vertices * 6 * 4, dynamic=True)
        self.t_buffer = self.ctx.buffer(reserve=self.num_vertices * 4)
        # RGB image and a separate one-channel coverage mask: each reads back straight into its own array.
        self.fbo = self._framebuffer(0)
        self.samples = params.samples if params.samples > 1 else 0
        if self.samples > self.ctx.max_samples:
            raise ValueError(f"render.samples={params.samples} exceeds this OpenGL device's maximum of {self.ctx.max_samples}")
        self.draw_fbo = self._framebuffer(self.samples) if self.samples else self.fbo
        self._split: _InteriorSplit | None = None
        self._frame = np.empty((self.num_vertices, 6), np.float32)

    # -- setup --------------------------------------------------------------------------------------------------------
    def _framebuffer(self, samples: int):
        size = (self.image_size, self.image_size)
        return self.ctx.framebuffer(
            color_attachments=[self.ctx.renderbuffer(size, components=3, samples=samples),
                               self.ctx.renderbuffer(size, components=1, samples=samples)],
            depth_attachment=self.ctx.depth_renderbuffer(size, samples=samples),
        )

    def _vao(self, faces: np.ndarray):
        index = self.ctx.buffer(faces.astype(np.int32).tobytes())
        vao = self.ctx.vertex_array(
            self.program,
            [(self.vertex_buffer, "3f 3f", "in_ndc", "in_color"), (self.t_buffer, "1f", "in_t")],
            index_buffer=index, index_element_size=4,
        )
        return vao, index

    def _prepare(self, interior_t: np.ndarray) -> _InteriorSplit:
        """Split the faces into skin and mouth interior for this interior_t (reused while it does not change)."""
        if self._split is not None and np.array_equal(self._split.interior_t, interior_t):
            return self._split
        if self._split is not None:
            for obj in self._split.buffers:
                obj.release()
        self.t_buffer.write(interior_t.astype(np.float32).tobytes())
        inside = (interior_t[self.faces] >= 0).all(axis=1)  # [F]: a face is interior when all its corners are
        buffers = []
        skin_vao = interior_vao = None
        if (~inside).any():
            skin_vao, index = self._vao(self.faces[~inside])
            buffers += [skin_vao, index]
        if inside.any():
            interior_vao, index = self._vao(self.faces[inside])
            buffers += [interior_vao, index]
        self._split = _InteriorSplit(interior_t.copy(), skin_vao, interior_vao, buffers)
        return self._split

    # -- rendering ----------------------------------------------------------------------------------------------------
    def render(self, ndc: np.ndarray, colors: np.ndarray, interior_t: np.ndarray | None = None) -> RenderOutput:
        """Render a batch.

        ndc: [B, V, 3] (x, y in [-1, 1], y up; z larger = nearer); colors: [B, V, 3] in [0, 1] (clamped);
        interior_t: [V] (-1 skin, 0..1 mouth interior) or None for no interior.
        Returns RenderOutput(images uint8 [B, S, S, 3], mask float32 [B, S, S]).
        """
        ndc = _as_numpy(ndc)
        colors = _as_numpy(colors)
        if ndc.ndim != 3 or ndc.shape[1:] != (self.num_vertices, 3):
            raise ValueError(f"ndc must be [B, {self.num_vertices}, 3], got {ndc.shape}")
        if colors.shape != ndc.shape:
            raise ValueError(f"colors must be {ndc.shape}, got {colors.shape}")
        if interior_t is None:
            interior_t = np.full(self.num_vertices, -1.0, np.float32)
        interior_t = _as_numpy(interior_t).reshape(-1)
        if interior_t.shape != (self.num_vertices,):
            raise ValueError(f"interior_t must be [{self.num_vertices}], got {interior_t.shape}")

        batch = ndc.shape[0]
        size = self.image_size
        images = np.empty((batch, size, size, 3), np.uint8)
        cover = np.empty((batch, size, size), np.uint8)
        with self.ctx:  # make this renderer's context current (several renderers may share a thread)
            split = self._prepare(interior_t)
            self.draw_fbo.use()
            self.ctx.enable(self.ctx.DEPTH_TEST)
            # NDC is y up but the vertex shader flips y, so a face counter-clockwise in NDC is clockwise in GL.
            self.ctx.front_face = "cw"
            for b in range(batch):
                self._frame[:, :3] = ndc[b]
                self._frame[:, 3:] = colors[b]
                self.vertex_buffer.write(self._frame)
                self.program["depth_map"].value = _depth_map(ndc[b, :, 2])
                self.draw_fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
                if split.skin_vao is not None:
                    self.program["interior"].value = False
                    if self.mouth.cull_back_faces:
                        self.ctx.enable(self.ctx.CULL_FACE)
                    split.skin_vao.render()
                    self.ctx.disable(self.ctx.CULL_FACE)
                if split.interior_vao is not None:
                    self.program["interior"].value = True
                    split.interior_vao.render()
                if self.samples:
                    self.ctx.copy_framebuffer(self.fbo, self.draw_fbo)  # resolve the samples (both attachments)
                self.fbo.read_into(images[b], components=3, attachment=0, alignment=1)
                self.fbo.read_into(cover[b], components=1, attachment=1, alignment=1)
        mask = (cover > 127).astype(np.float32)
        return RenderOutput(images=images, mask=mask)

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        """Free the GL objects and the context now (otherwise they live until the process exits)."""
        with self.ctx:
            if self._split is not None:
                for obj in self._split.buffers:
                    obj.release()
                self._split = None
            for obj in {self.fbo, self.draw_fbo, self.vertex_buffer, self.t_buffer, self.program}:
                obj.release()
        self.ctx.release()


def _depth_map(z: np.ndarray) -> tuple[float, float]:
    """(offset, scale) mapping this frame's depth range into clip z [-0.9, 0.9], nearest -> -0.9 (wins GL_LESS)."""
    z_min, z_max = float(z.min()), float(z.max())
    return (0.5 * (z_min + z_max), 1.8 / max(z_max - z_min, 1e-6))


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def render_parameters(model, renderer: Renderer, params: dict) -> RenderOutput:
    """Render a batch of parameter vectors with the head model.

    params: dict of tensors [B, k] with keys shape (100), expression (53), texture (50), lighting (27), camera (3),
    pose (6), on the model's device. Runs model forward -> camera.to_ndc -> albedo -> vertex normals -> SH shade ->
    rasterise, without gradients; the same forward's landmarks come projected with it (``RenderOutput.landmarks``).
    """
    import torch

    from ..headmodel import camera, geometry, sh

    with torch.no_grad():
        out = model(params["shape"], params["expression"], params["pose"])
        ndc = camera.to_ndc(out.vertices, params["camera"])  # [B, V, 3]
        albedo = model.albedo(params["texture"])  # [B, V, 3]
        normals = geometry.vertex_normals(out.vertices, model.faces)  # [B, V, 3]
        colors = sh.shade(albedo, normals, params["lighting"])  # [B, V, 3]
        landmarks = camera.project(out.landmarks, params["camera"], renderer.image_size)  # [B, L, 2]
    if renderer.num_vertices != ndc.shape[1]:
        raise ValueError(f"renderer built for {renderer.num_vertices} vertices, model has {ndc.shape[1]}")
    output = renderer.render(ndc, colors, model.interior_t)
    output.landmarks = landmarks.cpu().numpy().astype(np.float32)
    return output


def project_landmarks(model, params: dict, image_size: int) -> np.ndarray:
    """The head model's FaceMesh landmarks of a batch of parameter vectors (tensors [B, k]: shape, expression, pose,
    camera) in crop pixels: float32 [B, L, 2], as ``render_parameters`` gives them for what it renders (here: the
    frame's fitted expression, where ``compositing.follow_expression`` moves the frame from)."""
    import torch

    from ..headmodel import camera

    with torch.no_grad():
        out = model(params["shape"], params["expression"], params["pose"])
        return camera.project(out.landmarks, params["camera"], image_size).cpu().numpy().astype(np.float32)
