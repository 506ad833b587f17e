"""The run folders below a path, each read from its own records: what it changed, its status, its numbers."""

import json
import os
import re
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reg_runner import dotted, kinds
from reg_runner.config import results_config
from reg_runner.records import TRAINED, RunFolder

# what --status selects: a run's status as its records say (``unrecorded``: no readable metrics.json)
STATUSES = ("completed", "early_stopped", "pruned", "diverged", "failed", "interrupted", "killed", "running", "cut",
            "unrecorded")
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
        m = self.metrics
        for p in path:
            if not isinstance(m, dict) or m.get(p) is None:
                return None
            m = m[p]
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
            run.config = flatten(results_config(config))
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


def flatten(node) -> dict:
    """A nested config as ``dotted.key: text`` (lists as JSON)."""
    return {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in dotted.flat(node).items()}
