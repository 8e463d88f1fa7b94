"""GAN that turns a composite (rendered lower face pasted on the real crop) into a photoreal face crop.

>>> generator = load_generator("models/gan/demo/gan.pt", "cpu")
>>> frames = generate(generator, composites)          # uint8 [B, S, S, 3] -> uint8 [B, S, S, 3]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, describe
from ..tensorfile import load_checkpoint
from .generator import Generator, GeneratorConfig, to_uint8, to_unit

__all__ = ["Generator", "GeneratorConfig", "load_generator", "generate"]


def load_generator(checkpoint_path: str | Path, device: str | torch.device = "cpu",
                   image_size: int | None = None) -> Generator:
    """Generator from an inference checkpoint (gan.pt) or a training state; eval mode, channels_last.
    ``image_size``: the crop side it will run on, which its stored reference frame must match."""
    path = Path(checkpoint_path)
    if not path.exists():
        raise InputError(path, "missing; train it with `dvc repro train_gan@<presenter>`")
    try:
        state = load_checkpoint(path)
        generator = Generator(GeneratorConfig.from_dict(state["generator_config"]))
        generator.reference = state["generator"]["reference"]  # buffer size depends on the presenter
        generator.load_state_dict(state["generator"])
    except Exception as exc:  # any failure to read the file's content (a payload, a missing key, a wrong shape)
        raise InputError(path, f"not a GAN generator checkpoint, or one holding more than tensors and plain "
                               f"values ({describe(exc)}); retrain with `dvc repro train_gan@<presenter>`") from exc
    want = (1, 3, image_size, image_size)
    if image_size is not None and generator.config.use_reference and tuple(generator.reference.shape) != want:
        # checked here, where the file can be named, rather than failing at the first frame
        raise InputError(path, f"stored reference frame has shape {tuple(generator.reference.shape)}, the crops "
                               f"need {want}; retrain with `dvc repro train_gan@<presenter>`")
    return generator.to(device, memory_format=torch.channels_last).eval()


def mask_window(masks: np.ndarray, margin: int, multiple: int) -> tuple[int, int, int, int]:
    """The part of S x S crops the generator must see to repaint everything under ``masks`` (float [B, S, S]):
    (y0, y1, x0, x1), the masks' joint bounding box grown by ``margin`` px and snapped outward to ``multiple``
    (the generator's stride), clipped to the crop. Empty masks give an empty window (0, 0, 0, 0).

    Outside the mask the composite already is the real frame and the generator's residual is ~0 there, so running it
    on this window only gives the same pixels under the mask as running it on the whole crop once ``margin`` covers
    its receptive field (32 px: at most 1/255 apart on the demo; 48 px: identical), at a third of the cost."""
    size_y, size_x = masks.shape[1:3]
    rows = np.flatnonzero(masks.max(axis=(0, 2)) > 1e-3)
    cols = np.flatnonzero(masks.max(axis=(0, 1)) > 1e-3)
    if len(rows) == 0:
        return 0, 0, 0, 0
    y0 = max(0, (rows[0] - margin) // multiple * multiple)
    x0 = max(0, (cols[0] - margin) // multiple * multiple)
    y1 = min(size_y, -(-(rows[-1] + 1 + margin) // multiple) * multiple)
    x1 = min(size_x, -(-(cols[-1] + 1 + margin) // multiple) * multiple)
    return int(y0), int(y1), int(x0), int(x1)


def generate(generator: Generator, composites: np.ndarray | torch.Tensor, reference: np.ndarray | None = None,
             batch_size: int = 16, window: tuple[int, int, int, int] | None = None,
             retrieved: np.ndarray | None = None, painted: np.ndarray | None = None) -> np.ndarray:
    """uint8 [B, S, S, 3] composites (+ optional uint8 [S, S, 3] reference, default the stored one; + for a generator
    with use_retrieval the aligned retrieved mouths uint8 [B, S, S, 3], retrieval.aligned_mouths; + the painted
    pixels bool [B, S, S] of retrieval.retrieved_inputs, kept in the real mouth's colour by a generator with
    keep_painted_colour) -> uint8 [B, S, S, 3].

    ``window`` (y0, y1, x0, x1), e.g. from ``mask_window``: run the generator on that part only (composites and
    reference cut alike) and keep the composite elsewhere. Frames whose size is not a multiple of the network's
    stride are padded (replicate) and cropped back.
    """
    if window is not None:
        y0, y1, x0, x1 = window
        composites = np.asarray(composites)
        out = np.array(composites)  # outside the window: the composite (= the real frame outside the mask)
        if y1 > y0 and x1 > x0:
            stored = generator.reference
            if reference is None and generator.config.use_reference and stored.numel():
                reference = to_uint8(stored[:, :, y0:y1, x0:x1])[0].cpu().numpy()  # [h, w, 3]
            elif reference is not None:
                reference = np.asarray(reference)[y0:y1, x0:x1]
            mouths = None if retrieved is None else np.asarray(retrieved)[:, y0:y1, x0:x1]
            inside = None if painted is None else np.asarray(painted)[:, y0:y1, x0:x1]
            out[:, y0:y1, x0:x1] = generate(generator, composites[:, y0:y1, x0:x1], reference, batch_size,
                                            retrieved=mouths, painted=inside)
        return out
    device = next(generator.parameters()).device
    if isinstance(composites, torch.Tensor):
        composites = composites.cpu().numpy()
    composites = np.asarray(composites)  # a memmap stays a memmap: batches are read as they are needed
    if composites.dtype != np.uint8 or composites.ndim != 4 or composites.shape[-1] != 3:
        raise ValueError(f"composites: expected uint8 [B, S, S, 3], got {composites.dtype} {tuple(composites.shape)}")
    height, width = composites.shape[1:3]
    m = generator.config.multiple
    pad = (0, (-width) % m, 0, (-height) % m)  # left, right, top, bottom
    ref = None
    stored = generator.reference
    if reference is None and generator.config.use_reference and tuple(stored.shape[-2:]) != (height, width):
        raise ValueError(f"frames are {height}x{width} but the stored reference frame is "
                         f"{tuple(stored.shape[-2:])}: pass a reference of the frames' size")
    if reference is not None:
        ref = to_unit(torch.from_numpy(np.array(reference))[None]).to(device)  # [1, 3, S, S]
        ref = F.pad(ref, pad, mode="replicate")
    out = np.empty(tuple(composites.shape), np.uint8)
    was_training = generator.training
    generator.eval()
    with torch.inference_mode():
        for start in range(0, composites.shape[0], batch_size):
            chunk = torch.from_numpy(np.array(composites[start:start + batch_size]))  # copy: works on memmaps
            x = to_unit(chunk).to(device)  # [b, 3, S, S]
            x = F.pad(x, pad, mode="replicate").contiguous(memory_format=torch.channels_last)
            mouths = None
            if retrieved is not None and generator.config.use_retrieval:
                mouths = to_unit(torch.from_numpy(np.asarray(retrieved[start:start + batch_size]))).to(device)
                mouths = F.pad(mouths, pad, mode="replicate").contiguous(memory_format=torch.channels_last)
            keep = None
            if painted is not None and generator.config.keep_painted_colour:
                keep = torch.from_numpy(np.asarray(painted[start:start + batch_size], np.float32))[:, None].to(device)
                keep = F.pad(keep, pad)  # [b, 1, S, S]: padding is not painted
            y = generator(x, ref, mouths, keep)[:, :, :height, :width]
            out[start:start + batch_size] = to_uint8(y).cpu().numpy()
    generator.train(was_training)
    return out
