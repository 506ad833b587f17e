"""Loss landscapes: the real CLI on tiny runs, its numbers checked against the checkpoint's own loss."""

import csv
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from reg_runner.landscape import surface
from reg_runner.model.mlp_net import MLPNet as MLP

PNG = b"\x89PNG\r\n\x1a\n"


def landscape(cli, *args, check=True, in_process=True):
    """``python -m reg_runner.landscape *args``: its main in this process (conftest.call_in_process), or a process of
    its own (``in_process=False``: once per kind of behaviour, a landscape drawn and each kind of refusal)."""
    if in_process:
        from conftest import call_in_process

        from reg_runner import landscape as landscape_module

        proc = call_in_process(lambda: landscape_module.main(), ["python -m reg_runner.landscape", *map(str, args)],
                               cli.tmp_path, cli.env)
        if check and proc.returncode != 0:
            raise AssertionError(proc.stderr[-3000:])
        return proc
    proc = subprocess.run([sys.executable, "-m", "reg_runner.landscape", *map(str, args)], cwd=cli.tmp_path,
                          env=cli.env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


def checkpoint_loss(run_dir, which="best", split="train"):
    """The loss and accuracy of a run's checkpoint on its training images, with torch.nn and nothing of ours."""
    from reg_runner import checks
    from reg_runner.data import tensors
    from reg_runner.resume import load_config

    cfg = checks.check(load_config(run_dir), through=3).cfg
    data = tensors.load(cfg.data, torch.device("cpu"))
    checkpoint = torch.load(run_dir / "checkpoints" / f"{which}.pt", weights_only=True)
    model = MLP(data.in_features, 10, cfg.model)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    part = getattr(data, split)
    with torch.no_grad():
        logits = model(part.x)
    return F.cross_entropy(logits, part.y).item(), (logits.argmax(1) == part.y).float().mean().item()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data):
    """Two finished tiny runs: a plain MLP and one with BatchNorm (evaluated with its running statistics)."""
    from conftest import CLI

    cli = CLI(tmp_path_factory.mktemp("landscape"), tiny_data)
    plain = cli("trainer.epochs=3").run_dir
    bn = cli("trainer.epochs=3", "model.norm=batchnorm", "model.dropout=0.2").run_dir
    return cli, plain, bn


def test_the_centre_is_the_checkpoint_and_the_path_ends_at_the_init(runs):
    cli, plain, _ = runs
    proc = landscape(cli, plain, "--grid", 7, "--span", 0.5, in_process=False)  # the real command
    result = json.loads((plain / "landscape.json").read_text())
    loss, acc = checkpoint_loss(plain)
    assert result["center"]["loss"] == pytest.approx(loss, abs=1e-5)
    assert result["center"]["acc"] == pytest.approx(acc, abs=1e-6)
    n = 7
    assert len(result["surface"]["loss"]) == n and all(len(row) == n for row in result["surface"]["loss"])
    assert result["surface"]["loss"][n // 2][n // 2] == pytest.approx(loss, abs=1e-5)  # the grid's centre
    assert result["curve"]["loss"][n // 2] == pytest.approx(loss, abs=1e-5)
    assert result["axis"][0] == -0.5 and result["axis"][-1] == 0.5
    # the path: t = 1 is the checkpoint, t = 0 the weights the run started from (its init.pt)
    path = result["path"]
    assert path["init"] == "checkpoints/init.pt"
    t = path["t"]
    init = torch.load(plain / "checkpoints" / "init.pt", weights_only=True)["model"]
    best = torch.load(plain / "checkpoints" / "best.pt", weights_only=True)
    torch.save(dict(best, model=init), plain / "checkpoints" / "init_as_best.pt")
    init_loss, _ = checkpoint_loss(plain, "init_as_best")
    assert path["loss"][t.index(1.0)] == pytest.approx(loss, abs=1e-5)
    assert path["loss"][t.index(0.0)] == pytest.approx(init_loss, abs=1e-5)
    assert init_loss > loss  # it trained
    # the loss rises away from the minimum it trained into
    assert result["sharpness"]["value"] > 0 and result["sharpness"]["radius"] > 0
    for name in ("landscape_1d.png", "landscape_2d.png"):
        assert (plain / name).read_bytes()[:8] == PNG
    assert "sharpness" in proc.stdout


def test_images_reach_the_runs_tensorboard(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli, plain, _ = runs
    landscape(cli, plain, "--grid", 5, "--dims", 1)
    files = sorted(plain.glob("events.out.tfevents.*.landscape"))
    assert files
    acc = EventAccumulator(str(files[-1]), size_guidance={"images": 0})
    acc.Reload()
    assert "landscape/1d" in acc.Tags()["images"]
    image = acc.Images("landscape/1d")[-1]
    assert image.encoded_image_string[:8] == PNG and image.width > 100
    assert json.loads((plain / "landscape.json").read_text())["surface"] is None  # --dims 1: a curve only


def test_directions_are_filter_normalized():
    state = MLP(12, 10, _model_cfg()).state_dict()
    d = surface.direction(state, surface.weight_names(_model_cfg(), (1, 3, 4), 10), torch.Generator().manual_seed(0))
    for name, t in state.items():
        if t.dim() == 2:
            assert torch.allclose(d[name].norm(dim=1), t.norm(dim=1), rtol=1e-5)
            assert not torch.allclose(d[name], t)  # a random direction, not the weights
        elif t.dtype.is_floating_point:
            assert torch.count_nonzero(d[name]) == 0  # biases, norm gains, running statistics: not moved
        else:
            assert name not in d  # BatchNorm's batch counter


def _model_cfg():
    from reg_runner.model.mlp import MLP as ModelConfig

    return ModelConfig(_target_="reg_runner.model.mlp.MLP", depth=2, width=7, activation="relu", norm="batchnorm", norm_position="before_activation",
                       dropout=0.0, residual=False, init="default")


@pytest.mark.slow  # two runs and their landscapes
def test_two_runs_in_one_figure_and_batchnorm_uses_running_statistics(runs, tmp_path):
    cli, plain, bn = runs
    out = tmp_path / "compare"
    landscape(cli, plain, bn, "--grid", 5, "--split", "val", "--val-size", 150, "--out", out)
    both = json.loads((out / "landscape.json").read_text())["runs"]
    assert [r["run"] for r in both] == [str(plain), str(bn)]
    assert all(r["n_images"] == 150 and r["split"] == "val" for r in both)
    assert (out / "landscape_2d.png").read_bytes()[:8] == PNG
    # the BatchNorm run's centre, on its whole training set, is its eval-mode loss (running statistics)
    from conftest import folder_state

    records = folder_state(bn)
    landscape(cli, bn, "--grid", 3, "--dims", 1, "--out", tmp_path / "bn")
    result = json.loads((tmp_path / "bn" / "landscape.json").read_text())
    assert result["center"]["loss"] == pytest.approx(checkpoint_loss(bn)[0], abs=1e-5)
    assert folder_state(bn) == records  # --out: the run folder it read is left as it was, to the byte



def test_the_path_never_extrapolates_a_variance_below_zero(runs, tmp_path):
    """Past the checkpoint (t > 1) the path keeps its BatchNorm statistics: mixing a running variance of
    0.05 with the init's 1 at t = 1.5 would give -0.425, and NaN losses."""
    import shutil

    cli, _, bn = runs
    copy = tmp_path / "small_variance"
    shutil.copytree(bn, copy, ignore=shutil.ignore_patterns("landscape*", "events*"))
    best = torch.load(copy / "checkpoints" / "best.pt", weights_only=True)
    for name in best["model"]:
        if name.endswith("running_var"):
            best["model"][name].fill_(0.05)
    torch.save(best, copy / "checkpoints" / "best.pt")
    landscape(cli, copy, "--grid", 5, "--dims", 1)
    path = json.loads((copy / "landscape.json").read_text())["path"]
    assert path["t"][-1] == 1.5 and all(v is not None for v in path["loss"]), path


@pytest.mark.parametrize("args, says", [
    (["{missing}"], "is not a folder"),
    (["{empty}"], "not a reg_runner run folder"),
    (["{plain}", "--grid", "4"], "'4' is not allowed: an odd integer in [3, 201]"),
    (["{plain}", "--span", "0"], "'0' is not allowed: a number in (0, 10]"),
    (["{plain}", "--checkpoint", "first"], "invalid choice: 'first'"),
    (["{plain}", "--device", "tpu"], "argument --device: 'tpu' is not allowed: one of auto, cpu, cuda, cuda:N, mps"),
    (["{plain}", "--device", "cuda:\u00b2"], "argument --device: 'cuda:\u00b2' is not allowed: one of"),  # int() refuses
    (["{plain}", "--device", "mps"], "argument --device: 'mps' is not allowed: auto or cpu: MPS is not available"),
    (["{plain}", "--out", ""], "empty would mean the current folder"),
    (["{plain}", "--out", "{plain}"], "it already holds files"),
    (["{plain}", "{plain}/"], "is given twice"),
    (["{plain}", "--grid", "5", "--grid", "7"], "--grid is given twice"),
    (["{plain}", "--val-size", "50"], "--val-size=50 is not allowed with --split train"),
    (["{plain}", "--split", "val", "--val-size", "100000"], "at most 400, the run's validation images"),
])
def test_bad_arguments_get_one_line(runs, tmp_path, args, says):
    cli, plain, _ = runs
    (tmp_path / "empty").mkdir()
    values = dict(missing=tmp_path / "nope", empty=tmp_path / "empty", plain=plain)
    before = sorted(p.name for p in plain.iterdir())
    # the first case through the real CLI, the others through its main in this process
    proc = landscape(cli, *[a.format(**values) for a in args], check=False, in_process=args != ["{missing}"])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert says in lines[0] and "Traceback" not in proc.stderr
    assert sorted(p.name for p in plain.iterdir()) == before and not (cli.tmp_path / "outputs").exists()


def _copy_with(run, tmp_path, name, change):
    """A copy of ``run`` whose best.pt's weights ``change`` has edited."""
    import shutil

    copy = tmp_path / name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("landscape*", "events*"))
    best = torch.load(copy / "checkpoints" / "best.pt", weights_only=True)
    best["model"] = change(best["model"])
    torch.save(best, copy / "checkpoints" / "best.pt")
    return copy


def test_checkpoints_that_do_not_fit_get_one_line(runs, tmp_path):
    cli, plain, bn = runs
    bn_weights = torch.load(bn / "checkpoints" / "best.pt", weights_only=True)["model"]
    other = _copy_with(plain, tmp_path, "other", lambda state: bn_weights)
    diverged = _copy_with(plain, tmp_path, "diverged", lambda state: {k: v.fill_(float("nan")) for k, v in state.items()})
    lrf = cli("lr_find.steps=20", module="reg_runner.lr_find").run_dir
    for folder, says in ((other, "does not hold the network of"), (diverged, "loss of nan (the run diverged)"),
                         (lrf, "is a learning-rate range test's folder")):
        proc = landscape(cli, folder, "--grid", 3, "--out", tmp_path / f"out_{folder.name}", check=False,
                         in_process=folder is not other)  # the first through the real CLI
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], proc.stderr
        assert not (tmp_path / f"out_{folder.name}").exists()  # nothing written, not even an empty folder


def test_a_tiny_span_draws_a_flat_surface(runs, tmp_path):
    cli, plain, _ = runs
    landscape(cli, plain, "--grid", 3, "--span", "1e-12", "--out", tmp_path / "flat")
    assert (tmp_path / "flat" / "landscape_2d.png").read_bytes()[:8] == PNG


def test_a_damaged_checkpoint_gets_one_line(runs, tmp_path):
    import shutil

    cli, plain, _ = runs
    copy = tmp_path / "copy"
    shutil.copytree(plain, copy, ignore=shutil.ignore_patterns("landscape*", "events*"))
    (copy / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint")
    proc = landscape(cli, copy, check=False, in_process=False)  # the real CLI's line, torch's warnings and all
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {copy}/checkpoints/best.pt cannot be read as a checkpoint (UnpicklingError); it is damaged"]
    (copy / "checkpoints" / "best.pt").write_bytes(b"\x80\x04junk")  # a pickle protocol torch warns about first
    proc = landscape(cli, copy, check=False, in_process=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "cannot be read as a checkpoint" in lines[0], proc.stderr
    shutil.copy(plain / "checkpoints" / "best.pt", copy / "checkpoints" / "best.pt")
    (copy / "checkpoints" / "init.pt").write_bytes(b"not a checkpoint")  # the path's start: the same line
    proc = landscape(cli, copy, "--grid", 3, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {copy}/checkpoints/init.pt cannot be read as a checkpoint (UnpicklingError); it is damaged"]
    assert not (tmp_path / "out").exists()


def test_the_report_shows_each_runs_sharpness(runs, tmp_path):
    from reg_runner.report import report

    cli, plain, bn = runs
    landscape(cli, plain, "--grid", 3, "--dims", 1)
    sharpness = json.loads((plain / "landscape.json").read_text())["sharpness"]["value"]
    text = report(cli.tmp_path, out=tmp_path, plots=False)
    header = next(line for line in text.splitlines() if line.startswith("| run |"))
    assert "sharpness" in [c.strip() for c in header.strip("|").split("|")]
    rows = {r["run"]: r for r in csv.DictReader((tmp_path / "report.csv").open())}
    assert float(rows[plain.name]["sharpness"]) == pytest.approx(sharpness, rel=1e-6)
    assert rows[bn.name]["sharpness"] == "" or bn.joinpath("landscape.json").exists()


@pytest.mark.slow  # runs and their paths
def test_a_run_without_init_pt_gets_its_init_drawn_again_from_its_seed(runs, tmp_path):
    cli, plain, _ = runs
    copy = _copy_with(plain, tmp_path, "no_init", lambda state: state)
    (copy / "checkpoints" / "init.pt").unlink()
    landscape(cli, plain, "--grid", 5, "--dims", 1, "--out", tmp_path / "with")
    landscape(cli, copy, "--grid", 5, "--dims", 1, "--out", tmp_path / "without")
    with_init = json.loads((tmp_path / "with" / "landscape.json").read_text())["path"]
    redrawn = json.loads((tmp_path / "without" / "landscape.json").read_text())["path"]
    assert redrawn["init"].startswith("drawn again") and with_init["init"] == "checkpoints/init.pt"
    assert redrawn["loss"] == with_init["loss"]  # the same weights, bit for bit
