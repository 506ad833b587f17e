"""The ``data`` group: which images train, validate and test, and how pixels are scaled.

``split(cfg)`` reads MNIST (no torch), draws the training subset and the validation set and computes
the normalization; the run's checks use its sizes before anything is made, and
``reg_runner.data.tensors`` puts the same split on the device.
"""

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from reg_runner.errors import ConfigError
from reg_runner.schema import Bool, Group, Text, integer, number, optional


class DataConfig(Group):
    root: optional(Text)  # a folder with the four IDX files; null: the datamaestro store
    train_fraction: number(0, 1, lo_open=True)  # of MNIST's training set; the rest is the validation set
    val_size: optional(integer(1))  # a random subset of the rest, for speed; null: all of it
    split_seed: integer(0, 2**63 - 1)  # draws the training subset, independently of the run's seed
    stratified: Bool  # the same fraction of every class
    normalize: Bool  # standardize with the training subset's pixel mean and std


@dataclass(frozen=True)
class Split:
    """What a run trains and evaluates on, as indices into MNIST's arrays, with its statistics."""

    raw: object  # mnist.RawMnist
    train_idx: np.ndarray
    val_idx: np.ndarray
    mean: float  # of the training subset's pixels in [0, 1] (0 without normalization)
    std: float  # likewise (1 without normalization)

    @property
    def n_train(self) -> int:
        return len(self.train_idx)

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.raw.train_images.shape[1:])

    @property
    def in_features(self) -> int:
        return int(np.prod(self.image_shape))

    def info(self) -> dict:
        """What a run records about its data."""
        return dict(
            source=self.raw.source,
            image_shape=list(self.image_shape),
            n_train=self.n_train,
            n_val=len(self.val_idx),
            n_test=len(self.raw.test_labels),
            mean=self.mean,
            std=self.std,
            # the same digest across runs means the same training images
            train_indices_sha256=hashlib.sha256(self.train_idx.astype(np.int64).tobytes()).hexdigest(),
        )


def split(cfg: DataConfig) -> Split:
    """The split ``cfg`` asks for, checked against the data: one ``ConfigError`` for a split that
    selects no training image, leaves none to validate on, or a validation size that is not there."""
    return _split(cfg.root, cfg.train_fraction, cfg.val_size, cfg.split_seed, cfg.stratified, cfg.normalize)


@functools.lru_cache(maxsize=8)  # the checks and the run, and every job of a multirun, share one read
def _split(root, fraction, val_size, split_seed, stratified, normalize) -> Split:
    from reg_runner.data import mnist
    from reg_runner.data.indices import split_indices

    raw = mnist.load(root)
    train_idx, val_idx = split_indices(raw.train_labels, fraction, split_seed, stratified, val_size)
    mean, std = 0.0, 1.0
    if normalize:  # statistics of the training subset only: nothing leaks from val or test
        images = raw.train_images[train_idx]
        if images.min() == images.max():
            raise ConfigError("data.normalize", True, f"false for these images: the {len(train_idx)} training images "
                              "all have one pixel value (std 0), which cannot be standardized")
        pixels = images.astype(np.float64) / 255.0
        mean, std = float(pixels.mean()), float(pixels.std(ddof=1))
    return Split(raw, train_idx, val_idx, mean, std)
