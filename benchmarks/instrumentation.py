"""Cost of the TensorBoard instrumentation: a default run with histograms against the same run without.

    python benchmarks/instrumentation.py                 # 100 epochs, 3 repeats each, real MNIST
    python benchmarks/instrumentation.py --epochs 3 --repeats 1 --data-root DIR   # smoke

Both variants run through the real entry point (``python -m reg_runner``) in alternation, so
drift of the machine hits both alike. Reported: median wall time of the training loop (from each
run's metrics.json) and of the whole process, and their ratios. Target: at most 1.10.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"full instrumentation (histograms=20)": "logging.histograms=20", "histograms=0": "logging.histograms=0"}


def one_run(override: str, epochs: int, out: Path, extra: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "reg_runner", override, f"trainer.epochs={epochs}", f"hydra.run.dir={out}", *extra],
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - t0
    return json.loads((out / "metrics.json").read_text())["timing"]["train_s"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-root", default=None, help="folder with the MNIST IDX files (default: the package's)")
    args = parser.parse_args()
    extra = [f"data.root={args.data_root}"] if args.data_root else []
    times = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, override in VARIANTS.items():
                times[name].append(one_run(override, args.epochs, Path(tmp) / f"run{r}-{override.split('=')[1]}", extra))
    base_train = statistics.median(t for t, _ in times["histograms=0"])
    base_wall = statistics.median(w for _, w in times["histograms=0"])
    print(f"{args.epochs} epochs, defaults, median of {args.repeats}:")
    print(f"{'variant':40} {'train loop s':>12} {'ratio':>6} {'process s':>10} {'ratio':>6}")
    for name in VARIANTS:
        train = statistics.median(t for t, _ in times[name])
        wall = statistics.median(w for _, w in times[name])
        print(f"{name:40} {train:12.2f} {train / base_train:6.3f} {wall:10.2f} {wall / base_wall:6.3f}")


if __name__ == "__main__":
    main()
