"""The ``data`` group: data families, subclasses of ``DataFamily`` chosen by ``_target_`` in
``conf/data/<name>.yaml`` (docs/families.md). A family reads its images (from ``data.root`` or datamaestro's store)
and names its classes; the split, common to all, is drawn without torch by ``reg_runner.data.split`` (the checks
use its sizes before anything is made) and put on the device by ``reg_runner.data.tensors``.
"""

from pathlib import Path
from typing import Annotated, ClassVar

from reg_runner.keys import PATH
from reg_runner.schema import Bool, FamilyGroup, Text, family, family_parser, integer, number, optional

EXAMPLE = "reg_runner.data.mnist.MNIST"


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

    @classmethod
    def read(cls, root: str | None) -> "Images":
        """The dataset's images (``reg_runner.data.split.Images``), from the folder ``root`` (``data.root``) or, if
        None, datamaestro's store; one ``DataError`` line for anything amiss (missing, unreadable, or not what the
        files claim to be)."""
        raise NotImplementedError(f"{cls.__name__}.read")

    @classmethod
    def files(cls, folder: Path) -> list[Path]:
        """The files ``read`` reads from ``folder``, to check against the published md5s (none by default)."""
        return []


DataConfig = family(DataFamily, "data", EXAMPLE)
parse_config = family_parser(DataFamily, "data", EXAMPLE)  # a recorded config's data mapping -> its family


