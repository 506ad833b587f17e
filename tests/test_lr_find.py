"""The learning-rate range test: the real CLI on tiny data, and how it reads a curve."""

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from reg_runner import lr_find
from reg_runner.model.mlp_net import MLPNet as MLP

PNG = b"\x89PNG\r\n\x1a\n"


def fastai_valley(losses):
    """fastai's valley, as fastai writes it (O(n^2)): the reference for the O(n log n) version."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


def test_valley_matches_fastai_on_random_curves():
    rng = random.Random(0)
    for trial in range(300):
        n = rng.randint(3, 80)
        losses = [rng.choice([rng.random(), round(rng.random(), 1)]) for _ in range(n)]  # ties included
        # fastai's start is one point before the run's first; a run from point 0 gives it index -1 (its
        # last point, by Python's indexing): ours stops at the first point
        assert lr_find.valley(losses) == max(0, fastai_valley(losses)), losses


def test_smoothing_steepest_and_divergence():
    for beta, losses, first in ((0.98, [2.0, 1.0], [2.0]), (0.0, [3.0, 1.0, 2.0], [3.0, 1.0, 2.0])):
        curve = lr_find.Curve(beta)
        for loss in losses:
            curve.add(loss)
        assert curve.smoothed[: len(first)] == first  # bias-corrected: the first point is the first loss
    lrs = [10 ** (k / 10) for k in range(30)]
    curve = [2.0] * 10 + [1.9, 1.8, 1.7, 1.6, 1.5, 1.1, 0.5] + [0.5] * 13
    assert lr_find.steepest(lrs, curve) == 15  # the largest drop: from point 15 (1.1) to 16 (0.5)
    curve = lr_find.Curve(0.0, 4.0)
    assert [curve.add(v) for v in (1.0, 0.5, 1.9, 2.1)] == [False, False, False, True]  # 2.1 > 4 x 0.5
    assert not any(lr_find.Curve(0.0, None).add(v) for v in (1.0, 0.5, 1.9, 2.1))


def test_a_range_wider_than_a_float_still_has_finite_lrs():
    s = lr_find.LrFindConfig(min_lr=1e-300, max_lr=3e38, steps=20, smoothing=0.98, stop_factor=4.0)
    steps = lr_find.lrs(s)
    assert steps[0] == pytest.approx(1e-300) and steps[-1] == pytest.approx(3e38)
    assert all(math.isfinite(v) and v > 0 for v in steps)


def untrained_loss(run_dir, data_root, batch_size):
    """The cross-entropy of a run's initial weights (checkpoints/init.pt) on its first training batch."""
    from reg_runner import checks
    from reg_runner.data import tensors
    from reg_runner.resume import load_config
    from reg_runner.seeding import generators

    cfg = checks.check(load_config(run_dir), through=3).cfg
    data = tensors.load(cfg.data, torch.device("cpu"))
    init = torch.load(run_dir / "checkpoints" / "init.pt", weights_only=True)["model"]
    model = MLP(data.in_features, 10, cfg.model)
    model.load_state_dict(init)
    first = torch.randperm(len(data.train), generator=generators(cfg.seed, torch.device("cpu"))["batches"])[:batch_size]
    with torch.no_grad():
        return F.cross_entropy(model(data.train.x[first]), data.train.y[first]).item()


def test_range_test_writes_its_folder_and_starts_from_the_runs_init(cli, tiny_data):
    proc = cli("lr_find.steps=24", "seed=3", module="reg_runner.lr_find", in_process=False)  # the real CLI
    out = proc.run_dir
    result = json.loads((out / "lr_find.json").read_text())
    assert (out / "lr_find.png").read_bytes()[:8] == PNG
    assert (out / "resolved_config.yaml").is_file() and (out / "lr_find.log").is_file()
    assert result["seed"] == 3
    lrs = result["lrs"]
    assert lrs[0] == pytest.approx(1e-7) and len(lrs) == len(result["losses"]) == len(result["smoothed"])
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert max(ratios) == pytest.approx(min(ratios)) == pytest.approx((10 / 1e-7) ** (1 / 23))
    # the first step's loss is the untrained network's, the same one a run with this seed starts from
    run = cli("seed=3", "trainer.epochs=1")
    assert result["losses"][0] == pytest.approx(untrained_loss(run.run_dir, tiny_data, 25), abs=1e-6)
    valley = result["suggestions"]["valley"]["lr"]
    assert f"optimizer.lr={valley:.2g}" in proc.stdout and "scheduler=onecycle scheduler.max_lr=" in proc.stdout


def test_divergence_stops_the_test_and_suggestions_come_from_before_it(cli):
    proc = cli("lr_find.steps=120", "lr_find.max_lr=1000", module="reg_runner.lr_find")
    result = json.loads((proc.run_dir / "lr_find.json").read_text())
    assert result["stopped"] and len(result["losses"]) < 120
    smoothed = result["smoothed"]
    assert smoothed[-1] > 4 * min(smoothed[:-1])  # it stopped at the first step past 4x the best
    assert all(s <= 4 * min(smoothed[:j]) for j, s in enumerate(smoothed[:-1]) if j)  # not before
    sug = result["suggestions"]
    assert "valley" in sug, sug
    assert sug["minimum"]["loss"] == min(smoothed[120 // 10 : len(smoothed) - 5])  # the window: a tenth of the planned steps in, 5 from the end
    assert sug["onecycle"]["max_lr"] == pytest.approx(sug["minimum"]["lr"] / 10)


def test_lr_scaling_is_undone_in_the_printed_lr(cli):
    proc = cli("lr_find.steps=20", "lr_find.max_lr=0.01", "optimizer.lr_scaling=linear",
               "optimizer.base_batch_size=50", module="reg_runner.lr_find")
    result = json.loads((proc.run_dir / "lr_find.json").read_text())
    assert result["lr_scale"] == pytest.approx(0.5)  # batches of 25 at a base of 50
    assert f"optimizer.lr={result['suggestions']['valley']['lr'] / 0.5:.2g}" in proc.stdout


@pytest.mark.parametrize("override, key, allowed", [
    ("lr_find.max_lr=1e-8", "lr_find.max_lr", "lr_find.min_lr"),
    ("lr_find.max_lr=1e300", "lr_find.max_lr", "a number in (0, 3.40282e+38]"),
    ("lr_find.max_lr=1e38", "lr_find.max_lr", "one step of torch.optim.Adam at 1e+38 overflows float32"),
    ("lr_find.steps=5", "lr_find.steps", "an integer in [20, 100000]"),
    ("lr_find.smoothing=1.0", "lr_find.smoothing", "[0, 1)"),
    ("lr_find.stop_factor=0.5", "lr_find.stop_factor", "null"),
    ("+lr_find.stepz=3", "lr_find.stepz", "did you mean steps"),
    ("trainer.epochs=5", "trainer.epochs", "not set for lr_find"),
    ("optimizer.lr=0.1", "optimizer.lr", "sets the lr itself"),
    ("scheduler=onecycle", "scheduler", "no schedule runs"),
    ("model.dropout=1.5", "model.dropout", "[0, 1)"),
    ("lr_find.steps=20 lr_find.steps=30", "lr_find.steps", "given twice"),
])
def test_bad_values_get_one_line_and_no_folder(cli, override, key, allowed):
    # the first through the real CLI; the others through its entry point in this process (the same checks)
    proc = cli(*override.split(), check=False, module="reg_runner.lr_find",
               in_process=override != "lr_find.max_lr=1e-8")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {key}") and allowed in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and not proc.run_dir.exists()


def test_multirun_is_refused_in_one_line(cli):
    proc = cli("--multirun", "optimizer=adam,sgd", check=False, module="reg_runner.lr_find")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: lr_find runs one range test: run it once per config, without --multirun"]
    assert not proc.run_dir.exists()


def test_a_run_does_not_read_lr_find_keys(cli):
    proc = cli("+lr_find.steps=5", check=False)
    assert proc.returncode == 2 and "lr_find" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
