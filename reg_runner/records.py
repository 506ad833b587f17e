"""A run's folder: the files a run leaves there, each written atomically (every file and what it holds:
docs/runs.md), its lock, and the status vocabulary of ``metrics.json`` (a run's own: ``RunFolder.status``).
"""

import csv
import fcntl
import io
import json
import os
import socket
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from reg_runner import atomic, fingerprint, kinds
from reg_runner.errors import UserError
from reg_runner.schema import upgrade

# a run's status, as metrics.json records it: the one vocabulary (reg_runner.report and the sweeps read these)
TRAINED = ("completed", "early_stopped")  # trained to the end: what a result (a group's mean, a trial's value) is of
FINISHED = (*TRAINED, "pruned", "diverged")  # final: never resumed, never overwritten
# what a folder may hold when a new run starts in it: Hydra's files for the job, and the run's lock
BEFORE_START = (".hydra", "reg_runner.log", ".lock", kinds.MARKER)
_CSV: dict[str, tuple] = {}  # history.csv as last written: columns, rows, the last row, the text


class ThreadsUnknown(Exception):
    """A run's record does not say how many torch threads it trained with."""


def folder_to_make(key: str, folder) -> Path:
    """A folder that can be made: not empty, not under a file, in a writable place."""
    if folder is None or not str(folder).strip():
        raise UserError(f"{key}={str(folder or '')!r} is not allowed: a folder path (empty would mean the "
                        "current folder)")
    path = Path(os.path.abspath(str(folder)))  # as Hydra makes a job's output_dir
    parent, cannot = path, f"{key}={str(folder)!r} cannot be created:"
    try:
        while not parent.exists():
            if parent.is_symlink():
                raise UserError(f"{cannot} {parent} is a link to nothing; choose another folder")
            parent = parent.parent
    except OSError as e:  # a name too long, a loop of links
        raise UserError(f"{key}={str(folder)[:80]!r}... cannot be created: {e.strerror}; choose another folder") from None
    if not parent.is_dir():
        raise UserError(f"{cannot} {parent} is a file; choose a folder elsewhere")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{cannot} {parent} is not writable; choose a writable folder")
    return path


def make_folder(key: str, path: Path, into: list | None = None) -> list[Path]:
    """Make the folder now, so that what the file system refuses is one line. Returns the folders it made, outermost
    first; ``into`` gets them before they are made (a signal's handler that removes them then misses none)."""
    absolute = Path(path).absolute()
    made = [p for p in reversed([absolute, *absolute.parents]) if not p.exists()]
    if into is not None:
        into.extend(made)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{key}={str(path)!r} cannot be created: {e.strerror}; choose another folder") from None
    return made


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
        self.init = self.checkpoints / "init.pt"  # the weights before the first step (loss landscape's path)

        self.lockfile = self.path / ".lock"
        self._lock_fd: int | None = None

    def recorded(self) -> dict | None:
        """metrics.json as recorded, None if there is none; ``{"status": "unreadable"}`` if damaged."""
        try:
            record = json.loads(self.metrics.read_text())
        except (FileNotFoundError, NotADirectoryError):  # no such file, or the folder's path is a file's
            return None
        except (OSError, ValueError):
            return {"status": "unreadable"}
        return record if isinstance(record, dict) else {"status": "unreadable"}

    def status(self) -> str | None:
        """The run's status, None if the folder holds no run; ``killed`` for a run recorded as running that no live
        process is writing; ``cut`` for an unfinished run whose search trial a kill cut off and the search ran again
        (``reg_runner.sweep.outcomes``)."""
        if (record := self.recorded()) is None:
            return None
        status = str(record.get("status", "unknown"))
        if status == "running" and not self.in_use():
            status = "killed"
        if status not in FINISHED and status not in ("failed", "running") and self.cut_from_search():
            return "cut"
        return status

    def cut_from_search(self) -> dict | None:
        """The search and trial that replaced this run, if a kill cut it off (its marker says so)."""
        cut = kinds.marker(self.path).get("cut")
        return cut if isinstance(cut, dict) else None

    def refuse_existing(self, key: str = "hydra.run.dir", kind: str = kinds.RUN) -> None:
        """Never overwrite a run, nor write into a folder of other files: a new run needs a new or empty folder (or
        one where Hydra alone has written); an unfinished run is resumed, not restarted."""
        where = f"{key}={str(self.path)!r}"
        other = kinds.kind_of(self.path)
        if other not in (None, kind):
            raise UserError(f"{where} is {kinds.WHAT[other]}; choose another {key}")
        status = self.status()
        if status in FINISHED:
            raise UserError(f"{where} already holds a finished run (status {status}); choose another {key}")
        if status == "running":
            raise self._busy(key)
        if status is not None:
            try:
                self.load_last()  # advise resume only where resume would take the run
            except UserError as e:
                raise UserError(f"{where} already holds a run (status {status}) that cannot be resumed: {e}; "
                                f"choose another {key}") from None
            raise UserError(f"{where} already holds a run (status {status}); resume it with "
                            f"python -m reg_runner.resume {self.path}, or choose another {key}")
        if self.path.is_dir():
            others = sorted(p.name for p in self.path.iterdir() if p.name not in BEFORE_START
                            or p.is_dir() != (p.name == ".hydra"))  # Hydra's folder, and files
            if others:
                raise UserError(f"{where} already holds other files ({', '.join(others[:3])}"
                                f"{', ...' if len(others) > 3 else ''}); choose a new or empty folder")
        elif self.path.exists():
            raise UserError(f"{where} is a file, not a folder; choose a folder")

    def load_last(self) -> dict | None:
        """The checkpoint to resume from, checked; None for a run stopped before its first one (it restarts from its
        first epoch). One clear line for anything that is not one."""
        status = self.status()
        if status is None or not self.config.exists():
            raise UserError(f"{self.path} is not a reg_runner run folder (no metrics.json / resolved_config.yaml); "
                            "give the folder of a run, e.g. outputs/<date>/<time>")
        if status in FINISHED:
            raise UserError(f"{self.path} holds a finished run (status {status}): there is nothing to resume")
        if status == "running":
            raise self._busy()
        cut = self.cut_from_search()
        if cut is not None:
            raise UserError(f"{self.path} is the run of trial {cut.get('trial')} of the search {cut.get('study')!r}, "
                            "which a kill cut off: the search ran another trial in its place, and a resumed run "
                            "would reach no study; nothing to resume")
        if not self.last.exists():
            done = (self.recorded() or {}).get("epochs_run")
            if isinstance(done, int) and not isinstance(done, bool) and done > 0:  # last.pt is written before these
                raise UserError(f"{self.last} is missing, though metrics.json records {done} epochs trained: starting "
                                "over would write a new run over their records; start the run again in a new folder")
            return None
        import torch

        try:
            with warnings.catch_warnings():  # a foreign file's pickle protocol: the line below says it all
                warnings.simplefilter("ignore")
                checkpoint = torch.load(self.last, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated, corrupted or foreign file: torch raises many kinds
            raise UserError(f"{self.last} cannot be loaded ({type(e).__name__}): it is damaged or not a "
                            "reg_runner checkpoint") from None
        parts = ("model", "optimizer", "scheduler", "rng", "state", "timing", "config")
        missing = set(parts) - set(checkpoint if isinstance(checkpoint, dict) else {})
        if not isinstance(checkpoint, dict) or missing:
            raise UserError(f"{self.last} is not a reg_runner checkpoint (missing {sorted(missing)})")
        if bad := [k for k in parts if not isinstance(checkpoint[k], dict)]:
            raise UserError(f"{self.last} is damaged: its {bad[0]} is not what reg_runner writes; start the run again")
        checkpoint["config"] = upgrade(checkpoint["config"])
        state = checkpoint["state"]
        if state.get("status") in FINISHED:  # metrics.json may be damaged; the checkpoint says what the run did
            raise UserError(f"{self.path} holds a finished run (its checkpoint says {state['status']}): there is "
                            "nothing to resume")
        epochs = (checkpoint["config"].get("trainer") or {}).get("epochs")
        epoch = state.get("epoch")
        if not isinstance(epoch, int) or not isinstance(epochs, int) or not 0 <= epoch < epochs:
            raise UserError(f"{self.last} is damaged: it is at epoch {epoch!r} of {epochs!r}; start the run again")
        return checkpoint

    def lock(self, then=None, key: str | None = None) -> None:
        """Hold this folder's lock until ``unlock`` or this process ends (a second process is refused). ``then``: run
        once it is held, before this process's id is written (a refusal there changes nothing); ``key``: the setting
        that named the folder, for the refusal's line."""
        if self._lock_fd is not None:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot write the run folder {self.path}: {e.strerror}; choose a writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._busy(key) from None
        self._lock_fd = fd
        try:
            if then is not None:
                then()
        except BaseException:
            self.unlock()
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(dict(pid=os.getpid(), host=socket.gethostname())).encode())

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
        self._lock_fd = None

    def in_use(self) -> bool:
        """Whether another process (or another ``RunFolder`` of this one) holds the folder's lock."""
        if self._lock_fd is not None:
            return False
        try:
            fd = os.open(self.lockfile, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def _busy(self, key: str | None = None) -> UserError:
        """A live process trains the run here: ``key``, the setting that named a new run's folder, to choose another."""
        if key is not None:
            return UserError(f"{key}={str(self.path)!r} holds a run that a live process is training ({self.owner()}); "
                             f"choose another {key}")
        return UserError(f"{self.path} is being trained right now ({self.owner()}): a second process would write "
                         "into the same folder; wait for it, or stop it first")

    def owner(self) -> str:
        try:
            who = json.loads(self.lockfile.read_text())
            return f"pid {who['pid']} on {who['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def prepare(self) -> None:
        """The folder and checkpoints/, writable; temp files a killed writer left are removed."""
        if self.checkpoints.exists() and not self.checkpoints.is_dir():
            raise UserError(f"{self.checkpoints} is a file, where the run keeps its checkpoints; move it away")
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            for leftover in [*self.path.glob(".*.tmp"), *self.checkpoints.glob(".*.tmp")]:
                leftover.unlink(missing_ok=True)
            if not kinds.marker(self.path):
                kinds.mark(self.path, kinds.RUN)
        except OSError as e:
            raise UserError(f"cannot write the run folder {self.path}: {e.strerror}; choose a writable folder") from None

    def write_config(self, cfg) -> None:
        atomic.write_text(self.config, OmegaConf.to_yaml(cfg, resolve=True))

    def write_environment(self, device, eval_precision: str | None = None, resumed_at: int | None = None,
                          stack: list[str] | None = None, trial: dict | None = None) -> None:
        """environment.json; a resumed run adds environment_resumed_<epoch>.json (it may be another machine).
        ``stack``: the folders of the runs trained with it in one process; ``trial``: its Optuna study and trial."""
        path = self.environment if resumed_at is None else self.path / f"environment_resumed_{resumed_at}.json"
        record = dict(fingerprint.environment(device, eval_precision), stack=stack, trial=trial)
        git = record["git"]  # this record's own copy
        diff = git.pop("diff", "")
        if diff:  # the changes that ran, beside the records (a resumed run on other code keeps both)
            name = fingerprint.PATCH if resumed_at is None else f"source_resumed_{resumed_at}.patch"
            try:
                atomic.write_text(self.path / name, diff)
                git["patch"] = name
            except OSError as e:
                git.update(patch=None, error=f"{name} could not be written ({e.strerror})")
        atomic.write_json(path, record)

    def recorded_threads(self) -> int | None:
        """The torch threads the run first trained with (environment.json), None if no CPU is recorded;
        ``ThreadsUnknown`` for a CPU run (or an unreadable record) that does not say them."""
        try:
            env = json.loads(self.environment.read_text())
        except (OSError, ValueError):
            env = None
        if not isinstance(env, dict):
            raise ThreadsUnknown(f"{self.environment} cannot be read")
        if not str(env.get("device", "")).startswith("cpu"):
            return None
        threads = env.get("torch_threads")
        if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0:
            return threads
        raise ThreadsUnknown(f"{self.environment} says torch_threads={threads!r}")

    def write_metrics(self, metrics: dict) -> None:
        atomic.write_json(self.metrics, metrics)

    def write_history(self, history: list[dict], durable: bool = True) -> None:
        """history.csv, one row per evaluation, written at each (``durable=False`` between checkpoints): only the
        rows added since the last write are formatted."""
        columns = list(dict.fromkeys(k for row in history for k in row))
        key = os.path.realpath(self.history)
        cached = _CSV.get(key)
        text, start = "", 0
        if cached and cached[0] == columns and 0 < cached[1] <= len(history) and history[cached[1] - 1] is cached[2]:
            text, start = cached[3], cached[1]  # the same rows as before, and new ones after them
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        if not start:
            writer.writeheader()
        writer.writerows(history[start:])
        text += out.getvalue()
        _CSV[key] = (columns, len(history), history[-1] if history else None, text)
        atomic.write_text(self.history, text, durable)

    def read_history(self) -> list[dict]:
        """The rows of history.csv that hold an epoch and the curves' metrics, as numbers ([] if unreadable)."""
        try:
            with open(self.history) as f:
                rows = [{k: float(v) for k, v in row.items() if k and v not in ("", None)} for row in csv.DictReader(f)]
        except (OSError, ValueError, TypeError, csv.Error):
            return []
        return [r for r in rows if {"epoch", "val/acc", "val/loss"} <= r.keys()]

    def save_checkpoint(self, path: Path, payload: dict) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save(on_host(payload), buffer)
        atomic.write_bytes(path, buffer.getvalue())


def on_host(obj):
    """``obj`` with every tensor in it on the CPU (one already there is not copied): a checkpoint loads anywhere."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return type(obj)((key, on_host(value)) for key, value in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(on_host(value) for value in obj)
    return obj
