"""Runs started together into one folder: one owns it from its first byte, the other changes nothing.

Each pair is two real processes running the CLI's entry (Hydra, its callbacks, the run), forked from
this one with everything imported and released at the same instant by one write to a pipe, so the
race is decided in the CLI and not in Python's start-up.
"""

import json
import os
import random
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import Forked, tiny

import reg_runner.cli
import reg_runner.run
import torch._dynamo
import torch.utils.tensorboard

# everything a run imports (torch._dynamo: what an optimizer imports on first use), imported once before the forks
PRE_FORK = (reg_runner.cli, reg_runner.run, torch._dynamo, torch.utils.tensorboard)

pytestmark = pytest.mark.slow  # every test races real processes

ROUNDS = 20
RIVALS = {"a": ["seed=1", "model.dropout=0.0"], "b": ["seed=2", "model.dropout=0.3"]}


def _start(gate: int, argv: list[str], log: str, delay: float, env: dict) -> Forked:
    """A child that waits on ``gate``, then runs ``python -m reg_runner argv``; its output goes to ``log``."""
    return Forked(argv, Path(log).parent, {**os.environ, **env}, log,
                  before=lambda: (os.read(gate, 1), time.sleep(delay)))


def _race(tmp_path, tiny_data, n: int, delays: dict) -> tuple[str, dict]:
    run_dir = tmp_path / f"race{n}"
    gate_r, gate_w = os.pipe()
    env = {"DATAMAESTRO_DIR": str(tmp_path / "datamaestro")}
    pids = {}
    for name, own in RIVALS.items():
        argv = [f"data.root={tiny_data}", *tiny(*own, "trainer.epochs=1"), f"hydra.run.dir={run_dir}"]
        pids[name] = _start(gate_r, argv, str(tmp_path / f"{n}{name}.log"), delays[name], env)
    os.write(gate_w, b"go")  # both at once
    codes = {name: proc.wait(timeout=120) for name, proc in pids.items()}
    os.close(gate_r)
    os.close(gate_w)
    return run_dir, codes


def test_two_runs_started_together_into_one_folder(tmp_path, tiny_data):
    rng = random.Random(0)
    for n in range(ROUNDS):
        late = rng.choice(list(RIVALS))  # the same instant, or one a few ms after the other
        delays = {name: (rng.choice([0, 0, 0.002, 0.01, 0.03]) if name == late else 0.0) for name in RIVALS}
        run_dir, codes = _race(tmp_path, tiny_data, n, delays)
        logs = {name: (tmp_path / f"{n}{name}.log").read_text() for name in RIVALS}
        assert sorted(codes.values()) == [0, 2], (codes, logs)
        survivor = next(name for name, code in codes.items() if code == 0)
        loser = next(name for name in RIVALS if name != survivor)
        assert "error: hydra.run.dir=" in logs[loser] and "Traceback" not in logs[loser], logs[loser]
        # every record of the folder describes the run that trained in it
        seed, dropout = (float(o.split("=")[1]) for o in RIVALS[survivor])
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        assert all(o in overrides for o in RIVALS[survivor]), (n, survivor, overrides)
        for path in (run_dir / ".hydra" / "config.yaml", run_dir / "resolved_config.yaml"):
            config = yaml.safe_load(path.read_text())
            assert (config["seed"], config["model"]["dropout"]) == (seed, dropout), (n, path)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["seed"] == seed and metrics["status"] == "completed"
        assert json.loads((run_dir / "environment.json").read_text())["pid"] == json.loads(
            (run_dir / ".lock").read_text())["pid"]


def test_a_run_refused_by_a_live_or_finished_folder_changes_nothing_in_it(cli, tmp_path):
    run_dir = tmp_path / "kept"
    cli("trainer.epochs=1", "seed=1", run_dir=run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    proc = cli("trainer.epochs=1", "seed=2", run_dir=run_dir, check=False)
    assert proc.returncode == 2 and "already holds a finished run" in proc.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
