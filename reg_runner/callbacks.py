"""Hydra callbacks: check a run, or a whole multirun, before Hydra makes any folder.

Hydra makes the run folder and writes ``.hydra/`` before the task starts. Checking here first
means a mistyped value or an unusable folder leaves nothing behind, and a finished run's
``.hydra/`` files are never rewritten by a new run aimed at the same folder. The run then takes the
folder's lock, before Hydra writes a byte there, and holds it for its process's life: of two runs
started together into one folder, the second is refused with the folder as the first left it. A
multirun's jobs are checked by its sweeper (``reg_runner.sweep``), which knows them; here, the config
they share, the sweeper's and launcher's own settings, and the pruner against the runs' epochs.
"""

import os
from pathlib import Path

from hydra.experimental.callback import Callback

from reg_runner import kinds
from reg_runner.cli import Task, handed_over, sweep_plugins
from reg_runner.errors import UserError, exit_on_user_error
from reg_runner.signals import STOP


def _folder_key(key: str, folder) -> Path:
    """A folder that can be made: not empty, not under a file, in a writable place."""
    if folder is None or not str(folder).strip():
        raise UserError(f"{key}={str(folder or '')!r} is not allowed: a folder path (empty would mean the "
                        "current folder)")
    path = Path(os.path.abspath(str(folder)))  # as Hydra makes a job's output_dir
    parent = path
    try:
        while not parent.exists():
            if parent.is_symlink():
                raise UserError(f"{key}={str(folder)!r} cannot be created: {parent} is a link to nothing; choose "
                                "another folder")
            parent = parent.parent
    except OSError as e:  # a name too long, a loop of links
        raise UserError(f"{key}={str(folder)[:80]!r}... cannot be created: {e.strerror}; choose another folder") from None
    if not parent.is_dir():
        raise UserError(f"{key}={str(folder)!r} cannot be created: {parent} is a file; choose a folder elsewhere")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{key}={str(folder)!r} cannot be created: {parent} is not writable; choose a writable "
                        "folder")
    return path


def make_folder(key: str, path: Path) -> list[Path]:
    """Make the folder now, so that what the file system refuses (a name too long, /proc) is one line.
    Returns the folders it made, the outermost first (to remove them if the command then stops)."""
    made, parent = [], Path(path).absolute()
    while not parent.exists() and parent != parent.parent:
        made.insert(0, parent)
        parent = parent.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{key}={str(path)!r} cannot be created: {e.strerror}; choose another folder") from None
    return made


class EarlyChecks(Callback):
    """Owns a single run's check and its folder's lock from ``on_run_start`` to ``on_run_end``: ``on_job_start``
    hands both to the task (``reg_runner.cli.Task.expect``), which runs without checking again."""

    kind = kinds.RUN  # what the folder it makes holds

    def __init__(self):
        self.ready: tuple | None = None  # (folder path, check, locked RunFolder) for the job Hydra runs next
        self.folder = None  # the run's folder (``reg_runner.records.RunFolder``), locked until the run ends

    def check_config(self, config, overrides):
        """A run's config, through every stage (``reg_runner.config.check``)."""
        from reg_runner import config as config_lib

        return config_lib.check(config, overrides)

    def on_job_start(self, config, *, task_function, **kwargs) -> None:
        if self.ready is not None and isinstance(task_function, Task):
            task_function.expect(*self.ready)
        self.ready = None

    def on_run_end(self, config, **kwargs) -> None:
        if self.folder is not None:
            self.folder.unlock()

    def on_run_start(self, config, **kwargs) -> None:
        from reg_runner import config as config_lib

        handed_over()  # Hydra has composed the config: its own errors are behind us
        STOP.install()  # from before the folder exists: a SIGTERM during start-up is recorded, not lost
        with exit_on_user_error(in_callback=True):
            config_lib.check_job_name(config.hydra)
            config_lib.hydra_overrides(config.hydra.overrides.hydra, multirun=False)
            run_dir = _folder_key("hydra.run.dir", config.hydra.run.dir)
            checked = self.check_config(config, config.hydra.overrides.task)
            from reg_runner.records import RunFolder  # after the checks: a refused value needs no records

            folder = RunFolder(run_dir)
            folder.refuse_existing(kind=self.kind)  # before any write: a finished run's folder is left as it is
            made = make_folder("hydra.run.dir", run_dir)  # every check passed: Hydra would make it next
            # the folder's one owner from its first byte: its lock, held until the run ends, before Hydra
            # writes .hydra/; then the checks again, under the lock (another run may have started in between)
            folder.lock(then=lambda: folder.refuse_existing(kind=self.kind), key="hydra.run.dir")
            if made:  # what a second Ctrl-C removes while the run has recorded nothing
                STOP.made.append(run_dir)
                STOP.parents.extend(made[:-1])
            if not kinds.marker(run_dir):
                kinds.mark(run_dir, self.kind)
            self.ready, self.folder = (run_dir, checked, folder), folder

    def on_multirun_start(self, config, **kwargs) -> None:
        from reg_runner import config as config_lib
        from reg_runner.sweep import check_hydra, check_pruning

        handed_over()
        STOP.install()
        sweep_plugins()  # Hydra makes the sweeper next
        with exit_on_user_error(in_callback=True):
            config_lib.hydra_overrides(config.hydra.overrides.hydra, multirun=True)
            sweep_dir = _folder_key("hydra.sweep.dir", config.hydra.sweep.dir)
            kind = kinds.kind_of(sweep_dir)
            if kind not in (None, kinds.SWEEP):  # a sweep's runs would be made inside a run, a range test...
                raise UserError(f"hydra.sweep.dir={str(sweep_dir)!r} is {kinds.WHAT[kind]}; choose another "
                                "hydra.sweep.dir")
            study = check_hydra(config.hydra, config.get("objective"))
            # each value every job shares, alone (rules across keys may depend on what a job sweeps: the
            # sweeper checks each job whole before it runs)
            run = config_lib.check(config, through=1)
            if study is not None:
                check_pruning(study, run, run.objective)
