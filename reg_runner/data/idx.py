"""Reading and writing IDX files (LeCun's MNIST format), plain or gzip-compressed.

Format: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, then
one big-endian uint32 per dimension, then the data in C order.
"""

import gzip
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from reg_runner.errors import DataError

if TYPE_CHECKING:  # numpy is imported where arrays are made: a refused command's start-up does without it
    import numpy as np

_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {"uint8": 0x08, "int8": 0x09}


def read_bytes(path: Path) -> bytes:
    """The uncompressed content of an IDX file (``.gz`` is decompressed)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:  # EOFError: truncated gzip stream
        raise DataError(f"cannot read {path}: {e}") from None


def read(path: Path) -> "np.ndarray":
    """The array an IDX file holds, or one line saying why it is none."""
    import numpy as np

    raw = read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (wrong magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (header cut short)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path} is truncated or corrupt: header says shape {tuple(shape)} ({expected} bytes of data), "
                        f"file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def write(path: Path, array: "np.ndarray") -> None:
    """Write ``array`` (uint8 or int8) as IDX; gzip-compressed if ``path`` ends in ``.gz``."""
    import numpy as np

    array = np.ascontiguousarray(array)
    header = bytes([0, 0, _CODES[array.dtype.name], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def read_images(path: Path, dataset: str) -> "np.ndarray":
    """An IDX file of images as (N, 1, H, W) uint8, or one line saying what is wrong with it."""
    array = read(path)
    if array.dtype != "uint8":
        raise DataError(f"{path} holds {array.dtype} values: {dataset}'s images are unsigned bytes (IDX type 0x08)")
    if array.ndim != 3:
        raise DataError(f"{path} holds an array of shape {array.shape}: {dataset}'s images are N x height x width")
    return array[:, None]


def read_labels(path: Path, dataset: str, n_classes: int, split: str) -> "np.ndarray":
    """An IDX file of ``split``'s labels, checked as ``labels`` checks them."""
    array = read(path)
    if array.ndim != 1:
        raise DataError(f"{path} holds an array of shape {array.shape}: {dataset}'s labels are one number per image")
    return labels(array, str(path), split, n_classes)


def labels(values: "np.ndarray", where: str, split: str, n_classes: int) -> "np.ndarray":
    """A file's labels as int64, each an integer in [0, n_classes) (an integer-valued float is one), or one line
    naming ``where`` they came from and the first bad one."""
    import numpy as np

    allowed = f"labels must be the integers 0-{n_classes - 1}"
    if values.dtype.kind not in "iuf":
        raise DataError(f"{where}: its labels are {values.dtype} values; {allowed}")
    if values.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if len(bad):
            raise DataError(f"{where}: {split} label {values[bad[0]].item()!r} is not an integer; {allowed} (index "
                            f"{bad[0]} is the first bad one)")
    bad = np.flatnonzero((values < 0) | (values >= n_classes))
    if len(bad):
        raise DataError(f"{where}: {split} label {values[bad[0]].item()!r} out of range; labels must be "
                        f"0-{n_classes - 1} (index {bad[0]} is the first bad one)")
    return values.astype(np.int64)
