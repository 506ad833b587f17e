"""A stack's exactness check is remembered on disk, keyed by all it depends on; a stack trains only where it pays;
a signal stops the check within seconds, with the one line other stops give."""

import json
import logging
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import TINY, read_metrics

from reg_runner import exactness
from reg_runner.model.mlp import MLP

SMALL = MLP.model_validate(dict(_target_="reg_runner.model.mlp.MLP", depth=1, width=8, activation="relu", norm="none",
                                norm_position="before_activation", dropout=0.0, residual=False, init="default"))
SHAPES = dict(model_cfg=SMALL, shape=(1, 4, 4), n_classes=3, members=2, train_rows=(5,), eval_rows=(7,),
              device=torch.device("cpu"))


@pytest.fixture
def probes(monkeypatch, tmp_path) -> list:
    """The checks made (the real probe, counted), remembered in a folder of this test's own."""
    monkeypatch.setenv(exactness.CACHE_ENV, str(tmp_path / "cache"))
    made, real = [], exactness.probe

    def counted(*args, **kwargs):
        made.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(exactness, "probe", counted)
    return made


def test_the_check_is_made_once_then_remembered_on_disk(probes, tmp_path):
    found = exactness.difference(**SHAPES)  # None, or where a member first differs (it does here, on some CPUs)
    assert len(probes) == 1
    assert exactness.difference(**SHAPES) == found and len(probes) == 1  # remembered
    files = list((tmp_path / "cache" / "exactness").iterdir())
    assert len(files) == 1
    entry = json.loads(files[0].read_text())
    assert entry["difference"] == found and entry["key"]["torch"] == torch.__version__
    assert entry["key"]["threads"] == torch.get_num_threads() and entry["key"]["device"] == "cpu"
    assert exactness.cache_dir() == tmp_path / "cache" / "exactness"


def test_a_new_torch_build_thread_count_cpu_or_structure_checks_again(probes, monkeypatch):
    exactness.difference(**SHAPES)
    monkeypatch.setattr(torch, "__version__", torch.__version__ + ".other")
    exactness.difference(**SHAPES)
    assert len(probes) == 2
    monkeypatch.setattr(torch.version, "git_version", "another build")
    exactness.difference(**SHAPES)
    assert len(probes) == 3
    before = torch.get_num_threads()
    torch.set_num_threads(1 if before > 1 else 2)
    try:
        exactness.difference(**SHAPES)
    finally:
        torch.set_num_threads(before)
    assert len(probes) == 4
    monkeypatch.setattr(exactness, "cpu_name", lambda: "another CPU")
    exactness.difference(**SHAPES)
    assert len(probes) == 5
    exactness.difference(**{**SHAPES, "members": 3})
    assert len(probes) == 6
    exactness.difference(**SHAPES)  # all as it was last: remembered
    assert len(probes) == 6
    # another device is another key (a GPU's stack is not claimed bitwise, so it is not probed there)
    assert exactness.key(**{**SHAPES, "device": torch.device("cuda", 0)}) != exactness.key(**SHAPES)


def test_a_damaged_file_is_ignored_with_one_warning_and_rewritten(probes, caplog):
    found = exactness.difference(**SHAPES)
    path = next(exactness.cache_dir().iterdir())
    for damage in ("{not json", json.dumps({"key": {"another": 1}, "difference": None}),
                   json.dumps({"key": exactness.key(**SHAPES), "difference": 3}),
                   json.dumps({"key": exactness.key(**SHAPES), "difference": None, "speeds": {"lone_step": "fast"}})):
        path.write_text(damage)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="reg_runner.exactness"):
            assert exactness.difference(**SHAPES) == found
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "is damaged" in lines[0] and str(path) in lines[0] and "\n" not in lines[0], lines
        assert json.loads(path.read_text())["key"] == exactness.key(**SHAPES)  # rewritten whole
    assert len(probes) == 5


SPEEDS = exactness.Speeds(lone_step=0.010, stack_step=0.020, lone_eval=0.004, stack_eval=0.008)  # 4 runs: 2x faster


def test_the_decision_weighs_the_measured_speeds_against_the_check_still_to_pay():
    assert exactness.saving(4, SPEEDS, steps=100, chunks=10) == pytest.approx(4 * 1.04 - 2.08)
    assert exactness.worth(4, SPEEDS, 100, 10, cost=0.0) is None  # saves 2.08 s, nothing to pay
    assert exactness.worth(4, SPEEDS, 100, 10, cost=1.0) is None
    short = exactness.worth(4, SPEEDS, 100, 10, cost=5.0)
    assert short.startswith("their runs are too short to repay the exactness check here") and "2.1 s" in short and "5 s" in short
    slow = exactness.Speeds(lone_step=0.010, stack_step=0.039, lone_eval=0.004, stack_eval=0.0155)  # 4 runs: 0.975
    assert exactness.worth(4, slow, 10_000, 1000, cost=0.0).startswith("a stack of them is no faster on this machine")
    # the check's cost grows with the stack: each member alone, then every size from 2 to K at each shape
    assert exactness.check_cost(2, SPEEDS, 1, 1) == pytest.approx(2 * 0.010 + 0.020 + 2 * 0.004 + 0.008)
    assert exactness.check_cost(8, SPEEDS, 2, 2) > 2 * exactness.check_cost(4, SPEEDS, 2, 2)


def test_runs_too_short_to_repay_timing_a_stack_are_not_timed(cli, monkeypatch, tmp_path):
    """Timing a stack costs about (rounds + 1) x (K + 1) lone steps: runs shorter than that over 5% train lone at
    once, untimed and unchecked, and the log says why."""
    assert exactness.too_short(4, 99) and not exactness.too_short(4, 100)  # 4 x 5 = 20 > 0.05 x 4 x 99 = 19.8
    assert exactness.too_short(8, 89) and not exactness.too_short(8, 90)
    monkeypatch.setattr(exactness, "measure", lambda *a, **k: pytest.fail("timed"))
    monkeypatch.setenv(exactness.CACHE_ENV, str(tmp_path / "cache"))  # this test's own: nothing in it before
    sweep = cli("--multirun", "seed=0,1", "hydra/launcher=stacked", "hydra.launcher.only_if_faster=true",
                "logging.tensorboard=false")  # 2 epochs of 4 batches
    out = sweep.stdout + sweep.stderr
    assert ("jobs 0, 1 train one at a time, not as a stack: their runs are too short for a stack to pay here (8 "
            "training steps each") in out, out[-2000:]
    assert not list(exactness.cache_dir().rglob("*.json"))  # nothing measured, nothing remembered


def test_a_stack_that_cannot_win_here_trains_its_runs_lone_and_says_so_in_one_line(cli, monkeypatch):
    """Measured speeds that say a stack of 2 is slower than its 2 runs one after the other: they train lone, with
    their lone numbers, and the log says why in one line."""
    # each run: 30 epochs of 4 batches (long enough to time a stack), 30 evaluations of 2 chunks (validation, test)
    monkeypatch.setattr(exactness, "measure", lambda *a, **k: exactness.Speeds(0.001, 0.004, 0.001, 0.004))
    sweep = cli("--multirun", "seed=0,1", "hydra/launcher=stacked", "hydra.launcher.only_if_faster=true",
                "logging.tensorboard=false", "trainer.epochs=30")
    out = sweep.stdout + sweep.stderr
    lines = [line for line in out.splitlines() if "not as a stack" in line]
    assert len(lines) == 1 and lines[0].endswith(
        "jobs 0, 1 train one at a time, not as a stack: a stack of them is no faster on this machine (their training "
        "steps and evaluations: about 0.72 s stacked, 0.36 s one after another)"), out[-2000:]
    runs = [p for p in sweep.run_dir.iterdir() if p.is_dir()]
    assert len(runs) == 2
    for run in runs:
        assert json.loads((run / "environment.json").read_text())["stack"] is None
        assert read_metrics(run)["status"] == "completed"


# a stack whose check takes seconds here (13 s on a 2-core AMD EPYC): 12 runs of a wide MLP
SLOW_CHECK = ("model.width=1000", "seed=range(0,12)")


def test_a_signal_during_the_check_ends_the_command_within_seconds_with_one_line(cli, tmp_path):
    cache = tmp_path / "own_cache"
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "reg_runner", "--multirun", f"data.root={cli.data}", *TINY,
                             *SLOW_CHECK, "hydra/launcher=stacked", "hydra.launcher.only_if_faster=false",
                             f"hydra.sweep.dir={sweep}"], cwd=tmp_path,
                            env={**cli.env, exactness.CACHE_ENV: str(cache)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    checking = threading.Event()
    out: list[str] = []

    def read():
        for line in proc.stdout:
            out.append(line)
            if "checked the configs and folders of 12 jobs" in line:  # the launcher's check comes next
                checking.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert checking.wait(120), "".join(out)[-2000:]
    time.sleep(1.0)  # well into the check
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    err = proc.stderr.read()
    reader.join(5)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 128 + signal.SIGTERM and "Traceback" not in err + "".join(out), err[-2000:]
    assert lines == ["interrupted by SIGTERM while runs trained; each stopped with a checkpoint (resume it), or "
                     "before it started"], err
    assert not any(p.is_dir() for p in sweep.iterdir()), list(sweep.iterdir())  # no run's folder
    assert not list(cache.rglob("*.json")), list(cache.rglob("*"))  # nothing remembered of a check cut short
