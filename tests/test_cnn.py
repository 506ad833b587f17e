"""The CNN family: its stacked members get their lone runs' numbers, and a killed run resumes to the numbers it
would have had, whatever each member's seed, lr, dropout and L2."""

import signal
import subprocess
import sys
import time

from conftest import read_metrics, tiny, without_timing, write_presets

CNN = ("model=cnn", "model.norm=batchnorm")
MEMBERS = {"a": ["seed=0", "optimizer.lr=0.003"], "b": ["seed=1", "optimizer.lr=0.01", "model.dropout=0.2"],
           "c": ["seed=2", "optimizer.lr=0.003", "reg.l2=0.001", "model.dropout=0.1", "model.init=kaiming_normal"]}


def test_a_stack_mixing_seeds_lrs_dropout_and_l2_gives_each_member_its_lone_numbers(cli, tmp_path):
    searchpath = write_presets(tmp_path / "presets", "member", MEMBERS)
    sweep = cli("--multirun", *CNN, "+member=a,b,c", "hydra/launcher=stacked", "trainer.epochs=3",
                "augmentation=crop", searchpath, run_dir=tmp_path / "stacked")
    out = sweep.stdout + sweep.stderr
    # on a CPU the CNN's stacked form runs each member's own convolutions: the probe finds it exact, one stack
    assert "3 jobs in 1 stacks" in out and "one at a time" not in out, out
    for run in sorted(p for p in sweep.run_dir.iterdir() if p.is_dir()):
        name = run.name.split("member=")[1].split(",")[0]
        lone = cli(*CNN, *MEMBERS[name], "trainer.epochs=3", "augmentation=crop", run_dir=tmp_path / f"lone_{name}")
        assert without_timing(read_metrics(run)) == without_timing(read_metrics(lone.run_dir)), name
        assert (run / "history.csv").read_text() == (lone.run_dir / "history.csv").read_text()
        assert read_metrics(run)["timing"]["stack_size"] == 3


def test_a_killed_cnn_run_resumes_to_the_uninterrupted_numbers(cli, tmp_path):
    settings = (*CNN, "optimizer.lr=0.003", "model.dropout=0.2", "augmentation=crop", "trainer.checkpoint_every=5", "trainer.epochs=30")
    whole = cli(*settings, run_dir=tmp_path / "whole").run_dir
    killed = tmp_path / "killed"
    argv = [sys.executable, "-m", "reg_runner", f"data.root={cli.data}", *tiny(*settings), f"hydra.run.dir={killed}"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                if read_metrics(killed)["epochs_run"] >= 10:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert read_metrics(killed)["status"] == "running" and read_metrics(killed)["epochs_run"] < 30
    resumed = subprocess.run([sys.executable, "-m", "reg_runner.resume", str(killed)], cwd=tmp_path, env=cli.env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert without_timing(read_metrics(killed)) == without_timing(read_metrics(whole))
    assert (killed / "history.csv").read_text() == (whole / "history.csv").read_text()
