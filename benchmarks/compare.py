"""Time variants of a run against a baseline, through the real entry point, in one invocation.

    # TensorBoard instrumentation (target: at most 1.10x)
    python benchmarks/compare.py --epochs 100 logging.histograms=0 logging.histograms=20
    # augmentation on the device (target: at most 1.5x)
    python benchmarks/compare.py --epochs 50 augmentation=none augmentation=noise_affine

The first variant is the baseline. Variants run in alternation, ``--repeats`` times each, so drift
of the machine hits them alike. Reported per variant: the median training-loop time per epoch
(from each run's metrics.json) and of the whole process, and their ratios to the baseline.
A variant may hold several overrides separated by spaces: "model.norm=batchnorm reg.l2=1e-4".
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reg_runner.errors import Parser, integer_arg


def one_run(overrides: list[str], out: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "reg_runner", *overrides, f"hydra.run.dir={out}"], check=True,
                   capture_output=True)
    wall = time.perf_counter() - t0
    m = json.loads((out / "metrics.json").read_text())
    return m["timing"]["loop_s"] / m["epochs_run"], wall


def main() -> None:
    parser = Parser(prog="python benchmarks/compare.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="override sets; the first is the baseline")
    parser.add_argument("--epochs", type=integer_arg(1), default=100)
    parser.add_argument("--repeats", type=integer_arg(1), default=3)
    parser.add_argument("--extra", default="", help="overrides for every variant, e.g. 'data.root=DIR'")
    args = parser.parse_args()
    common = [f"trainer.epochs={args.epochs}", *args.extra.split()]
    times = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for i, variant in enumerate(args.variants):
                times[variant].append(one_run([*common, *variant.split()], Path(tmp) / f"r{r}v{i}"))
    base_epoch = statistics.median(e for e, _ in times[args.variants[0]])
    base_wall = statistics.median(w for _, w in times[args.variants[0]])
    print(f"{args.epochs} epochs, median of {args.repeats}, baseline: {args.variants[0]}")
    print(f"{'variant':40} {'s / epoch':>10} {'ratio':>6} {'process s':>10} {'ratio':>6}")
    for variant in args.variants:
        epoch = statistics.median(e for e, _ in times[variant])
        wall = statistics.median(w for _, w in times[variant])
        print(f"{variant:40} {epoch:10.4f} {epoch / base_epoch:6.3f} {wall:10.2f} {wall / base_wall:6.3f}")


if __name__ == "__main__":
    main()
