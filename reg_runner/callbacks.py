"""Hydra callbacks: check a run before Hydra creates its folder.

Hydra makes the run folder and writes ``.hydra/`` before the task starts. Checking here first
means a mistyped value or an unusable folder leaves nothing behind, and a finished run's
``.hydra/`` files are never rewritten by a new run aimed at the same folder.
"""

from pathlib import Path

from hydra.experimental.callback import Callback

from reg_runner.errors import UserError, exit_on_user_error


def _creatable(key: str, folder: str) -> None:
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{key}={folder!r} cannot be created ({e.strerror}); choose a writable folder") from None


class EarlyChecks(Callback):
    def on_run_start(self, config, **kwargs) -> None:
        from reg_runner.cli import release_stderr
        from reg_runner.records import RunFolder

        release_stderr()  # Hydra has composed the config: its own errors are behind us
        from reg_runner.validate import validate

        with exit_on_user_error():
            validate(config)
            RunFolder(config.hydra.run.dir).refuse_existing()
            _creatable("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config, **kwargs) -> None:
        from reg_runner.cli import release_stderr

        release_stderr()
        with exit_on_user_error():
            _creatable("hydra.sweep.dir", config.hydra.sweep.dir)
