"""The ``data`` group: data families, each chosen by ``_target_`` in ``conf/data/<name>.yaml``, and the split
every family shares.

A family is a subclass of ``DataFamily`` (its ``_target_``) plus its yaml: ``mnist`` (the default),
``fashion_mnist``, ``kmnist`` and ``cifar10``. It says where its images come from (``load``: a folder given
as ``data.root``, or datamaestro's store) and how many classes it has; the split is common to every family:
``train_fraction`` of the training set is drawn with ``split_seed`` to train on, the rest (or a random
``val_size`` of it) validates, the family's test set tests, and pixels are standardized per channel with the
training subset's statistics only. Images keep their shape (channels, height, width) until a model
flattens them.

``split(cfg)`` reads the images (no torch), draws the split and computes the statistics; the run's checks use
its sizes before anything is made, and ``reg_runner.data.tensors`` puts the same split on the device.
"""

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar

from reg_runner.data.store import check_published
from reg_runner.errors import ConfigError, DataError
from reg_runner.keys import PATH
from reg_runner.schema import Bool, FamilyGroup, Text, family, family_parser, integer, number, optional

if TYPE_CHECKING:
    import numpy as np

EXAMPLE = "reg_runner.data.mnist.MNIST"


@dataclass(frozen=True)
class Images:
    """A family's images as stored: uint8 (N, C, H, W) images and int64 labels, train and test, and where they
    came from. Made by ``checked``, so every family's arrays obey the same rules."""

    train_images: "np.ndarray"
    train_labels: "np.ndarray"
    test_images: "np.ndarray"
    test_labels: "np.ndarray"
    source: str


class DataFamily(FamilyGroup):
    root: Annotated[optional(Text), PATH]
    """a folder holding the dataset's original files; null: datamaestro's store"""
    train_fraction: number(0, 1, lo_open=True)
    """of the training set; the rest is the validation set"""
    val_size: optional(integer(1))
    """a random subset of the rest, for speed; null: all of it"""
    split_seed: integer(0, 2**63 - 1)
    """draws the training subset, independently of the run's seed"""
    stratified: Bool
    """the same fraction of every class"""
    normalize: Bool
    """standardize each channel with the training subset's pixel mean and std"""
    verify: Annotated[Bool, PATH] = True
    """check each file read from data.root against the dataset's published md5 (once per file, then again only if
    its size or modification time changes); false: train on a modified copy knowingly"""

    NAME: ClassVar[str] = ""  # how messages and records name the dataset (e.g. "MNIST")
    CLASSES: ClassVar[tuple[str, ...]] = ()  # the class names, in label order
    FILE_MD5: ClassVar[dict[str, str]] = {}  # the published md5 of each file, by the name it is published under
    CONTENT_MD5: ClassVar[dict[str, str]] = {}  # the md5 of an IDX file's uncompressed bytes (.gz or not), by name

    @property
    def n_classes(self) -> int:
        return len(self.CLASSES)

    @classmethod
    def read(cls, root: str | None) -> Images:
        """The dataset's images, from the folder ``root`` (``data.root``) or, if None, datamaestro's store; one
        ``DataError`` line for anything amiss (missing, unreadable, or not what the files claim to be)."""
        raise NotImplementedError(f"{cls.__name__}.read")

    @classmethod
    def files(cls, folder: Path) -> list[Path]:
        """The files ``read`` reads from ``folder``, to check against the published md5s; none by default (a
        family that publishes none)."""
        return []


DataConfig = family(DataFamily, "data", EXAMPLE)
parse_config = family_parser(DataFamily, "data", EXAMPLE)  # a recorded config's data mapping -> its family


def checked(train: tuple, test: tuple, source: str) -> Images:
    """``train`` and ``test``: (images, labels) as read, already checked file by file (each label an integer in
    [0, the number of classes): ``reg_runner.data.idx.labels``, which every family's reader calls); here, what holds across
    files: as many labels as images, one image shape."""
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

    @property
    def in_features(self) -> int:
        return math.prod(self.shape)

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


@functools.lru_cache(maxsize=8)  # the checks and the run, and every job of a multirun, share one split
def _split(family, root, fraction, val_size, split_seed, stratified, normalize, verify=True) -> Split:
    import numpy as np

    from reg_runner.data.indices import split_indices

    images = read(family, root, verify)
    train_idx, val_idx = split_indices(images.train_labels, fraction, split_seed, stratified, val_size)
    channels = images.train_images.shape[1]
    mean, std = (0.0,) * channels, (1.0,) * channels
    if normalize:  # statistics of the training subset only: nothing leaks from val or test
        subset = images.train_images[train_idx]
        if subset.min() == subset.max():
            raise ConfigError("data.normalize", True, f"false for these images: the {len(train_idx)} training images "
                              "all have one pixel value (std 0), which cannot be standardized")
        stats = []
        for c in range(channels):
            pixels = subset[:, c].astype(np.float64) / 255.0
            stats.append((float(pixels.mean()), float(pixels.std(ddof=1))))
        flat = [c for c, (_, s) in enumerate(stats) if s == 0]
        if flat:
            raise ConfigError("data.normalize", True, f"false for these images: channel {flat[0]} of the "
                              f"{len(train_idx)} training images has one value (std 0), which cannot be standardized")
        mean, std = tuple(m for m, _ in stats), tuple(s for _, s in stats)
    return Split(images, train_idx, val_idx, mean, std, len(family.CLASSES), family.NAME)


@functools.lru_cache(maxsize=4)  # read once per process: the checks, the run and every job of a multirun
def read(family: type[DataFamily], root: str | None, verify: bool = True) -> Images:
    """``family.read(root)``, once per process; ``verify``: the files it reads from ``root`` checked first
    against their published md5s (``reg_runner.data.store.check_published``)."""
    if root is not None and verify:
        check_published(family, Path(root).expanduser())
    return family.read(root)
