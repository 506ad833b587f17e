"""Learning-rate schedules against their definitions, optimizer presets, the large-batch rule."""

import csv
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from reg_runner.optimizer import scaled_lr
from reg_runner.scheduler.schedule import Schedule

LR, EPOCHS, STEPS = 0.1, 12, 5  # 12 epochs of 5 optimizer steps
CONF = Path(__file__).resolve().parent.parent / "conf" / "scheduler"


def trace(name: str, metric=lambda epoch: 1.0, **over) -> list[list[float]]:
    """lr before each optimizer step, per epoch, driving Schedule as the training loop does."""
    cfg = OmegaConf.merge(OmegaConf.load(CONF / f"{name}.yaml"), over)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR, momentum=0.9)
    schedule = Schedule(optimizer, cfg, EPOCHS, STEPS)
    epochs = []
    for epoch in range(EPOCHS):
        lrs = []
        for _ in range(STEPS):
            lrs.append(schedule.lr)
            optimizer.step()
            schedule.after_batch()
        epochs.append(lrs)
        schedule.after_epoch(dict.fromkeys(("val/acc", "val/loss"), metric(epoch)))  # the epoch's row
    return epochs


def per_epoch(name, **over):
    t = trace(name, **over)
    assert all(len(set(e)) == 1 for e in t), f"{name} changed the lr within an epoch"
    return [e[0] for e in t]


def close(a, b):
    assert a == pytest.approx(b, rel=1e-6, abs=1e-12)


def test_none_is_constant():
    close(per_epoch("none"), [LR] * EPOCHS)


def test_step():
    close(per_epoch("step", step_size=4, gamma=0.5), [LR * 0.5 ** (e // 4) for e in range(EPOCHS)])


def test_exponential():
    close(per_epoch("exponential", gamma=0.9), [LR * 0.9**e for e in range(EPOCHS)])


def test_linear():
    close(per_epoch("linear", end_factor=0.1), [LR * (1 + (0.1 - 1) * e / EPOCHS) for e in range(EPOCHS)])


def test_cosine():
    close(per_epoch("cosine", eta_min=0.001),
          [0.001 + (LR - 0.001) * (1 + math.cos(math.pi * e / EPOCHS)) / 2 for e in range(EPOCHS)])


def test_warmup_then_cosine():
    w = 3
    expected = [LR * (0.01 + (1 - 0.01) * e / w) for e in range(w)]
    expected += [0 + LR * (1 + math.cos(math.pi * e / (EPOCHS - w))) / 2 for e in range(EPOCHS - w)]
    close(per_epoch("warmup_cosine", warmup_epochs=w), expected)


def test_warmup_then_linear():
    w = 4
    expected = [LR * (0.01 + (1 - 0.01) * e / w) for e in range(w)]
    expected += [LR * (1 + (0.01 - 1) * e / (EPOCHS - w)) for e in range(EPOCHS - w)]
    close(per_epoch("warmup_linear", warmup_epochs=w), expected)


def test_plateau_halves_after_patience_evaluations_without_improvement():
    lrs = per_epoch("plateau", patience=2, factor=0.5, monitor="val/loss")  # constant metric: no improvement
    # the first evaluation sets the best; after 3 more without improvement (> patience 2) the lr halves
    assert lrs[:4] == [LR] * 4 and lrs[4] == pytest.approx(LR / 2) and lrs[8] == pytest.approx(LR / 4)


def test_onecycle_steps_per_batch_through_its_three_points():
    flat = [lr for epoch in trace("onecycle", pct_start=0.3, div_factor=25.0, final_div_factor=1e4) for lr in epoch]
    total = EPOCHS * STEPS
    assert len(set(trace("onecycle")[0])) == STEPS  # changes at every step
    close(flat[0], LR / 25)
    peak = int(0.3 * total) - 1  # torch's OneCycleLR peaks at step pct_start * total - 1
    close(max(flat), LR)
    assert flat.index(max(flat)) == peak
    assert all(a <= b for a, b in zip(flat[:peak], flat[1 : peak + 1]))  # up, then down
    assert all(a >= b for a, b in zip(flat[peak:], flat[peak + 1 :]))
    close(flat[-1], LR / 25 / 1e4 + (flat[-1] - LR / 25 / 1e4))  # ends near max_lr / (div * final_div)
    assert flat[-1] < LR / 25 / 100


def test_cyclic_triangle_per_batch():
    flat = [lr for epoch in trace("cyclic", step_size_up_epochs=2) for lr in epoch]
    up = 2 * STEPS  # steps in half a cycle
    base = LR / 10
    expected = [base + (LR - base) * (1 - abs(s / up % 2 - 1)) for s in range(EPOCHS * STEPS)]
    close(flat, expected)


def test_large_batch_rule():
    assert scaled_lr(0.1, "none", 1200, 300) == 0.1
    close(scaled_lr(0.1, "linear", 1200, 300), 0.4)
    close(scaled_lr(0.1, "sqrt", 1200, 300), 0.2)


def test_scaled_lr_is_the_lr_used_and_logged(cli):
    run = cli("optimizer.lr_scaling=linear", "optimizer.base_batch_size=25", "trainer.batch_size=50",
              "trainer.epochs=1").run_dir
    history = list(csv.DictReader((run / "history.csv").open()))
    close(float(history[0]["lr"]), 2e-3)  # Adam's 1e-3 x 50/25
    assert "scaled by the linear rule (batch 50 / base 25)" in (run / "reg_runner.log").read_text()


OPTIMIZERS = "adam,adamw,sgd,sgd_nesterov,rmsprop,adagrad,nadam,radam,lion,lamb,lars"


@pytest.mark.slow  # a run per optimizer preset
def test_every_optimizer_preset_lowers_the_training_loss(cli):
    proc = cli("--multirun", f"optimizer={OPTIMIZERS}", "trainer.epochs=15")  # 60 steps
    runs = sorted((p for p in proc.run_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0]))
    assert len(runs) == len(OPTIMIZERS.split(","))
    for name, run in zip(OPTIMIZERS.split(","), runs):
        losses = [float(r["train/loss"]) for r in csv.DictReader((run / "history.csv").open())]
        # a clear, steady drop; RAdam is the slowest (its rectification keeps the first steps small)
        assert losses[-1] < 0.97 * losses[0] and losses[-1] == min(losses), (name, losses)
