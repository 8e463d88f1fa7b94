"""GAN: network shapes, mouth crops, component-loss gradient, kill-and-resume, metrics, inference API."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.gan import generate, load_generator
from talkinghead.gan.face_discriminator import MultiScaleDiscriminator, PatchDiscriminatorConfig
from talkinghead.gan.generator import Generator, GeneratorConfig, smooth_chroma, to_unit
from talkinghead.gan.mouth_discriminator import MouthDiscriminator, MouthDiscriminatorConfig, crop_mouths
from talkinghead.gan.retrieval import MouthBank
from talkinghead.gan.synthetic import make_synthetic_presenter
from talkinghead.gan.trainer import GanParams, GanTrainer, adversarial_g_loss, box_mask, sample_batch
from talkinghead.errors import InputError
from talkinghead.imagemetrics import colour_cast_per_image, colour_detail_per_image, psnr, ssim
from talkinghead.paths import PresenterPaths
from talkinghead.stages.train_gan import load_gan_data

from configs import project_config

SIZE = 64  # tiny frames keep the training tests fast


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> PresenterPaths:
    paths = PresenterPaths.of("synth", root=tmp_path_factory.mktemp("gan"))
    make_synthetic_presenter(paths, n_frames=30, size=SIZE, seed=1)
    return paths


def tiny_trainer(**overrides) -> GanTrainer:
    train = project_config(GanParams, "gan", **{
        "batch_size": 2, "crop_size": 32, "full_res_fraction": 0.34, "max_steps": 6, "max_seconds": 1e9,
        "checkpoint_every": 3, "log_every": 1, "seed": 3, "target_loss": 0.0, **overrides})
    return GanTrainer(GeneratorConfig(channels=(8, 16, 32), image_size=SIZE), train,
                      PatchDiscriminatorConfig(base_channels=8), MouthDiscriminatorConfig(crop_size=16, base_channels=8))


# ---- shapes -------------------------------------------------------------------------------------------
def test_generator_shapes_and_range():
    for use_reference in (True, False):
        g = Generator(GeneratorConfig(use_reference=use_reference))
        x = torch.rand(2, 3, 128, 96) * 2 - 1
        ref = torch.rand(1, 3, 128, 96) * 2 - 1 if use_reference else None
        with torch.no_grad():
            y = g(x, ref)
        assert y.shape == (2, 3, 128, 96)
        assert y.min() >= -1 and y.max() <= 1


def test_smooth_chroma_keeps_brightness_detail_and_coarsens_colour():
    h = w = 16
    checker = torch.from_numpy(np.indices((h, w)).sum(0) % 2 * 2.0 - 1)[None, None].float()  # [1, 1, H, W], +-1
    grey = checker.expand(1, 3, h, w)  # per-pixel brightness detail (same change in every channel)
    colour = torch.cat([checker, -checker, torch.zeros_like(checker)], dim=1)  # per-pixel red/green speckles
    tint = torch.tensor([0.3, -0.1, -0.2]).view(1, 3, 1, 1).expand(1, 3, h, w)  # a flat colour change
    out = smooth_chroma(grey + colour + tint, pool=4)
    torch.testing.assert_close(out, grey + tint)  # speckles averaged away, brightness and flat colour kept
    g = Generator(GeneratorConfig(channels=(8, 16), use_reference=False, chroma_pool=4))
    assert g.config.multiple == 4  # a window snapped to 4 pools the same blocks as the whole crop
    torch.nn.init.normal_(g.head.weight, std=0.5)  # an untrained head's zero residual would show nothing
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        residual = g(x) - x
    colour_part = residual - residual.mean(1, keepdim=True)
    torch.testing.assert_close(smooth_chroma(colour_part, 4), colour_part, atol=0.05, rtol=0)


def test_generator_without_stored_reference_says_so():
    with pytest.raises(ValueError, match="reference"):
        Generator(GeneratorConfig(channels=(8, 16)))(torch.zeros(1, 3, 32, 32))


def test_discriminator_shapes():
    face = MultiScaleDiscriminator(PatchDiscriminatorConfig(scales=2, layers=3))
    outs = face(torch.zeros(2, 3, 128, 128), torch.zeros(2, 3, 128, 128))
    assert [o[-1].shape for o in outs] == [(2, 1, 16, 16), (2, 1, 8, 8)]
    mouth = MouthDiscriminator(MouthDiscriminatorConfig(crop_size=64, layers=3))
    boxes = torch.tensor([[10.0, 20.0, 60.0, 50.0], [0.0, 0.0, 128.0, 128.0]])
    out = mouth(torch.zeros(2, 3, 128, 128), torch.zeros(2, 3, 128, 128), boxes)
    assert out[-1].shape == (2, 1, 8, 8)


# ---- mouth crops --------------------------------------------------------------------------------------
def test_roi_align_returns_the_box_content():
    h, w = 64, 96
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    marked = torch.zeros(h, w)
    x0, y0, x1, y1 = 40, 20, 72, 52
    marked[y0:y1, x0:x1] = 1.0
    image = torch.stack([xs, ys, marked])[None]  # [1, 3, H, W]: pixel x, pixel y, box marker
    crop = crop_mouths(image, torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32), size=32)[0]
    # a linear ramp is reproduced exactly by bilinear sampling: the crop's pixels are the box's pixels
    torch.testing.assert_close(crop[0], xs[y0:y1, x0:x1], atol=1e-4, rtol=0)
    torch.testing.assert_close(crop[1], ys[y0:y1, x0:x1], atol=1e-4, rtol=0)
    assert torch.all(crop[2][1:-1, 1:-1] == 1.0) and crop[2].min() >= 0.7
    elsewhere = crop_mouths(image, torch.tensor([[0.0, 0.0, 32.0, 16.0]]), size=16)[0]
    assert elsewhere[2].max() == 0


def test_box_mask_marks_pixel_centres_inside():
    mask = box_mask(torch.tensor([[2.0, 1.0, 5.0, 3.0]]), 6, 8)[0, 0]
    assert mask.sum() == 3 * 2 and mask[1:3, 2:5].all()


# ---- the component loss reaches the generator ---------------------------------------------------------
def test_component_loss_gradient_reaches_generator_inside_mouth_box_only():
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(channels=(8, 16, 32), use_reference=False))
    mouth = MouthDiscriminator(MouthDiscriminatorConfig(crop_size=16, base_channels=8))
    composite = torch.rand(2, 3, 64, 64) * 2 - 1
    boxes = torch.tensor([[20.0, 30.0, 44.0, 46.0], [10.0, 12.0, 30.0, 28.0]])
    fake = g(composite)
    fake.retain_grad()
    loss = adversarial_g_loss(mouth(composite, fake, boxes)[-1], "lsgan")
    loss.backward()
    grad = fake.grad.abs().sum(1)  # [B, H, W]
    inside = box_mask(boxes, 64, 64)[:, 0].bool()
    near = box_mask(boxes + torch.tensor([-1.0, -1.0, 1.0, 1.0]), 64, 64)[:, 0].bool()
    assert torch.all(grad[inside].reshape(2, -1).sum(1) > 0)
    assert grad[~near].max() == 0  # nothing outside the box (bilinear taps reach at most 1 px beyond it)
    assert sum(p.grad.abs().sum() for p in g.parameters()) > 0


def test_trainer_step_with_only_component_loss_updates_generator(synthetic):
    data = load_gan_data(synthetic, 0.2)
    trainer = tiny_trainer(w_l1=0.0, w_face_adv=0.0, w_feature_matching=0.0, w_mouth_adv=1.0)
    trainer.set_reference(data)
    before = [p.detach().clone() for p in trainer.generator.parameters()]
    batch = sample_batch(data, trainer.sampler, 2, 32, trainer.reference_image(data), trainer.device)
    trainer.train_step(batch)  # the zero-initialised head moves first ...
    trainer.train_step(batch)  # ... then the gradient reaches every layer
    changed = [not torch.equal(b, p) for b, p in zip(before, trainer.generator.parameters())]
    assert all(changed)


# ---- kill and resume ----------------------------------------------------------------------------------
class Killed(Exception):
    pass


def test_kill_and_resume_continues_exactly(synthetic, tmp_path):
    torch.set_num_threads(1)  # identical float reduction order in both runs
    data = load_gan_data(synthetic, 0.2)
    assert data.train_index.max() < data.heldout_index.min()

    straight = tiny_trainer()
    assert straight.fit(data, tmp_path / "straight.pt", progress=False) == "max_steps"

    ckpt = tmp_path / "killed.pt"
    first = tiny_trainer()

    def kill_at_5(step: int) -> None:
        if step == 5:
            raise Killed  # after the step-3 checkpoint, before the next: steps 4-5 are lost
    with pytest.raises(Killed):
        first.fit(data, ckpt, on_step=kill_at_5, progress=False)

    resumed = tiny_trainer()
    assert resumed.load(ckpt)
    assert resumed.step == 3
    adam_steps = {int(s["step"]) for s in resumed.opt_g.state_dict()["state"].values()}
    assert adam_steps == {3}  # optimizer moments continue from step 3, not from zero
    assert resumed.crop_for_step(3, SIZE) == 32 and resumed.crop_for_step(5, SIZE) == SIZE
    assert resumed.fit(data, ckpt, progress=False) == "max_steps"
    assert resumed.step == straight.step == 6
    for a, b in zip(straight.generator.state_dict().values(), resumed.generator.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for a, b in zip(straight.face_d.parameters(), resumed.face_d.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert resumed.sampler.get_state().equal(straight.sampler.get_state())


def test_checkpoint_of_other_config_is_not_resumed(synthetic, tmp_path):
    data = load_gan_data(synthetic, 0.2)
    trainer = tiny_trainer(max_steps=1)
    trainer.fit(data, tmp_path / "state.pt", progress=False)
    assert not tiny_trainer(lr_g=1e-3).load(tmp_path / "state.pt")
    assert tiny_trainer(max_steps=50).load(tmp_path / "state.pt", data)  # a larger budget continues training
    other = load_gan_data(synthetic, 0.5)  # another split: the upstream data changed
    assert not tiny_trainer().load(tmp_path / "state.pt", other)


def test_a_prior_gives_a_fresh_trainer_its_weights_and_ties_its_resumption(synthetic, tmp_path):
    data = load_gan_data(synthetic, 0.2)
    donor = tiny_trainer(max_steps=2)
    donor.fit(data, tmp_path / "donor.pt", progress=False)
    prior = donor.prior_weights()
    assert "reference" not in prior["generator"]  # the donor's reference frame stays with the donor

    started = tiny_trainer(seed=5)  # other random weights, until the prior replaces them
    started.start_from(prior, "digest-1")
    for name, value in donor.generator.state_dict().items():
        if name != "reference":
            torch.testing.assert_close(started.generator.state_dict()[name], value)
    for a, b in zip(donor.mouth_d.parameters(), started.mouth_d.parameters()):
        torch.testing.assert_close(a, b)
    assert not started.opt_g.state_dict()["state"]  # fresh optimisers: the prior carries weights only
    started.fit(data, tmp_path / "state.pt", progress=False)
    assert started.generator.reference.shape == (1, 3, SIZE, SIZE)  # its own presenter's reference frame

    again = tiny_trainer(seed=5)
    again.start_from(prior, "digest-1")
    assert again.load(tmp_path / "state.pt", data)  # a kill resumes on top of the same prior ...
    other_prior = tiny_trainer(seed=5)
    other_prior.start_from(prior, "digest-2")
    assert not other_prior.load(tmp_path / "state.pt", data)  # ... but not on another prior's run
    assert not tiny_trainer(seed=5).load(tmp_path / "state.pt", data)  # nor on a random start's

    wider = GanTrainer(GeneratorConfig(channels=(8, 16, 64), image_size=SIZE), donor.train_config,
                       PatchDiscriminatorConfig(base_channels=8), MouthDiscriminatorConfig(crop_size=16, base_channels=8))
    with pytest.raises(ValueError, match=r"generator_config\.channels"):
        wider.start_from(prior, "digest-1")


def test_prior_stage_and_train_gan_started_from_it(tmp_path, monkeypatch, capsys):
    """The gan_prior stage trains the prior's budget and writes prior.pt; train_gan --init-from starts there and says
    so in its metrics; gan_prior.max_steps 0 writes a prior that says none; a broken prior is one error naming it."""
    from talkinghead.stages import train_gan

    from configs import write_project_params

    gan = {"image_size": SIZE, "channels": [8, 16], "d_channels": 8, "mouth_crop": 16, "batch_size": 2, "crop_size": 32,
           "max_steps": 2, "checkpoint_every": 2, "sample_every": 100, "log_every": 1, "threads": 1}
    write_project_params(tmp_path, presenters=["synth"], gan=gan,
                         gan_prior={"presenter": "synth", "max_steps": 3, "max_seconds": 1e9})
    make_synthetic_presenter(PresenterPaths.of("synth", tmp_path), n_frames=20, size=SIZE, seed=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path}/mlruns")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    train_gan.main(["data/interim/synth", "--prior", "--out", "models/gan_prior", "--no-progress"])
    prior = torch.load("models/gan_prior/prior.pt", weights_only=True)
    assert prior["presenter"] == "synth" and prior["steps"] == 3  # its own budget, not gan.max_steps
    assert Path("models/gan_prior/train_state.pt").is_file()
    assert not Path("reports/gan/synth").exists()  # the prior writes no presenter's reports

    train_gan.main(["data/interim/synth", "--out", "models/gan/synth", "--init-from", "models/gan_prior/prior.pt",
                    "--no-progress"])
    metrics = json.loads(Path("reports/gan/synth/metrics.json").read_text())
    assert metrics["initial_weights"] == "prior: 3 steps on synth" and metrics["steps"] == 2

    write_project_params(tmp_path, presenters=["synth"], gan=gan,
                         gan_prior={"presenter": "synth", "max_steps": 0, "max_seconds": 1e9})
    train_gan.main(["data/interim/synth", "--prior", "--out", "models/gan_prior", "--no-progress"])
    assert torch.load("models/gan_prior/prior.pt", weights_only=True) == {"presenter": None, "steps": 0}
    shutil.rmtree("models/gan/synth")
    train_gan.main(["data/interim/synth", "--out", "models/gan/synth", "--init-from", "models/gan_prior/prior.pt",
                    "--no-progress"])
    assert json.loads(Path("reports/gan/synth/metrics.json").read_text())["initial_weights"].startswith("random")

    # the same weights saved again (other bytes, maybe) keep the digest a training state is resumed on
    write_project_params(tmp_path, presenters=["synth"], gan=gan,
                         gan_prior={"presenter": "synth", "max_steps": 3, "max_seconds": 1e9})
    train_gan.main(["data/interim/synth", "--prior", "--out", "models/gan_prior", "--no-progress"])
    digest = train_gan.load_prior(Path("models/gan_prior/prior.pt"))[1]
    resaved = dict(torch.load("models/gan_prior/prior.pt", weights_only=True))
    resaved["generator"] = {k: v.clone() for k, v in resaved["generator"].items()}
    torch.save(resaved, "models/gan_prior/again.pt")
    assert train_gan.load_prior(Path("models/gan_prior/again.pt"))[1] == digest
    resaved["mouth_d"] = {k: v + 1e-3 for k, v in resaved["mouth_d"].items()}
    torch.save(resaved, "models/gan_prior/changed.pt")
    assert train_gan.load_prior(Path("models/gan_prior/changed.pt"))[1] != digest

    del resaved["face_config"]  # a prior written by something else: one error too, not a KeyError
    torch.save(resaved, "models/gan_prior/partial.pt")
    with pytest.raises(InputError, match="not a GAN prior"):
        train_gan.load_prior(Path("models/gan_prior/partial.pt"))

    Path("models/gan_prior/prior.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        train_gan.main(["data/interim/synth", "--out", "models/gan/synth", "--init-from", "models/gan_prior/prior.pt",
                        "--no-progress"])
    assert exit_info.value.code != 0
    assert "models/gan_prior/prior.pt: not a GAN prior" in capsys.readouterr().err


# ---- inference API ------------------------------------------------------------------------------------
def test_export_load_generate_round_trip(synthetic, tmp_path):
    data = load_gan_data(synthetic, 0.2)
    trainer = tiny_trainer(max_steps=1)
    trainer.fit(data, tmp_path / "state.pt", progress=False)
    trainer.export(tmp_path / "gan.pt")
    generator = load_generator(tmp_path / "gan.pt", "cpu")
    composites = np.array(data.composites[:3])
    out = generate(generator, composites)
    assert out.dtype == np.uint8 and out.shape == composites.shape
    with torch.no_grad():
        direct = trainer.generator.eval()(to_unit(torch.from_numpy(composites)))
    expected = direct.add(1).mul(127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    # odd sizes are padded to the network stride and cropped back (with a reference of the same size)
    assert generate(generator, composites[:, :50, :50], composites[0, :50, :50]).shape == (3, 50, 50, 3)
    with pytest.raises(ValueError, match="reference"):
        generate(generator, composites[:, :32, :32])  # the stored reference is 64x64


def test_mouth_keep_term_is_the_l1_to_the_composite_inside_the_painted_mouth():
    from talkinghead.gan.trainer import Batch

    torch.manual_seed(0)
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    composite = real.clone()
    painted = torch.zeros(2, 1, 32, 32)
    painted[:, :, 12:20, 10:22] = 1  # the retrieved mouth's pixels: they differ from the real frame
    composite[:, :, 12:20, 10:22] = -0.5
    boxes = torch.tensor([[8.0, 8.0, 24.0, 24.0]] * 2)
    reference = torch.zeros_like(real)

    def first_step(weight: float, mask: torch.Tensor | None) -> tuple[dict[str, float], float]:
        trainer = tiny_trainer(w_mouth_keep=weight)  # same seed: the same initial networks for every weight
        torch.nn.init.normal_(trainer.generator.head.weight, std=0.1, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():  # a residual, so the output leaves the composite
            fake = trainer.generator(composite, reference)
        expected = float((painted * (fake - composite).abs()).mean())
        return trainer.train_step(Batch(composite, real, reference, None, boxes, mask)), expected

    off, expected = first_step(0.0, painted)
    on, _ = first_step(10.0, painted)
    assert expected > 0 and on["mouth_keep"] == pytest.approx(expected, rel=1e-5)
    assert on["g_loss"] - off["g_loss"] == pytest.approx(10.0 * expected, rel=1e-3)  # in the generator's loss
    unpainted, _ = first_step(10.0, None)
    assert unpainted["mouth_keep"] == 0.0 and unpainted["g_loss"] == pytest.approx(off["g_loss"])  # nothing painted


# ---- metrics ------------------------------------------------------------------------------------------
def test_psnr_known_values():
    rng = np.random.default_rng(0)
    a = rng.integers(20, 236, (3, 32, 32, 3)).astype(np.uint8)
    assert psnr(a, a) == math.inf
    noisy = (a.astype(int) + rng.choice([-10, 10], a.shape)).astype(np.uint8)  # every pixel off by 10 -> MSE 100
    assert psnr(a, noisy) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-6)


def test_ssim_identical_and_against_skimage():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 40, 48, 3)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    expected = np.mean([structural_similarity(x, y, channel_axis=-1, data_range=255, gaussian_weights=True,
                                              sigma=1.5, use_sample_covariance=False) for x, y in zip(a, b)])
    assert ssim(a, b) == pytest.approx(expected, abs=1e-4)
    assert ssim(a, b) < 0.99


def test_colour_detail_sees_coloured_speckles_not_grey_edges():
    rng = np.random.default_rng(2)
    smooth = np.zeros((1, 32, 32, 3), np.uint8)
    smooth[..., 0] = np.linspace(120, 200, 32)[None, :]  # a smooth red ramp: colour, but no fine colour detail
    smooth[..., 1:] = 90
    grey_edges = np.repeat(np.where(rng.random((1, 32, 32, 1)) < 0.5, 40, 220), 3, axis=-1).astype(np.uint8)
    speckled = smooth.copy()
    spots = rng.random((32, 32)) < 0.1
    speckled[0][spots] = (40, 220, 40)  # green specks
    detail = colour_detail_per_image(np.concatenate([smooth, grey_edges, speckled]))
    assert detail[0] < 0.5 and detail[1] < 1e-6  # a ramp blurs to itself; grey pixels have no colour at all
    assert detail[2] > 10


def test_colour_cast_sees_a_tint_not_speckles_or_brightness():
    rng = np.random.default_rng(3)
    real = np.full((1, 32, 32, 3), 230, np.uint8)  # white teeth
    real[:, 12:20] = 30  # a dark gap
    tinted = real.copy()
    tinted[..., 1] = np.clip(tinted[..., 1].astype(int) + 30, 0, 255)  # the same teeth, greenish
    speckled = real.copy()
    speckled[0][rng.random((32, 32)) < 0.05] = (40, 220, 40)  # a few green specks
    darker = (real * 0.8).astype(np.uint8)  # grey stays grey: no colour change
    cast = colour_cast_per_image(np.concatenate([real, tinted, speckled, darker]), np.repeat(real, 4, axis=0))
    assert cast[0] == 0 and cast[3] < 1e-6
    assert cast[1] > 10 and cast[2] < cast[1] / 2  # a tint over the whole mouth is far more than scattered specks
    with pytest.raises(ValueError, match="differ in shape"):
        colour_cast_per_image(real, np.repeat(real, 2, axis=0))


def test_interior_colour_cast_sees_a_tint_on_small_teeth_that_the_whole_crop_dilutes():
    from talkinghead.compositing import inner_lip_masks
    from talkinghead.facemesh import INNER_LOWER, INNER_UPPER
    from talkinghead.imagemetrics import interior_colour_cast_per_image

    real = np.full((1, 64, 64, 3), (200, 120, 110), np.uint8)  # lips and skin
    real[:, 28:36, 24:40] = 235  # a small row of white teeth
    tinted = real.copy()
    tinted[:, 28:36, 24:40] = (200, 255, 200)  # green teeth, nothing else changed
    lmk = np.full((1, 478, 3), 32.0)
    lmk[0, list(INNER_UPPER), 0] = np.linspace(24, 40, len(INNER_UPPER))  # an opening around the teeth
    lmk[0, list(INNER_UPPER), 1] = 28.0
    lmk[0, list(INNER_LOWER), 0] = np.linspace(24, 40, len(INNER_LOWER))
    lmk[0, list(INNER_LOWER), 1] = 36.0
    inside = inner_lip_masks(lmk, 64)[..., 0] / 255.0
    assert inside.shape == (1, 64, 64) and 100 < inside.sum() < 160
    assert inside[0, 32, 32] == 1 and inside[0, 10, 10] == 0
    interior = interior_colour_cast_per_image(tinted, real, inside)
    whole = colour_cast_per_image(tinted, real)
    assert interior[0] > 10 and interior[0] > 3 * whole[0]
    assert interior_colour_cast_per_image(real, real, inside)[0] == 0
    closed = interior_colour_cast_per_image(tinted, real, np.zeros((1, 64, 64)))
    assert np.isnan(closed[0])  # a closed mouth has no inside to measure
    nan_lmk = np.full((1, 478, 3), np.nan)
    assert inner_lip_masks(nan_lmk, 64).max() == 0
    with pytest.raises(ValueError, match="do not match"):
        interior_colour_cast_per_image(tinted, real, inside[:, :32])


def test_metrics_reject_non_uint8():
    with pytest.raises(ValueError):
        psnr(np.zeros((1, 16, 16, 3), np.float32), np.zeros((1, 16, 16, 3), np.float32))


# ---- the stage: registered model ----------------------------------------------------------------------
def test_stage_registers_a_generator_that_loads_safely(tmp_path, monkeypatch):
    """train_gan@NAME as DVC runs it: the generator becomes a version of talkinghead-gan-NAME (tagged with the commit,
    the stage and its deps fingerprint), whose artifact is the weights-only gan.pt, loadable as a pyfunc model that
    generates what the DVC output generates."""
    import mlflow

    from talkinghead import registry
    from talkinghead.stages import train_gan
    from talkinghead.tensorfile import load_checkpoint

    from configs import write_project_params

    write_project_params(tmp_path, presenters=["synth"], gan={
        "image_size": SIZE, "channels": [8, 16], "d_channels": 8, "mouth_crop": 16, "batch_size": 2, "crop_size": 32,
        "max_steps": 2, "checkpoint_every": 2, "sample_every": 100, "log_every": 1, "threads": 1})
    paths = PresenterPaths.of("synth", tmp_path)
    make_synthetic_presenter(paths, n_frames=20, size=SIZE, seed=2)
    shutil.copy(Path(__file__).resolve().parents[1] / "dvc.yaml", tmp_path)  # the stage's deps and params
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path}/mlruns")  # a fresh SQLite store migrates for ~10 s
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    train_gan.main(["data/interim/synth", "--out", "models/gan/synth", "--no-progress"])

    losses = np.genfromtxt("reports/gan/synth/losses.csv", delimiter=",", names=True)
    stage_metrics = json.loads(Path("reports/gan/synth/metrics.json").read_text())
    assert stage_metrics["retrieval"] == "on" and stage_metrics["retrieval_bank_frames"] > 0  # params.yaml's default
    assert MouthBank.load(paths.mouth_bank).frames.max() < 16  # the bank holds training frames only (20 x 0.8)
    assert load_generator(paths.gan_checkpoint, "cpu").config.paint_mouth  # speak paints its composites as in training
    assert list(np.atleast_1d(losses["step"])) == [1, 2] and {"g_loss", "d_face"} <= set(losses.dtype.names)
    client = mlflow.MlflowClient()
    (version,) = client.search_model_versions("name = 'talkinghead-gan-synth'")
    assert str(version.version) == "1" and version.tags["dvc_stage"] == "train_gan@synth"
    fingerprint = registry.stage_deps_md5("train_gan@synth")
    assert version.tags["git_commit"] and version.tags["dvc_deps_md5"] == fingerprint and len(fingerprint) == 32
    run = client.get_run(version.run_id)
    assert run.data.tags["dvc_stage"] == "train_gan@synth"  # logged inside the stage's run
    model = mlflow.pyfunc.load_model("models:/talkinghead-gan-synth/1")
    assert model.metadata.signature is not None and model.metadata.saved_input_example_info is not None
    local = Path(mlflow.artifacts.download_artifacts("models:/talkinghead-gan-synth/1", dst_path=str(tmp_path / "v1")))
    assert not list(local.rglob("*.pkl"))  # no pickled python model: the code file and the checkpoint only
    load_checkpoint(local / "artifacts" / "gan.pt")  # weights_only=True
    assert MouthBank.load(local / "artifacts" / "mouth_bank.npz").frames.tolist() == \
        MouthBank.load(paths.mouth_bank).frames.tolist()  # speak --model-version finds the bank next to gan.pt
    composites = np.array(load_gan_data(paths, 0.2).composites[:2])
    expected = generate(load_generator(paths.gan_checkpoint), composites)
    assert np.array_equal(model.predict(composites), expected)
    # the fingerprint follows the stage's params and data, not the rest
    write_project_params(tmp_path, presenters=["synth"], gan={"image_size": SIZE, "channels": [8, 16], "lr_g": 1e-3})
    assert registry.stage_deps_md5("train_gan@synth") != fingerprint
    write_project_params(tmp_path, presenters=["synth"], gan={
        "image_size": SIZE, "channels": [8, 16], "d_channels": 8, "mouth_crop": 16, "batch_size": 2, "crop_size": 32,
        "max_steps": 2, "checkpoint_every": 2, "sample_every": 100, "log_every": 1, "threads": 7})
    assert registry.stage_deps_md5("train_gan@synth") == fingerprint  # gan.threads is no dvc.yaml param
    paths.frames.write_bytes(paths.frames.read_bytes() + b"\0")
    assert registry.stage_deps_md5("train_gan@synth") != fingerprint
