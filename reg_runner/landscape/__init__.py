"""Loss landscapes of trained runs: the loss around a checkpoint, and on the way to it from the init.

What is measured (``measure``), the method, its references, why this sharpness, and the files written:
docs/landscapes.md.
"""

import argparse
import sys
from pathlib import Path

from reg_runner import signals
from reg_runner.device import device_arg
from reg_runner.errors import Parser, UserError, exit_on_user_error, folder_arg, integer_arg, number_arg


def arguments(argv=None) -> argparse.Namespace:
    p = Parser(prog="python -m reg_runner.landscape", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="the folders of finished runs")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="best.pt (default) or last.pt")
    p.add_argument("--grid", type=integer_arg(3, 201, odd=True, note=" (the checkpoint is the centre point)"), default=41,
                   help="points per axis, odd (default 41)")
    p.add_argument("--span", type=number_arg(0, 10, note=" (1 = a step as long as each weight row)"), default=1.0,
                   help="the axes run over [-span, span] (default 1)")
    p.add_argument("--split", choices=("train", "val"), default="train",
                   help="train: the run's training images (default); val: a sample of its validation set")
    p.add_argument("--val-size", type=integer_arg(1, 10_000_000), default=None,
                   help="the sample for --split val (default: 10,000, or all the run's validation images if fewer)")
    p.add_argument("--dims", type=int, choices=(1, 2), default=2, help="1: a curve; 2: a surface (default)")
    p.add_argument("--seed", type=integer_arg(0, 2**63 - 1), default=0, help="draws the directions (default 0)")
    p.add_argument("--out", type=_new_folder, default=None, help="a new folder: write everything there, not into "
                   "the run folders")
    p.add_argument("--device", default="cpu", type=device_arg, help="cpu (default), cuda, mps or auto")
    argv = sys.argv[1:] if argv is None else list(argv)
    given = [a.split("=", 1)[0] for a in argv if a.startswith("--")]
    for option in given:
        if given.count(option) > 1:
            p.error(f"{option} is given twice: give it once")
    args = p.parse_args(argv)
    if args.val_size is not None and args.split != "val":
        p.error(f"--val-size={args.val_size} is not allowed with --split {args.split}: it sizes the validation sample "
                "(--split val)")
    return args


def _new_folder(text: str) -> Path:
    """``--out``: a folder that is empty or does not exist yet (a run's folder, or an earlier landscape's, is
    never written over)."""
    path = folder_arg(text)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: {'a file' if not path.is_dir() else 'it already holds files'}; "
                                         "choose a new folder")
    return path


def main(argv=None) -> None:
    args = arguments(argv)
    made: list[Path] = []  # folders this command made: removed if it stops before writing into them
    state = {"written": None}
    with signals.command(lambda: f"after the landscape was written: {state['written']}" if state["written"] else
                         "before the landscape was written; nothing was written", made), exit_on_user_error():
        run_dirs = [p.resolve() for p in args.run_dirs]
        for d in run_dirs:
            if run_dirs.count(d) > 1:
                raise UserError(f"{d} is given twice: give each run once")
        for d in run_dirs:
            if not d.is_dir():
                raise UserError(f"{d} is not a folder; give the folder of a run, e.g. outputs/<date>/<time>")
        from reg_runner.landscape import measure  # torch: once the arguments are checked

        measure.landscapes(args, run_dirs, made, state)
