"""What a run leaves in its folder, every file written atomically.

    .hydra/                 Hydra's own: the composed config, the overrides, Hydra's settings
    resolved_config.yaml    the config with every interpolation resolved and the seed actually used
    environment.json        versions, device, git commit, command line, host
    metrics.json            status, best epoch, best val, test at best, final, timing
    history.csv             one row per evaluation (the curves)
    checkpoints/last.pt     model, optimizer, scheduler, loop state, RNG states, config
    checkpoints/best.pt     the same at the best-validation epoch
    events.out.tfevents.*   TensorBoard
    reg_runner.log          the log
"""

import csv
import io
import json
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch
from omegaconf import OmegaConf

from reg_runner import atomic
from reg_runner.errors import UserError

PACKAGES = ("reg_runner", "torch", "numpy", "hydra-core", "omegaconf", "optuna", "hydra-optuna-sweeper",
            "tensorboard", "datamaestro", "datamaestro-image")
FINISHED = ("completed", "early_stopped", "diverged")


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.metrics = self.path / "metrics.json"
        self.history = self.path / "history.csv"
        self.config = self.path / "resolved_config.yaml"
        self.environment = self.path / "environment.json"
        self.checkpoints = self.path / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"

    def status(self) -> str | None:
        """The recorded status of the run in this folder, None if the folder holds no run."""
        if not self.metrics.exists():
            return None
        try:
            return json.loads(self.metrics.read_text()).get("status", "unknown")
        except (OSError, ValueError):
            return "unreadable"

    def refuse_existing(self) -> None:
        """Never overwrite a run: a new run needs a new folder; an unfinished one can be resumed."""
        status = self.status()
        if status in FINISHED:
            raise UserError(
                f"hydra.run.dir={str(self.path)!r} already holds a finished run (status {status}); "
                "choose another hydra.run.dir"
            )
        if status is not None:
            raise UserError(
                f"hydra.run.dir={str(self.path)!r} already holds a run (status {status}); resume it with "
                f"python -m reg_runner.resume {self.path}, or choose another hydra.run.dir"
            )

    def load_last(self) -> dict:
        """The checkpoint to resume from, checked: one clear line for anything that is not one."""
        status = self.status()
        if status is None or not self.config.exists():
            raise UserError(f"{self.path} is not a reg_runner run folder (no metrics.json / resolved_config.yaml)")
        if status in FINISHED:
            raise UserError(f"{self.path} holds a finished run (status {status}): there is nothing to resume")
        if not self.last.exists():
            raise UserError(f"{self.path} has no checkpoints/last.pt yet (killed before its first checkpoint); "
                            "start the run again")
        try:
            checkpoint = torch.load(self.last, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated, corrupted or foreign file: torch raises many kinds
            raise UserError(f"{self.last} cannot be loaded ({type(e).__name__}): it is damaged or not a "
                            "reg_runner checkpoint") from None
        missing = {"model", "optimizer", "scheduler", "rng", "state", "timing"} - set(checkpoint)
        if not isinstance(checkpoint, dict) or missing:
            raise UserError(f"{self.last} is not a reg_runner checkpoint (missing {sorted(missing)})")
        return checkpoint

    def prepare(self) -> None:
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot write the run folder {self.path}: {e.strerror}; choose a writable hydra.run.dir")

    def write_config(self, cfg) -> None:
        atomic.write_text(self.config, OmegaConf.to_yaml(cfg, resolve=True))

    def write_environment(self, device: torch.device, resumed_at: int | None = None) -> None:
        """environment.json; a resumed run adds environment_resumed_<epoch>.json (it may be another machine)."""
        path = self.environment if resumed_at is None else self.path / f"environment_resumed_{resumed_at}.json"
        atomic.write_json(path, environment(device))

    def write_metrics(self, metrics: dict) -> None:
        atomic.write_json(self.metrics, metrics)

    def write_history(self, history: list[dict]) -> None:
        columns = list(dict.fromkeys(k for row in history for k in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic.write_text(self.history, out.getvalue())

    def save_checkpoint(self, path: Path, payload: dict) -> None:
        atomic.torch_save(path, payload)


def environment(device: torch.device) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return dict(
        python=sys.version.split()[0],
        packages=versions,
        device=str(device),
        device_name=device_name(device),
        torch_threads=torch.get_num_threads(),
        platform=platform.platform(),
        host=socket.gethostname(),
        pid=os.getpid(),
        argv=sys.argv,
        git=git_state(Path(__file__).resolve().parent),
    )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or "cpu"
    return device.type


def git_state(folder: Path) -> dict | None:
    """The commit of the reg_runner code that ran, and whether its tree had changes."""

    def git(*args) -> str:
        return subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        return dict(commit=git("rev-parse", "HEAD"), dirty=bool(git("status", "--porcelain", "--untracked-files=no")))
    except (OSError, subprocess.SubprocessError):
        return None
