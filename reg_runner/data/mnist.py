"""MNIST (``data=mnist``, the default): LeCun, Cortes & Burges' handwritten digits, 28x28, 10 classes.

Read from ``data.root`` or through datamaestro (``prepare_dataset("com.lecun.mnist")``), its store filled from the
copy shipped in this package: docs/runs.md, "Data".
"""

import hashlib
import logging
import os
from collections import namedtuple
from pathlib import Path

from reg_runner import atomic, signals
from reg_runner.data import idx
from reg_runner.data.idx_dataset import ALIASES, FILES as IDX_FILES, ORIGINALS, IdxDataset
from reg_runner.data.idx_dataset import find_files as find_idx_files
from reg_runner.data.store import quiet
from reg_runner.errors import DataError

log = logging.getLogger(__name__)

DATASET_ID = "com.lecun.mnist"
EMBEDDED = Path(__file__).parent / "mnist"

# key: datamaestro's name, stored as <key>.idx; original: LeCun's, shipped as <original>.gz; md5 and size: of the
# uncompressed IDX bytes
MnistFile = namedtuple("MnistFile", "key original md5 size")
FILES = tuple(MnistFile(key, original, md5, size) for (key, original), md5, size in zip(IDX_FILES, (
    "6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624", "2646ac647ad5339dbf082846283269ea",
    "27ae3e4e09519cfbb04c329615203637"), (47040016, 60008, 7840016, 10008)))

HOW_TO_SUPPLY = (f"give data.root=<folder with {ORIGINALS} (.gz or not)>, or leave data.root unset to use the copy "
                 "shipped with reg_runner")
FOLDER_HINT = f"give a folder with {ORIGINALS} (.gz or not)"


class MNIST(IdxDataset):
    NAME = "MNIST"
    CLASSES = tuple("0123456789")
    # the uncompressed bytes' md5 (a copy compressed again, as the one shipped here, is still MNIST)
    CONTENT_MD5 = {name: f.md5 for f in FILES for name in ALIASES[f.key]}

    @classmethod
    def hint(cls) -> str:
        return HOW_TO_SUPPLY

    @classmethod
    def store_files(cls) -> tuple[dict[str, Path], str]:
        try:
            store = ensure_store()
        except OSError as e:
            log.warning("cannot fill the datamaestro store (%s); reading the copy shipped with reg_runner", e)
            return find_files(EMBEDDED), f"package copy {EMBEDDED}"
        from datamaestro import prepare_dataset

        with quiet():  # its "Materializing 4 resources" on the root logger, in every run's output
            ds = prepare_dataset(DATASET_ID)
        paths = dict(train_images=ds.train.images.path, train_labels=ds.train.labels.path,
                     test_images=ds.test.images.path, test_labels=ds.test.labels.path)
        return paths, f"datamaestro {DATASET_ID} ({store})"


def find_files(folder: Path, key: str | None = "data.root") -> dict[str, Path]:
    """``idx_dataset.find_files`` for MNIST (``key`` None: the ``import`` command's argument)."""
    return find_idx_files(folder, "MNIST", HOW_TO_SUPPLY if key else FOLDER_HINT, key)


def store_dir() -> Path:
    """Where datamaestro keeps MNIST: ``$DATAMAESTRO_DIR/data/image/com/lecun/mnist``."""
    if os.environ.get("DATAMAESTRO_DIR") == "":  # datamaestro would use the current folder
        raise DataError("DATAMAESTRO_DIR is set but empty: unset it (the store is then ~/datamaestro) or give a folder")
    from datamaestro.context import Context

    return Path(Context.instance().dataset(DATASET_ID).datapath)


def ensure_store() -> Path:
    """Put into the datamaestro store any of the four files it lacks (or holds damaged), from the package's copy,
    verified. A file already there is trusted if its size is right (``python -m reg_runner.data check`` verifies
    them all): a full checksum on every run would cost a tenth of a second for nothing."""
    dest = store_dir()
    if todo := [f for f in FILES if not _has_size(dest / f"{f.key}.idx", f.size)]:
        fill(dest, EMBEDDED, todo,
             lambda f, source: log.info("placed %s in the datamaestro store %s (from %s)", f.key, dest, source))
    return dest


def fill(dest: Path, folder: Path, files, said, key: str | None = "data.root") -> None:
    """``files`` (``MnistFile``s) from ``folder`` written into the store ``dest``, all verified before any write,
    each then ``said(f, its source)``; a signal waits for the store's folder and files together."""
    sources, verified = find_files(folder, key), {}
    for f in files:
        raw = idx.read_bytes(sources[f.key])
        if (digest := hashlib.md5(raw).hexdigest()) != f.md5:
            raise DataError(f"{sources[f.key]} is not MNIST's {f.original}: md5 {digest}, expected {f.md5}")
        verified[f] = raw
    with signals.deferred():
        dest.mkdir(parents=True, exist_ok=True)
        for f, raw in verified.items():
            atomic.write_bytes(dest / f"{f.key}.idx", raw)
            said(f, sources[f.key])


def _has_size(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size
