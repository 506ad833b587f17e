"""The GPU path in one command: correctness on the device, the speed of stacks, and the study's time.

    python benchmarks/device_check.py                            # on a CUDA GPU, within 420 s (--budget-s)
    python benchmarks/device_check.py --budget-s 300             # less time: later sections shorten, saying why
    python benchmarks/device_check.py --dry-run                  # tiny sizes on the CPU, seconds (the tests run it)
    python benchmarks/device_check.py --dry-run --device cuda    # the same tiny sizes on the GPU: a first look

It writes one JSON (``--json``, default ``device_check.json``) and prints a table. The sections, in order:

(a) correctness on the device
- ``precision``: torch's float32 settings against what reg_runner expects. Matrix products run in full float32
  (``torch.backends.cuda.matmul.allow_tf32`` False, ``torch.get_float32_matmul_precision()`` "highest": torch's
  defaults, which reg_runner keeps). ``torch.backends.cudnn.allow_tf32`` is recorded: torch allows TF32 in cuDNN
  by default and reg_runner leaves it so; it concerns the cnn's convolutions, on GPUs from Ampere on.
- ``options``: a short run of every model option (the MLP's norms, dropout, residual; ``model=cnn`` and its
  norms), augmentation, optimizer (``conf/optimizer/``) and schedule (``conf/scheduler/``). Options that share a
  structure train as one stack (each member is the run it would be alone); a stack that fails is tried again run
  by run. On CUDA, the host synchronisations inside the training and evaluation passes are counted per epoch from
  the second epoch on (``torch.cuda.set_sync_debug_mode("warn")``; the first copies the loop's constants to the
  device once): the loop's one read-back per epoch is outside them, so any count there is a wait for the GPU.
- ``stack vs lone``: a stack of 8 runs mixing seeds, learning rates, dropout and L2, each against its lone run on
  the same device: "bitwise", or the largest difference of its weights and of its metrics. To say why: the first
  member alone once more (is a run the same run to run here?), and where a stack of the architecture first
  differs from each member alone on random inputs (``reg_runner.exactness.probe``).
- ``kill and resume``: a run killed with SIGKILL in a subprocess and resumed in this process, against the same run
  uninterrupted (dropout, augmentation, BatchNorm and a plateau schedule: every kind of state a checkpoint holds).
- ``lr_find`` (100 steps) and a 21 x 21 ``landscape`` of a run's best.pt, on the device.

(b) speed
- ``K stacked``: model-epochs per second of the engine for K = 1, 8, 64, 256 reference runs (seeds 0..K-1) as one
  stack, and against K = 1: the training and evaluation of every member, without records (their cost is in the
  two rows below). One untimed epoch first (kernels chosen, memory allocated), then up to 10 timed ones; the
  median. Peak device memory (``torch.cuda.max_memory_allocated``) and GPU utilisation (``torch.cuda.utilization``,
  which needs pynvml; null and the reason where it is missing).
- ``reference run``: ``python -m reg_runner`` as it is (1000 epochs, TensorBoard, checkpoints), in seconds from
  launch to exit. Stopped at the section's time limit, its last record gives the epochs done and their time, and
  the 1000 epochs are extrapolated from them.

(c) the study
- The README's study, ``python -m reg_runner --multirun +experiment=baseline,l1,l2,dropout,batchnorm,layernorm
  seed=0,1,2,3,4 data.val_size=10000 hydra/launcher=stacked`` at 1000 epochs, in seconds: first a probe of 10
  epochs, then as many epochs as the time left allows; all 1000 if they fit, else the 1000 extrapolated linearly
  from the two runs' epochs (their fixed start-up cost counted once).

Time: ``--budget-s`` counts from the start. Each section has at most a share of it (what an earlier one leaves
goes to the next); before each run a section checks the time left and skips what would not fit, with the reason.
A failure is recorded (its error and the last lines of its log) and the next section runs. Every figure holds
for the machine the JSON names; the command that made it is in the JSON too. ``--dry-run`` on the CPU runs on one
thread (tiny tensors), in its processes too.
"""

import contextlib
import functools
import gc
import json
import logging
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench import at_default_density  # noqa: E402  (histograms at a 1000-epoch run's density)

# -------------------------------------------------------------------------------------------------------------------
# What each mode runs. FULL: the reference task on a GPU in about 7 minutes. DRY: tiny sizes, seconds on a CPU.

FULL = dict(
    option_epochs=3,  # each option's short run: its code runs on the device and its loss stays finite
    option_logging=(),  # at the defaults: TensorBoard's histograms at every epoch of the short runs
    stack_members=8,  # the stack compared with its lone runs
    stack_epochs=10,  # long enough for a rounding difference to grow into the metrics
    resume_epochs=60,  # the run killed and resumed: 60 epochs, a checkpoint every 5, killed once it recorded 20
    checkpoint_every=5,
    kill_at=20,
    lr_find_steps=100,  # lr_find's default
    grid=21,  # the landscape's points per axis
    ks=(1, 8, 64, 256),  # the stack sizes timed
    speed_epochs=10,  # timed epochs per K at most, after one untimed
    reference_epochs=1000,  # conf/trainer/default.yaml
    study_seeds=5,  # the README's study: 6 presets x 5 seeds x 1000 epochs
    study_epochs=1000,
    study_probe_epochs=10,  # the study's first, short run: what its start-up and its epochs cost
)
DRY = dict(option_epochs=2, option_logging=("logging.histograms=0",), stack_members=3, stack_epochs=2,
           resume_epochs=10, checkpoint_every=2, kill_at=2, lr_find_steps=20, grid=5, ks=(1, 2), speed_epochs=2, reference_epochs=2, study_seeds=1, study_epochs=2,
           study_probe_epochs=None)  # None: no probe, the study's 2 epochs at once
# (the dry run's options write no histograms, for the CPU's time: its other runs write them)
DRY_IMAGES = 100  # --dry-run's training images (in batches of 25) and validation images, whatever the data's size
SHARES = {  # the most of --budget-s each section may take; precision (instant) and the study: what is left
    "options": 0.12, "stack vs lone": 0.10, "kill and resume": 0.08, "lr_find and landscape": 0.05,
    "K stacked": 0.12, "reference run": 0.18}
RESERVE_S = 5.0  # kept back at the end: the report, and a subprocess's exit
MIN_ITEM_S = 2.0  # no run starts with less time than this left in its section
MIN_PROCESS_S = 8.0  # nor a new process (Python, torch, CUDA's start, the data: seconds before its first epoch)
STUDY_PRESETS = ("baseline", "l1", "l2", "dropout", "batchnorm", "layernorm")  # the README's study
STUDY_DATA = ("data.val_size=10000",)  # as the README's study ran
TARGETS = dict(k64_over_k1=20.0, study_s=180.0)  # K = 64 at least 20x K = 1's model-epochs/s; the study in 3 min

# a run of each schedule that fits a short run (the checks refuse a warmup or a step beyond the run's end)
SHORT_SCHEDULES = {"step": ["scheduler.step_size=1"], "warmup_cosine": ["scheduler.warmup_epochs=1"],
                   "warmup_linear": ["scheduler.warmup_epochs=1"], "cyclic": ["scheduler.step_size_up_epochs=1"],
                   "plateau": ["scheduler.patience=1"]}
# the stack compared with its lone runs: seeds, learning rates, dropout and L2 mixed (the first 3 mix all four)
STACK_MEMBERS = (["seed=0"], ["seed=1", "optimizer.lr=0.003", "model.dropout=0.2"],
                 ["seed=2", "reg.l2=0.001", "optimizer.lr=0.0003"], ["seed=3", "model.dropout=0.1", "reg.l2=0.0001"],
                 ["seed=4", "optimizer.lr=0.002"], ["seed=5", "model.dropout=0.2", "reg.l2=0.001"], ["seed=6"],
                 ["seed=7", "optimizer.lr=0.003", "reg.l2=0.0001"])
# the run killed and resumed carries every kind of state a checkpoint holds: dropout's and augmentation's random
# streams, BatchNorm's statistics, Adam's moments, a plateau schedule
STATEFUL = ("model.dropout=0.2", "model.norm=batchnorm", "augmentation=noise_affine", "scheduler=plateau",
            "scheduler.patience=3")
WHY_ROUNDING = ("cuBLAS chooses its GEMM kernel (tile sizes, split-K) by shape: a stack's training product is one "
                "batched GEMM over its K members (baddbmm) and its evaluation's first layer one GEMM of K x width "
                "columns on the shared images, where a lone run (a stack of one) makes the same calls at K = 1, for "
                "which cuBLAS may choose other kernels; another kernel adds the products in another order, which "
                "rounds the last bits differently, and training carries the difference on")


# -------------------------------------------------------------------------------------------------------------------
# Time, and what the check found


class Budget:
    """``--budget-s`` from the start; a section's limit is its share of it, from when it starts."""

    def __init__(self, seconds: float):
        self.seconds, self.end = seconds, time.perf_counter() + seconds

    def left(self, limit: float | None = None) -> float:
        return min(self.end - RESERVE_S, limit if limit is not None else math.inf) - time.perf_counter()

    def limit(self, share: float | None) -> float:
        """The time by which a section with ``share`` must end (None: the end of the budget)."""
        end = self.end - RESERVE_S
        return end if share is None else min(end, time.perf_counter() + share * self.seconds)


class Report:
    """Rows of the table (section, item, status, seconds, result), each section's figures, and the JSON."""

    def __init__(self, out):
        self.out, self.rows, self.sections = out, [], {}

    def row(self, section: str, item: str, status: str, result: str = "", seconds: float | None = None, **figures):
        self.rows.append(dict(section=section, item=item, status=status, seconds=seconds, result=result, **figures))
        time_text = f"{seconds:7.1f} s" if seconds is not None else " " * 9
        print(f"  {section:22} {item[:46]:46} {status:8} {time_text}  {result}", file=self.out, flush=True)

    def section(self, name: str, **fields) -> None:
        self.sections.setdefault(name, {}).update(fields)

    def table(self) -> None:
        print(f"\n{'section':22} {'item':46} {'status':8} {'seconds':>9}  result", file=self.out)
        print("-" * 120, file=self.out)
        for r in self.rows:
            time_text = f"{r['seconds']:9.1f}" if r["seconds"] is not None else " " * 9
            print(f"{r['section']:22} {r['item'][:46]:46} {r['status']:8} {time_text}  {r['result']}", file=self.out)


class Context:
    """What every section reads: the arguments, the sizes, the device, the data overrides, the work folder."""

    def __init__(self, args, sizes: dict, device: torch.device, data: list[str], work: Path, report: Report,
                 budget: Budget):
        self.args, self.sizes, self.device, self.data, self.work = args, sizes, device, data, work
        self.report, self.budget = report, budget
        self.env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        self.common = [*data, f"trainer.device={device}"]  # every run: the data and the device
        self.timed: dict = {}  # what later sections reuse: a trained run's folder
        self.log = work / "device_check.log"


# -------------------------------------------------------------------------------------------------------------------
# Runs: composed as the command line composes them, trained in this process (a stack of one is a lone run)


def compose(overrides, config_name: str = "config"):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from reg_runner.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR):  # Hydra's defaults, as the command line's
        return hydra_compose(config_name, overrides=list(overrides))


def train(ctx: Context, runs: list[tuple], resume: bool = False) -> float:
    """``runs`` (overrides, folder, and the config composed from them if it is at hand) as one stack in this
    process; its seconds. What the runs print goes to the log."""
    from reg_runner.resume import load_config
    from reg_runner.run import Job, run_stack

    jobs = []
    for overrides, folder, *composed in runs:
        cfg = load_config(folder) if resume else composed[0] if composed else compose(overrides)
        jobs.append(Job(cfg, folder, () if resume else tuple(overrides)))
    t0 = time.perf_counter()
    with ctx.log.open("a") as log, contextlib.redirect_stdout(log):
        run_stack(jobs, multirun=True, resume=resume)
    return time.perf_counter() - t0


def left_text(ctx: Context, limit: float, need: float) -> str:
    """Why a run does not start: the time it needs against the time left."""
    return f"needs about {need:.0f} s; {max(0.0, ctx.budget.left(limit)):.0f} s left in its share of the budget"


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]


def difference(a, b) -> float:
    """The largest absolute difference between two records' numbers (inf where their structure differs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return max((difference(a[k], b[k]) for k in a), default=0.0) if a.keys() == b.keys() else math.inf
    if isinstance(a, list) and isinstance(b, list):
        return max((difference(x, y) for x, y in zip(a, b)), default=0.0) if len(a) == len(b) else math.inf
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if math.isnan(a) and math.isnan(b):
            return 0.0
        return abs(a - b)
    return 0.0 if a == b else math.inf


def compare(a: Path, b: Path) -> dict:
    """Two runs' records (all but timing) and last weights: bitwise, or the largest differences and the first
    epoch whose history row differs."""
    ma, mb = ({k: v for k, v in metrics(d).items() if k != "timing"} for d in (a, b))
    wa, wb = weights(a), weights(b)
    same = ma == mb and all(torch.equal(wa[n], wb[n]) for n in wa)
    ha, hb = ((a / "history.csv").read_text().splitlines(), (b / "history.csv").read_text().splitlines())
    first = next((i for i, (x, y) in enumerate(zip(ha[1:], hb[1:]), 1) if x != y), None)
    return dict(bitwise=same, metrics=difference(ma, mb),
                weights=max(float((wa[n].double() - wb[n].double()).abs().max()) for n in wa),
                first_epoch=first)


def described(c: dict) -> str:
    if c["bitwise"]:
        return "bitwise"
    epoch = f", history from epoch {c['first_epoch']}" if c["first_epoch"] else ""
    return f"max |diff| weights {c['weights']:.2e}, metrics {c['metrics']:.2e}{epoch}"


@contextlib.contextmanager
def counting_syncs(device: torch.device):
    """Per epoch, the host synchronisations inside the engine's training and evaluation passes, by call site:
    ``torch.cuda.set_sync_debug_mode("warn")`` around them makes each one warn. From each engine's second epoch
    on: its first copies the loop's constants to the device, once. Yields None off CUDA."""
    if device.type != "cuda":
        yield None
        return
    from reg_runner.trainer.engine import Engine

    seen, epochs = dict(epochs=0, sites=Counter()), {}

    def watched(method, new_epoch: bool):
        @functools.wraps(method)
        def wrapper(engine, *args, **kwargs):
            epochs[id(engine)] = epochs.get(id(engine), 0) + new_epoch
            if epochs[id(engine)] < 2:
                return method(engine, *args, **kwargs)
            seen["epochs"] += new_epoch
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    return method(engine, *args, **kwargs)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
                    for w in caught:
                        if "synchroniz" in str(w.message):
                            seen["sites"][f"{Path(w.filename).name}:{w.lineno}"] += 1
        return wrapper

    originals = Engine.train_epoch, Engine.evaluate
    Engine.train_epoch, Engine.evaluate = watched(originals[0], True), watched(originals[1], False)
    try:
        yield seen
    finally:
        Engine.train_epoch, Engine.evaluate = originals


def syncs_text(seen) -> tuple[float | None, str]:
    if seen is None:
        return None, "syncs n/a off CUDA"
    per_epoch = sum(seen["sites"].values()) / max(1, seen["epochs"])
    top = ", ".join(f"{site} x{n}" for site, n in seen["sites"].most_common(3))
    return per_epoch, f"syncs/epoch {per_epoch:g}" + (f" ({top})" if top else "")


def launch(argv: list[str], ctx: Context, log: Path, limit: float, watch=None) -> dict:
    """Run ``argv`` until it exits or ``limit`` (perf_counter time) passes, then kill it. Its wall time, launch
    time, exit code and peak resident memory (bench.py's ``launch``, with a time limit and no exit on failure).
    ``watch(proc)``, called every 20 ms, may kill it earlier and say why."""
    launched, t0, killed = time.time(), time.perf_counter(), None
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=ctx.env, cwd=ctx.work)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if killed is None and watch is not None:
                killed = watch(proc)
            if killed is None and time.perf_counter() > limit:
                killed = "the time limit"
                proc.kill()
            time.sleep(0.02)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    code = os.waitstatus_to_exitcode(status)
    return dict(process_s=time.perf_counter() - t0, launched=launched, returncode=code, killed=killed,
                peak_rss_mb=usage.ru_maxrss * scale / 2**20,
                log_tail=log.read_text()[-2000:] if code != 0 and killed is None else None)


# -------------------------------------------------------------------------------------------------------------------
# (a) correctness on the device


def precision(ctx: Context, limit: float) -> None:
    """torch's float32 settings against reg_runner's expectations (torch's defaults, which it keeps)."""
    r = ctx.report
    found = dict(matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                 float32_matmul_precision=torch.get_float32_matmul_precision(),
                 cudnn_allow_tf32=torch.backends.cudnn.allow_tf32, cudnn_benchmark=torch.backends.cudnn.benchmark,
                 deterministic_algorithms=torch.are_deterministic_algorithms_enabled())
    expected = dict(matmul_allow_tf32=False, float32_matmul_precision="highest")
    tf32_units = ctx.device.type == "cuda" and torch.cuda.get_device_capability(ctx.device)[0] >= 8
    ctx.report.section("precision", found=found, expected=expected, tf32_units=tf32_units)
    for key, value in expected.items():
        r.row("precision", key, "ok" if found[key] == value else "WRONG",
              f"{found[key]} (expected {value}: float32 products in full float32)")
    r.row("precision", "cudnn_allow_tf32", "info",
          f"{found['cudnn_allow_tf32']} (torch's default, kept: the cnn's convolutions "
          + ("may use TF32 on this GPU)" if tf32_units and found["cudnn_allow_tf32"] else "run in float32 here)"))


def option_runs(epochs: int, logging: tuple = ()) -> dict[str, list[str]]:
    """Every option's short run, by name: its overrides."""
    runs = {f"model.norm={n}": [f"model.norm={n}"] for n in ("none", "batchnorm", "layernorm", "rmsnorm")}
    runs["model.dropout=0.2"] = ["model.dropout=0.2"]
    runs["model.residual=true"] = ["model.residual=true"]
    runs.update({f"model=cnn model.norm={n}": ["model=cnn", f"model.norm={n}"]
                 for n in ("none", "batchnorm", "layernorm", "groupnorm")})
    runs.update({f"augmentation={a}": [f"augmentation={a}"] for a in ("noise", "affine", "noise_affine", "crop")})
    for group in ("optimizer", "scheduler"):
        for path in sorted((ROOT / "conf" / group).glob("*.yaml")):
            runs[f"{group}={path.stem}"] = [f"{group}={path.stem}", *SHORT_SCHEDULES.get(path.stem, [])]
    return {name: [*o, f"trainer.epochs={epochs}", *logging] for name, o in runs.items()}


def options(ctx: Context, limit: float) -> None:
    """A short run of every option; the options of one structure as one stack, run by run if the stack fails."""
    from reg_runner import checks
    from reg_runner import config as config_lib
    from reg_runner import keys

    r, runs = ctx.report, option_runs(ctx.sizes["option_epochs"], ctx.sizes["option_logging"])
    stacks: dict = {}
    for name, overrides in runs.items():  # each config checked alone: a refused one is named, the rest train
        o = [*ctx.common, *overrides]
        try:
            cfg = compose(o)
            checked = checks.check(cfg, o, through=3)
        except Exception as e:
            r.row("options", name, "failed", f"refused: {e}")
            continue
        stacks.setdefault(keys.structural_values(checked.cfg), []).append((name, o, cfg))
    per_run = 0.0  # the most a run has cost so far (a stack's time over its runs)
    for members in stacks.values():
        need = max(MIN_ITEM_S, 2 * per_run * len(members))
        if ctx.budget.left(limit) < need:
            for name, *_ in members:
                r.row("options", name, "skipped", left_text(ctx, limit, need))
            continue
        folders = {name: ctx.work / "options" / name.replace(" ", "_") for name, *_ in members}
        try:
            with counting_syncs(ctx.device) as seen:
                seconds = train(ctx, [(o, folders[name], cfg) for name, o, cfg in members])
            per_run = max(per_run, seconds / len(members))
            outcome = {name: None for name, *_ in members}
            if len(members) > 1:
                r.row("options", f"stack of {len(members)}", "ok", "the runs below, each the run it is alone", seconds)
        except Exception as e:  # which run fails: each alone
            outcome = {}
            for name, o, cfg in members:
                folder = ctx.work / "options_alone" / name.replace(" ", "_")
                folders[name] = folder
                try:
                    with counting_syncs(ctx.device) as seen:
                        train(ctx, [(o, folder, cfg)])
                    outcome[name] = None
                except Exception as e_alone:
                    outcome[name] = f"{type(e_alone).__name__}: {e_alone}"
            seconds = None
            r.row("options", f"stack of {len(members)}", "failed", f"{type(e).__name__}: {e}; its runs alone below")
        per_epoch, sync_text = syncs_text(seen)
        for name, *_ in members:
            if outcome[name] is not None:
                r.row("options", name, "failed", outcome[name])
                continue
            m = metrics(folders[name])
            final = m.get("final") or {}
            loss, acc = final.get("train/loss", math.nan), final.get("val/acc", math.nan)
            ok = m["status"] == "completed" and math.isfinite(loss)
            r.row("options", name, "ok" if ok else "failed",
                  f"{m['status']}, train/loss {loss:.3f}, val/acc {acc:.3f}; {sync_text}"
                  + (f"; stack of {len(members)}" if len(members) > 1 else ""),
                  seconds if len(members) == 1 else None, syncs_per_epoch=per_epoch, stack=len(members))


def stack_vs_lone(ctx: Context, limit: float) -> None:
    """A stack mixing seeds, lrs, dropout and L2, each member against its lone run on this device."""
    from reg_runner import checks
    from reg_runner import config as config_lib
    from reg_runner import exactness

    r, s = ctx.report, ctx.sizes
    members = STACK_MEMBERS[: s["stack_members"]]
    common = [*ctx.common, f"trainer.epochs={s['stack_epochs']}", *at_default_density(s["stack_epochs"])]
    runs = [([*common, *m], ctx.work / "stack" / f"m{k}") for k, m in enumerate(members)]
    if ctx.budget.left(limit) < MIN_ITEM_S:
        r.row("stack vs lone", f"stack of {len(members)}", "skipped", left_text(ctx, limit, MIN_ITEM_S))
        return
    stack_s = train(ctx, runs)
    r.row("stack vs lone", f"stack of {len(members)}", "ok", f"{s['stack_epochs']} epochs", stack_s)
    found = []
    for k, (overrides, folder) in enumerate(runs):
        need = max(MIN_ITEM_S, 1.5 * stack_s / len(members))
        if ctx.budget.left(limit) < need:
            r.row("stack vs lone", " ".join(members[k]), "skipped", left_text(ctx, limit, need))
            continue
        lone = ctx.work / "lone" / f"m{k}"
        seconds = train(ctx, [(overrides, lone)])
        c = compare(folder, lone)
        found.append(c)
        r.row("stack vs lone", " ".join(members[k]), "bitwise" if c["bitwise"] else "differs", described(c), seconds,
              **c)
    again = None  # the first member alone once more: is a run on this device the same run to run?
    if found and ctx.budget.left(limit) >= MIN_ITEM_S:
        repeat = ctx.work / "lone" / "m0_again"
        seconds = train(ctx, [(runs[0][0], repeat)])
        again = compare(ctx.work / "lone" / "m0", repeat)
        r.row("stack vs lone", f"{' '.join(members[0])}, alone again", "bitwise" if again["bitwise"] else "differs",
              described(again) + ("" if again["bitwise"] else ": not the same run to run on this device"), seconds,
              **again)
    # where a stack of this architecture first departs from its members alone, on random inputs
    if ctx.budget.left(limit) < MIN_ITEM_S:
        r.row("stack vs lone", "probe on random inputs", "skipped", left_text(ctx, limit, MIN_ITEM_S))
        return
    checked = checks.check(compose(common), common, through=3)
    t, split = checked.cfg.trainer, checked.split
    train_rows, eval_rows = exactness.shapes(split.n_train, t.batch_size, t.drop_last,
                                             [len(split.val_idx), split.n_test], t.eval_batch_size)
    where = exactness.probe(checked.cfg.model, split.shape, split.n_classes, len(members), train_rows, eval_rows,
                            ctx.device)
    r.row("stack vs lone", "probe on random inputs", "bitwise" if where is None else "differs",
          where or "every member's outputs and gradients bitwise its own, at every stack size")
    why = None
    if any(not c["bitwise"] for c in found):
        if again is not None and not again["bitwise"]:
            why = ("a lone run is not the same twice on this device: some kernel is not deterministic (atomic adds in "
                   "a backward pass, or cuBLAS's split-K); trainer.deterministic=true asks torch for deterministic ones")
        elif where is not None:
            why = f"first difference on random inputs: {where}. {WHY_ROUNDING}"
        else:
            why = ("the stack's products are each member's own on random inputs, and a lone run repeats itself: the "
                   "difference comes from an operation the probe does not run (dropout's masks, the penalties, the "
                   "optimizer's step): compare the members' first epochs")
        r.row("stack vs lone", "why they differ", "info", why)
    ctx.report.section("stack vs lone", members=[" ".join(m) for m in members], compared=found, again=again,
                       probe=where, why=why, tf32=dict(matmul=torch.backends.cuda.matmul.allow_tf32,
                                                       cudnn=torch.backends.cudnn.allow_tf32))


def kill_and_resume(ctx: Context, limit: float) -> None:
    """A run killed with SIGKILL in a subprocess, then resumed here, against the same run uninterrupted."""
    r, s = ctx.report, ctx.sizes
    e = s["resume_epochs"]
    if ctx.budget.left(limit) < MIN_PROCESS_S:
        r.row("kill and resume", f"{e} epochs", "skipped", left_text(ctx, limit, MIN_PROCESS_S))
        return
    overrides = [*ctx.common, *STATEFUL, f"trainer.epochs={e}", f"trainer.checkpoint_every={s['checkpoint_every']}",
                 *at_default_density(e)]
    whole = ctx.work / "uninterrupted"
    whole_s = train(ctx, [(overrides, whole)])
    ctx.timed["trained_run"] = whole  # the landscape's run
    r.row("kill and resume", "uninterrupted", "ok", f"{e} epochs", whole_s)
    killed = ctx.work / "killed"

    def kill_when_recorded(proc):
        try:
            if metrics(killed)["epochs_run"] >= s["kill_at"]:
                proc.send_signal(signal.SIGKILL)
                return f"SIGKILL after epoch {s['kill_at']}'s record"
        except (OSError, ValueError, KeyError):
            pass
        return None

    argv = [sys.executable, "-m", "reg_runner", *overrides, f"hydra.run.dir={killed}"]
    p = launch(argv, ctx, ctx.work / "killed.log", limit, watch=kill_when_recorded)
    if p["killed"] is None or p["killed"] == "the time limit":
        raise RuntimeError(f"the run was not killed after a checkpoint ({p['killed'] or 'it ended first'}, exit "
                           f"{p['returncode']}): nothing to resume{'; ' + p['log_tail'] if p['log_tail'] else ''}")
    at = metrics(killed)["epochs_run"]
    resume_s = train(ctx, [([], killed)], resume=True)
    c = compare(killed, whole)
    r.row("kill and resume", f"killed at epoch {at}, resumed", "identical" if c["bitwise"] else "DIFFERS",
          "metrics.json (all but timing), history and weights as uninterrupted" if c["bitwise"] else described(c),
          resume_s, killed_at=at, **c)


def lr_find_and_landscape(ctx: Context, limit: float) -> None:
    """lr_find on the reference config, and a grid x grid landscape of a trained run's best.pt, on the device."""
    from reg_runner.landscape import main as landscape
    from reg_runner.lr_find.__main__ import range_test

    r, s = ctx.report, ctx.sizes
    out = ctx.work / "lr_find"
    out.mkdir()
    t0 = time.perf_counter()
    with ctx.log.open("a") as log, contextlib.redirect_stdout(log):
        result = range_test(compose([*ctx.common, f"lr_find.steps={s['lr_find_steps']}"], "lr_find"), out)
    valley = result["suggestions"].get("valley", {}).get("lr")
    r.row("lr_find and landscape", f"lr_find, {s['lr_find_steps']} steps", "ok",
          f"{len(result['losses'])} steps recorded; valley lr {valley:.2g}" if valley else
          f"{len(result['losses'])} steps recorded; {result['suggestions'].get('reason', 'no suggestion')}",
          time.perf_counter() - t0)
    run_dir = ctx.timed.get("trained_run")
    if run_dir is None:  # kill and resume did not train one
        run_dir = ctx.work / "for_landscape"
        train(ctx, [([*ctx.common, "trainer.epochs=2"], run_dir)])
    if ctx.budget.left(limit) < MIN_ITEM_S:
        r.row("lr_find and landscape", f"landscape {s['grid']} x {s['grid']}", "skipped",
              left_text(ctx, limit, MIN_ITEM_S))
        return
    t0 = time.perf_counter()
    with ctx.log.open("a") as log, contextlib.redirect_stdout(log):
        landscape([str(run_dir), "--grid", str(s["grid"]), "--device", str(ctx.device),
                   "--out", str(ctx.work / "landscape")])
    result = json.loads((ctx.work / "landscape" / "landscape.json").read_text())
    sharpness = result["sharpness"]["value"]  # None: the loss overflowed at the sharpness radius
    r.row("lr_find and landscape", f"landscape {s['grid']} x {s['grid']}", "ok",
          f"{result['networks_evaluated']} networks in {result['seconds']:.1f} s, sharpness "
          + ("overflow" if sharpness is None else f"{sharpness:.3g}"), time.perf_counter() - t0)


# -------------------------------------------------------------------------------------------------------------------
# (b) speed


def utilisation(device: torch.device) -> tuple[int | None, str | None]:
    """``torch.cuda.utilization`` (percent of the last sample period with a kernel running), or why none."""
    if device.type != "cuda":
        return None, f"no GPU ({device.type})"
    try:
        return torch.cuda.utilization(device), None
    except Exception as e:  # pynvml missing, or no NVML on this driver
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def time_stack(ctx: Context, k: int, limit: float) -> dict:
    """The engine's epochs for K reference runs (seeds 0..K-1) as one stack, without records."""
    from reg_runner import checks
    from reg_runner import config as config_lib
    from reg_runner.assembly import Job, assemble
    from reg_runner.trainer.engine import Engine

    overrides = list(ctx.common)  # trainer.epochs stays 1000: no member ends while it is timed
    cfg = compose(overrides)
    checked = checks.check(cfg, overrides)  # the data, the machine (memory): the reference config, checked
    # the members differ in their seed alone, which the member takes from its record
    jobs = [Job(cfg, ctx.work / "speed" / f"k{k}_{i}", checked=checked, recorded=dict(config_lib.as_data(cfg), seed=i))
            for i in range(k)]
    cuda = ctx.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(ctx.device)
        torch.cuda.reset_peak_memory_stats(ctx.device)
    t0 = time.perf_counter()
    built = assemble(jobs)
    engine = Engine(built.model, built.data, built.members, listeners=[])
    try:
        engine.epoch()  # untimed: cuBLAS's and the allocator's first calls
        first_s = time.perf_counter() - t0
        times, samples, reason = [], [], None
        while len(times) < ctx.sizes["speed_epochs"] and (not times or ctx.budget.left(limit) > 1.5 * times[-1]):
            t = time.perf_counter()
            engine.epoch()  # ends with the epoch's one read-back: the device has finished it
            times.append(time.perf_counter() - t)
            value, reason = utilisation(ctx.device)
            if value is not None:
                samples.append(value)
        peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20 if cuda else None
    finally:
        del engine, built
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    epoch_s = statistics.median(times)
    return dict(k=k, epoch_s=epoch_s, model_epochs_per_s=k / epoch_s, epochs_timed=len(times),
                start_and_first_epoch_s=first_s, peak_memory_mb=peak,
                peak_memory_note=None if cuda else f"torch.cuda's peak is for CUDA; {ctx.device.type} has none",
                utilization_percent=statistics.fmean(samples) if samples else None, utilization_note=reason)


def k_stacked(ctx: Context, limit: float) -> None:
    r, rows = ctx.report, []
    for k in ctx.sizes["ks"]:
        if rows:  # the next K's untimed epoch and two timed ones, if time grew with K as it did so far
            last = rows[-1]
            need = 3 * last["epoch_s"] * max(1.0, k / last["k"]) + last["start_and_first_epoch_s"]
            if ctx.budget.left(limit) < need:
                r.row("K stacked", f"K = {k}", "skipped", left_text(ctx, limit, need))
                continue
        t0 = time.perf_counter()
        try:
            row = time_stack(ctx, k, limit)
        except Exception as e:  # out of memory at a large K: the smaller ones stand
            r.row("K stacked", f"K = {k}", "failed", f"{type(e).__name__}: {str(e).splitlines()[0]}",
                  time.perf_counter() - t0)
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        rows.append(row)
        base = rows[0] if rows[0]["k"] == 1 else None
        row["over_k1"] = row["model_epochs_per_s"] / base["model_epochs_per_s"] if base else None
        util = (f"{row['utilization_percent']:.0f}%" if row["utilization_percent"] is not None
                else f"n/a ({row['utilization_note']})")
        memory = f"{row['peak_memory_mb']:.0f} MB" if row["peak_memory_mb"] is not None else "n/a"
        ratio = f" ({row['over_k1']:.1f}x K = 1)" if row["over_k1"] is not None else ""
        r.row("K stacked", f"K = {k}", "ok", f"{row['model_epochs_per_s']:.1f} model-epochs/s{ratio}, "
              f"{row['epoch_s'] * 1000:.1f} ms/epoch, peak {memory}, GPU busy {util}", time.perf_counter() - t0,
              **row)
    ctx.report.section("K stacked", rows=rows)


def reference_run(ctx: Context, limit: float) -> None:
    """``python -m reg_runner`` at its defaults, launch to exit; stopped at the limit, extrapolated."""
    r, e = ctx.report, ctx.sizes["reference_epochs"]
    out = ctx.work / "reference"
    if ctx.budget.left(limit) < MIN_PROCESS_S:
        r.row("reference run", f"{e} epochs", "skipped", left_text(ctx, limit, MIN_PROCESS_S))
        return
    argv = [sys.executable, "-m", "reg_runner", *ctx.common, f"trainer.epochs={e}", *(
        at_default_density(e) if e < 1000 else []), f"hydra.run.dir={out}"]
    p = launch(argv, ctx, ctx.work / "reference.log", limit)
    if p["killed"] is None and p["returncode"] != 0:
        raise RuntimeError(f"exit {p['returncode']}: {p['log_tail']}")
    if not (out / "metrics.json").is_file():
        raise RuntimeError(f"stopped at {p['killed']} ({p['process_s']:.0f} s) before the run's first record")
    m = metrics(out)
    done, loop_s = m["epochs_run"], m["timing"]["loop_s"]
    start_s = m["timing"]["loop_started_at"] - p["launched"]  # launch to the first epoch
    figures = dict(epochs=e, epochs_run=done, process_s=p["process_s"], start_s=start_s, loop_s=loop_s,
                   peak_rss_mb=p["peak_rss_mb"], test_acc_at_best=(m.get("test_at_best") or {}).get("acc"))
    if p["killed"] is None:
        figures["total_s"] = p["process_s"]
        r.row("reference run", f"{e} epochs", "ok", f"{p['process_s']:.1f} s launch to exit ({start_s:.1f} s to the "
              f"first epoch, {loop_s / done * 1000:.1f} ms/epoch with its records)", p["process_s"], **figures)
    elif done:
        figures["total_s"] = start_s + loop_s * e / done  # its last record's epochs and their time, scaled
        r.row("reference run", f"{e} epochs (extrapolated)", "partial",
              f"about {figures['total_s']:.0f} s: stopped at the time limit after {done} epochs recorded "
              f"({loop_s / done * 1000:.1f} ms/epoch with records, {start_s:.1f} s to the first epoch)",
              p["process_s"], **figures)
    else:
        raise RuntimeError(f"stopped at {p['killed']} ({p['process_s']:.0f} s) before its first epoch's record")
    ctx.report.section("reference run", **figures)


# -------------------------------------------------------------------------------------------------------------------
# (c) the study


def run_study(ctx: Context, epochs: int, name: str, limit: float) -> dict:
    """The README's study at ``epochs``, one process: its wall time and the time of its stacks' epochs."""
    seeds = ctx.sizes["study_seeds"]
    out = ctx.work / name
    data = ctx.data if ctx.args.dry_run else [*ctx.data, *STUDY_DATA]
    argv = [sys.executable, "-m", "reg_runner", "--multirun", f"+experiment={','.join(STUDY_PRESETS)}",
            f"seed=range(0,{seeds})", *data, f"trainer.device={ctx.device}", f"trainer.epochs={epochs}",
            *at_default_density(epochs), "hydra/launcher=stacked", f"hydra.sweep.dir={out}"]
    p = launch(argv, ctx, ctx.work / f"{name}.log", limit)
    if p["killed"] is not None or p["returncode"] != 0:
        raise RuntimeError(f"{name} ({epochs} epochs) " + (f"stopped at {p['killed']} after {p['process_s']:.0f} s"
                           if p["killed"] else f"exited {p['returncode']}: {p['log_tail']}"))
    runs = sorted(out.glob("*/metrics.json"))
    if len(runs) != len(STUDY_PRESETS) * seeds:
        raise RuntimeError(f"{name}: {len(runs)} of {len(STUDY_PRESETS) * seeds} runs recorded")
    stacks: dict = {}  # each stack's epochs once: its members share one loop
    for path in runs:
        env = json.loads((path.parent / "environment.json").read_text())
        key = tuple(env["stack"] or [str(path.parent)])
        stacks[key] = max(stacks.get(key, 0.0), json.loads(path.read_text())["timing"]["loop_s"])
    loop_s = sum(stacks.values())
    return dict(epochs=epochs, process_s=p["process_s"], loop_s=loop_s, fixed_s=p["process_s"] - loop_s,
                stacks=sorted(len(k) for k in stacks), runs=len(runs), peak_rss_mb=p["peak_rss_mb"])


def study(ctx: Context, limit: float) -> None:
    r, s = ctx.report, ctx.sizes
    full, e0 = s["study_epochs"], s["study_probe_epochs"]
    n_runs = len(STUDY_PRESETS) * s["study_seeds"]
    if ctx.budget.left(limit) < 2 * MIN_PROCESS_S:
        r.row("study", f"{full} epochs", "skipped", left_text(ctx, limit, 2 * MIN_PROCESS_S))
        return
    if e0 is None:  # all of it at once
        main = run_study(ctx, full, "study", limit)
        r.row("study", f"{len(STUDY_PRESETS)} presets x {s['study_seeds']} seeds x {full} epochs", "ok",
              f"{main['process_s']:.0f} s (measured); stacks of {main['stacks']}", main["process_s"], **main)
        ctx.report.section("study", main=main, seconds=main["process_s"], how="measured", target_s=TARGETS["study_s"])
        return
    probe = run_study(ctx, e0, "study_probe", limit)
    r.row("study", f"probe: {e0} epochs", "ok", f"stacks of {probe['stacks']}; {probe['fixed_s']:.1f} s start-up, "
          f"{probe['loop_s'] / e0:.2f} s/epoch", probe["process_s"], **probe)
    per_epoch = probe["loop_s"] / e0  # an upper bound: the probe's epochs carry the start's records
    affordable = int((ctx.budget.left(limit) - probe["fixed_s"]) / per_epoch) // 10 * 10
    e1 = min(full, affordable)
    main = None
    if e1 >= 2 * e0:
        try:
            main = run_study(ctx, e1, "study_main", limit)
            r.row("study", f"{e1} epochs", "ok", f"{main['loop_s'] / e1:.2f} s/epoch", main["process_s"], **main)
        except RuntimeError as e:  # stopped at the limit (its epochs cost more than the probe's): the probe stands
            r.row("study", f"{e1} epochs", "failed", f"{e}; extrapolated from the probe")
    else:
        r.row("study", f"{full} epochs", "skipped", f"only {affordable} epochs would fit; extrapolated from the probe")
    if main and e1 == full:
        seconds, how = main["process_s"], "measured"
    elif main:  # loop(E) = a + b E per run, from the two; the start-up once
        b = (main["loop_s"] - probe["loop_s"]) / (e1 - e0)
        a = main["loop_s"] - b * e1
        seconds, how = main["fixed_s"] + a + b * full, f"extrapolated linearly from {e0} and {e1} epochs"
    else:
        seconds, how = probe["fixed_s"] + per_epoch * full, f"extrapolated from {e0} epochs (an upper bound)"
    met = seconds <= TARGETS["study_s"]
    r.row("study", f"{len(STUDY_PRESETS)} presets x {s['study_seeds']} seeds x {full} epochs", "ok",
          f"{seconds:.0f} s ({how}); {n_runs * full / seconds:.1f} model-epochs/s", seconds)
    ctx.report.section("study", probe=probe, main=main, seconds=seconds, how=how, target_s=TARGETS["study_s"],
                       target_met=met if not ctx.args.dry_run else None)


# -------------------------------------------------------------------------------------------------------------------
# The command


SECTIONS = (("precision", precision), ("options", options), ("stack vs lone", stack_vs_lone),
            ("kill and resume", kill_and_resume), ("lr_find and landscape", lr_find_and_landscape),
            ("K stacked", k_stacked), ("reference run", reference_run), ("study", study))


def run_section(ctx: Context, name: str, fn) -> None:
    """One section within its time; its failure recorded, never the end of the check."""
    from reg_runner.signals import STOP

    limit = ctx.budget.limit(SHARES.get(name))
    t0 = time.perf_counter()
    entry = ctx.report.sections.setdefault(name, {})
    if ctx.budget.left(limit) < MIN_ITEM_S:
        reason = left_text(ctx, limit, MIN_ITEM_S)
        entry.update(status="skipped", reason=reason)
        ctx.report.row(name, "(section)", "skipped", reason)
        return
    try:
        fn(ctx, limit)
        entry["status"] = "ok"
    except (Exception, SystemExit) as e:  # SystemExit: a reg_runner entry point's one-line error
        if STOP.signal is not None:
            raise KeyboardInterrupt from None
        text = f"{type(e).__name__}: {e}" if not isinstance(e, SystemExit) else f"exit {e.code}"
        entry.update(status="failed", error=text, traceback=traceback.format_exc()[-3000:],
                     log_tail=ctx.log.read_text()[-2000:] if ctx.log.exists() else None)
        ctx.report.row(name, "(section)", "failed", text.splitlines()[0][:300] if text else "")
    finally:
        entry["section_s"] = time.perf_counter() - t0


def machine(device: torch.device) -> dict:
    out = dict(device=str(device), torch=torch.__version__, python=platform.python_version(),
               cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
               torch_threads=torch.get_num_threads())
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_gb=p.total_memory / 2**30,
                   multiprocessors=p.multi_processor_count, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    else:
        out["name"] = out["cpu"]
    return out


def targets(report: Report, dry_run: bool) -> list[dict]:
    rows = report.sections.get("K stacked", {}).get("rows", [])
    k64 = next((row for row in rows if row["k"] == 64 and row.get("over_k1")), None)
    study_s = report.sections.get("study", {}).get("seconds")
    out = [dict(target=f"K = 64 at least {TARGETS['k64_over_k1']:g}x the model-epochs/s of K = 1",
                value=k64["over_k1"] if k64 else None, met=k64["over_k1"] >= TARGETS["k64_over_k1"] if k64 else None),
           dict(target=f"the study in at most {TARGETS['study_s']:g} s", value=study_s,
                met=study_s <= TARGETS["study_s"] if study_s is not None and not dry_run else None)]
    return out


def arguments(argv=None):
    """The command line, every value checked before anything runs: one line ``error: ...`` and exit 2."""
    from reg_runner.errors import Parser, number_arg

    p = Parser(prog="python benchmarks/device_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=number_arg(0, 24 * 3600, note=" seconds"), default=420.0,
                   help="the seconds the check may take in all (default 420: 7 minutes, within 8 with a GPU's "
                        "start-up); sections shorten or skip, with the reason, rather than overrun it")
    p.add_argument("--device", default="auto", help="auto (default: cuda if there is one), cuda, cuda:N, cpu, mps")
    p.add_argument("--dry-run", action="store_true",
                   help=f"tiny sizes (about {DRY_IMAGES} images, 2 epochs, K = 1 and 2, a 5 x 5 landscape): seconds; "
                        "on the CPU unless --device says otherwise")
    p.add_argument("--data-root", default=None,
                   help="a folder with MNIST's four IDX files (default: the MNIST the package ships)")
    p.add_argument("--no-verify", action="store_true", help="read --data-root's files as they are, unchecked "
                   "against MNIST's published md5s (data.verify=false): a modified copy, or test data")
    p.add_argument("--json", type=Path, default=Path("device_check.json"),
                   help="where the figures go (default: device_check.json in the current folder)")
    args = p.parse_args(argv)
    device = args.device if args.device != "auto" or not args.dry_run else "cpu"
    if device not in ("auto", "cpu", "cuda", "mps") and not (device.startswith("cuda:") and device[5:].isdigit()):
        p.error(f"argument --device: {args.device!r} is not allowed: one of auto, cuda, cuda:N, cpu, mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"argument --device: {args.device!r} is not allowed: auto or cpu: CUDA is not available here")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        p.error(f"argument --device: {args.device!r} is not allowed: cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        p.error(f"argument --device: {args.device!r} is not allowed: auto or cpu: MPS is not available here")
    folder = args.json.parent
    if args.json.is_dir():
        p.error(f"argument --json: {str(args.json)!r} is a folder; give a file path")
    if not folder.is_dir():
        p.error(f"argument --json: {str(args.json)!r} cannot be written: {str(folder)!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (args.json.exists() and not os.access(args.json, os.W_OK)):
        p.error(f"argument --json: {str(args.json)!r} cannot be written (permission denied); give a writable path")
    from reg_runner.device import resolve

    args.device = resolve(device)
    args.data = data_overrides(p, args)
    return args


def data_overrides(parser, args) -> list[str]:
    """The data every run reads: the reference task (or ``--dry-run``'s tiny part of it), checked now."""
    from reg_runner import checks
    from reg_runner import config as config_lib
    from reg_runner.errors import UserError

    from reg_runner.data.mnist import find_files

    root = [f"data.root={Path(args.data_root).expanduser().resolve()}"] if args.data_root else []
    root += ["data.verify=false"] if args.data_root and args.no_verify else []
    if args.data_root:
        try:
            find_files(Path(args.data_root).expanduser(), key=None)
        except UserError as e:  # not a folder, or not MNIST's four files
            parser.error(f"argument --data-root: {e}")
    counted = ["data.train_fraction=0.5", "trainer.batch_size=1"] if args.dry_run else []  # any size: counted
    try:
        checked = checks.check(compose([*root, "trainer.device=cpu", *counted]), through=3)
    except UserError as e:  # missing, unreadable, not MNIST's four files
        parser.error(f"argument --data-root: {e}" if args.data_root else str(e))
    if not args.dry_run:
        return root
    split = checked.split
    total = split.n_train + len(split.val_idx)
    if total < 3 * DRY_IMAGES:
        parser.error(f"argument --data-root: {total} training images; --dry-run needs at least {3 * DRY_IMAGES}")
    return [*root, f"data.train_fraction={DRY_IMAGES / total:.6g}", "trainer.batch_size=25",
            f"data.val_size={DRY_IMAGES}"]


def main(argv=None) -> None:
    args = arguments(argv)
    out = sys.stdout
    budget = Budget(args.budget_s)
    report = Report(out)
    sizes = DRY if args.dry_run else FULL
    command = " ".join([Path(sys.argv[0]).name if argv is None else "device_check.py",
                        *(sys.argv[1:] if argv is None else argv)])
    about = machine(args.device)
    print(f"device check on {about['name']} ({args.device}), torch {torch.__version__}; budget {args.budget_s:.0f} s"
          + (" (dry run: tiny sizes)" if args.dry_run else ""), file=out, flush=True)
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="reg_runner_device_check_") as tmp:
        work = Path(tmp)
        ctx = Context(args, sizes, args.device, args.data, work, report, budget)
        threads = torch.get_num_threads()
        if args.dry_run and args.device.type == "cpu":
            # tiny tensors: one thread, here and in the processes it starts (on a busy CPU, threads that wait for
            # each other cost more than they give)
            torch.set_num_threads(1)
            ctx.env["OMP_NUM_THREADS"] = "1"
        root, handler = logging.getLogger(), logging.FileHandler(ctx.log)
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)  # into the log: the table stays readable
        try:
            for name, fn in SECTIONS:
                run_section(ctx, name, fn)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            torch.set_num_threads(threads)
            logging.captureWarnings(False)
            root.removeHandler(handler)
            root.setLevel(level)
            handler.close()
    report.table()
    goals = targets(report, args.dry_run)
    for t in goals:
        state = "n/a (dry run)" if args.dry_run else {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
        value = f"{t['value']:.1f}" if t["value"] is not None else "-"
        print(f"target: {t['target']}: {value} ({state})", file=out)
    used = args.budget_s - (budget.end - time.perf_counter())
    result = dict(command=command, machine=about, dry_run=args.dry_run, budget_s=args.budget_s, elapsed_s=used,
                  interrupted=interrupted, sizes={k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
                  data=args.data, sections=report.sections, rows=report.rows, targets=goals)
    args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"{used:.0f} s of {args.budget_s:.0f}; written: {args.json}", file=out, flush=True)
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()
