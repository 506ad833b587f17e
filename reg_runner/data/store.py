"""datamaestro's store, where a family's files live when no ``data.root`` is given, and the published md5s the
files of a ``data.root`` folder are checked against (``data.verify``; docs/families.md). A failed download is one
line naming the dataset and the files to place in ``data.root`` instead, and leaves no partial file behind.
"""

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
from pathlib import Path

from reg_runner import atomic
from reg_runner.data import idx
from reg_runner.errors import DataError, cause

TIMEOUT_S = 30  # a download that waits this long for a byte fails, rather than hanging the run's checks
REASONS = (  # the words of a failed download's exceptions (requests', datamaestro's HashCheck) -> its reason
    (r"Failed to resolve '([^']+)'", "{0} cannot be resolved: no network, or no DNS"),
    (r"Digest do not match \(expected (\w+), got (\w+)\)", "a file arrived with md5 {1}, not the published {0}"),
    (r"Connection refused|ConnectionRefused", "the connection was refused"),
    (r"(?i)timed out", f"no answer within {TIMEOUT_S} s"))


def md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def cache_file() -> Path:
    """Where the md5s of ``data.root``'s files are remembered: beside datamaestro's store (its default folder,
    without importing datamaestro)."""
    return Path(os.environ.get("DATAMAESTRO_DIR") or Path.home() / "datamaestro") / "reg_runner" / "md5.json"


def remembered_md5(path: Path, content: bool, known: dict) -> str:
    """``path``'s md5 (``content``: of its uncompressed IDX bytes): ``known``'s (the cache's entries) if it holds
    one for the file's size and modification time, else computed and added to ``known``."""
    path = path.resolve()
    stat = path.stat()
    key, stamp = f"{path}{'|content' if content else ''}", [stat.st_size, stat.st_mtime_ns]
    entry = known.get(key)
    if isinstance(entry, list) and len(entry) == 3 and entry[:2] == stamp and isinstance(entry[2], str):
        return entry[2]
    digest = hashlib.md5(idx.read_bytes(path)).hexdigest() if content else md5(path)
    known[key] = [*stamp, digest]
    return digest


def named_folder(folder: Path, hint: str, key: str | None = "data.root") -> str:
    """``folder`` as a message names it (``key``: what named it; None: a command's argument), once it is checked
    to be a folder."""
    where = f"{key}={str(folder)!r}" if key else str(folder)
    if not folder.is_dir():
        raise DataError(f"{where} is not a folder; {hint}")
    return where


def check_published(family, folder: Path) -> None:
    """Each file ``family`` reads from ``folder`` against its published md5: one ``DataError`` naming the first
    that differs or has none. A folder that passes has its md5s remembered; a refused one writes nothing."""
    cache, known = cache_file(), None
    with contextlib.suppress(OSError, ValueError):  # no cache yet, or a damaged one: the md5s are computed again
        known = json.loads(cache.read_text())
    known = known if isinstance(known, dict) else {}
    before = dict(known)
    for path in family.files(folder):
        name, plain = path.name, path.name.removesuffix(".gz")
        content = name not in family.FILE_MD5 and plain in family.CONTENT_MD5
        expected = family.CONTENT_MD5[plain] if content else family.FILE_MD5.get(name)
        if expected is None:
            raise DataError(f"{path} has no published md5 to be checked against ({family.NAME} publishes "
                            f"{', '.join(sorted(family.FILE_MD5) or sorted(family.CONTENT_MD5))}): give the files as "
                            "published, or data.verify=false to train on these as they are")
        got = remembered_md5(path, content, known)
        if got != expected:
            what = "uncompressed content's " if content else ""
            raise DataError(f"{path} is not {family.NAME}'s {plain if content else name}: its "
                            f"{what}md5 is {got}, not the published {expected}; give the files as published, or "
                            "data.verify=false to train on a modified copy knowingly")
    if known != before:
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs the md5s again
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_json(cache, known)


@contextlib.contextmanager
def quiet():
    """A context in which datamaestro's info lines (not its warnings and errors) stay out of the run's output: the
    run's own log says where the data is."""
    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "datamaestro" not in record.pathname

    logging.getLogger().addFilter(keep)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(keep)


def reason(e: BaseException) -> str:
    """Why a download failed, in a few words (requests wraps the exception that says it)."""
    text = " ".join(str(x) for x in (e, e.__cause__, e.__context__) if x is not None)
    for pattern, said in REASONS:
        if found := re.search(pattern, text):
            return said.format(*found.groups())
    return cause(e, 120)


def fetch(definition, dataset: str, checksums: dict[str, str], hint: str):
    """``definition``'s datamaestro config, every resource in the store. A download is checked by the definition's
    own ``HashCheck``; a file a failed one left that differs from ``checksums`` (by resource name) is removed.
    ``hint``: what to place in ``data.root`` instead, for the message."""
    with quiet():
        config = definition.prepare(download=False)
        missing = [r for r in definition.ordered_resources if not Path(r.prepare()).exists()]
        if not missing:
            return config
        before = socket.getdefaulttimeout()
        socket.setdefaulttimeout(TIMEOUT_S)
        try:
            for resource in missing:
                resource.download()
        except Exception as e:  # no network, a refused connection, a server error, a full disk, a wrong checksum
            for resource in missing:
                path = Path(resource.prepare())
                if path.is_file() and checksums.get(resource.varname) and md5(path) != checksums[resource.varname]:
                    path.unlink()  # a file the failed download left half-written
            raise DataError(f"{dataset} is not in the datamaestro store ({definition.datapath}) and cannot be "
                            f"downloaded here ({reason(e)}); {hint}") from None
        finally:
            socket.setdefaulttimeout(before)
    return config
