"""The split every data family shares, from the family's images as read: ``split(cfg)`` reads the images once
per process (no torch), draws the training and validation indices with ``data.split_seed``, not the run's seed
(docs/runs.md, "Seeds and the split"), and computes the training subset's statistics; ``Images`` and ``checked``
are what every family's reader returns."""

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reg_runner.data import DataFamily
from reg_runner.data.store import check_published
from reg_runner.errors import ConfigError, DataError

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Images:
    """A family's images as stored: uint8 (N, C, H, W) images and int64 labels, train and test, and where they
    came from. Made by ``checked``, so every family's arrays obey the same rules."""

    train_images: "np.ndarray"
    train_labels: "np.ndarray"
    test_images: "np.ndarray"
    test_labels: "np.ndarray"
    source: str


def checked(train: tuple, test: tuple, source: str) -> Images:
    """``train`` and ``test`` (images, labels), their labels already checked by ``reg_runner.data.idx.labels``,
    checked across files: as many labels as images, one image shape."""
    import numpy as np

    for split, (images, labels) in (("train", train), ("test", test)):
        if images.ndim != 4 or images.dtype != np.uint8:
            raise DataError(f"{source}: {split} images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
        if 0 in images.shape:
            raise DataError(f"{source}: the {split} images are empty (shape {images.shape})")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{source}: {len(images)} {split} images but labels of shape {labels.shape}")
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(f"{source}: train images {train[0].shape[1:]} vs test {test[0].shape[1:]}")
    return Images(train[0], train[1].astype(np.int64), test[0], test[1].astype(np.int64), source)


@dataclass(frozen=True)
class Split:
    """What a run trains and evaluates on, as indices into the family's arrays, with its statistics."""

    images: Images
    train_idx: "np.ndarray"
    val_idx: "np.ndarray"
    mean: tuple[float, ...]  # per channel, of the training subset's pixels in [0, 1] (0 without normalization)
    std: tuple[float, ...]  # likewise (1 without normalization)
    n_classes: int
    dataset: str  # the family's NAME

    @property
    def n_train(self) -> int:
        return len(self.train_idx)

    @property
    def n_test(self) -> int:
        return len(self.images.test_labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image's (channels, height, width)."""
        return tuple(self.images.train_images.shape[1:])

    def info(self) -> dict:
        """What a run records about its data."""
        import numpy as np

        return dict(
            dataset=self.dataset,
            source=self.images.source,
            image_shape=list(self.shape),
            n_classes=self.n_classes,
            n_train=self.n_train,
            n_val=len(self.val_idx),
            n_test=self.n_test,
            mean=list(self.mean),
            std=list(self.std),
            # the same digest across runs means the same training images
            train_indices_sha256=hashlib.sha256(self.train_idx.astype(np.int64).tobytes()).hexdigest(),
        )


def split(cfg: DataFamily) -> Split:
    """The split ``cfg`` asks for, checked against the data: one ``ConfigError`` for a split that selects no
    training image, leaves none to validate on, or a validation size that is not there."""
    return _split(type(cfg), cfg.root, cfg.train_fraction, cfg.val_size, cfg.split_seed, cfg.stratified,
                  cfg.normalize, cfg.verify)


# keyed on the keys it reads, not the whole config: a user's family may hold keys that do not hash (a list)
@functools.lru_cache(maxsize=8)  # the checks and the run, and every job of a multirun, share one split
def _split(family, root, fraction, val_size, split_seed, stratified, normalize, verify) -> Split:
    import numpy as np

    images = read(family, root, verify)
    train_idx, val_idx = split_indices(images.train_labels, fraction, split_seed, stratified, val_size)
    channels = images.train_images.shape[1]
    mean, std = (0.0,) * channels, (1.0,) * channels
    if normalize:  # statistics of the training subset only: nothing leaks from val or test
        subset = images.train_images[train_idx]
        if subset.min() == subset.max():
            raise ConfigError("data.normalize", True, f"false for these images: the {len(train_idx)} training images "
                              "all have one pixel value (std 0), which cannot be standardized")
        # one value in a channel, told by its pixels, not by its std: rounding leaves a constant channel's std
        # near 1e-17, not 0, and it would be divided by that
        flat = next((c for c in range(channels) if subset[:, c].min() == subset[:, c].max()), None)
        if flat is not None:
            raise ConfigError("data.normalize", True, f"false for these images: channel {flat} of the "
                              f"{len(train_idx)} training images has one value (std 0), which cannot be standardized")
        pixels = [subset[:, c].astype(np.float64) / 255.0 for c in range(channels)]
        mean, std = tuple(float(p.mean()) for p in pixels), tuple(float(p.std(ddof=1)) for p in pixels)
    return Split(images, train_idx, val_idx, mean, std, len(family.CLASSES), family.NAME)


def split_indices(labels: "np.ndarray", fraction: float, seed: int, stratified: bool = False,
                  val_size: int | None = None) -> tuple["np.ndarray", "np.ndarray"]:
    """Sorted indices of the training subset and of the validation set (everything else, or a random
    ``val_size`` of it)."""
    import numpy as np

    n = len(labels)
    rng = np.random.default_rng(seed)
    if stratified:  # each class's members in a random order, the fraction of each taken
        classes = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
        train = np.sort(np.concatenate([members[: round(fraction * len(members))] for members in classes]))
    else:
        train = np.sort(rng.permutation(n)[: round(fraction * n)])
    if len(train) == 0:
        raise ConfigError("data.train_fraction", fraction, f"a larger fraction: this one selects no image of {n}")
    val = np.setdiff1d(np.arange(n), train, assume_unique=True)
    if len(val) == 0:
        raise ConfigError("data.train_fraction", fraction, f"a smaller fraction: this one leaves none of the {n} "
                          "images for validation, and the best epoch is chosen on validation")
    if val_size is not None:
        if val_size > len(val):
            raise ConfigError("data.val_size", val_size, f"at most {len(val)}, the images outside the training subset, "
                              "or null for all of them")
        if val_size < len(val):
            val = np.sort(rng.permutation(val)[:val_size])
    return train, val


@functools.lru_cache(maxsize=4)  # read once per process: the checks, the run and every job of a multirun
def read(family: type[DataFamily], root: str | None, verify: bool = True) -> Images:
    """``family.read(root)``; ``verify``: the files it reads from ``root`` checked first against their md5s."""
    if root is not None and verify:
        check_published(family, Path(root).expanduser())
    return family.read(root)
