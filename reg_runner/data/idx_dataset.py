"""Datasets in MNIST's format, four IDX files (train and test images and labels): ``IdxDataset`` reads them from
``data.root`` (``.gz`` or not, the dataset's own names or datamaestro's) or from datamaestro's store, which
``idx_definition`` defines with the published URLs and md5s. MNIST, Fashion-MNIST and KMNIST are subclasses.
"""

import functools
from pathlib import Path
from typing import ClassVar

from reg_runner.data import DataFamily, idx, store
from reg_runner.data.split import Images, checked
from reg_runner.errors import DataError

# the four files: datamaestro's names (stored as <key>.idx) and the datasets' own (LeCun's), in the order of Images
FILES = (("train_images", "train-images-idx3-ubyte"), ("train_labels", "train-labels-idx1-ubyte"),
         ("test_images", "t10k-images-idx3-ubyte"), ("test_labels", "t10k-labels-idx1-ubyte"))
ORIGINALS = ", ".join(original for _, original in FILES)
# the names each file goes by in a folder (each .gz or not): its own, datamaestro's, and either as .idx
ALIASES = {name: (original, name, f"{name}.idx", original.replace("-idx", ".idx")) for name, original in FILES}


class IdxDataset(DataFamily):
    # the four .gz files' published md5 (what a download is checked against), by datamaestro's name
    GZ_MD5: ClassVar[dict[str, str]] = {}
    URL: ClassVar[str] = ""  # where the files are published
    DATASET_ID: ClassVar[str] = ""  # its datamaestro identifier

    @classmethod
    def hint(cls) -> str:
        return (f"download {ORIGINALS} (.gz) from {cls.URL} into a folder and give data.root=<that folder>")

    @classmethod
    def read(cls, root: str | None) -> Images:
        if root is not None:
            folder = Path(root).expanduser()
            paths, source = find_files(folder, cls.NAME, cls.hint()), f"folder {folder}"
        else:
            paths, source = cls.store_files()
        train, test = ((idx.read_images(paths[f"{part}_images"], cls.NAME),
                        idx.read_labels(paths[f"{part}_labels"], cls.NAME, len(cls.CLASSES), part))
                       for part in ("train", "test"))
        return checked(train, test, source)

    @classmethod
    def files(cls, folder: Path) -> list[Path]:
        return list(find_files(folder, cls.NAME, cls.hint()).values())

    @classmethod
    def store_files(cls) -> tuple[dict[str, Path], str]:
        """The four files in datamaestro's store (downloaded first if it lacks them), and the source's name."""
        definition = idx_definition(cls, cls.DATASET_ID)
        config = store.fetch(definition, cls.NAME, cls.GZ_MD5, cls.hint())
        paths = {"train_images": config.train.images.path, "train_labels": config.train.labels.path,
                 "test_images": config.test.images.path, "test_labels": config.test.labels.path}
        return paths, f"datamaestro {definition.id} ({definition.datapath})"


@functools.cache
def idx_definition(family, identifier: str):
    """The datamaestro dataset of an IDX family, stored under ``data/__custom__/reg_runner/<identifier>``: its four
    .gz files, kept compressed, each checked."""
    from datamaestro.data.tensor import IDX
    from datamaestro.definitions import dataset
    from datamaestro.download.single import filedownloader
    from datamaestro.stream import Identity
    from datamaestro.utils import HashCheck
    from datamaestro_image.data import IDXImage, ImageClassification, LabelledImages

    def images(train_images, train_labels, test_images, test_labels) -> ImageClassification:
        return ImageClassification.C(
            train=LabelledImages.C(images=IDXImage.C(path=train_images), labels=IDX.C(path=train_labels)),
            test=LabelledImages.C(images=IDXImage.C(path=test_images), labels=IDX.C(path=test_labels)),
        )

    images.__doc__ = f"{family.NAME}\n\n{family.__module__} (reg_runner)"
    definition = dataset(ImageClassification, id=identifier, url=family.URL)(images)
    for name, original in FILES:
        filedownloader(f"{name}.idx.gz", f"{family.URL}{original}.gz", transforms=Identity(),
                       checker=HashCheck(family.GZ_MD5[name]))(definition)
    return definition


def published_gz(gz_md5: dict[str, str]) -> dict[str, str]:
    """The md5 of the four .gz files by the names they are published under (``FILE_MD5``), from ``GZ_MD5``."""
    return {f"{original}.gz": gz_md5[name] for name, original in FILES}


def find_files(folder: Path, dataset: str, hint: str, key: str | None = "data.root") -> dict[str, Path]:
    """The path of each of the four files in ``folder``, under any of the names they go by. ``key``: what named
    the folder, for the message (None: a command's argument)."""
    where = store.named_folder(folder, hint, key)
    found = {}
    for name, names in ALIASES.items():
        candidates = [folder / n for n in names] + [folder / f"{n}.gz" for n in names]
        found[name] = next((p for p in candidates if p.is_file()), None)
    if missing := [original for name, original in FILES if found[name] is None]:
        raise DataError(f"{where} lacks {', '.join(missing)} (.gz or not) of {dataset}; {hint}")
    return found
