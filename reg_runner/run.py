"""One run, top to bottom: check the config, seed, load data, build, train, record."""

import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from reg_runner import augment as augment_lib
from reg_runner import data as data_lib
from reg_runner import model as model_lib
from reg_runner.data.mnist import N_CLASSES
from reg_runner.errors import ConfigError
from reg_runner.optim import Schedule, build_optimizer
from reg_runner.precision import warn_if_slow
from reg_runner.probe import StepWatcher
from reg_runner.records import RunFolder
from reg_runner.regularization import Penalty
from reg_runner.seeding import generators, resolve_seed, rng_state, seed_everything, set_rng_state
from reg_runner.tblog import TBLogger
from reg_runner.train import Trainer, TrainState, steps_per_epoch
from reg_runner.validate import validate

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer.device", name, "CUDA is not available on this machine; use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device", name, "MPS is not available on this machine; use auto or cpu")
    return torch.device(name)


def run(cfg, run_dir: Path, multirun: bool = False, resume: bool = False) -> float:
    """Train as ``cfg`` says, record everything in ``run_dir``; return the best validation objective.

    ``resume``: continue the run in ``run_dir`` from its ``checkpoints/last.pt`` (``cfg`` is the
    run's own resolved config): model, optimizer, scheduler, loop and early-stopping state, every
    RNG state and the TensorBoard step, so the run ends with the numbers it would have had.
    """
    t0 = time.perf_counter()
    validate(cfg)
    folder = RunFolder(run_dir)
    checkpoint = folder.load_last() if resume else None
    if checkpoint is None:
        folder.refuse_existing()
        folder.prepare()
        cfg.seed = resolve_seed(cfg.seed)  # the seed actually used is what gets recorded
        folder.write_config(cfg)
    device = resolve_device(cfg.trainer.device)
    warn_if_slow(cfg.trainer.eval_precision, device)
    folder.write_environment(device, resumed_at=checkpoint["state"]["epoch"] if checkpoint else None)
    seed_everything(cfg.seed, cfg.trainer.deterministic)

    data = data_lib.load(cfg.data, device)
    model = model_lib.build(data.in_features, N_CLASSES, cfg.model, device)
    tc = cfg.trainer
    optimizer = build_optimizer(model.parameters(), cfg.optimizer, tc.batch_size * tc.accumulate)
    schedule = Schedule(
        optimizer, cfg.scheduler, tc.epochs, steps_per_epoch(len(data.train), tc.batch_size, tc.accumulate, tc.drop_last)
    )
    penalty = Penalty(model, cfg.reg.l1, cfg.reg.l2, cfg.reg.apply_to)
    gens = generators(cfg.seed, device)
    augment = augment_lib.build(cfg.augmentation, data)
    trainer = Trainer(model, data, optimizer, schedule, penalty, tc, cfg.objective, gens, augment)
    config = OmegaConf.to_container(cfg, resolve=True)
    state, before = TrainState(), {}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["scheduler"])
        set_rng_state(checkpoint["rng"], gens)
        state, before = TrainState(**checkpoint["state"]), checkpoint["timing"]
        state.status = "running"  # it was running or interrupted; finished runs are refused by load_last
        log.info("resuming %s at epoch %d of %d", run_dir, state.epoch, tc.epochs)
    # a resumed run drops what the killed process logged after its checkpoint
    tb = TBLogger(run_dir, cfg.logging, model, data, tc.epochs, tc.eval_batch_size,
                  purge_step=state.epoch + 1 if checkpoint else None)
    watcher = StepWatcher(model)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %s, %d parameters, on %s; seed %d", _describe(cfg.model), n_params, device, cfg.seed)

    def timing() -> dict:
        now = time.perf_counter()
        loop_s = before.get("loop_s", 0.0) + (now - t_loop if t_loop is not None else 0.0)
        return dict(
            wall_s=before.get("wall_s", 0.0) + now - t0,
            train_s=before.get("train_s", 0.0) + now - t_train,  # the loop, with what is written before and after
            loop_s=loop_s,  # the epochs alone, with their logging and checkpoints
            epochs_per_s=(state.epoch - first_epoch) / (now - t_loop)
            if t_loop is not None and state.epoch > first_epoch else None,  # this process's epochs
            resumed_at=before.get("resumed_at", []) + ([checkpoint["state"]["epoch"]] if checkpoint else []),
            # unix time this process began its first epoch: with the launch time, the start-up cost
            loop_started_at=loop_started_at,
        )

    # the best epoch this process wrote to checkpoints/best.pt; a resumed run rewrites it once, as a
    # kill between last.pt and best.pt may have left it behind
    saved_best = [None]

    def record() -> None:
        """Checkpoint first, then history, then metrics.json: a kill between two writes never
        leaves metrics.json claiming epochs the checkpoint does not hold."""
        t = timing()
        payload = dict(
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=schedule.state_dict(),
            epoch=state.epoch,
            rng=rng_state(gens),
            state=vars(state),
            timing=t,
            config=config,
        )
        folder.save_checkpoint(folder.last, payload)
        if state.best_snapshot is not None and state.best["epoch"] != saved_best[0]:  # unchanged: already on disk
            folder.save_checkpoint(folder.best, dict(**state.best_snapshot, epoch=state.best["epoch"], config=config))
            saved_best[0] = state.best["epoch"]
        folder.write_history(state.history)
        folder.write_metrics(metrics(cfg, state, data.info, n_params, t))

    show = cfg.logging.progress if cfg.logging.progress != "auto" else (sys.stderr.isatty() and not multirun)
    bar = tqdm(total=tc.epochs, initial=state.epoch, disable=not show, unit="epoch", dynamic_ncols=True, leave=False)
    t_train, t_loop, loop_started_at, first_epoch = time.perf_counter(), None, None, state.epoch
    if checkpoint is None:
        folder.write_metrics(metrics(cfg, state, data.info, n_params, timing()))
        tb.start(config)
        tb.augmentation_examples(augment, cfg.seed)
    try:
        with StopSignals() as stop:
            loop_started_at, t_loop = time.time(), time.perf_counter()
            while state.status == "running":
                histograms = tb.wants_histograms(state.epoch + 1)
                row = trainer.run_epoch(state, watcher if histograms else None)
                bar.update(1)
                if row is not None:
                    tb.scalars(row)
                    bar.set_postfix_str(f"train/loss {row['train/loss']:.4f}  val/acc {row['val/acc']:.4f}",
                                        refresh=False)
                if histograms and state.status != "diverged":
                    tb.histograms(state.epoch, watcher.stats, trainer.val_entropy)
                if state.status == "running" and stop.signal is not None:
                    state.status = "interrupted"
                if state.status == "running" and state.epoch % tc.checkpoint_every == 0:
                    record()
        record()
        if state.status != "interrupted":
            tb.finish(metrics(cfg, state, data.info, n_params, {}))
    finally:
        bar.close()
        tb.close()
    if state.status == "interrupted":
        print(f"interrupted by {stop.name} after epoch {state.epoch}; checkpoint saved. "
              f"Resume with: python -m reg_runner.resume {run_dir}", file=sys.stderr, flush=True)
        sys.exit(128 + stop.signal)
    return _summarize(cfg, state, run_dir, time.perf_counter() - t0)


class StopSignals:
    """SIGTERM (SLURM's warning before a time limit) and Ctrl-C end the run after the current epoch,
    with a checkpoint; a second Ctrl-C stops at once."""

    def __init__(self):
        self.signal, self.previous = None, {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def metrics(cfg, state: TrainState, data_info: dict, n_params: int, timing: dict) -> dict:
    """The content of metrics.json; only ``timing`` differs between two runs of the same config on CPU."""
    final = state.history[-1] if state.history else None
    return dict(
        status=state.status,
        seed=cfg.seed,
        objective=cfg.objective,
        epochs_run=state.epoch,
        epochs_planned=cfg.trainer.epochs,
        stopped_at=state.stopped_at,
        best_epoch=state.best["epoch"] if state.best else None,
        best_val=state.best[cfg.objective] if state.best else None,
        test_at_best=_split_metrics(state.best, "test"),
        best=state.best,
        final=final,
        n_parameters=n_params,
        data=data_info,
        timing=timing,
    )


def _split_metrics(row: dict | None, split: str) -> dict | None:
    if row is None:
        return None
    return {k.split("/", 1)[1]: v for k, v in row.items() if k.startswith(f"{split}/")}


def _describe(m) -> str:
    parts = [f"MLP {m.depth}x{m.width} {m.activation}"]
    if m.norm != "none":
        parts.append(f"{m.norm} ({m.norm_position.replace('_', ' ')})")
    if m.dropout > 0:
        parts.append(f"dropout {m.dropout:g}")
    if m.residual:
        parts.append("residual")
    if m.init != "default":
        parts.append(f"init {m.init}")
    return ", ".join(parts)


def _summarize(cfg, state: TrainState, run_dir: Path, wall: float) -> float:
    if state.best is None:
        value = math.nan
        line = f"{state.status} at epoch {state.stopped_at} before any evaluation"
    else:
        value = state.best[cfg.objective]
        if state.status == "diverged":
            value = math.nan  # a sweeper must see the trial as failed
        test, final = state.best["test/acc"], state.history[-1]["test/acc"]
        line = (
            f"{state.status}: best {cfg.objective} {state.best[cfg.objective]:.4f} at epoch {state.best['epoch']}, "
            f"test/acc {test:.4f} there (final epoch {state.history[-1]['epoch']}: {final:.4f})"
        )
    print(f"{line}; {wall:.1f} s; {run_dir}", flush=True)
    return value
