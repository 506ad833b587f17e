"""The model families side by side, in one run: seconds per epoch of the CNN against the MLP, and K CNN seeds
stacked against K lone CNN runs.

    python benchmarks/families.py                         # real MNIST, 5 epochs, K = 8, 3 repeats
    python benchmarks/families.py --tiny --data-root DIR  # seconds: keeps this script working (tests)
    python benchmarks/families.py --data-root DIR --no-verify  # a folder that is not MNIST as published, knowingly

Every row is the real entry point in a fresh process (``python -m reg_runner``), at the defaults but for
histograms (none: the network alone is timed) and the validation set (``--val-size``, 10,000 images by
default: the CNN's evaluation of all 57,000 would dominate), alternated in a shuffled order ``--repeats``
times; the table gives medians.

- ``mlp``, ``cnn``: one run, ``model=mlp`` and ``model=cnn``;
- ``K lone cnn``: K runs of ``model=cnn`` (seeds 0..K-1) in one ``--multirun`` process, one after the other;
- ``stacked K cnn``: the same K runs with ``hydra/launcher=stacked``, one stack.

Columns: seconds per epoch (from each run's metrics.json ``timing.loop_s``: the epochs alone, with their
evaluation, records and checkpoints), its ratio to the MLP's; for the K-run rows, model-epochs per second
of the epochs alone and of the whole process (start-up and the stack's exactness check included, as a user
waits for it). The ratio that matters for stacking is stacked K over K lone.
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import launch  # noqa: E402


def one(name: str, model: str, args, work: Path, env: dict) -> dict:
    out = work / name
    argv = [sys.executable, "-m", "reg_runner", f"model={model}", f"trainer.epochs={args.epochs}",
            "logging.histograms=0", *data_overrides(args), f"hydra.run.dir={out}"]
    r = launch(argv, env, work / f"{name}.log")
    m = json.loads((out / "metrics.json").read_text())
    return dict(r, epoch_s=m["timing"]["loop_s"] / m["epochs_run"], val_acc=m["final"]["val/acc"])


def many(name: str, k: int, stacked: bool, args, work: Path, env: dict) -> dict:
    out = work / name
    argv = [sys.executable, "-m", "reg_runner", "--multirun", "model=cnn", f"seed=range(0,{k})",
            f"trainer.epochs={args.epochs}", "logging.histograms=0", *data_overrides(args),
            *(["hydra/launcher=stacked"] if stacked else []), f"hydra.sweep.dir={out}"]
    r = launch(argv, env, work / f"{name}.log")
    metrics = [json.loads(p.read_text()) for p in out.glob("*/metrics.json")]
    assert len(metrics) == k, f"{name}: {len(metrics)} of {k} runs recorded"
    stacks = {m["timing"]["stack_size"] for m in metrics}
    loop_s = metrics[0]["timing"]["loop_s"] if stacked else sum(m["timing"]["loop_s"] for m in metrics)
    epochs = sum(m["epochs_run"] for m in metrics)
    return dict(r, epoch_s=loop_s / args.epochs, loop_model_epochs_per_s=epochs / loop_s,
                model_epochs_per_s=epochs / r["process_s"], stack_sizes=sorted(stacks),
                val_acc=statistics.fmean(m["final"]["val/acc"] for m in metrics))


def data_overrides(args) -> list[str]:
    out = [f"data.val_size={args.val_size}"]
    if args.data_root:
        out += [f"data.root={args.data_root}"] + (["data.verify=false"] if args.no_verify else [])
    if args.train_fraction:
        out.append(f"data.train_fraction={args.train_fraction}")
    return out


def arguments(argv=None) -> argparse.Namespace:
    sys.path.insert(0, str(HERE.parent))
    from reg_runner.errors import Parser, integer_arg, number_arg

    p = Parser(prog="python benchmarks/families.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=integer_arg(1), default=None, help="epochs per run (default 5)")
    p.add_argument("--repeats", type=integer_arg(1), default=None, help="times each row runs (default 3)")
    p.add_argument("--stack", type=integer_arg(2), default=None, help="K, the CNN runs stacked (default 8)")
    p.add_argument("--val-size", type=integer_arg(1), default=None, help="validation images (default 10000)")
    p.add_argument("--train-fraction", type=number_arg(0, 1, hi_open=True), default=None)
    p.add_argument("--data-root", default=None, help="a folder with MNIST's four IDX files (default: the store)")
    p.add_argument("--no-verify", action="store_true", help="read --data-root's files as they are, unchecked "
                   "against MNIST's published md5s (data.verify=false): a modified copy, or test data")
    p.add_argument("--tiny", action="store_true", help="2 epochs, K = 2, one repeat: a check that it runs")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    tiny = dict(epochs=2, repeats=1, stack=2, val_size=100, train_fraction=0.6)
    defaults = dict(epochs=5, repeats=3, stack=8, val_size=10_000, train_fraction=None)
    for key, value in (tiny if args.tiny else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None) -> None:
    args = arguments(argv)
    env = {**os.environ, "DATAMAESTRO_DIR": os.environ.get("DATAMAESTRO_DIR", str(Path.home() / "datamaestro"))}
    k = args.stack
    rows = {"mlp": [], "cnn": [], f"{k} lone cnn": [], f"stacked {k} cnn": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        order = list(rows)
        for repeat in range(args.repeats):
            random.Random(repeat).shuffle(order)
            for name in order:
                label = f"{name.replace(' ', '_')}_{repeat}"
                if name in ("mlp", "cnn"):
                    rows[name].append(one(label, name, args, work, env))
                else:
                    rows[name].append(many(label, k, name.startswith("stacked"), args, work, env))
                print(f"  {name} (repeat {repeat + 1}): {rows[name][-1]['epoch_s']:.3f} s/epoch", flush=True)
    median = {name: {key: statistics.median(row[key] for row in r) for key in ("epoch_s", "process_s", "peak_mb",
                                                                               "val_acc")} for name, r in rows.items()}
    for name in (f"{k} lone cnn", f"stacked {k} cnn"):
        for key in ("loop_model_epochs_per_s", "model_epochs_per_s"):
            median[name][key] = statistics.median(r[key] for r in rows[name])
        median[name]["stack_sizes"] = rows[name][-1]["stack_sizes"]
    mlp = median["mlp"]["epoch_s"]
    print(f"\n{args.epochs} epochs x {args.repeats} repeats; train_fraction {args.train_fraction or 0.05}, "
          f"{args.val_size} validation and the test images evaluated every epoch; K-run rows: s/epoch of all K")
    print(f"{'':18}{'s/epoch':>9}{'x mlp':>8}{'process s':>11}{'peak MB':>9}{'model-epochs/s':>16}{'(epochs alone)':>15}")
    for name, m in median.items():
        rate = f"{m['model_epochs_per_s']:16.3f}{m['loop_model_epochs_per_s']:15.3f}" if "model_epochs_per_s" in m else ""
        print(f"{name:18}{m['epoch_s']:9.3f}{m['epoch_s'] / mlp:8.1f}{m['process_s']:11.1f}{m['peak_mb']:9.0f}{rate}")
    lone, stacked = median[f"{k} lone cnn"], median[f"stacked {k} cnn"]
    print(f"stacked {k} over {k} lone: {stacked['loop_model_epochs_per_s'] / lone['loop_model_epochs_per_s']:.2f}x "
          f"in the epochs, {stacked['model_epochs_per_s'] / lone['model_epochs_per_s']:.2f}x whole processes "
          f"(stack sizes {stacked['stack_sizes']})")
    if args.json:
        args.json.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(args).items()}, median=median,
                                             rows=rows), indent=1))


if __name__ == "__main__":
    main()
