"""``python -m reg_runner`` and ``reg-runner``: ``cli.entry``, ended without the interpreter's teardown."""

import gc

# Start-up (Hydra, OmegaConf, pydantic and the schemas) makes a few hundred thousand objects that all live on:
# the cyclic collector's passes over them were a tenth of a refused command's time. It is switched back on as soon
# as the command's checks pass (``cli.EarlyChecks``), before anything trains or searches.
gc.disable()

from reg_runner import cli, signals  # noqa: E402  (after the collector is off: these imports are the start-up)


def command() -> None:
    signals.main(cli.entry)  # entry(), then the exit, without the interpreter's teardown


if __name__ == "__main__":
    command()
