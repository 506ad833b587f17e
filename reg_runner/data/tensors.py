"""The data of a run on the device: MNIST split into train / validation / test, normalized.

Everything is a float32 tensor on the training device from the start: batches are slices of a
per-epoch permutation, so no per-sample Python runs on the hot path. Nothing float64 is made on
the device (MPS has none): the statistics are computed on the host, in ``reg_runner.data.split``.
"""

import logging
from dataclasses import dataclass

import numpy as np
import torch

from reg_runner import data as data_group

log = logging.getLogger(__name__)


@dataclass
class Split:
    x: torch.Tensor  # float32, N x (H*W), normalized
    y: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    info: dict  # what a run records about its data: source, sizes, normalization, split digest

    @property
    def in_features(self) -> int:
        return self.train.x.shape[1]

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.info["image_shape"])


def load(cfg: data_group.DataConfig, device: torch.device) -> Data:
    """The split ``cfg`` describes, on ``device``."""
    s = data_group.split(cfg)
    raw = s.raw

    def put(images: np.ndarray, labels: np.ndarray) -> Split:
        x = torch.from_numpy(images.reshape(len(images), -1)).to(device).float()
        x.sub_(255.0 * s.mean).mul_(1.0 / (255.0 * s.std))  # (pixel / 255 - mean) / std, in place
        return Split(x, torch.from_numpy(labels.astype(np.int64)).to(device))

    data = Data(
        train=put(raw.train_images[s.train_idx], raw.train_labels[s.train_idx]),
        val=put(raw.train_images[s.val_idx], raw.train_labels[s.val_idx]),
        test=put(np.array(raw.test_images), raw.test_labels),  # a writable copy
        info=s.info(),
    )
    log.info("data: %d train / %d val / %d test images from %s", len(data.train), len(data.val), len(data.test),
             raw.source)
    return data
