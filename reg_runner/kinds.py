"""What a folder is, for every tool: a run, a learning-rate range test, a loss landscape's output, a sweep.

Each command marks its folder with ``.reg_runner.json`` (``{"kind": ...}``), so that other tools refuse a folder of
the wrong kind in one line; folders made before the marker existed are told by the files they hold.
"""

import json
from pathlib import Path

from reg_runner import atomic
from reg_runner.errors import UserError

MARKER = ".reg_runner.json"
RUN, LR_FIND, LANDSCAPE, SWEEP = "run", "lr_find", "landscape", "sweep"
WHAT = {  # every kind, as a message names it
    RUN: "a run's folder",
    LR_FIND: "a learning-rate range test's folder (python -m reg_runner.lr_find)",
    LANDSCAPE: "a loss landscape's output folder (python -m reg_runner.landscape --out)",
    SWEEP: "a sweep's folder (--multirun): it holds runs, one folder each",
}


def mark(folder: Path, kind: str, **extra) -> None:
    """Write the folder's marker (whole, or not at all)."""
    assert kind in WHAT, kind
    try:
        atomic.write_json(Path(folder) / MARKER, dict(kind=kind, **extra))
    except OSError as e:
        raise UserError(f"cannot write {Path(folder) / MARKER}: {e.strerror}; choose a writable folder, or move "
                        "that file away") from None


def marker(folder: Path) -> dict:
    """The folder's marker as written, {} if there is none or it is damaged."""
    try:
        recorded = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) and recorded.get("kind") in WHAT else {}


def kind_of(folder: Path) -> str | None:
    """The folder's kind: its marker's, else what its files say; None for a folder of none of them."""
    folder = Path(folder)
    if recorded := marker(folder).get("kind"):
        return recorded
    if not folder.is_dir():
        return None
    if (folder / "lr_find.json").is_file() or _is_lr_find_config(folder / "resolved_config.yaml"):
        return LR_FIND
    if (folder / "metrics.json").exists() or (folder / "resolved_config.yaml").exists():
        return RUN
    if (folder / "landscape.json").is_file():
        return LANDSCAPE
    if any((folder / name).exists() for name in ("multirun.yaml", "sweep_summary.json", "sweep_summary.md")):
        return SWEEP
    return None


def _is_lr_find_config(path: Path) -> bool:
    """A range test's resolved config has the ``lr_find`` keys at its top."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return any(line.startswith("lr_find:") for line in f)
    except OSError:
        return False


def refuse_other_than(folder: Path, wanted: tuple, advice: str, advice_for: dict | None = None) -> None:
    """One line if the folder is of a kind other than ``wanted`` (one of no known kind is left to the tool's own
    checks). ``advice``: what to give instead; ``advice_for``: other advice for some kinds."""
    kind = kind_of(folder)
    if kind is not None and kind not in wanted:
        raise UserError(f"{folder} is {WHAT[kind]}, not {' or '.join(WHAT[w] for w in wanted)}; "
                        f"{(advice_for or {}).get(kind, advice)}")
