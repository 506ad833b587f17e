"""Atomic file writes: a kill at any moment leaves the previous complete file, never a partial one (a temp file in
the same folder, fsynced, then renamed over the target: ``os.replace`` is atomic within one file system)."""

import json
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)
IN_FLIGHT: set[str] = set()  # temp files being written: a command ended by a signal removes them


def write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """``durable=False``: no fsync. A killed process still leaves the previous whole file; a power cut may
    lose this version (for a record rewritten often, whose next durable write follows soon)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    IN_FLIGHT.add(tmp)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; records are as readable as any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        IN_FLIGHT.discard(tmp)


def write_text(path: Path, text: str, durable: bool = True) -> None:
    write_bytes(path, text.encode("utf-8"), durable)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")
