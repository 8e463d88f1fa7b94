"""Mouth retrieval: similarity alignment, the bank (fallback, exclusion, stickiness, file), aligned crops, and the
generator / training batches that read them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.errors import InputError
from talkinghead.gan.generator import Generator, GeneratorConfig
from talkinghead.gan.retrieval import (LipGeometry, MouthBank, RetrievalState, aligned_mouths, lip_box, lip_geometry,
                                       PAINT_GROW, paint_mouths, retrieved_inputs, similarity)


def lip_ring(n: int = 40, width: float = 30.0, height: float = 10.0, centre=(64.0, 80.0)) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([centre[0] + width / 2 * np.cos(t), centre[1] + height / 2 * np.sin(t)], 1).astype(np.float32)


def geometry(n: int, openings: np.ndarray, size: int = 128) -> LipGeometry:
    """Frames whose key is their opening (a 1-D mouth shape) and whose lips sit at the same place."""
    keys = np.stack([openings * 1000.0, np.zeros(n)], 1).astype(np.float32)
    lips = np.repeat(lip_ring()[None], n, axis=0)
    inner = np.repeat(lip_ring(20, 20.0, 6.0)[None], n, axis=0)  # the opening: a smaller ring inside the lips
    return LipGeometry(keys, lips, openings.astype(np.float32), inner)


def test_similarity_recovers_rotation_scale_translation():
    src = lip_ring()
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -12.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (scale * src @ rot.T + shift).astype(np.float32)
    matrix = similarity(src, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rot, atol=1e-4)
    np.testing.assert_allclose(src @ matrix[:, :2].T + matrix[:, 2], dst, atol=1e-3)


def test_bank_without_open_mouth_is_empty_and_says_why():
    g = geometry(50, np.full(50, 0.001))
    bank = MouthBank.build(np.arange(40), g, min_opening=0.003, stickiness=1.0, exclude=2)
    assert bank.empty and "no training frame opens the mouth" in bank.note
    assert (bank.retrieve(g.keys[:5], RetrievalState()) == -1).all()
    assert (bank.candidates(g.keys[:5], 3) == -1).all()
    frames = np.full((50, 128, 128, 3), 200, np.uint8)
    assert not aligned_mouths(frames, bank, np.full(5, -1), g.lips[:5]).any()  # nothing retrieved: zeros


def test_candidates_are_nearest_and_skip_the_targets_neighbourhood():
    openings = np.linspace(0.0, 0.01, 60)
    g = geometry(60, openings)
    bank = MouthBank.build(np.arange(40), g, min_opening=0.003, stickiness=1.0, exclude=3)
    assert not bank.empty and bank.note == "" and len(bank.frames) == 40
    near = bank.candidates(g.keys[[20]], 2)
    assert sorted(bank.frames[near[0]].tolist()) in ([19, 20], [20, 21])
    far = bank.candidates(g.keys[[20]], 2, exclude_rows=np.array([20]), radius=3)
    assert all(abs(int(bank.frames[j]) - 20) > 3 for j in far[0])  # the answer and its neighbours are not retrievable
    assert set(bank.frames[far[0]].tolist()) <= {16, 24}  # ... the nearest of the rest are


def test_stickiness_keeps_the_pick_between_near_equal_neighbours():
    rng = np.random.default_rng(0)
    openings = rng.uniform(0.0, 0.01, 200)
    g = geometry(200, openings)
    queries = g.keys[:1].repeat(40, 0) + rng.normal(0, 0.03, (40, 2)).astype(np.float32)  # one shape, jittering
    loose = MouthBank.build(np.arange(200), g, 0.003, stickiness=0.0, exclude=0)
    sticky = MouthBank.build(np.arange(200), g, 0.003, stickiness=50.0, exclude=0)
    def jumps(bank):  # switches to another footage frame than the same or the next one
        step = np.diff(bank.frames[bank.retrieve(queries, RetrievalState())])
        return np.count_nonzero((step != 0) & (step != 1))

    assert jumps(sticky) < jumps(loose) / 2
    # without a state every query gets its nearest frame
    np.testing.assert_array_equal(sticky.retrieve(queries), loose.retrieve(queries))


def test_bank_file_roundtrip_and_malformed(tmp_path):
    g = geometry(30, np.linspace(0, 0.01, 30))
    bank = MouthBank.build(np.arange(30), g, 0.003, 1.5, 2)
    bank.save(tmp_path / "mouth_bank.npz")
    back = MouthBank.load(tmp_path / "mouth_bank.npz")
    np.testing.assert_array_equal(back.frames, bank.frames)
    np.testing.assert_array_equal(back.lips, bank.lips)
    assert (back.stickiness, back.tolerance, back.note) == (1.5, bank.tolerance, "")
    (tmp_path / "bad.npz").write_bytes(b"not a bank")
    with pytest.raises(InputError, match="not a mouth bank"):
        MouthBank.load(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="missing"):
        MouthBank.load(tmp_path / "none.npz")


def test_aligned_mouth_moves_the_source_lips_onto_the_target():
    size = 128
    g = geometry(1, np.array([0.01]))
    bank = MouthBank.build(np.array([0]), g, 0.003, 1.0, 0)
    frame = np.zeros((1, size, size, 3), np.uint8)
    frame[0, 76:85, 60:69] = 255  # a bright square on the source's mouth centre (64, 80)
    target = g.lips[0] + np.array([10.0, -6.0], np.float32)  # the target's mouth is 10 px right, 6 px up
    out = aligned_mouths(frame, bank, np.array([0]), target[None])[0]
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert abs(xs.mean() - 74) < 1 and abs(ys.mean() - 74) < 1
    x0, y0, x1, y1 = lip_box(target, size)
    outside = np.ones((size, size), bool)
    outside[y0:y1, x0:x1] = False
    assert not out[outside].any()  # only the target's mouth box is filled


def test_lip_geometry_of_the_open_model():
    from talkinghead.headmodel import load_head_model

    model = load_head_model(None).eval()
    n = 3
    expression = np.zeros((n, 53), np.float32)
    expression[1, 50] = 0.3  # jaw open
    params = {"shape": np.zeros((n, 100), np.float32), "expression": expression,
              "pose": np.tile(np.array([0, 0.2, 0, 0, 0, 0], np.float32), (n, 1)),
              "camera": np.tile(np.array([8.0, 0.0, 0.0], np.float32), (n, 1))}
    params["pose"][2, 1] = -0.2  # frame 2: frame 0's mouth, head turned the other way
    g = lip_geometry(model, params, 128)
    assert g.keys.shape == (n, 2 * len(model.lip_vertex_ids)) and g.lips.shape == (n, len(model.lip_vertex_ids), 2)
    assert g.opening[1] > g.opening[0] + 0.003  # the jaw opens the mouth
    np.testing.assert_allclose(g.keys[2], g.keys[0], atol=1e-4)  # the key ignores head pose ...
    assert np.abs(g.lips[2] - g.lips[0]).max() > 1.0  # ... the projected lips do not
    # the inner-lip polygon: a simple ring around the opening, inside the lips, enclosing more when the jaw opens
    white = np.full((n, 128, 128, 3), 255, np.uint8)
    painted = paint_mouths(np.zeros_like(white), white, np.zeros(n, int), g.inner)
    area = painted[..., 0].sum(axis=(1, 2)) / 255.0  # px of the painted opening
    assert area[1] > 3 * area[0] + 20 and area[1] > 50
    lo, hi = g.lips[1].min(0), g.lips[1].max(0)
    assert (g.inner[1] >= lo - 0.5).all() and (g.inner[1] <= hi + 0.5).all()


def test_paint_mouths_fills_the_opening_only():
    size = 128
    g = geometry(3, np.full(3, 0.01))
    comps = np.full((3, size, size, 3), 40, np.uint8)
    mouths = np.full((3, size, size, 3), 220, np.uint8)
    out = paint_mouths(comps, mouths, np.array([0, -1, 0]), g.inner)
    assert out[0, 80, 64].tolist() == [220] * 3  # the opening's centre shows the retrieved mouth
    grow = PAINT_GROW  # the opening is grown a little, so its feathered edge falls on the retrieved lips
    assert (out[0, 80, 64 + 15] == 40).all() and (out[0, 80 + 9, 64] == 40).all()  # 6 px outside the 20 x 6 px ring: not
    painted = (out[0, ..., 0].astype(float) - 40).sum() / 180  # the feather moves weight, it does not add any
    perimeter = np.pi * (3 * (10 + 3) - np.sqrt((3 * 10 + 3) * (10 + 3 * 3)))  # Ramanujan
    assert abs(painted - (np.pi * 10 * 3 + perimeter * grow + np.pi * grow ** 2)) < 8  # the grown ellipse's area (Steiner)
    np.testing.assert_array_equal(out[1], comps[1])  # nothing retrieved (empty bank): the render stays
    assert (comps == 40).all()  # the input is not changed in place



def test_retrieved_inputs_paint_only_when_asked():
    g = geometry(40, np.linspace(0.004, 0.01, 40))
    bank = MouthBank.build(np.arange(30), g, min_opening=0.003, stickiness=1.0, exclude=2)
    frames = np.full((40, 128, 128, 3), 220, np.uint8)
    comps = np.full((2, 128, 128, 3), 40, np.uint8)
    picks = np.array([5, -1])
    painted, mouths, pixels = retrieved_inputs(comps, frames, bank, picks, g.lips[30:32], g.inner[30:32])
    np.testing.assert_array_equal(mouths, aligned_mouths(frames, bank, picks, g.lips[30:32]))
    np.testing.assert_array_equal(painted, paint_mouths(comps, mouths, picks, g.inner[30:32]))
    assert (painted[0] == 220).any() and not (painted[1] == 220).any()  # nothing retrieved: the render stays
    assert pixels.shape == (2, 128, 128) and pixels[0].any() and not pixels[1].any()
    np.testing.assert_array_equal(pixels, (painted != comps).any(axis=-1))  # exactly the pixels painting changed
    unpainted, _, none = retrieved_inputs(comps, frames, bank, picks, g.lips[30:32], None)
    np.testing.assert_array_equal(unpainted, comps)  # gan.paint_mouth off: the composites as they were
    assert none is None


def test_a_generator_that_keeps_the_painted_colour_changes_only_brightness_there():
    from talkinghead.gan import generate

    torch.manual_seed(0)
    g = Generator(GeneratorConfig(channels=(8, 16), use_reference=False, keep_painted_colour=True))
    torch.nn.init.normal_(g.head.weight, std=0.3)  # a residual with colour everywhere
    comps = np.full((1, 32, 32, 3), (200, 190, 185), np.uint8)
    comps[0, 10:20, 8:24] = 235  # the painted real teeth: white
    painted = np.zeros((1, 32, 32), bool)
    painted[0, 10:20, 8:24] = True
    out = generate(g, comps, painted=painted).astype(float)
    colour = out - out.mean(axis=-1, keepdims=True)  # each channel minus the pixel's grey
    teeth = colour[0, 11:19, 9:23]
    assert np.abs(teeth).max() <= 1.0  # white stays white (up to rounding), whatever brightness the net adds
    assert np.abs(colour[0, 25:, :]).max() > 3  # outside the painted opening the residual's colour remains
    free = generate(g, comps).astype(float)  # without the mask: the same net tints the teeth
    assert np.abs((free - free.mean(axis=-1, keepdims=True))[0, 11:19, 9:23]).max() > 3
    g.config.keep_painted_colour = False  # an older checkpoint: the mask is ignored
    np.testing.assert_array_equal(generate(g, comps, painted=painted), generate(g, comps))

def test_generator_with_retrieval_takes_nine_channels_and_old_configs_load():
    config = GeneratorConfig(channels=(8, 16), use_retrieval=True)
    assert config.in_channels == 9
    g = Generator(config)
    g.reference = torch.zeros(1, 3, 32, 32)
    torch.nn.init.normal_(g.head.weight)  # not the identity, so the input matters
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        none = g(x)
        zeros = g(x, None, torch.full_like(x, -1.0))
        other = g(x, None, torch.rand_like(x))
    torch.testing.assert_close(none, zeros)  # nothing retrieved == the all-zero (uint8) image
    assert (none - other).abs().max() > 1e-3
    old = {k: v for k, v in GeneratorConfig().to_dict().items() if k != "use_retrieval"}
    assert GeneratorConfig.from_dict(old).use_retrieval is False


def test_training_batches_carry_the_retrieved_mouths():
    from talkinghead.gan.trainer import GanData, RetrievalData, sample_batch

    n, size = 30, 64
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    boxes = np.tile(np.array([20, 30, 44, 54], np.float32), (n, 1))
    g = geometry(n, np.linspace(0, 0.01, n))
    g.lips[:] = lip_ring(width=16, height=6, centre=(32.0, 42.0))
    train = np.arange(24)
    for min_opening, filled in ((0.003, True), (1.0, False)):  # 1 m: a presenter who never opens the mouth
        bank = MouthBank.build(train, g, min_opening, 1.0, 3)
        retrieval = RetrievalData(bank, bank.candidates(g.keys, 3, np.arange(n), 3), g.lips, g.keys)
        data = GanData(frames, frames, boxes, train, np.arange(24, n), retrieval)
        batch = sample_batch(data, torch.Generator().manual_seed(0), 4, 32, None, torch.device("cpu"))
        assert batch.retrieved.shape == (4, 3, 32, 32)
        assert (batch.retrieved > -1).any() == filled  # an empty bank feeds zeros: the render alone
        # gan.paint_mouth: the same draw, with the composites' opening taken from the retrieved mouths
        retrieval.target_inner = np.repeat(lip_ring(20, 10.0, 4.0, (32.0, 42.0))[None], n, axis=0)
        painted = sample_batch(data, torch.Generator().manual_seed(0), 4, 32, None, torch.device("cpu"))
        torch.testing.assert_close(painted.retrieved, batch.retrieved)
        changed = (painted.composite - batch.composite).abs().amax(dim=1) > 0  # [4, 32, 32]
        assert changed.any() == filled and changed.float().mean() < 0.2  # the opening (and its feathered edge) only
        # the mask gan.w_mouth_keep holds the output to: exactly the painted pixels
        torch.testing.assert_close(painted.painted[:, 0], changed.float())
        assert batch.painted is None
    plain = sample_batch(GanData(frames, frames, boxes, train, np.arange(24, n)), torch.Generator().manual_seed(0),
                         4, 32, None, torch.device("cpu"))
    assert plain.retrieved is None


def test_evaluate_steadiness_and_open_mouth_helpers():
    from talkinghead.stages.evaluate import (colour_cast_metrics, colour_detail_metrics, mean_change, open_mouth_rows,
                                             temporal_metrics)

    crops = np.zeros((4, 2, 2, 3), np.uint8)
    crops[1] = 10
    crops[3] = 40
    np.testing.assert_allclose(mean_change(None, crops), [10, 10, 40])
    np.testing.assert_allclose(mean_change(np.full((2, 2, 3), 5, np.uint8), crops), [5, 10, 10, 40])
    t = temporal_metrics({"real": np.array([10.0, 10.0]), "generated": np.array([20.0, 10.0]), "fitted": np.array([5.0])})
    assert t["generated_ratio"] == pytest.approx(1.5) and t["fitted_ratio"] == pytest.approx(0.5)
    opening = np.array([1.0, 9.0, 8.5, 2.0, 7.0, -np.inf])
    frames = np.arange(100, 106)
    assert open_mouth_rows(opening, frames, 2, spacing=2) == [101, 104]  # 102 is too near 101
    detail = {"real": np.array([9.0, 2.0, 2.0]), "generated": np.array([0.0, 3.0, 4.0]),
              "composite": np.array([1.0, 1.0, 1.0])}
    c = colour_detail_metrics(detail, np.array([False, True, True]))  # the open frames only
    assert c["open_real"] == 2.0 and c["open_generated_ratio"] == pytest.approx(1.75)
    assert colour_detail_metrics(detail, np.zeros(3, bool))["open_real"] == pytest.approx(13 / 3)  # none open: all
    cast = colour_cast_metrics({"generated": np.array([9.0, 1.0, 2.0]), "composite": np.array([0.0, 1.0, 3.0])},
                               np.array([False, True, True]))
    assert cast == {"open_generated": 1.5, "open_composite": 2.0}
    closed = colour_cast_metrics({"generated": np.array([np.nan, 1.0, np.nan])}, np.array([False, True, True]))
    assert closed == {"open_generated": 1.0}  # frames with no opening to measure (NaN) are left out
