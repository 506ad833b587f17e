"""Data augmentation on the device (the options: docs/training.md; their keys: ``reg_runner.augmentation``):
training batches only, the whole batch at once, every image drawing its own parameters from the augmentation's
own generator, so that switching it on changes neither the batch order nor dropout.
"""

import math

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from reg_runner.errors import UserError, cause, first_line


class Augment:
    """Callable on a batch of normalized images: returns an augmented copy of the same shape. ``shape``: one
    image's (channels, height, width); ``mean`` and ``std``: the normalization, per channel. Any input whose
    trailing dimensions hold that many values works (an MLP's flattened rows as well as images)."""

    def __init__(self, cfg, shape: tuple[int, int, int], mean, std):
        self.cfg, self.shape, self.mean, self.std = cfg, tuple(shape), tuple(mean), tuple(std)
        # real pixels' range (black..white), normalized, per channel
        self.black, self.white = (torch.tensor([(v - m) / s for m, s in zip(self.mean, self.std)]) for v in (0.0, 1.0))
        self.transforms = torchvision_transforms(cfg) if cfg.name == "torchvision" else None
        self._on_device: dict = {}

    def _channels(self, values, like: torch.Tensor) -> torch.Tensor:
        """Per-channel values as a (1, C, 1, 1) tensor on ``like``'s device, copied there once (a copy from the
        host per batch would make a GPU wait for it)."""
        key = (id(values), like.dtype, like.device)
        if key not in self._on_device:
            self._on_device[key] = torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
        return self._on_device[key]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = len(x)
        apply = torch.rand(n, device=x.device, generator=generator) < self.cfg.p
        images = x.reshape(n, *self.shape)
        out, black, name = images, self._channels(self.black, x), self.cfg.name
        if name == "crop":
            out = crop(out, self.cfg, generator, black)
        if name in ("affine", "noise_affine"):
            out = warp(out, affine_theta(self.cfg, n, x.device, generator), black)
        if name in ("noise", "noise_affine"):
            out = out + torch.randn(out.shape, device=x.device, generator=generator) * self.cfg.sigma
            if self.cfg.clamp:
                out = out.clamp(black, self._channels(self.white, x))
        if self.transforms is not None:
            mean, std = self._channels(self.mean, x), self._channels(self.std, x)
            # torchvision draws from torch's global generator: seed it from this augmentation's own stream,
            # and restore it after, so that torchvision neither depends on nor moves anything else's draws
            seed = int(torch.randint(2**62, (1,), device=x.device, generator=generator))
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                torch.manual_seed(seed)
                out = (self.transforms(out * std + mean) - mean) / std  # torchvision expects [0, 1] images
        return torch.where(apply.view(n, 1, 1, 1), out, images).reshape(x.shape)  # only the images drawn by p


def crop(images: torch.Tensor, cfg, generator: torch.Generator, black: torch.Tensor) -> torch.Tensor:
    """Each image shifted by a whole number of pixels, uniform in [-pad, pad] per axis (a random crop of the image
    padded by ``pad``: black, or its reflection), and with ``flip`` mirrored left-right with probability 1/2."""
    n, c, h, w = images.shape
    pad = cfg.pad
    if pad:
        if cfg.fill == "reflect":
            padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
        else:  # each channel's black (F.pad fills every channel with one value)
            padded = black.expand(n, c, h + 2 * pad, w + 2 * pad).clone()
            padded[:, :, pad : pad + h, pad : pad + w] = images
        dy = torch.randint(0, 2 * pad + 1, (n, 1), device=images.device, generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n, 1), device=images.device, generator=generator)
        rows = (dy + torch.arange(h, device=images.device)).view(n, 1, h, 1)
        cols = (dx + torch.arange(w, device=images.device)).view(n, 1, 1, w)
        band = padded.gather(2, rows.expand(n, c, h, w + 2 * pad))  # each image's h rows, then its w columns
        images = band.gather(3, cols.expand(n, c, h, w))
    if cfg.flip:
        mirror = torch.rand(n, device=images.device, generator=generator) < 0.5
        images = torch.where(mirror.view(n, 1, 1, 1), images.flip(3), images)
    return images


def affine_theta(cfg, n: int, device, generator) -> torch.Tensor:
    """Per-image (n, 2, 3) matrices for ``affine_grid`` (drawn for every image; ``Augment`` keeps those drawn by p)."""

    def uniform(lo, hi):
        return torch.rand(n, device=device, generator=generator) * (hi - lo) + lo

    angle = uniform(-cfg.degrees, cfg.degrees) * (math.pi / 180)
    scale = uniform(cfg.scale[0], cfg.scale[1])
    shear = uniform(-cfg.shear, cfg.shear) * (math.pi / 180)
    # normalized coordinates span 2 across the image
    shift = torch.stack([uniform(-cfg.translate, cfg.translate), uniform(-cfg.translate, cfg.translate)], 1) * 2
    return theta_from(angle, scale, shear, shift)


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
        from torchvision.transforms import v2  # only for augmentation=torchvision
    except Exception as e:  # ImportError, or RuntimeError from a torchvision built for another torch
        raise UserError(
            f"augmentation=torchvision needs torchvision, which cannot be imported here "
            f"({cause(e)}); install a torchvision built for "
            "your torch, or use augmentation=noise, affine or noise_affine (on the device, no torchvision)"
        ) from None
    try:
        return v2.Compose([instantiate(t, _execution_whitelist_=("torchvision.transforms.*",)) for t in cfg.transforms])
    except Exception as e:  # a misspelled class or argument
        raise UserError(f"augmentation.transforms cannot be built: {first_line(e)}") from None


def build(cfg, data) -> Augment | None:
    if cfg.name == "none":
        return None
    return Augment(cfg, data.shape, data.info["mean"], data.info["std"])
