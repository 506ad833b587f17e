"""How fast is the runner? Against the loops users would write and the hardware's floor, in one run.

    python benchmarks/bench.py            # real MNIST, 30 epochs, 3 repeats (about 17 min on 2 CPU cores)
    python benchmarks/bench.py --full     # and the full default 1000-epoch run, measured
    python benchmarks/bench.py --tiny --data-root DIR   # seconds: keeps this script working (tests)
    python benchmarks/bench.py --data-root DIR --no-verify   # a folder that is not MNIST as published, knowingly

Every implementation runs alone in a fresh process, in alternation and in a shuffled order,
``--repeats`` times, so a drift of the machine hits them alike; the table gives medians. Each trains the reference study's
workload on the same data (see loops.py): 10 steps of 300 images and an evaluation of the 57,000
validation and 10,000 test images per epoch.

- ``runner``: ``python -m reg_runner trainer.epochs=N``, the real entry point at its defaults (TensorBoard
  scalars every epoch, histograms, a checkpoint every 10 epochs, history, metrics). Its 20 histogram
  epochs per run are scaled to the N epochs (at least 2, first and last), so that histograms weigh
  per epoch what they weigh in the 1000-epoch reference run. ``runner, no histograms`` sets
  ``logging.histograms=0``; ``runner, bf16 eval`` adds ``trainer.eval_precision=bf16`` (where the
  hardware has fast bf16).
- ``lean``, ``typical``, ``lightning``: loops.py.
- many runs of the reference config, differing in their seed (``--stacked-epochs`` epochs each): ``K lone
  runs`` in one ``--multirun`` process (Hydra's basic launcher: one after the other), and ``stacked K``
  (``hydra/launcher=stacked``: one stack of K) for each K of ``--stacks``, histograms at the runner
  row's density. Their figure is model-epochs
  per second (K x epochs over the process's wall time, start-up included, as a user waits for it)
  and per second of the epochs alone; the ratio that matters is stacked K over K lone runs.
- ``compute floor``: the workload's matmul FLOPs (forward for evaluation; forward, weight gradients
  and input gradients but the first layer's for training; elementwise ops not counted) over the
  best matmul rate this machine reaches in this run (square float32 matmuls; bfloat16 for the
  bf16 row's evaluation).

Columns: seconds per epoch (first epoch's start to the last evaluation's end, over the epochs;
the runner's from its metrics.json ``timing.loop_s``, which holds its logging and checkpoints);
its ratio to the runner's; the whole process (start-up, data, the N epochs, exit); the time
from launch to the first training step; peak resident memory; a 1000-epoch run estimated as the
process's fixed cost plus 1000 epochs; the final validation accuracy (the same workload learns
the same).
"""

import argparse
import csv
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from reg_runner import device as device_lib

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from loops import mlp  # noqa: E402

REFERENCE_EPOCHS = 1000  # conf/trainer/default.yaml: what a default run trains
TARGETS = (  # (numerator, denominator, bound, what the issue asks)
    ("runner", "lean", 1.15, "at most"),
    ("typical", "runner", 3.0, "at least"),
    ("lightning", "runner", 4.0, "at least"),
)


def launch(argv: list[str], env: dict, log: Path) -> dict:
    """Run ``argv``; its wall time, launch time and peak resident memory (from wait4's rusage)."""
    launched, t0 = time.time(), time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        sys.exit(f"{' '.join(argv[:4])}... exited {proc.returncode}:\n{tail}")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return dict(process_s=time.perf_counter() - t0, launched=launched, peak_mb=usage.ru_maxrss * scale / 2**20)


def run_runner(name: str, overrides: list[str], epochs: int, args, work: Path, env: dict) -> dict:
    out = work / name.replace(" ", "_").replace(",", "")
    argv = [sys.executable, "-m", "reg_runner", f"trainer.epochs={epochs}", f"trainer.device={args.device}",
            *common_data_overrides(args), *overrides, f"hydra.run.dir={out}"]
    r = launch(argv, env, work / f"{out.name}.log")
    m = json.loads((out / "metrics.json").read_text())
    return dict(r, epoch_s=m["timing"]["loop_s"] / m["epochs_run"],
                first_step_s=m["timing"]["loop_started_at"] - r["launched"],
                val_acc=m["final"]["val/acc"], run_dir=str(out))


def at_default_density(epochs: int) -> list[str]:
    """The default's histogram epochs per run scaled to ``epochs`` (at least 2, the first and last), so
    that histograms weigh per epoch about what they weigh in the 1000-epoch reference run."""
    from omegaconf import OmegaConf

    histograms = OmegaConf.load(HERE.parent / "conf" / "logging" / "default.yaml").histograms
    return [f"logging.histograms={max(2, round(histograms * epochs / REFERENCE_EPOCHS))}"]


def run_many(name: str, k: int, stacked: bool, args, work: Path, env: dict) -> dict:
    """K runs of the reference config (seeds 0..K-1) in one multirun process, stacked or one by one,
    histograms at the runner row's density."""
    out = work / name.replace(" ", "_")
    argv = [sys.executable, "-m", "reg_runner", "--multirun", f"seed=range(0,{k})",
            f"trainer.epochs={args.stacked_epochs}", f"trainer.device={args.device}", *common_data_overrides(args),
            *at_default_density(args.stacked_epochs),
            *(["hydra/launcher=stacked"] if stacked else []), f"hydra.sweep.dir={out}"]
    r = launch(argv, env, work / f"{out.name}.log")
    metrics = [json.loads(p.read_text()) for p in out.glob("*/metrics.json")]
    assert len(metrics) == k, f"{name}: {len(metrics)} of {k} runs recorded"
    # a stack's members share one loop: its time once; lone runs' loops add up
    loop_s = metrics[0]["timing"]["loop_s"] if stacked else sum(m["timing"]["loop_s"] for m in metrics)
    model_epochs = sum(m["epochs_run"] for m in metrics)
    return dict(r, members=k, model_epochs_per_s=model_epochs / r["process_s"],
                loop_model_epochs_per_s=model_epochs / loop_s,
                val_acc=statistics.fmean(m["final"]["val/acc"] for m in metrics))


def run_loop(name: str, runner_eval_batch_size: int, args, work: Path, env: dict) -> dict:
    out = work / f"{name}.json"
    # lean evaluates as the runner does; typical and lightning at the training batch size, as the course
    eval_bs = runner_eval_batch_size if name == "lean" else 300
    argv = [sys.executable, str(HERE / "loops.py"), name, "--epochs", str(args.epochs), "--device", args.device,
            "--eval-batch-size", str(eval_bs), "--out", str(out)]
    if args.data_root:
        argv += ["--data-root", args.data_root] + (["--no-verify"] if args.no_verify else [])
    if args.val_size:
        argv += ["--val-size", str(args.val_size)]
    if args.train_fraction:
        argv += ["--train-fraction", str(args.train_fraction)]
    r = launch(argv, env, work / f"{name}.log")
    m = json.loads(out.read_text())
    return dict(r, epoch_s=m["epoch_s"], first_step_s=m["first_step_at"] - r["launched"], val_acc=m["val_acc"],
                sizes=(m["in_features"], m["n_train"], m["n_val"], m["n_test"]))


def common_data_overrides(args) -> list[str]:
    out = []
    if args.data_root:
        out += [f"data.root={args.data_root}"] + (["data.verify=false"] if args.no_verify else [])
    if args.val_size:
        out.append(f"data.val_size={args.val_size}")
    if args.train_fraction:
        out.append(f"data.train_fraction={args.train_fraction}")
    return out


def matmul_rate(dtype: torch.dtype, n: int, device: torch.device, seconds: float = 2.0) -> float:
    """The best FLOP/s of square n x n matmuls over about ``seconds``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best, end = float("inf"), time.perf_counter() + seconds
    for _ in range(3):
        a @ b  # warm-up
    while time.perf_counter() < end:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def workload_flops(in_features: int, n_train: int, n_eval: int) -> tuple[float, float]:
    """Matmul FLOPs per epoch: (training, evaluation) of the reference MLP."""
    macs = [m.in_features * m.out_features for m in mlp(in_features).modules() if isinstance(m, torch.nn.Linear)]
    forward = 2 * sum(macs)
    backward = 2 * sum(macs) + 2 * sum(macs[1:])  # weight gradients; input gradients but the first layer's
    return n_train * (forward + backward), n_eval * forward


def compare_histories(fp32_dir: str, bf16_dir: str) -> dict:
    """The change bf16 evaluation makes to the same run's validation numbers (training is the same)."""
    def read(d):
        with open(Path(d) / "history.csv") as f:
            return list(csv.DictReader(f))

    a, b = read(fp32_dir), read(bf16_dir)
    same_training = all(x["train/loss"] == y["train/loss"] for x, y in zip(a, b)) and len(a) == len(b)
    acc = [float(y["val/acc"]) - float(x["val/acc"]) for x, y in zip(a, b)]
    loss = [float(y["val/loss"]) - float(x["val/loss"]) for x, y in zip(a, b)]
    return dict(same_training=same_training, epochs=len(acc), val_acc_mean=statistics.fmean(acc),
                val_acc_max_abs=max(abs(d) for d in acc), val_loss_mean=statistics.fmean(loss))


def _stacks(text: str) -> list[int]:
    """``8,32``: the stack sizes; ``0``: none."""
    allowed = "comma-separated integers >= 1, each once (e.g. 8,32), or 0 for none"
    if text.strip() == "0":
        return []
    try:
        sizes = [int(k) for k in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: {allowed}")
    return sizes


TINY = dict(epochs=2, repeats=1, stacked_epochs=2, stacks=[2], train_fraction=0.6)  # what --tiny sets unless given
DEFAULTS = dict(epochs=30, repeats=3, stacked_epochs=30, stacks=[8, 32], train_fraction=None)


def arguments(parser) -> argparse.Namespace:
    """The command line, every value checked before anything runs: one line ``error: ...`` and exit 2
    for a value the benchmark could not use, rather than a traceback minutes into it."""
    from omegaconf import OmegaConf

    from reg_runner.data import parse_config
    from reg_runner.data.split import split
    from reg_runner.data.mnist import find_files
    from reg_runner.errors import ConfigError, UserError, show

    args = parser.parse_args()
    for key, value in (TINY if args.tiny else DEFAULTS).items():
        if getattr(args, key) is None:  # --tiny's values are defaults: what is given explicitly is run
            setattr(args, key, value)
    if args.tiny and args.full:
        parser.error("--full and --tiny cannot be combined: --tiny is a smoke test of seconds, --full adds the "
                     f"{REFERENCE_EPOCHS}-epoch run")
    if args.json is not None:  # the figures are written at the end: a path that cannot take them, now
        folder = args.json.parent
        if args.json.is_dir():
            parser.error(f"argument --json: {str(args.json)!r} is a folder; give a file path")
        if not folder.is_dir():
            parser.error(f"argument --json: {str(args.json)!r} cannot be written: {str(folder)!r} is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK) or (args.json.exists() and not os.access(args.json, os.W_OK)):
            parser.error(f"argument --json: {str(args.json)!r} cannot be written (permission denied); "
                         "give a writable path")
    # the split each process will ask for, checked against the data: a fraction that selects no image, a
    # --val-size larger than what is left; and a bad --data-root, in one line now, not in every process
    cfg = OmegaConf.load(HERE.parent / "conf" / "data" / "mnist.yaml")
    cfg.root, cfg.val_size, cfg.verify = args.data_root, args.val_size, not args.no_verify
    if args.train_fraction is not None:
        cfg.train_fraction = args.train_fraction
    try:
        if args.data_root:
            find_files(Path(args.data_root).expanduser(), key=None)
        split(parse_config(OmegaConf.to_container(cfg)))
    except ConfigError as e:
        flag = {"data.train_fraction": "--train-fraction", "data.val_size": "--val-size"}.get(e.key)
        allowed = e.allowed.replace("or null for all", "or no --val-size for all")  # the option, not the key
        fail(f"argument {flag}: {show(e.value)!r} is not allowed: {allowed}" if flag else str(e))
    except UserError as e:  # the data: missing, unreadable, not MNIST's four files
        fail(f"argument --data-root: {e}" if args.data_root else str(e))
    return args


def fail(message: str) -> None:
    """One line and exit 2, as argparse's own mistakes (reg_runner.errors.Parser)."""
    from reg_runner.errors import refuse

    refuse(message)


def main() -> None:
    from reg_runner.errors import Parser, integer_arg, number_arg

    parser = Parser(prog="python benchmarks/bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=integer_arg(1), default=None, help="default 30; --tiny: 2")
    parser.add_argument("--repeats", type=integer_arg(1), default=None, help="default 3; --tiny: 1")
    parser.add_argument("--device", default="auto", type=device_lib.device_arg,
                        help="auto (cuda if available), cpu, cuda, cuda:N, mps")
    parser.add_argument("--data-root", default=None, help="MNIST IDX folder; default: the datamaestro store")
    parser.add_argument("--no-verify", action="store_true", help="read --data-root's files as they are, unchecked "
                        "against MNIST's published md5s (data.verify=false): a modified copy, or test data")
    parser.add_argument("--val-size", type=integer_arg(1), default=None,
                        help="cap on the validation set (default: all 57,000)")
    parser.add_argument("--full", action="store_true", help="also time the runner's full default 1000-epoch run")
    parser.add_argument("--tiny", action="store_true",
                        help="a smoke test of seconds: 2 epochs, 1 repeat, stacks of 2, small matmuls; --epochs, "
                             "--repeats, --stacks, --stacked-epochs and --train-fraction given with it are used as "
                             "given (not with --full)")
    parser.add_argument("--train-fraction", type=number_arg(0, 1, hi_open=True, note=", of the training set"),
                        default=None,
                        help="of the training set, in (0, 1) (default: the config's 5%%; --tiny: 60%%, a batch of "
                             "300 on tiny data)")
    parser.add_argument("--stacks", type=_stacks, default=None,
                        help="stack sizes K to time (comma-separated, default 8,32; --tiny: 2; 0: none)")
    parser.add_argument("--stacked-epochs", type=integer_arg(1), default=None,
                        help="epochs of each run in the K-run rows (default 30; --tiny: 2)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = arguments(parser)
    stack_sizes = args.stacks
    from omegaconf import OmegaConf

    from reg_runner.trainer.engine import bf16_unsupported
    from reg_runner.device import resolve as resolve_device

    eval_batch_size = OmegaConf.load(HERE.parent / "conf" / "trainer" / "default.yaml").eval_batch_size
    device = resolve_device(args.device)  # checked in arguments()
    args.device = str(device)
    no_bf16 = bf16_unsupported(device)  # why bf16 evaluation would not be fast here, or None
    have_lightning = importlib.util.find_spec("lightning") is not None
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)

    runners = {"runner": at_default_density(args.epochs), "runner, no histograms": ["logging.histograms=0"]}
    if no_bf16 is None:
        runners["runner, bf16 eval"] = [*at_default_density(args.epochs), "trainer.eval_precision=bf16"]
    loops = ["lean", "typical"] + (["lightning"] if have_lightning else [])
    many = {}  # name -> (K, stacked)
    if stack_sizes:
        many[f"{stack_sizes[0]} lone runs"] = (stack_sizes[0], False)
        many.update({f"stacked {k}": (k, True) for k in stack_sizes})
    results: dict[str, list[dict]] = {name: [] for name in [*runners, *loops, *many]}
    print(f"{args.epochs} epochs x {args.repeats} repeats on {device} "
          f"({torch.get_num_threads()} threads, torch {torch.__version__})", flush=True)
    with tempfile.TemporaryDirectory(prefix="reg_runner_bench_") as tmp:
        for rep in range(args.repeats):
            work = Path(tmp) / f"r{rep}"
            work.mkdir()
            order = [*runners, *loops, *many]
            random.Random(rep).shuffle(order)  # no implementation always follows the same one
            for name in order:
                if name in runners:
                    results[name].append(run_runner(name, runners[name], args.epochs, args, work, env))
                elif name in many:
                    results[name].append(run_many(name, *many[name], args, work, env))
                else:
                    results[name].append(run_loop(name, eval_batch_size, args, work, env))
            print(f"  repeat {rep + 1}/{args.repeats}: " + ", ".join(
                f"{k} {v[-1]['epoch_s']:.3f}" if "epoch_s" in v[-1] else f"{k} {v[-1]['model_epochs_per_s']:.2f}/s"
                for k, v in results.items()), flush=True)
        bf16_change = (compare_histories(results["runner"][-1]["run_dir"], results["runner, bf16 eval"][-1]["run_dir"])
                       if "runner, bf16 eval" in results else None)
        full = None
        if args.full:
            work = Path(tmp) / "full"
            work.mkdir()
            full = run_runner("runner", [], REFERENCE_EPOCHS, args, work, env)
            full.update(json.loads((Path(full["run_dir"]) / "metrics.json").read_text())["test_at_best"])

    in_features, n_train, n_val, n_test = results["lean"][0]["sizes"]
    train_flops, eval_flops = workload_flops(in_features, n_train, n_val + n_test)
    size = 256 if args.tiny else 2048
    seconds = 0.05 if args.tiny else 2.0  # --tiny: that the rate is measured (the best of many), not a figure to read
    fp32_rate = matmul_rate(torch.float32, size, device, seconds)
    bf16_rate = matmul_rate(torch.bfloat16, size, device, seconds) if no_bf16 is None else None

    rows = {}
    stacked_rows = {}
    for name in many:
        runs = results.pop(name)
        stacked_rows[name] = dict(members=runs[0]["members"],
                                  model_epochs_per_s=statistics.median(r["model_epochs_per_s"] for r in runs),
                                  loop_model_epochs_per_s=statistics.median(r["loop_model_epochs_per_s"] for r in runs),
                                  process_s=statistics.median(r["process_s"] for r in runs),
                                  peak_mb=max(r["peak_mb"] for r in runs), val_acc=runs[-1]["val_acc"])
    for name, runs in results.items():
        epoch_s = statistics.median(r["epoch_s"] for r in runs)
        process_s = statistics.median(r["process_s"] for r in runs)
        fixed_s = statistics.median(r["process_s"] - r["epoch_s"] * args.epochs for r in runs)
        rows[name] = dict(epoch_s=epoch_s, process_s=process_s,
                          first_step_s=statistics.median(r["first_step_s"] for r in runs),
                          peak_mb=max(r["peak_mb"] for r in runs), val_acc=runs[-1]["val_acc"],
                          est_1000_s=fixed_s + 1000 * epoch_s)
    rows["compute floor (fp32)"] = dict(epoch_s=(train_flops + eval_flops) / fp32_rate)
    if bf16_rate:
        rows["compute floor (bf16 eval)"] = dict(epoch_s=train_flops / fp32_rate + eval_flops / bf16_rate)
    base = rows["runner"]["epoch_s"]
    print_table(rows, base, args)
    if stacked_rows:
        floor = rows["compute floor (fp32)"]["epoch_s"]
        print_stacked(stacked_rows, floor, args)
    print(f"\nworkload: {(train_flops + eval_flops) / 1e9:.2f} GFLOP per epoch ({train_flops / 1e9:.2f} training, "
          f"{eval_flops / 1e9:.2f} evaluation); matmul rate here: {fp32_rate / 1e9:.0f} GFLOP/s float32"
          + (f", {bf16_rate / 1e9:.0f} GFLOP/s bfloat16" if bf16_rate else f"; bf16: {no_bf16}"))
    if not have_lightning:
        print("lightning: not installed (pip install -c constraints.txt -e '.[bench]')")
    checks = []
    for num, den, bound, how in TARGETS:
        if num in rows and den in rows:
            ratio = rows[num]["epoch_s"] / rows[den]["epoch_s"]
            ok = ratio <= bound if how == "at most" else ratio >= bound
            checks.append(dict(ratio=f"{num} / {den}", value=ratio, target=f"{how} {bound}", met=ok))
            print(f"{num} / {den} per epoch: {ratio:.2f} (target: {how} {bound:g}) {'met' if ok else 'NOT MET'}")
    if stacked_rows:
        lone = next(n for n in stacked_rows if n.endswith("lone runs"))
        k = stacked_rows[lone]["members"]
        for basis in ("model_epochs_per_s", "loop_model_epochs_per_s"):
            ratio = stacked_rows[f"stacked {k}"][basis] / stacked_rows[lone][basis]
            what = "process" if basis == "model_epochs_per_s" else "epochs alone"
            ok = ratio >= 1.4
            checks.append(dict(ratio=f"stacked {k} / {k} lone runs ({what})", value=ratio, target="at least 1.4",
                               met=ok))
            print(f"stacked {k} / {k} lone runs, model-epochs per second ({what}): {ratio:.2f} (target: at least 1.4) "
                  f"{'met' if ok else 'NOT MET'}")
    if bf16_change:
        c = bf16_change
        print(f"bf16 evaluation vs float32, same run (training {'identical' if c['same_training'] else 'DIFFERENT'}, "
              f"{c['epochs']} epochs): val/acc change mean {c['val_acc_mean']:+.5f}, max |change| "
              f"{c['val_acc_max_abs']:.5f}; val/loss change mean {c['val_loss_mean']:+.5f}")
    if full:
        print(f"full default run (1000 epochs): {full['process_s']:.1f} s wall, first step after "
              f"{full['first_step_s']:.2f} s, peak memory {full['peak_mb']:.0f} MB, {full['epoch_s']:.4f} s/epoch, "
              f"test/acc at best {full['acc']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(dict(epochs=args.epochs, repeats=args.repeats, device=str(device),
                                             rows=rows, stacked=stacked_rows, checks=checks, bf16_change=bf16_change, full=full,
                                             fp32_flops=fp32_rate, bf16_flops=bf16_rate), indent=2) + "\n")


def print_table(rows: dict, base: float, args) -> None:
    head = (f"\n{'implementation':26} {'s/epoch':>8} {'x runner':>8} {'process s':>9} {'1st step':>8} "
            f"{'peak MB':>8} {'1000 ep (est.)':>14} {'val acc':>8}")
    print(head)
    print("-" * (len(head) - 1))
    for name, r in rows.items():
        cells = [f"{r['epoch_s']:8.4f}", f"{r['epoch_s'] / base:8.2f}"]
        if "process_s" in r:
            cells += [f"{r['process_s']:9.1f}", f"{r['first_step_s']:8.2f}", f"{r['peak_mb']:8.0f}",
                      f"{r['est_1000_s']:13.0f}s", f"{r['val_acc']:8.4f}"]
        print(f"{name:26} " + " ".join(cells))


def print_stacked(rows: dict, floor_epoch_s: float, args) -> None:
    head = (f"\n{'K runs, ' + str(args.stacked_epochs) + ' epochs each':26} {'model-ep/s':>10} {'(epochs)':>9} "
            f"{'% floor':>8} {'process s':>9} {'peak MB':>8} {'val acc':>8}")
    print(head)
    print("-" * (len(head) - 1))
    for name, r in rows.items():
        # the floor: K models' arithmetic at the best matmul rate, per model-epoch
        print(f"{name:26} {r['model_epochs_per_s']:10.2f} {r['loop_model_epochs_per_s']:9.2f} "
              f"{100 * r['loop_model_epochs_per_s'] * floor_epoch_s:8.1f} {r['process_s']:9.1f} {r['peak_mb']:8.0f} "
              f"{r['val_acc']:8.4f}")


if __name__ == "__main__":
    main()
