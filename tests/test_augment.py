"""Augmentation on the device: per-image draws, exact geometry, training batches only."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from reg_runner.augmentation.ops import Augment, theta_from, warp


def augment(name="affine", **over) -> Augment:
    base = dict(name=name, p=1.0, degrees=15.0, scale=[0.9, 1.1], translate=0.1, shear=5.0, sigma=0.3, clamp=True)
    return Augment(OmegaConf.create({**base, **over}), (1, 9, 9), mean=[0.1], std=[0.3])


def gen(seed=0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def images(n=8) -> torch.Tensor:
    return torch.randn(n, 81, generator=gen(42))


@pytest.mark.parametrize("name", ["noise", "affine", "noise_affine"])
def test_same_seed_same_batch_other_seed_other_batch(name):
    a = augment(name)
    x = images()
    assert torch.equal(a(x, gen(0)), a(x, gen(0)))
    assert not torch.equal(a(x, gen(0)), a(x, gen(1)))
    assert not torch.equal(a(x, gen(0)), x)


@pytest.mark.parametrize("name", ["noise", "affine"])
def test_every_image_draws_its_own_parameters(name):
    x = images(1).repeat(16, 1)  # 16 copies of one image
    out = augment(name)(x, gen())
    assert len({tuple(row.tolist()) for row in out}) == 16


def test_identity_parameters_give_back_the_input():
    x = images()
    same = augment("affine", degrees=0.0, scale=[1.0, 1.0], translate=0.0, shear=0.0)(x, gen())
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    for name in ("noise", "affine", "noise_affine"):
        assert torch.equal(augment(name, p=0.0)(x, gen()), x)  # p=0: nothing is augmented


def test_p_is_the_fraction_of_images_augmented():
    x = images(1).repeat(2000, 1)
    out = augment("noise", p=0.3)(x, gen())
    changed = (out != x).any(1).float().mean().item()
    assert changed == pytest.approx(0.3, abs=0.04)


def test_rotation_by_90_degrees_moves_a_known_pixel():
    img = torch.zeros(1, 1, 9, 9)
    img[0, 0, 1, 4] = 1.0  # above the center (4, 4)
    quarter = torch.tensor([math.pi / 2])
    out = warp(img, theta_from(quarter, torch.ones(1), torch.zeros(1), torch.zeros(1, 2)), background=0.0)
    # counterclockwise on screen: what was above the center is now left of it
    assert out[0, 0].argmax().item() == 4 * 9 + 1 and out[0, 0, 4, 1].item() == pytest.approx(1.0, abs=1e-5)


def test_shift_moves_right_and_outside_pixels_are_black():
    img = torch.full((1, 1, 9, 9), 0.5)
    shift = torch.tensor([[2 * 2 / 9, 0.0]])  # two pixels to the right (normalized width is 2)
    background = -1.0
    out = warp(img, theta_from(torch.zeros(1), torch.ones(1), torch.zeros(1), shift), background)
    torch.testing.assert_close(out[0, 0, :, :2], torch.full((9, 2), background), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0, 0, :, 2:], torch.full((9, 7), 0.5), atol=1e-5, rtol=0)


def test_noise_is_clamped_to_real_pixels():
    a = augment("noise", sigma=50.0)
    out = a(images(), gen())
    assert out.min().item() >= a.black - 1e-6 and out.max().item() <= a.white + 1e-6


def test_evaluation_never_sees_augmentation(cli):
    """Noise of 50 standard deviations on every training image, and an lr too small to move a weight: the
    training loss is that of noise, the validation and test numbers are those of the clean images."""
    from conftest import read_metrics

    clean, noisy = (read_metrics(cli(*o, "optimizer.lr=1e-12", "trainer.epochs=1").run_dir)["final"] for o in
                    ((), ("augmentation=noise", "augmentation.sigma=50", "augmentation.clamp=false")))
    assert abs(noisy["train/loss"] - clean["train/loss"]) > 1.0
    for key in ("val/loss", "val/acc", "test/loss", "test/acc"):
        assert noisy[key] == pytest.approx(clean[key], abs=1e-6), key


def crop(pad=2, flip=False, fill="black", p=1.0, shape=(3, 9, 9)) -> Augment:
    return Augment(OmegaConf.create(dict(name="crop", p=p, pad=pad, flip=flip, fill=fill)), shape,
                   mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])


def test_crop_shifts_each_image_by_whole_pixels_and_fills_black():
    a = crop(pad=2)
    x = torch.zeros(64, 3, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel at the centre of every image
    out = a(x, gen())
    black = a.black.view(3, 1, 1).expand(3, 9, 9)
    moved = set()
    for image in out:
        ys, xs = torch.nonzero(image[0] == 1.0, as_tuple=True)
        assert len(ys) == 1 and abs(ys.item() - 4) <= 2 and abs(xs.item() - 4) <= 2  # moved, by whole pixels
        moved.add((ys.item(), xs.item()))
        border = (image != 0.0) & (image != 1.0)  # what came in from outside: black, in every channel's units
        assert border.any() or (ys.item(), xs.item()) == (4, 4)
        torch.testing.assert_close(image[border], black[border], rtol=0, atol=0)
    assert len(moved) > 12  # each image drew its own shift (25 possible)


def test_crop_flips_half_the_images_and_reflect_fills_with_the_image():
    x = torch.arange(2 * 3 * 9 * 9, dtype=torch.float32).view(2, 3, 9, 9).repeat(200, 1, 1, 1)
    out = crop(pad=0, flip=True)(x, gen())
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert ((out == x).flatten(1).all(1) | mirrored).all()
    assert mirrored.float().mean().item() == pytest.approx(0.5, abs=0.06)
    reflected = crop(pad=3, fill="reflect")(x, gen())
    values = set(x[0].flatten().tolist()) | set(x[1].flatten().tolist())
    assert set(reflected.flatten().tolist()) <= values  # every pixel is one of the images' own
    assert torch.equal(crop(pad=3, p=0.0)(x, gen()), x)
