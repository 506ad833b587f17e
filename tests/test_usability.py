"""What a new user meets first: the progress bar, the run's log, the console's tags, the tests on a fresh clone."""

import functools
import io
import logging
import re
from types import SimpleNamespace

from conftest import ROOT

from reg_runner.trainer import listeners


def test_progress_bar_shows_the_epoch_just_finished(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(listeners, "tqdm", functools.partial(listeners.tqdm, file=out, mininterval=0, miniters=1,
                                                             ncols=120))
    bar = listeners.Progress(True, epochs=3, first_epoch=0)
    for acc in (0.5, 0.75):
        bar.epoch(None, SimpleNamespace(rows={"run": {"train/loss": 1.0, "val/acc": acc}}))
    last = re.split(r"[\r\n]", out.getvalue().rstrip())[-1]
    assert "2/3" in last and "val/acc 0.7500" in last, last
    bar.close(None)


def test_the_run_log_ends_with_the_completed_line(cli):
    proc = cli("logging.tensorboard=false")
    printed = [line for line in proc.stdout.splitlines() if line.startswith("completed:")]
    log = (proc.run_dir / "reg_runner.log").read_text().splitlines()
    assert len(printed) == 1 and log[-1].endswith("][reg_runner.run][INFO] - " + printed[0]), log[-1]


def test_reg_runners_console_lines_are_not_tagged_as_hydras():
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_class

    from reg_runner.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("config", return_hydra_config=True)
    spec = dict(cfg.hydra.hydra_logging.formatters.simple)
    formatter = get_class(spec.pop("()"))(**spec)

    def line(name):
        return formatter.format(logging.LogRecord(name, logging.INFO, __file__, 0, "a line", (), None))

    assert "[HYDRA]" not in line("reg_runner.sweep.stacked") and "[reg_runner.sweep.stacked][INFO] - a line" in line(
        "reg_runner.sweep.stacked")
    assert "[HYDRA] a line" in line("hydra.core.utils")


def test_no_test_needs_a_folder_beside_the_checkout():
    """On a fresh clone every test runs: none reads ``../shared`` (or anything else outside the repository)."""
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name == "test_usability.py":
            continue
        text = path.read_text()
        assert "ROOT.parent" not in text and '"shared" /' not in text, path
