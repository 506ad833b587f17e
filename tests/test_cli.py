"""The real CLI, end to end, on tiny IDX data written by the tests."""

import csv
import json
import math

import pytest
import torch
import yaml
from conftest import read_metrics, without_timing, write_presets
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_a_run_records_everything(cli):
    proc = cli("model.norm=batchnorm", "reg.l2=1e-4", "trainer.epochs=3", in_process=False)  # the real CLI
    run = proc.run_dir
    # the one-line summary names the run folder
    assert str(run) in proc.stdout.strip().splitlines()[-1]

    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        assert (run / ".hydra" / name).is_file()
    resolved = yaml.safe_load((run / "resolved_config.yaml").read_text())
    assert resolved["seed"] == 0 and resolved["model"]["norm"] == "batchnorm" and resolved["reg"]["l2"] == 1e-4
    assert resolved["trainer"]["early_stopping"]["monitor"] == "val/acc"  # interpolations resolved

    env = json.loads((run / "environment.json").read_text())
    assert env["packages"]["torch"] == torch.__version__ and env["device"] == "cpu"
    assert {"python", "packages", "device_name", "git", "argv"} <= env.keys()

    m = read_metrics(run)
    assert m["status"] == "completed" and m["epochs_run"] == 3 and m["seed"] == 0
    history = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]
    best = max(history, key=lambda r: float(r["val/acc"]))  # first of the best, as the runner picks
    assert m["best_epoch"] == int(best["epoch"]) and m["best_val"] == pytest.approx(float(best["val/acc"]))
    assert m["test_at_best"]["acc"] == pytest.approx(float(best["test/acc"]))
    assert m["final"]["epoch"] == 3 and "train/penalty" in m["final"]  # L2 on: penalty logged apart
    assert m["data"]["n_train"] == 100 and m["data"]["n_val"] == 400 and m["data"]["n_test"] == 200
    assert m["timing"]["wall_s"] > 0

    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / "checkpoints" / name, weights_only=True)
        assert {"model", "optimizer", "scheduler", "epoch", "config"} <= ckpt.keys()
        assert ckpt["config"]["seed"] == 0
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["rng"].keys() == {"init", "dropout", "batches", "augment", "examples"}
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=True)["epoch"] == m["best_epoch"]

    events = EventAccumulator(str(run)).Reload()
    tags = events.Tags()["scalars"]
    assert {"loss/train", "loss/val", "loss/test", "acc/train", "acc/val", "acc/test", "lr", "penalty/train"} <= set(
        tags
    )
    assert [e.step for e in events.Scalars("loss/val")] == [1, 2, 3]
    assert "reg_runner.run" in (run / "reg_runner.log").read_text()


def test_same_seed_same_numbers_other_seed_other_numbers_same_split(cli):
    a, b, c = (read_metrics(cli(f"seed={s}").run_dir) for s in (0, 0, 1))
    assert without_timing(a) == without_timing(b)
    assert a["best"] != c["best"]
    assert a["data"] == c["data"]  # same training images (split_seed), whatever the seed


def test_split_seed_changes_the_training_images(cli):
    a, b = (read_metrics(cli(f"data.split_seed={s}", "trainer.epochs=1").run_dir) for s in (0, 1))
    assert a["data"]["train_indices_sha256"] != b["data"]["train_indices_sha256"]


def test_seed_null_draws_and_records_a_seed(cli):
    run = cli("seed=null", "trainer.epochs=1").run_dir
    seed = yaml.safe_load((run / "resolved_config.yaml").read_text())["seed"]
    assert isinstance(seed, int) and read_metrics(run)["seed"] == seed
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["config"]["seed"] == seed


def test_multirun_of_the_design_card(cli):
    # in this process: the real CLI's basic multiruns are test_stacked's (their lone runs, a process each)
    proc = cli("--multirun", "model.norm=none,batchnorm,layernorm", "seed=0,1", "trainer.epochs=1", in_process=True)
    runs = sorted(p for p in proc.run_dir.iterdir() if p.is_dir())
    assert len(runs) == 6
    seen = set()
    for run in runs:
        cfg = yaml.safe_load((run / "resolved_config.yaml").read_text())
        seen.add((cfg["model"]["norm"], cfg["seed"]))
        assert read_metrics(run)["status"] == "completed"
    assert seen == {(n, s) for n in ("none", "batchnorm", "layernorm") for s in (0, 1)}
    assert "\r" not in proc.stderr  # no progress bar in multirun


SWEEPS = {
    "model.norm": "none,batchnorm,layernorm,rmsnorm",
    "model.norm_position": "before_activation,after_activation",
    "model.activation": "relu,leaky_relu,gelu,silu,elu,tanh,sigmoid",
    "model.init": "default,xavier_uniform,xavier_normal,kaiming_uniform,kaiming_normal,orthogonal",
    "optimizer": "adam,adamw,sgd,rmsprop",
    "scheduler": "none,exponential,linear,cosine,onecycle,cyclic,plateau",  # step: below, with a step inside the run
    "reg.apply_to": "weights,all",
    "augmentation": "none,noise,affine,noise_affine",
}


@pytest.mark.parametrize("key", SWEEPS)
def test_every_option_of_every_group_trains(cli, key):
    extra = {"model.norm_position": ["model.norm=layernorm"], "reg.apply_to": ["reg.l1=1e-5", "reg.l2=1e-4"]}
    proc = cli("--multirun", f"{key}={SWEEPS[key]}", *extra.get(key, []), "trainer.epochs=1")
    runs = sorted(p for p in proc.run_dir.iterdir() if p.is_dir())
    options = SWEEPS[key].split(",")
    assert len(runs) == len(options)
    losses = []
    for run, option in zip(runs, options):
        cfg = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        assert f"{key}={option}" in cfg
        m = read_metrics(run)
        assert m["status"] == "completed", run
        assert all(math.isfinite(v) for v in m["final"].values()), m["final"]
        losses.append(m["final"]["train/loss"])
    if key != "scheduler":  # schedulers only differ once the lr moves; the rest change the very first step
        assert len(set(losses)) == len(losses), dict(zip(options, losses))


VARIANTS = {
    "dropout_residual": ["model.dropout=0.3", "model.residual=true", "model.depth=2"],
    "depth0": ["model.depth=0"],
    "stratified": ["data.stratified=true", "data.val_size=50"],
    "clip_accumulate": ["trainer.grad_clip=1.0", "trainer.accumulate=2", "trainer.drop_last=true"],
    "cosine_warmup": ["scheduler=cosine", "scheduler.warmup_epochs=1"],
    "plateau_warmup": ["scheduler=plateau", "scheduler.warmup_epochs=1"],
    "linear_warmup": ["scheduler=linear", "scheduler.warmup_epochs=1"],
    "step": ["scheduler=step", "scheduler.step_size=1"],
    "deterministic_loss": ["trainer.deterministic=true", "objective=val/loss"],
    "nesterov_raw": ["optimizer=sgd", "optimizer.nesterov=true", "data.normalize=false"],
}


def test_trainer_and_data_options(cli, tmp_path):
    """Each variant, one after another in one multirun process (which also shows that a job's
    deterministic mode does not leak into the next)."""
    search = write_presets(tmp_path / "presets", "variant", VARIANTS)
    proc = cli("--multirun", f"+variant={','.join(VARIANTS)}", search)
    runs = {name: next(p for p in proc.run_dir.iterdir() if f"variant={name}" in p.name) for name in VARIANTS}
    for name, run in runs.items():
        m = read_metrics(run)
        assert m["status"] == "completed" and m["epochs_run"] == 2, name
        config = yaml.safe_load((run / "resolved_config.yaml").read_text())
        for item in VARIANTS[name]:
            key, _, value = item.partition("=")
            if "." in key:
                node = config
                for part in key.split("."):
                    node = node[part]
                assert node == yaml.safe_load(value), (name, key)


def test_eval_every_and_early_stopping(cli):
    run = cli("trainer.epochs=7", "trainer.eval_every=3").run_dir
    m = read_metrics(run)
    assert [int(r["epoch"]) for r in csv.DictReader((run / "history.csv").open())] == [3, 6, 7]
    assert m["best"]["epoch"] in (3, 6, 7) and m["final"]["epoch"] == 7 and m["epochs_run"] == 7
    run = cli(
        "trainer.epochs=200", "trainer.early_stopping.enabled=true", "trainer.early_stopping.patience=2",
        "trainer.early_stopping.monitor=val/loss", "optimizer.lr=0.05", "objective=val/loss",
    ).run_dir
    m = read_metrics(run)
    assert m["status"] == "early_stopped" and m["epochs_run"] < 200 and m["stopped_at"] == m["epochs_run"]
    # the best epoch is the one the patience counted from, not the last: the record names it
    assert m["best_epoch"] == m["best"]["epoch"] == m["stopped_at"] - 2, (m["best_epoch"], m["stopped_at"])


def test_early_stopping_that_cannot_act_is_said(cli):
    proc = cli("trainer.epochs=7", "trainer.eval_every=3", "trainer.early_stopping.enabled=true",
               "trainer.early_stopping.patience=3")
    assert ("trainer.early_stopping.patience=3 is not less than the 3 evaluations of this run (trainer.epochs=7, "
            "trainer.eval_every=3): early stopping cannot stop it") in proc.stdout + proc.stderr
    proc = cli("trainer.epochs=7", "trainer.eval_every=3", "trainer.early_stopping.enabled=true",
               "trainer.early_stopping.patience=2")
    assert "early stopping cannot stop it" not in proc.stdout + proc.stderr


def test_a_finished_run_folder_is_never_overwritten(cli, tmp_path):
    run_dir = tmp_path / "kept"
    cli("trainer.epochs=1", run_dir=run_dir)
    before = (run_dir / "metrics.json").read_text()
    proc = cli("trainer.epochs=1", run_dir=run_dir, check=False)
    assert proc.returncode == 2 and "already holds a finished run" in proc.stderr
    assert (run_dir / "metrics.json").read_text() == before


def test_divergence_ends_the_run_with_a_valid_record(cli):
    proc = cli("optimizer=sgd", "optimizer.lr=1e6", "trainer.epochs=20")
    m = read_metrics(proc.run_dir)
    assert m["status"] == "diverged" and m["stopped_at"] < 20
    assert "diverged" in proc.stdout


@pytest.mark.parametrize("when, said", [("engine", "while the command ended"), ("records", "as the run ended")])
def test_a_signal_after_the_last_epochs_check_ends_the_command_with_its_line(cli, monkeypatch, when, said):
    """A run acts on a signal after each epoch; one recorded later (while its last epoch is recorded, or as the
    command ends) still ends the command in one line, 128 + the signal, not exit 0 without a word, and offers no
    checkpoint to resume a completed run from."""
    import signal

    from reg_runner.signals import STOP
    from reg_runner.trainer.engine import Engine
    from reg_runner.trainer.listeners import Records

    monkeypatch.setattr(STOP, "signal", None)
    owner, name = (Engine, "run") if when == "engine" else (Records, "epoch")
    original = getattr(owner, name)

    def then_a_signal(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if when == "engine" or all(m.state.status == "completed" for m in args[0].members):
            STOP.signal = signal.SIGTERM  # as STOP's handler records it
        return out

    monkeypatch.setattr(owner, name, then_a_signal)
    proc = cli("trainer.epochs=2", check=False, in_process=True)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"interrupted by SIGTERM {said}; every run had recorded its end"
    assert read_metrics(proc.run_dir)["status"] == "completed"


def test_runs_train_with_the_cyclic_collector_on(cli, monkeypatch):
    """``python -m reg_runner`` turns Python's cyclic collector off for its start-up (``reg_runner.__main__``):
    the checks passed, a run and every job of a multirun train with it on."""
    import gc

    from reg_runner.trainer.engine import Engine

    trained, seen = Engine.run, []

    def noting(self, *args, **kwargs):
        seen.append(gc.isenabled())
        return trained(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "run", noting)
    for args in (["trainer.epochs=1"], ["--multirun", "seed=0,1", "trainer.epochs=1"]):
        gc.disable()  # as reg_runner.__main__ leaves it
        try:
            cli(*args, in_process=True)
        finally:
            gc.enable()
    assert seen == [True, True, True]
