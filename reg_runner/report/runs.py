"""The run folders below a path, each read from its own records (what it changed, its status, its numbers), and
what selects those a report reads: ``--where key=value``, ``--status`` and ``--tag``."""

import difflib
import json
import os
import re
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reg_runner import dotted, kinds
from reg_runner.config import results_config
from reg_runner.errors import UserError
from reg_runner.records import FINISHED, TRAINED, RunFolder

# what --status selects: a run's status as its records say (``unrecorded``: no readable metrics.json)
STATUSES = (*FINISHED, "failed", "interrupted", "killed", "running", "cut", "unrecorded")
SKIP_DIRS = {"checkpoints", ".hydra", ".submitit", "__pycache__"}


@dataclass
class Run:
    path: Path
    name: str  # relative to the report's root
    status: str
    state: str = "unrecorded"  # the status alone, one of STATUSES (``status`` adds what to do about it)
    resolved: dict | None = None  # resolved_config.yaml as recorded (what --where and --tag read)
    settings: dict = field(default_factory=dict)  # what sets its group apart: its overrides, or its config's values
    seed: int | None = None
    metrics: dict | None = None
    config: dict | None = None  # resolved_config.yaml, flattened, without seed and what changes no number
    sharpness: float | None = None  # from landscape.json (python -m reg_runner.landscape), of best.pt on train images

    @property
    def trained(self) -> bool:
        """Trained to the end (``records.TRAINED``): a group's mean is taken over such runs."""
        return self.status in TRAINED

    @property
    def short(self) -> str:
        """The run in a table: its multirun job number (the folder's leading digits) and its seed, under the
        folders that lead to it from the report's root."""
        head, _, tail = self.name.rpartition("/")
        job = re.match(r"(\d+)_", tail)
        seed = "" if self.seed is None else f" · seed {self.seed}"
        return f"{head + '/' if head else ''}{job.group(1) if job else tail}{seed}"

    def number(self, *path) -> float | None:
        """A number recorded at ``path`` in metrics.json; None if absent or not a number (a damaged record)."""
        m = dotted.get(self.metrics, ".".join(path))
        return None if isinstance(m, bool) or not isinstance(m, (int, float)) else m

    @property
    def test_acc(self) -> float | None:
        """Test accuracy at the best-validation epoch, for a run trained to the end."""
        return self.number("test_at_best", "acc") if self.trained else None


def natural(name: str) -> list:
    """Sort key: ``2_...`` before ``10_...`` (multirun job numbers)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def find_runs(root: Path) -> list[Run]:
    """The run folders at and below ``root`` (a range test's or a landscape's folder is none, nor holds one)."""
    runs = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted((d for d in dirnames if d not in SKIP_DIRS), key=natural)
        path = Path(dirpath)
        kind = kinds.kind_of(path)
        if kind in (kinds.LR_FIND, kinds.LANDSCAPE):
            dirnames[:] = []
        elif kind == kinds.RUN or (kind is None and (path / ".hydra" / "overrides.yaml").exists()):  # no record yet
            runs.append(read_run(path, root))
            dirnames[:] = []  # a run folder holds no other run
    return runs


def read_run(path: Path, root: Path) -> Run:
    name = str(path.relative_to(root)) if path != root else path.name
    run = Run(path, name, status="unknown")
    with suppress(OSError, yaml.YAMLError):
        items = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
        for item in items if isinstance(items, list) else []:
            key, _, value = str(item).partition("=")
            run.settings[key.lstrip("+~")] = value
    with suppress(OSError, yaml.YAMLError):
        config = yaml.safe_load((path / "resolved_config.yaml").read_text())
        if isinstance(config, dict):
            run.resolved = config
            run.config = {k: json.dumps(v) if isinstance(v, list) else str(v)  # lists as JSON
                          for k, v in dotted.flat(results_config(config)).items()}
    folder = RunFolder(path)
    record = folder.recorded()
    if record is None:
        run.status = "no metrics.json (stopped before training)"
    elif record.get("status") == "unreadable":
        run.status = "unreadable metrics.json"
    else:
        run.metrics = record
        run.status = folder.status()
        run.state = run.status if run.status in STATUSES else "unrecorded"
        run.seed = record.get("seed") if isinstance(record.get("seed"), int) else None
    with suppress(OSError, ValueError, KeyError, TypeError):
        recorded = json.loads((path / "landscape.json").read_text())
        if recorded["split"] == "train" and recorded["checkpoint"] == "best":  # one column, comparable numbers
            run.sharpness = float(recorded["sharpness"]["value"])
    if run.status in ("killed", "interrupted", "failed"):
        run.status += " (resume: python -m reg_runner.resume <folder>)"
    elif run.status == "cut":  # its search ran another trial in its place: resuming it would reach no study
        cut = folder.cut_from_search() or {}
        run.status = f"cut off by a kill (trial {cut.get('trial', '?')}; the search ran another in its place)"
    if run.seed is None and "seed" in run.settings:
        with suppress(ValueError):
            run.seed = int(run.settings["seed"])
    return run


@dataclass(frozen=True)
class Filters:
    """Every ``--where`` and every ``--tag`` must hold, and the status must be one of ``--status`` (any, when none
    is given)."""

    where: tuple = ()  # (key, value, as typed)
    status: tuple = ()
    tags: tuple = ()

    def __bool__(self) -> bool:
        return bool(self.where or self.status or self.tags)

    def describe(self) -> str:
        return " ".join([*(f"--where {text}" for _, _, text in self.where), *(f"--status {s}" for s in self.status),
                         *(f"--tag {t}" for t in self.tags)])


def parse_filters(where=(), status=(), tags=()) -> Filters:
    """The command line's filters, checked: one line naming what is allowed for a bad one."""
    parsed = []
    for text in where:
        key, sep, value = text.partition("=")
        if not sep or not key.strip() or " " in key.strip():
            raise UserError(f"--where {text!r} is not allowed: key=value, with a dotted key of the runs' resolved "
                            "config, e.g. --where model.norm=batchnorm")
        parsed.append((key.strip(), _typed(value), text))
    for s in status:
        if s not in STATUSES:
            raise UserError(f"--status {s!r} is not allowed: one of {', '.join(STATUSES)}")
    for t in tags:
        if not t.strip():
            raise UserError(f"--tag {t!r} is not allowed: a tag the runs carry (tags=[...] when they ran)")
    return Filters(tuple(parsed), tuple(status), tuple(tags))


def _typed(text: str):
    """A value as YAML reads it (``true``, ``null``, ``[a,b]``, ``0.1``), and ``1e-3`` a number too."""
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        with suppress(ValueError):
            return float(value)
    return value


def _same(a, b) -> bool:
    """Equal as values: 0.001 is 1e-3 and 1 is 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def select(runs: list[Run], filters: Filters) -> list[Run]:
    """The runs the filters keep. A ``--where`` key that no run's config holds is a mistake, named in one line."""
    if not filters:
        return runs
    known = sorted({leaf.rsplit(".", up)[0] for r in runs if r.resolved for leaf in dotted.flat(r.resolved)
                    for up in range(leaf.count(".") + 1)})  # every leaf's key and the keys above it
    for key, _, text in filters.where:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            raise UserError(f"--where {text!r} is not allowed: no run's resolved config has the key {key!r}"
                            + (f" (did you mean {hint[0]}?)" if hint else "")
                            + "; give a dotted key of resolved_config.yaml, e.g. --where model.norm=batchnorm")

    def keep(r: Run) -> bool:
        if filters.status and r.state not in filters.status:
            return False
        if filters.tags and not set(filters.tags) <= set(map(str, (r.resolved or {}).get("tags") or [])):
            return False
        return all(_same(dotted.get(r.resolved, key, dotted.MISSING), value) for key, value, _ in filters.where)

    return [r for r in runs if keep(r)]
