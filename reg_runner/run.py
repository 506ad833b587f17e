"""One run, top to bottom: check the config, seed, load data, build, train, record."""

import logging
import math
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from reg_runner import config as config_lib
from reg_runner.augmentation import ops as augment_lib
from reg_runner.config import N_CLASSES, steps_per_epoch
from reg_runner.data import tensors as data_lib
from reg_runner.errors import UserError
from reg_runner.logging.probe import StepWatcher
from reg_runner.logging.tensorboard import TBLogger
from reg_runner.model import mlp as model_lib
from reg_runner.optimizer import build as optimizer_lib
from reg_runner.records import RunFolder
from reg_runner.reg.penalty import Penalty
from reg_runner.scheduler.schedule import Schedule
from reg_runner.signals import STOP
from reg_runner.seeding import deterministic, generators, resolve_seed, rng_state, set_rng_state
from reg_runner.trainer.loop import Trainer, TrainState
from reg_runner.trainer.precision import warn_if_slow

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA, then MPS, then the CPU (the checks have made sure a named device exists)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def run(cfg, run_dir: Path, multirun: bool = False, resume: bool = False, overrides=()) -> float:
    """Train as ``cfg`` says, record everything in ``run_dir``; return the best validation objective.

    ``resume``: continue the run in ``run_dir`` from its ``checkpoints/last.pt`` (``cfg`` is the
    run's own resolved config): model, optimizer, scheduler, loop and early-stopping state, every
    RNG state and the TensorBoard step, so the run ends with the numbers it would have had. A run
    stopped before its first checkpoint starts again from its first epoch.
    """
    t0 = time.perf_counter()
    stop = STOP.install()  # already installed by the CLI's first callback, before the folder existed
    stop.resume_hint = f"python -m reg_runner.resume {run_dir}"
    checked = config_lib.check(cfg, overrides)  # nothing is written before this passes
    folder = RunFolder(run_dir)
    folder.lock()
    try:
        checkpoint = folder.load_last() if resume else None
        if not resume:
            folder.refuse_existing()
        folder.prepare()
        config = config_lib.as_data(cfg)
        if resume:
            _same_config(folder, config, checkpoint)
        else:
            config["seed"] = resolve_seed(config["seed"])  # the seed actually used is what gets recorded
            folder.write_config(OmegaConf.create(config))
        with deterministic(checked.cfg.trainer.deterministic):
            return _train(checked, config, folder, checkpoint, resume, stop, multirun, t0)
    finally:
        folder.unlock()


def _same_config(folder: RunFolder, config: dict, checkpoint: dict | None) -> None:
    """A run resumes with the config it started with (every run checkpoints its epoch 0), or not at all."""
    started = checkpoint["config"] if checkpoint is not None else config
    if started != config:
        key = _first_difference(started, config)
        raise UserError(f"{folder.config} was edited after the run started ({key}: {_at(started, key)!r} in its "
                        f"checkpoint, {_at(config, key)!r} in the file); a run resumes with the config it started "
                        "with: restore the file")


def _first_difference(a, b, prefix="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
    return prefix.rstrip(".")


def _at(d, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _train(checked, config: dict, folder: RunFolder, checkpoint, resume: bool, stop, multirun: bool,
           t0: float) -> float:
    cfg, run_dir = checked.cfg, folder.path
    seed, tc = config["seed"], cfg.trainer
    state, before, n_params, data = TrainState(), {}, None, None

    def record_failure(error: str) -> None:
        folder.write_metrics(dict(metrics(cfg, seed, state, data.info if data else None, n_params, {}),
                                  status="failed", error=error))

    try:
        device = resolve_device(tc.device)
        warn_if_slow(tc.eval_precision, device)
        folder.write_environment(device, resumed_at=checkpoint["state"]["epoch"] if checkpoint else None)
        torch.manual_seed(seed)  # torch's global generator, for code outside reg_runner; ours draw from `gens`
        gens = generators(seed, device)
        data = data_lib.load(cfg.data, device)
        model = model_lib.build(data.in_features, N_CLASSES, cfg.model, device, gens)
        batch = tc.batch_size * tc.accumulate
        optimizer = optimizer_lib.build(model.parameters(), cfg.optimizer, batch)
        schedule = Schedule(optimizer, cfg.scheduler, tc.epochs,
                            steps_per_epoch(len(data.train), tc.batch_size, tc.accumulate, tc.drop_last))
        penalty = Penalty(model, cfg.reg.l1, cfg.reg.l2, cfg.reg.apply_to)
        augment = augment_lib.build(cfg.augmentation, data)
        trainer = Trainer(model, data, optimizer, schedule, penalty, tc, cfg.objective, gens, augment)
        n_params = sum(p.numel() for p in model.parameters())
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            schedule.load_state_dict(checkpoint["scheduler"])
            set_rng_state(checkpoint["rng"], gens)
            state, before = TrainState(**checkpoint["state"]), checkpoint["timing"]
            state.status = "running"  # it was running, interrupted or failed; finished runs are refused
            log.info("resuming %s at epoch %d of %d", run_dir, state.epoch, tc.epochs)
        # a resumed run drops what an earlier process logged after its checkpoint (all of it, without one)
        tb = TBLogger(run_dir, cfg.logging, model, data, tc.epochs, tc.eval_batch_size,
                      purge_step=state.epoch + 1 if checkpoint else (0 if resume else None))
    except UserError as e:
        record_failure(str(e))
        raise
    except Exception as e:
        record_failure(f"{type(e).__name__}: {e}")
        raise
    watcher = StepWatcher(model)
    log.info("model: %s, %d parameters, on %s; seed %d", _describe(cfg.model), n_params, device, seed)

    t_train, t_loop, loop_started_at, first_epoch = time.perf_counter(), None, None, state.epoch

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
        folder.write_metrics(metrics(cfg, seed, state, data.info, n_params, t))

    show = cfg.logging.progress if cfg.logging.progress != "auto" else (sys.stderr.isatty() and not multirun)
    bar = tqdm(total=tc.epochs, initial=state.epoch, disable=not show, unit="epoch", dynamic_ncols=True, leave=False)
    try:
        if checkpoint is None:
            record()  # epoch 0: every run can be resumed, and knows the config it started with
            tb.start(config)
            tb.augmentation_examples(augment, gens["examples"])
        loop_started_at, t_loop = time.time(), time.perf_counter()
        if stop.signal is not None:  # during start-up: a checkpoint of the untrained state, resumable
            state.status = "interrupted"
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
            tb.finish(metrics(cfg, seed, state, data.info, n_params, {}))
    except UserError as e:
        record_failure(str(e))
        raise
    except Exception as e:
        record_failure(f"{type(e).__name__}: {e}")
        raise
    finally:
        bar.close()
        tb.close()
    if state.status == "interrupted":
        print(f"interrupted by {stop.name} after epoch {state.epoch}; checkpoint saved. "
              f"Resume with: python -m reg_runner.resume {run_dir}", file=sys.stderr, flush=True)
        sys.exit(128 + stop.signal)  # a multirun stops with its run: the signal was meant for the whole command
    return _summarize(cfg, state, run_dir, time.perf_counter() - t0)


def metrics(cfg, seed: int, state: TrainState, data_info: dict | None, n_params: int | None, timing: dict) -> dict:
    """The content of metrics.json; only ``timing`` differs between two runs of the same config on CPU."""
    final = state.history[-1] if state.history else None
    return dict(
        status=state.status,
        seed=seed,
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
