"""CIFAR-10 (``data=cifar10``): 32x32 colour images in 10 classes, 50,000 to train and 10,000 to test
(Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html); its pickled batches read by ``_Batch``, which runs
no code, from ``data.root`` (``find_batches``) or datamaestro's store: docs/families.md, "The built-in families".
"""

import functools
import io
import pickle
import tarfile
from pathlib import Path
from typing import ClassVar

import numpy as np

from reg_runner.data import DataFamily, store
from reg_runner.data.split import Images, checked
from reg_runner.data.idx import labels as checked_labels
from reg_runner.errors import DataError

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST = "test_batch"
SIDE, CHANNELS = 32, 3


class CIFAR10(DataFamily):
    NAME = "CIFAR-10"
    CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    URL: ClassVar[str] = "https://www.cs.toronto.edu/~kriz/" + ARCHIVE
    DATASET_ID: ClassVar[str] = "edu.toronto.cs.kriz.cifar10"  # in datamaestro's store
    TAR_MD5: ClassVar[str] = "c58f30108f718f92721af3b95e74349a"  # as published; torchvision.datasets.CIFAR10's too
    FILE_MD5: ClassVar[dict[str, str]] = {  # the archive, and its batches (torchvision.datasets.CIFAR10's md5s)
        ARCHIVE: TAR_MD5, "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec", "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a", "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        TEST: "40351d587109b95175f43aff81a1287e"}

    @classmethod
    def hint(cls) -> str:
        return f"download {ARCHIVE} from {cls.URL} into a folder and give data.root=<that folder>"

    @classmethod
    def read(cls, root: str | None) -> Images:
        if root is not None:
            folder = Path(root).expanduser()
            batches, source = find_batches(folder, cls.hint()), f"folder {folder}"
        else:
            definition = archive_definition(cls, cls.DATASET_ID)
            config = store.fetch(definition, cls.NAME, {}, cls.hint())
            batches, source = find_batches(Path(config.path), cls.hint(), key=None), \
                f"datamaestro {definition.id} ({definition.datapath})"
        n = len(cls.CLASSES)
        parts = [read_batch(name, batches[name], n) for name in TRAIN]
        train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        return checked(train, read_batch(TEST, batches[TEST], n), source)

    @classmethod
    def files(cls, folder: Path) -> list[Path]:
        return sorted({p if not isinstance(p, tuple) else p[0] for p in find_batches(folder, cls.hint()).values()})


@functools.cache
def archive_definition(family, identifier: str):
    """The datamaestro dataset of a family published as one .tar.gz, stored under
    ``data/__custom__/reg_runner/<identifier>``: the folder it unpacks to, the archive checked."""
    from datamaestro.data import Folder
    from datamaestro.definitions import dataset
    from datamaestro.download.archive import tardownloader
    from datamaestro.utils import HashCheck

    def folder(batches) -> Folder:
        return Folder.C(path=batches)

    folder.__doc__ = f"{family.NAME}\n\n{family.__module__} (reg_runner)"
    return tardownloader("batches", family.URL, checker=HashCheck(family.TAR_MD5))(
        dataset(Folder, id=identifier, url=family.URL)(folder))


def find_batches(folder: Path, hint: str, key: str | None = "data.root") -> dict:
    """Where each batch is, in the archive, the batches' folder or the folder itself: ``{name: path}`` of its
    file, or ``{name: (archive, name)}`` inside the archive."""
    where = store.named_folder(folder, hint, key)
    names = (*TRAIN, TEST)
    for place in (folder, folder / FOLDER):
        if all((place / name).is_file() for name in names):
            return {name: place / name for name in names}
    archive = folder / ARCHIVE
    if archive.is_file():
        return {name: (archive, name) for name in names}
    found = [name for name in names if (folder / name).is_file() or (folder / FOLDER / name).is_file()]
    lacking = (f"lacks {', '.join(n for n in names if n not in found)}" if found
               else f"holds neither {ARCHIVE} nor {FOLDER}/")
    raise DataError(f"{where} {lacking} of CIFAR-10; {hint}")


def _raw(place) -> tuple[bytes, str]:
    """A batch's bytes, from its file or ``(archive, name)`` inside the archive, and how messages name it."""
    if not isinstance(place, tuple):
        try:
            return place.read_bytes(), str(place)
        except OSError as e:
            raise DataError(f"cannot read {place}: {e.strerror}") from None
    archive, name = place
    try:
        with tarfile.open(archive, "r:*") as tar:
            return tar.extractfile(f"{FOLDER}/{name}").read(), f"{archive}:{FOLDER}/{name}"
    except KeyError:
        raise DataError(f"{archive} lacks {FOLDER}/{name}: it is not CIFAR-10's {ARCHIVE}") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read {archive} as a tar.gz archive ({type(e).__name__}: {e}); it is damaged or not "
                        f"CIFAR-10's {ARCHIVE}") from None


class _Batch(pickle.Unpickler):
    """Builds only what a CIFAR batch holds: containers, bytes, numbers and numpy arrays."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}  # bytes, in pickles made by Python 3

    def find_class(self, module, name):
        module = module.replace("numpy.core.", "numpy._core.")  # pickles made with numpy 1
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR batch never holds")


def read_batch(name: str, place, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch (at a place ``find_batches`` gives) as (N, 3, 32, 32) uint8 images and int64 labels, or one line
    naming the file and what is wrong."""
    raw, where = _raw(place)
    try:
        batch = _Batch(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:  # not a pickle, a truncated one, or one that refers to anything else
        raise DataError(f"{where} is not a CIFAR-10 batch ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where} is not a CIFAR-10 batch (it holds a {type(batch).__name__}, not a dict)")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{where} is not a CIFAR-10 batch (it lacks 'data' or 'labels')")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CHANNELS * SIDE * SIDE:
        raise DataError(f"{where}: its images are {data.dtype} {data.shape}; CIFAR-10's are uint8 rows of "
                        f"{CHANNELS * SIDE * SIDE} bytes (3 x 32 x 32)")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{where}: {len(data)} images but labels of shape {labels.shape}")
    labels = checked_labels(labels, where, "test" if name == TEST else "train", n_classes)
    return data.reshape(len(data), CHANNELS, SIDE, SIDE), labels
