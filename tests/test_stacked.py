"""Many runs, one process: every member of a stack records exactly what it records alone."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import read_metrics, without_timing, write_presets

# members differing in what a member may differ in: seed, lr, dropout p, L1/L2, augmentation, optimizer
MEMBERS = {
    "m0": ["seed=0"],
    "m1": ["seed=1", "optimizer.lr=0.004", "model.dropout=0.3"],
    "m2": ["seed=2", "reg.l1=1e-4", "reg.l2=1e-3", "trainer.grad_clip=0.5"],
    "m3": ["seed=3", "model.dropout=0.5", "model.init=xavier_uniform", "augmentation=noise"],
    "m4": ["seed=4", "optimizer=sgd", "optimizer.lr=1.0e7"],  # diverges
}


@pytest.fixture(scope="module")
def presets(tmp_path_factory) -> str:
    """Each member as an experiment preset, in a config folder added to Hydra's search path."""
    return write_presets(tmp_path_factory.mktemp("presets"), "experiment", MEMBERS)


def lone_and_stacked(cli, presets, structure, names, tmp_path):
    search = presets
    sweep = cli("--multirun", f"+experiment={','.join(names)}", search, *structure, "hydra/launcher=stacked",
                "trainer.epochs=4", run_dir=tmp_path / "stacked")
    stacked = {name: next(p for p in sweep.run_dir.iterdir() if f"experiment={name}" in p.name) for name in names}
    lone = {name: cli(f"+experiment={name}", search, *structure, "trainer.epochs=4", run_dir=tmp_path / name).run_dir
            for name in names}
    return sweep, stacked, lone


def tensorboard_values(run) -> dict:
    """Every scalar and histogram of a run's event files: tag -> [(step, value)], values as text (NaN == NaN)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run), size_guidance={"histograms": 0, "scalars": 0}).Reload()
    out = {t: [(e.step, repr(e.value)) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}
    out.update({t: [(e.step, str(e.histogram_value)) for e in ea.Histograms(t)] for t in ea.Tags()["histograms"]})
    return out


def test_every_member_records_what_it_records_alone(cli, presets, tmp_path):
    names = list(MEMBERS)
    sweep, stacked, lone = lone_and_stacked(cli, presets, ["model.norm=batchnorm"], names, tmp_path)
    assert "stacked launcher: 5 jobs in 1 stacks" in sweep.stdout + sweep.stderr
    for name in names:
        a, b = read_metrics(stacked[name]), read_metrics(lone[name])
        assert without_timing(a) == without_timing(b), name
        assert (stacked[name] / "history.csv").read_text() == (lone[name] / "history.csv").read_text()
        env = json.loads((stacked[name] / "environment.json").read_text())
        assert len(env["stack"]) == 5 and str(stacked[name]) in env["stack"]
        assert a["timing"]["stack_size"] == 5 and b["timing"]["stack_size"] == 1
        for ckpt in ("last.pt", "best.pt"):
            if name == "m4" and ckpt == "best.pt" and not (lone[name] / "checkpoints" / ckpt).exists():
                continue
            x = torch.load(stacked[name] / "checkpoints" / ckpt, weights_only=True)
            y = torch.load(lone[name] / "checkpoints" / ckpt, weights_only=True)
            assert x["model"].keys() == y["model"].keys()
            for k in x["model"]:  # bitwise, NaN for NaN (the diverged member's weights)
                torch.testing.assert_close(x["model"][k], y["model"][k], rtol=0, atol=0, equal_nan=True,
                                           msg=f"{name} {ckpt} {k}")
        assert (stacked[name] / ".hydra" / "overrides.yaml").is_file() and (stacked[name] / "reg_runner.log").is_file()
        # TensorBoard too: scalars and histograms, the untrained model's entropy at step 0 included
        tb = tensorboard_values(stacked[name])
        assert tb == tensorboard_values(lone[name]), name
        assert name == "m4" or tb["hist/entropy/val"][0][0] == 0
    # the absurd lr diverged alone, early, and took no other member with it
    m4 = read_metrics(stacked["m4"])
    assert m4["status"] == "diverged" and m4["stopped_at"] < 4
    assert all(read_metrics(stacked[n])["status"] == "completed" for n in names if n != "m4")


def test_a_member_checkpoint_loads_into_the_plain_network(cli, presets, tmp_path):
    """A stacked member's best.pt is a lone run's: reg_runner.model.mlp.load gives a plain MLP that
    reproduces the recorded validation accuracy."""
    from reg_runner.data import parse_config
    from reg_runner.data import tensors
    from reg_runner.model import load

    sweep = cli("--multirun", "seed=0,1", "model.norm=layernorm", "hydra/launcher=stacked", "trainer.epochs=3",
                run_dir=tmp_path / "s")
    for run in (p for p in sweep.run_dir.iterdir() if p.is_dir()):
        model = load(run, "best")
        config = yaml.safe_load((run / "resolved_config.yaml").read_text())
        data = tensors.load(parse_config(config["data"]), torch.device("cpu"))
        with torch.no_grad():
            acc = (model(data.val.x).argmax(1) == data.val.y).float().mean().item()
        assert acc == pytest.approx(read_metrics(run)["best"]["val/acc"], abs=1e-6)


def test_stacks_follow_the_structure(cli, tmp_path):
    proc = cli("--multirun", "model.norm=none,batchnorm", "optimizer=adam,sgd", "seed=0,1", "hydra/launcher=stacked",
               "hydra.launcher.max_members=3", "trainer.epochs=1")  # the real CLI's stacks: the shapes' test below
    out = proc.stdout + proc.stderr
    # the norm is structural; the optimizer and the seed are each run's own: 2 groups of 4, at most 3 per stack
    assert "stacked launcher: 8 jobs in 4 stacks (at most 3 runs each)" in out
    runs = [p for p in proc.run_dir.iterdir() if p.is_dir()]
    assert len(runs) == 8
    for run in runs:
        assert read_metrics(run)["status"] == "completed"
        stack = json.loads((run / "environment.json").read_text())["stack"] or [str(run)]
        norms = {yaml.safe_load((Path(p) / "resolved_config.yaml").read_text())["model"]["norm"] for p in stack}
        assert len(norms) == 1 and 1 <= len(stack) <= 3


@pytest.fixture(scope="module")
def mnist28(tmp_path_factory) -> Path:
    from conftest import make_tiny_mnist

    return make_tiny_mnist(tmp_path_factory.mktemp("mnist28"), n_train=300, n_test=100, side=28)


@pytest.mark.slow  # per shape, a stacked sweep and its lone runs at 2 torch threads
@pytest.mark.parametrize("shape", [["model.width=50"], ["model.depth=0"], ["model.width=7", "model.activation=tanh"]])
def test_members_get_their_lone_numbers_whatever_the_shape(tmp_path, mnist28, shape):
    # the BLAS kernels give a stacked member bitwise its lone product for some shapes only (on this project's
    # 2-core CPU, with 2 threads and 784 inputs, not for the first two: a member's activations off a 16-byte
    # boundary, few outputs per member in the wide product): the launcher checks the stack's shapes first and
    # trains as lone runs what a stack would change. Both sweeps run in this process (the numbers are the
    # claim, not the process) at the thread count the kernels' rounding depends on.
    from conftest import CLI

    cli = CLI(tmp_path, mnist28)
    cli.env["OMP_NUM_THREADS"] = "2"  # what stack_difference's comparison runs at
    common = [*shape, "optimizer.lr=0.01", "trainer.epochs=3"]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sweep = cli("--multirun", "seed=0,1,2", *common, "hydra/launcher=stacked", run_dir=tmp_path / "stacked")
        lone = cli("--multirun", "seed=0,1,2", *common, run_dir=tmp_path / "lone")
    finally:
        torch.set_num_threads(before)
    out = sweep.stdout + sweep.stderr
    split = "train one at a time, not as a stack: on this machine" in out
    assert split or "3 jobs in 1 stacks" in out
    # the launcher splits exactly where this machine's kernels would give a stacked member other numbers: the
    # same comparison, at the runs' thread count (split, the runs are lone runs, and the claim rests on this
    # comparison; stacked, on theirs)
    why = stack_difference(cli, ["seed=0", *common], members=3)
    assert split == (why is not None), (shape, why)
    if split:
        assert f"({why})" in out
    lone_runs = {read_metrics(run)["seed"]: run for run in lone.run_dir.iterdir() if run.is_dir()}
    for run in (p for p in sweep.run_dir.iterdir() if p.is_dir()):
        alone = lone_runs[read_metrics(run)["seed"]]
        assert without_timing(read_metrics(run)) == without_timing(read_metrics(alone)), (shape, run.name)
        assert (run / "history.csv").read_text() == (alone / "history.csv").read_text()


def stack_difference(cli, overrides: list[str], members: int) -> str | None:
    """``reg_runner.exactness``'s verdict on a stack of ``members`` runs of these overrides, at the thread count the
    CLI's runs have."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import tiny
    from reg_runner import checks
    from reg_runner import exactness
    from reg_runner.errors import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR):
        cfg = compose("config", overrides=tiny(f"data.root={cli.data}", *overrides))
    checked = checks.check(cfg, overrides, through=3)
    before = torch.get_num_threads()
    torch.set_num_threads(int(cli.env.get("OMP_NUM_THREADS", before)))
    try:
        return exactness.probe(checked.cfg.model, checked.split.shape, checked.split.n_classes, members,
                               *exactness.shapes(checked.split.n_train, checked.cfg.trainer.batch_size,
                                                 checked.cfg.trainer.drop_last,
                                                 [len(checked.split.val_idx), checked.split.n_test],
                                                 checked.cfg.trainer.eval_batch_size))
    finally:
        torch.set_num_threads(before)


def history(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "history.csv").open()))
