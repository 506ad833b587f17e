"""The data of a run: MNIST split into train / validation / test, normalized, on the device.

Everything is a tensor on the training device from the start: batches are slices of a
per-epoch permutation, so no per-sample Python runs on the hot path.
"""

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import torch

from reg_runner.data import mnist
from reg_runner.data.split import split_indices

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


def load(cfg, device: torch.device) -> Data:
    """Load MNIST as configured by the ``data`` group and put it on ``device``."""
    raw = mnist.load(cfg.root)
    train_idx, val_idx = split_indices(
        raw.train_labels, cfg.train_fraction, cfg.split_seed, cfg.stratified, cfg.val_size
    )
    train_images = torch.as_tensor(np.array(raw.train_images), device=device)  # a writable copy
    test_images = torch.as_tensor(np.array(raw.test_images), device=device)
    train_labels = torch.from_numpy(raw.train_labels.astype(np.int64)).to(device)
    test_labels = torch.from_numpy(raw.test_labels.astype(np.int64)).to(device)
    ti, vi = torch.from_numpy(train_idx).to(device), torch.from_numpy(val_idx).to(device)

    mean, std = 0.0, 1.0
    if cfg.normalize:  # statistics of the training subset only: nothing leaks from val or test
        pixels = train_images[ti].double() / 255.0
        mean, std = pixels.mean().item(), pixels.std().item()

    def split(images: torch.Tensor, labels: torch.Tensor) -> Split:
        x = images.reshape(len(images), -1).float()  # (pixel / 255 - mean) / std, in place
        x.sub_(255.0 * mean).mul_(1.0 / (255.0 * std))
        return Split(x, labels.contiguous())

    data = Data(
        train=split(train_images[ti], train_labels[ti]),
        val=split(train_images[vi], train_labels[vi]),
        test=split(test_images, test_labels),
        info=dict(
            source=raw.source,
            image_shape=list(raw.train_images.shape[1:]),
            n_train=len(train_idx),
            n_val=len(val_idx),
            n_test=len(raw.test_labels),
            mean=mean,
            std=std,
            # the same digest across runs means the same training images
            train_indices_sha256=hashlib.sha256(train_idx.astype(np.int64).tobytes()).hexdigest(),
        ),
    )
    log.info(
        "data: %d train / %d val / %d test images from %s", len(data.train), len(data.val), len(data.test), raw.source
    )
    return data
