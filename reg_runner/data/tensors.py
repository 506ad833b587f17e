"""The data of a run on the device: a family's split, float32 tensors from the start (images (N, C, H, W)), so that
batches are slices of a per-epoch permutation and no per-sample Python runs on the hot path. Nothing float64 is
made on the device (MPS has none): the statistics come from the host (``reg_runner.data.split``)."""

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import torch

from reg_runner.data import DataFamily
from reg_runner.data.split import split

log = logging.getLogger(__name__)


@dataclass
class Part:
    """One part of a run's split (its training, validation or test images) on the device."""

    x: torch.Tensor  # float32, N x C x H x W, normalized
    y: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Data:
    train: Part
    val: Part
    test: Part
    info: dict  # what a run records about its data: dataset, source, sizes, normalization, split digest

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image's (channels, height, width)."""
        return tuple(self.train.x.shape[1:])

    @property
    def in_features(self) -> int:
        return int(np.prod(self.shape))

    @property
    def n_classes(self) -> int:
        return self.info["n_classes"]


def load(cfg: DataFamily, device: torch.device) -> Data:
    """The split ``cfg`` describes, on ``device``."""
    s = split(cfg)
    images = s.images

    def put(x: np.ndarray, labels: np.ndarray) -> Part:
        # the only host-to-device copy of the data: uint8 pixels (a quarter of float32's bytes), made float on the
        # device; not pinned: the copy happens once and the next line needs it
        t = torch.from_numpy(x).to(device).float()
        for c, (mean, std) in enumerate(zip(s.mean, s.std)):  # (pixel / 255 - mean) / std, per channel, in place
            t[:, c].sub_(255.0 * mean).mul_(1.0 / (255.0 * std))
        return Part(t, torch.from_numpy(labels).to(device))

    test = (np.array(images.test_images), images.test_labels)  # a writable copy
    # data.test_sha256 (docs/runs.md): of the very arrays the test split is made of, uint8 then int64 (``checked``)
    digest = hashlib.sha256(test[0].tobytes())
    digest.update(test[1].tobytes())
    data = Data(
        train=put(images.train_images[s.train_idx], images.train_labels[s.train_idx]),
        val=put(images.train_images[s.val_idx], images.train_labels[s.val_idx]),
        test=put(*test),
        info=dict(s.info(), test_sha256=digest.hexdigest()),
    )
    log.info("data: %s, %d train / %d val / %d test images %s from %s", s.dataset, len(data.train), len(data.val),
             len(data.test), "x".join(map(str, data.shape)), images.source)
    return data
