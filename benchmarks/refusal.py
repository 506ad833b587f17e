"""How long a mistake on the command line takes to be refused, against Hydra's own import, in one run.

    python benchmarks/refusal.py               # 15 rounds, medians
    python benchmarks/refusal.py --rounds 3    # seconds: keeps this script working (tests)

Each round runs, in a shuffled order, fresh processes of:

- ``import hydra``: ``python -c "import hydra, omegaconf"``, the floor of any Hydra command line;
- one refused command per kind of mistake: a value out of range (``model.dropout=2``: the schemas' check), a
  misspelled key (``model.dropuot=0.5``: Hydra's composition), a group option that does not exist
  (``model=resnet``), an override Hydra cannot read (``reg.l2=[1,2``).

The table gives each command's median wall time and its ratio to ``import hydra``; every refusal must exit 2 with
one ``error:`` line (the script stops if one does not). Run it on a quiet machine: other work on the cores
shows up in every row.
"""

import random
import statistics
import subprocess
import sys
import tempfile
import time

from reg_runner.errors import Parser, integer_arg

BASELINE = ("import hydra", [sys.executable, "-c", "import hydra, omegaconf"])
REFUSALS = ["model.dropout=2", "model.dropuot=0.5", "model=resnet", "reg.l2=[1,2"]


def timed(command: list[str], cwd: str, refusal: bool) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - t0
    if refusal:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        if proc.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
            sys.exit(f"error: {' '.join(command[2:])} was not refused in one line (exit {proc.returncode}): "
                     f"{proc.stderr.strip()[:300]}")
    elif proc.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed: {proc.stderr.strip()[:300]}")
    return wall


def main() -> None:
    parser = Parser(prog="python benchmarks/refusal.py", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=integer_arg(1), default=15, help="rounds of every command (default 15)")
    args = parser.parse_args()
    rows = {BASELINE[0]: BASELINE[1]}
    with tempfile.TemporaryDirectory() as cwd:
        rows |= {f"refuse {o}": [sys.executable, "-m", "reg_runner", o, f"hydra.run.dir={cwd}/run"] for o in REFUSALS}
        walls: dict[str, list[float]] = {name: [] for name in rows}
        order = list(rows)
        for _ in range(args.rounds):
            random.shuffle(order)
            for name in order:
                walls[name].append(timed(rows[name], cwd, refusal=name != BASELINE[0]))
    base = statistics.median(walls[BASELINE[0]])
    print(f"{'command':<32} {'median s':>9} {'x import hydra':>15}")
    for name, ws in walls.items():
        print(f"{name:<32} {statistics.median(ws):>9.3f} {statistics.median(ws) / base:>15.2f}")


if __name__ == "__main__":
    main()
