"""Data augmentation on the device: more training data from transforms that keep the class.

Applied to training batches only (never validation or test), to the whole batch at once, with
every image drawing its own parameters:

- ``noise``: additive Gaussian noise of std ``sigma`` in normalized pixel units (1.0 = one standard
  deviation of the training pixels, about 0.31 of the black-to-white range), optionally clamped
  back to the range of real pixels.
- ``affine``: rotation (uniform in ±``degrees``, positive is counterclockwise), zoom (uniform in
  ``scale``), shift (uniform in ±``translate`` of the image size, per axis) and shear (±``shear``
  degrees), as one affine map per image through ``affine_grid`` + ``grid_sample``; pixels that come
  from outside the image are black.
- ``noise_affine``: affine, then noise.
- ``torchvision``: a list of ``torchvision.transforms.v2`` transforms from the config, imported only
  when chosen. Note that v2 transforms applied to a batch tensor draw one set of parameters for the
  whole batch; the built-in ones above draw per image, which is the point.

``p`` is the probability that an image is augmented at all. The draws come from a generator of
the augmentation's own, so switching augmentation on does not change the batch order or dropout.
"""

import math

import torch
import torch.nn.functional as F

from reg_runner.errors import UserError

class Augment:
    """Callable on a batch of flattened normalized images (B, H*W): returns an augmented copy."""

    def __init__(self, cfg, image_shape: tuple[int, int], mean: float, std: float):
        self.cfg, self.shape = cfg, tuple(image_shape)
        self.black, self.white = (0.0 - mean) / std, (1.0 - mean) / std  # real pixels' range, normalized
        self.mean, self.std = mean, std
        self.affine = cfg.name in ("affine", "noise_affine")
        self.noise = cfg.name in ("noise", "noise_affine")
        self.transforms = torchvision_transforms(cfg) if cfg.name == "torchvision" else None

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = len(x)
        apply = torch.rand(n, device=x.device, generator=generator) < self.cfg.p
        images = x.view(n, 1, *self.shape)
        if self.affine:
            theta = affine_theta(self.cfg, n, x.device, generator, apply)
            images = torch.where(apply.view(n, 1, 1, 1), warp(images, theta, self.black), images)
        if self.noise:
            noisy = images + torch.randn(images.shape, device=x.device, generator=generator) * self.cfg.sigma
            if self.cfg.clamp:
                noisy = noisy.clamp(self.black, self.white)
            images = torch.where(apply.view(n, 1, 1, 1), noisy, images)  # only the images drawn by p
        if self.transforms is not None:
            pixels = images * self.std + self.mean  # torchvision expects [0, 1] images
            # torchvision draws from torch's global generator: seed it from this augmentation's own stream,
            # and restore it after, so that torchvision neither depends on nor moves anything else's draws
            seed = int(torch.randint(2**62, (1,), device=x.device, generator=generator))
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                torch.manual_seed(seed)
                out = self.transforms(pixels)
            images = torch.where(apply.view(n, 1, 1, 1), (out - self.mean) / self.std, images)
        return images.reshape(n, -1)


def affine_theta(cfg, n: int, device, generator, apply: torch.Tensor) -> torch.Tensor:
    """Per-image (n, 2, 3) matrices for ``affine_grid``; identity where ``apply`` is False."""

    def uniform(lo, hi):
        return torch.rand(n, device=device, generator=generator) * (hi - lo) + lo

    angle = uniform(-cfg.degrees, cfg.degrees) * (math.pi / 180)
    scale = uniform(cfg.scale[0], cfg.scale[1])
    shear = uniform(-cfg.shear, cfg.shear) * (math.pi / 180)
    shift = torch.stack([uniform(-cfg.translate, cfg.translate), uniform(-cfg.translate, cfg.translate)], 1) * 2
    angle, shear = angle * apply, shear * apply  # normalized coordinates span 2 across the image
    scale = torch.where(apply, scale, torch.ones_like(scale))
    return theta_from(angle, scale, shear, shift * apply.unsqueeze(1))


def theta_from(angle: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``affine_grid`` matrices for a forward map that, on screen (x right, y down), shears, zooms,
    rotates counterclockwise by ``angle`` (radians) and shifts by ``shift`` (normalized units)."""
    n = len(angle)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotate = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)
    ones, zeros = torch.ones_like(shear), torch.zeros_like(shear)
    shear_m = torch.stack([torch.stack([ones, torch.tan(shear)], 1), torch.stack([zeros, ones], 1)], 1)
    forward = rotate @ shear_m * scale.view(n, 1, 1)
    inverse = torch.linalg.inv(forward)  # grid_sample looks up, for each output pixel, where it came from
    return torch.cat([inverse, -(inverse @ shift.unsqueeze(2))], 2)


def warp(images: torch.Tensor, theta: torch.Tensor, background: float) -> torch.Tensor:
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # grid_sample pads with 0; shifting by the background value makes outside pixels black
    return F.grid_sample(images - background, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) + background


def torchvision_transforms(cfg):
    try:
        import torchvision  # noqa: F401  (only for augmentation=torchvision)
    except Exception as e:  # ImportError, or RuntimeError from a torchvision built for another torch
        raise UserError(
            f"augmentation=torchvision needs torchvision, which cannot be imported here "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}); install a torchvision built for "
            "your torch, or use augmentation=noise, affine or noise_affine (on the device, no torchvision)"
        ) from None
    from hydra.utils import instantiate
    from torchvision.transforms import v2

    try:
        return v2.Compose([instantiate(t, _execution_whitelist_=("torchvision.transforms.*",)) for t in cfg.transforms])
    except Exception as e:  # a misspelled class or argument
        raise UserError(f"augmentation.transforms cannot be built: {str(e).splitlines()[0]}") from None


def build(cfg, data) -> Augment | None:
    if cfg.name == "none":
        return None
    return Augment(cfg, data.image_shape, data.info["mean"], data.info["std"])
