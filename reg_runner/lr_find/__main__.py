"""``python -m reg_runner.lr_find [overrides]``: the learning-rate range test on the run config.

The run's config tree (``conf/lr_find.yaml`` adds the ``lr_find`` keys), checks and engine: one member, its
batches in its seed's order epoch after epoch, optimizer step j at ``lrs[j]``. Its folder gets
``resolved_config.yaml``, ``lr_find.json``, ``lr_find.png`` and ``lr_find.log``.
"""

import logging
import math
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from reg_runner import atomic, lr_find, signals
from reg_runner.cli import CONFIG_DIR, TRUSTED, entry, handed_over
from reg_runner.errors import exit_on_user_error
from reg_runner.figures import to_png
from reg_runner.schema import parse
from reg_runner.signals import STOP

log = logging.getLogger("reg_runner.lr_find")
CONSTANT = dict(name="none", warmup_epochs=0, warmup_start_factor=0.01)  # the range test sets every lr itself


class LrRange:
    """The member's schedule in ``Engine.train_epoch``, which calls only ``after_batch``: optimizer step j uses
    ``lrs[j]`` (then the last, if the epoch runs past the planned steps: those steps are not recorded)."""

    def __init__(self, optimizer, lrs: list[float]):
        self.optimizer, self.lrs, self.steps = optimizer, lrs, -1
        self.after_batch()

    def after_batch(self) -> None:
        self.steps += 1
        for group in self.optimizer.param_groups:
            group["lr"] = self.lrs[min(self.steps, len(self.lrs) - 1)]


def range_test(cfg, out: Path) -> dict:
    from reg_runner.assembly import Job, assemble
    from reg_runner.checks import Checked
    from reg_runner.config import RunConfig, as_data, effective_lr
    from reg_runner.seeding import deterministic, resolve_seed
    from reg_runner.trainer.engine import Engine

    settings = lr_find.settings(cfg)
    config = as_data(cfg)
    config.pop("lr_find")
    config.update(seed=resolve_seed(config["seed"]), scheduler=CONSTANT)
    run_cfg = parse(RunConfig, config)
    atomic.write_text(out / "resolved_config.yaml",
                      OmegaConf.to_yaml(OmegaConf.create(dict(config, lr_find=settings.model_dump()))))
    scale = effective_lr(run_cfg) / run_cfg.optimizer.lr  # the large-batch rule: the lr used / optimizer.lr
    tc = run_cfg.trainer
    # the run's data, model and member (the callback checked the run this one derives from, less lr_find's keys)
    built = assemble([Job(cfg, out, checked=Checked(run_cfg, None, 1), recorded=config)])
    data, member = built.data, built.members[0]
    planned = lr_find.lrs(settings)
    member.schedule = LrRange(member.optimizer, planned)
    engine = Engine(built.model, data, [member], listeners=[])
    log.info("model: %s on %s; seed %d; lr %g to %g over %d steps", run_cfg.model.describe(), built.device,
             config["seed"], settings.min_lr, settings.max_lr, settings.steps)
    curve, stop = lr_find.Curve(settings.smoothing, settings.stop_factor), None
    losses, smoothed = curve.losses, curve.smoothed
    with deterministic(tc.deterministic):
        while stop is None and len(losses) < settings.steps:
            sums = engine.train_epoch({})["train/loss"][0][:, 0].tolist()  # each batch's loss sum
            sizes = [min(tc.batch_size, len(data.train) - i * tc.batch_size) for i in range(len(sums))]
            steps = [math.fsum(sums[j : j + tc.accumulate]) / sum(sizes[j : j + tc.accumulate])  # each step's mean
                     for j in range(0, len(sums), tc.accumulate)]
            for loss in steps[: settings.steps - len(losses)]:
                if not math.isfinite(loss):
                    stop = f"the loss became {loss} at step {len(losses)} (lr {planned[len(losses)]:.3g})"
                    break
                if curve.add(loss):
                    stop = (f"the smoothed loss passed {settings.stop_factor:g}x its best at step {len(losses) - 1} "
                            f"(lr {planned[len(losses) - 1]:.3g})")
                    break
            if STOP.signal is not None and stop is None:
                stop = f"interrupted by {STOP.name}"
    recorded = planned[: len(losses)]
    result = dict(settings=settings.model_dump(), seed=config["seed"], lr_scale=scale,
                  initial_loss=losses[0] if losses else None, stopped=stop, lrs=recorded, losses=losses,
                  smoothed=smoothed, suggestions=lr_find.suggest(recorded, smoothed, settings.steps))
    atomic.write_json(out / "lr_find.json", result)
    plot(result, out / "lr_find.png", run_cfg.model.describe() + f", {run_cfg.optimizer.target.rsplit('.', 1)[-1]}")
    if STOP.signal is not None:
        print(f"interrupted by {STOP.name}: the curve so far is in {out}", file=sys.stderr, flush=True)
        sys.exit(128 + STOP.signal)
    return result


def lines(result: dict, out: Path) -> list[str]:
    """What the test prints: what ran, and the suggestions as overrides to paste."""
    s, scale = result["settings"], result["lr_scale"]
    head = f"lr_find: {len(result['losses'])} of {s['steps']} steps, lr {s['min_lr']:g} to {s['max_lr']:g}"
    text = [head + (f"; stopped: {result['stopped']}" if result["stopped"] else "")]
    sug = result["suggestions"]
    if "reason" in sug:
        text.append(f"no suggestion: {sug['reason']}")
    else:
        lr = {name: sug[name]["lr"] / scale for name in ("valley", "steepest", "minimum")}
        note = " (before the lr_scaling rule)" if scale != 1 else ""
        text += [f"suggested: optimizer.lr={lr['valley']:.2g}   # valley{note}; steepest descent "
                 f"{lr['steepest']:.2g}, lowest loss {lr['minimum']:.2g}",
                 f"onecycle:  scheduler=onecycle scheduler.max_lr={sug['onecycle']['max_lr']:.2g}",
                 f"cyclic:    scheduler=cyclic scheduler.base_lr={sug['cyclic']['base_lr']:.2g} "
                 f"scheduler.max_lr={sug['cyclic']['max_lr']:.2g}"]
    return text + [f"written: {out}/lr_find.json, lr_find.png"]


def plot(result: dict, path: Path, title: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global figure to close, no GUI backend

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    if result["losses"]:  # framed from the lowest loss to a little above the start: the blow-up leaves the frame
        ax.plot(result["lrs"], result["losses"], color="0.75", lw=1, label="loss of the step's batch")
        ax.plot(result["lrs"], result["smoothed"], color="C0", lw=2, label=f"smoothed (β={result['settings']['smoothing']:g})")
        lo, first = min(result["losses"] + result["smoothed"]), result["smoothed"][0]
        ax.set_ylim(lo - 0.05 * (first - lo + 1e-9), first + 0.3 * (first - lo + 1e-9))
    sug = result["suggestions"]
    for name, color in (("valley", "C3"), ("steepest", "C2"), ("minimum", "C1")):
        if name in sug:
            ax.plot(sug[name]["lr"], sug[name]["loss"], "o", color=color, ms=8, label=f"{name}: {sug[name]['lr']:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (as the optimizer uses it)")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_title(f"LR range test: {title}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    atomic.write_bytes(path, to_png(fig, 110, tight=True))


@hydra.main(config_path=CONFIG_DIR, config_name="lr_find", execution_whitelist=TRUSTED)
def main(cfg) -> None:
    handed_over()
    out = Path(HydraConfig.get().runtime.output_dir)
    with exit_on_user_error():
        result = range_test(cfg, out)
    print("\n".join(lines(result, out)), flush=True)


if __name__ == "__main__":
    signals.main(entry, main)
