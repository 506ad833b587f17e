"""The CNN family: its stacked members get their lone runs' numbers, and a killed run resumes to the numbers it
would have had, whatever each member's seed, lr, dropout and L2."""

import json
import signal

import pytest
import torch
from conftest import ROOT, call_in_process, killable, read_metrics, tiny, wait_for_epoch, without_timing, write_presets
from omegaconf import OmegaConf

from reg_runner import resume

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


@pytest.mark.slow  # a CNN run killed, resumed, and run uninterrupted
def test_a_killed_cnn_run_resumes_to_the_uninterrupted_numbers(cli, tmp_path):
    settings = (*CNN, "optimizer.lr=0.003", "model.dropout=0.2", "augmentation=crop", "trainer.checkpoint_every=5", "trainer.epochs=30")
    whole = cli(*settings, run_dir=tmp_path / "whole").run_dir
    killed = tmp_path / "killed"
    proc = killable([f"data.root={cli.data}", *tiny(*settings), f"hydra.run.dir={killed}"], tmp_path, cli.env)
    try:
        wait_for_epoch(killed, 10, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert read_metrics(killed)["status"] == "running" and read_metrics(killed)["epochs_run"] < 30
    # the resume in this process (the real resume command: tests/test_resume.py)
    resumed = call_in_process(resume.main, ["python -m reg_runner.resume", str(killed)], tmp_path, cli.env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert without_timing(read_metrics(killed)) == without_timing(read_metrics(whole))
    assert (killed / "history.csv").read_text() == (whole / "history.csv").read_text()


def _compose(*overrides, config="config"):
    from hydra import compose, initialize_config_dir

    from reg_runner import cli

    with initialize_config_dir(config_dir=cli.CONFIG_DIR, version_base=None):
        return compose(config, overrides=list(overrides))


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, tiny_data):
    """A finished tiny CNN run with BatchNorm, dropout, L2 and histograms, trained in this process."""
    from reg_runner.run import Job, run_stack

    run_dir = tmp_path_factory.mktemp("cnn") / "run"
    run_stack([Job(_compose(f"data.root={tiny_data}", *tiny("trainer.epochs=3"), *CNN, "model.dropout=0.1",
                            "reg.l2=0.001", "logging.histograms=2", "augmentation=crop"), run_dir)])
    return run_dir


def test_tensorboard_shows_the_cnns_layers(cnn_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(cnn_run), size_guidance={"histograms": 0, "images": 0}).Reload()
    tags = set(ea.Tags()["histograms"])
    for layer in ("conv1", "conv2", "fc", "output"):
        assert f"hist/weight/{layer}" in tags and f"hist/input_grad/{layer}" in tags, layer
    for block in ("conv1", "conv2", "fc"):
        assert f"hist/activation/{block}" in tags
    assert {"hist/bn_running_mean/conv1", "hist/bn_running_var/conv2", "hist/entropy/val"} <= tags
    assert {"grad_norm/conv1", "update_ratio/fc", "penalty/train"} <= set(ea.Tags()["scalars"])
    assert "augmentation/augmented" in ea.Tags()["images"]


def test_l1_and_l2_cover_the_conv_and_linear_weights_per_apply_to():
    from reg_runner.model.cnn import CNN as Family
    from reg_runner.reg.penalty import Penalties

    cfg = Family(_target_="reg_runner.model.cnn.CNN", channels=[4, 6], kernel=3, pool="max", norm="batchnorm",
                 groups=2, activation="relu", dropout=0.0, hidden=5, head="flatten", init="default")
    model = cfg.stacked((1, 8, 8), 10, [cfg, cfg], [None, None])
    g = torch.Generator().manual_seed(0)
    for k in range(2):
        cfg.initialize(model, k, g)
    params = list(model.parameters())
    values = Penalties(model, [(0.0, 0.5, "weights"), (0.25, 0.0, "all")]).values(params)
    weights = [model.blocks[0].conv.weight, model.blocks[1].conv.weight, model.fc.linear.weight,
               model.classifier.weight]
    assert values[0].item() == pytest.approx(0.5 * sum(w[0].square().sum().item() for w in weights), rel=1e-6)
    assert values[1].item() == pytest.approx(0.25 * sum(p[1].abs().sum().item() for p in params), rel=1e-6)


def test_the_range_test_runs_on_the_cnn(tmp_path, tiny_data):
    from reg_runner.lr_find.__main__ import range_test

    cfg = _compose(f"data.root={tiny_data}", *tiny(), *CNN, "lr_find.steps=20", config="lr_find")
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    result = range_test(cfg, tmp_path)
    assert len(result["losses"]) == 20 and (tmp_path / "lr_find.png").is_file()
    assert result["initial_loss"] == pytest.approx(2.3, abs=0.3)  # an untrained network's, on 10 classes


def test_landscape_directions_are_normalized_per_convolution_filter(cnn_run, tmp_path):
    from reg_runner import landscape
    from reg_runner.landscape import surface

    landscape.main([str(cnn_run), "--grid", "5", "--dims", "1", "--out", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "landscape.json").read_text())
    assert result["center"]["loss"] == pytest.approx(read_metrics(cnn_run)["best"]["train/loss"], rel=0.5)
    assert len(result["curve"]["loss"]) == 5 and result["sharpness"]["value"] is not None
    state = torch.load(cnn_run / "checkpoints" / "best.pt", weights_only=True)["model"]
    from reg_runner.model.cnn import CNN as Family
    from reg_runner.resume import load_config

    cfg = Family.model_validate(OmegaConf.to_container(load_config(cnn_run).model))
    weights = surface.weight_names(cfg, (1, 8, 8), 10)
    assert weights == {"blocks.0.conv.weight", "blocks.1.conv.weight", "fc.linear.weight", "classifier.weight"}
    d = surface.direction(state, weights, torch.Generator().manual_seed(0))
    conv = state["blocks.1.conv.weight"]  # (out, in, 3, 3): one filter per output channel, all of its inputs
    torch.testing.assert_close(d["blocks.1.conv.weight"].flatten(1).norm(dim=1), conv.flatten(1).norm(dim=1))
    assert torch.count_nonzero(d["blocks.0.norm.weight"]) == 0 and torch.count_nonzero(d["blocks.0.conv.bias"]) == 0


def test_model_and_data_families_import_nothing_downstream():
    """Data flows one way (config -> data -> model -> engine -> listeners -> records): nothing in reg_runner/model
    or reg_runner/data imports the runner, the config checks, the loop, the sweeps or the records."""
    import ast

    allowed = ("reg_runner.model", "reg_runner.data", "reg_runner.schema", "reg_runner.errors", "reg_runner.atomic",
               "reg_runner.signals", "reg_runner.keys", "reg_runner.private")
    # atomic, signals and private (the adapter for torch's private names): leaf utilities that import only the
    # standard library; keys: the role markers a schema's fields carry (it reads the run's schema only when a list of
    # keys is asked for, never at import)
    for path in [*(ROOT / "reg_runner" / "model").glob("*.py"), *(ROOT / "reg_runner" / "data").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reg_runner"):
                names = [f"{node.module}.{a.name}" if node.module == "reg_runner" else node.module for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("reg_runner")]
            else:
                continue
            for name in names:
                assert name.startswith(allowed), f"{path.relative_to(ROOT)} imports {name}"


def test_a_run_recorded_before_families_still_loads(cnn_run, tmp_path):
    """Configs recorded before model and data families had a ``_target_`` are the MLP's and MNIST's."""
    from reg_runner.schema import upgrade

    legacy = {"model": {"depth": 1}, "data": {"root": None}, "seed": 0}
    assert upgrade(legacy) == {"model": {"_target_": "reg_runner.model.mlp.MLP", "depth": 1},
                               "data": {"_target_": "reg_runner.data.mnist.MNIST", "root": None}, "seed": 0}
    assert upgrade(upgrade(legacy)) == upgrade(legacy)
    from reg_runner.model import load

    net = load(cnn_run)
    assert type(net).__name__ == "CNNNet" and not net.training
    x = torch.randn(4, 1, 8, 8)
    assert net(x).shape == (4, 10)
