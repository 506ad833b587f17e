"""The stacked launcher against the basic one, in one run: K runs of the MLP, the CNN and a family of the user's own
(``TwoConvs``: two convolutions with BatchNorm, the generic stacked form), each as ``hydra/launcher=basic`` and as
``hydra/launcher=stacked``, the exactness check cold (a fresh cache folder) and remembered (the same folder again).

    python benchmarks/stacking.py                          # real MNIST, 5 epochs, K = 4 and 8
    python benchmarks/stacking.py --quick --data-root DIR  # seconds: keeps this script working (tests)

Every row is the real entry point in a fresh process (``python -m reg_runner --multirun seed=range(0,K)``) at the
defaults but for histograms (none) and the validation set (``--val-size``, 10,000 images by default). Columns, each
as basic's figure over the row's (above 1: faster than basic), measured in the same run:

- ``wall``: the whole command, start-up, the check and the records included, as a user waits for it;
- ``train``: the epochs alone (``timing.loop_s`` of metrics.json: the stack's, or the sum of the lone runs');
- ``stacked``: how many of the K runs trained in a stack (the launcher trains runs lone where a stack would not
  pay, and says so).
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from torch import nn

HERE = Path(__file__).resolve().parent


class TwoConvs(nn.Module):
    """A user's own family, 20 lines, no reg_runner import: two 3x3 convolutions with BatchNorm, a linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(2 * width * 16, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


FAMILIES = {"mlp": ["model=mlp"], "cnn": ["model=cnn"], "generic": ["~model", "+model._target_=stacking.TwoConvs"]}
VARIANTS = ("basic", "stacked cold", "stacked remembered")


def measure(family: str, k: int, variant: str, args, work: Path, env: dict) -> dict:
    from bench import launch

    name = f"{family}_{k}_{variant.replace(' ', '_')}"
    out = work / name
    launcher = [] if variant == "basic" else ["hydra/launcher=stacked"]
    argv = [sys.executable, "-m", "reg_runner", "--multirun", *FAMILIES[family], f"seed=range(0,{k})",
            f"trainer.epochs={args.epochs}", "logging.histograms=0", *data_overrides(args), *launcher,
            f"hydra.sweep.dir={out}"]
    cache = work / f"cache_{family}_{k}"  # cold: new for the family and K; remembered: the cold row's again
    r = launch(argv, {**env, "REG_RUNNER_CACHE_DIR": str(cache)}, work / f"{name}.log")
    metrics = [json.loads(p.read_text()) for p in out.glob("*/metrics.json")]
    assert len(metrics) == k, f"{name}: {len(metrics)} of {k} runs recorded"
    stacks: dict = {}  # each stack's epochs once (its runs share them): keyed by the folders it held
    for m, p in zip(metrics, out.glob("*/metrics.json")):
        env_record = json.loads((p.parent / "environment.json").read_text())
        stacks[tuple(env_record["stack"] or [str(p.parent)])] = m["timing"]["loop_s"]
    stacked = sum(len(folders) for folders in stacks if len(folders) > 1)
    return dict(wall_s=r["process_s"], train_s=sum(stacks.values()), stacked=stacked)


def data_overrides(args) -> list[str]:
    out = [f"data.val_size={args.val_size}"]
    if args.data_root:
        out += [f"data.root={args.data_root}"] + (["data.verify=false"] if args.no_verify else [])
    if args.train_fraction:
        out.append(f"data.train_fraction={args.train_fraction}")
    if args.batch_size:
        out.append(f"trainer.batch_size={args.batch_size}")
    return out


def arguments(argv=None) -> argparse.Namespace:
    sys.path.insert(0, str(HERE.parent))
    from reg_runner.errors import Parser, integer_arg, number_arg

    p = Parser(prog="python benchmarks/stacking.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=integer_arg(1), default=None, help="epochs per run (default 5)")
    p.add_argument("--stacks", type=integer_arg(2), nargs="+", default=None, help="the Ks (default 4 8)")
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    p.add_argument("--val-size", type=integer_arg(1), default=None, help="validation images (default 10000)")
    p.add_argument("--train-fraction", type=number_arg(0, 1, hi_open=True), default=None)
    p.add_argument("--batch-size", type=integer_arg(1), default=None, help="trainer.batch_size (default 300)")
    p.add_argument("--data-root", default=None, help="a folder with MNIST's four IDX files (default: the store)")
    p.add_argument("--no-verify", action="store_true", help="read --data-root's files unchecked (data.verify=false)")
    p.add_argument("--quick", action="store_true", help="1 epoch, K = 2, small sets: a check that it runs")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    quick = dict(epochs=1, stacks=[2], val_size=100, train_fraction=0.2, batch_size=25)
    defaults = dict(epochs=5, stacks=[4, 8], val_size=10_000, train_fraction=None, batch_size=None)
    for key, value in (quick if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None) -> None:
    args = arguments(argv)
    sys.path.insert(0, str(HERE))
    env = {**os.environ, "DATAMAESTRO_DIR": os.environ.get("DATAMAESTRO_DIR", str(Path.home() / "datamaestro")),
           "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            for k in args.stacks:
                for variant in VARIANTS:  # in this order: the remembered row reads what the cold row wrote
                    rows[(family, k, variant)] = measure(family, k, variant, args, Path(tmp), env)
                    print(f"  {family} K={k} {variant}: {rows[(family, k, variant)]['wall_s']:.1f} s", flush=True)
    print(f"\n{args.epochs} epochs; train_fraction {args.train_fraction or 0.05}, {args.val_size} validation and the "
          "test images evaluated every epoch; ratios: basic's seconds over the row's (above 1: faster)")
    print(f"{'family':10}{'K':>3}  {'launcher':20}{'wall s':>9}{'train s':>9}{'x wall':>8}{'x train':>9}{'stacked':>9}")
    for (family, k, variant), r in rows.items():
        basic = rows[(family, k, "basic")]
        print(f"{family:10}{k:>3}  {variant:20}{r['wall_s']:9.1f}{r['train_s']:9.2f}{basic['wall_s'] / r['wall_s']:8.2f}"
              f"{basic['train_s'] / r['train_s']:9.2f}{str(r['stacked']) + ' of ' + str(k):>9}")
    if args.json:
        args.json.write_text(json.dumps(dict(args={key: str(v) for key, v in vars(args).items()},
                                             rows=[dict(family=f, k=k, launcher=v, **r) for (f, k, v), r in rows.items()]),
                                        indent=1))


if __name__ == "__main__":
    main()
